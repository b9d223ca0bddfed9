"""The user's labels CSV for an import: which input has which EF (and ESV, EDV, split).

Headers are matched case-insensitively: a file column ("file", "filename", "file_name" or
"path") and "EF" are required; "ESV", "EDV" and "Split" are optional. The delimiter may be a
comma, a semicolon (spreadsheets in decimal-comma locales) or a tab. A file cell matches an input
by its path relative to the folder given, that path without its extension, its name, or its
stem, tried in that order; a cell that matches two inputs at the same step is an error.

Every problem is one DataError naming the file and line, raised before anything is written.
The csv module, not pandas: reading cell by cell lets every error name its line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from echoedge.errors import DataError

FILE_HEADERS = ("file", "filename", "file_name", "path")
SPLIT_NAMES = {"TRAIN": "TRAIN", "VAL": "VAL", "VALIDATION": "VAL", "TEST": "TEST"}
DEFAULT_SPLIT = "TEST"


@dataclass
class Label:
    """One row of the labels CSV; volumes are None when the column or the cell is empty."""

    line: int
    file: str
    ef: float
    esv: float | None
    edv: float | None
    split: str


def _number(path: Path, line: int, column: str, cell: str, required: bool) -> float | None:
    cell = cell.strip()
    if cell == "":
        if required:
            raise DataError(f"{path} line {line}: empty {column}")
        return None
    try:
        v = float(cell)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} {cell!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{path} line {line}: {column} {cell!r} is not a finite number")
    if column == "EF" and not 0.0 <= v <= 100.0:
        raise DataError(f"{path} line {line}: EF {cell!r} is outside 0-100 (a percentage)")
    if v < 0:
        raise DataError(f"{path} line {line}: negative {column} {cell!r}")
    return v


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
    except csv.Error:
        return csv.excel


def read_labels(path: Path) -> list[Label]:
    """Every row of the labels CSV, checked; DataError (one line, naming the row) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labels file not found")
    try:
        # utf-8-sig: a spreadsheet export may start with a byte-order mark glued to the header
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is this really a CSV file?)") from None
    try:
        rows = list(csv.reader(text.splitlines(), _dialect(text)))
    except csv.Error as e:
        raise DataError(f"{path}: unreadable CSV: {e}") from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"{path}: empty file (no header)")
    header = [h.strip().lower() for h in rows[0]]
    file_col = next((header.index(h) for h in FILE_HEADERS if h in header), None)
    if file_col is None or "ef" not in header:
        missing = " and ".join(n for n, ok in (("a file column (file/FileName)", file_col is not None),
                                               ("EF", "ef" in header)) if not ok)
        raise DataError(f"{path} line 1: no {missing} column (header is {','.join(rows[0])})")
    col = {name: header.index(name) for name in ("ef", "esv", "edv", "split") if name in header}
    labels: list[Label] = []
    seen: dict[str, int] = {}
    for line, cells in enumerate(rows[1:], start=2):
        if not "".join(cells).strip():
            continue  # blank lines (a trailing newline, an editor's habit) are harmless
        if len(cells) < len(header):
            raise DataError(f"{path} line {line}: {len(cells)} fields, the header has {len(header)}")
        file = cells[file_col].strip()
        if not file:
            raise DataError(f"{path} line {line}: empty file cell")
        if file in seen:
            raise DataError(f"{path} line {line}: {file} is listed again (first on line {seen[file]})")
        seen[file] = line
        ef = _number(path, line, "EF", cells[col["ef"]], required=True)
        esv = _number(path, line, "ESV", cells[col["esv"]], False) if "esv" in col else None
        edv = _number(path, line, "EDV", cells[col["edv"]], False) if "edv" in col else None
        split = cells[col["split"]].strip().upper() if "split" in col else ""
        if split and split not in SPLIT_NAMES:
            raise DataError(f"{path} line {line}: unknown Split {cells[col['split']].strip()!r} "
                            "(expected TRAIN, VAL or TEST)")
        labels.append(Label(line, file, float(ef), esv, edv, SPLIT_NAMES.get(split, DEFAULT_SPLIT)))
    if not labels:
        raise DataError(f"{path}: no label rows under the header")
    return labels


def _keys(rel: str) -> tuple[str, str, str, str]:
    p = PurePosixPath(rel)
    return rel, str(p.with_suffix("")) if p.suffix else rel, p.name, p.stem


def match_labels(labels: list[Label], rels: list[str], path: Path
                 ) -> tuple[dict[str, Label], list[Label]]:
    """Pair label rows with inputs (by relative path): ({rel: label}, rows matching no input)."""
    tiers: list[dict[str, list[str]]] = [{}, {}, {}, {}]
    for rel in rels:
        for tier, key in zip(tiers, _keys(rel)):
            tier.setdefault(key, []).append(rel)
    matched: dict[str, Label] = {}
    unmatched: list[Label] = []
    for label in labels:
        want = label.file.replace("\\", "/").removeprefix("./")
        hits = next((tier[want] for tier in tiers if want in tier), None)
        if hits is None:
            unmatched.append(label)
            continue
        if len(hits) > 1:
            raise DataError(f"{path} line {label.line}: {label.file} matches several inputs "
                            f"({', '.join(sorted(hits)[:3])}); give the path relative to the folder")
        rel = hits[0]
        if rel in matched:
            raise DataError(f"{path} line {label.line}: {label.file} labels the same input as line "
                            f"{matched[rel].line} ({rel})")
        matched[rel] = label
    return matched, unmatched


__all__ = ["DEFAULT_SPLIT", "FILE_HEADERS", "Label", "match_labels", "read_labels"]
