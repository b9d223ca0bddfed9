"""Running a .tflite file: the LiteRT interpreter, its serving signature, input layout, int8 I/O.

Used by the converter (the golden check of every written file) and by the runner
(echoedge.validate.tflite_runner). tensorflow / ai_edge_litert are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.artefact import OUTPUT_NAMES
from echoedge.errors import EchoEdgeError

SIGNATURE_KEY = "serving_default"
# Interpreters: "tf" = tf.lite.Interpreter, "litert" = ai_edge_litert's. Both apply XNNPACK by
# default. DEFAULT_INTERPRETER is the faster one in bench/bench_tflite.py (paper config, batch 1,
# 2 threads, this machine); the runner records which one produced each figure.
INTERPRETERS = ("tf", "litert")
DEFAULT_INTERPRETER = "tf"


def make_interpreter(path: str | Path, threads: int = 2, kind: str | None = None) -> Any:
    """A LiteRT interpreter on `path` with the default delegates (XNNPACK) and `threads` threads."""
    kind = kind or DEFAULT_INTERPRETER
    if kind not in INTERPRETERS:
        raise EchoEdgeError(f"unknown TFLite interpreter {kind!r}; choose from {', '.join(INTERPRETERS)}")
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import warnings

        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": measured faster
            warnings.simplefilter("ignore")
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), num_threads=int(threads))
    it.allocate_tensors()
    return it


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """(B, C, T, H, W) -> the file's input layout."""
    if layout == "NCTHW":
        return np.ascontiguousarray(batch)
    if layout == "NTHWC":
        return np.ascontiguousarray(batch.transpose(0, 2, 3, 4, 1))
    raise EchoEdgeError(f"unknown input layout {layout!r}")


def input_layout(shape: Sequence[int], clip_shape: Sequence[int]) -> str:
    """The file's input layout, read from its input shape (never assumed)."""
    b, c, t, h, w = clip_shape
    if list(shape) == [b, c, t, h, w]:
        return "NCTHW"
    if list(shape) == [b, t, h, w, c]:
        return "NTHWC"
    raise EchoEdgeError(f"the .tflite input has shape {list(shape)}, which is neither NCTHW "
                        f"{[b, c, t, h, w]} nor NTHWC {[b, t, h, w, c]}")


@dataclass
class TFLiteIO:
    """How to feed one .tflite file: its signature's input and output keys, layout, quantization."""

    layout: str
    input_key: str
    output_keys: list[str]  # in OUTPUT_NAMES order
    input_quant: tuple[float, int] | None
    output_quant: list[tuple[float, int] | None]


def signature_io(it: Any, clip_shape: Sequence[int]) -> TFLiteIO:
    """Read the serving signature: onnx2tf names its outputs output_0..output_4 in the ONNX
    graph's order, which is OUTPUT_NAMES (the export names them so)."""
    sigs = it.get_signature_list()
    if SIGNATURE_KEY not in sigs:
        raise EchoEdgeError(f"the .tflite has no '{SIGNATURE_KEY}' signature (has: {', '.join(sigs) or 'none'})")
    runner = it.get_signature_runner(SIGNATURE_KEY)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if len(ins) != 1:
        raise EchoEdgeError(f"the .tflite has {len(ins)} inputs, expected 1")
    in_key = next(iter(ins))
    keys = sorted(outs, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 99)
    if not 1 <= len(keys) <= len(OUTPUT_NAMES):  # Echo-E3Net's five, or (ef,) of an EF-only model
        raise EchoEdgeError(f"the .tflite has {len(keys)} outputs, expected 1 to {len(OUTPUT_NAMES)}")

    def quant(d: dict[str, Any]) -> tuple[float, int] | None:
        if d["dtype"] not in (np.int8, np.uint8):
            return None
        s, z = d["quantization"]
        return float(s), int(z)

    return TFLiteIO(input_layout(ins[in_key]["shape"].tolist(), clip_shape), in_key, keys,
                    quant(ins[in_key]), [quant(outs[k]) for k in keys])


def run_tflite(it: Any, io_: TFLiteIO, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch-1 file on each clip of an NCTHW float32 batch; float32 outputs."""
    runner = it.get_signature_runner(SIGNATURE_KEY)
    per = []
    for clip in batch:
        x = to_layout(clip[None], io_.layout)
        if io_.input_quant is not None:
            s, z = io_.input_quant
            x = np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)
        out = runner(**{io_.input_key: x})
        vals = []
        for key, q in zip(io_.output_keys, io_.output_quant):
            v = out[key]
            vals.append(v.astype(np.float32) if q is None else (v.astype(np.float32) - q[1]) * q[0])
        per.append(vals)
    return [np.concatenate([p[k] for p in per]) for k in range(len(per[0]))]


__all__: Sequence[str] = ("DEFAULT_INTERPRETER", "INTERPRETERS", "SIGNATURE_KEY", "TFLiteIO",
                          "input_layout", "make_interpreter", "run_tflite", "signature_io", "to_layout")


def golden_check(model_path: Path, clip_shape: Sequence[int], golden: np.ndarray, model: Any,
                 precision: str, what: str, fp32_rtol: float, fp32_cause: str = ""
                 ) -> tuple[Any, TFLiteIO, list[np.ndarray], dict[str, Any]]:
    """Run a just-written file on the golden clips in the LiteRT interpreter and compare it with the
    eager `model`, as both TFLite converters do before keeping a file.

    Returns (interpreter, its I/O, outputs, per-output errors vs eager). Raises EchoEdgeError, with
    "no artefact written", when the file does not run, or when an fp32 file is further than
    `fp32_rtol` (relative) from eager; `what` names the file in those lines, `fp32_cause` says why.
    """
    import torch

    from echoedge.convert.artefact import output_errors
    from echoedge.errors import first_line

    try:
        it = make_interpreter(model_path, threads=2, kind="litert")
        io_ = signature_io(it, clip_shape)
        outs = run_tflite(it, io_, golden)
    except EchoEdgeError:
        raise
    except Exception as e:
        raise EchoEdgeError(f"the {what} fails in the LiteRT interpreter ({first_line(e)}); "
                            "no artefact written") from None
    with torch.inference_mode():
        ref = [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(golden)))]
    vs_eager = {n: output_errors(o, r, scale_floor=1.0) for n, o, r in zip(OUTPUT_NAMES, outs, ref)}
    if precision == "fp32":
        bad = {k: v["max_rel"] for k, v in vs_eager.items() if not v["max_rel"] <= fp32_rtol}
        if bad:
            raise EchoEdgeError(f"the {what} differs from the eager deploy form ("
                                + ", ".join(f"{k} rel {v:.1e}" for k, v in bad.items())
                                + f" > {fp32_rtol:g}){fp32_cause}; no artefact written")
    return it, io_, outs, vs_eager
