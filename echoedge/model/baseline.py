"""The always-mean EF baseline: one EF for every video, and where that EF came from.

A model worth shipping beats it. Its EF is, in order of preference:

1. the training EF mean recorded in the checkpoint (`Checkpoint.train_ef_mean`): the mean of what
   the model was trained on, so a test-only dataset needs no TRAIN split;
2. the TRAIN split mean of the dataset being evaluated, for a checkpoint that records none (one
   written before the mean was recorded, like e3net_paper_synthetic.pt);
3. none: the baseline is n/a, with that reason, never an error.

Reports and the console print `describe()`, so a reader always sees which of the three it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

FROM_CHECKPOINT = "checkpoint"
FROM_TRAIN_SPLIT = "train-split"


@dataclass
class EFBaseline:
    ef: float | None  # the EF (%) predicted for every video; None: no baseline
    source: str | None  # FROM_CHECKPOINT, FROM_TRAIN_SPLIT, or None
    detail: str  # where the EF came from, or why there is none
    videos: int | None = None  # how many videos the mean is over, when known

    def mae(self, truth: Sequence[float]) -> float | None:
        """MAE of always predicting `ef` against `truth`; None without a baseline or videos."""
        t = np.asarray(truth, dtype=np.float64)
        if self.ef is None or t.size == 0:
            return None
        return float(np.abs(t - self.ef).mean())

    def describe(self) -> str:
        """"always 55.6 % (training EF mean, from the checkpoint)" or "n/a (reason)"."""
        if self.ef is None:
            return f"n/a ({self.detail})"
        return f"always {self.ef:.1f} % ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_baseline(checkpoint: Any, reader: Any) -> EFBaseline:
    """The baseline for a `Checkpoint` evaluated on the `EchoNet` dataset `reader`."""
    mean = getattr(checkpoint, "train_ef_mean", None)
    if mean is not None:
        return EFBaseline(float(mean), FROM_CHECKPOINT, "training EF mean, from the checkpoint",
                          getattr(checkpoint, "train_ef_videos", None))
    if reader.split_counts().get("TRAIN"):
        ef = [r.ef for r in reader.records("TRAIN") if math.isfinite(r.ef)]
        return EFBaseline(float(np.mean(ef)), FROM_TRAIN_SPLIT,
                          "TRAIN split mean of this dataset; the checkpoint records no training EF "
                          "mean", len(ef))
    return EFBaseline(None, None, "the checkpoint records no training EF mean and this dataset "
                      "has no TRAIN videos")


__all__ = ["FROM_CHECKPOINT", "FROM_TRAIN_SPLIT", "EFBaseline", "resolve_baseline"]
