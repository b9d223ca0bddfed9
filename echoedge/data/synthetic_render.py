"""Rendering a synthetic heart into frames: the ED tissue map, its warp per frame, the probe.

The tissue map (echogenicity x speckle) is drawn once at ED and warped backwards to each frame's
contraction; the probe's sector, gain and haze are applied last. The image model is described in
echoedge.data.synthetic's docstring; an acquisition other than the neutral one is applied through
echoedge.data.synthetic_probe (each of its steps is skipped where the setting is neutral, so the
neutral frames are byte-identical to those rendered without one).
"""

from __future__ import annotations

import math

import numpy as np

from echoedge.data.acquisition import NEUTRAL, AcquisitionSettings
from echoedge.data.synthetic_heart import (
    FRAME, VideoParams, axes, cavity_profile, contraction, phases, profile_peak, profile_raw,
    shape_at, systolic_fraction, valve_opening,
)
from echoedge.data.synthetic_probe import ProbeDisplay, lateral_dropout, speckle_power


# --------------------------------------------------------------------------------------------
# The ED tissue map
# --------------------------------------------------------------------------------------------

_SS = 2  # supersampling of the distance fields, for sub-pixel borders


def _grid(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of the frame sampled `scale` times per pixel."""
    t = (np.arange(FRAME * scale, dtype=np.float64) + 0.5) / scale - 0.5
    return np.meshgrid(t, t)


def _local(x: np.ndarray, y: np.ndarray, origin: np.ndarray, tilt: float) -> tuple[np.ndarray, np.ndarray]:
    a, n = axes(tilt)
    dx, dy = x - origin[0], y - origin[1]
    return dx * a[0] + dy * a[1], dx * n[0] + dy * n[1]


def _signed_distance(inside: np.ndarray) -> np.ndarray:
    """Signed distance (px of the output frame, > 0 outside) from a supersampled mask."""
    import cv2

    inside8 = inside.astype(np.uint8)
    out = cv2.distanceTransform(1 - inside8, cv2.DIST_L2, 5)
    inn = cv2.distanceTransform(inside8, cv2.DIST_L2, 5)
    sd = (out - inn) / _SS
    return cv2.resize(sd, (FRAME, FRAME), interpolation=cv2.INTER_AREA)


def _soft_inside(sd: np.ndarray, edge: float = 0.8) -> np.ndarray:
    return np.clip(0.5 - sd / edge, 0.0, 1.0)


def _band(sd: np.ndarray, thickness: np.ndarray | float, edge: float = 1.0) -> np.ndarray:
    """Soft indicator of 0 < sd < thickness."""
    return np.clip(0.5 + sd / edge, 0.0, 1.0) * np.clip(0.5 + (thickness - sd) / edge, 0.0, 1.0)


def _smooth_field(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish, slowly varying field: coarse noise upsampled."""
    import cv2

    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (FRAME, FRAME), interpolation=cv2.INTER_CUBIC)


def _speckle(rng: np.random.Generator) -> np.ndarray:
    """Rayleigh speckle with mean 1, correlated over ~2 px laterally and ~1 px axially."""
    import cv2

    g = rng.standard_normal((2, FRAME, FRAME)).astype(np.float32)
    g0 = cv2.GaussianBlur(g[0], (0, 0), sigmaX=1.0, sigmaY=0.6)
    g1 = cv2.GaussianBlur(g[1], (0, 0), sigmaX=1.0, sigmaY=0.6)
    r = np.sqrt(g0 * g0 + g1 * g1)
    return r / r.mean()


def _tissue_map(p: VideoParams, rng: np.random.Generator, acq: AcquisitionSettings = NEUTRAL) -> np.ndarray:
    """Echogenicity x speckle of the heart at ED, in pixel space (float32, ~0..1.5)."""
    import cv2

    xs, ys = _grid(_SS)
    apex = np.asarray(p.apex)
    a, n = axes(p.tilt)
    L, W = p.length_ed, p.width_ed

    # LV cavity: the exact ED shape.
    u, v = _local(xs, ys, apex, p.tilt)
    lv_in = (u >= 0) & (u <= L) & (np.abs(v) <= W * cavity_profile(u / L, p))
    sd_lv = _signed_distance(lv_in)

    # RV: a smaller bullet left of the septum, its apex lower, axis splayed outwards.
    rv_tilt = p.tilt - math.radians(float(rng.uniform(10.0, 18.0)))
    rv_apex = apex + a * (0.2 * L) - n * (0.55 * W + p.wall + 2.0 * p.anatomy_scale)
    rv_len, rv_w = 0.72 * L, 0.72 * W * float(rng.uniform(0.9, 1.1)) * p.rv_scale
    ur, vr = _local(xs, ys, rv_apex, rv_tilt)
    rv_prof = profile_raw(ur / rv_len, 1.2, 0.1) / profile_peak(1.2, 0.1)
    # Shift the RV's centre line outwards by its half-width so its septal border runs near
    # the septum instead of cutting into the LV.
    rv_in = (ur >= 0) & (ur <= rv_len) & (np.abs(vr + rv_w * rv_prof) <= rv_w * rv_prof)
    sd_rv = _signed_distance(rv_in)

    # Atria below the valve planes; each opens to its ventricle through the annulus.
    base = apex + L * a
    k = p.anatomy_scale  # absolute sizes (px at the neutral depth) follow the zoom
    la_c = base + a * (float(rng.uniform(12.0, 15.0)) * k) + n * k
    la_r = (float(rng.uniform(12.0, 15.0)) * k, W * 0.95)
    ul, vl = _local(xs, ys, la_c, p.tilt)
    la_in = (ul / la_r[0]) ** 2 + (vl / la_r[1]) ** 2 <= 1.0
    mitral = (u >= L - 1.0) & (u <= L + 6.0 * k) & (np.abs(v) <= W * cavity_profile(np.ones(1), p)[0])
    rv_base = rv_apex + rv_len * np.array([math.sin(rv_tilt), math.cos(rv_tilt)])
    rv_n = np.array([math.cos(rv_tilt), -math.sin(rv_tilt)])
    ra_c = rv_base + a * (float(rng.uniform(10.0, 13.0)) * k) - rv_n * (0.6 * rv_w)
    ra_r = (float(rng.uniform(10.0, 13.0)) * k, rv_w * 0.9)
    ua, va = _local(xs, ys, ra_c, p.tilt)
    ra_in = (ua / ra_r[0]) ** 2 + (va / ra_r[1]) ** 2 <= 1.0
    sd_atria = _signed_distance((la_in | mitral | ra_in) & ~lv_in)
    # One field for all blood, so no seam shows where the LV meets the mitral opening.
    blood = _soft_inside(_signed_distance(lv_in | rv_in | la_in | mitral | ra_in))

    # Myocardium: LV wall of slowly varying thickness (the septum a bit thicker), thin RV free wall,
    # thinner atrial walls; the LV wall stops at the annulus so the LV opens into the LA.
    u1, v1 = _local(*_grid(1), apex, p.tilt)
    thick = p.wall * (1.0 + 0.15 * _smooth_field(rng, 6)) * np.where(v1 < 0, 1.15, 1.0)
    lv_wall = _band(sd_lv, thick) * np.clip((L + 1.0 - u1) / 1.5, 0.0, 1.0)
    walls = np.maximum.reduce([lv_wall, 0.8 * _band(sd_rv, 3.5), 0.6 * _band(sd_atria, 2.5)])
    # Fill the gap between LV and RV walls: that is all septum.
    septum = np.clip((p.wall + 7.0 - (sd_lv + sd_rv)) / 2.0, 0.0, 1.0) * (sd_lv > 0) * (sd_rv > 0)
    # A wall band drawn from one chamber's border must not cross another chamber's blood.
    walls = np.maximum(walls, septum) * (1.0 - blood)
    heart = np.maximum(blood, walls)

    # Pericardium: a bright rim just outside the heart.
    inside_heart = cv2.resize((heart > 0.5).astype(np.uint8), (FRAME * _SS, FRAME * _SS),
                              interpolation=cv2.INTER_NEAREST)
    sd_heart = _signed_distance(inside_heart.astype(bool))
    peri = _band(sd_heart - 0.5, 2.5, 1.2) * (1.0 - blood)

    x1, y1 = _grid(1)
    depth = np.hypot(x1 - p.vertex[0], y1 - p.vertex[1])
    near_field = np.exp(-np.maximum(depth - 4.0, 0.0) / 5.0)
    background = 0.22 * (1.0 + 0.35 * _smooth_field(rng, 8))

    echo = background * (1.0 - heart) * (1.0 - peri)
    echo += 0.55 * walls + 0.03 * blood + 0.85 * peri
    echo = np.maximum(echo, 0.8 * near_field)
    echo += 0.5 * _annulus_spots(p, x1, y1)
    echo *= np.exp(0.22 * _smooth_field(rng, 10))
    echo *= _dropout(p, rng, x1, y1)
    extra = lateral_dropout(p, acq, x1, y1)
    if extra is not None:
        echo *= extra
    # Lateral resolution is worse than axial: blur the scatterer map anisotropically.
    echo = cv2.GaussianBlur(echo.astype(np.float32), (0, 0), sigmaX=0.9, sigmaY=0.5)
    return (echo * speckle_power(_speckle(rng), acq)).astype(np.float32)


def _annulus_spots(p: VideoParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fibrous mitral annulus shows as two bright spots at the base corners."""
    a, n = axes(p.tilt)
    base = np.asarray(p.apex) + p.length_ed * a
    half = p.width_ed * float(cavity_profile(np.ones(1), p)[0])
    spots = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx, cy = base + side * (half + 2.0) * n
        spots += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.8**2))
    return spots


def _dropout(p: VideoParams, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiplicative echo dropout on 0-2 wall segments (where the wall runs along the beam)."""
    a, n = axes(p.tilt)
    apex = np.asarray(p.apex)
    factor = np.ones_like(x)
    for _ in range(int(rng.integers(0, 3))):
        s = float(rng.uniform(0.25, 0.9))
        side = 1.0 if rng.random() < 0.7 else -1.0  # the lateral wall drops out most often
        off = p.width_ed * float(cavity_profile(np.array([s]), p)[0]) + 0.5 * p.wall
        cx, cy = apex + s * p.length_ed * a + side * off * n
        radius = float(rng.uniform(4.0, 8.0))
        depth = float(rng.uniform(0.4, 0.85))
        factor *= 1.0 - depth * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    return factor


# --------------------------------------------------------------------------------------------
# The probe frame and per-frame rendering
# --------------------------------------------------------------------------------------------


def sector_mask(p: VideoParams) -> np.ndarray:
    """Boolean (112, 112): True inside the sector (90 degrees unless an acquisition narrows it)."""
    x, y = _grid(1)
    dx, dy = x - p.vertex[0], y - p.vertex[1]
    if p.sector_deg == 90.0:
        inside = np.abs(dx) <= dy  # the neutral expression, kept for byte-identical frames
    else:
        inside = np.abs(dx) <= dy * math.tan(math.radians(p.sector_deg / 2.0))
    return (dy > 0) & inside & (np.hypot(dx, dy) <= p.radius)


def _probe_gain(p: VideoParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel gain (attenuation, edge fall-off, overall gain, x 255) and the haze floor."""
    x, y = _grid(1)
    dx, dy = x - p.vertex[0], y - p.vertex[1]
    depth = np.hypot(dx, dy)
    half = np.pi / 4 if p.sector_deg == 90.0 else math.radians(p.sector_deg / 2.0)
    angle = np.arctan2(dx, np.maximum(dy, 1e-6)) / half
    gain = 255.0 * p.gain * np.exp(-p.attenuation * depth) * (1.0 - 0.35 * np.abs(angle) ** 4)
    mask = sector_mask(p)
    floor = p.haze * mask * (0.7 + 0.3 * np.exp(-depth / 60.0))
    return (gain * mask).astype(np.float32), floor.astype(np.float32)


class _Warp:
    """Backward map from a frame at contraction c to the ED tissue map."""

    # Decay lengths (px) over which the wall motion fades into the surrounding tissue. Each must
    # exceed the largest displacement it carries (10.4 px across, 18.7 px along, the maxima over
    # 5000 draws), or the warp folds over and duplicates tissue; shorter ones thicken the wall more.
    decay_lateral = 14.0
    decay_axial = 25.0  # below the base (the LA stretches as the base rises)
    decay_long = 25.0  # across the axis, for the longitudinal motion

    def __init__(self, p: VideoParams) -> None:
        x, y = _grid(1)
        self.p = p
        self.apex = np.asarray(p.apex, dtype=np.float32)
        a, n = axes(p.tilt)
        self.a, self.n = a.astype(np.float32), n.astype(np.float32)
        u, v = _local(x, y, np.asarray(p.apex), p.tilt)
        self.u, self.v = u.astype(np.float32), v.astype(np.float32)
        self.abs_v = np.abs(self.v)
        self.sign_v = np.sign(self.v)
        self.peak = profile_peak(p.bluntness, p.taper)

    def maps(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        length, width = shape_at(p, c)
        s = np.clip(self.u / np.float32(length), 0.0, 1.0)
        prof = ((s * (2.0 - s)) ** np.float32(0.5 * p.bluntness) * (1.0 - np.float32(p.taper) * s**4)
                / np.float32(self.peak))
        border = np.float32(width) * prof
        excess = np.maximum(self.abs_v - border, 0.0)
        # Inside: exact scaling of the cavity; outside: the border displacement, fading away.
        inside_frac = self.abs_v / np.maximum(border, np.float32(1e-3))
        g = np.where(self.abs_v < border, inside_frac, np.exp(-excess / np.float32(self.decay_lateral)))
        below = np.maximum(self.u - np.float32(length), 0.0)
        fade_below = np.exp(-below / np.float32(self.decay_axial))
        abs_v0 = self.abs_v + np.float32(p.width_ed - width) * prof * g * fade_below
        axial = np.where(self.u < 0, 0.0, np.where(self.u <= length, s, fade_below))
        u0 = self.u + np.float32(p.length_ed - length) * axial * np.exp(-excess / np.float32(self.decay_long))
        v0 = self.sign_v * abs_v0
        mx = self.apex[0] + u0 * self.a[0] + v0 * self.n[0]
        my = self.apex[1] + u0 * self.a[1] + v0 * self.n[1]
        return mx.astype(np.float32), my.astype(np.float32)


def _leaflets(p: VideoParams, c: float, opening: float, annulus: float) -> np.ndarray:
    """Mitral leaflets drawn on an 8-bit canvas (anti-aliased), 255 = full brightness.

    `annulus` is the cavity profile at the base, cavity_profile(1, p) (passed in: it is per video).
    """
    import cv2

    length, width = shape_at(p, c)
    a, n = axes(p.tilt)
    base = np.asarray(p.apex) + length * a
    half = width * annulus
    canvas = np.zeros((FRAME, FRAME), np.uint8)
    for side in (-1.0, 1.0):
        hinge = base + side * half * n
        closed = -side * n + 0.15 * a
        opened = -a - side * 0.25 * n
        d = (1.0 - opening) * closed / np.linalg.norm(closed) + opening * opened / np.linalg.norm(opened)
        tip = hinge + 0.95 * half * d / np.linalg.norm(d)
        pts = [tuple(int(round(q * 16)) for q in pt) for pt in (hinge, tip)]
        cv2.line(canvas, pts[0], pts[1], 255, 1, cv2.LINE_AA, shift=4)
    return canvas


def render_video(p: VideoParams, rng: np.random.Generator,
                 acq: AcquisitionSettings = NEUTRAL) -> np.ndarray:
    """All frames of the video (frames, 112, 112) uint8; `rng` continues after the parameters.

    `p` is the heart as the acquisition shows it (synthetic_probe.acquired_params(p, acq)); `acq`
    adds what acts on the image rather than on the geometry.
    """
    import cv2

    tissue = _tissue_map(p, rng, acq)
    gain, floor = _probe_gain(p)
    probe = None if acq.is_neutral() else ProbeDisplay(p, acq, sector_mask(p))
    display = None
    if probe is not None:
        shadow = probe.echo_gain()
        if shadow is not None:
            gain = gain * shadow
        if probe.floor_gain() != 1.0:
            floor = floor * np.float32(probe.floor_gain())
        display = probe.display()
    warp = _Warp(p)
    phase = phases(p)
    systole = systolic_fraction(p)
    cs = contraction(phase, systole)
    # The traced frames must show the exact ED/ES shapes whatever the float rounding of phase.
    cs[p.ed_frame], cs[p.es_frame] = 0.0, 1.0
    opening = valve_opening(phase, systole)
    noise = rng.standard_normal((p.frames, FRAME, FRAME), dtype=np.float32)
    out = np.empty((p.frames, FRAME, FRAME), np.uint8)
    leaflet_gain = np.float32(0.5 / 255.0)
    annulus = float(cavity_profile(np.ones(1), p)[0])
    for k in range(p.frames):
        mx, my = warp.maps(float(cs[k]))
        frame = cv2.remap(tissue, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame += _leaflets(p, float(cs[k]), float(opening[k]), annulus) * leaflet_gain
        frame *= gain
        if probe is not None:
            frame = probe.blur(frame)
        frame += floor * (1.0 + 0.25 * noise[k])
        if display is not None:
            frame = frame * display[0] + display[1]
        np.clip(frame, 0.0, 255.0, out=frame)
        out[k] = (frame + 0.5).astype(np.uint8)
    return out


__all__ = ["render_video", "sector_mask"]
