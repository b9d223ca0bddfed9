"""Working memory of a mixed-precision configuration, estimated before any artefact exists.

`debug-quant --max-memory-mb` searches the EF budget under a memory limit: every layer kept float
widens the activations around it from 1 to 4 bytes, so the search must know what a configuration
costs without converting it (a conversion takes minutes). The estimate is the one
`echoedge.convert.memory_plan` computes for a written file as `graph_peak_bytes`: walking the ops
of the exported graph in order, the largest sum of activation bytes alive at once. Here the
graph is the recipe's PT2E-prepared graph: an op the quantizer annotated with an output
quantization spec writes int8 (1 byte per element); every other op writes float32 (4 bytes), and
where its output feeds a quantized op, the quantized copy is a tensor of its own. An annotated
op whose output goes only into the next op of its pattern (conv -> relu) is fused: no tensor. Pure views (reshape, unsqueeze...) alias their input instead of costing again: the
backends do not copy them. The clip input is float (its quantize runs inside the delegate).

Core ML W8 stores weights int8 but computes in float: its estimate does not depend on what is
kept float, and equals the fp32 graph's.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

MB = 1e6
_VIEWS = ("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "alias",
          "expand", "detach")


def estimate_activation_bytes(graph_module: Any) -> int:
    """Liveness peak (bytes) of a torch.fx graph's activations; observed outputs count as int8."""
    from echoedge.convert.memory_plan import liveness_peak

    graph = graph_module.graph
    alias: dict[Any, Any] = {}  # node -> the node whose storage it is

    def root(n: Any) -> Any:
        while n in alias:
            n = alias[n]
        return n

    sizes: dict[Any, int] = {}
    steps: list[tuple[list[Any], list[Any]]] = []
    inputs: list[Any] = []
    outputs: list[Any] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if hasattr(val, "shape"):
                sizes[node] = _numel(val.shape) * 4
                inputs.append(node)
            continue
        if node.op == "output":
            outputs = [root(a) for a in _flat(node.args) if hasattr(a, "op")]
            continue
        if node.op == "call_module" and _is_observer(graph_module, node):
            src = root(node.args[0])
            if src in sizes and not writes_int8(src):
                # A float op feeding a quantized one: the backend quantizes a copy (its own tensor)
                sizes[node] = _numel(src.meta["val"].shape)
                steps.append(([src], [node]))
            else:
                alias[node] = node.args[0]
            continue
        if node.op != "call_function":
            continue
        reads = [root(a) for a in _flat((node.args, node.kwargs)) if hasattr(a, "op")]
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if name in _VIEWS and reads:
            alias[node] = reads[0]
            steps.append((reads, []))
            continue
        if _fused_into_user(node) and reads:
            alias[node] = reads[0]  # conv + activation run as one kernel: no tensor between them
            steps.append((reads, []))
            continue
        val = node.meta.get("val")
        if not hasattr(val, "shape"):  # getitem of tuples, scalars: costless bookkeeping
            if reads and name == "getitem":
                alias[node] = reads[0]
            continue
        width = 1 if writes_int8(node) else int(getattr(val, "element_size", lambda: 4)())
        sizes[node] = _numel(val.shape) * width
        steps.append((reads, [node]))
    return int(liveness_peak(steps, sizes, inputs, outputs))


def memory_of_config(deploy: Any, example: np.ndarray, fmt: str, precision: str,
                     keep_float: Sequence[str] = (), exported: Any = None) -> int:
    """Estimated activation bytes of `deploy` quantized by the recipe of (fmt, precision) with the
    units `keep_float` float (`simulate.quant_units` names). `exported` reuses a
    `torch.export` of `deploy` at batch 1 (the export is most of the cost)."""
    example = np.asarray(example, dtype=np.float32)
    if example.ndim != 5 or len(example) == 0:
        raise EchoEdgeError(f"memory estimate: expected clips (N, C, T, H, W), got {example.shape}")
    ep = exported if exported is not None else export_batch1(deploy, example)
    if fmt in ("executorch", "tflite") and precision == "int8":
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        from echoedge.convert.executorch_quantizer import quantizer_for
        from echoedge.quantdebug.simulate import _keep_float_for

        quantizer, _ = quantizer_for(deploy, keep_float=_keep_float_for(deploy, keep_float, None))
        return estimate_activation_bytes(prepare_pt2e(ep.module(), quantizer))
    return estimate_activation_bytes(ep.module())


def export_batch1(deploy: Any, example: np.ndarray) -> Any:
    import torch

    deploy.eval()
    with torch.no_grad():
        return torch.export.export(deploy, (torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)),))


def memory_fits(deploy: Any, example: np.ndarray, fmt: str, precision: str,
                limit_mb: float) -> Callable[[Sequence[str]], tuple[bool, float]]:
    """fits(kept_float) -> (within `limit_mb`, estimated MB) for `budget.greedy_budget`'s memory
    limit; the deploy form is exported once and each configuration's estimate cached."""
    check_limit(limit_mb)
    cache: dict[tuple[str, ...], float] = {}
    exported: list[Any] = []

    def fits(kept: Sequence[str]) -> tuple[bool, float]:
        key = tuple(kept)
        if key not in cache:
            if not exported:
                exported.append(export_batch1(deploy, example))
            cache[key] = memory_of_config(deploy, example, fmt, precision, kept, exported[0]) / MB
        return cache[key] <= limit_mb, cache[key]

    return fits


def limit_check(deploy: Any, videos: Any, clips: np.ndarray | None, fmt: str, precision: str,
                max_memory_mb: float | None) -> Callable[[Sequence[str]], tuple[bool, float]] | None:
    """The memory limit's check for the budget search (None without a limit). Formats without
    calibration clips (Core ML W8) get a zero clip of the videos' shape: only shapes matter."""
    if max_memory_mb is None:
        return None
    if clips is None or len(clips) == 0:
        sp = videos.spec
        clips = np.zeros((1, sp.channels, sp.frames, sp.height, sp.width), dtype=np.float32)
    return memory_fits(deploy, clips, fmt, precision, max_memory_mb)


def check_limit(limit_mb: float) -> float:
    if not (limit_mb > 0 and np.isfinite(limit_mb)):
        raise EchoEdgeError(f"--max-memory-mb must be a positive number of MB, got {limit_mb:g}")
    return float(limit_mb)


def writes_int8(node: Any) -> bool:
    """The quantizer annotated this op with an int8 output (its observer follows it), so the backend
    writes the output as int8. An observer after an unannotated op is the input observer of a
    quantized consumer: the op itself writes float."""
    ann = node.meta.get("quantization_annotation")
    return bool(ann is not None and getattr(ann, "output_qspec", None) is not None
                and any(u.op == "call_module" and _is_observer(None, u) for u in node.users))


def _fused_into_user(node: Any) -> bool:
    """Annotated without an output spec, read only by one annotated op: the quantizer's fused
    pattern (conv -> relu), which the backend runs as one kernel."""
    ann = node.meta.get("quantization_annotation")
    if ann is None or getattr(ann, "output_qspec", None) is not None or len(node.users) != 1:
        return False
    (user,) = node.users
    return user.op == "call_function" and user.meta.get("quantization_annotation") is not None


def _is_observer(gm: Any, node: Any) -> bool:
    return str(node.target).startswith("activation_post_process")


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flat(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flat(item)]
    return [x]


def _numel(shape: Sequence[Any]) -> int:
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return n
