"""Decode each video once: a per-dataset folder of uint8 (F, H, W) .npy files, memory-mapped.

MJPG decoding costs more than a training step on a small model, so every epoch after the first
would otherwise be decode-bound. Files live in `<cache_dir>/<dataset fingerprint>/`: a changed
FileList, VolumeTracings or set of videos gets a fresh folder instead of stale frames.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from echoedge.data.video import read_video
from echoedge.errors import DataError

if TYPE_CHECKING:
    from echoedge.data.echonet import EchoNet, VideoRecord


def default_cache_dir() -> Path:
    """$ECHOEDGE_CACHE/frames, else ~/.cache/echo-edge/frames.

    ECHOEDGE_CACHE names the cache root shared with the default synthetic dataset
    (echoedge/data/default.py), so frames go in a subfolder of it.
    """
    root = os.environ.get("ECHOEDGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "echo-edge") / "frames"


def _save_atomic(path: Path, frames: np.ndarray) -> None:
    # tmp + os.replace: a killed build or two processes racing never leave a half-written file.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(frames, dtype=np.uint8))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _decode_to(video: str, out: str) -> str | None:
    """Worker: decode one video into the cache; the error message on failure (never raises)."""
    try:
        _save_atomic(Path(out), read_video(video))
    except DataError as e:
        return str(e)
    return None


class FrameCache:
    """frames_source backed by a folder of .npy files; picklable (holds only paths)."""

    def __init__(self, reader: "EchoNet", cache_dir: Path | None = None) -> None:
        self.dir = Path(cache_dir or default_cache_dir()) / reader.fingerprint()

    def __repr__(self) -> str:
        return f"FrameCache({str(self.dir)!r})"

    def path(self, record: "VideoRecord") -> Path:
        return self.dir / f"{record.file_name}.npy"

    def build(self, records: Iterable["VideoRecord"], workers: int = 1, progress: bool = True) -> int:
        """Decode every record not cached yet; returns how many were decoded.

        Raises DataError after the others are done if some videos could not be decoded.
        """
        from rich.progress import Progress

        self.dir.mkdir(parents=True, exist_ok=True)
        todo = {str(r.path): str(self.path(r)) for r in records if not self.path(r).is_file()}
        errors: list[str] = []
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("decoding videos", total=len(todo))
            if workers > 1 and len(todo) > 1:
                import multiprocessing as mp

                # spawn, not fork: the parent may hold torch/OpenCV threads, which fork copies broken.
                with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
                    for err in pool.imap_unordered(_star_decode, todo.items(), chunksize=4):
                        errors += [err] if err else []
                        bar.advance(task)
            else:
                for video, out in todo.items():
                    err = _decode_to(video, out)
                    errors += [err] if err else []
                    bar.advance(task)
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise DataError(f"{errors[0]}{more}")
        return len(todo)

    def __call__(self, record: "VideoRecord") -> np.ndarray:
        """uint8 (F, H, W) frames, memory-mapped from the cache; decoded and cached on a miss."""
        path = self.path(record)
        try:
            frames = np.load(path, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            # A miss, or a file from an interrupted older writer: decode again.
            frames = read_video(record.path)
            self.dir.mkdir(parents=True, exist_ok=True)
            _save_atomic(path, frames)
        record.frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        return frames


def _star_decode(item: tuple[str, str]) -> str | None:
    return _decode_to(*item)
