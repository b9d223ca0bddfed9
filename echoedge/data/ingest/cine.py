"""The plain data a reader hands to the importer, and the one error for an input it cannot use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoedge.errors import DataError


class UnusableInput(DataError):
    """An input the importer skips: one line naming the file and why (single-frame, not
    ultrasound, no decoder for its transfer syntax, Doppler/M-mode only, cine too short...)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class Cine:
    """A decoded cine at its source size, before any crop.

    frames: uint8, (T, H, W, 3) RGB or (T, H, W) grey, as decoded.
    fps: frames per second, from the container or the DICOM timing tags.
    fps_source: where fps came from ("container", "FrameTime", "FrameTimeVector", "CineRate",
        "RecommendedDisplayFrameRate", or "--fps" when the user gave it).
    region: the ultrasound image's bounding box (x0, y0, x1, y1), exclusive ends, in pixels,
        when the source states it (DICOM Sequence of Ultrasound Regions); None means "find the
        sector in the pixels".
    notes: short facts the import log records (transfer syntax, photometric interpretation...).
    """

    source: Path
    frames: np.ndarray
    fps: float
    fps_source: str
    region: tuple[int, int, int, int] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])
