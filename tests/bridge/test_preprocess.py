"""The app-side Python reference (echoedge.data.preprocess): it equals the training path where the two
meet, OpenCV's INTER_AREA where it claims to, and its sampling, quantization and post-processing
follow the rules the Java and Swift bridges mirror."""

from __future__ import annotations

import numpy as np
import pytest

from echoedge.data.clips import extract_clip
from echoedge.data.clipspec import ClipSpec
from echoedge.data.preprocess import (
    ClipBuffer, area_resize, dequantize, ef_band_index, offset_us, postprocess, quantize, to_gray,
)
from echoedge.errors import EchoEdgeError, ShapeError
from echoedge.model.metrics import ef_band

SPEC = ClipSpec(frames=8, period=2, height=32, width=32, mean=30.0, std=45.0)


def test_grey_is_the_rounded_channel_mean_training_used_in_any_channel_order():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, size=(400, 500, 3), dtype=np.uint8)
    # echoedge.data.video.read_video: frame.mean(axis=2).round()
    want = px.mean(axis=2).round().astype(np.uint8)
    assert np.array_equal(to_gray(px), want)
    assert np.array_equal(to_gray(px[:, :, ::-1]), want)  # BGR
    rgba = np.concatenate([px, rng.integers(0, 256, size=(400, 500, 1), dtype=np.uint8)], axis=2)
    assert np.array_equal(to_gray(rgba), want)  # alpha ignored
    with pytest.raises(ShapeError):
        to_gray(px.astype(np.float32))


@pytest.mark.parametrize("src", [(144, 192), (130, 150), (480, 640), (224, 224), (33, 47)])
def test_area_resize_is_opencv_inter_area_when_shrinking(src):
    import cv2

    g = np.random.default_rng(1).integers(0, 256, size=src).astype(np.float32)
    ours = area_resize(g, 32, 32)
    ref = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)  # float in, float out: no rounding
    assert np.abs(ours - ref).max() < 1e-3  # OpenCV's weights are float32
    assert np.array_equal(area_resize(g, *src), g)  # same size: identity


def test_area_resize_keeps_the_mean_and_a_constant():
    g = np.random.default_rng(2).integers(0, 256, size=(90, 120)).astype(np.float64)
    out = area_resize(g, 32, 32)
    assert abs(out.mean() - g.mean()) < 1e-9
    assert np.allclose(area_resize(np.full((50, 70), 77.0), 32, 32), 77.0, atol=1e-12)


def _video(n: int, h: int = 32, w: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def test_frame_mode_clip_equals_the_training_clip():
    frames = _video(SPEC.span + 7)
    buf = ClipBuffer(SPEC)
    for f in frames:
        buf.add(f)
    sel = buf.selected()
    assert sel == list(range(7, 7 + SPEC.span, SPEC.period))
    assert np.array_equal(buf.clip(), extract_clip(frames, sel[0], SPEC))


def test_frame_mode_is_ready_only_with_a_full_span():
    buf = ClipBuffer(SPEC)
    for f in _video(SPEC.span - 1):
        buf.add(f)
    assert not buf.ready()
    with pytest.raises(EchoEdgeError, match="not ready"):
        buf.clip()
    buf.add(_video(1)[0])
    assert buf.ready()


def test_time_mode_at_the_model_rate_picks_what_frame_mode_picks():
    frames = _video(SPEC.span + 3)
    a, b = ClipBuffer(SPEC), ClipBuffer(SPEC, model_fps=50.0)
    for k, f in enumerate(frames):
        a.add(f)
        b.add(f, k * 20_000)
    assert a.selected() == b.selected()
    assert np.array_equal(a.clip(), b.clip())


def test_time_mode_takes_the_nearest_frame_on_the_model_grid():
    spec = ClipSpec(frames=4, period=2, height=8, width=8)
    buf = ClipBuffer(spec, model_fps=50.0)  # targets every 40 ms, 120 ms before the newest
    ts = [0, 33_333, 66_667, 100_000, 133_333]  # 30 FPS
    for t in ts:
        buf.add(np.zeros((8, 8), np.uint8), t)
    # targets 13 333, 53 333, 93 333, 133 333 -> nearest 0 (13.3 ms) vs 33 333 (20 ms): 0; then 66 667; 100 000; 133 333
    assert buf.selected() == [0, 2, 3, 4]
    assert offset_us(3, spec, 50.0) == 120_000
    with pytest.raises(EchoEdgeError, match="increase"):
        buf.add(np.zeros((8, 8), np.uint8), 133_333)
    with pytest.raises(EchoEdgeError, match="timestamp"):
        buf.add(np.zeros((8, 8), np.uint8))


def test_time_mode_evicts_frames_no_clip_can_use():
    spec = ClipSpec(frames=4, period=2, height=8, width=8)
    buf = ClipBuffer(spec, model_fps=50.0)
    for k in range(100):
        buf.add(np.full((8, 8), k % 256, np.uint8), k * 10_000)
    assert len(buf._frames) <= 14  # 120 ms of 10 ms frames, plus the one before
    assert buf.selected() == [87, 91, 95, 99]


def test_quantize_rounds_half_away_from_zero_and_clamps():
    x = np.array([0.5, -0.5, 1.5, -1.5, 0.49, 1000.0, -1000.0], dtype=np.float32)
    assert quantize(x, 1.0, 0).tolist() == [1, -1, 2, -2, 0, 127, -128]
    assert quantize(x, 1.0, 10, "uint8").tolist() == [11, 9, 12, 8, 10, 255, 0]
    assert dequantize(np.array([12]), 0.5, 2)[0] == np.float32(5.0)


def test_postprocess_bands_and_pixels():
    for ef in (10.0, 39.999, 40.0, 49.99, 50.0, 80.0):
        assert ef_band_index(np.float32(ef)) == int(ef_band(np.array([np.float32(ef)]))[0])
    lm = np.array([[[0.5, 0.25], [1.0, 0.0]]], dtype=np.float32)
    outs = (np.array([49.5], np.float32), np.array([100.0], np.float32), np.array([50.0], np.float32), lm, lm)
    r = postprocess(outs, frame_height=480, frame_width=640)
    assert (r.band, r.band_label) == (1, "40-49")
    assert r.ed_landmarks_px == [[320.0, 120.0], [640.0, 0.0]]
    with pytest.raises(ShapeError):
        postprocess(outs[:4], 480, 640)
