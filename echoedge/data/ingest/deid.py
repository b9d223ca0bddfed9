"""De-identified names for imported videos, and the mapping file that stays with the user.

A video's output name is "0X" + 16 upper-case hex digits of sha256(salt, source path relative to
the folder given) -- the shape of EchoNet-Dynamic's own FileNames, and nothing of the source
name. The salt is random on a first import and kept in the mapping file (hash -> source path),
which lives OUTSIDE the output folder: whoever receives the dataset cannot undo the hashes, while
the user can, and a re-import that finds the mapping file reuses its salt, so the names repeat.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from echoedge.errors import DataError

MAPPING_COLUMNS = ("FileName", "Source", "Path", "Status", "Salt")


@dataclass
class MappingRow:
    name: str
    source: str  # relative path, as matched against the labels
    path: Path  # absolute path on this machine
    status: str  # "imported" or "skipped"


def default_mapping_path(out: Path) -> Path:
    """OUT.mapping.csv beside the output folder."""
    return out.parent / f"{out.name}.mapping.csv"


def hashed_name(salt: str, rel: str) -> str:
    digest = hashlib.sha256(f"{salt}\0{rel}".encode("utf-8")).hexdigest()
    return "0X" + digest[:16].upper()


def load_salt(path: Path) -> str | None:
    """The salt an earlier import left in its mapping file; None when there is no such file."""
    if not path.exists():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read this mapping file ({e})") from None
    salts = {(r.get("Salt") or "").strip() for r in rows}
    if not rows or len(salts) != 1 or "" in salts:
        raise DataError(f"{path}: not an echo-edge import mapping file (one Salt in every row); "
                        "move it away or give another --mapping")
    return salts.pop()


def new_salt() -> str:
    return secrets.token_hex(16)


def write_mapping(path: Path, salt: str, rows: list[MappingRow]) -> None:
    """Write the mapping all-or-nothing, readable by its owner only (it undoes the hashes)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MAPPING_COLUMNS)
    for r in rows:
        w.writerow((r.name, r.source, str(r.path), r.status, salt))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["MAPPING_COLUMNS", "MappingRow", "default_mapping_path", "hashed_name", "load_salt",
           "new_salt", "write_mapping"]
