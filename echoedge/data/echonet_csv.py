"""Parsing EchoNet-Dynamic's two CSVs, FileList.csv and VolumeTracings.csv, cell by cell.

Nothing here raises on bad data: every problem becomes an `Issue` naming file and line, and the
rows that parse are returned. The csv module, not pandas: two small text files do not justify a
heavy dependency, and reading cell by cell lets every error name its line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from echoedge.errors import one_line

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
# FrameHeight/FrameWidth are not required: some rows carry stale values and the video decides.
# Split is not required either: a hospital or vendor test set is often one held-out set with no
# Split column, and then every video counts as TEST (NO_SPLIT_DEFAULT), with one warning.
FILELIST_REQUIRED = ("FileName", "EF", "ESV", "EDV", "FPS", "NumberOfFrames")
FILELIST_OPTIONAL = ("Split", "FrameHeight", "FrameWidth")
NO_SPLIT_DEFAULT = "TEST"
TRACINGS_REQUIRED = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
EF_TOLERANCE = 1.0  # EF points between FileList's EF and 100*(EDV-ESV)/EDV before we warn


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

    def __post_init__(self) -> None:
        self.message = one_line(self.message)  # a quoted cell may hold a line break


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
    if table and "Split" not in table[0][1]:
        issues.append(Issue(FILELIST, 1, f"no Split column: every video counts as {NO_SPLIT_DEFAULT}",
                            "warning"))
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
                split=cells.get("Split", NO_SPLIT_DEFAULT).strip().upper(),
            )
        except _CellError as e:
            issues.append(Issue(FILELIST, line, f"{name}: {e}", "error", name))
            continue
        if row.fps <= 0 or row.num_frames < 1:
            issues.append(Issue(FILELIST, line, f"{name}: FPS and NumberOfFrames must be positive",
                                "error", name))
            continue
        bad = _label_out_of_range(row)
        if bad:
            issues.append(Issue(FILELIST, line, f"{name}: {bad}", "error", name))
            continue
        row.listed_height = _optional_int(cells.get("FrameHeight", ""))
        row.listed_width = _optional_int(cells.get("FrameWidth", ""))
        _note_labels(row, issues)
        rows.append(row)
    _note_volumes(rows, issues)
    return rows


def _note_volumes(rows: list[FileRow], issues: list[Issue]) -> None:
    # One line with the count, not one per row: an EF-only set (an import from a hospital's test
    # list) has no volumes on any row, and 2 x N identical warnings would bury everything else.
    empty = [r for r in rows if math.isnan(r.esv) or math.isnan(r.edv)]
    if empty:
        first = ", ".join(f"{r.name} (line {r.line})" for r in empty[:3])
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        issues.append(Issue(FILELIST, None, f"{len(empty)} of {len(rows)} videos have an empty "
                            f"ESV or EDV, their volume targets masked: {first}{more}", "warning"))


def _label_out_of_range(row: FileRow) -> str | None:
    """Why a label cannot be a heart's, or None. An EF of 150 or -5 is a typo or a unit mix-up
    (a fraction, a percentage of something else); training or scoring on it would be silently
    wrong, so the row is refused rather than clipped."""
    if not math.isnan(row.ef) and not 0.0 <= row.ef <= 100.0:
        return f"EF {row.ef:g} is outside 0-100 (EF is a percentage)"
    for column, v in (("ESV", row.esv), ("EDV", row.edv)):
        if not math.isnan(v) and v < 0:
            return f"{column} {v:g} is negative (volumes are in mL)"
    return None


def _optional_int(cell: str) -> int | None:
    try:
        return _int_cell(cell, "")
    except _CellError:
        return None


def _note_labels(row: FileRow, issues: list[Issue]) -> None:
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


__all__ = [
    "EF_TOLERANCE", "FILELIST", "FILELIST_OPTIONAL", "FILELIST_REQUIRED", "NO_SPLIT_DEFAULT", "TRACINGS",
    "TRACINGS_REQUIRED", "FileRow", "Issue", "TracedRows", "parse_filelist", "parse_tracings",
    "strip_avi",
]
