"""Scanning a dataset folder: both CSVs and Videos/ joined into usable `VideoRecord`s and issues.

`scan` never raises on bad data; it picks each video's ED and ES tracings (`choose_traced_frames`)
and excludes, with a reason, the videos a model cannot use.

Tracings are optional. A video with no row in VolumeTracings.csv (or a dataset without that file)
is kept with its EF/EDV/ESV labels: EF validation works, landmark metrics are n/a, and training
masks the landmark terms. Broken tracings (a frame with the wrong row count, one traced frame, a
frame beyond the video) still exclude the video. `require_tracings=True` is EchoNet-Dynamic's own
rule instead (its loader drops every video without two traced frames and needs the file), for
reproducing published numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoedge.data.echonet_csv import (
    FILELIST, TRACINGS, FileRow, Issue, TracedRows, parse_filelist, parse_tracings,
)
from echoedge.data.landmarks import NUM_ROWS, canonical_landmarks, normalise, simpson_volume_rows

VIDEOS = "Videos"
SPLITS = ("TRAIN", "VAL", "TEST")
DEFAULT_FRAME_SIZE = (112, 112)  # (height, width) of every EchoNet-Dynamic video


@dataclass(eq=False)
class VideoRecord:
    """One usable video with its labels; tracings are in pixels, landmarks normalised to [0, 1]."""

    file_name: str  # without .avi
    path: Path
    ef: float
    esv: float  # NaN when the FileList cell is empty (volume targets are then masked)
    edv: float
    fps: float
    num_frames: int  # as listed in FileList.csv; the decoded video may differ by a frame or two
    split: str
    ed_frame: int | None = None
    es_frame: int | None = None
    ed_tracing: np.ndarray | None = field(default=None, repr=False)  # (21, 4) px
    es_tracing: np.ndarray | None = field(default=None, repr=False)
    ed_volume_px: float | None = None
    es_volume_px: float | None = None
    # (height, width) of the video file. None until known: filled by load_frames / the frame cache,
    # or probed from the AVI header on first landmark access (FileList's columns can be stale).
    frame_size: tuple[int, int] | None = None

    @property
    def has_tracings(self) -> bool:
        return self.ed_tracing is not None and self.es_tracing is not None

    @property
    def ed_landmarks(self) -> np.ndarray | None:
        """(42, 2) canonical landmarks of the ED frame, normalised by the video's frame size."""
        return self._landmarks(self.ed_tracing)

    @property
    def es_landmarks(self) -> np.ndarray | None:
        return self._landmarks(self.es_tracing)

    def size(self) -> tuple[int, int]:
        """(height, width) of the video, read from the file header once, 112x112 if unreadable."""
        if self.frame_size is None:
            self.frame_size = probe_frame_size(self.path) or DEFAULT_FRAME_SIZE
        return self.frame_size

    def _landmarks(self, tracing: np.ndarray | None) -> np.ndarray | None:
        if tracing is None:
            return None
        h, w = self.size()
        return normalise(canonical_landmarks(tracing), width=w, height=h)


def probe_frame_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the AVI header without decoding, or None if OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (h, w) if h > 0 and w > 0 else None


@dataclass
class Scan:
    """Everything `scan` learnt about a dataset folder."""

    root: Path
    issues: list[Issue] = field(default_factory=list)
    rows: list[FileRow] = field(default_factory=list)
    records: list[VideoRecord] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    tracings: dict[str, dict[int, TracedRows]] | None = None  # None: no VolumeTracings.csv
    on_disk: dict[str, Path] = field(default_factory=dict)  # FileName -> AVI path
    listed: set[str] = field(default_factory=set)  # every FileName in FileList, bad rows too
    require_tracings: bool = False  # EchoNet-Dynamic's rule: untraced videos are excluded

    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.kind == "error"]


@dataclass
class TracingChoice:
    ed_frame: int
    es_frame: int
    ed_rows: np.ndarray
    es_rows: np.ndarray
    ed_volume: float
    es_volume: float


def choose_traced_frames(name: str, frames: dict[int, TracedRows], num_frames: int
                         ) -> tuple[TracingChoice | None, str | None, list[Issue]]:
    """Pick ED and ES among a video's traced frames: (choice, exclusion reason, issues).

    ED is the frame with the larger Simpson volume: row order is not reliable across tools.
    A frame we cannot use is dropped, never realigned; fewer than two usable frames excludes the
    video, as the reference loader does.
    """
    usable: dict[int, np.ndarray] = {}
    dropped: list[tuple[int, str]] = []
    for frame in sorted(frames):
        rows = frames[frame]
        if len(rows) != NUM_ROWS:
            dropped.append((rows[0][0], f"traced frame {frame} has {len(rows)} rows (expected {NUM_ROWS})"))
        elif frame >= num_frames:
            dropped.append((rows[0][0], f"traced frame {frame} is beyond the video's {num_frames} "
                            "frames (NumberOfFrames)"))
        else:
            usable[frame] = np.array([c for _, c in rows], dtype=np.float64)
    if len(usable) < 2:
        if dropped:
            detail = "; ".join(m for _, m in dropped)
        elif usable:
            detail = f"only frame {next(iter(usable))} is traced"
        else:
            detail = "no rows in VolumeTracings.csv"
        reason = f"fewer than two usable traced frames: {detail}"
        line = dropped[0][0] if dropped else (min(r[0][0] for r in frames.values()) if frames else None)
        return None, reason, [Issue(TRACINGS, line, f"{name}: {reason}; video excluded", "exclude", name)]
    issues = [Issue(TRACINGS, line, f"{name}: {m}; frame ignored", "warning", name) for line, m in dropped]
    volumes = {f: simpson_volume_rows(r) for f, r in usable.items()}
    ed = max(volumes, key=volumes.__getitem__)
    es = min(volumes, key=volumes.__getitem__)
    first_line = frames[min(usable)][0][0]
    if ed == es:  # all volumes equal: nothing tells ED from ES, so fall back to frame order
        ed, es = sorted(usable)[:2]
        issues.append(Issue(TRACINGS, first_line, f"{name}: traced frames have equal volumes; "
                            f"took frame {ed} as ED and {es} as ES", "warning", name))
    if len(usable) > 2:
        issues.append(Issue(TRACINGS, first_line, f"{name}: {len(usable)} traced frames "
                            f"({', '.join(map(str, sorted(usable)))}); kept the largest (ED, frame "
                            f"{ed}) and the smallest (ES, frame {es})", "warning", name))
    choice = TracingChoice(ed, es, usable[ed], usable[es], volumes[ed], volumes[es])
    return choice, None, issues


def _scan_videos(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.lower().endswith(".avi") and not entry.name.startswith("."):
                out[entry.name[:-4]] = Path(entry.path)
    return out


def scan(root: Path, require_tracings: bool = False) -> Scan:
    """Parse a dataset folder and collect every problem; raises nothing on bad data.

    The root itself must exist (callers check, because they report it differently).
    `require_tracings` applies EchoNet-Dynamic's rule (see the module docstring).
    """
    root = Path(root)
    s = Scan(root=root, require_tracings=require_tracings)
    filelist, tracings, videos = root / FILELIST, root / TRACINGS, root / VIDEOS
    if not filelist.is_file():
        s.issues.append(Issue(FILELIST, None, "file not found", "error"))
        return s
    have_videos = videos.is_dir()
    if not have_videos:
        s.issues.append(Issue(VIDEOS, None, "folder not found", "error"))
    s.rows = parse_filelist(filelist, s.issues, s.listed)
    if tracings.is_file():
        s.tracings = parse_tracings(tracings, s.issues)
    elif require_tracings:
        s.issues.append(Issue(TRACINGS, None, "file not found (required: EchoNet-Dynamic's rule "
                              "keeps only traced videos)", "error"))
    if have_videos:
        s.on_disk = _scan_videos(videos)
        for name in sorted(set(s.on_disk) - s.listed):
            s.issues.append(Issue(f"{VIDEOS}/{s.on_disk[name].name}", None,
                                  "video not listed in FileList.csv; ignored", "warning", name))
    for name in sorted(set(s.tracings or {}) - s.listed):
        line = min(r[0][0] for r in s.tracings[name].values())
        s.issues.append(Issue(TRACINGS, line, f"{name}: traced but not listed in FileList.csv; "
                              "ignored", "warning", name))
    for row in s.rows:
        _add_record(s, row, have_videos)
    untraced = None if require_tracings else untraced_note(s)  # excluded (or refused) instead
    if untraced:
        s.issues.append(Issue(TRACINGS, None, untraced, "warning"))
    return s


def untraced_note(s: Scan) -> str | None:
    """The one line that says how many kept videos have no tracings (None when all are traced).

    One line for the dataset, not one per video: an EF-only set of 10,000 videos is normal, not
    10,000 problems.
    """
    n = sum(not r.has_tracings for r in s.records)
    if not n:
        return None
    text = (f"{n} of {len(s.records)} videos have no tracings: EF validation only, landmark "
            "metrics n/a")
    return text if s.tracings is not None else f"file not found; {text}"


def _add_record(s: Scan, row: FileRow, have_videos: bool) -> None:
    reasons: list[tuple[str, Issue]] = []

    def exclude(reason: str, file: str, line: int | None) -> None:
        reasons.append((reason, Issue(file, line, f"{row.name}: {reason}; video excluded",
                                      "exclude", row.name)))

    if row.split not in SPLITS:
        exclude(f"unknown split: {row.split!r} (expected {', '.join(SPLITS)})", FILELIST, row.line)
    if math.isnan(row.ef):
        exclude("empty EF: no target", FILELIST, row.line)
    if have_videos and row.name not in s.on_disk:
        exclude(f"video file missing: {VIDEOS}/{row.name}.avi", FILELIST, row.line)
    choice = None
    traced = (s.tracings or {}).get(row.name, {})
    # A video without a single tracing row is an EF-only video, kept unless EchoNet's rule asks.
    if traced or (s.require_tracings and s.tracings is not None):
        choice, reason, issues = choose_traced_frames(row.name, traced, row.num_frames)
        if reason is None:
            s.issues.extend(issues)
        else:
            reasons.append((reason, issues[0]))
    if reasons:
        s.issues.extend(issue for _, issue in reasons)
        s.excluded.append((row.name, reasons[0][0]))
        return
    path = s.on_disk.get(row.name, root_video_path(s.root, row.name))
    rec = VideoRecord(file_name=row.name, path=path, ef=row.ef, esv=row.esv, edv=row.edv,
                      fps=row.fps, num_frames=row.num_frames, split=row.split)
    if choice is not None:
        rec.ed_frame, rec.es_frame = choice.ed_frame, choice.es_frame
        rec.ed_tracing, rec.es_tracing = choice.ed_rows, choice.es_rows
        rec.ed_volume_px, rec.es_volume_px = choice.ed_volume, choice.es_volume
    s.records.append(rec)


def root_video_path(root: Path, name: str) -> Path:
    return Path(root) / VIDEOS / f"{name}.avi"


__all__ = [
    "DEFAULT_FRAME_SIZE", "SPLITS", "VIDEOS", "Scan", "TracingChoice", "VideoRecord",
    "choose_traced_frames", "probe_frame_size", "root_video_path", "scan", "untraced_note",
]
