"""Which dataset and split the int8 calibration clips come from, when a job names only its data.

Calibration never sees the videos an artefact is validated on: they are there to measure what
quantization cost, and ranges fitted on them would flatter it. The evaluated dataset's TRAIN split
is the natural source and VAL the next (unless VAL is the split being validated). A test-only
dataset (a hospital's or vendor's held-out set) has neither; its clips then come from another
dataset: the one the user names (`--calibration-data ROOT`), else the built-in synthetic set's
TRAIN. Every departure from "TRAIN of the evaluated dataset" comes with a `note` that the console
and the report print, because calibrating on other hearts (synthetic ones above all) is a
difference whoever reads the numbers must know about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from echoedge.calibration.calibset import CALIBRATION_SPLITS
from echoedge.errors import DataError


@dataclass
class CalibrationSource:
    root: Path
    split: str  # TRAIN or VAL, never TEST
    note: str | None = None  # why the clips do not come from TRAIN of the evaluated dataset

    def describe(self) -> str:
        return f"{self.split} of {self.root}"


def calibration_source(
    data: Path,
    calibration_data: Path | None = None,
    evaluated_split: str | None = "TEST",
    require_tracings: bool = False,
    default_root: Callable[[], Path] | None = None,
) -> CalibrationSource:
    """Pick the calibration dataset and split for a job that evaluates `evaluated_split` of `data`.

    `calibration_data` overrides `data` as the source (DataError if it has no TRAIN or VAL
    videos); `default_root` gives the fallback dataset (default: the built-in synthetic set).
    """
    data = Path(data)
    if calibration_data is not None:
        root = Path(calibration_data)
        avoid = evaluated_split if _same(root, data) else None
        split = _first_split(root, avoid, require_tracings)
        if split is None:
            raise DataError(f"{root}: no {' or '.join(CALIBRATION_SPLITS)} videos to calibrate on "
                            "(--calibration-data)" + (f" other than the {avoid} videos validated"
                                                       if avoid else ""))
        return CalibrationSource(root, split, None if _same(root, data) and split == "TRAIN" else
                                 f"int8 calibration drew from {split} of {root} (--calibration-data)")
    split = _first_split(data, evaluated_split, require_tracings)
    if split == "TRAIN":
        return CalibrationSource(data, split)
    if split is not None:
        return CalibrationSource(data, split, f"{data} has no TRAIN videos: int8 calibration drew "
                                 f"from its {split} split")
    if default_root is None:
        from echoedge.data.default import default_dataset

        default_root = default_dataset
    root = Path(default_root())
    held = f"{evaluated_split} " if evaluated_split else ""
    return CalibrationSource(root, "TRAIN", (
        f"{data} has no TRAIN or VAL videos: int8 calibration drew from TRAIN of the built-in "
        f"synthetic set ({root}), never from the {held}videos validated; pass --calibration-data "
        "ROOT (a dataset with TRAIN or VAL videos like yours) or --calibration-set for ranges "
        "fitted to your videos"))


def _first_split(root: Path, avoid: str | None, require_tracings: bool) -> str | None:
    from echoedge.data.echonet import EchoNet

    counts = EchoNet(root, require_tracings=require_tracings).split_counts()
    avoid = avoid.upper() if avoid else None
    return next((sp for sp in CALIBRATION_SPLITS if counts.get(sp) and sp != avoid), None)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


__all__ = ["CalibrationSource", "calibration_source"]
