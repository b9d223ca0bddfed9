"""Calibration stability and size: how much the int8 EF error depends on *which* clips calibrate.

Three questions, answered in EF points on held-out videos, through the PT2E simulation of the
ExecuTorch int8 recipe (`simulate`; measured within 0.01 mean |dEF| of the real .pte):

- **Stability.** K disjoint draws of one strategy: the TRAIN (or VAL) videos are split into K
  groups that share no video, stratified by EF band and by whether a video can give a phase-aware
  clip, so every group looks like the split; draw d plans its set from group d alone, with the
  strategy's own planner (`echoedge.calibration.strategies.plan_draws`) and seed `seed + d`. The
  spread of |dEF| over the K draws (mean, sd, min, max) is what an unlucky draw can cost.
- **Size.** The same K draws at each N of a list: the calibration-size curve per strategy. N is
  capped by what a draw's group offers: at most `max_clips_per_video` clips per usable video (a
  video gives distinct starts; past that a set repeats hearts rather than adding them). Sizes over
  the cap are skipped and the result says so.
- **Low EF.** Every figure also separately on low-EF hearts (reference EF < 40 by default: the
  hearts whose clinical band a few EF points can change) and on the rest.

Recommended N (`recommend`): per strategy, the smallest N whose mean |dEF| (over the draws) is
within `tolerance` EF points of that strategy's best N and whose sd over the draws is at most
`max_sd`; when no N is that stable, the N with the smallest mean + sd (flagged `rule_met=False`).
Overall: the strategy whose recommended point has the smallest mean + sd.

Cost. Activation observers of the recipe are min/max (MinMaxObserver, per tensor; weights
PerChannelMinMaxObserver), and during calibration an observer only records, so the ranges after
calibrating on a set S are exactly the element-wise min/max over S of each clip's own ranges.
`RangeCache` therefore runs each distinct clip through one prepared model once, keeps its
per-observer (min, max), and builds the converted model of any set from those: calibration costs
one forward per distinct clip however many (strategy, N, draw) sets share it. This equals
calibrating directly (tested bit for bit against `simulate_int8`); with any other observer kind
the cache declines and every set is calibrated from scratch. Evaluating a converted model (the
q/dq graph, several times slower than float) dominates the cost: models x videos x clips.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

LABEL = "PT2E simulation of the ExecuTorch int8 recipe"
DEFAULT_STRATEGIES = ("random", "ef-stratified", "phase-aware")
DEFAULT_SIZES = (8, 16, 32, 64, 128)
DEFAULT_DRAWS = 3
DEFAULT_MAX_CLIPS_PER_VIDEO = 2
LOW_EF = 40.0
TOLERANCE = 0.05  # EF points: "as good as the best N" (about the run-to-run noise of a draw)
MAX_SD = 0.05  # EF points: sd over draws a recommended N may show
MIN_GROUP_VIDEOS = 3  # as echoedge.calibration.MIN_VIDEOS: fewer hearts describe a patient

ClipKey = tuple[str, int]  # (video file name, clip start)


# ---------------------------------------------------------------------------------------------
# Disjoint draws


def _phase_ok(rec: Any, spec: Any) -> bool:
    from echoedge.calibration.strategies import phase_window

    return phase_window(rec, spec) is not None


def usable_videos(strategy: str, records: Sequence[Any], spec: Any) -> int:
    """How many of `records` the strategy can draw from (phase-aware needs ED and ES in one clip)."""
    from echoedge.calibration.strategies import check_strategy

    if check_strategy(strategy) == "phase-aware":
        return sum(_phase_ok(r, spec) for r in records)
    return len(records)


def partition_videos(records: Sequence[Any], k: int, seed: int, spec: Any) -> list[list[Any]]:
    """Split videos into k groups that share none, each with the split's mix of EF bands.

    Strata are (EF band, can give a phase-aware clip); each stratum is shuffled and dealt round
    robin, the dealing continuing from stratum to stratum so group sizes differ by at most one.
    """
    from echoedge.calibration.strategies import EF_BANDS, ef_band

    if k < 1:
        raise EchoEdgeError(f"calibration draws must be >= 1, got {k}")
    rng = np.random.default_rng(int(seed))
    strata: dict[tuple[str, bool], list[Any]] = {}
    for r in sorted(records, key=lambda r: r.file_name):  # input order must not matter
        strata.setdefault((ef_band(r.ef), _phase_ok(r, spec)), []).append(r)
    groups: list[list[Any]] = [[] for _ in range(k)]
    turn = 0
    for key in sorted(strata, key=lambda s: (EF_BANDS.index(s[0]), s[1])):
        members = strata[key]
        for i in rng.permutation(len(members)):
            groups[turn % k].append(members[int(i)])
            turn += 1
    return groups


def draw_seed(seed: int, draw: int) -> int:
    return int(seed) + int(draw)


def disjoint_plans(strategy: str, records: Sequence[Any], spec: Any, size: int, draws: int,
                   seed: int = 0, split: str = "TRAIN",
                   groups: list[list[Any]] | None = None) -> list[Any]:
    """K plans (echoedge.calibration.strategies.Plan) of one strategy that share no video.

    Plan d is the strategy's ordinary plan of `size` clips over group d of `partition_videos`
    with seed `seed + d`: the set `echo-edge calibrate` would draw from those videos.
    """
    from echoedge.calibration.strategies import check_strategy, plan_draws

    strategy = check_strategy(strategy)
    groups = groups if groups is not None else partition_videos(records, draws, seed, spec)
    plans = []
    for d, group in enumerate(groups):
        usable = usable_videos(strategy, group, spec)
        if usable < MIN_GROUP_VIDEOS:
            raise EchoEdgeError(f"{draws} disjoint {strategy} draws need at least {MIN_GROUP_VIDEOS} "
                                f"usable {split} videos each; draw {d} has {usable} of {len(group)} "
                                f"({len(records)} {split} videos in all): use fewer draws")
        plans.append(plan_draws(strategy, group, spec, size, draw_seed(seed, d), split=split,
                                min_videos=MIN_GROUP_VIDEOS))
    return plans


def size_cap(strategy: str, groups: list[list[Any]], spec: Any, max_clips_per_video: int) -> int:
    """Largest N every draw group can give with at most `max_clips_per_video` clips per video."""
    return min(usable_videos(strategy, g, spec) for g in groups) * int(max_clips_per_video)


# ---------------------------------------------------------------------------------------------
# Per-clip ranges: calibration once per distinct clip


class RangeCache:
    """Per-clip observer ranges of one prepared PT2E model; converts any clip set from them.

    Exact for min/max observers only (see the module docstring): `exact` is False otherwise and
    `convert` then refuses, so the caller calibrates from scratch instead.
    """

    def __init__(self, prepared: Any) -> None:
        from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver

        self.prepared = prepared
        self.observers: list[tuple[str, Any]] = []
        self.exact = True
        self.inexact_kind: str | None = None
        for name, m in prepared.named_modules():
            if not hasattr(m, "calculate_qparams"):
                continue
            # Exact types: a subclass (e.g. a moving average) may update differently.
            if type(m) not in (MinMaxObserver, PerChannelMinMaxObserver):
                self.exact, self.inexact_kind = False, type(m).__name__
            self.observers.append((name, m))
        self.ranges: dict[ClipKey, list[tuple[Any, Any]]] = {}
        self.forward_s = 0.0

    def __contains__(self, key: ClipKey) -> bool:
        return key in self.ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def add(self, key: ClipKey, clip: np.ndarray) -> None:
        """Run one clip (C, T, H, W) through the prepared model; keep every observer's range."""
        import torch

        if key in self.ranges or not self.exact:
            return
        for _, m in self.observers:
            m.reset_min_max_vals()
        t0 = time.perf_counter()
        with torch.no_grad():
            self.prepared(torch.from_numpy(np.ascontiguousarray(clip[None], dtype=np.float32)))
        self.forward_s += time.perf_counter() - t0
        self.ranges[key] = [(m.min_val.detach().clone(), m.max_val.detach().clone())
                            for _, m in self.observers]

    def convert(self, keys: Sequence[ClipKey]) -> Any:
        """The converted (q/dq) model calibrated on exactly these clips."""
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        if not self.exact:
            raise EchoEdgeError(f"per-clip ranges are not exact for {self.inexact_kind} observers")
        missing = [k for k in keys if k not in self.ranges]
        if missing or not keys:
            raise EchoEdgeError(f"range cache: {len(missing)} of {len(keys)} clips not observed")
        model = copy.deepcopy(self.prepared)
        observers = dict(model.named_modules())
        for i, (name, _) in enumerate(self.observers):
            lo = torch.stack([self.ranges[k][i][0] for k in keys]).amin(dim=0)
            hi = torch.stack([self.ranges[k][i][1] for k in keys]).amax(dim=0)
            m = observers[name]
            m.min_val.resize_(lo.shape).copy_(lo)
            m.max_val.resize_(hi.shape).copy_(hi)
        return convert_pt2e(model)


def prepare_recipe(deploy: Any, example: np.ndarray) -> Any:
    """The deploy form exported at batch 1 with the recipe's observers inserted (uncalibrated).

    The same steps as `simulate.simulate_int8` before its calibration loop.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from echoedge.convert.executorch import quantizer_for

    deploy.eval()
    x = (torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)),)
    with torch.no_grad():
        ep = torch.export.export(deploy, x)
        quantizer, _ = quantizer_for(deploy)
        return prepare_pt2e(ep.module(), quantizer)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class DrawResult:
    """One calibration set (strategy, N, draw) and the EF error it gave on the videos."""

    strategy: str
    size: int
    draw: int
    seed: int
    videos: int  # distinct calibration videos
    clips: list[list[Any]]  # [[video, start], ...] in plan order
    mean_abs: float
    max_abs: float
    low_ef_mean_abs: float | None
    rest_mean_abs: float | None
    delta_ef: list[float]  # signed, per evaluation video, simulated - reference


@dataclass
class SizePoint:
    """The K draws of one strategy at one N."""

    strategy: str
    size: int
    draws: int
    mean: float
    sd: float | None  # sample sd over draws (None with one draw)
    min: float
    max: float
    low_ef_mean: float | None
    low_ef_sd: float | None
    rest_mean: float | None
    rest_sd: float | None


@dataclass
class Recommendation:
    strategy: str
    size: int
    mean: float
    sd: float | None
    rule_met: bool
    reason: str


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


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def summarise_draws(results: Sequence[DrawResult]) -> SizePoint:
    """Mean, sd, min and max of mean |dEF| over the draws of one (strategy, N)."""
    r0 = results[0]
    m = np.array([r.mean_abs for r in results])
    low, low_sd = _mean_sd([r.low_ef_mean_abs for r in results])
    rest, rest_sd = _mean_sd([r.rest_mean_abs for r in results])
    return SizePoint(r0.strategy, r0.size, len(results), float(m.mean()),
                     float(m.std(ddof=1)) if len(m) > 1 else None, float(m.min()), float(m.max()),
                     low, low_sd, rest, rest_sd)


def recommend(points: Sequence[SizePoint], tolerance: float = TOLERANCE,
              max_sd: float = MAX_SD) -> Recommendation:
    """The smallest N within `tolerance` of the best mean whose sd over draws is <= `max_sd`.

    Points must be of one strategy. When no N within tolerance is that stable (or there is one
    draw, so no sd), the N with the smallest mean + sd (sd 0 when unknown), rule_met False.
    """
    pts = sorted(points, key=lambda p: p.size)
    if not pts:
        raise EchoEdgeError("no calibration sizes to recommend from")
    if len({p.strategy for p in pts}) != 1:
        raise ValueError("recommend() takes the points of one strategy")
    best = min(p.mean for p in pts)
    for p in pts:
        if p.mean <= best + tolerance and p.sd is not None and p.sd <= max_sd:
            return Recommendation(p.strategy, p.size, p.mean, p.sd, True,
                                  f"smallest N with mean |dEF| within {tolerance:g} of the best "
                                  f"({best:.3f}) and sd over draws <= {max_sd:g}")
    fallback = min(pts, key=lambda p: (p.mean + (p.sd or 0.0), p.size))
    why = ("one draw per N: no spread to judge" if all(p.sd is None for p in pts) else
           f"no N within {tolerance:g} of the best ({best:.3f}) has sd over draws <= {max_sd:g}")
    return Recommendation(fallback.strategy, fallback.size, fallback.mean, fallback.sd, False,
                          f"{why}; chose the smallest mean + sd")


def recommend_overall(recs: dict[str, Recommendation]) -> Recommendation | None:
    if not recs:
        return None
    return min(recs.values(), key=lambda r: (not r.rule_met, r.mean + (r.sd or 0.0), r.size))


# ---------------------------------------------------------------------------------------------
# Evaluation videos


def evaluation_videos(data: str | Path, spec: Any, split: str = "TEST", videos: int | None = 16,
                      clips_per_video: int = 1, add_low_ef: bool = True, low_ef: float = LOW_EF,
                      cache_dir: Path | None = None) -> Any:
    """The first `videos` videos of `split`, plus (add_low_ef) every other one with true EF < low_ef.

    Low-EF hearts are about 1 in 10, so the first N videos alone hold too few to compare
    strategies on them; the added ones are listed in the result.
    """
    from echoedge.quantdebug.simulate import VideoSet, load_videos

    allv = load_videos(data, spec, split, None, clips_per_video, cache_dir)
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
) -> StabilityResult:
    """K disjoint draws x N sizes x strategies through the simulation; spread, curve, recommendation.

    `deploy` is the deploy form (fp32, eval mode); `videos` a `simulate.VideoSet` (held-out);
    `reference_ef` its fp32 per-video EF when already computed (saves one pass).
    """
    from rich.progress import Progress

    from echoedge.calibration.calibset import check_split, extract_clips
    from echoedge.calibration.strategies import check_strategy
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
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
    reader = EchoNet(Path(data))
    records = reader.records(split)
    frames = FrameCache(reader, cache_dir)
    groups = partition_videos(records, draws, seed, spec)
    notes: list[str] = []
    cost: dict[str, Any] = {}

    # Plans first (cheap, metadata only): a bad size or too few videos fails before any compute.
    plans: dict[tuple[str, int], list[Any]] = {}
    for s in strategies:
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
            plans[(s, n)] = disjoint_plans(s, records, spec, n, draws, seed, split, groups)

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
    "DEFAULT_DRAWS", "DEFAULT_SIZES", "DEFAULT_STRATEGIES", "LABEL", "DrawResult", "RangeCache",
    "Recommendation", "SizePoint", "StabilityResult", "calibration_stability", "disjoint_plans",
    "evaluation_videos", "partition_videos", "plot_stability", "prepare_recipe", "recommend",
    "recommend_overall", "size_cap", "stability_table", "summarise_draws", "usable_videos",
]
