"""Synthetic apical-4-chamber echo videos, written in exactly EchoNet-Dynamic's layout.

The point is a dataset that exercises every consumer of the real one (reader, clip sampler,
Simpson loss, landmark heads, calibration, validation) and that a model must actually learn from:
EF is only visible as the change of the dark cavity's size over the cycle.

Model of the image
------------------
*Probe frame (fixed).* A 90 degree sector with its vertex near row 0, column 57-66; pixels outside
it are exactly 0. Depth attenuation exp(-alpha * r) with a partial time-gain compensation, a
lateral fall-off towards the sector edges, a random overall gain and an additive haze floor
(which, with the faint blood scatter, sets the cavity grey near 15-20).

*Tissue frame (moves).* The heart is drawn once, at end-diastole (ED), as an echogenicity map in
pixel space: LV cavity (a "bullet": rounded apex at the top, widest at about two thirds of the
length, narrowing a little to the mitral annulus near rows 75-90), a speckled myocardial band
around it, RV to the left (thin free wall), both atria below the valve planes, a bright pericardial
rim, bright annulus spots, weak tissue outside the heart and a bright near-field band. The map is
multiplied by a Rayleigh speckle texture (modulus of two smoothed Gaussian fields, elongated
laterally like a real point-spread function), by slow echogenicity heterogeneity and by 0-2 wall
dropouts. Because speckle lives in the tissue frame it moves with the wall, as real speckle does.

*Motion.* The LV is described in its own coordinates (u along the long axis from the apex,
v across it). At contraction c in [0, 1] its length and width are L(c), W(c), interpolated
linearly between ED (c = 0) and ES (c = 1); the apex stays put and the base moves towards it.
Each frame is a backward warp (cv2.remap) of the ED tissue map: inside the cavity the map is the
exact scaling (u, v) -> (u * L_ed / L, v * W_ed / W), so the cavity border at any frame is exactly
|v| = W f(u / L); outside, the border displacement decays exponentially with distance, so the wall
thickens in systole and distant structures barely move. The mitral leaflets are drawn per frame
(closed in systole, open in early and late diastole).

*Cycle.* c(phase) rises smoothly during systole (about 35% of the cycle, 1 - cos), then falls with
a fast early filling (80%) and an atrial kick (20%). The systolic fraction is rounded to a whole
number of frames and the start phase is chosen so that one beat's ED frame (c = 0) and ES frame
(c = 1) both fall exactly on video frames: those two frames are traced.

*Tracing and labels.* The 21 VolumeTracings rows of a traced frame come from that frame's exact
geometry: row 0 the long axis (endpoint order random), rows 1..20 chords at the disk mid-points
(i - 0.5) / 20 of the axis, perpendicular to it, ending on the border. With this geometry the
Simpson volume is pi * L * W^2 * mean(f^2), so ES/ED = (L_es / L_ed) * (W_es / W_ed)^2 and we choose
L_es / L_ed from a longitudinal shortening of 18-32% of EF, then W_es / W_ed to hit the drawn EF.
FileList's EDV/ESV are those Simpson volumes (from the rounded coordinates actually written) times
PIXEL_SPACING_CM**3, and its EF is computed from those exact numbers.

*Draws.* Everything for video i comes from default_rng(SeedSequence([seed, i])), in a fixed order
(name, split, parameters, textures, noise), so a dataset is a byte-exact prefix of a larger one
with the same seed and the worker count does not matter.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoedge.data.landmarks import NUM_CHORDS, simpson_volume_rows
from echoedge.errors import EchoEdgeError

FRAME = 112  # EchoNet-Dynamic frame size (height = width)

# Centimetres per pixel. EchoNet publishes no spacing; a 112-pixel frame spanning a ~14-15 cm deep
# sector gives ~0.13 cm/px, and 0.126 puts the synthetic medians at EDV ~82 mL and ESV ~33 mL
# (measured over 3000 drawn videos), next to EchoNet's published 82.1 / 33.6 mL.
PIXEL_SPACING_CM = 0.126

SPLITS = ("TRAIN", "VAL", "TEST")
SPLIT_PROBS = (0.75, 0.125, 0.125)

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")

_COORD_DECIMALS = 4  # VolumeTracings coordinates as written
_LABEL_DECIMALS = 5  # FileList EF/ESV/EDV as written


# --------------------------------------------------------------------------------------------
# Parameters of one video
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoParams:
    """Everything that defines one synthetic video except its random textures."""

    index: int
    name: str
    split: str
    ef: float  # drawn EF (%), reproduced by the tracings up to coordinate rounding
    fps: int
    frames: int
    heart_rate: float  # beats per minute
    systole_frames: int  # ED -> ES, whole frames
    ed_frame: int  # the traced beat's ED frame; its ES frame is ed_frame + systole_frames
    ed_first: bool  # ED rows before ES rows in VolumeTracings
    axis_swapped: bool  # row 0 written base -> apex
    vertex: tuple[float, float]  # sector vertex (x, y)
    radius: float  # sector depth in px
    apex: tuple[float, float]  # LV apex (x, y)
    tilt: float  # LV long-axis angle from vertical (rad), base to the right when positive
    length_ed: float  # LV length (px) at ED
    width_ed: float  # LV max half-width (px) at ED
    length_ratio: float  # L_es / L_ed
    width_ratio: float  # W_es / W_ed
    bluntness: float  # apex shape exponent of the cavity profile
    taper: float  # how much the cavity narrows from its widest point to the annulus
    wall: float  # myocardial thickness (px) at ED
    gain: float
    attenuation: float  # per px of depth
    haze: float  # additive floor (grey levels)

    @property
    def frames_per_beat(self) -> float:
        return self.fps * 60.0 / self.heart_rate

    @property
    def es_frame(self) -> int:
        return self.ed_frame + self.systole_frames


def _draw_ef(rng: np.random.Generator) -> float:
    # Mixture: mostly normal function plus a reduced-EF tail, which reproduces EchoNet's skew
    # (mean ~56, sd ~12, ~21% below 50, ~8% below 35) better than one normal would.
    if rng.random() < 0.15:
        ef = rng.normal(34.0, 12.0)
    else:
        ef = rng.normal(60.0, 7.5)
    return float(np.clip(ef, 10.0, 85.0))


def _draw_split(rng: np.random.Generator) -> str:
    u = rng.random()
    return SPLITS[0] if u < SPLIT_PROBS[0] else SPLITS[1] if u < SPLIT_PROBS[0] + SPLIT_PROBS[1] else SPLITS[2]


def _draw_timing(rng: np.random.Generator) -> tuple[int, int, float, int, int]:
    """fps, frames, heart rate, systole frames, traced ED frame."""
    fps = 50 if rng.random() < 0.79 else int(rng.integers(30, 101))
    heart_rate = float(rng.uniform(50.0, 110.0))
    if rng.random() < 0.04:
        frames = int(rng.integers(32, 64))  # the few videos shorter than one padded clip
    else:
        frames = int(np.clip(round(rng.normal(172.0, 35.0)), 100, 250))
    per_beat = fps * 60.0 / heart_rate
    systole = max(3, round(float(rng.uniform(0.32, 0.38)) * per_beat))
    frames = max(frames, systole + 4)
    ed_frame = int(rng.integers(0, frames - systole))
    return fps, frames, heart_rate, systole, ed_frame


def _draw_params_from(rng: np.random.Generator, index: int) -> VideoParams:
    # The draw order is part of the on-disk format: changing it changes every dataset.
    name = "0X" + "".join(f"{b:02X}" for b in rng.bytes(8))
    split = _draw_split(rng)
    ef = _draw_ef(rng)
    fps, frames, heart_rate, systole, ed_frame = _draw_timing(rng)
    ed_first = bool(rng.random() < 0.5)
    axis_swapped = bool(rng.random() < 0.5)
    vertex = (float(rng.uniform(57.0, 66.0)), float(rng.uniform(-1.5, 0.5)))
    radius = float(rng.uniform(106.0, 118.0))
    # Failing hearts dilate: low EF goes with a larger LV, which gives EDV its right skew.
    dilation = 1.0 + 0.007 * max(0.0, 50.0 - ef)
    size = float(np.clip(np.exp(rng.normal(0.0, 0.08)) * dilation, 0.8, 1.35))
    apex = (vertex[0] + float(rng.uniform(-1.0, 5.0)), float(rng.uniform(14.0, 21.0)))
    tilt = math.radians(float(np.clip(rng.normal(6.0, 3.0), -2.0, 14.0)))
    length_ed = float(np.clip(64.0 * size**0.5 * rng.uniform(0.94, 1.06), 52.0, 76.0))
    width_ed = float(np.clip(16.5 * size * rng.uniform(0.92, 1.08), 12.5, 24.0))
    # Shortening mostly in width: the long axis shortens by 18-32% of EF (~15% for a normal heart).
    long_short = ef / 100.0 * float(rng.uniform(0.18, 0.32))
    length_ratio = 1.0 - long_short
    width_ratio = math.sqrt((1.0 - ef / 100.0) / length_ratio)
    return VideoParams(
        index=index, name=name, split=split, ef=ef, fps=fps, frames=frames,
        heart_rate=heart_rate, systole_frames=systole, ed_frame=ed_frame, ed_first=ed_first,
        axis_swapped=axis_swapped, vertex=vertex, radius=radius, apex=apex, tilt=tilt,
        length_ed=length_ed, width_ed=width_ed, length_ratio=length_ratio,
        width_ratio=width_ratio, bluntness=float(rng.uniform(0.8, 1.15)),
        taper=float(rng.uniform(0.08, 0.22)), wall=float(rng.uniform(6.0, 8.5)),
        gain=float(rng.uniform(0.8, 1.2)), attenuation=float(rng.uniform(0.002, 0.007)),
        haze=float(rng.uniform(8.0, 13.0)),
    )


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The one generator every draw of video `index` comes from."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def draw_params(seed: int, index: int) -> VideoParams:
    """The parameters of video `index` of the dataset with `seed`, without rendering it."""
    return _draw_params_from(video_rng(seed, index), index)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _profile_raw(s: np.ndarray, bluntness: float, taper: float) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    # sqrt(s(2-s)) gives a rounded apex; the s^4 term narrows the base towards the annulus.
    return (s * (2.0 - s)) ** (0.5 * bluntness) * (1.0 - taper * s**4)


def _profile_peak(bluntness: float, taper: float) -> float:
    grid = np.linspace(0.0, 1.0, 2001)
    return float(_profile_raw(grid, bluntness, taper).max())


def cavity_profile(s: np.ndarray, p: VideoParams) -> np.ndarray:
    """Half-width of the LV cavity at axial position s in [0, 1], as a fraction of W (max 1)."""
    return _profile_raw(s, p.bluntness, p.taper) / _profile_peak(p.bluntness, p.taper)


def _axes(tilt: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit long axis (apex -> base) and its perpendicular (towards the lateral wall), in (x, y)."""
    a = np.array([math.sin(tilt), math.cos(tilt)])
    n = np.array([math.cos(tilt), -math.sin(tilt)])
    return a, n


def shape_at(p: VideoParams, c: float) -> tuple[float, float]:
    """LV length and max half-width (px) at contraction c (0 = ED, 1 = ES)."""
    length = p.length_ed * (1.0 - (1.0 - p.length_ratio) * c)
    width = p.width_ed * (1.0 - (1.0 - p.width_ratio) * c)
    return length, width


def tracing_rows(p: VideoParams, c: float) -> np.ndarray:
    """The 21 VolumeTracings rows (X1, Y1, X2, Y2) of the cavity at contraction c, unrounded."""
    length, width = shape_at(p, c)
    a, n = _axes(p.tilt)
    apex = np.asarray(p.apex)
    base = apex + length * a
    s = (np.arange(1, NUM_CHORDS + 1) - 0.5) / NUM_CHORDS
    half = width * cavity_profile(s, p)
    centres = apex + (s * length)[:, None] * a
    rows = np.empty((NUM_CHORDS + 1, 4))
    rows[0] = np.concatenate([base, apex]) if p.axis_swapped else np.concatenate([apex, base])
    rows[1:, :2] = centres - half[:, None] * n  # septal end first, as a tracing tool would
    rows[1:, 2:] = centres + half[:, None] * n
    return rows


def contraction(phase: np.ndarray, systole: float) -> np.ndarray:
    """Contraction c in [0, 1] over the cycle: phase 0 = ED (c = 0), phase `systole` = ES (c = 1)."""
    phase = np.mod(phase, 1.0)
    x = np.clip(phase / systole, 0.0, 1.0)
    rise = 0.5 - 0.5 * np.cos(np.pi * x)
    y = np.clip((phase - systole) / (1.0 - systole), 0.0, 1.0)
    fill = 1.0 - 0.8 * _smooth(y / 0.45) - 0.2 * _smooth((y - 0.8) / 0.2)
    return np.where(phase <= systole, rise, fill)


def _valve_opening(phase: np.ndarray, systole: float) -> np.ndarray:
    """Mitral opening in [0, 1]: shut in systole, wide in early filling, again at the atrial kick."""
    phase = np.mod(phase, 1.0)
    y = np.clip((phase - systole) / (1.0 - systole), 0.0, 1.0)
    early = _smooth(y / 0.1) * (1.0 - 0.65 * _smooth((y - 0.3) / 0.25))
    atrial = 0.35 * _smooth((y - 0.72) / 0.08)
    open_ = (early + atrial) * (1.0 - _smooth((y - 0.9) / 0.1))
    return np.where(phase <= systole, 0.0, np.clip(open_, 0.0, 1.0))


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def phases(p: VideoParams) -> np.ndarray:
    """Cardiac phase of every frame; exactly 0 at the traced ED frame."""
    return (np.arange(p.frames) - p.ed_frame) / p.frames_per_beat


def systolic_fraction(p: VideoParams) -> float:
    return p.systole_frames / p.frames_per_beat


# --------------------------------------------------------------------------------------------
# The ED tissue map
# --------------------------------------------------------------------------------------------

_SS = 2  # supersampling of the distance fields, for sub-pixel borders


def _grid(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of the frame sampled `scale` times per pixel."""
    t = (np.arange(FRAME * scale, dtype=np.float64) + 0.5) / scale - 0.5
    return np.meshgrid(t, t)


def _local(x: np.ndarray, y: np.ndarray, origin: np.ndarray, tilt: float) -> tuple[np.ndarray, np.ndarray]:
    a, n = _axes(tilt)
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


def _tissue_map(p: VideoParams, rng: np.random.Generator) -> np.ndarray:
    """Echogenicity x speckle of the heart at ED, in pixel space (float32, ~0..1.5)."""
    import cv2

    xs, ys = _grid(_SS)
    apex = np.asarray(p.apex)
    a, n = _axes(p.tilt)
    L, W = p.length_ed, p.width_ed

    # LV cavity: the exact ED shape.
    u, v = _local(xs, ys, apex, p.tilt)
    lv_in = (u >= 0) & (u <= L) & (np.abs(v) <= W * cavity_profile(u / L, p))
    sd_lv = _signed_distance(lv_in)

    # RV: a smaller bullet left of the septum, its apex lower, axis splayed outwards.
    rv_tilt = p.tilt - math.radians(float(rng.uniform(10.0, 18.0)))
    rv_apex = apex + a * (0.2 * L) - n * (0.55 * W + p.wall + 2.0)
    rv_len, rv_w = 0.72 * L, 0.72 * W * float(rng.uniform(0.9, 1.1))
    ur, vr = _local(xs, ys, rv_apex, rv_tilt)
    rv_prof = _profile_raw(ur / rv_len, 1.2, 0.1) / _profile_peak(1.2, 0.1)
    # Shift the RV's centre line outwards by its half-width so its septal border runs near
    # the septum instead of cutting into the LV.
    rv_in = (ur >= 0) & (ur <= rv_len) & (np.abs(vr + rv_w * rv_prof) <= rv_w * rv_prof)
    sd_rv = _signed_distance(rv_in)

    # Atria below the valve planes; each opens to its ventricle through the annulus.
    base = apex + L * a
    la_c = base + a * float(rng.uniform(12.0, 15.0)) + n * 1.0
    la_r = (float(rng.uniform(12.0, 15.0)), W * 0.95)
    ul, vl = _local(xs, ys, la_c, p.tilt)
    la_in = (ul / la_r[0]) ** 2 + (vl / la_r[1]) ** 2 <= 1.0
    mitral = (u >= L - 1.0) & (u <= L + 6.0) & (np.abs(v) <= W * cavity_profile(np.ones(1), p)[0])
    rv_base = rv_apex + rv_len * np.array([math.sin(rv_tilt), math.cos(rv_tilt)])
    rv_n = np.array([math.cos(rv_tilt), -math.sin(rv_tilt)])
    ra_c = rv_base + a * float(rng.uniform(10.0, 13.0)) - rv_n * (0.6 * rv_w)
    ra_r = (float(rng.uniform(10.0, 13.0)), rv_w * 0.9)
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
    # Lateral resolution is worse than axial: blur the scatterer map anisotropically.
    echo = cv2.GaussianBlur(echo.astype(np.float32), (0, 0), sigmaX=0.9, sigmaY=0.5)
    return (echo * _speckle(rng)).astype(np.float32)


def _annulus_spots(p: VideoParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fibrous mitral annulus shows as two bright spots at the base corners."""
    a, n = _axes(p.tilt)
    base = np.asarray(p.apex) + p.length_ed * a
    half = p.width_ed * float(cavity_profile(np.ones(1), p)[0])
    spots = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx, cy = base + side * (half + 2.0) * n
        spots += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.8**2))
    return spots


def _dropout(p: VideoParams, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiplicative echo dropout on 0-2 wall segments (where the wall runs along the beam)."""
    a, n = _axes(p.tilt)
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
    """Boolean (112, 112): True inside the 90 degree sector."""
    x, y = _grid(1)
    dx, dy = x - p.vertex[0], y - p.vertex[1]
    return (dy > 0) & (np.abs(dx) <= dy) & (np.hypot(dx, dy) <= p.radius)


def _probe_gain(p: VideoParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel gain (attenuation, edge fall-off, overall gain, x 255) and the haze floor."""
    x, y = _grid(1)
    dx, dy = x - p.vertex[0], y - p.vertex[1]
    depth = np.hypot(dx, dy)
    angle = np.arctan2(dx, np.maximum(dy, 1e-6)) / (np.pi / 4)
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
        a, n = _axes(p.tilt)
        self.a, self.n = a.astype(np.float32), n.astype(np.float32)
        u, v = _local(x, y, np.asarray(p.apex), p.tilt)
        self.u, self.v = u.astype(np.float32), v.astype(np.float32)
        self.abs_v = np.abs(self.v)
        self.sign_v = np.sign(self.v)
        self.peak = _profile_peak(p.bluntness, p.taper)

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
    a, n = _axes(p.tilt)
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


def render_video(p: VideoParams, rng: np.random.Generator) -> np.ndarray:
    """All frames of the video (frames, 112, 112) uint8; `rng` continues after the parameters."""
    import cv2

    tissue = _tissue_map(p, rng)
    gain, floor = _probe_gain(p)
    warp = _Warp(p)
    phase = phases(p)
    systole = systolic_fraction(p)
    cs = contraction(phase, systole)
    # The traced frames must show the exact ED/ES shapes whatever the float rounding of phase.
    cs[p.ed_frame], cs[p.es_frame] = 0.0, 1.0
    opening = _valve_opening(phase, systole)
    noise = rng.standard_normal((p.frames, FRAME, FRAME), dtype=np.float32)
    out = np.empty((p.frames, FRAME, FRAME), np.uint8)
    leaflet_gain = np.float32(0.5 / 255.0)
    annulus = float(cavity_profile(np.ones(1), p)[0])
    for k in range(p.frames):
        mx, my = warp.maps(float(cs[k]))
        frame = cv2.remap(tissue, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame += _leaflets(p, float(cs[k]), float(opening[k]), annulus) * leaflet_gain
        frame *= gain
        frame += floor * (1.0 + 0.25 * noise[k])
        np.clip(frame, 0.0, 255.0, out=frame)
        out[k] = (frame + 0.5).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# One video end to end, and the dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoRecord:
    """What one rendered video contributes to the CSVs."""

    filelist: tuple[str, ...]
    tracings: tuple[tuple[str, ...], ...]
    ef: float
    split: str


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def make_video(seed: int, index: int, videos_dir: Path) -> VideoRecord:
    """Render video `index`, write its AVI under `videos_dir` and return its CSV rows."""
    from echoedge.data.video import write_video

    rng = video_rng(seed, index)
    p = _draw_params_from(rng, index)
    frames = render_video(p, rng)
    write_video(Path(videos_dir) / f"{p.name}.avi", frames, p.fps)

    ed_rows = np.round(tracing_rows(p, 0.0), _COORD_DECIMALS)
    es_rows = np.round(tracing_rows(p, 1.0), _COORD_DECIMALS)
    ml = PIXEL_SPACING_CM**3
    edv = round(simpson_volume_rows(ed_rows) * ml, _LABEL_DECIMALS)
    esv = round(simpson_volume_rows(es_rows) * ml, _LABEL_DECIMALS)
    ef = round(100.0 * (edv - esv) / edv, _LABEL_DECIMALS)
    filelist = (p.name, _fmt(ef, _LABEL_DECIMALS), _fmt(esv, _LABEL_DECIMALS),
                _fmt(edv, _LABEL_DECIMALS), str(FRAME), str(FRAME), str(p.fps), str(p.frames),
                p.split)
    traced = [(ed_rows, p.ed_frame), (es_rows, p.es_frame)]
    if not p.ed_first:
        traced.reverse()
    tracings = tuple(
        (f"{p.name}.avi", *(_fmt(x, _COORD_DECIMALS) for x in row), str(frame))
        for rows, frame in traced
        for row in rows
    )
    return VideoRecord(filelist=filelist, tracings=tracings, ef=ef, split=p.split)


def _make_video_job(job: tuple[int, int, str]) -> VideoRecord:
    return make_video(job[0], job[1], Path(job[2]))


def _worker_init() -> None:
    import cv2

    # Each worker is one process per core already; OpenCV's own threads would oversubscribe.
    cv2.setNumThreads(1)


@dataclass
class SynthSummary:
    """What generate_dataset wrote."""

    out: Path
    videos: int
    splits: dict[str, int] = field(default_factory=dict)
    ef_mean: float = 0.0
    ef_sd: float = 0.0
    ef_min: float = 0.0
    ef_max: float = 0.0
    frac_below_50: float = 0.0
    seconds: float = 0.0
    videos_per_second: float = 0.0

    def describe(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        return (
            f"wrote {self.videos} synthetic videos to {self.out} ({splits})\n"
            f"EF mean {self.ef_mean:.1f} sd {self.ef_sd:.1f} range {self.ef_min:.1f}-{self.ef_max:.1f}, "
            f"{100 * self.frac_below_50:.0f}% below 50\n"
            f"{self.seconds:.1f} s, {self.videos_per_second:.1f} videos/s"
        )


def _check_args(out: Path, videos: int, seed: int, workers: int | None) -> None:
    if int(videos) < 1:
        raise EchoEdgeError(f"--videos must be >= 1, got {videos}")
    if int(seed) < 0:
        raise EchoEdgeError(f"--seed must be >= 0, got {seed}")
    if workers is not None and int(workers) < 1:
        raise EchoEdgeError(f"--workers must be >= 1, got {workers}")
    if out.exists():
        if not out.is_dir():
            raise EchoEdgeError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            raise EchoEdgeError(f"{out}: folder exists and is not empty; choose a new or empty folder")


def _write_csvs(root: Path, records: list[VideoRecord]) -> None:
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FILELIST_COLUMNS)
        w.writerows(r.filelist for r in records)
    with open(root / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRACING_COLUMNS)
        for r in records:
            w.writerows(r.tracings)


def _pool(workers: int):  # -> multiprocessing.pool.Pool
    """A forked worker pool that is safe even when the caller has already used OpenCV.

    A child forked while OpenCV's thread pool is alive inherits its locks but not its threads and
    deadlocks in its first OpenCV call (seen: cv2.setNumThreads hanging in pthread_cond_destroy).
    Dropping OpenCV to one thread joins those threads, so the children fork from a clean state;
    the caller's setting is restored right after. Fork (not forkserver/spawn) also works from
    `python -`, notebooks and scripts without a __main__ guard, and starts in milliseconds.
    """
    import multiprocessing

    import cv2

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return multiprocessing.get_context(method).Pool(workers, initializer=_worker_init)
    finally:
        cv2.setNumThreads(previous)


def _render_all(jobs: list[tuple[int, int, str]], workers: int, progress: bool) -> list[VideoRecord]:
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    pool = None
    if workers == 1:
        results = map(_make_video_job, jobs)
    else:
        pool = _pool(workers)
        results = pool.imap(_make_video_job, jobs, chunksize=1)
    bar = (Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
           if progress else nullcontext())
    records: list[VideoRecord] = []
    try:
        with bar:
            task = bar.add_task("synth", total=len(jobs)) if progress else None
            for rec in results:  # imap keeps job order, so the CSVs never depend on timing
                records.append(rec)
                if progress:
                    bar.advance(task)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return records


def generate_dataset(
    out: Path,
    videos: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Write `videos` synthetic videos in EchoNet-Dynamic's layout to the folder `out`.

    The folder must be absent or empty. Everything is written to a temporary sibling first and
    renamed at the end, so an interrupted run leaves no half dataset. Same seed -> same bytes,
    whatever `workers` (default: CPU count); N videos are a prefix of M > N with the same seed.
    """
    out = Path(out)
    _check_args(out, videos, seed, workers)
    n_workers = max(1, min(int(workers or os.cpu_count() or 1), int(videos)))
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "Videos").mkdir(parents=True)
        jobs = [(int(seed), i, str(tmp / "Videos")) for i in range(int(videos))]
        records = _render_all(jobs, n_workers, progress)
        names = [r.filelist[0] for r in records]
        if len(set(names)) != len(names):  # 64-bit names: practically never
            raise EchoEdgeError(f"seed {seed}: two videos drew the same name; use another seed")
        _write_csvs(tmp, records)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    return _summarise(out, records, seconds)


def _summarise(out: Path, records: list[VideoRecord], seconds: float) -> SynthSummary:
    ef = np.array([r.ef for r in records])
    splits = {s: sum(r.split == s for r in records) for s in SPLITS}
    return SynthSummary(
        out=out, videos=len(records), splits=splits, ef_mean=float(ef.mean()),
        ef_sd=float(ef.std()), ef_min=float(ef.min()), ef_max=float(ef.max()),
        frac_below_50=float((ef < 50).mean()), seconds=seconds,
        videos_per_second=len(records) / max(seconds, 1e-9),
    )
