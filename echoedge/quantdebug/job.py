"""`echo-edge debug-quant`: where each artefact's EF error comes from and how to remove it.

For a set of artefact folders converted from one checkpoint, on one set of held-out videos
(validate's clip protocol, batch 1; default 8 VAL videos x 1 clip: the sweeps are the slow part),
against the fp32 deploy form on the same clips, four parts, each selectable (`parts`):

    attribution  per artefact: fp32 reference / PT2E-or-Core-ML simulation / the artefact in its
                 runtime -> |dEF| split into quantization and conversion/runtime (`attribution`)
    sensitivity  per quantization scheme present (ExecuTorch and TFLite int8 share one), one unit
                 at a time kept float (or alone int8) in the simulation; ranked (`sensitivity`)
    budget       per format: greedy keep-float in sensitivity order until the simulated mean
                 |dEF| <= budget, the mixed artefact emitted with the backend's own mechanism
                 into OUT/artefacts/, then every candidate measured for real (EF, latency,
                 size) with the eager fp32 model as the speed baseline; Pareto front (`budget`).
                 Needs the sensitivity ranking, so it runs the sweep even when not listed, unless
                 `keep_float` names the mix (no search). All candidates and the eager model are
                 timed side by side; per format a verdict on the goal (`goal`).
    calibration  K disjoint calibration draws x sizes x strategies: spread, size curve, low-EF
                 hearts apart, recommended N (`stability`; needs no artefact)

An earlier debug_quant.json in OUT (same checkpoint) keeps the parts this run does not redo: the
sweeps take tens of minutes on a CPU, and re-running the budget should not discard a calibration
curve.

Writes OUT/debug_quant.json (schema `echo-edge/debug-quant`, every number), OUT/debug_quant.md,
PNG plots, and OUT/artefacts/<format>-<precision>-mixed/. With `report`, the section is also
added to a validation report.json under the key `debug_quant` (without the per-draw clip lists)
and report.md/report.html are rendered again: the report shows a "Quantization debugging"
section whenever its dict has that key.

Exit code: 0, or 1 when a budget could not be met for some format (BudgetError, recorded with
its reason); bad input raises EchoEdgeError (exit 2).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError, first_line

SCHEMA = "echo-edge/debug-quant"
SCHEMA_VERSION = 1
JSON_FILE = "debug_quant.json"
MD_FILE = "debug_quant.md"
PARTS = ("attribution", "sensitivity", "budget", "calibration")
REPORT_KEY = "debug_quant"
# What each part writes into debug_quant.json, and the figure names it owns (by prefix).
PART_KEYS = {"attribution": ("attribution", "attribution_skipped"), "sensitivity": ("sensitivity",),
             "budget": ("budget", "candidates", "goal"), "calibration": ("calibration",)}
PART_FIGURES = {"sensitivity": "sensitivity_", "budget": "pareto", "calibration": "calibration_size"}
MIXED_DIR = "artefacts"
# Issue 9's goal: an int8-or-mixed artefact at least this much faster than eager fp32.
SPEEDUP_GOAL = 2.5


@dataclass
class DebugQuantOptions:
    parts: tuple[str, ...] = PARTS
    split: str = "VAL"  # held-out videos every part is measured on
    videos: int | None = 8
    clips_per_video: int = 1
    calibration_clips: int = 32  # first N clips of an artefact's calibration set, for the sweeps
    budget: float = 0.25  # EF points, mean |dEF| vs the fp32 reference
    mode: str = "all-but"  # sensitivity: keep one unit float ("all-but") or only it int8 ("only")
    units: tuple[str, ...] | None = None  # restrict the sweep to these units
    max_float: int | None = None  # at most this many units float in the budget search
    keep_float: tuple[str, ...] | None = None  # a hand-picked mix instead of the search (no sweep needed)
    emit: bool = True  # emit and measure the mixed artefacts
    strategies: tuple[str, ...] = ("random", "ef-stratified", "phase-aware")
    sizes: tuple[int, ...] = (8, 16, 32)
    draws: int = 3
    calibration_split: str = "TRAIN"
    max_clips_per_video: int = 2
    threads: int = 2
    latency_runs: int = 20
    warmup: int = 3
    seed: int = 0
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class DebugQuantResult:
    data: dict[str, Any]  # what debug_quant.json holds
    out: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if any(not b.get("met") for b in self.data.get("budget") or []) else 0


def parse_parts(text: str | Sequence[str]) -> tuple[str, ...]:
    """'attribution,budget' or 'all' -> parts in PARTS order; EchoEdgeError naming an unknown one."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not items or items == ["all"]:
        return PARTS
    bad = [p for p in items if p not in PARTS]
    if bad:
        raise EchoEdgeError(f"unknown part {bad[0]!r} (expected a comma list of: {', '.join(PARTS)}, or all)")
    return tuple(p for p in PARTS if p in items)


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise EchoEdgeError(f"calibration sizes {text!r}: expected a comma list of integers, e.g. 8,16,32") from None
    if not sizes or min(sizes) < 1:
        raise EchoEdgeError(f"calibration sizes {text!r}: expected positive clip counts")
    return sizes


def _check_options(opt: DebugQuantOptions) -> None:
    from echoedge.calibration.calibset import check_split
    from echoedge.calibration.strategies import check_strategy
    from echoedge.quantdebug.sensitivity import MODES

    parse_parts(opt.parts)
    if not (opt.budget > 0 and np.isfinite(opt.budget)):
        raise EchoEdgeError(f"--budget must be a positive number of EF points, got {opt.budget}")
    if opt.mode not in MODES:
        raise EchoEdgeError(f"sensitivity mode must be one of {', '.join(MODES)}, got {opt.mode!r}")
    if opt.videos is not None and opt.videos < 1 or opt.clips_per_video < 1 or opt.calibration_clips < 1 \
            or opt.draws < 1 or opt.threads < 1 or opt.latency_runs < 1:
        raise EchoEdgeError("--videos, --clips, --calibration-clips, --draws, --threads and --runs must be >= 1")
    if opt.split.upper() not in ("TRAIN", "VAL", "TEST"):
        raise EchoEdgeError(f"unknown split {opt.split!r} (expected TRAIN, VAL or TEST)")
    check_split(opt.calibration_split)
    for s in opt.strategies:
        check_strategy(s)
    parse_sizes(",".join(map(str, opt.sizes)))


def _collect(artefacts: Sequence[str | Path]) -> list[Path]:
    from echoedge.convert.artefact import find_artefacts

    folders: list[Path] = []
    for root in map(Path, artefacts):
        if not root.exists():
            raise EchoEdgeError(f"{root}: artefacts folder not found")
        found = find_artefacts(root)
        if not found:
            raise EchoEdgeError(f"{root}: no artefact folders (with manifest.json) found")
        folders += [f for f in found if f not in folders]
    return folders


def _family(fmt: str, precision: str) -> str | None:
    """The simulation an artefact's quantization is: ExecuTorch and TFLite int8 share one."""
    from echoedge.quantdebug.simulate import FIDELITY

    if (fmt, precision) not in FIDELITY:
        return None
    return "int8" if precision == "int8" and fmt in ("executorch", "tflite") else f"{fmt}-{precision}"


def _write_json(data: dict[str, Any], path: Path) -> Path:
    from echoedge.validate.report_json import to_json_safe

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_json_safe(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def debug_quant(
    artefacts: Sequence[str | Path],
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    options: DebugQuantOptions | None = None,
    report: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> DebugQuantResult:
    """Run the selected parts on the artefact folders at or below `artefacts`; write OUT/."""
    import torch

    from echoedge.convert.artefact import read_manifest
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.quantdebug.attribution import AttributionContext
    from echoedge.quantdebug.simulate import ef_per_video, load_videos

    opt = options or DebugQuantOptions()
    _check_options(opt)
    parts = parse_parts(opt.parts)
    out = Path(out)
    if report is not None:
        from echoedge.validate.report_json import read_report

        read_report(report)  # a bad report path fails before minutes of work
    folders = _collect(artefacts) if artefacts else []
    needs_artefacts = [p for p in parts if p != "calibration"]
    if needs_artefacts and not folders:
        raise EchoEdgeError(f"parts {', '.join(needs_artefacts)} need ARTEFACTS (artefact folders or "
                            "a folder holding them); only --parts calibration runs without")
    ck = load_checkpoint(Path(checkpoint))
    manifests = {f: read_manifest(f) for f in folders}
    for f, m in manifests.items():
        if m.source_checkpoint_sha256 and m.source_checkpoint_sha256 != ck.sha256:
            raise EchoEdgeError(f"{f}: built from checkpoint sha256 {m.source_checkpoint_sha256[:12]}, not "
                                f"{Path(checkpoint)} ({ck.sha256[:12]}); pass the checkpoint it was converted from")
    previous = _previous(out, ck.sha256, log)
    torch.manual_seed(opt.seed)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    deploy = to_deploy_form(ck.model.eval(), example=torch.zeros(ck.spec.input_shape(1))).eval()
    if opt.keep_float is not None and "budget" in parts:
        _check_keep_float(deploy, opt.keep_float, manifests.values())
    videos = load_videos(data, ck.spec, opt.split.upper(), opt.videos, opt.clips_per_video, opt.cache_dir)
    log(f"debug-quant: fp32 deploy form on {len(videos.records)} {videos.split} videos x "
        f"{opt.clips_per_video} clip(s)")
    ef_ref = ef_per_video(deploy, videos, progress=opt.progress, description="EF fp32 reference")
    ctx = AttributionContext(deploy, videos, ef_ref, ck.sha256)
    timings["setup"] = round(time.perf_counter() - t0, 2)

    dq: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint), "checkpoint_sha256": ck.sha256, "data": str(data),
        "parts": list(parts),
        "videos": {"split": videos.split, "names": videos.names, "clips_per_video": videos.clips_per_video,
                   "ef_reference": [float(v) for v in ef_ref]},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opt).items()
                     if k not in ("cache_dir", "progress")},
        "artefacts": [str(f) for f in folders],
        "attribution": None, "attribution_skipped": {}, "sensitivity": None, "budget": None,
        "candidates": None, "goal": None, "calibration": None, "figures": {}, "notes": [], "timings_s": timings,
    }
    search = [Path(a) for a in artefacts]
    sweep = "sensitivity" in parts or ("budget" in parts and opt.keep_float is None)
    if previous is not None:  # first: the budget part reads the attribution's simulated figures
        _carry_over(previous, dq, set(parts) | ({"sensitivity"} if sweep else set()), log)

    if "attribution" in parts:
        t0 = time.perf_counter()
        dq["attribution"] = _attribution(folders, ctx, search, opt, dq, log)
        timings["attribution"] = round(time.perf_counter() - t0, 2)

    sweeps: dict[str, Any] = {}
    if sweep:
        t0 = time.perf_counter()
        sweeps = _sensitivity(folders, manifests, ctx, search, opt, out, dq, log)
        timings["sensitivity"] = round(time.perf_counter() - t0, 2)

    if "budget" in parts:
        t0 = time.perf_counter()
        _budget(folders, manifests, ctx, sweeps, search, ck, opt, out, dq, log)
        timings["budget"] = round(time.perf_counter() - t0, 2)

    if "calibration" in parts:
        t0 = time.perf_counter()
        _calibration(deploy, data, ck.spec, ctx, opt, out, dq, log)
        timings["calibration"] = round(time.perf_counter() - t0, 2)


    files = {"json": _write_json(dq, out / JSON_FILE)}
    from echoedge.validate.report_md import render_debug_quant

    md = out / MD_FILE
    md.write_text("# echo-edge quantization debugging\n\n" + render_debug_quant(dq) + "\n")
    files["md"] = md
    for name, rel in dq["figures"].items():
        files[name] = out / rel
    if report is not None:
        files.update({f"report_{k}": v for k, v in attach_to_report(dq, report).items()})
    return DebugQuantResult(dq, out, files)


# ---------------------------------------------------------------------------------------------
# The parts


def _attribution(folders: list[Path], ctx: Any, search: list[Path], opt: DebugQuantOptions,
                 dq: dict[str, Any], log: Callable[[str], None]) -> list[dict[str, Any]]:
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


def _calibration_clips(folder: Path, manifest: Any, search: list[Path], limit: int | None) -> tuple[Any, Any]:
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


def _sensitivity(folders: list[Path], manifests: dict[Path, Any], ctx: Any, search: list[Path],
                 opt: DebugQuantOptions, out: Path, dq: dict[str, Any],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """One sweep per quantization family present; returns family -> SensitivityResult."""
    from echoedge.quantdebug.sensitivity import sensitivity_plot, sensitivity_sweep

    sweeps: dict[str, Any] = {}
    rows = []
    for f in folders:
        m = manifests[f]
        fam = _family(m.format, m.precision)
        if fam is None or fam in sweeps:
            continue
        _, clips = _calibration_clips(f, m, search, opt.calibration_clips)
        log(f"sensitivity: {fam} ({m.format} {m.precision}), {opt.mode}, calibration "
            f"{'-' if clips is None else len(clips)} clips of {f.name}'s set")
        res = sensitivity_sweep(ctx.deploy, ctx.videos, clips, m.format, m.precision, mode=opt.mode,
                                ef_reference=ctx.ef_reference, units=opt.units, progress=opt.progress,
                                log=log)
        sweeps[fam] = res
        png = sensitivity_plot(res, out / f"sensitivity_{fam}.png")
        dq["figures"][f"sensitivity_{fam}"] = png.name
        rows.append({"family": fam, "formats": sorted({mm.format for ff, mm in manifests.items()
                                                       if _family(mm.format, mm.precision) == fam}),
                     **res.to_dict()})
    if not sweeps:
        dq["notes"].append("sensitivity: no quantized artefact with a simulation among the artefacts")
    dq["sensitivity"] = rows
    return sweeps


def _budget(folders: list[Path], manifests: dict[Path, Any], ctx: Any, sweeps: dict[str, Any],
            search: list[Path], ck: Any, opt: DebugQuantOptions, out: Path, dq: dict[str, Any],
            log: Callable[[str], None]) -> None:
    from echoedge.quantdebug.budget import (
        MIXED_PRECISION, BudgetError, emit_mixed, evaluate_mix, measure_candidates, pareto_front,
        pareto_plot, search_budget,
    )

    rows: list[dict[str, Any]] = []
    searches: dict[str, Any] = {}  # family -> BudgetResult (TFLite reuses ExecuTorch's search)
    mixed: dict[str, tuple[Path, float]] = {}  # emitted folder name -> (folder, simulated |dEF|)
    for f in folders:
        m = manifests[f]
        if MIXED_PRECISION.get(m.format) != m.precision:
            continue
        fam = _family(m.format, m.precision)
        if fam is None or (opt.keep_float is None and fam not in sweeps):
            continue
        cs, clips = _calibration_clips(f, m, search, opt.calibration_clips)
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
                                             progress=opt.progress, log=log)
            elif fam not in searches:
                log(f"budget: {fam}, mean |dEF| <= {opt.budget:g} (simulated)")
                searches[fam] = search_budget(ctx.deploy, ctx.videos, clips, opt.budget, sweeps[fam],
                                              m.format, m.precision, ef_reference=ctx.ef_reference,
                                              max_float=opt.max_float, progress=opt.progress, log=log)
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
        elif not res.kept_float:
            dq["notes"].append(f"{m.format} {m.precision}: the pure recipe already meets the budget "
                               "in simulation; no mixed artefact needed")
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    if opt.emit and rows:
        # Every given artefact of a budgeted format is a candidate too: the trade-off is against
        # them. All are timed side by side with the eager reference (one round robin).
        fmts = {r["format"] for r in rows}
        given = [f for f in folders if manifests[f].format in fmts]
        log(f"budget: measuring {len(given) + len(mixed)} candidates and eager fp32 "
            f"({opt.latency_runs} timed calls each, side by side)")
        sims = {f.name: _simulated_for(f, dq) for f in given}
        sims.update({name: sim for name, (_, sim) in mixed.items()})
        candidates = measure_candidates(given + [f for f, _ in mixed.values()], ctx.videos, ctx.ef_reference,
                                        reference=ck.model, threads=opt.threads,
                                        latency_runs=opt.latency_runs, warmup=opt.warmup,
                                        latency_clip=_latency_clip(ctx.videos), simulated=sims,
                                        reference_name="eager fp32 (reference)", progress=opt.progress)
        ref = candidates[0]
        front = {c.name for c in pareto_front(candidates)}
        cdicts = []
        for c in candidates:
            d = c.to_dict()
            d["pareto"] = c.name in front
            d["speedup_vs_eager"] = (ref.latency_ms / c.latency_ms
                                     if c.latency_ms and ref.latency_ms else None)
            d["meets_goal"] = (c.folder is not None and c.precision not in ("fp32", "fp16")  # int8-or-mixed
                               and d["speedup_vs_eager"] is not None
                               and c.mean_abs_def <= opt.budget and d["speedup_vs_eager"] >= SPEEDUP_GOAL)
            cdicts.append(d)
        dq["candidates"] = cdicts
        dq["goal"] = goal_verdicts(cdicts, opt.budget)
        try:
            png = pareto_plot(candidates, out / "pareto.png", budget=opt.budget)
            dq["figures"]["pareto"] = png.name
        except EchoEdgeError as e:
            dq["notes"].append(f"pareto plot: {first_line(e)}")
        for r in rows:
            if r["mixed"]:
                mix = next(c for c in cdicts if c["name"] == r["mixed"]["name"])
                pure = next((c for c in cdicts if c["name"] == r["source"]), None)
                r["mixed"] = mix
                if pure and pure["latency_ms"] and mix["latency_ms"]:
                    r["latency_cost_vs_pure_ms"] = mix["latency_ms"] - pure["latency_ms"]
    if not rows:
        dq["notes"].append("budget: no artefact of a precision mixed precision applies to "
                           "(executorch int8, tflite int8, coreml w8)")
    dq["budget"] = rows


def _check_keep_float(deploy: Any, keep_float: Sequence[str], manifests: Any) -> None:
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


def _previous(out: Path, checkpoint_sha256: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """An earlier debug_quant.json in OUT for the same checkpoint, whose other parts this run keeps."""
    path = out / JSON_FILE
    if not path.exists():
        return None
    try:
        prev = load_debug_quant(path)
    except EchoEdgeError as e:
        log(f"debug-quant: {first_line(e)}; replacing it")
        return None
    if prev.get("checkpoint_sha256") != checkpoint_sha256:
        log(f"debug-quant: {path} is of another checkpoint; replacing it")
        return None
    return prev


def _carry_over(prev: dict[str, Any], dq: dict[str, Any], redo: set[str],
                log: Callable[[str], None]) -> None:
    """Keep the parts of an earlier run in the same OUT that this run does not redo.

    The sweeps take tens of minutes on a CPU: re-running the budget must not throw away a
    calibration curve. Parts measured on other videos than this run's are not kept (their
    figures would not be comparable); the calibration part brings its own videos.
    """
    same_videos = prev.get("videos", {}).get("names") == dq["videos"]["names"] and \
        prev.get("videos", {}).get("clips_per_video") == dq["videos"]["clips_per_video"]
    kept = []
    for part in PARTS:
        if part in redo or not prev.get(PART_KEYS[part][0]):
            continue
        if part != "calibration" and not same_videos:
            log(f"debug-quant: the earlier {part} part was measured on other videos; not kept")
            continue
        for key in PART_KEYS[part]:
            dq[key] = prev.get(key)
        for name, rel in (prev.get("figures") or {}).items():
            if name.startswith(PART_FIGURES.get(part, "\0")):
                dq["figures"][name] = rel
        if part in (prev.get("timings_s") or {}):
            dq["timings_s"][part] = prev["timings_s"][part]
        kept.append(part)
    if kept:
        dq["parts"] = [p for p in PARTS if p in dq["parts"] or p in kept]
        dq["carried_over"] = {"parts": kept, "from": prev.get("created_at")}
        dq["notes"].append(f"{', '.join(kept)}: kept from the earlier run in this folder "
                           f"({prev.get('created_at')}); the other parts are from this run")
        log(f"debug-quant: kept {', '.join(kept)} from the earlier run in {JSON_FILE}")


def goal_verdicts(candidates: Sequence[dict[str, Any]], budget: float,
                  speedup_goal: float = SPEEDUP_GOAL) -> list[dict[str, Any]]:
    """Per format: is there an int8-or-mixed candidate within `budget` and >= `speedup_goal`x eager?

    status: "met" (the fastest such candidate is named), "not met" (why: none within the budget,
    or the ones within it are too slow), or "unmeasured" (within the budget, but its runtime here
    is not the device's, so its speed is unknown: Core ML off macOS).
    """
    rows = []
    for fmt in dict.fromkeys(c["format"] for c in candidates if c["folder"] is not None):
        quant = [c for c in candidates if c["format"] == fmt and c["folder"] is not None
                 and c["precision"] not in ("fp32", "fp16")]
        row: dict[str, Any] = {"format": fmt, "budget": budget, "speedup_goal": speedup_goal,
                               "status": "not met", "candidate": None, "mean_abs_def": None,
                               "speedup_vs_eager": None, "reason": None}
        ok = [c for c in quant if c["mean_abs_def"] <= budget]
        fast = [c for c in ok if c.get("meets_goal")]
        if not quant:
            row["reason"] = "no int8 or mixed artefact among the candidates"
        elif fast:
            best = max(fast, key=lambda c: c["speedup_vs_eager"])
            row.update(status="met", candidate=best["name"], mean_abs_def=best["mean_abs_def"],
                       speedup_vs_eager=best["speedup_vs_eager"])
        elif not ok:
            best = min(quant, key=lambda c: c["mean_abs_def"])
            row.update(candidate=best["name"], mean_abs_def=best["mean_abs_def"],
                       speedup_vs_eager=best.get("speedup_vs_eager"),
                       reason=f"no int8 or mixed artefact within the budget (best {best['name']}: "
                              f"{best['mean_abs_def']:.3f})")
        elif all(c.get("speedup_vs_eager") is None for c in ok):
            best = min(ok, key=lambda c: c["mean_abs_def"])
            row.update(status="unmeasured", candidate=best["name"], mean_abs_def=best["mean_abs_def"],
                       reason=f"within the budget, but its runtime here ({best['runtime']}) is not the "
                              "device's: no latency")
        else:
            best = max((c for c in ok if c.get("speedup_vs_eager") is not None),
                       key=lambda c: c["speedup_vs_eager"])
            row.update(candidate=best["name"], mean_abs_def=best["mean_abs_def"],
                       speedup_vs_eager=best["speedup_vs_eager"],
                       reason=f"the fastest within the budget ({best['name']}) is "
                              f"{best['speedup_vs_eager']:.2f}x eager fp32, under {speedup_goal:g}x")
        rows.append(row)
    return rows


def _simulated_for(folder: Path, dq: dict[str, Any]) -> float | None:
    for a in dq.get("attribution") or []:
        if Path(a["folder"]) == Path(folder):
            return a["quantization"]
    return None


def _latency_clip(videos: Any) -> np.ndarray:
    from echoedge.data.clips import eval_starts, extract_clip

    rec = videos.records[0]
    f = videos.frames(rec)
    return extract_clip(f, eval_starts(len(f), videos.spec, 1)[0], videos.spec)[None].astype(np.float32)


def _calibration(deploy: Any, data: str | Path, spec: Any, ctx: Any, opt: DebugQuantOptions, out: Path,
                 dq: dict[str, Any], log: Callable[[str], None]) -> None:
    from echoedge.quantdebug.stability import calibration_stability, evaluation_videos, plot_stability

    videos = evaluation_videos(data, spec, ctx.videos.split, opt.videos, opt.clips_per_video,
                               add_low_ef=True, cache_dir=opt.cache_dir)
    same = videos.names == ctx.videos.names
    log(f"calibration: {len(opt.strategies)} strategies x N {','.join(map(str, opt.sizes))} x "
        f"{opt.draws} disjoint {opt.calibration_split} draws on {len(videos.records)} {videos.split} videos"
        + ("" if same else f" ({len(videos.records) - len(ctx.videos.records)} low-EF videos added)"))
    res = calibration_stability(deploy, data, spec, videos, strategies=opt.strategies, sizes=opt.sizes,
                                draws=opt.draws, seed=opt.seed, split=opt.calibration_split,
                                max_clips_per_video=opt.max_clips_per_video,
                                reference_ef=ctx.ef_reference if same else None,
                                cache_dir=opt.cache_dir, progress=opt.progress, log=log)
    dq["calibration"] = res.to_dict()
    png = plot_stability(res, out / "calibration_size.png")
    dq["figures"]["calibration_size"] = png.name


# ---------------------------------------------------------------------------------------------
# The report section


def report_section(dq: dict[str, Any]) -> dict[str, Any]:
    """debug_quant.json as it goes into report.json: the per-draw clip lists left out."""
    section = json.loads(json.dumps(dq))
    cal = section.get("calibration")
    if cal:
        for d in cal.get("draws") or []:
            d.pop("clips", None)
    return section


def attach_to_report(dq: dict[str, Any], report: str | Path) -> dict[str, Path]:
    """Put the section into report.json under `debug_quant` and render report.md/.html again."""
    from echoedge.validate.report_json import read_report
    from echoedge.validate.validate import write_outputs

    path = Path(report)
    rep = read_report(path)
    rep[REPORT_KEY] = report_section(dq)
    return write_outputs(rep, path if path.is_dir() else path.parent)


def load_debug_quant(path: str | Path) -> dict[str, Any]:
    """A debug_quant.json (or its folder), checked for schema and version."""
    from echoedge.validate.report_json import read_versioned_json

    return read_versioned_json(path, JSON_FILE, SCHEMA, SCHEMA_VERSION, "debug-quant result")[1]


__all__ = ["DebugQuantOptions", "DebugQuantResult", "JSON_FILE", "PARTS", "SCHEMA", "SCHEMA_VERSION",
           "attach_to_report", "debug_quant", "load_debug_quant", "parse_parts", "parse_sizes",
           "report_section"]
