"""The litert-torch conversion itself, run as a script inside the route's own environment.

    <.venv-litert>/bin/python litert_worker.py --program deploy.pt2 --out model.tflite \
        --precision int8 --calibration clips.npy --scope '["encoder.cnn"]' --meta meta.json

Why a separate process: litert-torch 0.10.0 cannot share echo-edge's environment (its
litert-converter pins xdsl 0.28.0, which pins typing-extensions < 4.13; requirements-litert.txt
records the measurement), so it lives in `.venv-litert` (`make litert`) and this script is all
that runs there. It therefore imports nothing from echoedge -- that environment has torch,
torchao, numpy and litert-torch only -- and takes everything as files: the deploy form as a
`torch.export` program (the same torch 2.13 on both sides, so the archive loads unchanged), the
calibration clips as one .npy, the int8 scope as module-path prefixes.

int8 is PyTorch's PT2E flow with litert-torch's quantizer: symmetric per-channel int8 weights,
per-tensor int8 activations with min/max observers (the same observers as the ExecuTorch recipe,
echoedge.convert.executorch_quantizer: the default histogram observers cost seconds per clip and
were not more accurate here), `prepare_pt2e` -> one clip at a time through the program ->
`convert_pt2e(fold_quantize=False)` -> `litert_torch.convert(..., quant_config=QuantConfig(...))`.
The scope is a node filter on each node's `nn_module_stack` (litert-torch's own `set_module_name`
matches dynamo-era key spellings that `torch.export` no longer writes).

On success it writes the .tflite and a JSON of what was done; on failure it exits non-zero and
its last stderr line says why (the caller turns that into one line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

HEAVY_TARGETS = ("conv2d", "linear", "conv1d")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _node_filter(scope: Sequence[str] | None, keep_float: Sequence[str]) -> Any:
    """Whether the quantizer may annotate a node: inside `scope` (None: everywhere) and not under
    `keep_float`. Nodes without a module stack (parameters, constants) follow their consumer."""

    def allowed(node: Any) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [str(v[0]) for v in stack.values()]
        if not paths:
            return True
        if any(_under(p, k) for p in paths for k in keep_float):
            return False
        return scope is None or any(_under(p, s) for p in paths for s in scope)

    return allowed


def _quantizer(scope: Sequence[str] | None, keep_float: Sequence[str]) -> Any:
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e.observer import MinMaxObserver

    config = pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    act = dataclasses.replace(config.input_activation,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    allowed = _node_filter(scope, keep_float)

    class ScopedQuantizer(pq.PT2EQuantizer):  # type: ignore[misc, valid-type]
        def annotate(self, model: Any) -> Any:
            self._annotate_all_static_patterns(model, self.global_config, allowed)
            pq.propagate_annotation(model)
            return model

    # global_config stays set: QuantConfig reads static vs dynamic from it.
    return ScopedQuantizer().set_global(config)


def _quantized_heavy_ops(gm: Any) -> int:
    """conv / linear nodes of the converted PT2E graph whose weight comes through a dequantize:
    the heavy ops the .tflite must hold in int8 (the caller checks the file against it)."""
    n = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2:
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if not any(name.startswith(t) for t in HEAVY_TARGETS):
            continue
        w = node.args[1]
        if getattr(w, "op", None) == "call_function" and "dequantize" in str(w.target):
            n += 1
    return n


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("litert-torch", "litert-converter", "torch", "torchao", "ai-edge-litert"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def convert(program: Path, out: Path, precision: str, calibration: Path | None,
            scope: Sequence[str] | None, keep_float: Sequence[str], seed: int) -> dict[str, Any]:
    import numpy as np
    import torch

    import litert_torch

    torch.manual_seed(seed)
    ep = torch.export.load(str(program))
    example = tuple(torch.zeros(tuple(s.shape), dtype=s.dtype)  # shapes only: static graph
                    for s in (n.meta["val"] for n in ep.graph.nodes
                              if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs))
    timings: dict[str, float] = {}
    meta: dict[str, Any] = {"versions": _versions(), "precision": precision}
    t0 = time.perf_counter()
    if precision == "fp32":
        edge = litert_torch.convert(ep.module(), example)
    elif precision == "int8":
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        if calibration is None:
            raise SystemExit("int8 needs --calibration")
        clips = np.load(calibration)
        quantizer = _quantizer(scope, keep_float)
        prepared = prepare_pt2e(ep.module(), quantizer)
        with torch.no_grad():
            for clip in clips:  # batch 1, as the file runs
                prepared(torch.from_numpy(np.ascontiguousarray(clip[None])))
        timings["calibrate"] = time.perf_counter() - t0
        converted = convert_pt2e(prepared, fold_quantize=False)
        meta["quantized_heavy_ops"] = _quantized_heavy_ops(converted)
        meta["calibration_clips"] = int(len(clips))
        edge = litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    else:
        raise SystemExit(f"unknown precision {precision!r} (fp32, int8)")
    timings["convert"] = time.perf_counter() - t0
    edge.export(str(out))
    meta["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", type=Path, required=True, help="torch.export archive (.pt2)")
    ap.add_argument("--out", type=Path, required=True, help=".tflite to write")
    ap.add_argument("--precision", choices=("fp32", "int8"), required=True)
    ap.add_argument("--calibration", type=Path, default=None, help="float32 clips (N, C, T, H, W), .npy")
    ap.add_argument("--scope", default="null", help="JSON list of module-path prefixes, or null (all)")
    ap.add_argument("--keep-float", default="[]", help="JSON list of module paths kept float")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--meta", type=Path, required=True, help="JSON written on success")
    args = ap.parse_args(argv)
    meta = convert(args.program, args.out, args.precision, args.calibration,
                   json.loads(args.scope), json.loads(args.keep_float), args.seed)
    args.meta.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
