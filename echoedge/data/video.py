"""AVI read/write with OpenCV, in EchoNet-Dynamic's encoding (MJPG, three identical channels)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from echoedge.errors import DataError


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video to grayscale uint8 frames, shape (F, H, W).

    EchoNet stores grey as three nearly identical channels; we keep their mean, which is what a
    probe's single-channel frame would be. Raises DataError naming the file when it cannot be read.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: OpenCV cannot open this video (corrupt or not an AVI/MJPG file)")
    frames = []
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        while True:
            try:
                ok, frame = cap.read()
            except cv2.error as e:  # seen on damaged headers; not a bug of ours
                raise DataError(f"{path}: frame {len(frames)} is undecodable "
                                f"({str(e).strip().splitlines()[-1][:120]})") from None
            if not ok:
                break
            if frame.ndim == 3:
                frame = frame.mean(axis=2).round().astype(np.uint8)
            if frames and frame.shape != frames[0].shape:
                # A damaged JPEG header can change one frame's size; stacking would fail or,
                # resized, hide the damage.
                raise DataError(f"{path}: frame {len(frames)} is {frame.shape[0]}x{frame.shape[1]}, "
                                f"frame 0 is {frames[0].shape[0]}x{frames[0].shape[1]} (corrupt video)")
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise DataError(f"{path}: no decodable frames (corrupt or empty video)")
    if 0 < len(frames) < declared:
        # OpenCV stops at the first frame it cannot decode; returning the frames before it would
        # hand a truncated clip (and a shorter cycle) on as if it were the whole video.
        raise DataError(f"{path}: decoded {len(frames)} of the {declared} frames its header declares "
                        f"(truncated or corrupt from frame {len(frames)})")
    return np.stack(frames)


def video_fps(path: str | Path) -> float | None:
    """The frame rate the file's container states, or None when it states none (0 or NaN)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (corrupt or not an AVI/MJPG file)")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    return fps if np.isfinite(fps) and fps > 0 else None


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write grayscale uint8 frames (F, H, W) as an MJPG AVI with three identical channels.

    Written to a temporary name in the same folder and renamed, so a crash leaves no half file.
    """
    import cv2

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W), got {frames.dtype} {frames.shape}")
    f, h, w = frames.shape
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h), True)
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot open an MJPG writer")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)
