"""Quantization simulated in PyTorch: the int8 recipe's numbers without any converter or runtime.

`simulate_int8` runs the same PT2E flow the ExecuTorch converter runs (torch.export -> the
recipe's XNNPACK quantizer -> calibration on the same clips, one clip at a time -> convert_pt2e)
and returns the converted graph module: quantize/dequantize pairs around every quantized op, the
ops themselves in float. Running it gives the EF the recipe would give if every runtime rounded
exactly like PyTorch's reference q/dq; the gap between that and an artefact's EF is what the
converter and runtime add (`echo-edge debug-quant`'s attribution).

`ef_per_video` is the evaluation protocol of `validate` (same videos, same evenly spaced clips,
per-video mean), for any callable model, at batch 1 because the simulated graph is exported at
batch 1 like the artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError


@dataclass
class VideoSet:
    """Held-out videos and the clip protocol an EF figure is measured on."""

    records: list[Any]
    frames: Callable[[Any], np.ndarray]
    spec: Any  # ClipSpec
    clips_per_video: int
    split: str

    @property
    def names(self) -> list[str]:
        return [r.file_name for r in self.records]


def load_videos(data: str | Path, spec: Any, split: str = "VAL", videos: int | None = 12,
                clips_per_video: int = 2, cache_dir: Path | None = None,
                require_tracings: bool = False, shift: str | None = None,
                shift_level: str = "moderate", seed: int = 0) -> VideoSet:
    """The first `videos` videos of `split` (all when None) with a frame cache;
    `require_tracings` applies EchoNet-Dynamic's rule (untraced videos dropped). With `shift`,
    every video's frames get that stress-suite shift at `shift_level` (the stress suite's seeded
    draw), so each part measures what quantization costs on shifted frames."""
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.data.shifts import ShiftedSource, check_level, get_shift

    reader = EchoNet(Path(data), require_tracings=require_tracings)
    records = reader.records(split)
    if videos:
        records = records[:videos]
    if not records:
        raise EchoEdgeError(f"{data}: split {split} has no videos")
    frames: Any = FrameCache(reader, cache_dir)
    if shift:
        get_shift(shift)  # an unknown name fails here, listing the shifts
        frames = ShiftedSource(frames, shift, check_level(shift_level), seed)
        records = [frames.record(r) for r in records]
    return VideoSet(records, frames, spec, clips_per_video, split)


def ef_per_video(model: Any, videos: VideoSet, progress: bool = False,
                 description: str = "EF") -> np.ndarray:
    """Per-video EF (mean over the clips) of a torch module or an Infer callable, batch 1."""
    import torch

    from echoedge.model.evaluate import predict_videos

    infer = model
    if isinstance(model, torch.nn.Module):
        # Not eager_infer: a PT2E graph module refuses .eval(); callers put modules in eval mode.
        def infer(batch: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [o.float().numpy() for o in model(torch.from_numpy(np.ascontiguousarray(batch)))]
    preds = predict_videos(infer, videos.records, videos.frames, videos.spec, videos.clips_per_video,
                           batch_size=1, progress=progress, description=description)
    return np.array([p.ef for p in preds], dtype=np.float64)


def simulate_int8(deploy: Any, clips: np.ndarray, keep_float: Sequence[str] = (),
                  progress: bool = False, only: Sequence[str] | None = None,
                  stats: dict[str, dict[str, Any]] | None = None, recipe: str | None = None) -> Any:
    """The deploy form with the ExecuTorch int8 recipe applied in PyTorch (fake quantization).

    `clips` are the calibration clips (float32 (N, C, T, H, W)); `keep_float` names module paths
    kept float on top of the recipe (`echoedge.convert.executorch_quantizer.quantizer_for`); `only` (when
    given) keeps every other unit of `quant_units` float: the sensitivity sweep's "only this unit
    int8" mode (the recipe's shared element-wise ops between units stay as the recipe has them).
    Observers see float activations during calibration (PT2E), so the ranges of a unit do not
    depend on which other units are quantized: `stats` (from `observers.observer_stats`, computed
    once on the same clips) fills the observers instead of calibrating again -- the same numbers,
    minutes less per sweep step on the paper config.
    `recipe` names the int8 recipe (None: the converters' default). The whole recipe's artefacts
    have their output shift taken out at conversion: the simulation takes out the one it
    measures on the same clips (`output_shift.take_out_graph_shift`), as the ExecuTorch converter
    does on the graph it lowers.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from echoedge.convert.output_shift import take_out_graph_shift
    from echoedge.quantdebug.observers import calibrate, load_observer_stats, prepare_recipe

    clips = np.asarray(clips)
    if clips.ndim != 5 or len(clips) == 0:
        raise EchoEdgeError(f"calibration clips: expected (N, C, T, H, W) with N >= 1, got {clips.shape}")
    prepared = prepare_recipe(deploy, clips, keep_float=_keep_float_for(deploy, keep_float, only),
                              recipe=recipe)
    with torch.no_grad():
        if stats is None or not load_observer_stats(prepared, stats):
            calibrate(prepared, clips, progress)
        converted = convert_pt2e(prepared)
    if recipe == "whole":
        take_out_graph_shift(converted, deploy, clips)
    return converted


def quantized_layers(deploy: Any) -> list[str]:
    """Module paths of the convs the int8 recipe quantizes, in forward order (sensitivity units)."""
    from torch import nn

    from echoedge.convert.int8_recipe import int8_scope

    scope = int8_scope(deploy)
    out = []
    for name, m in deploy.named_modules():
        if isinstance(m, nn.Conv2d) and (scope is None or name.startswith(scope)):
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# Per-format simulations and the units a user can keep float
# --------------------------------------------------------------------------------------------

# (format, precision) -> what the simulation reproduces and what it leaves to the converter and
# runtime (the "conversion/runtime" term of the attribution). fp32/fp16 artefacts are simulated by
# the fp32 deploy form itself: everything they differ by is conversion/runtime.
FIDELITY: dict[tuple[str, str], str] = {
    ("executorch", "int8"): (
        "exact recipe: the converter's own PT2E flow (XNNPACKQuantizer, scope, min/max observers, "
        "same calibration clips at batch 1) as PyTorch reference quantize/dequantize; XNNPACK's "
        "integer kernels (requantization rounding, fused activations) are the runtime term"),
    ("tflite", "int8"): (
        "same scheme, not the same tool: TFLite's selective int8 quantizes the same scope (the "
        "CNN convs) with per-channel symmetric weights and per-tensor affine min/max activations, "
        "simulated with the ExecuTorch PT2E recipe; what TFLite quantizes around the convs (which "
        "element-wise ops, where it requantizes), onnx2tf's graph and its calibration statistics "
        "are in the conversion/runtime term"),
    ("coreml", "w8"): (
        "weights only: per-output-channel symmetric int8 (range -127..127, scale = max|w|/127 of "
        "the fp16 weight) of every weight with more than coremltools' threshold elements; Core ML's "
        "fp16 activations and compute are not simulated (they are in the conversion/runtime term)"),
    ("coreml", "w8a8"): (
        "approximate: the W8 weight simulation plus per-tensor symmetric int8 min/max "
        "quantize/dequantize of the activations at the inputs and outputs of every conv and "
        "Linear (PT2E, whole model); coremltools' prefix/suffix pairs on other ops and fp16 "
        "compute are in the conversion/runtime term"),
}
FLOAT_PRECISIONS = ("fp32", "fp16")


@dataclass
class QuantUnit:
    """A group of deploy-form weight layers a user recognises as one layer of the reference model.

    The deploy form rewrites one reference Conv3d into several Conv2d (`convs.0`, `run_convs.1_2`,
    ...) under the same module path; they are quantized and kept float together, named by that
    path (e.g. 'encoder.cnn.0.block.conv1'). A layer that was not rewritten is its own unit.
    """

    name: str  # module path in the reference (and deploy) model; a keep_float entry
    layers: tuple[str, ...]  # deploy-form module paths of its weight layers
    params: int  # weight elements of the unit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": list(self.layers), "params": self.params}


def simulated_formats() -> list[tuple[str, str]]:
    """(format, precision) pairs `simulate` has a quantized simulation for."""
    return list(FIDELITY)


def fidelity(fmt: str, precision: str) -> str:
    """How faithful the simulation of one format/precision is (a sentence for the report)."""
    if precision in FLOAT_PRECISIONS:
        return "float artefact: the fp32 deploy form itself (no quantization to simulate)"
    try:
        return FIDELITY[(fmt, precision)]
    except KeyError:
        raise EchoEdgeError(f"no quantization simulation for {fmt} {precision} "
                            f"(have: {', '.join(f'{f} {p}' for f, p in FIDELITY)})") from None


def needs_calibration(fmt: str, precision: str) -> bool:
    """True when the simulation of fmt/precision takes activation ranges from calibration clips."""
    return precision in ("int8", "int8-full", "w8a8")


def quant_units(deploy: Any, fmt: str = "executorch", precision: str = "int8") -> list[QuantUnit]:
    """The units a sensitivity sweep or a mixed-precision artefact works with, in forward order.

    ExecuTorch/TFLite int8: the convs of the int8 scope (`quantized_layers`). Core ML W8/W8A8: every
    conv and Linear whose weight coremltools quantizes (more than its threshold elements).
    """
    from torch import nn

    if precision in FLOAT_PRECISIONS:
        return []
    fidelity(fmt, precision)  # unknown pairs fail here
    if fmt == "coreml":
        from echoedge.convert.coreml_quantize import W8_WEIGHT_THRESHOLD

        layers = [n for n, m in deploy.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() > W8_WEIGHT_THRESHOLD]
    else:
        layers = quantized_layers(deploy)
    return group_units(deploy, layers)


def group_units(deploy: Any, layers: Sequence[str]) -> list[QuantUnit]:
    """Group deploy-form layer paths by the rewritten reference module they belong to."""
    from echoedge.model.deploy_conv import Conv3dAs2d

    modules = dict(deploy.named_modules())
    order: list[str] = []
    members: dict[str, list[str]] = {}
    for path in layers:
        unit = path
        parts = path.split(".")
        # The closest ancestor that is a Conv3d rewrite names the unit.
        for k in range(len(parts) - 1, 0, -1):
            if isinstance(modules.get(".".join(parts[:k])), Conv3dAs2d):
                unit = ".".join(parts[:k])
                break
        if unit not in members:
            order.append(unit)
            members[unit] = []
        members[unit].append(path)
    return [QuantUnit(u, tuple(members[u]),
                      int(sum(modules[p].weight.numel() for p in members[u]))) for u in order]


def simulate(deploy: Any, fmt: str, precision: str, clips: np.ndarray | None = None,
             keep_float: Sequence[str] = (), only: Sequence[str] | None = None,
             progress: bool = False, stats: dict[str, dict[str, Any]] | None = None,
             recipe: str | None = None) -> Any:
    """The deploy form as artefact `fmt`/`precision` would compute it, quantization-wise.

    Returns a callable torch module (eval mode). `clips` are the calibration clips the artefact
    was built with (needed where `needs_calibration`); `keep_float` names units/module paths kept
    float on top of the format's recipe; `only` (sensitivity "only" mode) restricts quantization
    to those units (None: the whole recipe). fp32/fp16 return the deploy form itself.
    `stats` (ExecuTorch/TFLite int8: `observers.observer_stats` on the same clips) skips calibration.
    `recipe` (ExecuTorch/TFLite int8) is the artefact's int8 recipe (None: the default).
    See `fidelity` for what each simulation leaves out.
    """
    if precision in FLOAT_PRECISIONS:
        return deploy.eval()
    fidelity(fmt, precision)
    if needs_calibration(fmt, precision) and clips is None:
        raise EchoEdgeError(f"simulating {fmt} {precision} needs the calibration clips the artefact "
                            "was built with")
    if fmt in ("executorch", "tflite"):
        return simulate_int8(deploy, clips, keep_float=keep_float, only=only, progress=progress,
                             stats=stats, recipe=recipe)
    weights = simulate_weights_int8(deploy, keep_float=keep_float, only=only)
    if precision == "w8":
        return weights
    return simulate_w8a8_activations(weights, clips, keep_float=keep_float, only=only,
                                     progress=progress)


def _node_paths(node: Any) -> list[str]:
    return [str(path) for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _under_any(paths: Sequence[str], prefixes: Sequence[str]) -> bool:
    return any(p == k or p.startswith(k + ".") for p in paths for k in prefixes)


def _keep_float_for(deploy: Any, keep_float: Sequence[str], only: Sequence[str] | None) -> list[str]:
    """keep_float plus, in "only" mode, every int8-recipe unit outside `only`.

    "Only" is the complement of the other units rather than a filter on module paths: a filter
    would also drop the recipe's unnamed glue (a ReLU or add written in the parent's forward),
    which breaks the conv+activation patterns the quantizer annotates together.
    """
    keep = list(keep_float)
    if only is not None:
        keep += [u.name for u in quant_units(deploy, "executorch", "int8")
                 if not _under_any([u.name], only) and not _under_any(u.layers, only)]
    return keep


def _selected(path: str, keep_float: Sequence[str], only: Sequence[str] | None) -> bool:
    if _under_any([path], keep_float):
        return False
    return only is None or _under_any([path], only)


def fake_quantize_weight(w: Any) -> Any:
    """Core ML W8 of one weight: fp16 value, per-output-channel (axis 0) symmetric int8 in -127..127.

    coremltools' linear_symmetric int8 (optimize._utils.quantize_weight_by_dtype) on the fp16
    program's weight, in its own fp16 arithmetic: scale = 2 max|w| / 254, q = clip(round(w /
    scale), -127, 127); Core ML dequantizes to fp16 (q * scale), which is what is returned.
    """
    import torch

    w16 = w.detach().cpu().numpy().astype(np.float16)
    flat = w16.reshape(w16.shape[0], -1)
    max_abs = np.maximum(np.abs(flat.min(axis=1, keepdims=True)), np.abs(flat.max(axis=1, keepdims=True)))
    scale = (max_abs - (-max_abs)) / np.float16(254)
    scale = np.where(scale > 0, scale, np.float16(1)).astype(np.float16)
    q = np.clip(np.round(flat / scale), -127, 127).astype(np.float16)
    deq = (q * scale).astype(np.float32).reshape(w.shape)
    return torch.from_numpy(deq).to(w.dtype)


def simulate_weights_int8(deploy: Any, keep_float: Sequence[str] = (),
                          only: Sequence[str] | None = None) -> Any:
    """A copy of the deploy form whose Core ML W8 weights are int8-rounded (activations float).

    The weights are those `quant_units(deploy, "coreml", "w8")` names (conv and Linear weights with
    more than coremltools' threshold elements), minus `keep_float`, restricted to `only`.
    """
    import copy

    import torch

    units = quant_units(deploy, "coreml", "w8")
    sim = copy.deepcopy(deploy).eval()
    modules = dict(sim.named_modules())
    with torch.no_grad():
        for unit in units:
            for path in unit.layers:
                if _selected(path, keep_float, only):
                    m = modules[path]
                    m.weight.copy_(fake_quantize_weight(m.weight))
    return sim


def simulate_w8a8_activations(weights_sim: Any, clips: np.ndarray, keep_float: Sequence[str] = (),
                              only: Sequence[str] | None = None, progress: bool = False) -> Any:
    """Core ML W8A8 (approximate): per-tensor symmetric int8 min/max activations around every conv
    and Linear of `weights_sim` (a `simulate_weights_int8` result), as a PT2E graph module.

    PT2E also re-quantizes the weights per channel, symmetric, which leaves already int8-rounded
    weights unchanged (the largest weight of a channel maps to 127 again).
    """
    import dataclasses

    import torch
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config,
    )

    from echoedge.convert.executorch_quantizer import xnnpack_quantizer
    from echoedge.quantdebug.observers import calibrate

    clips = np.asarray(clips)
    if clips.ndim != 5 or len(clips) == 0:
        raise EchoEdgeError(f"calibration clips: expected (N, C, T, H, W) with N >= 1, got {clips.shape}")
    config = get_symmetric_quantization_config(is_per_channel=True)
    observer = MinMaxObserver.with_args(eps=2**-12, qscheme=torch.per_tensor_symmetric)
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer,
                              qscheme=torch.per_tensor_symmetric, quant_min=-127, quant_max=127)
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    layers = {p for u in quant_units(weights_sim, "coreml", "w8") for p in u.layers
              if _selected(p, keep_float, only)}

    def quantize(node: Any) -> bool:
        paths = _node_paths(node)
        return not paths or any(p in layers for p in paths)

    quantizer = xnnpack_quantizer().set_global(config).set_filter_function(quantize)
    example = (torch.from_numpy(np.ascontiguousarray(clips[:1], dtype=np.float32)),)
    weights_sim.eval()
    with torch.no_grad():
        ep = torch.export.export(weights_sim, example)
        prepared = prepare_pt2e(ep.module(), quantizer)
        calibrate(prepared, clips, progress, description="calibrating (W8A8 simulation)")
        return convert_pt2e(prepared)
