"""EF metrics in clinical units, shared by `evaluate` and artefact validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# EF bands used clinically: reduced (<40), mildly reduced (40-49), preserved (>=50).
EF_BANDS = ("<40", "40-49", ">=50")
BAND_EDGES = (40.0, 50.0)


def ef_band(ef: np.ndarray) -> np.ndarray:
    """Band index 0/1/2 for EF values in %."""
    ef = np.asarray(ef, dtype=np.float64)
    return np.where(ef < BAND_EDGES[0], 0, np.where(ef < BAND_EDGES[1], 1, 2))


def band_confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """3x3 counts, rows = truth band, columns = predicted band."""
    m = np.zeros((3, 3), dtype=np.int64)
    np.add.at(m, (ef_band(truth), ef_band(pred)), 1)
    return m


@dataclass
class EFMetrics:
    n: int
    mae: float
    rmse: float
    r2: float
    bias: float  # mean(pred - truth)
    band_agreement: float  # fraction of videos whose EF band matches
    band_confusion: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)


def ef_metrics(truth: np.ndarray, pred: np.ndarray) -> EFMetrics:
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if truth.shape != pred.shape or truth.ndim != 1 or truth.size == 0:
        raise ValueError(f"need two equal non-empty 1-D arrays, got {truth.shape} and {pred.shape}")
    err = pred - truth
    ss_res = float((err**2).sum())
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    conf = band_confusion(truth, pred)
    return EFMetrics(
        n=int(truth.size),
        mae=float(np.abs(err).mean()),
        rmse=float(np.sqrt((err**2).mean())),
        r2=float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan"),
        bias=float(err.mean()),
        band_agreement=float(np.trace(conf) / truth.size),
        band_confusion=conf.tolist(),
    )
