"""The acquisition-diverse calibration strategy: videos spread over the recorded probe settings."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from echoedge.calibration import build_calibration_set
from echoedge.calibration.strategies import farthest_points, plan_draws
from echoedge.data.acquisition import NEUTRAL, read_acquisition
from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet import EchoNet, VideoRecord
from echoedge.errors import EchoEdgeError

SPEC = ClipSpec(frames=16, period=2, height=64, width=64, mean=40.0, std=45.0)


def _record(name: str) -> VideoRecord:
    return VideoRecord(file_name=name, path=Path(f"{name}.avi"), ef=55.0, esv=math.nan, edv=math.nan,
                       fps=50.0, num_frames=120, split="TRAIN", ed_frame=None, es_frame=None,
                       ed_tracing=None, es_tracing=None)


def test_farthest_points_reach_the_outlier_first_and_never_repeat() -> None:
    x = np.r_[np.linspace(0.0, 1.0, 10), 10.0][:, None]  # a crowd and one outlier
    for seed in range(5):
        picks = farthest_points(x, 2, np.random.default_rng(seed))
        assert 10 in picks and len(set(picks)) == 2
    picks = farthest_points(x, 3, np.random.default_rng(0))
    same = farthest_points(np.zeros((5, 3)), 5, np.random.default_rng(1))
    assert sorted(same) == [0, 1, 2, 3, 4]  # identical settings: every video once, no repeat
    assert farthest_points(x, 3, np.random.default_rng(0)) == picks


def test_plan_picks_the_extreme_acquisitions_a_random_draw_misses() -> None:
    records = [_record(f"V{i:03d}") for i in range(60)]
    blur = np.r_[np.zeros(56), [0.8, 0.8, 0.9, 1.0]]  # four blurred videos among 60
    gain = np.r_[np.zeros(30), -6.0 * np.ones(30)]
    acq = {r.file_name: dataclasses.replace(NEUTRAL, lateral_blur_deg=float(b), gain_db=float(g))
           for r, b, g in zip(records, blur, gain)}
    plan = plan_draws("acquisition-diverse", records, SPEC, 6, seed=0, acquisition=acq)
    names = [d.record.file_name for d in plan.draws]
    assert len(names) == 6 and len(set(names)) == 6
    picked = [acq[n] for n in names]
    assert max(s.lateral_blur_deg for s in picked) == 1.0
    assert {s.gain_db for s in picked} == {0.0, -6.0}
    assert plan_draws("acquisition-diverse", records, SPEC, 6, seed=0, acquisition=acq).draws == plan.draws
    assert any("farthest-point" in n for n in plan.notes)


def test_videos_without_a_row_are_skipped_and_counted() -> None:
    records = [_record(f"V{i}") for i in range(5)]
    acq = {r.file_name: NEUTRAL for r in records[:3]}
    plan = plan_draws("acquisition-diverse", records, SPEC, 4, seed=0, acquisition=acq)
    assert {d.record.file_name for d in plan.draws} <= set(acq)
    assert plan.skipped == {"no row in Acquisition.csv": 2}


def test_a_folder_without_acquisition_csv_gets_one_clear_error(synth_root: Path, tmp_path: Path) -> None:
    import shutil

    real = tmp_path / "echonet"  # an EchoNet download: no Acquisition.csv
    shutil.copytree(synth_root, real)
    (real / "Acquisition.csv").unlink()
    with pytest.raises(EchoEdgeError, match="needs the dataset's Acquisition.csv"):
        build_calibration_set(real, SPEC, "acquisition-diverse", size=8, seed=0,
                              cache_dir=tmp_path / "frames", progress=False)
    # The other strategies never read it: a folder without one calibrates as before.
    assert len(build_calibration_set(real, SPEC, "random", size=8, seed=0,
                                     cache_dir=tmp_path / "frames", progress=False)) == 8


def test_build_reads_acquisition_csv_of_the_dataset(synth_root: Path, tmp_path: Path) -> None:
    assert read_acquisition(synth_root) is not None
    cs = build_calibration_set(synth_root, SPEC, "acquisition-diverse", size=8, seed=0,
                               cache_dir=tmp_path, progress=False)
    assert len(cs) == 8 and cs.manifest["strategy"] == "acquisition-diverse"
    assert any("farthest-point" in n for n in cs.manifest["notes"])
