"""Every budget candidate measured for real, and the verdict on the goal.

The given artefacts of each budgeted format and the mixed ones the budget emitted are all
candidates: EF error vs the fp32 reference, latency and size, timed side by side with the eager
fp32 model (one round robin; `budget.measure_candidates`), then the (error, latency, size) Pareto
front. Per format a verdict on issue 9's goal (`goal_verdicts`): an int8-or-mixed artefact within
the EF budget and at least `SPEEDUP_GOAL` times faster than eager fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError, first_line

if TYPE_CHECKING:
    from echoedge.quantdebug.job import DebugQuantOptions

# Issue 9's goal: an int8-or-mixed artefact at least this much faster than eager fp32.
SPEEDUP_GOAL = 2.5


def measure_and_judge(folders: list[Path], manifests: dict[Path, Any], rows: list[dict[str, Any]],
                      mixed: dict[str, tuple[Path, float]], ctx: Any, ck: Any, opt: DebugQuantOptions,
                      out: Path, dq: dict[str, Any], log: Callable[[str], None]) -> None:
    """Measure the given artefacts of the budgeted formats (`rows`) and the `mixed` ones emitted
    (folder name -> (folder, simulated |dEF|)); fill dq's candidates, goal and Pareto plot, and
    each budget row's mixed entry with its measured candidate."""
    from echoedge.quantdebug.budget import measure_candidates, pareto_front, pareto_plot

    # Every given artefact of a budgeted format is a candidate too: the trade-off is against
    # them. All are timed side by side with the eager reference (one round robin).
    fmts = {r["format"] for r in rows}
    given = [f for f in folders if manifests[f].format in fmts]
    log(f"budget: measuring {len(given) + len(mixed)} candidates and eager fp32 "
        f"({opt.latency_runs} timed calls each, side by side)")
    sims = {f.name: _simulated_for(f, dq) for f in given}
    sims.update({name: sim for name, (_, sim) in mixed.items()})
    candidates = measure_candidates(given + [f for f, _ in mixed.values()], ctx.videos, ctx.ef_reference,
                                    reference=ck.runnable, threads=opt.threads,
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


__all__ = ["SPEEDUP_GOAL", "goal_verdicts", "measure_and_judge"]
