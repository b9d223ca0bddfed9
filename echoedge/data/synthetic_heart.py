"""One synthetic heart: a video's drawn parameters, and the LV's shape and motion over the cycle.

Draws come from `video_rng(seed, index)` in a fixed order; `tracing_rows` gives the exact
VolumeTracings rows of the cavity at any contraction. The image model is described in
echoedge.data.synthetic's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoedge.data.landmarks import NUM_CHORDS

FRAME = 112  # EchoNet-Dynamic frame size (height = width)

# Centimetres per pixel. EchoNet publishes no spacing; a 112-pixel frame spanning a ~14-15 cm deep
# sector gives ~0.13 cm/px, and 0.126 puts the synthetic medians at EDV ~82 mL and ESV ~33 mL
# (measured over 3000 drawn videos), next to EchoNet's published 82.1 / 33.6 mL.
PIXEL_SPACING_CM = 0.126

SPLITS = ("TRAIN", "VAL", "TEST")
SPLIT_PROBS = (0.75, 0.125, 0.125)


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
    # Drawn but no longer used: VolumeTracings are written ES first, ED last, as EchoNet's reference
    # loader reads them. The draw stays because the draw order is part of the on-disk format.
    ed_first: bool
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
    # Set only by an acquisition (synthetic_probe.acquired_params); the defaults are the neutral look.
    sector_deg: float = 90.0  # sector opening angle
    anatomy_scale: float = 1.0  # px per neutral px: atria and the RV's offset follow the zoom
    rv_scale: float = 1.0  # RV width x this (an off-axis cut shows more RV)

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


def draw_params_from(rng: np.random.Generator, index: int) -> VideoParams:
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
    return draw_params_from(video_rng(seed, index), index)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def profile_raw(s: np.ndarray, bluntness: float, taper: float) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    # sqrt(s(2-s)) gives a rounded apex; the s^4 term narrows the base towards the annulus.
    return (s * (2.0 - s)) ** (0.5 * bluntness) * (1.0 - taper * s**4)


def profile_peak(bluntness: float, taper: float) -> float:
    grid = np.linspace(0.0, 1.0, 2001)
    return float(profile_raw(grid, bluntness, taper).max())


def cavity_profile(s: np.ndarray, p: VideoParams) -> np.ndarray:
    """Half-width of the LV cavity at axial position s in [0, 1], as a fraction of W (max 1)."""
    return profile_raw(s, p.bluntness, p.taper) / profile_peak(p.bluntness, p.taper)


def axes(tilt: float) -> tuple[np.ndarray, np.ndarray]:
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
    a, n = axes(p.tilt)
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


def valve_opening(phase: np.ndarray, systole: float) -> np.ndarray:
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


__all__ = [
    "FRAME", "PIXEL_SPACING_CM", "SPLITS", "SPLIT_PROBS", "VideoParams", "axes", "cavity_profile",
    "contraction", "draw_params", "draw_params_from", "phases", "profile_peak", "profile_raw",
    "shape_at", "systolic_fraction", "tracing_rows", "valve_opening", "video_rng",
]
