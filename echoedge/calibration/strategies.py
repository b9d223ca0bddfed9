"""Calibration strategies: which (video, clip start) pairs a calibration set is drawn from.

A strategy only *plans*: it works on FileList metadata (EF, NumberOfFrames, traced frames), so
only the videos it picks are ever decoded, which matters on the real TRAIN split (7,465 videos).
Clip extraction and normalisation happen afterwards, on the one path that training and validation
use (`echoedge.data.clips.extract_clip`).

Every strategy spreads its N clips over its candidate videos the same way: the videos are
shuffled, then taken one clip each, pass after pass, so no video gives two clips before every
candidate has given one, and clip counts per video differ by at most one. A video that gives k
clips gets k distinct starts when it has that many.

random
    Candidates: every video of the split; starts uniform among those whose clip fits.

ef-stratified
    Fixed clinical EF bands <40, 40-49, 50-59, >=60 (%), each given an equal share of N (the
    remainder goes to the lowest-EF bands first, the rarest in echo data). Fixed bands rather
    than K quantile bins: quantile bins hold equal numbers of videos by construction, so an
    equal share per quantile bin reproduces the split's own EF distribution, i.e. the `random`
    strategy, and reduced-EF hearts (about 1 in 10 in EchoNet-Dynamic) stay a rounding error.
    The cut-offs follow the heart-failure classes (reduced <40, mildly reduced 40-49, preserved
    >=50) with the preserved range split at 60 so the common normal hearts are not one lump.
    A band with fewer videos than its share gives more clips per video (the manifest notes it);
    a band with no videos gives its share to the others (noted too).

phase-aware
    Candidates: traced videos having a start whose clip contains both the ED and the ES frame;
    the start is uniform among those starts. Videos without tracings, or whose ED and ES lie
    further apart than one clip spans, are skipped and counted in the manifest.

acquisition-diverse
    Candidates: the videos with a row in the dataset's Acquisition.csv (the probe settings the
    varied generator records). Up to N videos are picked by farthest-point sampling over their
    standardised settings (gain, TGC, dynamic range, speckle, blur, depth, sector, rotation, tilt,
    noise, dropout, shadow, view): each pick is the video whose settings lie furthest from every
    video already picked, so the set reaches the corners of the acquisition space (the blurriest,
    darkest, deepest clips) that random draws from the crowded middle rarely hold, and the int8
    ranges cover the looks a probe can produce. Starts are uniform. A folder without
    Acquisition.csv (a real EchoNet download) gets a clear error: its settings are unknown.
    Measured on e3net_paper_acquisition.pt (issue 21): the extreme clips widen the min/max ranges,
    and the simulated ExecuTorch int8 drift was larger than ef-stratified's, clean and under
    shift; a tool to check that on your data, not the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echoedge.data.clips import last_start
from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet import VideoRecord
from echoedge.errors import EchoEdgeError

STRATEGIES = ("random", "ef-stratified", "phase-aware", "acquisition-diverse")
EF_BAND_EDGES = (40.0, 50.0, 60.0)  # lower edges of the bands after the first, in EF %
EF_BANDS = ("<40", "40-49", "50-59", ">=60")


def ef_band(ef: float) -> str:
    """The EF band label of an EF in percent (a band's lower edge belongs to it)."""
    return EF_BANDS[int(np.searchsorted(EF_BAND_EDGES, float(ef), side="right"))]


@dataclass(frozen=True)
class Draw:
    """One planned clip: a video and the start of its clip."""

    record: VideoRecord
    start: int


@dataclass
class Plan:
    """A strategy's draws plus what the manifest should say about how they were made."""

    draws: list[Draw]
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> videos left out


# A candidate video with the inclusive range of starts a strategy may draw from.
Candidate = tuple[VideoRecord, int, int]


def check_strategy(name: str) -> str:
    """The canonical strategy name; EchoEdgeError listing the strategies for an unknown one."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in STRATEGIES:
        raise EchoEdgeError(f"unknown calibration strategy {name!r} "
                            f"(expected one of: {', '.join(STRATEGIES)})")
    return key


def full_range(rec: VideoRecord, spec: ClipSpec) -> Candidate:
    return rec, 0, last_start(rec.num_frames, spec)


def phase_window(rec: VideoRecord, spec: ClipSpec) -> tuple[int, int] | None:
    """Inclusive (lo, hi) of the starts whose clip contains both traced frames, or None.

    Same rule as the training sampler's traced draw (EchoClipDataset._train_start), but on
    FileList's NumberOfFrames so that planning needs no decoding.
    """
    if not rec.has_tracings or rec.ed_frame is None or rec.es_frame is None:
        return None
    first, last = sorted((rec.ed_frame, rec.es_frame))
    lo = max(0, last - spec.span + 1)
    hi = min(first, last_start(rec.num_frames, spec))
    return (lo, hi) if lo <= hi else None


def _starts(lo: int, hi: int, k: int, rng: np.random.Generator) -> list[int]:
    n = hi - lo + 1
    return [lo + int(i) for i in rng.choice(n, size=k, replace=k > n)]


def spread(candidates: list[Candidate], n: int, rng: np.random.Generator) -> list[Draw]:
    """n draws over the candidates: shuffled passes, one clip per video per pass."""
    if n <= 0:
        return []
    if not candidates:
        raise EchoEdgeError("no candidate videos to draw calibration clips from")
    order = rng.permutation(len(candidates))
    v = len(candidates)
    starts = []
    for pos, ci in enumerate(order):
        rec, lo, hi = candidates[ci]
        k = n // v + (1 if pos < n % v else 0)
        starts.append(_starts(lo, hi, k, rng))
    return [Draw(candidates[order[j % v]][0], starts[j % v][j // v]) for j in range(n)]


def _need_videos(strategy: str, split: str, found: int, min_videos: int, detail: str = "") -> None:
    if found < min_videos:
        raise EchoEdgeError(f"{strategy} calibration needs at least {min_videos} usable {split} "
                            f"videos, found {found}{detail}")


def plan_random(records: list[VideoRecord], spec: ClipSpec, size: int, rng: np.random.Generator,
                split: str = "TRAIN", min_videos: int = 1) -> Plan:
    _need_videos("random", split, len(records), min_videos)
    plan = Plan(spread([full_range(r, spec) for r in records], size, rng))
    _note_repeats(plan, len(records), size, split)
    return plan


def band_quotas(available: dict[str, int], size: int) -> dict[str, int]:
    """Equal shares of `size` over the bands that have videos; the remainder to low EF first."""
    filled = [b for b in EF_BANDS if available.get(b, 0) > 0]
    if not filled:
        return {b: 0 for b in EF_BANDS}
    base, extra = divmod(size, len(filled))
    quotas = {b: 0 for b in EF_BANDS}
    for i, b in enumerate(filled):
        quotas[b] = base + (1 if i < extra else 0)
    return quotas


def plan_ef_stratified(records: list[VideoRecord], spec: ClipSpec, size: int,
                       rng: np.random.Generator, split: str = "TRAIN", min_videos: int = 1) -> Plan:
    _need_videos("ef-stratified", split, len(records), min_videos)
    by_band: dict[str, list[VideoRecord]] = {b: [] for b in EF_BANDS}
    for r in records:
        by_band[ef_band(r.ef)].append(r)
    quotas = band_quotas({b: len(v) for b, v in by_band.items()}, size)
    plan = Plan([])
    for band in EF_BANDS:  # fixed band order, so the rng stream (and the set) is reproducible
        videos, quota = by_band[band], quotas[band]
        if not videos:
            plan.notes.append(f"EF band {band}: no {split} videos; its share went to the other bands")
            continue
        plan.draws += spread([full_range(r, spec) for r in videos], quota, rng)
        if quota > len(videos):
            per = -(-quota // len(videos))
            plan.notes.append(f"EF band {band}: {quota} clips from only {len(videos)} {split} "
                              f"video(s), up to {per} clips per video")
    return plan


def plan_phase_aware(records: list[VideoRecord], spec: ClipSpec, size: int,
                     rng: np.random.Generator, split: str = "TRAIN", min_videos: int = 1) -> Plan:
    candidates: list[Candidate] = []
    skipped = {"no tracings": 0, "ED and ES further apart than one clip": 0}
    for r in records:
        window = phase_window(r, spec)
        if window is not None:
            candidates.append((r, *window))
        elif not r.has_tracings:
            skipped["no tracings"] += 1
        else:
            skipped["ED and ES further apart than one clip"] += 1
    skipped = {k: n for k, n in skipped.items() if n}
    detail = "".join(f"; {n} skipped: {k}" for k, n in skipped.items())
    _need_videos("phase-aware", split, len(candidates), min_videos,
                 f" of {len(records)} with a clip of {spec.span} frames holding both ED and ES{detail}")
    plan = Plan(spread(candidates, size, rng), skipped=skipped)
    for reason, n in skipped.items():
        plan.notes.append(f"{n} {split} video(s) skipped: {reason}")
    _note_repeats(plan, len(candidates), size, split)
    return plan


def _note_repeats(plan: Plan, videos: int, size: int, split: str) -> None:
    if size > videos:
        plan.notes.append(f"{size} clips from {videos} {split} videos: up to "
                          f"{-(-size // videos)} clips per video")


def farthest_points(features: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k row indices by greedy farthest-point sampling (first pick random), in pick order.

    By hand rather than a clustering library: it is ten lines, exact and seeded, and k-means
    centres are not videos.
    """
    n = features.shape[0]
    k = min(int(k), n)
    picked = [int(rng.integers(n))]
    dist = np.linalg.norm(features - features[picked[0]], axis=1)
    dist[picked[0]] = -1.0  # picked: never again, even where every video has the same settings
    while len(picked) < k:
        nxt = int(np.argmax(dist))  # ties: the lowest index, so the pick is deterministic
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
        dist[picked] = -1.0
    return picked


def acquisition_features(settings: list[Any]) -> np.ndarray:
    """(videos, settings) matrix of the numeric acquisition settings, each column standardised
    (a constant column becomes 0, so a setting that never varies does not weigh)."""
    from echoedge.data.acquisition import NUMERIC_NAMES

    x = np.array([[float(getattr(s, n)) for n in NUMERIC_NAMES] for s in settings], dtype=np.float64)
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)


def plan_acquisition_diverse(records: list[VideoRecord], spec: ClipSpec, size: int,
                             rng: np.random.Generator, split: str = "TRAIN", min_videos: int = 1,
                             acquisition: dict[str, Any] | None = None) -> Plan:
    if acquisition is None:
        raise EchoEdgeError("acquisition-diverse calibration needs the dataset's Acquisition.csv "
                            "(the probe settings per video, written by `echo-edge synth --acquisition "
                            "varied`); this dataset has none: use random or ef-stratified")
    known = [r for r in records if r.file_name in acquisition]
    missing = len(records) - len(known)
    _need_videos("acquisition-diverse", split, len(known), min_videos,
                 f" with a row in Acquisition.csv ({missing} without)" if missing else "")
    picks = farthest_points(acquisition_features([acquisition[r.file_name] for r in known]), size, rng)
    chosen = [known[i] for i in picks]
    plan = Plan(spread([full_range(r, spec) for r in chosen], size, rng))
    if missing:
        plan.skipped["no row in Acquisition.csv"] = missing
        plan.notes.append(f"{missing} {split} video(s) skipped: no row in Acquisition.csv")
    plan.notes.append(f"{len(chosen)} of {len(known)} {split} videos picked by farthest-point sampling "
                      "over their standardised acquisition settings")
    _note_repeats(plan, len(chosen), size, split)
    return plan


def acquisition_for(strategy: str, root: Any) -> dict[str, Any] | None:
    """The dataset's Acquisition.csv rows when `strategy` plans on them, else None (not read: a
    malformed file must not stop the strategies that never look at it)."""
    if check_strategy(strategy) != "acquisition-diverse":
        return None
    from echoedge.data.acquisition import read_acquisition

    return read_acquisition(root)


PLANNERS = {"random": plan_random, "ef-stratified": plan_ef_stratified,
            "phase-aware": plan_phase_aware, "acquisition-diverse": plan_acquisition_diverse}


def plan_draws(strategy: str, records: list[VideoRecord], spec: ClipSpec, size: int, seed: int,
               split: str = "TRAIN", min_videos: int = 1,
               acquisition: dict[str, Any] | None = None) -> Plan:
    """The draws of one strategy; the same arguments always give the same plan. `acquisition`
    ({FileName: AcquisitionSettings}, from Acquisition.csv) is read by acquisition-diverse only."""
    rng = np.random.default_rng(int(seed))
    key = check_strategy(strategy)
    extra = {"acquisition": acquisition} if key == "acquisition-diverse" else {}
    return PLANNERS[key](records, spec, int(size), rng, split=split, min_videos=min_videos, **extra)
