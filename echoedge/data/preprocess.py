"""The app-side input and output contract in Python: the reference the Java and Swift bridges mirror.

An app does not see EchoNet AVIs: it sees frames from a probe or camera, of any size, grey or
colour, arriving at whatever rate the device delivers. This module turns such frames into the
model's input exactly as the bridges do, and turns the model's outputs into what an app shows:

    frame (H, W) grey | (H, W, 3) RGB/BGR | (H, W, 4) RGBA/BGRA, uint8
      -> grey       (r + g + b + 1) // 3 on the first three channels (alpha ignored)
      -> resize     exact area average to spec.height x spec.width (float, no rounding)
      -> buffer     ClipBuffer keeps what a clip needs; frame mode takes every `period`-th
                    arriving frame (as training does), time mode the frames nearest to a
                    `model_fps` grid of `period / model_fps` seconds
      -> normalise  (v - mean) / std, float32, (C, T, H, W); C copies of grey when C == 3
      -> quantize   only for int8-input files: clamp(round_half_away(x / scale) + zp, -128, 127)
    outputs -> EF, EDV, ESV, EF band (<40 / 40-49 / >=50), landmarks in pixels of the original frame

Every step is written with plain integer and IEEE double arithmetic so that Java (`double`) and
Swift (`Double`) reproduce it to the last float32 bit or within 1e-5; the bridges' tests compare
them against this file on the same golden frames.

Why grey is the channel mean, not cv2.cvtColor's luma: the model was trained on
`echoedge.data.video.read_video`, which keeps the channel mean (rounded); (r + g + b + 1) // 3 is
that value exactly for every uint8 triple (sum / 3 has fractional part 0, 1/3 or 2/3, never 1/2),
and it does not depend on the channel order, so RGB and BGR frames need no flag.

Why the resize is hand-written: training resizes with OpenCV's INTER_AREA (echoedge.data.clips),
whose downscale is the exact area average implemented here; OpenCV is not available to an Android
or iOS app, and its uint8 output rounds in an implementation-defined order. `area_resize` states
the arithmetic (source interval [o * in / out, (o + 1) * in / out] per output pixel, weights =
overlap lengths / interval length, separable, rows after columns) so that Java and Swift implement
the same function; the tests check it equals cv2.resize(INTER_AREA) on float input when
downscaling. For an upscale it is still the exact box filter (each output pixel covers part of one
or two source pixels), which OpenCV's INTER_AREA upscale is not; probes deliver frames larger than
112 x 112, so training and app agree where it matters.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, ShapeError

# The clinical EF bands of echoedge.model.metrics (reduced, mildly reduced, preserved).
EF_BAND_LABELS = ("<40", "40-49", ">=50")


# --------------------------------------------------------------------------------------------
# One frame: grey, then resize
# --------------------------------------------------------------------------------------------


def to_gray(frame: np.ndarray) -> np.ndarray:
    """(H, W) / (H, W, 1) / (H, W, 3) / (H, W, 4) uint8 -> (H, W) uint8 grey (channel mean)."""
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        raise ShapeError(f"frames must be uint8, got {f.dtype}")
    if f.ndim == 2:
        return f
    if f.ndim == 3 and f.shape[2] == 1:
        return f[:, :, 0]
    if f.ndim == 3 and f.shape[2] in (3, 4):
        s = f[:, :, :3].astype(np.int32).sum(axis=2)
        return ((s + 1) // 3).astype(np.uint8)
    raise ShapeError(f"a frame must be (H, W) grey or (H, W, 3|4) colour, got shape {f.shape}")


# Cached: the weights depend on the two sizes only, and building them in Python costs ~10 ms per
# 112 -> 64 frame, which a live stream (echoedge.validate.stream) would pay on every frame.
@functools.lru_cache(maxsize=16)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of the exact area average along one axis (read-only: cached).

    Output pixel o covers the source interval [lo, hi) with lo = o * n_in / n_out and
    hi = (o + 1) * n_in / n_out (pixel i spans [i, i + 1)); the weight of source pixel i is
    (min(hi, i + 1) - max(lo, i)) / (hi - lo). Java/Swift compute the same numbers in the same
    order (ClipBuffer.areaWeights / areaWeights).
    """
    if n_in < 1 or n_out < 1:
        raise ShapeError(f"cannot resize between sizes {n_in} and {n_out}")
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        lo = o * n_in / n_out
        hi = (o + 1) * n_in / n_out
        first = int(math.floor(lo))
        last = min(int(math.ceil(hi)), n_in)
        for i in range(first, last):
            w[o, i] = (min(hi, i + 1.0) - max(lo, float(i))) / (hi - lo)
    w.flags.writeable = False
    return w


def area_resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) grey (uint8 or float) -> (height, width) float64 grey levels, exact area average.

    Columns first, then rows (the order the Java and Swift loops use); a same-size "resize" is
    the identity exactly.
    """
    g = np.asarray(gray, dtype=np.float64)
    if g.ndim != 2:
        raise ShapeError(f"area_resize needs a 2-D grey frame, got shape {g.shape}")
    h, w = g.shape
    if (h, w) == (height, width):
        return g.copy()
    cols = g @ area_weights(w, width).T  # (h, width)
    return area_weights(h, height) @ cols  # (height, width)


def resize_frame(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """App frame -> (spec.height, spec.width) float64 grey levels on the 0-255 scale."""
    return area_resize(to_gray(frame), spec.height, spec.width)


def normalise(grey: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """(T, H, W) float64 grey levels -> (C, T, H, W) float32 model input, (v - mean) / std."""
    x = ((np.asarray(grey, dtype=np.float64) - float(spec.mean)) / float(spec.std)).astype(np.float32)
    clip = np.repeat(x[None], spec.channels, axis=0)
    return np.ascontiguousarray(clip)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (TFLite's std::round; Swift .toNearestOrAwayFromZero)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(clip: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Float model input -> int8 (or uint8) as an int8-input file wants: q = x / scale + zp, clamped."""
    if not scale > 0:
        raise EchoEdgeError(f"quantization scale must be > 0, got {scale}")
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    q = round_half_away(np.asarray(clip, dtype=np.float32).astype(np.float64) / float(scale)) + int(zero_point)
    return np.clip(q, lo, hi).astype(np.int8 if dtype == "int8" else np.uint8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized output -> float32: scale * (q - zp), in double then rounded to float32."""
    return (float(scale) * (np.asarray(q, dtype=np.float64) - int(zero_point))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The clip buffer
# --------------------------------------------------------------------------------------------


def offset_us(steps: int, spec: ClipSpec, model_fps: float) -> int:
    """Microseconds spanned by `steps` clip steps at `model_fps`: floor(x + 0.5) of the double
    steps * period * 1e6 / model_fps (Java/Swift: Math.floor / .rounded(.down) of the same)."""
    return int(math.floor(float(steps) * spec.period * 1_000_000.0 / float(model_fps) + 0.5))


@dataclass
class _Frame:
    timestamp_us: int
    index: int  # arrival number, 0-based
    grey: np.ndarray  # (H, W) float64 at the model size


@dataclass
class ClipBuffer:
    """Frames in, one model clip out; the Python twin of ClipBuffer.java / ClipBuffer.swift.

    Frame mode (`model_fps` None): every arriving frame is one source frame, as in training
    (EchoNet clips take every `period`-th frame whatever the video's FPS); the clip is the last
    `spec.span` frames, every `period`-th, ending at the newest.
    Time mode (`model_fps` set, e.g. 50 for EchoNet-rate training data): the clip samples the
    times t_k = t_newest - offset_us(T - 1 - k) and takes, for each, the buffered frame with the
    nearest timestamp (ties: the earlier frame), so a 30 or 60 FPS source gives the model the
    temporal spacing it was trained on. Timestamps must increase strictly.
    Frames are greyed and resized as they arrive, so the buffer holds model-size frames only.
    """

    spec: ClipSpec
    model_fps: float | None = None
    _frames: deque = field(default_factory=deque, init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)
    frame_height: int = field(default=0, init=False)  # size of the newest original frame
    frame_width: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.model_fps is not None and not self.model_fps > 0:
            raise EchoEdgeError(f"model_fps must be > 0, got {self.model_fps}")

    def add(self, frame: np.ndarray, timestamp_us: int | None = None) -> None:
        if self.model_fps is not None:
            if timestamp_us is None:
                raise EchoEdgeError("time mode (model_fps set) needs a timestamp for every frame")
            if self._frames and timestamp_us <= self._frames[-1].timestamp_us:
                raise EchoEdgeError(f"frame timestamps must increase: {timestamp_us} us after "
                                    f"{self._frames[-1].timestamp_us} us")
        f = np.asarray(frame)
        self.frame_height, self.frame_width = int(f.shape[0]), int(f.shape[1])
        ts = int(timestamp_us) if timestamp_us is not None else self._count
        self._frames.append(_Frame(ts, self._count, resize_frame(f, self.spec)))
        self._count += 1
        self._evict()

    def _evict(self) -> None:
        if self.model_fps is None:
            while len(self._frames) > self.spec.span:
                self._frames.popleft()
            return
        # The oldest frame can never be the nearest to the earliest target once the next one is
        # at or before it (timestamps increase strictly), so it goes.
        t0 = self._frames[-1].timestamp_us - offset_us(self.spec.frames - 1, self.spec, self.model_fps)
        while len(self._frames) >= 2 and self._frames[1].timestamp_us <= t0:
            self._frames.popleft()

    def ready(self) -> bool:
        if not self._frames:
            return False
        if self.model_fps is None:
            return len(self._frames) >= self.spec.span
        t0 = self._frames[-1].timestamp_us - offset_us(self.spec.frames - 1, self.spec, self.model_fps)
        return self._frames[0].timestamp_us <= t0

    def selected(self) -> list[int]:
        """Arrival indices of the frames the clip is made of, oldest first."""
        if not self.ready():
            raise EchoEdgeError(f"clip not ready: {len(self._frames)} frames buffered")
        frames = list(self._frames)
        if self.model_fps is None:
            return [frames[k * self.spec.period].index for k in range(self.spec.frames)]
        newest = frames[-1].timestamp_us
        out, j = [], 0
        for k in range(self.spec.frames):
            target = newest - offset_us(self.spec.frames - 1 - k, self.spec, self.model_fps)
            # Targets increase, so the nearest frame's position never moves back.
            while j + 1 < len(frames) and abs(frames[j + 1].timestamp_us - target) < abs(frames[j].timestamp_us - target):
                j += 1
            out.append(frames[j].index)
        return out

    def clip(self) -> np.ndarray:
        """The model input (C, T, H, W) float32 for the newest complete clip."""
        pos = {f.index: f for f in self._frames}
        grey = np.stack([pos[i].grey for i in self.selected()])
        return normalise(grey, self.spec)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass
class EchoResult:
    """What an app shows for one clip. Floats are the model's float32 values widened to double;
    landmarks are (x, y) pixels of the original frame, K per phase."""

    ef: float
    edv: float
    esv: float
    band: int  # index into EF_BAND_LABELS
    band_label: str
    ed_landmarks_px: list[list[float]]
    es_landmarks_px: list[list[float]]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def ef_band_index(ef: float) -> int:
    """0 for EF < 40, 1 for 40 <= EF < 50, 2 for EF >= 50 (echoedge.model.metrics.ef_band)."""
    return 0 if ef < 40.0 else (1 if ef < 50.0 else 2)


def landmarks_to_pixels(landmarks: np.ndarray, frame_height: int, frame_width: int) -> list[list[float]]:
    """(K, 2) normalised (x/W, y/H) -> pixel (x, y) of a frame_width x frame_height frame.

    The resize maps the whole frame [0, W] x [0, H] onto the model's [0, w] x [0, h] (area
    average, edges aligned), so a normalised coordinate scales back by the original size.
    """
    lm = np.asarray(landmarks, dtype=np.float32).astype(np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2:
        raise ShapeError(f"landmarks must be (K, 2), got {lm.shape}")
    return [[float(x) * frame_width, float(y) * frame_height] for x, y in lm]


def postprocess(outputs: tuple[np.ndarray, ...] | list[np.ndarray], frame_height: int, frame_width: int,
                item: int = 0) -> EchoResult:
    """Item `item` of a runner's 5 outputs -> EchoResult (Postprocessor.java / .swift)."""
    if len(outputs) != 5:
        raise ShapeError(f"Echo-E3Net has 5 outputs (ef, edv, esv, ed_landmarks, es_landmarks), got {len(outputs)}")
    ef, edv, esv = (float(np.asarray(o, dtype=np.float32).reshape(-1)[item]) for o in outputs[:3])
    band = ef_band_index(ef)
    return EchoResult(
        ef=ef, edv=edv, esv=esv, band=band, band_label=EF_BAND_LABELS[band],
        ed_landmarks_px=landmarks_to_pixels(np.asarray(outputs[3])[item], frame_height, frame_width),
        es_landmarks_px=landmarks_to_pixels(np.asarray(outputs[4])[item], frame_height, frame_width),
    )
