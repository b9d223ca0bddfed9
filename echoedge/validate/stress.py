"""The stress suite: the fp32 reference and every artefact on shifted frames (issue 21).

Every figure of a clean validation is on videos that look like the training and calibration
data. Here each named acquisition shift of `echoedge.data.shifts`, at each chosen level, is
applied to the held-out videos (the same change to every frame of a video, random draws seeded
per video), and the shifted frames go through the same path as in `validate`: the same records,
the same clip protocol (`model.evaluate.predict_videos`: evenly spaced starts, `data.clips`), the
same runners (`validate.runner.open_runner`). Per condition (shift x level):

- the eager fp32 reference: EF MAE (and RMSE, bias, band agreement) against the truth, i.e. what
  the model itself loses to the shift;
- every artefact that ran clean: |ΔEF| against the reference on the *same shifted frames* (mean,
  p95, max), signed bias and EF-band agreement (`validate.agreement`), and its MAE vs the truth
  (for the `mae_increase` gate), i.e. what conversion and quantization add under the shift.

A retiming shift (frame rate) hands the clip sampler the frames a time-mode sampler would pick
(`shifts.sampler_view`); the records it is fed carry the new FPS and frame count.

The section is written into report.json under `stress` (`stress_section`); the gates read it
(`validate.gates`), the reports render it (`validate.report_stress`). An artefact that crashes
under shifted frames becomes FAIL_RUNTIME at stage "stress".
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.data.shifts import LEVELS, SHIFTS, ShiftedSource, get_shift
from echoedge.errors import PlatformError, first_line
from echoedge.validate.gates import FAIL_RUNTIME

STRESS_VERSION = 1  # of the `stress` section of report.json; bump on an incompatible change
REPORT_KEY = "stress"


@dataclass
class StressOptions:
    shifts: tuple[str, ...] = tuple(SHIFTS)
    levels: tuple[str, ...] = LEVELS
    # Precisions stressed; None: every artefact that ran clean. `run` stresses only what the
    # gates gate by default, to keep its wall time down (fp32 artefacts compute the reference's
    # function: under any shift they agree with it as they do clean).
    precisions: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)


def run_stress(entries: list[dict[str, Any]], ref_model: Any, records: Sequence[Any],
               frames: Callable[[Any], np.ndarray], spec: Any, opt: Any, sopt: StressOptions,
               log: Callable[[str], None] = print, chatter: Path | None = None) -> dict[str, Any]:
    """The `stress` section for the artefact entries of a clean validation (entries are updated
    in place when an artefact fails under shifted frames). `opt` is the ValidateOptions."""
    from rich.progress import Progress

    from echoedge.console import captured_output
    from echoedge.model.evaluate import predict_videos
    from echoedge.validate.runner import EagerRunner, open_runner

    conditions = [(s, lv) for s in sopt.shifts for lv in LEVELS if lv in sopt.levels]
    section: dict[str, Any] = {
        "schema_version": STRESS_VERSION,
        "shifts": [get_shift(s).to_dict() for s in sopt.shifts],
        "levels": [lv for lv in LEVELS if lv in sopt.levels],
        "seed": opt.seed, "split": opt.split, "n_videos": len(records),
        "clips_per_video": opt.clips_per_video, "precisions": list(sopt.precisions) if sopt.precisions else None,
        "reference": {"name": "reference (eager fp32)", "conditions": []},
        "artefacts": [], "notes": list(sopt.notes), "timings_s": {},
    }
    timings: dict[str, float] = {"shift": 0.0, "reference": 0.0}
    live: list[tuple[dict[str, Any], dict[str, Any], Any]] = []  # (entry, stress row, runner)
    # The runtimes' console lines go to the validation log, as in `validate` (a fresh context each use).
    quiet = (lambda: captured_output(chatter)) if chatter else contextlib.nullcontext
    for e in entries:
        row = {"name": e["name"], "format": e["format"], "precision": e["precision"], "status": "ok",
               "reason": None, "conditions": []}
        section["artefacts"].append(row)
        if e.get("run_status") != "ok":
            row.update(status="not run", reason=f"{e.get('run_status')} in the clean validation")
            continue
        if sopt.precisions is not None and e["precision"] not in sopt.precisions:
            row.update(status="not run", reason=f"precision {e['precision']} not stressed "
                       f"(stressed: {', '.join(sopt.precisions)})")
            continue
        try:
            with quiet():
                runner = open_runner(e["folder"], threads=opt.threads)
        except PlatformError as err:  # it ran clean, so this host can run it; say so if not
            row.update(status="not run", reason=first_line(err))
            continue
        except Exception as err:
            _fail(e, row, err, log)
            continue
        live.append((e, row, runner))
        timings[e["name"]] = 0.0

    ref = EagerRunner(ref_model, threads=opt.threads, name="reference")
    t_all = time.perf_counter()
    try:
        with Progress(disable=not opt.progress, transient=True) as bar:
            task = bar.add_task("stress", total=len(conditions) * (1 + len(live)))
            for shift, level in conditions:
                t0 = time.perf_counter()
                source = ShiftedSource(frames, shift, level, opt.seed)
                recs = [source.record(r) for r in records]
                for r in recs:  # shift every video once, timed apart from inference
                    source(r)
                timings["shift"] += time.perf_counter() - t0
                label = f"{shift} {level}"
                bar.update(task, description=f"stress {label}: reference")
                t0 = time.perf_counter()
                ref_preds = predict_videos(ref, recs, source, spec, opt.clips_per_video,
                                           batch_size=opt.batch_size, progress=False)
                timings["reference"] += time.perf_counter() - t0
                bar.advance(task)
                value = get_shift(shift).value(level)
                section["reference"]["conditions"].append(
                    {"shift": shift, "level": level, "value": value, "vs_truth": _vs_truth(ref_preds)})
                for e, row, runner in live:
                    if row["status"] != "ok":
                        bar.advance(task)
                        continue
                    bar.update(task, description=f"stress {label}: {e['name']}")
                    t0 = time.perf_counter()
                    try:
                        with quiet():
                            preds = predict_videos(runner, recs, source, spec, opt.clips_per_video,
                                                   batch_size=opt.batch_size, progress=False)
                    except Exception as err:
                        _fail(e, row, err, log, f"{shift} {level}")
                    else:
                        row["conditions"].append({"shift": shift, "level": level, "value": value,
                                                  **_vs_reference(ref_preds, preds)})
                    timings[e["name"]] += time.perf_counter() - t0
                    bar.advance(task)
                source.clear()
    finally:
        for _, _, runner in live:
            with contextlib.suppress(Exception):
                runner.close()
    timings["total"] = time.perf_counter() - t_all
    section["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    log(f"stress: {len(conditions)} conditions x {len(records)} videos, reference + {len(live)} "
        f"artefact(s), {timings['total']:.0f} s")
    return section


def _fail(entry: dict[str, Any], row: dict[str, Any], err: BaseException, log: Callable[[str], None],
          where: str = "") -> None:
    reason = f"under shifted frames{f' ({where})' if where else ''}: {first_line(err)}"
    row.update(status=FAIL_RUNTIME, reason=reason)
    entry.update(status=FAIL_RUNTIME, run_status=FAIL_RUNTIME, stage="stress", reason=reason)
    log(f"{entry['name']}: {FAIL_RUNTIME} at stress: {reason}")


def _vs_truth(preds: Sequence[Any]) -> dict[str, Any]:
    from echoedge.model.metrics import ef_metrics

    m = ef_metrics(np.array([p.ef_true for p in preds]), np.array([p.ef for p in preds])).to_dict()
    return {k: m[k] for k in ("n", "mae", "rmse", "bias", "band_agreement")}


def _vs_reference(ref: Sequence[Any], test: Sequence[Any]) -> dict[str, Any]:
    """|ΔEF| stats, bias and band agreement (validate.agreement), and MAE vs the truth."""
    from echoedge.validate.agreement import band_agreement, band_flips, delta_stats

    got = {p.file_name: p.ef for p in test}
    r = np.array([p.ef for p in ref])
    t = np.array([got[p.file_name] for p in ref])
    agree, _ = band_agreement(r, t)
    truth = np.array([p.ef_true for p in ref])
    return {"vs_reference": {"ef": dataclasses.asdict(delta_stats(r, t)), "bias": float(np.mean(t - r)),
                             "band_agreement": agree, "n": int(r.size),
                             "band_flips": band_flips([p.file_name for p in ref], r, t)},
            "vs_truth": {"mae": float(np.mean(np.abs(t - truth)))}}


def worst_condition(row: dict[str, Any]) -> dict[str, Any] | None:
    """The condition with the largest mean |ΔEF| of one artefact (ties: the earlier one)."""
    conds = row.get("conditions") or []
    return max(conds, key=lambda c: c["vs_reference"]["ef"]["mean_abs"]) if conds else None

