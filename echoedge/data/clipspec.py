"""ClipSpec: the single description of what the model eats.

It travels inside every checkpoint, artefact manifest and bridge bundle, and every preprocessor
(Python, Java, Swift) is tested against it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from echoedge.errors import EchoEdgeError


@dataclass(frozen=True)
class ClipSpec:
    """A clip is `frames` frames taken every `period` frames, resized to height x width,
    normalised as (pixel - mean) / std on the 0-255 grey scale.

    The model input tensor is (batch, channels, frames, height, width), float32.
    `mean`/`std` default to EchoNet-Dynamic's published per-channel figures; a training run
    replaces them with the statistics of its TRAIN split (see `echoedge.data.clips.compute_mean_std`).
    """

    frames: int = 32
    period: int = 2
    height: int = 112
    width: int = 112
    channels: int = 1
    mean: float = 32.5
    std: float = 50.0

    def __post_init__(self) -> None:
        for name in ("frames", "period", "height", "width", "channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):  # 2.5 frames is no shape
                raise EchoEdgeError(f"ClipSpec.{name} must be an integer, got {v!r}")
            if int(v) < 1:
                raise EchoEdgeError(f"ClipSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise EchoEdgeError(f"ClipSpec.channels must be 1 or 3, got {self.channels}")
        if not self.std > 0 or not math.isfinite(self.std):
            raise EchoEdgeError(f"ClipSpec.std must be a finite number > 0, got {self.std}")
        if not math.isfinite(self.mean):  # NaN would normalise every pixel to NaN
            raise EchoEdgeError(f"ClipSpec.mean must be finite, got {self.mean}")

    @property
    def span(self) -> int:
        """Number of source frames one clip covers, first to last inclusive."""
        return (self.frames - 1) * self.period + 1

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int, int]:
        return (batch, self.channels, self.frames, self.height, self.width)

    def with_normalisation(self, mean: float, std: float) -> "ClipSpec":
        return ClipSpec(**{**asdict(self), "mean": float(mean), "std": float(std)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipSpec":
        names = {f.name for f in fields(cls)}
        missing = names - set(d)
        if missing:
            raise EchoEdgeError(f"ClipSpec is missing fields: {', '.join(sorted(missing))}")
        return cls(**{k: d[k] for k in names})


# EchoNet-Dynamic's own clip protocol (reference/echonet-format.md): 32 frames every 2nd frame,
# 112 x 112, the grey video as three identical channels (the video ResNets are RGB networks),
# normalised by the dataset's per-channel mean and sd (~32.5 and ~50 on every channel).
ECHONET_DYNAMIC_SPEC = ClipSpec(frames=32, period=2, height=112, width=112, channels=3,
                                mean=32.5, std=50.0)
