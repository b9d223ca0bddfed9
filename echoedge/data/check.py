"""`echo-edge data check`: every problem of a dataset folder, one line each, never an exception.

A problem is fatal when the reader would refuse the dataset or drop data because of it. The
CSV and tracing rules are the reader's own (`echonet.scan`), so the two cannot disagree; this
module adds what needs the videos decoded (and the clip length). Untraced videos are one warning
line with their count (EF-only data is valid), unless `require_tracings` asks for
EchoNet-Dynamic's rule, under which each is excluded, as the reader then does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet_csv import FILELIST, TRACINGS, FileRow
from echoedge.data.echonet_scan import SPLITS, VIDEOS, Scan, scan
from echoedge.errors import DataError


@dataclass
class Problem:
    """`row` is the 1-based line number in `file` (the header is line 1); `file` is relative to
    the dataset root."""

    file: str
    row: int | None
    message: str
    fatal: bool

    def line(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        return f"{where}: {self.message} ({'fatal' if self.fatal else 'warning'})"


def check_dataset(root: Path, decode_videos: bool = True, spec: ClipSpec | None = None,
                  require_tracings: bool = False) -> list[Problem]:
    """All problems of the dataset at `root`; `spec` sets the clip length for the too-short test;
    `require_tracings` checks under EchoNet-Dynamic's rule (untraced videos excluded)."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), None, "dataset folder not found", True)]
    spec = spec or ClipSpec()
    s = scan(root, require_tracings=require_tracings)
    problems = [Problem(i.file, i.line, i.message, i.kind != "warning") for i in s.issues]
    if not (root / FILELIST).is_file():
        return problems
    problems += _split_problems(s)
    rows = {r.name: r for r in s.rows}
    kept = {r.file_name for r in s.records}
    for name, row in rows.items():
        if row.num_frames < spec.span:
            problems.append(Problem(FILELIST, row.line, f"{name}: {row.num_frames} frames, shorter "
                                    f"than a {spec.frames}-frame period-{spec.period} clip "
                                    f"({spec.span} frames); it will be padded", False))
    if decode_videos:
        for name, row in rows.items():
            if name in s.on_disk:
                problems += _video_problems(s, row, name in kept)
    return sorted(problems, key=_reading_order)


def _reading_order(p: Problem) -> tuple[int, str, int]:
    """FileList.csv, then VolumeTracings.csv, then the videos, each top to bottom."""
    rank = {FILELIST: 0, TRACINGS: 1}.get(p.file, 2)
    return rank, p.file, p.row or 0


def _split_problems(s: Scan) -> list[Problem]:
    counts = Counter(r.split for r in s.records)
    if not s.records:
        return [Problem(FILELIST, None, "no usable videos in any split", True)]
    # An evaluation-only set may well lack TRAIN: the reader refuses only when that split is asked.
    return [Problem(FILELIST, None, f"split {sp} is empty (fine for validate and run, which need "
                    "only the split they evaluate; train needs TRAIN and VAL)", False)
            for sp in SPLITS if counts[sp] == 0]


def _video_problems(s: Scan, row: FileRow, kept: bool) -> list[Problem]:
    from echoedge.data.video import read_video

    path = s.on_disk[row.name]
    rel = f"{VIDEOS}/{path.name}"
    try:
        frames = read_video(path)
    except DataError as e:
        return [Problem(rel, None, _strip_path(str(e), path), True)]
    out: list[Problem] = []
    f, h, w = frames.shape
    if f != row.num_frames:
        out.append(Problem(rel, None, f"decodes to {f} frames, FileList.csv says NumberOfFrames "
                           f"{row.num_frames}", False))
    if (row.listed_height, row.listed_width) != (h, w) and row.listed_height is not None:
        out.append(Problem(FILELIST, row.line, f"{row.name}: FrameHeight x FrameWidth "
                           f"{row.listed_height}x{row.listed_width} is stale, the video is {h}x{w} "
                           "(the reader trusts the video)", False))
    for frame, rows in sorted((s.tracings or {}).get(row.name, {}).items()):
        if frame >= f and frame < row.num_frames and kept:
            out.append(Problem(TRACINGS, rows[0][0], f"{row.name}: traced frame {frame} is beyond "
                               f"the {f} frames the video decodes to", True))
    return out


def _strip_path(message: str, path: Path) -> str:
    # read_video's messages start with the absolute path; the Problem already names the file.
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
