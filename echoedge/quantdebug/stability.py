"""Calibration stability and size: how much the int8 EF error depends on *which* clips calibrate.

Three questions, answered in EF points on held-out videos, through the PT2E simulation of the
ExecuTorch int8 recipe (`simulate`; measured within 0.01 mean |dEF| of the real .pte):

- **Stability.** K disjoint draws of one strategy (`draws`: groups of videos that share none,
  each planned with the strategy's own planner). The spread of |dEF| over the K draws (mean, sd,
  min, max) is what an unlucky draw can cost.
- **Size.** The same K draws at each N of a list: the calibration-size curve per strategy
  (`size_curve`), with its recommended N. N is capped by what a draw's group offers
  (`draws.size_cap`); sizes over the cap are skipped and the result says so.
- **Low EF.** Every figure also separately on low-EF hearts (reference EF < 40 by default: the
  hearts whose clinical band a few EF points can change) and on the rest.

Cost. The recipe's observers are min/max, so `observers.RangeCache` runs each distinct clip
through one prepared model once and builds the converted model of any set from the per-clip
ranges: calibration costs one forward per distinct clip however many (strategy, N, draw) sets
share it. This equals calibrating directly (tested bit for bit against `simulate_int8`); with any
other observer kind the cache declines and every set is calibrated from scratch. Evaluating a
converted model (the q/dq graph, several times slower than float) dominates the cost: models x
videos x clips.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError
from echoedge.quantdebug.draws import disjoint_plans, draw_seed, partition_videos, size_cap
from echoedge.quantdebug.size_curve import (
    MAX_SD, TOLERANCE, DrawResult, Recommendation, SizePoint, recommend, recommend_overall,
    summarise_draws,
)

LABEL = "PT2E simulation of the ExecuTorch int8 recipe"
DEFAULT_STRATEGIES = ("random", "ef-stratified", "phase-aware")
DEFAULT_SIZES = (8, 16, 32, 64, 128)
DEFAULT_DRAWS = 3
DEFAULT_MAX_CLIPS_PER_VIDEO = 2
LOW_EF = 40.0


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class StabilityResult:
    label: str
    settings: dict[str, Any]
    videos: dict[str, Any]  # evaluation videos, reference EF, low-EF membership
    points: list[SizePoint]
    draws: list[DrawResult]
    recommendations: dict[str, Recommendation]  # per strategy
    overall: Recommendation | None
    notes: list[str] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "settings": self.settings, "videos": self.videos,
            "points": [asdict(p) for p in self.points],
            "recommendations": {k: asdict(v) for k, v in self.recommendations.items()},
            "overall": asdict(self.overall) if self.overall else None,
            "notes": list(self.notes), "cost": self.cost,
            "draws": [asdict(d) for d in self.draws],
        }

    def point(self, strategy: str, size: int) -> SizePoint | None:
        return next((p for p in self.points if p.strategy == strategy and p.size == size), None)


# ---------------------------------------------------------------------------------------------
# Evaluation videos


def evaluation_videos(data: str | Path, spec: Any, split: str = "TEST", videos: int | None = 16,
                      clips_per_video: int = 1, add_low_ef: bool = True, low_ef: float = LOW_EF,
                      cache_dir: Path | None = None, require_tracings: bool = False) -> Any:
    """The first `videos` videos of `split`, plus (add_low_ef) every other one with true EF < low_ef.

    Low-EF hearts are about 1 in 10, so the first N videos alone hold too few to compare
    strategies on them; the added ones are listed in the result.
    """
    from echoedge.quantdebug.simulate import VideoSet, load_videos

    allv = load_videos(data, spec, split, None, clips_per_video, cache_dir, require_tracings)
    chosen = list(allv.records[:videos] if videos else allv.records)
    if add_low_ef:
        names = {r.file_name for r in chosen}
        chosen += [r for r in allv.records if r.ef < low_ef and r.file_name not in names]
    return VideoSet(chosen, allv.frames, spec, clips_per_video, allv.split)


# ---------------------------------------------------------------------------------------------
# The study


def calibration_stability(
    deploy: Any,
    data: str | Path,
    spec: Any,
    videos: Any,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    sizes: Sequence[int] = DEFAULT_SIZES,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    split: str = "TRAIN",
    max_clips_per_video: int = DEFAULT_MAX_CLIPS_PER_VIDEO,
    low_ef: float = LOW_EF,
    low_ef_by: str = "reference",
    reference_ef: np.ndarray | None = None,
    tolerance: float = TOLERANCE,
    max_sd: float = MAX_SD,
    cache_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    require_tracings: bool = False,
) -> StabilityResult:
    """K disjoint draws x N sizes x strategies through the simulation; spread, curve, recommendation.

    `deploy` is the deploy form (fp32, eval mode); `videos` a `simulate.VideoSet` (held-out);
    `reference_ef` its fp32 per-video EF when already computed (saves one pass).
    """
    from rich.progress import Progress

    from echoedge.calibration.calibset import check_split, extract_clips
    from echoedge.calibration.strategies import acquisition_for, check_strategy
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.quantdebug.observers import RangeCache, prepare_recipe
    from echoedge.quantdebug.simulate import ef_per_video, simulate_int8

    t_all = time.perf_counter()
    split = check_split(split)
    strategies = list(dict.fromkeys(check_strategy(s) for s in strategies))
    if not strategies:
        raise EchoEdgeError("no calibration strategies given")
    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1:
        raise EchoEdgeError(f"calibration sizes must be positive clip counts, got {list(sizes)}")
    if low_ef_by not in ("reference", "truth"):
        raise EchoEdgeError(f"low_ef_by must be 'reference' or 'truth', got {low_ef_by!r}")
    if draws < 1 or max_clips_per_video < 1:
        raise EchoEdgeError("draws and max clips per video must be >= 1")
    reader = EchoNet(Path(data), require_tracings=require_tracings)
    records = reader.records(split)
    frames = FrameCache(reader, cache_dir)
    groups = partition_videos(records, draws, seed, spec)
    notes: list[str] = []
    cost: dict[str, Any] = {}

    # Plans first (cheap, metadata only): a bad size or too few videos fails before any compute.
    plans: dict[tuple[str, int], list[Any]] = {}
    for s in strategies:
        acquisition = acquisition_for(s, reader.root)
        cap = size_cap(s, groups, spec, max_clips_per_video)
        kept = [n for n in sizes if n <= cap]
        if len(kept) < len(sizes):
            notes.append(f"{s}: N = {', '.join(str(n) for n in sizes if n > cap)} skipped: each of "
                         f"{draws} disjoint draws has at least {cap // max_clips_per_video} usable "
                         f"{split} videos, at most {max_clips_per_video} clips per video -> N <= {cap}")
        if not kept:
            raise EchoEdgeError(f"{data}: no calibration size fits {s} with {draws} disjoint draws "
                                f"(N <= {cap}); use fewer draws or smaller sizes")
        for n in kept:
            plans[(s, n)] = disjoint_plans(s, records, spec, n, draws, seed, split, groups, acquisition)

    t0 = time.perf_counter()
    if reference_ef is None:
        log(f"stability: fp32 reference on {len(videos.records)} {videos.split} videos")
        reference_ef = ef_per_video(deploy, videos, progress=progress, description="reference fp32")
    reference_ef = np.asarray(reference_ef, dtype=np.float64)
    cost["reference_s"] = round(time.perf_counter() - t0, 2)
    truth = np.array([r.ef for r in videos.records], dtype=np.float64)
    low_mask = (reference_ef if low_ef_by == "reference" else truth) < low_ef
    if not low_mask.any():
        notes.append(f"no evaluation video has {low_ef_by} EF < {low_ef:g}: no low-EF comparison")

    # Every distinct clip's ranges once, collected as the models need them; models in order of N
    # (all strategies at the smallest N first), so a long run's log fills the curve from the left.
    t0 = time.perf_counter()
    requested = sum(len(p.draws) for pl in plans.values() for p in pl)
    first = next(iter(plans.values()))[0].draws[0]
    prepared = prepare_recipe(deploy, extract_clips([first], spec, frames, progress=False))
    cache = RangeCache(prepared)
    if not cache.exact:
        notes.append(f"{cache.inexact_kind} observers: per-clip ranges are not exact, every set "
                     "is calibrated from scratch")
    prepare_s = time.perf_counter() - t0

    results: list[DrawResult] = []
    ranges_s = convert_s = eval_s = 0.0
    jobs = sorted(((s, n, d, plan) for (s, n), pl in plans.items() for d, plan in enumerate(pl)),
                  key=lambda j: (j[1], strategies.index(j[0]), j[2]))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("simulated int8 models", total=len(jobs))
        for s, n, d, plan in jobs:
            keys = [(dr.record.file_name, int(dr.start)) for dr in plan.draws]
            t0 = time.perf_counter()
            if cache.exact:
                todo = {k: dr for k, dr in zip(keys, plan.draws) if k not in cache}
                items = list(todo.items())
                for i in range(0, len(items), 32):  # extract in chunks: memory stays flat
                    chunk = items[i:i + 32]
                    clips = extract_clips([dr for _, dr in chunk], spec, frames, progress=False)
                    for (k, _), c in zip(chunk, clips):
                        cache.add(k, c)
                ranges_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                model = cache.convert(keys)
            else:
                model = simulate_int8(deploy, extract_clips(plan.draws, spec, frames, progress=False))
            convert_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            ef = ef_per_video(model, videos, progress=False)
            eval_s += time.perf_counter() - t0
            delta = ef - reference_ef
            a = np.abs(delta)
            results.append(DrawResult(
                s, n, d, draw_seed(seed, d), len({k[0] for k in keys}), [list(k) for k in keys],
                float(a.mean()), float(a.max()),
                float(a[low_mask].mean()) if low_mask.any() else None,
                float(a[~low_mask].mean()) if (~low_mask).any() else None,
                [float(x) for x in delta]))
            bar.advance(task)
            log(f"  {s:<13} N={n:<4} draw {d}: mean |dEF| {a.mean():.3f}"
                + (f" (low EF {a[low_mask].mean():.3f})" if low_mask.any() else "")
                + f"  [{time.perf_counter() - t_all:.0f} s]")
    cost.update(prepare_s=round(prepare_s, 2), ranges_s=round(ranges_s, 2), clips_requested=requested,
                clips_calibrated=len(cache) if cache.exact else requested)

    points = [summarise_draws([r for r in results if r.strategy == s and r.size == n])
              for (s, n) in plans]  # strategy order, then N ascending
    recs = {s: recommend([p for p in points if p.strategy == s], tolerance, max_sd)
            for s in strategies}
    n_eval = len(videos.records) * videos.clips_per_video
    cost.update(models=len(jobs), convert_s=round(convert_s, 2), evaluate_s=round(eval_s, 2),
                evaluate_s_per_clip=round(eval_s / max(1, len(jobs) * n_eval), 3),
                range_forward_s_per_clip=round(cache.forward_s / max(1, len(cache)), 3)
                if cache.exact else None,
                total_s=round(time.perf_counter() - t_all, 2))
    return StabilityResult(
        label=LABEL,
        settings={"strategies": strategies, "sizes": sizes, "draws": draws, "seed": seed,
                  "split": split, "max_clips_per_video": max_clips_per_video, "low_ef": low_ef,
                  "low_ef_by": low_ef_by, "tolerance": tolerance, "max_sd": max_sd,
                  "groups": [len(g) for g in groups], "exact_range_cache": cache.exact},
        videos={"split": videos.split, "clips_per_video": videos.clips_per_video,
                "names": videos.names, "ef_true": [float(x) for x in truth],
                "ef_reference": [float(x) for x in reference_ef],
                "low_ef": [bool(x) for x in low_mask], "n_low_ef": int(low_mask.sum())},
        points=points, draws=results, recommendations=recs, overall=recommend_overall(recs),
        notes=notes, cost=cost)


# ---------------------------------------------------------------------------------------------
# Plot and text


def plot_stability(result: StabilityResult | dict[str, Any], path: str | Path) -> Path:
    """calibration-size curve per strategy (mean over draws, min-max band, sd bars) and low-EF panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result.to_dict() if isinstance(result, StabilityResult) else result
    pts = d["points"]
    strategies = list(dict.fromkeys(p["strategy"] for p in pts))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, s in enumerate(strategies):
        ps = sorted((p for p in pts if p["strategy"] == s), key=lambda p: p["size"])
        n = np.array([p["size"] for p in ps], dtype=float)
        m = np.array([p["mean"] for p in ps])
        sd = np.array([p["sd"] or 0.0 for p in ps])
        c = f"C{i}"
        a1.fill_between(n, [p["min"] for p in ps], [p["max"] for p in ps], color=c, alpha=0.15, lw=0)
        a1.errorbar(n, m, yerr=sd, color=c, marker="o", capsize=3, label=s)
        rec = (d.get("recommendations") or {}).get(s)
        if rec:
            a1.plot([rec["size"]], [rec["mean"]], marker="*", ms=14, color=c, mec="k", zorder=5)
        for key, style in (("low_ef_mean", "-"), ("rest_mean", "--")):
            y = [p[key] for p in ps]
            if any(v is not None for v in y):
                a2.plot(n, [np.nan if v is None else v for v in y], style, color=c, marker="o",
                        label=f"{s} ({'low EF' if key == 'low_ef_mean' else 'rest'})")
    st = d["settings"]
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(st["sizes"], [str(x) for x in st["sizes"]])
        ax.set_xlabel("calibration clips N")
        ax.grid(alpha=0.3)
    a1.set_ylabel("mean |ΔEF| vs fp32 (EF points)")
    a1.set_title(f"{st['draws']} disjoint draws per N: mean ± sd, band min–max, ★ recommended",
                 fontsize=9)
    a1.legend(fontsize=8)
    a2.set_ylabel("mean |ΔEF| (EF points)")
    v = d["videos"]
    a2.set_title(f"low-EF hearts ({st['low_ef_by']} EF < {st['low_ef']:g}, n={v['n_low_ef']}) "
                 f"vs the rest (n={len(v['names']) - v['n_low_ef']})", fontsize=9)
    a2.legend(fontsize=7)
    fig.suptitle(f"{d['label']}: {len(v['names'])} {v['split']} videos x {v['clips_per_video']} clips",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def stability_table(result: StabilityResult | dict[str, Any]) -> str:
    """Markdown table: one row per (strategy, N) with the spread over draws and the low-EF split."""
    d = result.to_dict() if isinstance(result, StabilityResult) else result
    recs = d.get("recommendations") or {}
    lines = ["| strategy | N | draws | mean \\|ΔEF\\| | sd | min | max | low-EF mean | rest mean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in d["points"]:
        star = " ★" if recs.get(p["strategy"], {}).get("size") == p["size"] else ""
        lines.append(f"| {p['strategy']} | {p['size']}{star} | {p['draws']} | {_f(p['mean'])} | "
                     f"{_f(p['sd'])} | {_f(p['min'])} | {_f(p['max'])} | {_f(p['low_ef_mean'])} | "
                     f"{_f(p['rest_mean'])} |")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_DRAWS", "DEFAULT_MAX_CLIPS_PER_VIDEO", "DEFAULT_SIZES", "DEFAULT_STRATEGIES", "LABEL",
    "LOW_EF", "StabilityResult", "calibration_stability", "evaluation_videos", "plot_stability",
    "stability_table",
]
