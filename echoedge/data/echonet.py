"""Reader for datasets in EchoNet-Dynamic's on-disk layout (see reference/echonet-format.md).

    <root>/FileList.csv         one row per video: labels, FPS, frame count, split
    <root>/VolumeTracings.csv   21 rows per traced frame (ED and ES), optional
    <root>/Videos/<FileName>.avi

Parsing is done once by `scan`, which never raises: it returns every problem it saw as an
`Issue`. `EchoNet` refuses a dataset with an "error" issue (one line, naming file and line) and
drops the videos with an "exclude" issue (listed in `EchoNet.excluded`); `check_dataset`
reports all of them. Both therefore agree on what is wrong by construction.

The CSVs are read with the `csv` module rather than pandas: two small text files do not justify
a heavy dependency, and reading cell by cell lets every error name its line.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import warnings
from collections import Counter
from operator import itemgetter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoedge.data.landmarks import NUM_ROWS, canonical_landmarks, normalise, simpson_volume_rows
from echoedge.data.video import read_video
from echoedge.errors import DataError

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEOS = "Videos"
SPLITS = ("TRAIN", "VAL", "TEST")
# FrameHeight/FrameWidth are not required: some rows carry stale values and the video decides.
FILELIST_REQUIRED = ("FileName", "EF", "ESV", "EDV", "FPS", "NumberOfFrames", "Split")
FILELIST_OPTIONAL = ("FrameHeight", "FrameWidth")
TRACINGS_REQUIRED = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
DEFAULT_FRAME_SIZE = (112, 112)  # (height, width) of every EchoNet-Dynamic video
EF_TOLERANCE = 1.0  # EF points between FileList's EF and 100*(EDV-ESV)/EDV before we warn


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
class Issue:
    """One problem found while scanning a dataset.

    kind: "error" (the reader refuses the dataset), "exclude" (the reader drops `video`) or
    "warning" (kept as is). `line` is the 1-based line number in `file` (the header is line 1).
    """

    file: str  # relative to the dataset root
    line: int | None
    message: str
    kind: str
    video: str | None = None


@dataclass
class FileRow:
    """One parsed FileList.csv row; FrameHeight/FrameWidth as listed (may be stale, never used)."""

    line: int
    name: str
    ef: float
    esv: float
    edv: float
    fps: float
    num_frames: int
    split: str
    listed_height: int | None = None
    listed_width: int | None = None


# A traced frame: its rows as (line number, (x1, y1, x2, y2)), in file order.
TracedRows = list[tuple[int, tuple[float, float, float, float]]]


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

    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.kind == "error"]


class _CellError(ValueError):
    pass


def strip_avi(name: str) -> str:
    name = name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _float_cell(cell: str, column: str, allow_empty: bool = False) -> float:
    cell = cell.strip()
    if cell == "":
        if allow_empty:
            return math.nan
        raise _CellError(f"empty {column}")
    try:
        v = float(cell)
    except ValueError:
        raise _CellError(f"{column} {cell!r} is not a number") from None
    if math.isnan(v):
        raise _CellError(f"NaN in {column}")
    if math.isinf(v):
        raise _CellError(f"infinite {column}")
    return v


def _is_nan_text(cell: str) -> bool:  # float() also accepts "nan", "NaN", " -nan "
    try:
        return math.isnan(float(cell))
    except ValueError:
        return False


def _int_cell(cell: str, column: str) -> int:
    v = _float_cell(cell, column)
    if not v.is_integer():
        raise _CellError(f"{column} {cell!r} is not an integer")
    return int(v)


def _read_csv(path: Path, rel: str, required: tuple[str, ...], optional: tuple[str, ...],
              issues: list[Issue]) -> list[tuple[int, dict[str, str]]] | None:
    """Rows as (line number, {column: cell}); None when the file cannot be parsed at all."""
    out: list[tuple[int, dict[str, str]]] = []
    try:
        # utf-8-sig: a spreadsheet export may start with a byte-order mark glued to "FileName".
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                issues.append(Issue(rel, 1, "empty file (no header)", "error"))
                return None
            missing = [c for c in required if c not in header]
            if missing:
                issues.append(Issue(rel, 1, f"missing column(s) {', '.join(missing)} "
                                    f"(header is {','.join(header)})", "error"))
                return None
            names = [c for c in (*required, *optional) if c in header]
            pick = itemgetter(*[header.index(c) for c in names])
            for cells in reader:
                if not "".join(cells).strip():
                    continue  # blank lines (a trailing newline, an editor's habit) are harmless
                if len(cells) < len(header):
                    issues.append(Issue(rel, reader.line_num,
                                        f"{len(cells)} fields, the header has {len(header)}", "error"))
                    continue
                # Cells are not stripped here (that costs a second on the real file); every
                # consumer strips or float()s, which ignores surrounding blanks.
                out.append((reader.line_num, dict(zip(names, pick(cells)))))
    except UnicodeDecodeError:
        issues.append(Issue(rel, None, "not UTF-8 text (is this really a CSV file?)", "error"))
        return None
    except csv.Error as e:
        issues.append(Issue(rel, None, f"unreadable CSV: {e}", "error"))
        return None
    return out


def parse_filelist(path: Path, issues: list[Issue], listed: set[str]) -> list[FileRow]:
    table = _read_csv(path, FILELIST, FILELIST_REQUIRED, FILELIST_OPTIONAL, issues)
    rows: list[FileRow] = []
    first_line: dict[str, int] = {}
    for line, cells in table or []:
        name = strip_avi(cells["FileName"])
        if not name:
            issues.append(Issue(FILELIST, line, "empty FileName", "error"))
            continue
        listed.add(name)
        if name in first_line:
            issues.append(Issue(FILELIST, line, f"duplicate FileName {name} (first on line "
                                f"{first_line[name]})", "error", name))
            continue
        first_line[name] = line
        try:
            row = FileRow(
                line=line, name=name,
                ef=_float_cell(cells["EF"], "EF", allow_empty=True),
                esv=_float_cell(cells["ESV"], "ESV", allow_empty=True),
                edv=_float_cell(cells["EDV"], "EDV", allow_empty=True),
                fps=_float_cell(cells["FPS"], "FPS"),
                num_frames=_int_cell(cells["NumberOfFrames"], "NumberOfFrames"),
                split=cells["Split"].strip().upper(),
            )
        except _CellError as e:
            issues.append(Issue(FILELIST, line, f"{name}: {e}", "error", name))
            continue
        if row.fps <= 0 or row.num_frames < 1:
            issues.append(Issue(FILELIST, line, f"{name}: FPS and NumberOfFrames must be positive",
                                "error", name))
            continue
        row.listed_height = _optional_int(cells.get("FrameHeight", ""))
        row.listed_width = _optional_int(cells.get("FrameWidth", ""))
        _note_labels(row, issues)
        rows.append(row)
    return rows


def _optional_int(cell: str) -> int | None:
    try:
        return _int_cell(cell, "")
    except _CellError:
        return None


def _note_labels(row: FileRow, issues: list[Issue]) -> None:
    for col in ("ESV", "EDV"):
        if math.isnan(getattr(row, col.lower())):
            issues.append(Issue(FILELIST, row.line, f"{row.name}: empty {col}; its volume targets "
                                "will be masked", "warning", row.name))
    if all(math.isfinite(v) for v in (row.ef, row.esv, row.edv)) and row.edv > 0:
        ef = 100.0 * (row.edv - row.esv) / row.edv
        if abs(ef - row.ef) > EF_TOLERANCE:
            issues.append(Issue(FILELIST, row.line, f"{row.name}: EF {row.ef:g} disagrees with "
                                f"100*(EDV-ESV)/EDV = {ef:.2f}", "warning", row.name))


def parse_tracings(path: Path, issues: list[Issue]) -> dict[str, dict[int, TracedRows]]:
    table = _read_csv(path, TRACINGS, TRACINGS_REQUIRED, (), issues)
    out: dict[str, dict[int, TracedRows]] = {}
    for line, cells in table or []:
        name = strip_avi(cells["FileName"])
        parsed = _fast_tracing_row(cells)
        if parsed is None:
            try:
                parsed = _checked_tracing_row(cells)
            except _CellError as e:
                issues.append(Issue(TRACINGS, line, f"{name}: {e}", "error", name))
                continue
        coords, frame = parsed
        out.setdefault(name, {}).setdefault(frame, []).append((line, coords))
    return out


def _fast_tracing_row(cells: dict[str, str]) -> tuple[tuple[float, ...], int] | None:
    """The common, valid row in a few float() calls (the real file has ~426,000 rows); None
    sends the row to the slow path, which says exactly what is wrong."""
    try:
        coords = (float(cells["X1"]), float(cells["Y1"]), float(cells["X2"]), float(cells["Y2"]))
        frame = float(cells["Frame"])
    except ValueError:
        return None
    if math.isfinite(sum(coords)) and frame.is_integer() and frame >= 0:  # NaN/inf poison the sum
        return coords, int(frame)
    return None


def _checked_tracing_row(cells: dict[str, str]) -> tuple[tuple[float, ...], int]:
    coords = []
    for col in ("X1", "Y1", "X2", "Y2"):
        if _is_nan_text(cells[col]):
            raise _CellError(f"NaN coordinate in {col}")
        coords.append(_float_cell(cells[col], col))
    frame = _int_cell(cells["Frame"], "Frame")
    if frame < 0:
        raise _CellError(f"negative Frame {frame}")
    return tuple(coords), frame


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


def scan(root: Path) -> Scan:
    """Parse a dataset folder and collect every problem; raises nothing on bad data.

    The root itself must exist (callers check, because they report it differently).
    """
    root = Path(root)
    s = Scan(root=root)
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
    return s


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
    if s.tracings is not None:
        choice, reason, issues = choose_traced_frames(row.name, s.tracings.get(row.name, {}),
                                                      row.num_frames)
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


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1  # deleted since the scan: still a stable, distinct fingerprint input


def _issue_text(root: Path, issue: Issue) -> str:
    where = f"{root / issue.file}" + (f" line {issue.line}" if issue.line is not None else "")
    return f"{where}: {issue.message}"


class EchoNet:
    """An EchoNet-Dynamic-format dataset: records per split, frames, a fingerprint, a summary."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        s = scan(self.root)
        errors = s.errors()
        if errors:
            more = (f" (+{len(errors) - 1} more; run `echo-edge data check {self.root}`)"
                    if len(errors) > 1 else "")
            raise DataError(_issue_text(self.root, errors[0]) + more)
        if s.tracings is None:
            warnings.warn(f"{self.root}: no {TRACINGS}; records have no tracings, landmark terms "
                          "will be masked", stacklevel=2)
        # Keep only what later calls need: the parsed tracing rows are large on the real dataset
        # and would be copied into every DataLoader worker that pickles this reader.
        self._on_disk = s.on_disk
        self.issues: list[Issue] = s.issues  # warnings and exclusions, for whoever wants detail
        self.excluded: list[tuple[str, str]] = s.excluded
        self.has_tracings_file = s.tracings is not None
        self._records = s.records
        self._by_name = {r.file_name: r for r in s.records}
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"EchoNet({str(self.root)!r}: {len(self._records)} videos)"

    def records(self, split: str | None = None) -> list[VideoRecord]:
        """Usable records in FileList order, of one split (TRAIN, VAL, TEST; any case) or all."""
        if split is None:
            out = list(self._records)
            if not out:
                raise DataError(f"{self.root / FILELIST}: no usable videos")
            return out
        want = split.strip().upper()
        if want not in SPLITS:
            raise DataError(f"{self.root / FILELIST}: unknown split {split!r} "
                            f"(expected {', '.join(SPLITS)})")
        out = [r for r in self._records if r.split == want]
        if not out:
            raise DataError(f"{self.root / FILELIST}: split {want} has no usable videos "
                            f"({self._split_counts_text()})")
        return out

    def record(self, file_name: str) -> VideoRecord:
        """The record of one FileName (with or without .avi); DataError if unknown or excluded."""
        name = strip_avi(file_name)
        if name in self._by_name:
            return self._by_name[name]
        reasons = dict(self.excluded)
        if name in reasons:
            raise DataError(f"{self.root / FILELIST}: {name} is excluded ({reasons[name]})")
        raise DataError(f"{self.root / FILELIST}: no video named {name}")

    def load_frames(self, record: VideoRecord) -> np.ndarray:
        """Decoded grey frames, uint8 (F, H, W); DataError naming the file if unreadable."""
        frames = read_video(record.path)
        record.frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        return frames

    def fingerprint(self) -> str:
        """Short sha256 over both CSVs' bytes and the sorted video names and sizes."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name in (FILELIST, TRACINGS):
                p = self.root / name
                h.update(name.encode() + b"\0")
                h.update(p.read_bytes() if p.is_file() else b"<absent>")
                h.update(b"\0")
            for name in sorted(self._on_disk):
                h.update(f"{name}\0{_file_size(self._on_disk[name])}\n".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _split_counts_text(self) -> str:
        counts = Counter(r.split for r in self._records)
        return ", ".join(f"{sp} {counts.get(sp, 0)}" for sp in SPLITS)

    def summary(self) -> str:
        recs = self._records
        lines = [f"{self.root}  (fingerprint {self.fingerprint()})",
                 f"videos: {len(recs)} usable ({self._split_counts_text()}), "
                 f"{len(self.excluded)} excluded"]
        if self.excluded:
            # Reasons read "category: detail"; count by category so 1,000 rows stay one line.
            cats = Counter(reason.split(":")[0] for _, reason in self.excluded)
            lines.append("excluded: " + ", ".join(f"{n} x {c}" for c, n in cats.most_common()))
        if not recs:
            return "\n".join(lines)
        ef = np.array([r.ef for r in recs])
        lines.append(f"EF (%): mean {ef.mean():.1f}, sd {ef.std():.1f}, range {ef.min():.1f}-"
                     f"{ef.max():.1f}; {100 * np.mean(ef < 50):.1f}% < 50, "
                     f"{100 * np.mean(ef < 35):.1f}% < 35")
        fps = np.array([r.fps for r in recs])
        nf = np.array([r.num_frames for r in recs])
        lines.append(f"FPS: {fps.min():g}-{fps.max():g}; frames: {nf.min()}-{nf.max()} "
                     f"(median {np.median(nf):g})")
        traced = sum(r.has_tracings for r in recs)
        lines.append(f"tracings: {traced} of {len(recs)} videos" if self.has_tracings_file
                     else f"tracings: none ({TRACINGS} absent; landmark terms masked)")
        n_missing_vol = sum(not (math.isfinite(r.edv) and math.isfinite(r.esv)) for r in recs)
        if n_missing_vol:
            lines.append(f"volumes: {n_missing_vol} video(s) without EDV/ESV (volume terms masked)")
        return "\n".join(lines)
