"""Deploy form -> Core ML ML program (`model.mlpackage`), fp32 / fp16 / W8 / W8A8, as an artefact folder.

    torch.export (static 1xCxTxHxW input).run_decompositions({})    (coreml_mlprogram)
      -> coremltools.convert(convert_to="mlprogram", minimum_deployment_target=iOS17)
         fp32: compute precision FLOAT32; fp16, w8, w8a8: FLOAT16 (Core ML's default)
      -> w8:   coremltools.optimize.coreml.linear_quantize_weights: int8, linear_symmetric,
               per output channel, weights of >= W8_WEIGHT_THRESHOLD elements (smaller ones,
               e.g. biases and norm scales, stay fp16 - Core ML's own rule, with a lower bar)
      -> w8a8: activation quantization first (int8 with a zero point per tensor), then the
               same weight quantization (both in coreml_quantize; W8A8 takes its activation
               ranges from the reference interpreter, as coremltools' linear_quantize_activations
               would from Core ML); after saving, the mean output shift the program puts on EF,
               EDV and ESV is measured on the calibration clips and taken out of the output
               offset (coreml_output_shift)
      -> model.mlpackage, checked by running it through the reference interpreter
         (echoedge.mil.interpreter) against the eager module on golden clips; those clips and the
         package's outputs on them are kept as golden.npz, for `echo-edge verify`.

The folder's manifest records the ML program's op histogram, the quantization ops, the compute
precision, the deployment target and the host-side error against the eager deploy form.
`.mlpackage` is a folder: `write_artefact` hashes it file by file (`artefact.model_sha256`); its
Manifest.json holds random item ids, so `content_sha256` is the hash stable across rebuilds
(echoedge.convert.reproducible).
coremltools is imported inside the functions, its conversion logs captured (shown on failure).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.artefact import (
    OUTPUT_NAMES, ArtefactManifest, echo_tensor_specs, output_errors,
    tool_versions, write_artefact,
)
from echoedge.convert.coreml_mlprogram import (
    DEPLOYMENT_TARGET, convert_to_mlmodel, load_program_quietly, quiet_coremltools,
)
from echoedge.convert.coreml_quantize import (
    ACTIVATION_MODE, W8_WEIGHT_THRESHOLD, float_weight_consts, quantize_activations,
    quantize_weights, weight_config,
)
from echoedge.convert.golden_vectors import calibration_and_golden, write_golden_vectors
from echoedge.convert.output_shift import OutputShift, offset_buffer, shift_line
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, first_line

PRECISIONS = ("fp32", "fp16", "w8", "w8a8")
CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"
# The interpreter's thread count wherever its numbers go into the artefact (activation ranges,
# output shift, golden.npz): torch splits reductions by thread, and the same conversion must
# give the same bytes in run's one-thread worker and in `echo-edge export`.
GOLDEN_THREADS = 2
RUNTIME = "coreml"
MODEL_FILE = "model.mlpackage"
W8A8_ROUTE = "interpreted-activation-ranges"


def export_coreml(
    model: Any,
    spec: ClipSpec,
    out_dir: str | Path,
    precision: str,
    calibration: Any | None,
    source_checkpoint_sha256: str,
    golden_inputs: np.ndarray | None = None,
    progress: bool = True,
    overwrite: bool = False,
    keep_float: Sequence[str] = (),
) -> Path:
    """Convert a deploy-form module to a Core ML artefact folder at `out_dir`; return it.

    `keep_float` (w8/w8a8) names module paths whose weights stay fp16 (per-op selection: their
    weight consts get no config in coremltools' OptimizationConfig.op_name_configs); in w8a8 their
    activations are still quantized like every other op's.

    `calibration` (an echoedge.calibration.CalibrationSet: `.clips`, `.id`) is required for w8a8
    and ignored otherwise. `golden_inputs` (float32 (G, C, T, H, W)) are the clips the written
    program is checked on; without them the first calibration clips, or seeded random clips.
    """
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise EchoEdgeError(f"Core ML precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "w8a8" and calibration is None:
        raise EchoEdgeError(f"{out_dir}: w8a8 needs a calibration set (activation ranges come "
                            "from real clips)")
    keep_float = tuple(keep_float)
    float_params: list[str] = []
    if keep_float:
        float_params = _keep_float_params(model, keep_float, precision, out_dir)
    clip_shape = tuple(spec.input_shape(1))
    clips, golden = calibration_and_golden(calibration, golden_inputs, clip_shape)
    if precision != "w8a8":
        clips = None  # only W8A8 calibrates; the others take golden clips from a given set

    def build(tmp: Path) -> ArtefactManifest:
        return _build(model, spec, tmp, precision, clips, calibration, golden,
                      source_checkpoint_sha256, progress, keep_float, float_params)

    return write_artefact(out_dir, build, overwrite=overwrite)


def _keep_float_params(model: Any, keep_float: Sequence[str], precision: str, out_dir: Path) -> list[str]:
    """Names of the parameters under `keep_float` that W8 would quantize (more than the threshold)."""
    if precision not in ("w8", "w8a8"):
        raise EchoEdgeError(f"{out_dir}: keep_float applies to w8/w8a8 only (got {precision})")
    names = dict(model.named_modules())
    unknown = [k for k in keep_float if k not in names]
    if unknown:
        raise EchoEdgeError(f"{out_dir}: keep_float names modules the model does not have: {', '.join(unknown)}")
    params = [n for n, t in model.named_parameters()
              if t.numel() > W8_WEIGHT_THRESHOLD and any(n.startswith(k + ".") for k in keep_float)]
    if not params:
        raise EchoEdgeError(f"{out_dir}: keep_float ({', '.join(keep_float)}) holds no weight that W8 "
                            f"quantizes (more than {W8_WEIGHT_THRESHOLD} elements)")
    return params


def _build(model: Any, spec: ClipSpec, tmp: Path, precision: str, clips: np.ndarray | None,
           calibration: Any | None, golden: np.ndarray, checkpoint_sha: str,
           progress: bool, keep_float: Sequence[str] = (),
           float_params: Sequence[str] = ()) -> ArtefactManifest:
    import torch

    from echoedge.mil.interpreter import Interpreter
    from echoedge.mil.program import program_info
    from echoedge.model.registry import name_of

    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    model = model.eval()
    example = torch.from_numpy(np.ascontiguousarray(golden[:1]))
    compute = "fp32" if precision == "fp32" else "fp16"
    pkg = tmp / MODEL_FILE
    act_summary: dict[str, Any] | None = None
    shift: OutputShift | str | None = None

    with quiet_coremltools() as log:
        try:
            t0 = time.perf_counter()
            say(f"Core ML {precision}: converting {tuple(example.shape)} (compute precision {compute})",
                file=sys.__stdout__)
            mlmodel = convert_to_mlmodel(model, example, compute)
            timings["convert"] = time.perf_counter() - t0
            if precision == "w8a8":
                t0 = time.perf_counter()
                say(f"Core ML w8a8: activation ranges on {len(clips)} calibration clips "
                    "through the reference interpreter", file=sys.__stdout__)
                scratch = Path(tempfile.mkdtemp(prefix="calib-", dir=tmp))
                float_consts = float_weight_consts(mlmodel, float_params) if float_params else []
                try:
                    mlmodel, act_summary = quantize_activations(
                        mlmodel, scratch, clips, progress, threads=GOLDEN_THREADS,
                        weights=weight_config(float_consts))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                timings["activation_ranges"] = act_summary.pop("ranges_s")
                timings["quantization"] = time.perf_counter() - t0 - timings["activation_ranges"]
            if precision == "w8":
                t0 = time.perf_counter()
                float_consts = float_weight_consts(mlmodel, float_params) if float_params else []
                mlmodel = quantize_weights(mlmodel, float_consts)
                timings["weight_quantization"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            _drop_conversion_date(mlmodel)
            mlmodel.save(str(pkg))
            _canonical_spec(pkg)
            timings["save"] = time.perf_counter() - t0
            if precision == "w8a8":
                t0 = time.perf_counter()
                shift = _take_out_shift(model, pkg, clips, say)
                timings["output_shift"] = time.perf_counter() - t0
        except EchoEdgeError:
            sys.__stderr__.write(log.getvalue()[-4000:])
            raise
        except Exception as e:
            sys.__stderr__.write(log.getvalue()[-4000:])
            raise EchoEdgeError(f"Core ML {precision} conversion failed ({type(e).__name__}: "
                                f"{first_line(e)}); no artefact written") from None

    # The written package, read back from disk as a user would, run through the interpreter.
    t0 = time.perf_counter()
    with quiet_coremltools():
        # A fixed thread count: torch's reductions are split by thread, and the outputs are kept
        # as golden.npz, which must not depend on the host's or a worker's default.
        interp = Interpreter(pkg, threads=GOLDEN_THREADS)
    outs_by_name = [interp.run({interp.input_names[0]: g[None]}) for g in golden]
    outs = [np.concatenate([o[n] for o in outs_by_name]) for n in interp.output_names]
    with torch.inference_mode():
        ref = [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(golden)))]
    vs_eager = {name: output_errors(o, r) for name, o, r in zip(OUTPUT_NAMES, outs, ref)}
    timings["interpreter_check"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    prog, ml_spec = load_program_quietly(pkg)
    info = program_info(prog, ml_spec)
    weights = _weight_summary(prog, ml_spec)
    if progress:
        print(op_table(info.op_histogram))
    inputs, outputs = echo_tensor_specs(example.shape, [(1, *o.shape[1:]) for o in outs])
    # The I/O types the package declares: coremltools' graph passes (w8, w8a8) make an fp16
    # program's I/O float16, where the plain fp16 conversion keeps float32 I/O with casts inside.
    io_types = io_dtypes(ml_spec)
    for t in [*inputs, *outputs]:
        t.dtype = io_types.get(t.name, t.dtype)
    calib = None
    if precision == "w8a8" and calibration is not None:
        calib = {"id": calibration.id, "clips": int(len(clips))}
        meta = getattr(calibration, "manifest", None) or {}
        for key in ("strategy", "split", "seed"):
            if key in meta:
                calib[key] = meta[key]
    return ArtefactManifest(
        format="coreml",
        precision=precision,
        runtime=RUNTIME,
        model_file=MODEL_FILE,
        clip_spec=spec.to_dict(),
        inputs=inputs,
        outputs=outputs,
        source_checkpoint_sha256=checkpoint_sha,
        model=name_of(model),
        calibration_id=calib["id"] if calib else None,
        tool_versions=tool_versions("coremltools"),
        details={
            "minimum_deployment_target": DEPLOYMENT_TARGET,
            "compute_precision": compute,
            "ml_program": {"op_histogram": info.op_histogram,
                           "quantization_ops": info.quantization_ops,
                           "specification_version": info.spec_version},
            "quantization": {**_quant_details(precision, calib, act_summary, weights),
                             **({"output_shift": shift.to_dict() if isinstance(shift, OutputShift)
                                 else {"not_applied": shift}} if shift is not None else {}),
                             **({"kept_float": list(keep_float),
                                 "kept_float_weights": list(float_params)} if keep_float else {})},
            "golden_vs_eager": {"reference": "the eager module that was converted (deploy form)",
                                "runtime": "reference-interpreter (echoedge.mil.interpreter)",
                                "interpreter_precision": interp.precision,
                                "cases": int(len(golden)), "errors": vs_eager},
            # Re-run by `echo-edge verify` (echoedge.validate.verify) in the same interpreter.
            "golden": write_golden_vectors(tmp, golden, outs, "coreml", precision,
                                           "this package in echoedge.mil.interpreter, on the host that "
                                           "exported it"),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        },
    )


def _take_out_shift(model: Any, pkg: Path, clips: np.ndarray, say: Any) -> OutputShift | str | None:
    """W8A8's output-shift correction (coreml_output_shift), in place on the saved package: the
    shift, a line saying why none was taken out, or None when the model states no offset."""
    from echoedge.convert.coreml_output_shift import take_out_shift

    found = offset_buffer(model)
    if found is None:
        return None
    say(f"Core ML w8a8: output shift on {len(clips)} calibration clips through the reference "
        "interpreter", file=sys.__stdout__)
    shift = take_out_shift(pkg, model, clips, OUTPUT_NAMES[:found[1]], found[0], GOLDEN_THREADS)
    line = (f"taken out: {shift_line(shift.outputs, shift.shift)}" if isinstance(shift, OutputShift)
            else f"not taken out ({shift})")
    say(f"Core ML w8a8: output shift {line}", file=sys.__stdout__)
    return shift


def _drop_conversion_date(mlmodel: Any) -> None:
    """coremltools stamps the conversion date into the spec; the same conversion must give the
    same bytes (the manifest's created_at records when it ran)."""
    mlmodel.user_defined_metadata.pop(CONVERSION_DATE_KEY, None)


def _canonical_spec(pkg: Path) -> None:
    """Rewrite the package's model spec in protobuf's deterministic encoding: coremltools writes
    its metadata map in hash order, which changes from one process to the next. The content is
    the same message (Core ML parses any valid encoding); only the byte order of the map is fixed."""
    from coremltools.proto import Model_pb2

    from echoedge.mil.program import SPEC_FILE

    path = pkg / SPEC_FILE
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    path.write_bytes(spec.SerializeToString(deterministic=True))


def io_dtypes(ml_spec: Any) -> dict[str, str]:
    """name -> "float32"/"float16"/... of the model description's multi-array inputs and outputs."""
    from coremltools.proto import FeatureTypes_pb2 as ft

    names = {ft.ArrayFeatureType.FLOAT32: "float32", ft.ArrayFeatureType.FLOAT16: "float16",
             ft.ArrayFeatureType.DOUBLE: "float64", ft.ArrayFeatureType.INT32: "int32"}
    out = {}
    for feat in [*ml_spec.description.input, *ml_spec.description.output]:
        if feat.type.WhichOneof("Type") == "multiArrayType":
            out[feat.name] = names.get(feat.type.multiArrayType.dataType, "unknown")
    return out


def _weight_summary(prog: Any, spec: Any) -> dict[str, int]:
    """Weight elements stored int8 (constexpr dequantization) vs float (consts of >1 element)."""
    int8 = floating = 0
    for op in prog.functions["main"].operations:
        if op.op_type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
            int8 += int(np.prod(op.outputs[0].shape))
        elif op.op_type == "const":
            v = op.outputs[0].val
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size > 1:
                floating += int(v.size)
    return {"int8_weight_elements": int8, "float_const_elements": floating}


def _quant_details(precision: str, calib: dict[str, Any] | None, act: dict[str, Any] | None,
                   weights: dict[str, int]) -> dict[str, Any]:
    if precision in ("fp32", "fp16"):
        return {"scheme": None, **weights}
    d: dict[str, Any] = {
        "weights": {"scheme": "coremltools.optimize.coreml.linear_quantize_weights",
                    "mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel",
                    "weight_threshold": W8_WEIGHT_THRESHOLD},
        **weights,
    }
    if precision == "w8":
        d["scheme"] = "int8 weights, fp16 activations"
        return d
    d["scheme"] = ("int8 weights, int8 activations (quantize/dequantize pairs, a zero point per "
                   "tensor), fp16 elsewhere")
    d["activations"] = {
        "route": W8A8_ROUTE,
        "how": "min/max of every intermediate tensor of the fp16 program over the calibration set, "
               "computed by echoedge's reference interpreter (no Core ML runtime); coremltools' "
               "insert_prefix/suffix_quantize_dequantize_pair passes build the W8A8 program",
        "mode": ACTIVATION_MODE, "dtype": "int8", **(act or {}),
    }
    d["calibration"] = calib
    # coremltools' activation passes retype the fp16 program's I/O (the manifest's inputs/outputs
    # carry the declared dtypes); the int8 tensors are all inside the program.
    d["io"] = "float16 (quantize/dequantize inside the program)"
    return d


def op_table(hist: dict[str, int]) -> str:
    """A short text table of an op histogram (consts left out)."""
    rows = [(k, v) for k, v in hist.items() if k != "const"]
    width = max([len(k) for k, _ in rows] + [2])
    return "\n".join([f"{'op':<{width}}  count"] + [f"{k:<{width}}  {v:>5}" for k, v in rows])


__all__: Sequence[str] = ("export_coreml", "io_dtypes", "op_table", "PRECISIONS", "RUNTIME", "W8A8_ROUTE")
