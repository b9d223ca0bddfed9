"""Acquisition shifts: named, seeded changes to a video's frames, as pure functions (no I/O).

Each shift models one way a probe, a preset or a link makes video look unlike the training data,
at three levels: `moderate` is at least as strong as the change measured by hand on the shipped
checkpoint in issue 21 (gain x0.6 / x1.6, gamma 0.6, Rayleigh speckle 0.5, zoom 0.85 / 1.15,
rotation 10 deg, Gaussian blur 1.5 px), `mild` about half of it, `severe` 1.4 to 2.5 times it. A shift
whose natural change goes two ways has two names (gain-down / gain-up, zoom-out / zoom-in), so a
level is one number and the report never averages opposite effects.

The same change is applied to every frame of a video. Random parts (speckle, noise) are drawn
from a generator seeded by (seed, video name, shift name): the same video gets the same draw
whatever else is run, and the levels of one shift share the draw (they differ in strength only).

Geometry is about the sector's vertex (the probe face, top centre): the sector is found once per
video as the convex hull of the pixels that are ever lit (EchoNet's videos are black outside the
sector), and the spatial shifts (zoom, rotation, translation, blur, TGC, additive noise) keep
everything outside it at 0, as a scanner's scan conversion does, so anatomy never leaks into the
corners. JPEG is applied to the whole frame: its ringing at the sector's edge is what a
compressed stream carries.

Frame rate: a probe at r x the frame rate records r x as many frames of the same heart beat.
`frame-rate` returns the video resampled to fps * r (nearest frame, as a probe samples instants,
no blending) and the new fps. A device app in time mode (the bridges' ClipBuffer with modelFps)
picks clip frames by time, so its clip still spans the same seconds and only temporal resolution
changes: `sampler_view` gives the frames that sampler sees. `frame-rate-unadjusted` is the app
that feeds frames as they come (frame mode): a clip's frames then span 1/r times the seconds, so
at r < 1 the heart seems to beat 1/r times faster.

OpenCV does the image work (warpAffine, GaussianBlur, LUT, JPEG), scikit-image the sector's convex
hull; both are imported inside the functions because this package is on the CLI's import path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from echoedge.errors import EchoEdgeError

LEVELS = ("mild", "moderate", "severe")
# A pixel is inside the sector when its brightest value over the video exceeds this: above the
# near-black ringing MJPG leaves around a black-masked sector, below any lit tissue or haze.
SECTOR_MIN = 8


@dataclass(frozen=True)
class ShiftSpec:
    """One named shift: what it models, its parameter at each level, and its unit."""

    name: str
    description: str
    unit: str
    mild: float
    moderate: float
    severe: float
    retime: bool = False  # the clip sampler sees a new frame rate and adjusts to it (time mode)

    def value(self, level: str) -> float:
        check_level(level)
        return float(getattr(self, level))

    def label(self, level: str) -> str:
        v = self.value(level)
        return f"{self.name} {level} ({v:g}{self.unit})"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "unit": self.unit,
                "levels": {lv: self.value(lv) for lv in LEVELS}, "retime": self.retime}


SHIFTS: dict[str, ShiftSpec] = {s.name: s for s in (
    ShiftSpec("gain-down", "overall receive gain lowered (every pixel x g)", "x", 0.8, 0.6, 0.4),
    ShiftSpec("gain-up", "overall receive gain raised (every pixel x g, clipped at 255)", "x", 1.3, 1.6, 2.0),
    ShiftSpec("tgc", "time-gain-compensation slope: gain rises with depth, this many dB from the "
              "vertex to the frame's bottom (0 dB at mid-depth)", " dB", 4.5, 9.0, 14.0),
    ShiftSpec("gamma", "display gamma / dynamic range: 255 (p / 255)^g; < 1 lifts the darks", "", 0.8, 0.6, 0.45),
    ShiftSpec("speckle", "multiplicative Rayleigh speckle of this strength s: p (1 - s + s R), "
              "E[R] = 1, a new draw per frame", "", 0.25, 0.5, 0.8),
    ShiftSpec("blur", "lateral/axial resolution: Gaussian blur of this sigma", " px", 0.75, 1.5, 2.5),
    ShiftSpec("zoom-in", "shallower depth setting: anatomy magnified about the vertex", "x", 1.075, 1.15, 1.3),
    ShiftSpec("zoom-out", "deeper depth setting: anatomy shrunk about the vertex", "x", 0.925, 0.85, 0.7),
    ShiftSpec("rotation", "probe rotated: anatomy turned about the vertex (counter-clockwise)", " deg", 5.0, 10.0, 20.0),
    ShiftSpec("translation", "probe slid sideways: anatomy moved right by this many pixels", " px", 4.0, 8.0, 16.0),
    ShiftSpec("frame-rate", "probe at r x the frame rate; the clip sampler knows the new FPS and "
              "keeps the clip's time span (time mode)", "x fps", 0.8, 0.6, 0.4, retime=True),
    ShiftSpec("frame-rate-unadjusted", "probe at r x the frame rate fed frame by frame (frame mode): "
              "the clip spans 1/r times the time", "x fps", 0.8, 0.6, 0.4),
    ShiftSpec("jpeg", "JPEG compression of every frame at this quality (OpenCV)", " q", 40.0, 20.0, 8.0),
    ShiftSpec("noise", "additive Gaussian noise of this sd (grey levels) inside the sector", " sd", 6.0, 12.0, 24.0),
)}


@dataclass
class ShiftedVideo:
    frames: np.ndarray  # uint8 (T', H, W)
    fps: float | None  # the frame rate of `frames` (None when the input's is unknown)
    shift: str
    level: str
    value: float


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise EchoEdgeError(f"unknown shift level '{level}' (levels: {', '.join(LEVELS)})")
    return level


def get_shift(name: str) -> ShiftSpec:
    spec = SHIFTS.get(name)
    if spec is None:
        raise EchoEdgeError(f"unknown shift '{name}' (shifts: {', '.join(SHIFTS)})")
    return spec


def parse_shifts(text: str | None) -> tuple[str, ...]:
    """'all' or None -> every shift; else a comma list, each checked."""
    if text is None or text.strip().lower() in ("", "all"):
        return tuple(SHIFTS)
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for n in names:
        get_shift(n)
    return names


def parse_levels(text: str | None) -> tuple[str, ...]:
    if text is None or text.strip().lower() in ("", "all"):
        return LEVELS
    names = {t.strip() for t in text.split(",") if t.strip()}
    for n in names:
        check_level(n)
    return tuple(lv for lv in LEVELS if lv in names)  # always mild -> severe


def shift_rng(seed: int, video: str, shift: str) -> np.random.Generator:
    """The generator of one video's random draws: stable across runs, Python versions and hosts."""
    digest = hashlib.sha256(f"{int(seed)}\0{video}\0{shift}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sector_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the convex hull of the largest region ever lit (the imaging sector)."""
    import cv2

    lit = (np.asarray(frames).max(axis=0) > SECTOR_MIN).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if n < 2:  # a black video: no sector, nothing to keep dark
        return np.ones(lit.shape, bool)
    from skimage.morphology import convex_hull_image

    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # The hull of the pixel centres (offset_coordinates=False) holds no pixel outside a convex
    # sector; OpenCV's fillConvexPoly (and skimage's default pixel-corner hull) add a rim of
    # pixels just outside it, where a warp would leak.
    return convex_hull_image(labels == biggest, offset_coordinates=False)


def sector_vertex(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the sector's vertex: the centre of its topmost rows (the probe face)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0 or mask.all():
        return (mask.shape[1] - 1) / 2.0, 0.0
    top = rows[0]
    _, xs = np.nonzero(mask[top : top + 3])
    return float(xs.mean()), float(top)


def resample_time(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """The frames a camera at dst_fps would have taken of the same seconds: the nearest source
    frame to each of its instants (a probe samples instants; blending two frames would ghost)."""
    ratio = float(dst_fps) / float(src_fps)
    n = max(1, int(math.floor((len(frames) - 1) * ratio + 1e-9)) + 1)
    idx = np.clip(np.rint(np.arange(n) / ratio).astype(int), 0, len(frames) - 1)
    return np.ascontiguousarray(frames[idx])


def sampler_view(shifted: ShiftedVideo) -> np.ndarray:
    """What the clip sampler takes clips from. For a retiming shift (time mode) the sampler knows
    the new rate and picks the frames nearest to the instants of the source rate, so `period`
    frames span the seconds they did before the shift; otherwise the frames as they are."""
    if not get_shift(shifted.shift).retime:
        return shifted.frames
    return resample_time(shifted.frames, shifted.value, 1.0)  # rates relative to the source's


def apply_shift(frames: np.ndarray, name: str, level: str, seed: int = 0, video: str = "",
                fps: float | None = None) -> ShiftedVideo:
    """Apply shift `name` at `level` to one video's uint8 (T, H, W) frames; the input is not changed."""
    spec = get_shift(name)
    value = spec.value(level)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 (T, H, W) with T >= 1, got {frames.dtype} {frames.shape}")
    if name.startswith("frame-rate"):
        out = resample_time(frames, 1.0, value)
        return ShiftedVideo(out, None if fps is None else float(fps) * value, name, level, value)
    out = _OPS[name](frames, value, lambda: shift_rng(seed, video, name))
    return ShiftedVideo(np.ascontiguousarray(out, dtype=np.uint8), fps, name, level, value)


class ShiftedSource:
    """frames_source for `predict_videos`: one condition's shifted frames, each video shifted once
    and kept until `clear` (the reference and every artefact see identical frames)."""

    def __init__(self, frames: Callable[[Any], np.ndarray], shift: str, level: str, seed: int) -> None:
        self.frames, self.shift, self.level, self.seed = frames, shift, level, seed
        self._cache: dict[str, np.ndarray] = {}

    def record(self, rec: Any) -> Any:
        """The record as the sampler should see it: the shifted FPS, frame count and traced frames."""
        spec = get_shift(self.shift)
        if not self.shift.startswith("frame-rate") or spec.retime:
            return rec  # same instants at the source's rate
        r = spec.value(self.level)
        move = lambda i: None if i is None else int(round(i * r))  # noqa: E731
        return dataclasses.replace(rec, fps=rec.fps * r, num_frames=max(1, int(rec.num_frames * r)),
                                   ed_frame=move(rec.ed_frame), es_frame=move(rec.es_frame))

    def __call__(self, rec: Any) -> np.ndarray:
        got = self._cache.get(rec.file_name)
        if got is None:
            shifted = apply_shift(np.asarray(self.frames(rec)), self.shift, self.level, seed=self.seed,
                                  video=rec.file_name, fps=rec.fps)
            got = self._cache[rec.file_name] = sampler_view(shifted)
        return got

    def clear(self) -> None:
        self._cache.clear()


# ---------------------------------------------------------------------------------------------
# The per-shift operations: (frames, value, rng factory) -> uint8 frames of the same shape.

Rng = Callable[[], np.random.Generator]


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _lut(frames: np.ndarray, table: np.ndarray) -> np.ndarray:
    import cv2

    table = _to_u8(table)
    return np.stack([cv2.LUT(f, table) for f in frames])


def _gain(frames: np.ndarray, g: float, rng: Rng) -> np.ndarray:
    return _lut(frames, np.arange(256, dtype=np.float64) * g)


def _gamma(frames: np.ndarray, g: float, rng: Rng) -> np.ndarray:
    return _lut(frames, 255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** g)


def _tgc(frames: np.ndarray, db: float, rng: Rng) -> np.ndarray:
    mask = sector_mask(frames)
    vx, vy = sector_vertex(mask)
    h, w = frames.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = np.hypot(xs - vx, ys - vy) / max(h - vy, 1.0)  # 0 at the vertex, 1 at the bottom row
    gain = np.power(10.0, db * (depth - 0.5) / 20.0).astype(np.float32)
    return _to_u8(frames.astype(np.float32) * (gain * mask)[None])


def _speckle(frames: np.ndarray, s: float, rng: Rng) -> np.ndarray:
    r = rng().rayleigh(math.sqrt(2.0 / math.pi), size=frames.shape).astype(np.float32)  # mean 1
    return _to_u8(frames.astype(np.float32) * ((1.0 - s) + s * r))


def _noise(frames: np.ndarray, sd: float, rng: Rng) -> np.ndarray:
    mask = sector_mask(frames)
    n = rng().normal(0.0, sd, size=frames.shape).astype(np.float32)
    return _to_u8((frames.astype(np.float32) + n) * mask[None])


def _blur(frames: np.ndarray, sigma: float, rng: Rng) -> np.ndarray:
    import cv2

    mask = sector_mask(frames)
    out = np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                     borderType=cv2.BORDER_CONSTANT) for f in frames])
    return out * mask[None]


def _warp(frames: np.ndarray, matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:]
    out = np.stack([cv2.warpAffine(f, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0) for f in frames])
    return out * mask[None]


def _zoom(frames: np.ndarray, s: float, rng: Rng) -> np.ndarray:
    mask = sector_mask(frames)
    vx, vy = sector_vertex(mask)
    m = np.array([[s, 0.0, vx * (1.0 - s)], [0.0, s, vy * (1.0 - s)]], np.float64)
    return _warp(frames, m, mask)


def _rotation(frames: np.ndarray, deg: float, rng: Rng) -> np.ndarray:
    import cv2

    mask = sector_mask(frames)
    return _warp(frames, cv2.getRotationMatrix2D(sector_vertex(mask), deg, 1.0), mask)


def _translation(frames: np.ndarray, px: float, rng: Rng) -> np.ndarray:
    mask = sector_mask(frames)
    return _warp(frames, np.array([[1.0, 0.0, px], [0.0, 1.0, 0.0]], np.float64), mask)


def _jpeg(frames: np.ndarray, quality: float, rng: Rng) -> np.ndarray:
    import cv2

    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(round(quality))]
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", f, params)
        if not ok:  # only on a broken OpenCV build; not a property of the data
            raise RuntimeError("OpenCV could not JPEG-encode a frame")
        out.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    return np.stack(out)


_OPS: dict[str, Callable[[np.ndarray, float, Rng], np.ndarray]] = {
    "gain-down": _gain, "gain-up": _gain, "tgc": _tgc, "gamma": _gamma, "speckle": _speckle,
    "blur": _blur, "zoom-in": _zoom, "zoom-out": _zoom, "rotation": _rotation,
    "translation": _translation, "jpeg": _jpeg, "noise": _noise,
}


def transform(frames: np.ndarray, name: str, value: float, rng: np.random.Generator) -> np.ndarray:
    """Shift `name` at any strength `value` (not only a named level), drawing from `rng`: the
    training augmentations (`echoedge.data.augment`) sample strengths between the levels. Frame-rate
    shifts change the frame count and are not offered here."""
    op = _OPS.get(name)
    if op is None:
        raise EchoEdgeError(f"shift '{name}' has no per-frame transform (shifts: {', '.join(_OPS)})")
    return np.ascontiguousarray(op(np.asarray(frames), float(value), lambda: rng), dtype=np.uint8)
