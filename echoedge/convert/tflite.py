"""Deploy form -> TFLite (`.tflite`), fp32 / fp16 / int8 / int8-full, as an artefact folder.

    deploy form -> onnx_export (static ONNX, onnxsim, onnx2tf substitutions, checked in ONNX Runtime)
      -> onnx2tf 1.28.8 -> a TensorFlow SavedModel (input kept NCTHW) in a private temp folder
         (tflite_onnx2tf: built once per model and shared by the precisions, output captured)
      -> tf.lite.TFLiteConverter.from_saved_model:
           fp32       plain conversion
           fp16       float16 weights (DEQUANTIZE to float32 at load; XNNPACK runs float32)
           int8       selective int8 (the default, tflite_int8): static int8 calibrated on the echo
                      calibration set, the numerically fragile ops denylisted through tf.lite's
                      QuantizationDebugger so they stay float; for Echo-E3Net scoped to the CNN
                      stages, as ExecuTorch's. Float I/O. The whole recipe's file then gets
                      its glue FULLY_CONNECTED layers hybrid (tflite_hybrid_fc) and its own
                      output shift taken out of the head's bias (tflite_output_shift).
           int8-full  all-integer (TFLITE_BUILTINS_INT8 only) with int8 input and outputs; their
                      scale / zero point are in the manifest's TensorSpecs. For accelerators that
                      need it: on CPU it is slower and less accurate (reference/toolchain.md).
         Both int8 schemes take their activation ranges from tflite_calibration (measured in the
         interpreter on every calibration clip), not from TensorFlow's calibrator.
      -> op inspection of the written file (tflite_ops): Flex ops fail every precision, float heavy
         ops fail int8 (scoped int8: float in-scope heavy ops fail it, the out-of-scope ones are
         listed as "float by recipe"); int8 op fraction and the ops left in float go into the manifest
      -> the file runs in the LiteRT interpreter (tflite_interpreter) on golden clips and is compared
         with the eager deploy form (fp32 must agree within float rounding, or the export fails).

Only model.tflite, golden.npz (golden_vectors) and manifest.json go into the artefact. onnx2tf (fp32 files) was
measured unreliable on channel layouts without its slow "strict mode", so correctness is not
assumed: the fp32 check against eager is what makes a file pass.

tensorflow / onnx2tf / ai_edge_litert are imported inside the functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from echoedge.convert.artefact import (
    INPUT_NAME, OUTPUT_NAMES, ArtefactManifest, TensorSpec, tool_versions,
    write_artefact,
)
from echoedge.convert.golden_vectors import calibration_and_golden, write_golden_vectors
from echoedge.convert.int8_recipe import DEFAULT_RECIPE, WHOLE_FLOAT_GLUE, check_recipe, present_modules
from echoedge.convert.tflite_int8 import (
    FLOAT_OPS_IN_INT8, WHOLE_FLOAT_OPS, Int8ScopePlan, full_int8, int8_scope, selective_int8,
)
from echoedge.convert.tflite_interpreter import (
    DEFAULT_INTERPRETER, SIGNATURE_KEY, golden_check, to_layout,
)
from echoedge.console import captured_output
from echoedge.convert.output_shift import OutputShift, offset_buffer, shift_line
from echoedge.convert.tflite_hybrid_fc import hybrid_glue_fcs
from echoedge.convert.tflite_onnx2tf import front_end, log_reason, saved_model_layout
from echoedge.convert.tflite_output_shift import take_out_shift
from echoedge.convert.tflite_ops import check_ops, check_scoped_int8, inspect_tflite
from echoedge.convert.tflite_strip import strip_tensor_names
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError

PRECISIONS = ("fp32", "fp16", "int8", "int8-full")
MODEL_FILE = "model.tflite"
# fp32 .tflite vs the eager deploy form: relative to max(1, max |eager|). onnx2tf's graph (e.g.
# its layer-norm decomposition) rounds differently from PyTorch; a layout or wiring error is
# orders of magnitude larger.
FP32_RTOL = 2e-3
ROUTES = {
    "fp32": "onnx2tf SavedModel -> TFLiteConverter (float32)",
    "fp16": "onnx2tf SavedModel -> TFLiteConverter (float16 weights)",
    "int8": "onnx2tf SavedModel -> TFLiteConverter + QuantizationDebugger (selective int8: "
            "conv/depthwise/fully-connected int8 in the int8 scope, denylisted ops and nodes float)",
    "int8-full": "onnx2tf SavedModel -> TFLiteConverter (TFLITE_BUILTINS_INT8, int8 I/O)",
}


class CalibrationData(Protocol):
    """What the converter needs of an echoedge.calibration.CalibrationSet."""

    clips: np.ndarray  # float32 (N, C, T, H, W), normalised as the ClipSpec says
    id: str


# ----------------------------------------------------------------------------- public entry
def export_tflite(
    model: Any,
    spec: ClipSpec,
    out_dir: str | Path,
    precision: str,
    calibration: CalibrationData | None,
    source_checkpoint_sha256: str,
    golden_inputs: np.ndarray | None = None,
    progress: bool = True,
    overwrite: bool = False,
    keep_float: Sequence[str] = (),
    recipe: str = DEFAULT_RECIPE,
) -> Path:
    """Convert a deploy-form module to a TFLite artefact folder at `out_dir`; return it.

    `recipe` (int8 only): "conv-stages" scopes int8 to Echo-E3Net's CNN stages; "whole" makes
    every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED int8, the fragile ops
    (FLOAT_OPS_IN_INT8) float.

    `keep_float` (the conv-stages recipe) names module paths whose convs stay float on top of
    the recipe (mixed precision): their TFLite convs, located by weight, become denylisted nodes.
    """
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise EchoEdgeError(f"TFLite precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision.startswith("int8") and calibration is None:
        raise EchoEdgeError(f"{out_dir}: {precision} needs a calibration set (static quantization "
                            "takes its activation ranges from real clips)")
    keep_float = tuple(keep_float)
    check_recipe(recipe)
    if keep_float and recipe != DEFAULT_RECIPE:
        raise EchoEdgeError(f"{out_dir}: keep_float needs the scoped int8 recipe ({DEFAULT_RECIPE})")
    float_weights: list[np.ndarray] = []
    if keep_float:
        float_weights = _keep_float_weights(model, keep_float, precision, out_dir)
    _require_toolchain()
    clip_shape = tuple(spec.input_shape(1))
    clips, golden = calibration_and_golden(calibration, golden_inputs, clip_shape)
    _refuse_3d_ops(model)

    def build(tmp: Path) -> ArtefactManifest:
        return _build(model, spec, tmp, precision, clips, calibration, golden,
                      source_checkpoint_sha256, progress, keep_float, float_weights, recipe)

    return write_artefact(out_dir, build, overwrite=overwrite)


def _keep_float_weights(model: Any, keep_float: Sequence[str], precision: str,
                        out_dir: Path) -> list[np.ndarray]:
    """The 4-D conv weights (O, I, kh, kw) of the modules under `keep_float`, checked."""
    from torch import nn

    if precision != "int8":
        raise EchoEdgeError(f"{out_dir}: keep_float applies to int8 only (got {precision})")
    names = dict(model.named_modules())
    unknown = [k for k in keep_float if k not in names]
    if unknown:
        raise EchoEdgeError(f"{out_dir}: keep_float names modules the model does not have: {', '.join(unknown)}")
    out = [m.weight.detach().cpu().numpy().astype(np.float32) for n, m in names.items()
           if isinstance(m, nn.Conv2d) and any(n == k or n.startswith(k + ".") for k in keep_float)]
    if not out:
        raise EchoEdgeError(f"{out_dir}: keep_float ({', '.join(keep_float)}) holds no Conv2d")
    return out


def _require_toolchain() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow", "ai_edge_litert")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EchoEdgeError("the TFLite toolchain is not installed (missing: " + ", ".join(missing)
                            + "); install the pinned versions from requirements.txt")


def _refuse_3d_ops(model: Any) -> None:
    # TFLite never runs CONV_3D in int8 and XNNPACK does not take it (toolchain.md).
    from torch import nn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d)):
            raise EchoEdgeError(f"model has a 3D op at '{name}' ({type(m).__name__}), which TFLite "
                                "cannot run in int8 or on XNNPACK; convert its deploy form "
                                "(echoedge.model.deploy.to_deploy_form)")


# ----------------------------------------------------------------------------- TFLite converter
@dataclass
class Converted:
    data: bytes  # the .tflite file
    scope: Int8ScopePlan | None = None  # scoped int8 only
    ranges: dict[str, Any] | None = None  # int8, int8-full: how the activation ranges were measured


def convert_saved_model(saved: Path, precision: str, clips: np.ndarray | None,
                        layout: str, log: Path, progress: bool = True,
                        scope: Sequence[str] | None = None, onnx_path: Path | None = None,
                        float_weights: Sequence[np.ndarray] = (),
                        keep_float: Sequence[str] = (), float_glue: bool = False) -> Converted:
    """The .tflite bytes of one precision from an onnx2tf SavedModel. `scope` (int8 only, with
    the ONNX file the SavedModel came from) limits int8 to the convs of those modules;
    `float_glue` (int8, whole recipe) keeps the glue ops float (tflite_int8.selective_int8)."""
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        # One clip at a time (batch 1, as the file runs), in the file's input layout.
        assert clips is not None
        for clip in clips:
            yield [to_layout(clip[None], layout)]

    import warnings

    # warnings: the QuantizationDebugger builds tf.lite.Interpreters, which warn of deprecation.
    with captured_output(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            data, plan, ranges = selective_int8(converter, representative, scope, onnx_path,
                                                float_weights, keep_float, float_glue)
            return Converted(data, plan, ranges.to_dict())
        elif precision == "int8-full":
            data, ranges = full_int8(converter, representative)
            return Converted(data, ranges=ranges.to_dict())
        return Converted(bytes(converter.convert()))


# ----------------------------------------------------------------------------- build
def _build(model: Any, spec: ClipSpec, tmp: Path, precision: str, clips: np.ndarray | None,
           calibration: CalibrationData | None, golden: np.ndarray, checkpoint_sha: str,
           progress: bool, keep_float: Sequence[str] = (),
           float_weights: Sequence[np.ndarray] = (), recipe: str = DEFAULT_RECIPE) -> ArtefactManifest:
    import torch

    from echoedge.model.registry import name_of

    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    model = model.eval()
    clip_shape = tuple(spec.input_shape(1))
    fe = front_end(model, np.ascontiguousarray(golden[:1]), say)
    timings["onnx_export"] = fe.onnx.seconds
    timings["onnx2tf"] = fe.onnx2tf_s

    t0 = time.perf_counter()
    say(f"TFLite {precision}: {ROUTES[precision]}"
        + (f", calibrating on {len(clips)} clips" if clips is not None else ""))
    # The SavedModel keeps the clip NCTHW (onnx2tf was told so); read it back, do not assume.
    layout = saved_model_layout(fe.saved_model, clip_shape)
    log = fe.folder / f"convert-{precision}.log"
    scope = int8_scope(model) if precision == "int8" and recipe == DEFAULT_RECIPE else None
    whole = precision == "int8" and recipe == "whole"
    glue = present_modules(model, WHOLE_FLOAT_GLUE) if whole else []
    stripped = hybrid = shift = None
    try:
        conv = convert_saved_model(fe.saved_model, precision, clips, layout, log, progress,
                                   scope=scope, onnx_path=fe.folder / "model.onnx",
                                   float_weights=float_weights, keep_float=keep_float,
                                   float_glue=bool(glue))
        if whole:
            with captured_output(log):
                conv.data, hybrid = hybrid_glue_fcs(conv.data)
            shift = _take_out_shift(conv, model, clips, clip_shape, fe.folder, log)
            if isinstance(shift, OutputShift):
                say(f"TFLite {precision}: output shift taken out of the head's bias: "
                    f"{shift_line(shift.outputs, shift.shift)}")
            with captured_output(log):  # the smallest file is the recipe's point; nothing reads these names
                stripped = strip_tensor_names(conv.data)
            conv.data = stripped.data
    except EchoEdgeError:
        raise
    except Exception as e:
        raise EchoEdgeError(f"TFLiteConverter failed for {precision} ({log_reason(log, e)})") from None
    model_path = tmp / MODEL_FILE
    model_path.write_bytes(conv.data)
    timings["tflite_convert"] = time.perf_counter() - t0

    # What is inside the file, not its name. A scoped int8 file has float convs by recipe: its
    # in-scope convs must be int8 (files without a scope keep the strict check).
    ops = inspect_tflite(model_path)
    scope_check = None
    if conv.scope is not None:
        scope_check = check_scoped_int8(model_path, conv.scope.heavy_nodes)
    else:
        check_ops(ops, precision)
    if progress:
        print(ops.table())

    t0 = time.perf_counter()
    it, io_, outs, vs_eager = golden_check(model_path, clip_shape, golden, model, precision,
                                           f"converted {precision} file" if precision != "fp32" else "fp32 .tflite",
                                           FP32_RTOL, "; onnx2tf mis-converted the graph")
    timings["run_check"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    inputs = [TensorSpec(INPUT_NAME, [int(s) for s in ops.inputs[0].shape] if ops.inputs else list(clip_shape),
                         "int8" if io_.input_quant else "float32", io_.layout,
                         *(io_.input_quant or (None, None)))]
    runner = it.get_signature_runner(SIGNATURE_KEY)
    out_details = runner.get_output_details()
    outputs = []
    for name, key, q in zip(OUTPUT_NAMES, io_.output_keys, io_.output_quant):
        shape = [int(s) for s in out_details[key]["shape"]]
        outputs.append(TensorSpec(name, shape, "int8" if q else "float32",
                                  "N" if len(shape) == 1 else "NK2", *(q or (None, None))))
    calib = None
    if clips is not None and calibration is not None:
        calib = {"id": calibration.id, "clips": int(len(clips))}
        meta = getattr(calibration, "manifest", None) or {}
        for key in ("strategy", "split", "seed"):
            if key in meta:
                calib[key] = meta[key]
        if conv.ranges:
            calib.update(conv.ranges)
    summary = ops.summary()
    return ArtefactManifest(
        format="tflite",
        precision=precision,
        runtime=f"tflite-xnnpack ({DEFAULT_INTERPRETER} interpreter)",
        model_file=MODEL_FILE,
        clip_spec=spec.to_dict(),
        inputs=inputs,
        outputs=outputs,
        source_checkpoint_sha256=checkpoint_sha,
        model=name_of(model),
        calibration_id=calib["id"] if calib else None,
        tool_versions=tool_versions("onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow-cpu",
                                    "tf_keras", "ai-edge-litert"),
        details={
            "route": ROUTES[precision],
            "signature": {"key": SIGNATURE_KEY, "input": io_.input_key,
                          "outputs": dict(zip(OUTPUT_NAMES, io_.output_keys))},
            "input_layout": io_.layout,
            "int8_op_fraction": summary["int8_op_fraction"],
            "ops_left_in_float": summary["ops_left_in_float"],
            "flex_ops": summary["flex_ops"],
            "op_histogram": summary["histogram"],
            "quantization": {**_quant_details(precision, calib, conv.scope, scope_check, recipe, glue),
                             **({"hybrid_fully_connected": hybrid.to_dict()} if hybrid else {}),
                             **({"output_shift": shift.to_dict() if isinstance(shift, OutputShift)
                                 else {"not_applied": shift}} if shift else {})},
            **({"tensor_names": stripped.to_dict()} if stripped else {}),
            "onnx": fe.onnx.to_dict(),
            "golden_vs_eager": {"reference": "the eager module that was converted (deploy form)",
                                "interpreter": "litert", "cases": int(len(golden)),
                                "errors": vs_eager},
            # Re-run by `echo-edge verify` (echoedge.validate.verify) in the same interpreter.
            "golden": write_golden_vectors(tmp, golden, outs, "tflite", precision,
                                           "this file in the litert interpreter, on the host that exported it"),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        },
    )


def _take_out_shift(conv: Converted, model: Any, clips: np.ndarray | None, clip_shape: Sequence[int],
                    work: Path, log: Path) -> OutputShift | str | None:
    """The whole recipe's output-shift correction (tflite_output_shift), in place on conv.data:
    the shift, a line saying why none was taken out, or None when the model states no offset."""
    found = offset_buffer(model)
    if found is None or clips is None:
        return None
    with captured_output(log):
        conv.data, shift = take_out_shift(conv.data, model, clips, clip_shape, OUTPUT_NAMES[:found[1]], work)
    return shift


def _quant_details(precision: str, calib: dict[str, Any] | None, scope: Int8ScopePlan | None = None,
                   scope_check: dict[str, Any] | None = None, recipe: str = DEFAULT_RECIPE,
                   float_glue: Sequence[str] = ()) -> dict[str, Any]:
    if precision == "fp32":
        return {"scheme": None}
    if precision == "fp16":
        return {"scheme": "float16 weights, float32 activations and I/O"}
    if precision == "int8":
        out = {"scheme": "static int8 (per-channel weights, per-tensor activations), selective: "
                         "denylisted ops stay float", "denylisted_ops": list(FLOAT_OPS_IN_INT8),
               "io": "float32 (QUANTIZE/DEQUANTIZE inside the file)", "calibration": calib,
               "recipe": {"name": recipe}, "int8_modules": list(scope.modules) if scope and scope.modules else "all",
               "float": "denylisted ops" + (" and every op outside int8_modules" if scope and scope.modules else "")}
        if float_glue:  # the whole recipe: ExecuTorch's float glue, found in the graph by rank
            out["recipe"]["float_glue"] = list(float_glue)
            out["denylisted_ops"] += list(WHOLE_FLOAT_OPS)
            out["float"] += (" (with every " + ", ".join(WHOLE_FLOAT_OPS) + ") and the vector glue: "
                             "ops on 2-D (batch, features) tensors but FULLY_CONNECTED")
        if scope is not None and scope.kept_float:  # mixed precision (echo-edge debug-quant)
            out["kept_float"] = list(scope.kept_float)
            out["float"] += " and the convs of kept_float"
        if scope is not None:
            # The op check's view: in-scope convs int8, the float heavy ops outside by recipe.
            out["scope"] = {**scope.to_dict(), **(scope_check or {}),
                            "heavy_nodes": list(scope.heavy_nodes)}
        return out
    return {"scheme": "full-integer static int8 (per-channel weights), TFLITE_BUILTINS_INT8",
            "io": "int8; real = scale * (q - zero_point), see inputs/outputs", "calibration": calib}


__all__: Sequence[str] = ("export_tflite", "convert_saved_model", "Converted", "PRECISIONS", "ROUTES",
                          "MODEL_FILE")
