"""`echo-edge export`: one checkpoint -> one deploy form + one calibration set -> artefacts.

Every converter starts from the same deploy form (checked equal to the reference before anything
is quantized) and the same calibration set, so artefacts of different formats differ only by their
toolchain. Artefacts are written as ARTEFACTS/<format>-<precision>/, the calibration set as
ARTEFACTS/calibration/ (its manifest id is recorded in every int8 artefact's manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from echoedge.errors import EchoEdgeError

# format -> (precisions it supports, converter entry point "module:function")
CONVERTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "executorch": (("fp32", "int8"), "echoedge.convert.executorch:export_executorch"),
}
CALIBRATION_DIR = "calibration"


@dataclass
class ExportResult:
    artefacts: list[Path] = field(default_factory=list)
    calibration: Path | None = None
    deploy_summary: str = ""


def _converter(fmt: str) -> Callable[..., Path]:
    import importlib

    module, func = CONVERTERS[fmt][1].split(":")
    return getattr(importlib.import_module(module), func)


def parse_list(text: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if "all" in items:
        return list(known)
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise EchoEdgeError(f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    return items


def export(
    checkpoint: Path,
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
) -> ExportResult:
    import torch

    from echoedge.calibration import build_calibration_set, load_calibration_set, save_calibration_set
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.deploy import to_deploy_form

    for fmt in formats:
        if fmt not in CONVERTERS:
            raise EchoEdgeError(f"format '{fmt}' is not available in this version (have: {', '.join(CONVERTERS)})")
        for p in precisions:
            if p not in CONVERTERS[fmt][0]:
                raise EchoEdgeError(f"{fmt} does not offer precision '{p}' (offers: {', '.join(CONVERTERS[fmt][0])})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(checkpoint)
    result = ExportResult()

    needs_calib = any(p == "int8" for p in precisions)
    cs = None
    if calibration_set is not None:
        cs = load_calibration_set(calibration_set)
        if cs.spec != ck.spec:
            raise EchoEdgeError(f"{calibration_set}: calibration clips were made for another ClipSpec than {checkpoint}")
        result.calibration = Path(calibration_set)
    elif needs_calib:
        from echoedge.calibration import parse_calibration_arg

        strategy, size = parse_calibration_arg(calibration)
        log(f"calibration: drawing {strategy}:{size} from TRAIN of {data}")
        cs = build_calibration_set(data, ck.spec, strategy=strategy, size=size, seed=seed,
                                   cache_dir=cache_dir, progress=progress)
        result.calibration = save_calibration_set(cs, out / CALIBRATION_DIR)
        log(f"calibration: set {cs.id} ({len(cs)} clips) -> {result.calibration}")

    # Sample clips for the deploy-form equality check: real clips where we have them.
    if cs is not None:
        example = torch.from_numpy(cs.clips[:2].copy())
    else:
        example = torch.randn(ck.spec.input_shape(2), generator=torch.Generator().manual_seed(seed))
    deploy = to_deploy_form(ck.model, example=example)
    check = getattr(deploy, "deploy_check", None)
    result.deploy_summary = check.summary() if check is not None else ""
    if result.deploy_summary:
        log(f"deploy form: {result.deploy_summary}")

    for fmt in formats:
        convert = _converter(fmt)
        for precision in precisions:
            target = out / f"{fmt}-{precision}"
            log(f"{fmt} {precision}: converting -> {target}")
            path = convert(deploy, ck.spec, target, precision, cs if precision == "int8" else None,
                           ck.sha256, progress=progress, overwrite=overwrite)
            result.artefacts.append(Path(path))
    return result
