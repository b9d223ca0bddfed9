"""Deploy form -> TFLite through litert-torch (Google's torch -> .tflite converter): the second
TFLite route, `--format tflite-litert`, fp32 and int8.

    deploy form -> torch.export program (.pt2) + the echo calibration clips (.npy)
      -> litert_worker.py in litert-torch's own environment (.venv-litert, `make litert`):
           fp32  litert_torch.convert
           int8  PT2E: litert-torch's quantizer (per-channel int8 weights, per-tensor int8
                 activations, min/max observers) scoped by the int8 recipe as ExecuTorch's is
                 (conv-stages: Echo-E3Net's CNN stages; whole: every module),
                 calibrated one clip at a time, convert_pt2e, litert_torch.convert
      -> the same checks as the onnx2tf route, in this environment: op dtypes of the written file
         (no Flex op; the int8 file must hold in int8 exactly the heavy ops the quantizer took),
         the file run in the LiteRT interpreter on golden clips against the eager deploy form
         (fp32 must agree within float rounding), XNNPACK coverage (tflite_delegation).

The artefact is an ordinary TFLite folder (manifest format "tflite": the TFLite runner, verify,
bridges and reports take it as they take onnx2tf's); `details.route` and the tool versions say
which converter wrote it. Why a subprocess: litert-torch cannot be installed beside this
environment's pins (requirements-litert.txt says which pin and why); the worker's environment is
found at ECHO_EDGE_LITERT_PYTHON, else `.venv-litert/bin/python` at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.artefact import (
    INPUT_NAME, OUTPUT_NAMES, ArtefactManifest, TensorSpec, tool_versions,
    write_artefact,
)
from echoedge.convert.golden_vectors import calibration_and_golden, write_golden_vectors
from echoedge.convert.int8_recipe import DEFAULT_RECIPE, WHOLE_KEEP_FLOAT, check_recipe, int8_scope
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError

PRECISIONS = ("fp32", "int8")
MODEL_FILE = "model.tflite"
# fp32 file vs the eager deploy form, relative to max(1, max |eager|): litert-torch lowers the
# exported ATen graph op for op (measured 1.5e-5 abs on EDV ~90 mL, tiny config); a wiring error
# is orders of magnitude larger. Same bound as the onnx2tf route.
FP32_RTOL = 2e-3
ENV_VAR = "ECHO_EDGE_LITERT_PYTHON"
VENV = ".venv-litert"
WORKER = Path(__file__).with_name("litert_worker.py")
ROUTES = {
    "fp32": "torch.export -> litert_torch.convert (float32)",
    "int8": "torch.export -> PT2E (litert-torch PT2EQuantizer, scoped by the int8 recipe) -> "
            "litert_torch.convert (static int8 convs/FC in scope, the rest float)",
}
WORKER_TIMEOUT_S = 3600


def litert_python() -> Path:
    """The python of litert-torch's environment, or EchoEdgeError saying how to make it."""
    env = os.environ.get(ENV_VAR)
    py = Path(env) if env else Path(__file__).resolve().parents[2] / VENV / "bin" / "python"
    where = f"{ENV_VAR}={env}" if env else str(py)
    if not py.is_file():
        raise EchoEdgeError(f"the tflite-litert route needs litert-torch's own environment, and {where} "
                            f"does not exist; run `make litert` (creates {VENV} from "
                            "requirements-litert.txt) or point ECHO_EDGE_LITERT_PYTHON at one")
    probe = subprocess.run([str(py), "-c", "import importlib.util, sys; "
                            "sys.exit(importlib.util.find_spec('litert_torch') is None)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise EchoEdgeError(f"{where}: has no litert_torch; run `make litert` to (re)create {VENV}")
    return py


def export_tflite_litert(
    model: Any,
    spec: ClipSpec,
    out_dir: str | Path,
    precision: str,
    calibration: Any | None,
    source_checkpoint_sha256: str,
    golden_inputs: np.ndarray | None = None,
    progress: bool = True,
    overwrite: bool = False,
    recipe: str = DEFAULT_RECIPE,
    seed: int = 0,
) -> Path:
    """Convert a deploy-form module to a TFLite artefact folder through litert-torch; return it.

    `calibration` (int8) is the echo calibration set (its `.clips`, `.id`, optional `.manifest`),
    the same one the onnx2tf and ExecuTorch converters take.
    """
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise EchoEdgeError(f"tflite-litert precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise EchoEdgeError(f"{out_dir}: int8 needs a calibration set (static quantization takes its "
                            "activation ranges from real clips)")
    check_recipe(recipe)
    python = litert_python()
    clip_shape = tuple(spec.input_shape(1))
    clips, golden = calibration_and_golden(calibration, golden_inputs, clip_shape)
    from echoedge.convert.tflite import _refuse_3d_ops

    _refuse_3d_ops(model)

    def build(tmp: Path) -> ArtefactManifest:
        return _build(model, spec, tmp, precision, clips, calibration, golden,
                      source_checkpoint_sha256, progress, recipe, python, seed)

    return write_artefact(out_dir, build, overwrite=overwrite)


def _scope(model: Any, recipe: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(int8 scope, kept float) of a recipe, as module-path prefixes."""
    if recipe == DEFAULT_RECIPE:
        return int8_scope(model), ()
    names = dict(model.named_modules())
    return None, tuple(k for k in WHOLE_KEEP_FLOAT if k in names)


def run_worker(python: Path, program: Path, out: Path, precision: str, clips_path: Path | None,
               scope: Sequence[str] | None, keep_float: Sequence[str], seed: int,
               log: Path) -> dict[str, Any]:
    """Run litert_worker.py in litert-torch's environment; its JSON, or one-line EchoEdgeError."""
    meta = out.with_suffix(".json")
    cmd = [str(python), str(WORKER), "--program", str(program), "--out", str(out),
           "--precision", precision, "--scope", json.dumps(list(scope) if scope is not None else None),
           "--keep-float", json.dumps(list(keep_float)), "--seed", str(seed), "--meta", str(meta)]
    if clips_path is not None:
        cmd += ["--calibration", str(clips_path)]
    # Its own threads stay modest: the machine's other work (and our interpreter) share the cores.
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)  # the worker imports nothing of ours; keep this env's packages out
    with log.open("w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                  timeout=WORKER_TIMEOUT_S, cwd=str(out.parent))
        except subprocess.TimeoutExpired:
            raise EchoEdgeError(f"litert-torch {precision} conversion ran over {WORKER_TIMEOUT_S} s; "
                                "no artefact written") from None
    if proc.returncode != 0 or not out.is_file() or not meta.is_file():
        raise EchoEdgeError(f"litert-torch failed for {precision} ({_last_error(log)}); no artefact written")
    return json.loads(meta.read_text())


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:200]


def _build(model: Any, spec: ClipSpec, tmp: Path, precision: str, clips: np.ndarray | None,
           calibration: Any | None, golden: np.ndarray, checkpoint_sha: str, progress: bool,
           recipe: str, python: Path, seed: int) -> ArtefactManifest:
    import torch

    from echoedge.convert.tflite_delegation import xnnpack_coverage
    from echoedge.convert.tflite_interpreter import (
        DEFAULT_INTERPRETER, SIGNATURE_KEY, golden_check,
    )
    from echoedge.convert.tflite_ops import check_ops, inspect_tflite
    from echoedge.model.registry import name_of

    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    model = model.eval()
    clip_shape = tuple(spec.input_shape(1))
    scope, keep_float = _scope(model, recipe) if precision == "int8" else (None, ())
    with tempfile.TemporaryDirectory(prefix="echo-edge-litert-") as scratch_s:
        scratch = Path(scratch_s)
        t0 = time.perf_counter()
        with torch.no_grad():
            ep = torch.export.export(model, (torch.from_numpy(np.ascontiguousarray(golden[:1])),))
        torch.export.save(ep, str(scratch / "deploy.pt2"))
        timings["torch_export"] = time.perf_counter() - t0
        clips_path = None
        if clips is not None:
            clips_path = scratch / "calibration.npy"
            np.save(clips_path, np.ascontiguousarray(clips))
        say(f"TFLite (litert-torch) {precision}: {ROUTES[precision]}"
            + (f", calibrating on {len(clips)} clips" if clips is not None else ""))
        t0 = time.perf_counter()
        meta = run_worker(python, scratch / "deploy.pt2", scratch / MODEL_FILE, precision, clips_path,
                          scope, keep_float, seed, scratch / f"convert-{precision}.log")
        timings["litert_torch"] = time.perf_counter() - t0
        shutil.move(str(scratch / MODEL_FILE), str(tmp / MODEL_FILE))
    model_path = tmp / MODEL_FILE

    ops = inspect_tflite(model_path)
    if precision == "int8":
        _check_int8(ops, int(meta.get("quantized_heavy_ops", 0)), scope)
    else:
        check_ops(ops, precision)
    if progress:
        print(ops.table())

    t0 = time.perf_counter()
    it, io_, outs, vs_eager = golden_check(model_path, clip_shape, golden, model, precision,
                                           f"litert-torch {precision} file", FP32_RTOL)
    timings["run_check"] = time.perf_counter() - t0
    coverage = xnnpack_coverage(model_path, threads=2, kind="litert")
    timings["total"] = time.perf_counter() - t_all

    runner = it.get_signature_runner(SIGNATURE_KEY)
    in_shape = [int(s) for s in runner.get_input_details()[io_.input_key]["shape"]]
    inputs = [TensorSpec(INPUT_NAME, in_shape, "float32", io_.layout)]
    out_details = runner.get_output_details()
    outputs = []
    for name, key in zip(OUTPUT_NAMES, io_.output_keys):
        shape = [int(s) for s in out_details[key]["shape"]]
        outputs.append(TensorSpec(name, shape, "float32", "N" if len(shape) == 1 else "NK2"))
    calib = None
    if clips is not None and calibration is not None:
        calib = {"id": calibration.id, "clips": int(len(clips))}
        for key in ("strategy", "split", "seed"):
            if key in (getattr(calibration, "manifest", None) or {}):
                calib[key] = calibration.manifest[key]
    summary = ops.summary()
    versions = tool_versions("ai-edge-litert")
    versions.update({f"{k} (worker)": v for k, v in (meta.get("versions") or {}).items()})
    return ArtefactManifest(
        format="tflite", precision=precision,
        runtime=f"tflite-xnnpack ({DEFAULT_INTERPRETER} interpreter)",
        model_file=MODEL_FILE, clip_spec=spec.to_dict(), inputs=inputs, outputs=outputs,
        source_checkpoint_sha256=checkpoint_sha,
        model=name_of(model),
        calibration_id=calib["id"] if calib else None,
        tool_versions=versions,
        details={
            "converter": "litert-torch",
            "route": ROUTES[precision],
            "signature": {"key": SIGNATURE_KEY, "input": io_.input_key,
                          "outputs": dict(zip(OUTPUT_NAMES, io_.output_keys))},
            "input_layout": io_.layout,
            "int8_op_fraction": summary["int8_op_fraction"],
            "ops_left_in_float": summary["ops_left_in_float"],
            "flex_ops": summary["flex_ops"],
            "op_histogram": summary["histogram"],
            "op_count": len(ops.ops),
            "delegated_ops": coverage.delegated_ops, "fallback_ops": coverage.fallback_ops,
            "delegation": coverage.to_dict(),
            "quantization": _quant_details(precision, calib, recipe, scope, keep_float, meta),
            "golden_vs_eager": {"reference": "the eager module that was converted (deploy form)",
                                "interpreter": "litert", "cases": int(len(golden)), "errors": vs_eager},
            "golden": write_golden_vectors(tmp, golden, outs, "tflite", precision,
                                           "this file in the litert interpreter, on the host that exported it"),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        },
    )


def _check_int8(ops: Any, quantized: int, scope: Sequence[str] | None) -> None:
    """No Flex op, and every heavy op the quantizer took is int8 in the file (litert-torch keeps the
    rest float by recipe)."""
    from echoedge.convert.tflite_ops import HEAVY_OPS, check_ops

    check_ops(ops, "fp32")  # the Flex check
    int8_heavy = sum(1 for o in ops.ops if o.op in HEAVY_OPS and o.compute_dtype in ("int8", "uint8"))
    if quantized == 0:
        raise EchoEdgeError(f"{ops.path}: the int8 recipe quantized no conv or linear layer "
                            f"(scope {', '.join(scope) if scope else 'all'}); not an int8 file")
    if int8_heavy < quantized:
        raise EchoEdgeError(f"{ops.path}: the quantizer took {quantized} conv/linear layers but the "
                            f"file holds {int8_heavy} in int8; litert-torch left some float")


def _quant_details(precision: str, calib: dict[str, Any] | None, recipe: str,
                   scope: Sequence[str] | None, keep_float: Sequence[str],
                   meta: dict[str, Any]) -> dict[str, Any]:
    if precision == "fp32":
        return {"scheme": None}
    return {"scheme": "static int8 (PT2E: per-channel symmetric weights, per-tensor activations, "
                      "min/max observers), litert-torch PT2EQuantizer",
            "io": "float32 (QUANTIZE/DEQUANTIZE inside the file)", "calibration": calib,
            "recipe": {"name": recipe}, "int8_modules": list(scope) if scope else "all",
            "kept_float": list(keep_float),
            "quantized_heavy_ops": int(meta.get("quantized_heavy_ops", 0)),
            "float": "every op the recipe's scope leaves out, and ops litert-torch's quantizer "
                     "does not annotate (norms, softmax, attention matmuls, element-wise)"}


__all__: Sequence[str] = ("export_tflite_litert", "litert_python", "run_worker", "PRECISIONS", "ROUTES",
                          "MODEL_FILE", "ENV_VAR")
