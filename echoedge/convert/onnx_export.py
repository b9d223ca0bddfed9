"""Deploy form -> static-shape ONNX (+ onnxsim), the first step of the TFLite route.

Why this exact recipe (reference/toolchain.md, measured with these toolchains):

- `torch.onnx.export(..., dynamo=False, opset_version=17)`: the dynamo / opset-18 graph produced an
  int8 TFLite DIV that failed or drifted through onnx2tf.
- static shapes everywhere (batch 1, the ClipSpec's C x T x H x W): onnx2tf and every int8 kernel
  want them, and the deploy form has no dynamic axis anyway.
- onnxsim folds the constant shape arithmetic the TorchScript exporter leaves behind, which onnx2tf
  otherwise turns into extra (sometimes float-only) ops.

The ONNX graph is checked equal to the module it came from with ONNX Runtime before anyone builds
on it, so a TFLite error can be blamed on the right step.

Before export the module goes through the onnx2tf substitutions (onnx2tf_substitutions:
module swaps that keep onnx2tf's layout guesses right), each checked equal to the deploy form at
batch 1 (`OnnxExport.substitution_check`).

torch / onnx / onnxsim / onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.artefact import INPUT_NAME, OUTPUT_NAMES
from echoedge.convert.onnx2tf_substitutions import substitute_for_onnx2tf
from echoedge.errors import EchoEdgeError, first_line

OPSET = 17
# ONNX Runtime vs eager on the same clip, relative to max(1, max |eager|): float rounding only.
ORT_RTOL = 1e-4


@dataclass
class OnnxExport:
    """What the ONNX step produced and how it was checked."""

    path: Path
    input_name: str
    input_shape: list[int]
    output_names: list[str]
    opset: int
    simplified: bool
    sha256: str
    ort_max_rel_diff: dict[str, float]  # ONNX Runtime vs the module, per output
    substitutions: list[str] = field(default_factory=list)
    substitution_check: dict[str, float] = field(default_factory=dict)
    node_histogram: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"opset": self.opset, "simplified": self.simplified, "sha256": self.sha256,
                "input": {"name": self.input_name, "shape": self.input_shape},
                "ort_vs_module_max_rel_diff": self.ort_max_rel_diff,
                "substitutions": self.substitutions,
                "substitution_check_max_abs_diff": self.substitution_check,
                "nodes": self.node_histogram, "seconds": round(self.seconds, 3)}


def export_onnx(model: Any, example: np.ndarray, path: str | Path, simplify: bool = True,
                check: bool = True) -> OnnxExport:
    """Export `model` (eval mode) on `example` (float32, batch 1) to `path` as static ONNX."""
    import torch

    t0 = time.perf_counter()
    path = Path(path)
    example = np.ascontiguousarray(example, dtype=np.float32)
    if example.ndim != 5 or example.shape[0] != 1:
        raise EchoEdgeError(f"{path}: ONNX export needs one (1, C, T, H, W) example, got {example.shape}")
    model = model.eval()
    sub, swaps = substitute_for_onnx2tf(model)
    x = torch.from_numpy(example)
    with torch.no_grad():
        ref = [o.numpy() for o in model(x)]
        sub_check: dict[str, float] = {}
        if swaps:  # a swapped module must compute what the deploy form computes
            got = [o.numpy() for o in sub(x)]
            sub_check = {n: float(np.abs(a - b).max()) for n, a, b in zip(OUTPUT_NAMES, got, ref)}
            worst = max(d / max(1.0, float(np.abs(r).max())) for d, r in zip(sub_check.values(), ref))
            if worst > ORT_RTOL:
                raise EchoEdgeError(f"{path}: the onnx2tf substitutions change the model "
                                    f"(max rel diff {worst:.2e})")
    names = list(OUTPUT_NAMES[: len(ref)])
    log = io.StringIO()
    try:
        # The TorchScript exporter prints warnings for every traced shape; keep them for errors.
        with redirect_stdout(log), redirect_stderr(log), torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings on Python-int shapes: intended, the export is static-shape.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(sub, (x,), str(path), input_names=[INPUT_NAME], output_names=names,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
    except Exception as e:
        raise EchoEdgeError(f"{path}: torch.onnx.export failed ({first_line(e)})") from None
    simplified = False
    if simplify:
        simplified = _simplify(path)
    import onnx

    graph = onnx.load(str(path))
    hist: dict[str, int] = {}
    for node in graph.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    ort_diff = run_ort_check(path, example, ref, names) if check else {}
    return OnnxExport(path=path, input_name=INPUT_NAME, input_shape=list(example.shape),
                      output_names=names, opset=OPSET, simplified=simplified,
                      sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                      ort_max_rel_diff=ort_diff, substitutions=swaps,
                      substitution_check=sub_check, node_histogram=dict(sorted(hist.items())),
                      seconds=time.perf_counter() - t0)


def _simplify(path: Path) -> bool:
    import onnx
    import onnxsim

    try:
        model, ok = onnxsim.simplify(onnx.load(str(path)))
    except Exception as e:
        raise EchoEdgeError(f"{path}: onnxsim failed ({first_line(e)})") from None
    if not ok:
        raise EchoEdgeError(f"{path}: onnxsim could not verify the simplified graph")
    onnx.save(model, str(path))
    return True


def run_ort_check(path: Path, example: np.ndarray, ref: Sequence[np.ndarray],
                  names: Sequence[str]) -> dict[str, float]:
    """Run the ONNX file in ONNX Runtime; raise unless it equals `ref` within float rounding."""
    outs = run_onnx(path, example, threads=1)
    diffs = {}
    for name, o, r in zip(names, outs, ref):
        diffs[name] = float(np.abs(o.astype(np.float64) - r).max() / max(1.0, float(np.abs(r).max())))
    bad = {k: v for k, v in diffs.items() if not v <= ORT_RTOL}
    if bad:
        raise EchoEdgeError(f"{path}: the ONNX graph differs from the module in ONNX Runtime "
                            + ", ".join(f"{k} rel {v:.2e}" for k, v in bad.items()))
    return diffs


def run_onnx(path: str | Path, batch: np.ndarray, threads: int = 2) -> list[np.ndarray]:
    """Run a batch-1 ONNX file on each clip of `batch`; outputs concatenated over the clips."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    per = [sess.run(None, {name: np.ascontiguousarray(c[None])}) for c in batch]
    return [np.concatenate([p[k] for p in per]) for k in range(len(per[0]))]


__all__ = ["OPSET", "OnnxExport", "export_onnx", "run_onnx", "run_ort_check"]
