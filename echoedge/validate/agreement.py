"""Agreement of an artefact's per-video EF with the fp32 reference, in clinical units.

What conversion costs is measured against the reference, not the truth: |ΔEF| (mean, p95, max),
Bland-Altman bias and 95 % limits of agreement with bootstrap confidence intervals, and whether
the EF band (<40, 40-49, >=50) a clinician would read is the same. All numbers are EF points or
fractions; everything is deterministic for a given seed.

Band flips are listed one by one (reference EF, artefact EF), so that the gate can tell a flip of
a reference EF lying a hair from a band edge (50.2 read as 49.8: inside the drift the mean gate
allows) from one that moves a clearly-placed EF across an edge, without re-running anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from echoedge.model.metrics import BAND_EDGES, band_confusion, ef_band

# 1.96 SD: the conventional 95 % limits of agreement (Bland & Altman 1986).
LOA_Z = 1.96


@dataclass
class Interval:
    low: float
    high: float


@dataclass
class BlandAltman:
    """Differences are test - reference. CIs are bootstrap percentile intervals (95 %)."""

    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    bias_ci: Interval
    loa_low_ci: Interval
    loa_high_ci: Interval
    bootstrap: int
    seed: int


@dataclass
class DeltaStats:
    """|test - reference| over videos."""

    mean_abs: float
    p95_abs: float
    max_abs: float


@dataclass
class Agreement:
    ef: DeltaStats
    bland_altman: BlandAltman
    band_agreement: float  # fraction of videos whose EF band equals the reference's
    band_confusion: list[list[int]]  # rows reference band, columns artefact band
    worst: list[dict[str, Any]] = field(default_factory=list)
    band_flips: list[dict[str, Any]] = field(default_factory=list)  # see band_flips()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def delta_stats(reference: np.ndarray, test: np.ndarray) -> DeltaStats:
    ref, tst = _pair(reference, test)
    d = np.abs(tst - ref)
    return DeltaStats(mean_abs=float(d.mean()), p95_abs=float(np.percentile(d, 95)),
                      max_abs=float(d.max()))


def _limits(diff: np.ndarray) -> tuple[float, float, float, float]:
    bias = float(diff.mean())
    # Sample SD (ddof=1) as Bland-Altman define it; one video has no spread to speak of.
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd


def bland_altman(reference: np.ndarray, test: np.ndarray, bootstrap: int = 1000,
                 seed: int = 0) -> BlandAltman:
    """Bias and 95 % limits of agreement of test vs reference, with bootstrap 95 % CIs.

    The bootstrap resamples videos (paired differences) with replacement `bootstrap` times from a
    generator seeded with `seed`, so the same inputs always give the same intervals.
    """
    ref, tst = _pair(reference, test)
    diff = tst - ref
    bias, sd, lo, hi = _limits(diff)
    if bootstrap > 0 and diff.size > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, diff.size, size=(bootstrap, diff.size))
        samples = diff[idx]
        b_bias = samples.mean(axis=1)
        b_sd = samples.std(axis=1, ddof=1)
        ci = lambda v: Interval(float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))  # noqa: E731
        bias_ci, lo_ci, hi_ci = ci(b_bias), ci(b_bias - LOA_Z * b_sd), ci(b_bias + LOA_Z * b_sd)
    else:
        bias_ci, lo_ci, hi_ci = Interval(bias, bias), Interval(lo, lo), Interval(hi, hi)
    return BlandAltman(n=int(diff.size), bias=bias, sd=sd, loa_low=lo, loa_high=hi, bias_ci=bias_ci,
                       loa_low_ci=lo_ci, loa_high_ci=hi_ci, bootstrap=int(bootstrap), seed=int(seed))


def band_agreement(reference: np.ndarray, test: np.ndarray) -> tuple[float, list[list[int]]]:
    """Fraction of equal EF bands and the 3x3 confusion (rows reference, columns test)."""
    ref, tst = _pair(reference, test)
    conf = band_confusion(ref, tst)
    return float(np.trace(conf) / ref.size), conf.tolist()


def band_flips(names: Sequence[str], reference: np.ndarray, test: np.ndarray) -> list[dict[str, Any]]:
    """Every video whose EF band differs from the reference's, with both EFs, in input order."""
    ref, tst = _pair(reference, test)
    moved = np.flatnonzero(ef_band(ref) != ef_band(tst))
    return [{"file_name": str(names[i]), "ef_reference": float(ref[i]), "ef": float(tst[i])} for i in moved]


def edge_distance(ef_reference: float, ef: float) -> float:
    """How far the reference EF would have to move to reach the artefact's band (EF points): its
    distance to the farthest band edge the pair straddles, 0 when both lie in one band."""
    lo, hi = sorted((ef_reference, ef))
    return max((abs(ef_reference - e) for e in BAND_EDGES if lo < e <= hi), default=0.0)


def band_agreement_beyond(n: int, flips: Sequence[dict[str, Any]], margin: float) -> float:
    """Band agreement that counts only flips whose reference EF lies more than `margin` EF points
    from the artefact's band (edge_distance); margin 0 counts every flip (the strict figure)."""
    if n <= 0:
        raise ValueError(f"need at least one video, got n={n}")
    counted = sum(edge_distance(f["ef_reference"], f["ef"]) > margin for f in flips)
    return 1.0 - counted / n


def worst_videos(names: Sequence[str], truth: np.ndarray, reference: np.ndarray, test: np.ndarray,
                 n: int = 5) -> list[dict[str, Any]]:
    """The n videos with the largest |ΔEF| vs the reference, largest first (ties by name)."""
    ref, tst = _pair(reference, test)
    delta = tst - ref
    order = sorted(range(len(names)), key=lambda i: (-abs(delta[i]), names[i]))[:n]
    return [{"file_name": names[i], "ef_true": float(truth[i]), "ef_reference": float(ref[i]),
             "ef": float(tst[i]), "delta_ef": float(delta[i])} for i in order]


def agreement(names: Sequence[str], truth: Sequence[float], reference: Sequence[float],
              test: Sequence[float], bootstrap: int = 1000, seed: int = 0, worst_n: int = 5) -> Agreement:
    ref, tst = _pair(reference, test)
    agree, conf = band_agreement(ref, tst)
    return Agreement(ef=delta_stats(ref, tst), bland_altman=bland_altman(ref, tst, bootstrap, seed),
                     band_agreement=agree, band_confusion=conf,
                     worst=worst_videos(list(names), np.asarray(truth, dtype=np.float64), ref, tst, worst_n),
                     band_flips=band_flips(list(names), ref, tst))


def other_output_deltas(test: Sequence[Any], ref: Sequence[Any], spec: Any) -> dict[str, Any]:
    """EDV, ESV (mean |delta|, mL) and landmark (mean distance, px) agreement of per-video
    predictions with the reference's; None for what the model does not produce (an EF-only
    video ResNet) and, for landmarks, where no traced frame was seen."""
    def mean_abs(name: str) -> float | None:
        t, r = [getattr(p, name) for p in test], [getattr(p, name) for p in ref]
        if any(v is None for v in [*t, *r]):
            return None
        return float(np.mean([abs(a - b) for a, b in zip(t, r)]))

    scale = np.array([spec.width, spec.height], dtype=np.float64)
    d = []
    for t, r in zip(test, ref):
        for a, b in ((t.ed_landmarks, r.ed_landmarks), (t.es_landmarks, r.es_landmarks)):
            if a is not None and b is not None:
                d.append(np.linalg.norm((np.asarray(a) - np.asarray(b)) * scale, axis=-1).mean())
    return {"edv_mean_abs": mean_abs("edv"), "esv_mean_abs": mean_abs("esv"),
            "landmark_delta_px": float(np.mean(d)) if d else None}


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal non-empty 1-D arrays, got {a.shape} and {b.shape}")
    return a, b
