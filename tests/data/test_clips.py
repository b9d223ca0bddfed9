"""Clip sampling, extraction, normalisation, augmentation and dataset statistics."""

from __future__ import annotations

import numpy as np
import pytest

from echoedge.data.clips import (
    clip_contains,
    compute_mean_std,
    eval_starts,
    extract_clip,
    frame_position,
    random_start,
    shift_augment,
    shift_clip,
)
from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet import EchoNet
from tests.data.fixtures import standard_videos, write_dataset

SPEC = ClipSpec(frames=4, period=3, height=8, width=10, channels=1, mean=10.0, std=4.0)


def _ramp(num_frames: int, h: int = 8, w: int = 10) -> np.ndarray:
    """Frame i filled with the value i: a clip's values tell which frames it took."""
    return np.broadcast_to(np.arange(num_frames, dtype=np.uint8)[:, None, None], (num_frames, h, w)).copy()


def test_eval_starts_even_spacing_with_ends():
    assert SPEC.span == 10
    assert eval_starts(30, SPEC, 3) == [0, 10, 20]
    assert eval_starts(30, SPEC, None) == list(range(21))
    assert eval_starts(30, SPEC, 1) == [0]
    assert eval_starts(12, SPEC, 5) == [0, 1, 2]  # only three distinct starts exist


def test_eval_starts_short_video_gives_zero():
    assert eval_starts(7, SPEC, 4) == [0]
    assert eval_starts(7, SPEC, None) == [0]
    assert eval_starts(10, SPEC, None) == [0]  # exactly one clip long
    with pytest.raises(ValueError):
        eval_starts(30, SPEC, 0)


def test_random_start_range_and_determinism():
    starts = [random_start(30, SPEC, np.random.default_rng(i)) for i in range(300)]
    assert min(starts) == 0 and max(starts) == 20
    assert random_start(5, SPEC, np.random.default_rng(0)) == 0
    assert random_start(30, SPEC, np.random.default_rng(7)) == random_start(30, SPEC, np.random.default_rng(7))


def test_extract_clip_period_and_normalisation():
    clip = extract_clip(_ramp(30), 5, SPEC)
    assert clip.dtype == np.float32 and clip.shape == (1, 4, 8, 10)
    expected = (np.array([5, 8, 11, 14], dtype=np.float32) - 10.0) / 4.0
    np.testing.assert_allclose(clip[0, :, 3, 4], expected)
    assert np.all(clip[0] == clip[0, :, :1, :1])  # constant frames stay constant


def test_extract_clip_pads_short_video_with_normalised_zeros():
    clip = extract_clip(_ramp(7), 0, SPEC)  # frames 0, 3, 6 exist; 9 does not
    np.testing.assert_allclose(clip[0, :3, 0, 0], (np.array([0, 3, 6]) - 10.0) / 4.0)
    assert np.all(clip[0, 3] == 0.0)
    real_zero = extract_clip(np.zeros((10, 8, 10), np.uint8), 0, SPEC)
    assert np.all(real_zero == -2.5)  # a black frame is not the padding value


def test_extract_clip_resizes_with_area_and_repeats_channels():
    spec = ClipSpec(frames=2, period=1, height=4, width=4, channels=3, mean=0.0, std=1.0)
    frames = np.zeros((2, 8, 8), np.uint8)
    frames[:, :4, :4] = 200  # top-left quadrant bright
    clip = extract_clip(frames, 0, spec)
    assert clip.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(clip[0], clip[2])
    np.testing.assert_allclose(clip[0, 0, :2, :2], 200.0)  # area average of 2x2 blocks
    np.testing.assert_allclose(clip[0, 0, 2:, :], 0.0)


def test_extract_clip_rejects_bad_start():
    with pytest.raises(ValueError):
        extract_clip(_ramp(30), -1, SPEC)


def test_shift_augment_shape_and_content():
    rng = np.random.default_rng(0)
    clip = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    out = shift_augment(clip, 4, rng)
    assert out.shape == clip.shape and out.dtype == clip.dtype
    shifted = shift_clip(clip, 2, -3)
    np.testing.assert_array_equal(shifted[..., 2:, :13], clip[..., :14, 3:])
    assert np.all(shifted[..., :2, :] == 0) and np.all(shifted[..., :, 13:] == 0)
    assert shift_clip(clip, 0, 0) is clip
    assert np.all(shift_augment(clip, 0, rng) == clip)


def test_shift_augment_covers_symmetric_range():
    from echoedge.data.clips import draw_shift

    rng = np.random.default_rng(3)
    shifts = np.array([draw_shift(2, rng) for _ in range(400)])
    assert shifts.min() == -2 and shifts.max() == 2


def test_clip_contains_and_frame_position():
    assert clip_contains(5, 5, SPEC) and clip_contains(5, 14, SPEC)
    assert not clip_contains(5, 4, SPEC) and not clip_contains(5, 15, SPEC)
    assert frame_position(5, 11, SPEC) == 2.0
    assert frame_position(5, 12, SPEC) == pytest.approx(7 / 3)


def test_compute_mean_std_matches_numpy(tmp_path):
    reader = EchoNet(write_dataset(tmp_path, standard_videos()))
    train = reader.records("TRAIN")
    pixels = np.concatenate([reader.load_frames(r).ravel() for r in train]).astype(np.float64)
    mean, std = compute_mean_std(reader, "TRAIN", max_videos=None)
    assert mean == pytest.approx(pixels.mean(), rel=1e-9)
    assert std == pytest.approx(pixels.std(), rel=1e-6)
    seen = []
    m2, _ = compute_mean_std(reader, "TRAIN", max_videos=2,
                             frames_source=lambda r: (seen.append(r.file_name), reader.load_frames(r))[1])
    assert seen == ["0X0000", "0X0003"]  # evenly spaced, first and last
    assert m2 == compute_mean_std(reader, "TRAIN", max_videos=2)[0]
