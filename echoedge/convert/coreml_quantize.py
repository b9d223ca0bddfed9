"""Core ML quantization on Linux: W8 weights (coremltools) and W8A8 activations (interpreted ranges).

W8: coremltools.optimize.coreml.linear_quantize_weights: int8, linear_symmetric, per output
channel, weights of >= W8_WEIGHT_THRESHOLD elements (smaller ones, e.g. biases and norm scales,
stay fp16 - Core ML's own rule, with a lower bar); `float_consts` keep chosen weights fp16.

W8A8 route ("interpreted activation ranges"), activations int8 with a zero point per tensor
(ACTIVATION_MODE "linear"; coremltools' examples use "linear_symmetric", the scale alone).
Measured on the shipped checkpoint through the reference interpreter, 24 TEST videos x 2 clips
against fp32, with the output shift taken out (coreml_output_shift): symmetric mean / p95 |dEF|
0.439 / 1.408 (0.632 / 1.730 before the shift), with a zero point 0.249 / 0.469 (0.558 / 0.948).
Most activations here follow a LeakyReLU or GELU and are nearly one-signed, so a symmetric grid
spends half its 256 steps on values that do not occur. MIL's quantize/dequantize take an int8
zero point (iOS 17). coremltools' `linear_quantize_activations` gets
activation ranges by running the model through Core ML, which only macOS can. Here the fp16
program is saved, loaded back from disk and run clip by clip through the reference interpreter
over the echo calibration set; the min/max of every intermediate tensor (coremltools' own
statistic, with its concat-range merging) then feeds coremltools' own graph passes
(`compression::insert_prefix_quantize_dequantize_pair`, `..._suffix_...`,
`common::dequantize_quantize_pair_elimination`), exactly as `linear_quantize_activations` would on
a Mac. It starts from the fp16 program: from fp32, coremltools fails ("scale has dtype fp16 whereas
input has dtype fp32", reference/toolchain.md). The other known Linux route (a torchao PT2E
graph converted to Core ML) is recorded as less accurate in reference/toolchain.md. The passes
are coremltools internals (pinned coremltools 9.0); the manifest records the route and the
calibration set id. coremltools' passes also turn the fp16 program's I/O into float16 (the
plain fp16 conversion keeps float32 I/O): the manifest records the dtypes the package declares.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.coreml_mlprogram import _import_coremltools, load_program_quietly
from echoedge.errors import EchoEdgeError

ACTIVATION_MODE = "linear"  # int8 with a per-tensor zero point (see above)

# Weight tensors with fewer elements stay fp16 in W8/W8A8 (coremltools' default is 2048, which
# would leave the small convs of the paper config float); biases and norm scales fall below it.
W8_WEIGHT_THRESHOLD = 256


def float_weight_consts(mlmodel: Any, params: Sequence[str]) -> list[str]:
    """The ML program's const ops holding these torch parameters.

    coremltools names a lifted parameter's const after its torch.export input, `p_` + the dotted
    path with '_' (`p_encoder_stem_0_convs_0_weight`), plus `_to_fp16` in an fp16 program.
    """
    consts = {op.name for op in mlmodel._mil_program.functions["main"].operations
              if op.op_type == "const"}
    found, missing = [], []
    for p in params:
        base = "p_" + p.replace(".", "_")
        hit = [n for n in (base, base + "_to_fp16") if n in consts]
        (found if hit else missing).extend(hit or [p])
    if missing:
        raise EchoEdgeError("no ML program const found for the weights kept float: " + ", ".join(missing[:5]))
    return found


def _weight_config(ct: Any) -> Any:
    import coremltools.optimize as cto

    return cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel",
        weight_threshold=W8_WEIGHT_THRESHOLD))


def weight_config(float_consts: Sequence[str] = ()) -> Any:
    """W8's OptimizationConfig; `float_consts` (const op names) stay fp16 (op_name_configs None)."""
    config = _weight_config(_import_coremltools())
    for name in float_consts:
        config.set_op_name(name, None)
    return config


def quantize_weights(mlmodel: Any, float_consts: Sequence[str] = ()) -> Any:
    """W8 weights; `float_consts` (const op names) stay fp16."""
    import coremltools.optimize as cto

    return cto.coreml.linear_quantize_weights(mlmodel, weight_config(float_consts))


def quantize_activations(mlmodel: Any, scratch: Path, clips: np.ndarray, progress: bool,
                         threads: int | None = None,
                         weights: Any | None = None) -> tuple[Any, dict[str, Any]]:
    """Activation-quantize an fp16 MLModel with ranges from the reference interpreter (run on
    `threads` threads; None: torch's current setting). `weights` (a `weight_config`) quantizes
    the weights in the same pass over the program, after the activations, as W8A8 does: one
    round trip of the model through coremltools instead of two (each ~8 s here).

    Returns the new MLModel and a summary of the statistics (how many tensors, the clip count,
    the seconds the interpreter took to gather them).
    """
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as ct_utils
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )
    import coremltools.optimize as cto

    from echoedge.mil.interpreter import Interpreter, activation_ranges

    # Statistics are gathered on the program as coremltools will read it back (names included),
    # so the fp16 model goes through disk first.
    pkg = scratch / "fp16-for-calibration.mlpackage"
    mlmodel.save(str(pkg))
    t0 = time.perf_counter()
    interp = Interpreter(pkg, threads=threads)
    stats = activation_ranges(interp, interp.input_names[0], clips, progress=progress, total=len(clips))
    ranges_s = time.perf_counter() - t0
    for name in interp.output_names:  # coremltools keeps no statistics for program outputs
        stats.pop(name, None)
    prog, _ = load_program_quietly(pkg)
    concat_groups = [[v.name for v in op.inputs["values"]] + [op.outputs[0].name]
                     for op in prog.functions["main"].operations if op.op_type == "concat"]
    _adjust_concat_surrounding_activation_stats(concat_groups, stats)
    shutil.rmtree(pkg, ignore_errors=True)

    config = cto.coreml.OptimizationConfig(
        global_config=cto.coreml.OpLinearQuantizerConfig(mode=ACTIVATION_MODE, dtype="int8"))
    passes = []
    for name in ("compression::insert_prefix_quantize_dequantize_pair",
                 "compression::insert_suffix_quantize_dequantize_pair"):
        p = PASS_REGISTRY[name]
        p.set_options([PassOption("config", config)])
        p.set_options([PassOption("activation_stats", stats)])
        passes.append(p)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    if weights is not None:  # what linear_quantize_weights applies, in the same round trip
        p = PASS_REGISTRY["compression::linear_quantize_weights"]
        p.set_options([PassOption("config", weights), PassOption("joint_compression", False)])
        passes.append(p)
    quantized = ct_utils._apply_graph_pass(
        mlmodel, passes, spec_version=_SPECIFICATION_VERSION_IOS_17,
        pymil_load_func=milproto_load.load, skip_model_load=True)
    return quantized, {"tensors_with_ranges": len(stats), "clips": int(len(clips)), "ranges_s": ranges_s}


__all__: Sequence[str] = ("ACTIVATION_MODE", "W8_WEIGHT_THRESHOLD", "float_weight_consts",
                          "quantize_activations", "quantize_weights", "weight_config")
