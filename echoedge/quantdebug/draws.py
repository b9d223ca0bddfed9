"""Disjoint calibration draws: K calibration sets of one strategy that share no video.

The TRAIN (or VAL) videos are split into K groups that share no video, stratified by EF band and
by whether a video can give a phase-aware clip, so every group looks like the split; draw d plans
its set from group d alone, with the strategy's own planner
(`echoedge.calibration.strategies.plan_draws`) and seed `seed + d`. N is capped by what a draw's
group offers (`size_cap`): at most `max_clips_per_video` clips per usable video (a video gives
distinct starts; past that a set repeats hearts rather than adding them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

MIN_GROUP_VIDEOS = 3  # as echoedge.calibration.MIN_VIDEOS: fewer hearts describe a patient


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
                   groups: list[list[Any]] | None = None,
                   acquisition: dict[str, Any] | None = None) -> list[Any]:
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
                                min_videos=MIN_GROUP_VIDEOS, acquisition=acquisition))
    return plans


def size_cap(strategy: str, groups: list[list[Any]], spec: Any, max_clips_per_video: int) -> int:
    """Largest N every draw group can give with at most `max_clips_per_video` clips per video."""
    return min(usable_videos(strategy, g, spec) for g in groups) * int(max_clips_per_video)


__all__ = ["MIN_GROUP_VIDEOS", "disjoint_plans", "draw_seed", "partition_videos", "size_cap",
           "usable_videos"]
