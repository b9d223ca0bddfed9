"""A plain video (AVI, MP4, MOV, M4V; any size, grey or colour) -> Cine, decoded with OpenCV.

The frame rate comes from the container (CAP_PROP_FPS). A container that states none, or a
nonsense one, makes the input unusable rather than silently 30 fps (EchoNet's notebook default):
a wrong rate goes unnoticed into FileList.csv and into every stream replay. `fps` (the command's
--fps) overrides the container for files whose rate is missing or wrong.

cv2 is imported inside the functions: this module is on the CLI's import path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from echoedge.data.ingest.cine import Cine, UnusableInput

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".m4v")
MAX_FPS = 1000.0  # above any echo frame rate: a larger value is a broken header, not a fast probe


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def quiet_ffmpeg() -> None:
    # FFmpeg prints its decoder complaints ("[h264 @ 0x...] error while decoding") straight to
    # stderr; a corrupt input is reported once, as an UnusableInput, so keep the console clean.
    # OpenCV reads this variable once, when its FFmpeg backend is first used (8 = AV_LOG_FATAL).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")


def container_fps(value: float) -> float | None:
    """The container's frame rate, or None when it states none or nonsense."""
    return float(value) if math.isfinite(value) and 0 < value <= MAX_FPS else None


def read_video_cine(path: Path, fps: float | None = None) -> Cine:
    """Decode every frame of a video as RGB uint8 (T, H, W, 3). Raises UnusableInput."""
    import cv2

    quiet_ffmpeg()
    path = Path(path)
    # FFmpeg only, when present: on a file it cannot open, OpenCV's fallback AVI reader prints
    # its parser's complaints to stderr, and the file is unusable either way.
    api = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # its "can't open" warnings
    try:
        cap = cv2.VideoCapture(str(path), api)
    finally:
        cv2.utils.logging.setLogLevel(level)
    try:
        if not cap.isOpened():
            raise UnusableInput(path, "OpenCV cannot open this video (corrupt, or a codec it lacks)")
        stated = container_fps(cap.get(cv2.CAP_PROP_FPS))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:  # some backends hand grey sources through as one channel
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            else:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise UnusableInput(path, "no decodable frames (corrupt or empty video)")
    if fps is not None:
        rate, source = float(fps), "--fps"
    elif stated is not None:
        rate, source = stated, "container"
    else:
        raise UnusableInput(path, "the container states no usable frame rate; give it with --fps")
    notes = {"container": path.suffix.lower().lstrip("."), "codec": codec or "unknown"}
    if stated is not None and fps is not None:
        notes["container_fps"] = f"{stated:g}"
    return Cine(source=path, frames=np.stack(frames), fps=rate, fps_source=source, notes=notes)


__all__ = ["MAX_FPS", "VIDEO_SUFFIXES", "container_fps", "is_video", "quiet_ffmpeg", "read_video_cine"]
