"""Reader for datasets in EchoNet-Dynamic's on-disk layout (see reference/echonet-format.md).

    <root>/FileList.csv         one row per video: labels, FPS, frame count, split
    <root>/VolumeTracings.csv   21 rows per traced frame (ED and ES), optional
    <root>/Videos/<FileName>.avi

Tracings are optional, per dataset and per video (EF-only sets are first-class);
`require_tracings=True` applies EchoNet-Dynamic's rule instead (see `echonet_scan`). Only the
split a caller asks for must have videos: a test-only set is a valid dataset.

Parsing is done once by `scan`, which never raises: it returns every problem it saw as an
`Issue`. `EchoNet` refuses a dataset with an "error" issue (one line, naming file and line) and
drops the videos with an "exclude" issue (listed in `EchoNet.excluded`); `check_dataset`
reports all of them. Both therefore agree on what is wrong by construction.

Modules: this one is the reader (`EchoNet`); `echonet_csv` parses the two CSVs, `echonet_scan`
joins them with Videos/ into records and issues (`scan`, `VideoRecord`).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from echoedge.data.echonet_csv import FILELIST, TRACINGS, Issue, strip_avi
from echoedge.data.echonet_scan import SPLITS, VideoRecord, scan
from echoedge.data.video import read_video
from echoedge.errors import DataError


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

    def __init__(self, root: Path, require_tracings: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        s = scan(self.root, require_tracings=require_tracings)
        errors = s.errors()
        if errors:
            more = (f" (+{len(errors) - 1} more; run `echo-edge data check {self.root}`)"
                    if len(errors) > 1 else "")
            raise DataError(_issue_text(self.root, errors[0]) + more)
        # Untraced videos are not warned about here: EF-only data is normal, and the commands
        # say it once in their own output (`untraced_note`, `check_dataset`, the reports).
        self.require_tracings = require_tracings
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

    def split_counts(self) -> dict[str, int]:
        """Usable videos per split (every split named, zeros included); never raises."""
        counts = Counter(r.split for r in self._records)
        return {sp: counts.get(sp, 0) for sp in SPLITS}

    def _split_counts_text(self) -> str:
        return ", ".join(f"{sp} {n}" for sp, n in self.split_counts().items())

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
        if not self.has_tracings_file:
            lines.append(f"tracings: none ({TRACINGS} absent): EF, EDV and ESV only, landmark "
                         "metrics n/a, landmark terms masked in training")
        else:
            rule = "; untraced videos excluded (--require-tracings)" if self.require_tracings else (
                "; the others: EF only, landmark metrics n/a" if traced < len(recs) else "")
            lines.append(f"tracings: {traced} of {len(recs)} videos{rule}")
        n_missing_vol = sum(not (math.isfinite(r.edv) and math.isfinite(r.esv)) for r in recs)
        if n_missing_vol:
            lines.append(f"volumes: {n_missing_vol} video(s) without EDV/ESV (volume terms masked)")
        return "\n".join(lines)


__all__ = ["EchoNet", "VideoRecord"]
