"""Echo calibration sets: the clips an int8 quantizer sees, and a manifest that names them.

Strategies (random, ef-stratified, phase-aware) are documented in `strategies`; building,
saving, verified loading and ids in `calibset`; which dataset and split a job calibrates on when
the evaluated dataset has no TRAIN (a test-only set) in `source`.
"""

from echoedge.calibration.calibset import (
    CALIBRATION_SPLITS,
    CLIPS_FILE,
    DEFAULT_SIZE,
    MANIFEST_FILE,
    MIN_SIZE,
    MIN_VIDEOS,
    CalibrationSet,
    build_calibration_set,
    calibrate,
    describe,
    is_calibration_folder,
    load_calibration_set,
    manifest_id,
    parse_calibration_arg,
    save_calibration_set,
    spec_from_checkpoint,
)
from echoedge.calibration.source import CalibrationSource, calibration_source
from echoedge.calibration.strategies import EF_BAND_EDGES, EF_BANDS, STRATEGIES, ef_band

__all__ = [
    "CALIBRATION_SPLITS", "CLIPS_FILE", "DEFAULT_SIZE", "EF_BANDS", "EF_BAND_EDGES",
    "MANIFEST_FILE", "MIN_SIZE", "MIN_VIDEOS", "STRATEGIES", "CalibrationSet", "CalibrationSource",
    "build_calibration_set", "calibrate", "calibration_source", "describe", "ef_band", "is_calibration_folder", "load_calibration_set",
    "manifest_id", "parse_calibration_arg", "save_calibration_set", "spec_from_checkpoint",
]
