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

This module is the orchestration (options, checks, the shared fp32 reference, the parts in
order); each part's runner is in `parts`, the budget candidates' measurement and goal verdict in
`candidates`, debug_quant.json and the report section in `output`.

An earlier debug_quant.json in OUT (same checkpoint) keeps the parts this run does not redo
(`carryover`): the sweeps take tens of minutes on a CPU, and re-running the budget should not
discard a calibration curve.

Writes OUT/debug_quant.json (schema `echo-edge/debug-quant`, every number), OUT/debug_quant.md,
PNG plots, and OUT/artefacts/<format>-<precision>-mixed/. With `report`, the section is also
added to a validation report.json under the key `debug_quant` (without the per-draw clip lists)
and report.md/report.html are rendered again: the report shows a "Quantization debugging"
section whenever its dict has that key.

Exit code: 0, or 1 when a budget could not be met for some format (BudgetError, recorded with
its reason); bad input raises EchoEdgeError (exit 2).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError
from echoedge.quantdebug.output import (
    JSON_FILE, MD_FILE, PARTS, SCHEMA, SCHEMA_VERSION, attach_to_report, write_json,
)


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
    max_memory_mb: float | None = None  # the budget search's activation-memory limit (estimate)
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
    require_tracings: bool = False  # EchoNet-Dynamic's rule: untraced videos dropped
    shift: str | None = None  # a stress-suite shift applied to the held-out frames (issue 21)
    shift_level: str = "moderate"


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
    if opt.max_memory_mb is not None:
        from echoedge.quantdebug.memory_budget import check_limit

        check_limit(opt.max_memory_mb)
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
    if opt.shift:
        from echoedge.data.shifts import check_level, get_shift

        get_shift(opt.shift)
        check_level(opt.shift_level)


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



def debug_quant(
    artefacts: Sequence[str | Path],
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    options: DebugQuantOptions | None = None,
    report: str | Path | None = None,
    log: Callable[[str], None] = print,
    model: str | None = None,
) -> DebugQuantResult:
    """Run the selected parts on the artefact folders at or below `artefacts`; write OUT/.

    `model` names what `checkpoint` holds (echoedge.model.registry); None: the model the
    artefacts' manifests record, else Echo-E3Net. Every part works on the model as the pipeline
    runs it (`LoadedModel.runnable`: EF first), so an EF-only video ResNet is debugged on EF."""
    import torch

    from echoedge.convert.artefact import artefacts_model, read_manifest
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.registry import DEFAULT_MODEL, load
    from echoedge.quantdebug.attribution import AttributionContext
    from echoedge.quantdebug.carryover import carry_over, previous_run
    from echoedge.quantdebug.parts import (
        check_keep_float, run_attribution, run_budget, run_calibration, run_sensitivity, scoped_note,
    )
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
    ck = load(artefacts_model(folders, model) or DEFAULT_MODEL, Path(checkpoint))
    manifests = {f: read_manifest(f) for f in folders}
    for f, m in manifests.items():
        if m.source_checkpoint_sha256 and m.source_checkpoint_sha256 != ck.sha256:
            raise EchoEdgeError(f"{f}: built from checkpoint sha256 {m.source_checkpoint_sha256[:12]}, not "
                                f"{Path(checkpoint)} ({ck.sha256[:12]}); pass the checkpoint it was converted from")
    previous = previous_run(out, ck.sha256, log)
    torch.manual_seed(opt.seed)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    deploy = to_deploy_form(ck.runnable, example=torch.zeros(ck.spec.input_shape(1))).eval()
    if opt.keep_float is not None and "budget" in parts:
        check_keep_float(deploy, opt.keep_float, manifests.values())
    videos = load_videos(data, ck.spec, opt.split.upper(), opt.videos, opt.clips_per_video, opt.cache_dir,
                         require_tracings=opt.require_tracings, shift=opt.shift,
                         shift_level=opt.shift_level, seed=opt.seed)
    shifted = f", frames shifted by {opt.shift} ({opt.shift_level})" if opt.shift else ""
    log(f"debug-quant: fp32 deploy form on {len(videos.records)} {videos.split} videos x "
        f"{opt.clips_per_video} clip(s){shifted}")
    ef_ref = ef_per_video(deploy, videos, progress=opt.progress, description="EF fp32 reference")
    ctx = AttributionContext(deploy, videos, ef_ref, ck.sha256)
    timings["setup"] = round(time.perf_counter() - t0, 2)

    dq: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint), "checkpoint_sha256": ck.sha256, "data": str(data),
        "model": ck.entry.name, "outputs": list(ck.entry.outputs),
        "parts": list(parts),
        "videos": {"split": videos.split, "names": videos.names, "clips_per_video": videos.clips_per_video,
                   "shift": opt.shift, "shift_level": opt.shift_level if opt.shift else None,
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
        carry_over(previous, dq, set(parts) | ({"sensitivity"} if sweep else set()), log)

    if "attribution" in parts:
        t0 = time.perf_counter()
        dq["attribution"] = run_attribution(folders, ctx, search, opt, dq, log)
        timings["attribution"] = round(time.perf_counter() - t0, 2)

    if sweep or "budget" in parts:
        scoped_note(manifests, dq, log)
    sweeps: dict[str, Any] = {}
    if sweep:
        t0 = time.perf_counter()
        sweeps = run_sensitivity(folders, manifests, ctx, search, opt, out, dq, log)
        timings["sensitivity"] = round(time.perf_counter() - t0, 2)

    if "budget" in parts:
        t0 = time.perf_counter()
        run_budget(folders, manifests, ctx, sweeps, search, ck, opt, out, dq, log)
        timings["budget"] = round(time.perf_counter() - t0, 2)

    if "calibration" in parts:
        t0 = time.perf_counter()
        run_calibration(deploy, data, ck.spec, ctx, opt, out, dq, log)
        timings["calibration"] = round(time.perf_counter() - t0, 2)

    files = {"json": write_json(dq, out / JSON_FILE)}
    from echoedge.validate.report_md import render_debug_quant

    md = out / MD_FILE
    md.write_text("# echo-edge quantization debugging\n\n" + render_debug_quant(dq) + "\n")
    files["md"] = md
    for name, rel in dq["figures"].items():
        files[name] = out / rel
    if report is not None:
        files.update({f"report_{k}": v for k, v in attach_to_report(dq, report).items()})
    return DebugQuantResult(dq, out, files)


__all__ = ["DebugQuantOptions", "DebugQuantResult", "debug_quant", "parse_parts", "parse_sizes"]
