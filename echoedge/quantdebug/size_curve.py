"""The calibration-size curve: K draws per (strategy, N) summarised, and the recommended N.

`summarise_draws` turns the K draws of one strategy at one N into a point of the curve (mean, sd,
min and max of mean |dEF| over the draws, and the same on low-EF hearts and on the rest).

Recommended N (`recommend`): per strategy, the smallest N whose mean |dEF| (over the draws) is
within `tolerance` EF points of that strategy's best N and whose sd over the draws is at most
`max_sd`; when no N is that stable, the N with the smallest mean + sd (flagged `rule_met=False`).
Overall (`recommend_overall`): the strategy whose recommended point has the smallest mean + sd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

TOLERANCE = 0.05  # EF points: "as good as the best N" (about the run-to-run noise of a draw)
MAX_SD = 0.05  # EF points: sd over draws a recommended N may show


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


__all__ = ["MAX_SD", "TOLERANCE", "DrawResult", "Recommendation", "SizePoint", "recommend",
           "recommend_overall", "summarise_draws"]
