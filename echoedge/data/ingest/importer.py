"""`echo-edge data import`: a user's videos or DICOM cines + a labels CSV -> an EchoNet-layout folder.

    OUT/FileList.csv      EchoNet's columns; ESV/EDV empty where the labels have none
    OUT/Videos/<0X...>.avi  112 x 112 grey MJPG, the sector only (see `sector`)
    OUT/import_log.csv    per input: used or skipped and why, what the sector finder decided
    OUT.mapping.csv       (beside OUT, never inside) hashed name -> source path, and the salt

No VolumeTracings.csv: imported data carries EF labels only, which the reader takes as normal.
Names in OUT are salted hashes (`deid`); neither the source path nor its name reaches OUT, and
readers hand over no patient tags (the Cine has none). Everything is built in a hidden folder
beside OUT and renamed into place at the end, so an interrupted import leaves OUT as it was.

An input that cannot be used is skipped with one line and logged; the import fails (DataError)
only when the labels are bad, OUT is taken, or no input at all could be used.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from echoedge.data.clipspec import ClipSpec
from echoedge.data.ingest.cine import Cine, UnusableInput
from echoedge.data.ingest.deid import (
    MappingRow, default_mapping_path, hashed_name, load_salt, new_salt, write_mapping,
)
from echoedge.data.ingest.labels import Label, match_labels, read_labels
from echoedge.data.ingest.videos import is_video, quiet_ffmpeg
from echoedge.errors import DataError

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split")
LOG_NAME = "import_log.csv"
LOG_COLUMNS = ("FileName", "Status", "Reason", "Kind", "SourceWidth", "SourceHeight",
               "SourceFrames", "FPS", "FPSSource", "Region", "CropBox", "SectorBox", "SectorAreaPx",
               "SectorFraction", "FramesKept", "Split", "Notes")


@dataclass
class Source:
    path: Path  # absolute
    rel: str  # relative to the folder it was found in (its name when given as a file)
    kind: str  # "video", "dicom" or "other"


@dataclass
class LogEntry:
    """One line of import_log.csv: what happened to one input (no source path or name)."""

    name: str
    kind: str
    status: str = "skipped"
    reason: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def row(self) -> list[str]:
        base = {"FileName": self.name, "Status": self.status, "Reason": self.reason, "Kind": self.kind}
        return [{**self.fields, **base}.get(c, "") for c in LOG_COLUMNS]


@dataclass
class ImportSummary:
    out: Path
    mapping: Path
    imported: int
    skipped: int
    ignored_files: int
    unmatched_labels: int

    @property
    def log(self) -> Path:
        return self.out / LOG_NAME

    def describe(self) -> str:
        return (f"{self.imported} imported, {self.skipped} skipped -> {self.out} "
                f"(log: {self.log}; name mapping, keep it private: {self.mapping})")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _classify(path: Path) -> str:
    if is_video(path):
        return "video"
    from echoedge.data.ingest.dicom import is_dicom

    return "dicom" if is_dicom(path) else "other"


def discover(inputs: list[Path], exclude: list[Path]) -> tuple[list[Source], int]:
    """The inputs to import, sorted by relative path, and how many other files folders held.

    Folders are searched recursively (hidden entries skipped); a file is a video by its
    extension, a DICOM by its content (probes write files without extensions). Paths under
    `exclude` (the output, its temporary folder, the labels and mapping files) are never inputs.
    """
    sources: list[Source] = []
    ignored = 0
    for given in inputs:
        given = Path(given).absolute()
        if not given.exists():
            raise DataError(f"{given}: input not found")
        if given.is_file():
            sources.append(Source(given, given.name, _classify(given)))
            continue
        for path in sorted(given.rglob("*")):
            rel = path.relative_to(given)
            if (not path.is_file() or any(p.startswith(".") for p in rel.parts)
                    or any(_within(path, e) for e in exclude)):
                continue
            kind = _classify(path)
            if kind == "other":
                ignored += 1
                continue
            sources.append(Source(path, rel.as_posix(), kind))
    seen: dict[str, Path] = {}
    for s in sources:
        if s.rel in seen:
            raise DataError(f"{s.path}: same relative path {s.rel} as {seen[s.rel]}; import the "
                            "two folders separately or rename one")
        seen[s.rel] = s.path
    if not sources:
        raise DataError(f"no videos (.avi .mp4 .mov .m4v) or DICOM files in "
                        f"{', '.join(str(p) for p in inputs)}")
    return sorted(sources, key=lambda s: s.rel), ignored


def read_cine(source: Source, fps: float | None) -> Cine:
    """Decode one input; `fps` (the command's --fps) overrides whatever rate the file states."""
    if source.kind == "video":
        from echoedge.data.ingest.videos import read_video_cine

        return read_video_cine(source.path, fps)
    if source.kind == "dicom":
        from echoedge.data.ingest.dicom import read_dicom

        # the reader applies --fps itself: a file without timing tags is usable once it is given
        return read_dicom(source.path, fps_override=fps)
    raise UnusableInput(source.path, "neither a video (.avi .mp4 .mov .m4v) nor a DICOM file")


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def _import_one(source: Source, label: Label, entry: LogEntry, videos: Path, fps: float | None,
                spec: ClipSpec, square: str) -> list[str]:
    """Decode, find the sector, write the AVI; the FileList row. Raises UnusableInput."""
    from echoedge.data.ingest.sector import crop_sector
    from echoedge.data.video import write_video

    cine = read_cine(source, fps)
    h, w = cine.frames.shape[1:3]
    entry.fields.update(SourceWidth=str(w), SourceHeight=str(h), SourceFrames=str(cine.num_frames),
                        FPS=f"{cine.fps:g}", FPSSource=cine.fps_source,
                        Region="" if cine.region is None else " ".join(map(str, cine.region)),
                        Notes="; ".join(f"{k}={v}" for k, v in sorted(cine.notes.items())))
    if cine.num_frames < spec.span:
        raise UnusableInput(source.path, f"{cine.num_frames} frames, shorter than one clip "
                            f"({spec.frames} frames taken every {spec.period}: {spec.span} frames)")
    frames, crop = crop_sector(cine, size=spec.height, square=square)
    entry.fields.update(CropBox=" ".join(map(str, crop.box)),
                        SectorBox=" ".join(map(str, crop.sector_box)),
                        SectorAreaPx=str(crop.area_px), SectorFraction=f"{crop.area_fraction:.4f}",
                        FramesKept=str(crop.frames_kept))
    write_video(videos / f"{entry.name}.avi", frames, cine.fps)
    return [entry.name, _fmt(label.ef), _fmt(label.esv), _fmt(label.edv), str(spec.height),
            str(spec.width), f"{cine.fps:g}", str(crop.frames_kept), label.split]


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def check_out(out: Path, force: bool) -> None:
    """Refuse an OUT we must not overwrite; --force replaces only an earlier import."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DataError(f"{out}: folder exists and is not empty; use --force to replace it")
        if not (out / LOG_NAME).is_file():
            raise DataError(f"{out}: not an earlier import (no {LOG_NAME}); --force replaces only "
                            "those, so remove it yourself or choose another --out")


def _publish(tmp: Path, out: Path) -> None:
    """Put the finished folder in place of OUT: two renames, the old import removed after."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        else:
            out.rmdir()
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _progress(enabled: bool):  # -> rich Progress or nullcontext
    from contextlib import nullcontext

    if not enabled:
        return nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # on stderr, with the skip lines: stdout keeps only the summary, for scripts that read it
    return Progress(TextColumn("import"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))


def import_dataset(inputs: list[Path], labels_csv: Path, out: Path, *, fps: float | None = None,
                   mapping: Path | None = None, force: bool = False, square: str = "depth",
                   spec: ClipSpec | None = None, progress: bool = True,
                   say: Callable[[str], None] = print) -> ImportSummary:
    """Import `inputs` (folders, searched recursively, or files) labelled by `labels_csv` into the
    EchoNet-layout folder `out`. `say` receives one line per skipped input and per warning."""
    spec = spec or ClipSpec()
    quiet_ffmpeg()  # before any OpenCV video call: FFmpeg reads its log level once
    out = Path(out).absolute()
    mapping = Path(mapping).absolute() if mapping is not None else default_mapping_path(out)
    labels_csv = Path(labels_csv).absolute()
    if fps is not None and not 0 < fps <= 1000:
        raise DataError(f"--fps {fps:g}: must be a frame rate in (0, 1000]")
    if _within(mapping, out):
        raise DataError(f"{mapping}: the mapping file must lie outside {out} (it undoes the hashed names)")
    check_out(out, force)
    labels = read_labels(labels_csv)
    tmp = out.parent / f".{out.name}.importing-{os.getpid()}"
    sources, ignored = discover(inputs, exclude=[out, tmp, labels_csv, mapping])
    for s in sources:
        if _within(s.path, out):
            raise DataError(f"{s.path}: an input lies inside --out {out}")
    matched, unmatched = match_labels(labels, [s.rel for s in sources], labels_csv)
    if unmatched:
        listed = ", ".join(f"line {lb.line} ({lb.file})" for lb in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        say(f"warning: {labels_csv}: {len(unmatched)} label row(s) match no input: {listed}{more}")
    salt = load_salt(mapping) or new_salt()
    names = {s.rel: hashed_name(salt, s.rel) for s in sources}
    if len(set(names.values())) != len(names):  # 64-bit names: practically never
        raise DataError(f"{mapping}: two inputs hash to the same name; delete the mapping for a new salt")

    filelist: list[list[str]] = []
    entries: list[LogEntry] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "Videos").mkdir(parents=True)
        with _progress(progress) as bar:
            task = bar.add_task("import", total=len(sources)) if progress else None
            for s in sources:
                entry = LogEntry(names[s.rel], s.kind)
                entries.append(entry)
                label = matched.get(s.rel)
                try:
                    if label is None:
                        raise UnusableInput(s.path, "no row in the labels file")
                    entry.fields["Split"] = label.split
                    filelist.append(_import_one(s, label, entry, tmp / "Videos", fps, spec, square))
                    entry.status = "used"
                except UnusableInput as e:
                    entry.reason = e.reason
                    say(f"skipped {s.path}: {e.reason}")
                if progress:
                    bar.advance(task)
        if not filelist:
            raise DataError(f"none of the {len(sources)} input(s) could be imported (see the lines above)")
        # Rows in hashed-name order: the sources' (alphabetical) order would say something of them.
        _write_csv(tmp / "FileList.csv", FILELIST_COLUMNS, sorted(filelist))
        _write_csv(tmp / LOG_NAME, LOG_COLUMNS, sorted(e.row() for e in entries))
        status = {e.name: "imported" if e.status == "used" else "skipped" for e in entries}
        write_mapping(mapping, salt, [MappingRow(names[s.rel], s.rel, s.path, status[names[s.rel]])
                                      for s in sources])
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportSummary(out=out, mapping=mapping, imported=len(filelist),
                         skipped=len(entries) - len(filelist), ignored_files=ignored,
                         unmatched_labels=len(unmatched))


__all__ = ["FILELIST_COLUMNS", "ImportSummary", "LOG_COLUMNS", "LOG_NAME", "Source", "check_out",
           "discover", "import_dataset", "read_cine"]
