"""Clip sampling and normalisation: the one path shared by training, calibration and validation.

A clip is `spec.frames` frames taken every `spec.period` frames from a start index, resized to
spec.height x spec.width, normalised as (pixel - mean) / std, shaped (C, T, H, W) float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from echoedge.data.clipspec import ClipSpec
from echoedge.errors import DataError

if TYPE_CHECKING:
    from echoedge.data.echonet import EchoNet, VideoRecord


def last_start(num_frames: int, spec: ClipSpec) -> int:
    """Largest start whose clip ends inside the video; 0 for a video shorter than a clip."""
    return max(int(num_frames) - spec.span, 0)


def random_start(num_frames: int, spec: ClipSpec, rng: np.random.Generator) -> int:
    """A uniform random start among those whose clip fits (0 for a short video: it is padded)."""
    return int(rng.integers(0, last_start(num_frames, spec) + 1))


def eval_starts(num_frames: int, spec: ClipSpec, n: int | None) -> list[int]:
    """n evenly spaced starts, first and last included (all starts when n is None).

    Fewer than n come back when the video has fewer distinct starts; [0] for a short video.
    """
    last = last_start(num_frames, spec)
    if n is None:
        return list(range(last + 1))
    if n < 1:
        raise ValueError(f"clips per video must be >= 1 or None, got {n}")
    return sorted({int(round(x)) for x in np.linspace(0, last, n)})


def clip_indices(start: int, spec: ClipSpec) -> np.ndarray:
    """Source frame indices of the clip starting at `start`."""
    return int(start) + spec.period * np.arange(spec.frames)


def extract_clip(frames: np.ndarray, start: int, spec: ClipSpec) -> np.ndarray:
    """(F, H, W) uint8 frames -> normalised clip, float32 (C, T, H, W).

    Frames past the end of the video are 0 in normalised space, i.e. the mean grey: the EchoNet
    reference loader (echonet/datasets/echo.py) normalises first and then pads short videos with
    zeros ("0 represents the mean color (dark grey), since this is after normalization").
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (F, H, W), got shape {frames.shape}")
    if start < 0:
        raise ValueError(f"clip start must be >= 0, got {start}")
    idx = clip_indices(start, spec)
    valid = idx < frames.shape[0]
    sel = frames[idx[valid]]
    if sel.shape[1:] != (spec.height, spec.width):
        # INTER_AREA averages source pixels, so a downscale does not alias the speckle.
        sel = np.stack([cv2.resize(f, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
                        for f in sel]) if len(sel) else np.zeros((0, spec.height, spec.width), np.uint8)
    out = np.zeros((spec.frames, spec.height, spec.width), dtype=np.float32)
    out[valid] = (sel.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
    clip = out[None]
    if spec.channels == 3:
        clip = np.repeat(clip, 3, axis=0)
    return np.ascontiguousarray(clip)


def draw_shift(pad: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random (dy, dx) content shift in [-pad, pad] pixels.

    The reference draws the crop offset with randint(0, 2 * pad), which can shift by +pad but never
    by -pad; we keep the shift symmetric.
    """
    if pad <= 0:
        return 0, 0
    dy, dx = rng.integers(-pad, pad + 1, size=2)
    return int(dy), int(dx)


def shift_clip(clip: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the image content of a (C, T, H, W) clip by (dy, dx) pixels; the uncovered border is 0.

    Equal to zero-padding by max(|dy|, |dx|) and cropping the original size back, as the reference
    augmentation does; 0 is the mean grey because the clip is already normalised.
    """
    if dy == 0 and dx == 0:
        return clip
    h, w = clip.shape[-2:]
    out = np.zeros_like(clip)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., dst_y, dst_x] = clip[..., src_y, src_x]
    return out


def shift_augment(clip: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """The reference augmentation: zero-pad by `pad` pixels and crop a random window back."""
    return shift_clip(clip, *draw_shift(pad, rng))


def clip_contains(start: int, frame: int, spec: ClipSpec) -> bool:
    """Whether `frame` lies within the clip's span [start, start + span - 1]."""
    return int(start) <= int(frame) <= int(start) + spec.span - 1


def frame_position(start: int, frame: int, spec: ClipSpec) -> float:
    """Fractional index of `frame` inside the clip (0 = first clip frame, T - 1 = last)."""
    return (int(frame) - int(start)) / spec.period


def compute_mean_std(reader: "EchoNet", split: str = "TRAIN", max_videos: int | None = 200,
                     frames_source: Callable[["VideoRecord"], np.ndarray] | None = None
                     ) -> tuple[float, float]:
    """Pixel mean and sd (0-255 scale) over a split's videos.

    With max_videos, an evenly spaced subset in FileList order: deterministic, and spread over
    the whole list rather than its head.
    """
    records = reader.records(split)
    if max_videos is not None and len(records) > max_videos:
        pick = np.unique(np.linspace(0, len(records) - 1, max_videos).round().astype(int))
        records = [records[i] for i in pick]
    source = frames_source or reader.load_frames
    n, s, ss = 0, 0.0, 0.0
    for rec in records:
        f = np.asarray(source(rec))
        n += f.size
        s += float(f.sum(dtype=np.float64))
        ss += float(np.square(f, dtype=np.float64).sum())
    mean = s / n
    std = float(np.sqrt(max(ss / n - mean * mean, 0.0)))
    if not std > 0:
        raise DataError(f"{reader.root}: pixel sd over {split} is 0 (every frame is blank?)")
    return float(mean), std
