"""Acquisition shifts: deterministic for a seed, and each changes the frames the way its name says."""

from __future__ import annotations

import numpy as np
import pytest

from echoedge.data.shifts import (
    LEVELS, SHIFTS, apply_shift, parse_levels, parse_shifts, resample_time, sampler_view, sector_mask,
    sector_vertex,
)
from echoedge.errors import EchoEdgeError

H = W = 112
VERTEX = (56.0, 0.0)


def fan() -> np.ndarray:
    """A 90 degree sector from the top centre, radius 105 px, as EchoNet frames have."""
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    dx, dy = xs - VERTEX[0], ys - VERTEX[1]
    return (dy > 0) & (np.abs(dx) <= dy) & (np.hypot(dx, dy) <= 105)


def video(t: int = 6, disc: tuple[float, float] = (56.0, 60.0), r: float = 9.0, seed: int = 0) -> np.ndarray:
    """Grey speckle-like texture inside the sector, a bright disc (the 'shape'), black outside."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    base = 60 + 25 * rng.random((t, H, W))
    base[:, np.hypot(xs - disc[0], ys - disc[1]) <= r] = 220
    return (base * fan()[None]).round().astype(np.uint8)


def disc_stats(frames: np.ndarray) -> tuple[float, float, float]:
    """(area, centroid x, centroid y) of the bright pixels of the first frame."""
    ys, xs = np.nonzero(frames[0] > 160)
    return float(len(xs)), float(xs.mean()), float(ys.mean())


def hf_energy(frames: np.ndarray) -> float:
    import cv2

    return float(np.mean([cv2.Laplacian(f.astype(np.float32), cv2.CV_32F).var() for f in frames]))


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_is_deterministic_and_leaves_its_input_alone(name: str):
    v = video()
    before = v.copy()
    a = apply_shift(v, name, "moderate", seed=3, video="a", fps=50.0)
    b = apply_shift(v, name, "moderate", seed=3, video="a", fps=50.0)
    assert np.array_equal(v, before)
    assert a.frames.dtype == np.uint8 and a.frames.shape[1:] == (H, W)
    assert np.array_equal(a.frames, b.frames) and a.fps == b.fps
    assert not np.array_equal(a.frames[: len(v)], v[: len(a.frames)]) or name.startswith("frame-rate")


@pytest.mark.parametrize("name", ["speckle", "noise"])
def test_random_shifts_draw_per_seed_and_video(name: str):
    v = video()
    a = apply_shift(v, name, "moderate", seed=0, video="a").frames
    assert not np.array_equal(a, apply_shift(v, name, "moderate", seed=1, video="a").frames)
    assert not np.array_equal(a, apply_shift(v, name, "moderate", seed=0, video="b").frames)


def strength(name: str, v: float) -> float:
    """Distance from 'no change' on the scale the parameter acts on (JPEG: libjpeg's table scale)."""
    if name.startswith(("gain", "zoom", "frame-rate")) or name == "gamma":
        return abs(v - 1.0)
    if name == "jpeg":
        return 5000.0 / v if v < 50 else 200.0 - 2 * v
    return v


def test_moderate_is_the_issue_table_mild_about_half_severe_more():
    table = {"gain-down": 0.6, "gain-up": 1.6, "gamma": 0.6, "speckle": 0.5, "blur": 1.5,
             "zoom-out": 0.85, "zoom-in": 1.15, "rotation": 10.0}
    for name, v in table.items():
        assert strength(name, SHIFTS[name].moderate) >= strength(name, v) - 1e-9, name
    for s in SHIFTS.values():
        mild, mod, sev = (strength(s.name, s.value(lv)) for lv in LEVELS)
        assert 0.4 <= mild / mod <= 0.6 and sev > 1.3 * mod, s.name


def test_gain_scales_the_mean_and_gamma_lifts_the_darks():
    v = video()
    inside = fan()
    m0 = v[:, inside].mean()
    assert apply_shift(v, "gain-down", "moderate").frames[:, inside].mean() == pytest.approx(0.6 * m0, rel=0.02)
    assert apply_shift(v, "gain-up", "moderate").frames[:, inside].mean() > 1.4 * m0
    g = apply_shift(v, "gamma", "moderate").frames
    assert g[:, inside].mean() > 1.3 * m0 and (g[:, ~inside] == 0).all()


def test_tgc_brightens_the_far_field_and_darkens_the_near_field():
    v = video()
    out = apply_shift(v, "tgc", "moderate").frames.astype(float)
    near, far = slice(5, 30), slice(85, 105)
    inside = fan()
    ratio = lambda rows: out[:, rows][:, inside[rows]].mean() / v[:, rows][:, inside[rows]].mean()  # noqa: E731
    assert ratio(near) < 0.85 and ratio(far) > 1.2


def test_speckle_keeps_the_mean_and_adds_spread_noise_stays_inside_the_sector():
    v = video(t=8)
    inside = fan()
    s = apply_shift(v, "speckle", "moderate").frames.astype(float)
    assert s[:, inside].mean() == pytest.approx(v[:, inside].mean(), rel=0.05)
    assert (s - v)[:, inside].std() > 10
    n = apply_shift(v, "noise", "moderate").frames.astype(float)
    assert (n - v)[:, inside].std() == pytest.approx(12.0, rel=0.15)
    assert (n[:, ~inside] == 0).all()


def test_blur_lowers_high_frequency_energy_more_at_each_level():
    v = video()
    e = [hf_energy(apply_shift(v, "blur", lv).frames) for lv in LEVELS]
    assert e[0] < 0.5 * hf_energy(v) and e[0] > e[1] > e[2]


def test_zoom_changes_the_size_of_a_shape_about_the_vertex():
    v = video()
    area0, x0, y0 = disc_stats(v)
    a_in, x_in, y_in = disc_stats(apply_shift(v, "zoom-in", "moderate").frames)
    a_out, x_out, y_out = disc_stats(apply_shift(v, "zoom-out", "moderate").frames)
    assert a_in == pytest.approx(area0 * 1.15**2, rel=0.12) and a_out == pytest.approx(area0 * 0.85**2, rel=0.12)
    # about the vertex at the top: the disc moves deeper when magnified, shallower when shrunk
    assert y_in == pytest.approx(y0 * 1.15, abs=1.5) and y_out == pytest.approx(y0 * 0.85, abs=1.5)
    assert x_in == pytest.approx(x0, abs=1.0) and x_out == pytest.approx(x0, abs=1.0)


def test_rotation_moves_a_shape_about_the_vertex_and_translation_moves_it_sideways():
    v = video()
    area0, x0, y0 = disc_stats(v)
    area, x, y = disc_stats(apply_shift(v, "rotation", "moderate").frames)
    r0 = np.hypot(x0 - VERTEX[0], y0 - VERTEX[1])
    # counter-clockwise on screen by 10 degrees: the disc below the vertex swings to the right
    assert x - VERTEX[0] == pytest.approx(r0 * np.sin(np.radians(10)), abs=1.0)
    assert np.hypot(x - VERTEX[0], y - VERTEX[1]) == pytest.approx(r0, abs=1.0)
    assert area == pytest.approx(area0, rel=0.1)
    _, xt, yt = disc_stats(apply_shift(v, "translation", "moderate").frames)
    assert xt == pytest.approx(x0 + 8, abs=0.5) and yt == pytest.approx(y0, abs=0.5)


@pytest.mark.parametrize("name", ["zoom-in", "zoom-out", "rotation", "translation", "blur", "tgc"])
def test_geometric_shifts_leave_everything_outside_the_sector_black(name: str):
    v = video()
    out = apply_shift(v, name, "severe").frames
    assert (out[:, ~fan()] == 0).all()


def test_jpeg_adds_blockiness():
    v = video(seed=1)

    def grid_ratio(f: np.ndarray) -> float:
        """Mean jump across the 8x8 block boundaries over the mean jump elsewhere (inside the sector)."""
        d = np.abs(np.diff(f.astype(float), axis=2))[:, 16:96, 24:88]
        edge = (np.arange(24, 88) % 8) == 7  # between columns 8k-1 and 8k
        return d[:, :, edge].mean() / d[:, :, ~edge].mean()

    assert grid_ratio(apply_shift(v, "jpeg", "severe").frames) > 1.5 * grid_ratio(v)


def test_frame_rate_changes_the_count_and_the_fps_the_sampler_sees():
    v = video(t=100)
    s = apply_shift(v, "frame-rate", "moderate", fps=50.0)
    assert len(s.frames) == 60 and s.fps == pytest.approx(30.0)
    # time mode: the sampler picks the frames nearest to the source's instants -> a 50 FPS view
    view = sampler_view(s)
    assert abs(len(view) - 100) <= 2
    u = apply_shift(v, "frame-rate-unadjusted", "moderate", fps=50.0)
    assert len(sampler_view(u)) == 60 and u.fps == pytest.approx(30.0)
    assert np.array_equal(resample_time(v, 50.0, 25.0), v[::2])


def test_sector_and_vertex_are_found():
    v = video()
    m = sector_mask(v)
    assert (m == fan()).mean() > 0.98
    vx, vy = sector_vertex(m)
    assert vx == pytest.approx(56.0, abs=1.5) and vy <= 2


def test_names_and_levels_are_checked():
    assert parse_shifts("all") == tuple(SHIFTS)
    assert parse_shifts("blur, gain-up,blur") == ("blur", "gain-up")
    assert parse_levels("severe,mild") == ("mild", "severe")
    with pytest.raises(EchoEdgeError, match="unknown shift 'glare'"):
        parse_shifts("blur,glare")
    with pytest.raises(EchoEdgeError, match="unknown shift level 'extreme'"):
        parse_levels("extreme")
    with pytest.raises(ValueError):
        apply_shift(np.zeros((4, 8, 8), np.float32), "blur", "mild")
