"""The parts of `echo-edge debug-quant`, each run on the artefacts and written into `dq` (the
debug_quant.json being built): attribution, sensitivity, budget (search and mixed artefacts; the
candidates' measurement is `candidates`) and calibration (`stability`).

`ctx` is the run's `attribution.AttributionContext` (fp32 deploy form, held-out videos, their
reference EF, checkpoint sha256); `search` the folders to look for calibration sets in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from echoedge.errors import EchoEdgeError, first_line

if TYPE_CHECKING:
    from echoedge.quantdebug.job import DebugQuantOptions

MIXED_DIR = "artefacts"


def family(fmt: str, precision: str) -> str | None:
    """The simulation an artefact's quantization is: ExecuTorch and TFLite int8 share one."""
    from echoedge.quantdebug.simulate import FIDELITY

    if (fmt, precision) not in FIDELITY:
        return None
    return "int8" if precision == "int8" and fmt in ("executorch", "tflite") else f"{fmt}-{precision}"


def calibration_clips(folder: Path, manifest: Any, search: list[Path], limit: int | None) -> tuple[Any, Any]:
    """(the artefact's CalibrationSet or None, its first `limit` clips or None)."""
    from echoedge.quantdebug.attribution import find_calibration
    from echoedge.quantdebug.simulate import needs_calibration

    if not needs_calibration(manifest.format, manifest.precision):
        return None, None
    cs = find_calibration(folder, manifest.calibration_id, search)
    if cs is None:
        raise EchoEdgeError(f"{folder}: a {manifest.precision} artefact whose manifest names no "
                            "calibration set; cannot simulate it")
    return cs, (cs.clips[:limit] if limit else cs.clips)


def run_attribution(folders: list[Path], ctx: Any, search: list[Path], opt: DebugQuantOptions,
                    dq: dict[str, Any], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per artefact: |dEF| split into quantization and conversion/runtime; skipped ones noted."""
    from echoedge.quantdebug.attribution import attribute

    rows = []
    for f in folders:
        log(f"attribution: {f.name}")
        try:
            att = attribute(f, ctx, calibration_search=search, threads=opt.threads, progress=opt.progress)
        except EchoEdgeError as e:
            # One artefact that cannot be simulated (e.g. TFLite int8-full) must not hide the others.
            dq["attribution_skipped"][f.name] = first_line(e)
            log(f"  skipped: {first_line(e)}")
            continue
        log(f"  |dEF| {att.total:.3f} = quantization {att.quantization:.3f} / conversion {att.conversion:.3f}")
        rows.append(att.to_dict())
    return rows


def run_sensitivity(folders: list[Path], manifests: dict[Path, Any], ctx: Any, search: list[Path],
                    opt: DebugQuantOptions, out: Path, dq: dict[str, Any],
                    log: Callable[[str], None]) -> dict[str, Any]:
    """One sweep per quantization family present; returns family -> SensitivityResult."""
    from echoedge.quantdebug.sensitivity import sensitivity_plot, sensitivity_sweep

    sweeps: dict[str, Any] = {}
    rows = []
    for f in folders:
        m = manifests[f]
        fam = family(m.format, m.precision)
        if fam is None or fam in sweeps:
            continue
        _, clips = calibration_clips(f, m, search, opt.calibration_clips)
        log(f"sensitivity: {fam} ({m.format} {m.precision}), {opt.mode}, calibration "
            f"{'-' if clips is None else len(clips)} clips of {f.name}'s set")
        res = sensitivity_sweep(ctx.deploy, ctx.videos, clips, m.format, m.precision, mode=opt.mode,
                                ef_reference=ctx.ef_reference, units=opt.units, progress=opt.progress,
                                log=log)
        sweeps[fam] = res
        png = sensitivity_plot(res, out / f"sensitivity_{fam}.png")
        dq["figures"][f"sensitivity_{fam}"] = png.name
        rows.append({"family": fam, "formats": sorted({mm.format for ff, mm in manifests.items()
                                                       if family(mm.format, mm.precision) == fam}),
                     **res.to_dict()})
    if not sweeps:
        dq["notes"].append("sensitivity: no quantized artefact with a simulation among the artefacts")
    dq["sensitivity"] = rows
    return sweeps


def scoped_note(manifests: dict[Path, Any], dq: dict[str, Any], log: Callable[[str], None]) -> None:
    """Say so where an artefact was built with another int8 recipe than the one the sweep and the
    budget search keep layers float on top of (the scoped default): their figures and mixed files
    are that recipe's, not the artefact's."""
    from echoedge.convert.int8_recipe import DEFAULT_RECIPE, recipe_of

    for f, m in manifests.items():
        recipe = recipe_of(m.details)
        if recipe and recipe != DEFAULT_RECIPE:
            note = (f"{f.name}: built with the {recipe} int8 recipe; sensitivity and the budget search "
                    f"keep layers float on top of the {DEFAULT_RECIPE} recipe, so their figures and "
                    "any mixed file are that recipe's (attribution simulates the artefact's own)")
            dq["notes"].append(note)
            log(f"note: {note}")


def run_budget(folders: list[Path], manifests: dict[Path, Any], ctx: Any, sweeps: dict[str, Any],
               search: list[Path], ck: Any, opt: DebugQuantOptions, out: Path, dq: dict[str, Any],
               log: Callable[[str], None]) -> None:
    """Per format: the budget search (or the chosen --keep-float mix) in simulation, the mixed
    artefact emitted, then every candidate measured (`candidates.measure_and_judge`)."""
    from echoedge.quantdebug.budget import (
        MIXED_PRECISION, BudgetError, emit_mixed, evaluate_mix, search_budget,
    )
    from echoedge.quantdebug.candidates import measure_and_judge

    rows: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}  # family -> BudgetResult (TFLite reuses ExecuTorch's search)
    mixed: dict[str, tuple[Path, float]] = {}  # emitted folder name -> (folder, simulated |dEF|)
    for f in folders:
        m = manifests[f]
        if MIXED_PRECISION.get(m.format) != m.precision:
            continue
        fam = family(m.format, m.precision)
        if fam is None or (opt.keep_float is None and fam not in sweeps):
            continue
        cs, clips = calibration_clips(f, m, search, opt.calibration_clips)
        row: dict[str, Any] = {"format": m.format, "precision": m.precision, "family": fam,
                               "budget": opt.budget, "source": f.name, "met": False, "reason": None,
                               "kept_float": None, "simulated": None, "search": None, "mixed": None}
        t0 = time.perf_counter()
        try:
            if fam not in searches and opt.keep_float is not None:
                log(f"budget: {fam}, the chosen mix ({', '.join(opt.keep_float)} float), mean |dEF| <= "
                    f"{opt.budget:g} (simulated)")
                searches[fam] = evaluate_mix(ctx.deploy, ctx.videos, clips, opt.budget, opt.keep_float,
                                             m.format, m.precision, ef_reference=ctx.ef_reference,
                                             progress=opt.progress, log=log, max_memory_mb=opt.max_memory_mb)
            elif fam not in searches:
                log(f"budget: {fam}, mean |dEF| <= {opt.budget:g} (simulated)")
                searches[fam] = search_budget(ctx.deploy, ctx.videos, clips, opt.budget, sweeps[fam],
                                              m.format, m.precision, ef_reference=ctx.ef_reference,
                                              max_float=opt.max_float, progress=opt.progress, log=log,
                                              max_memory_mb=opt.max_memory_mb)
            res = searches[fam]
        except BudgetError as e:
            searches[fam] = e
            res = e
        if isinstance(res, BudgetError):
            row["reason"] = first_line(res)
            log(f"budget: {m.format}: {row['reason']}")
            rows.append(row)
            continue
        row.update(met=True, kept_float=list(res.kept_float), simulated=res.mean_abs_def,
                   search=res.to_dict())
        if opt.emit and res.kept_float:
            target = out / MIXED_DIR / f"{m.format}-{m.precision}-mixed"
            log(f"budget: emitting {target} ({len(res.kept_float)} unit(s) float)")
            path = emit_mixed(ctx.deploy, ck.spec, m.format, res.kept_float, target, cs, ck.sha256,
                              m.precision, progress=opt.progress, overwrite=True)
            mixed[Path(path).name] = (Path(path), res.mean_abs_def)
            row["mixed"] = {"name": Path(path).name}
            if opt.max_memory_mb is not None:
                row["memory"] = memory_row(Path(path), res, opt.max_memory_mb)
        elif not res.kept_float:
            dq["notes"].append(f"{m.format} {m.precision}: the pure recipe already meets the budget "
                               "in simulation; no mixed artefact needed")
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    if opt.emit and rows:
        measure_and_judge(folders, manifests, rows, mixed, ctx, ck, opt, out, dq, log)
    if not rows:
        dq["notes"].append("budget: no artefact of a precision mixed precision applies to "
                           "(executorch int8, tflite int8, coreml w8)")
    dq["budget"] = rows


def memory_row(folder: Path, res: Any, limit_mb: float) -> dict[str, Any]:
    """The memory limit beside what the emitted mixed artefact states: the search's estimate, the
    file's planned activation memory and its graph liveness peak (`convert.memory_plan`)."""
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.memory_plan import activation_plan

    m = read_manifest(folder)
    plan = activation_plan(folder / m.model_file, m.format)
    return {"limit_mb": float(limit_mb), "estimate_mb": res.steps[-1].memory_mb,
            "planned_mb": round(plan.planned_bytes / 1e6, 3), "planned_how": plan.how,
            "graph_peak_mb": round(plan.graph_peak_bytes / 1e6, 3),
            "within_limit": plan.graph_peak_bytes / 1e6 <= limit_mb}


def check_keep_float(deploy: Any, keep_float: Sequence[str], manifests: Any) -> None:
    """--keep-float names only units some given artefact's recipe quantizes (before any work)."""
    from echoedge.quantdebug.budget import MIXED_PRECISION
    from echoedge.quantdebug.simulate import quant_units

    known: set[str] = set()
    for m in manifests:
        if MIXED_PRECISION.get(m.format) == m.precision:
            known |= {u.name for u in quant_units(deploy, m.format, m.precision)}
    if not keep_float:
        raise EchoEdgeError("--keep-float: no layer named")
    if not known:
        raise EchoEdgeError("--keep-float: no executorch int8, tflite int8 or coreml w8 artefact given to mix")
    bad = [u for u in keep_float if u not in known]
    if bad:
        raise EchoEdgeError(f"--keep-float: {', '.join(bad)} is not a layer the recipe quantizes "
                            f"(layers: {', '.join(sorted(known))})")


def run_calibration(deploy: Any, data: str | Path, spec: Any, ctx: Any, opt: DebugQuantOptions,
                    out: Path, dq: dict[str, Any], log: Callable[[str], None]) -> None:
    """K disjoint calibration draws x sizes x strategies (`stability`), with its size-curve plot."""
    from echoedge.quantdebug.stability import calibration_stability, evaluation_videos, plot_stability

    videos = evaluation_videos(data, spec, ctx.videos.split, opt.videos, opt.clips_per_video,
                               add_low_ef=True, cache_dir=opt.cache_dir,
                               require_tracings=opt.require_tracings)
    same = videos.names == ctx.videos.names
    log(f"calibration: {len(opt.strategies)} strategies x N {','.join(map(str, opt.sizes))} x "
        f"{opt.draws} disjoint {opt.calibration_split} draws on {len(videos.records)} {videos.split} videos"
        + ("" if same else f" ({len(videos.records) - len(ctx.videos.records)} low-EF videos added)"))
    res = calibration_stability(deploy, data, spec, videos, strategies=opt.strategies, sizes=opt.sizes,
                                draws=opt.draws, seed=opt.seed, split=opt.calibration_split,
                                max_clips_per_video=opt.max_clips_per_video,
                                reference_ef=ctx.ef_reference if same else None,
                                cache_dir=opt.cache_dir, progress=opt.progress, log=log,
                                require_tracings=opt.require_tracings)
    dq["calibration"] = res.to_dict()
    png = plot_stability(res, out / "calibration_size.png")
    dq["figures"]["calibration_size"] = png.name


__all__ = ["MIXED_DIR", "calibration_clips", "check_keep_float", "family", "run_attribution",
           "run_budget", "run_calibration", "run_sensitivity"]
