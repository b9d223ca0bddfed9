"""The stream replay as a video: each frame with the newest predicted ED and ES contours drawn on
it, and a running EF trace below, written with OpenCV's VideoWriter (.mp4, codec mp4v) or imageio
(.gif). The picture shows, frame by frame, what the app would show at that moment: the result of
the newest hop whose clip ended at or before the frame.

The 42 landmarks of a phase (echoedge.data.landmarks: apex, base, then the chord ends side A and
side B, apex to base) are joined into the cavity outline apex -> side A -> base -> side B -> apex,
with the long axis across it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

ED_COLOUR = (80, 220, 80)  # BGR green
ES_COLOUR = (60, 60, 235)  # BGR red
TRACE_HEIGHT = 96
MIN_SIDE = 288  # small echo frames (112 x 112) are scaled up to be readable


def _outline(lm: np.ndarray) -> np.ndarray:
    """(K, 2) pixels -> the closed cavity outline, apex -> side A -> base -> side B (reversed)."""
    side_a, side_b = lm[2::2], lm[3::2]
    return np.concatenate([lm[:1], side_a, lm[1:2], side_b[::-1]])


def _draw_phase(img: np.ndarray, lm_norm: Sequence[Sequence[float]], colour: tuple[int, int, int]) -> None:
    import cv2

    h, w = img.shape[:2]
    lm = np.asarray(lm_norm, dtype=np.float64) * np.array([w, h])
    if len(lm) >= 4:
        cv2.polylines(img, [_outline(lm).round().astype(np.int32)], True, colour, 1, cv2.LINE_AA)
    cv2.line(img, tuple(int(v) for v in lm[0].round()), tuple(int(v) for v in lm[1].round()), colour, 1,
             cv2.LINE_AA)
    for p in lm[:2]:
        cv2.circle(img, tuple(int(v) for v in p.round()), 2, colour, -1, cv2.LINE_AA)


def _trace(width: int, n_frames: int, upto: Sequence[Any], current: Any | None) -> np.ndarray:
    """The EF trace strip: EF (0-100 %) of every hop so far against its newest frame."""
    import cv2

    strip = np.full((TRACE_HEIGHT, width, 3), 24, np.uint8)
    pad = 6

    def y(ef: float) -> int:
        return int(round(pad + (1.0 - min(max(ef, 0.0), 100.0) / 100.0) * (TRACE_HEIGHT - 2 * pad)))

    def x(frame: int) -> int:
        return int(round(frame * (width - 1) / max(n_frames - 1, 1)))

    for band in (40.0, 50.0):  # the clinical band limits
        cv2.line(strip, (0, y(band)), (width - 1, y(band)), (90, 90, 90), 1)
    pts = np.array([[x(h.newest_frame), y(h.ef)] for h in upto], np.int32)
    if len(pts) > 1:
        cv2.polylines(strip, [pts], False, (0, 200, 255), 1, cv2.LINE_AA)
    if len(pts):
        cv2.circle(strip, tuple(int(v) for v in pts[-1]), 3, (0, 200, 255), -1, cv2.LINE_AA)
    text = "EF --" if current is None else f"EF {current.ef:5.1f} %  hop {current.hop}  {current.latency_ms:.0f} ms"
    cv2.putText(strip, text, (6, TRACE_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1,
                cv2.LINE_AA)
    return strip


def render_frames(frames: np.ndarray, hops: Sequence[Any]) -> list[np.ndarray]:
    """BGR uint8 pictures, one per source frame: frame + newest contours, above the EF trace."""
    import cv2

    f = np.asarray(frames)
    h, w = f.shape[1:3]
    scale = max(1, int(np.ceil(MIN_SIDE / min(h, w))))
    out, k = [], 0
    for i, frame in enumerate(f):
        while k < len(hops) and hops[k].newest_frame <= i:
            k += 1
        current = hops[k - 1] if k else None
        img = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        # An EF-only model (the video ResNets) has no contours to draw: only the EF trace.
        if current is not None and current.ed_landmarks is not None:
            _draw_phase(img, current.ed_landmarks, ED_COLOUR)
            _draw_phase(img, current.es_landmarks, ES_COLOUR)
        if not hops or hops[0].ed_landmarks is not None:
            cv2.putText(img, "ED", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ED_COLOUR, 1, cv2.LINE_AA)
            cv2.putText(img, "ES", (32, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ES_COLOUR, 1, cv2.LINE_AA)
        out.append(np.vstack([img, _trace(img.shape[1], len(f), hops[:k], current)]))
    return out


def write_stream_video(path: Path, frames: np.ndarray, fps: float, hops: Sequence[Any], hop: int) -> Path:
    """Write the annotated replay to `path` (.mp4 or .gif), through a temporary name and a rename."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".gif"):
        raise EchoEdgeError(f"{path}: --video-out must end in .mp4 or .gif")
    pictures = render_frames(frames, hops)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{ext}")  # the writers pick the format by suffix
    try:
        if ext == ".mp4":
            _write_mp4(tmp, pictures, fps)
        else:
            import imageio.v2 as imageio

            # GIF delays are in centiseconds: 50 FPS plays at 50 FPS, faster rates are capped by viewers.
            imageio.mimsave(tmp, [p[:, :, ::-1] for p in pictures], duration=1000.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_mp4(path: Path, pictures: list[np.ndarray], fps: float) -> None:
    import cv2

    h, w = pictures[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h), True)
    if not writer.isOpened():
        raise EchoEdgeError(f"{path}: OpenCV cannot open an MP4 (mp4v) writer in this install")
    try:
        for p in pictures:
            writer.write(p)
    finally:
        writer.release()
