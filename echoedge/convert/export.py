"""`echo-edge export`: one checkpoint -> one deploy form + one calibration set -> artefacts.

Every converter starts from the same deploy form (checked equal to the reference before anything
is quantized) and the same calibration set, so artefacts of different formats differ only by their
toolchain. Artefacts are written as ARTEFACTS/<format>-<precision>/, the calibration set as
ARTEFACTS/calibration/ (its manifest id is recorded in every int8 artefact's manifest). The
clips come from TRAIN of the data, else its VAL, else `calibration_data` or the built-in synthetic
set (`calibration.source`): a test-only dataset never calibrates on its own TEST videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from echoedge.convert.int8_recipe import DEFAULT_RECIPE, check_recipe
from echoedge.errors import EchoEdgeError

# format -> (precisions it supports, converter entry point "module:function")
CONVERTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "executorch": (("fp32", "int8"), "echoedge.convert.executorch:export_executorch"),
    "tflite": (("fp32", "fp16", "int8", "int8-full"), "echoedge.convert.tflite:export_tflite"),
    # The second TFLite route (litert-torch, in its own environment; tflite_litert.py). Its
    # artefacts are ordinary TFLite folders (manifest format "tflite").
    "tflite-litert": (("fp32", "int8"), "echoedge.convert.tflite_litert:export_tflite_litert"),
    "coreml": (("fp32", "fp16", "w8", "w8a8"), "echoedge.convert.coreml:export_coreml"),
}
# Formats that "all" and the default job build: the litert-torch route is opt-in (it needs its own
# environment, `make litert`, and minutes per precision); name it to get it.
OPT_IN = ("tflite-litert",)
DEFAULT_FORMATS = tuple(f for f in CONVERTERS if f not in OPT_IN)
# The manifest format (and so the runner) of a converter whose name is not a format of its own.
RUNS_AS = {"tflite-litert": "tflite"}
# Precisions whose activations are quantized: they need the echo calibration set.
CALIBRATED = ("int8", "int8-full", "w8a8")
PRECISIONS = ("fp32", "fp16", "int8", "int8-full", "w8", "w8a8")
CALIBRATION_DIR = "calibration"


@dataclass
class ExportResult:
    artefacts: list[Path] = field(default_factory=list)
    calibration: Path | None = None
    deploy_summary: str = ""
    calibration_note: str | None = None  # set when the clips are not from TRAIN of the data


def _converter(fmt: str) -> Callable[..., Path]:
    import importlib

    module, func = CONVERTERS[fmt][1].split(":")
    return getattr(importlib.import_module(module), func)


def parse_list(text: str, known: tuple[str, ...], what: str,
               all_items: tuple[str, ...] | None = None) -> list[str]:
    """Comma list of `known` names; 'all' is `all_items` (default: every known name)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if "all" in items:
        return list(all_items if all_items is not None else known)
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise EchoEdgeError(f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    return items


def plan_exports(formats: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(format, precision) pairs to build, in order.

    With one format every precision must be offered by it; with several, each format builds the
    precisions it offers (fp16 for TFLite and Core ML, not ExecuTorch), and a precision that no
    requested format offers is an error.
    """
    for fmt in formats:
        if fmt not in CONVERTERS:
            raise EchoEdgeError(f"format '{fmt}' is not available in this version (have: {', '.join(CONVERTERS)})")
    plan = [(f, p) for f in formats for p in precisions if p in CONVERTERS[f][0]]
    for p in precisions:
        offering = [f for f in formats if p in CONVERTERS[f][0]]
        if not offering:
            offers = "; ".join(f"{f}: {', '.join(CONVERTERS[f][0])}" for f in formats)
            raise EchoEdgeError(f"precision '{p}' is not offered by {', '.join(formats)} ({offers})")
    return plan


def export(
    checkpoint: Path | None,
    data: Path,
    out: Path,
    formats: list[str],
    precisions: list[str],
    calibration: str = "ef-stratified:128",
    calibration_set: Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    int8_recipe: str = DEFAULT_RECIPE,
    calibration_data: Path | None = None,
    require_tracings: bool = False,
    model: str = "e3net",
) -> ExportResult:
    """`model` names what `checkpoint` holds (echoedge.model.registry; None checkpoint: the
    shipped Echo-E3Net); the deploy form is of the model as the pipeline runs it (its outputs
    tuple: Echo-E3Net's five, a video ResNet's EF)."""
    import torch

    from echoedge.calibration import build_calibration_set, load_calibration_set, save_calibration_set
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.registry import open_model

    check_recipe(int8_recipe)
    plan = plan_exports(formats, precisions)
    if any(f == "tflite-litert" for f, _ in plan):  # before minutes of calibration: is its env there?
        from echoedge.convert.tflite_litert import litert_python

        litert_python()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = open_model(model, checkpoint)
    checkpoint = ck.path
    result = ExportResult()

    needs_calib = any(p in CALIBRATED for _, p in plan)
    cs = None
    if calibration_set is not None:
        cs = load_calibration_set(calibration_set)
        if cs.spec != ck.spec:
            raise EchoEdgeError(f"{calibration_set}: calibration clips were made for another ClipSpec than {checkpoint}")
        result.calibration = Path(calibration_set)
    elif needs_calib:
        from echoedge.calibration import calibration_source, parse_calibration_arg

        strategy, size = parse_calibration_arg(calibration)
        # No split is validated here, but TEST stays held out for whoever validates later.
        src = calibration_source(data, calibration_data, "TEST", require_tracings)
        if src.note:
            log(f"calibration: {src.note}")
            result.calibration_note = src.note
        log(f"calibration: drawing {strategy}:{size} from {src.describe()}")
        cs = build_calibration_set(src.root, ck.spec, strategy=strategy, size=size, seed=seed,
                                   split=src.split, cache_dir=cache_dir, progress=progress,
                                   require_tracings=require_tracings)
        result.calibration = save_calibration_set(cs, out / CALIBRATION_DIR)
        log(f"calibration: set {cs.id} ({len(cs)} clips) -> {result.calibration}")

    # Sample clips for the deploy-form equality check: real clips where we have them.
    if cs is not None:
        example = torch.from_numpy(cs.clips[:2].copy())
    else:
        example = torch.randn(ck.spec.input_shape(2), generator=torch.Generator().manual_seed(seed))
    deploy = to_deploy_form(ck.runnable, example=example)
    check = getattr(deploy, "deploy_check", None)
    result.deploy_summary = check.summary() if check is not None else ""
    if result.deploy_summary:
        log(f"deploy form: {result.deploy_summary}")

    for fmt, precision in plan:
        convert = _converter(fmt)
        target = out / f"{fmt}-{precision}"
        log(f"{fmt} {precision}: converting -> {target}")
        # The int8 recipe is ExecuTorch's and both TFLite routes' (Core ML's W8 stores every weight int8).
        extra = ({"recipe": int8_recipe} if precision == "int8"
                 and fmt in ("executorch", "tflite", "tflite-litert") else {})
        path = convert(deploy, ck.spec, target, precision, cs if precision in CALIBRATED else None,
                       ck.sha256, progress=progress, overwrite=overwrite, **extra)
        result.artefacts.append(Path(path))
    return result
