"""Calibration sets: build, save, load (verified) and describe.

A calibration set is the clips a converter feeds an int8 quantizer, plus a manifest that says
exactly which clips they are: strategy, size, seed, split, ClipSpec, per clip the video, start,
EF and sha256 of its float32 bytes, the dataset fingerprint and per-EF-band counts.

The set's id is the first 16 hex digits of the sha256 of the manifest's canonical JSON, leaving
out the fields that describe the run rather than the data (`NOT_IN_ID`: the id itself, creation
time, tool version and where the dataset lay on disk). The same dataset, spec, strategy, size,
seed and split therefore give byte-identical clips and the same id on any machine; a changed clip
changes its sha256 and so the id. Artefact manifests record this id.

Calibration never sees TEST: it is where validation measures what quantization cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.calibration.strategies import (
    EF_BAND_EDGES,
    EF_BANDS,
    STRATEGIES,
    Draw,
    Plan,
    acquisition_for,
    check_strategy,
    ef_band,
    plan_draws,
)
from echoedge.data.clips import extract_clip
from echoedge.data.clipspec import ClipSpec
from echoedge.atomic import disk_full, is_disk_full, sweep_leftovers, temp_sibling
from echoedge.errors import EchoEdgeError

SCHEMA = "echo-edge/calibration-set"
SCHEMA_VERSION = 1
CLIPS_FILE = "calibration.npz"
MANIFEST_FILE = "manifest.json"
DEFAULT_SIZE = 128
MIN_SIZE = 8
# Fewer hearts than this and the activation ranges describe a patient rather than a population.
MIN_VIDEOS = 3
CALIBRATION_SPLITS = ("TRAIN", "VAL")
NOT_IN_ID = ("id", "created_at", "tool_version", "data_root")


@dataclass
class CalibrationSet:
    """clips: float32 (N, C, T, H, W), normalised by the manifest's ClipSpec; manifest: plain JSON."""

    clips: np.ndarray
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return manifest_id(self.manifest)

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec.from_dict(self.manifest["clip_spec"])

    def __len__(self) -> int:
        return int(self.clips.shape[0])


def manifest_id(manifest: dict[str, Any]) -> str:
    """First 16 hex of sha256 over the canonical JSON of the manifest minus NOT_IN_ID."""
    content = {k: v for k, v in manifest.items() if k not in NOT_IN_ID}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clip_sha256(clip: np.ndarray) -> str:
    # Little-endian float32 fixes the byte layout, so a hash means the same on every machine.
    return hashlib.sha256(np.ascontiguousarray(clip, dtype="<f4").tobytes()).hexdigest()


def check_split(split: str) -> str:
    want = str(split).strip().upper()
    if want == "TEST":
        raise EchoEdgeError("calibration must not see TEST videos (they are held out to measure "
                            "what quantization costs); use TRAIN or VAL")
    if want not in CALIBRATION_SPLITS:
        raise EchoEdgeError(f"unknown calibration split {split!r} (expected TRAIN or VAL)")
    return want


def check_size(size: int, min_size: int = MIN_SIZE) -> int:
    if int(size) < min_size:
        what = "an empty calibration set" if int(size) <= 0 else f"a calibration set of {size} clips"
        raise EchoEdgeError(f"{what} is too small: at least {min_size} clips are needed")
    return int(size)


def build_calibration_set(
    data_root: Path,
    spec: ClipSpec,
    strategy: str = "ef-stratified",
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    split: str = "TRAIN",
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    min_size: int = MIN_SIZE,
    min_videos: int = MIN_VIDEOS,
    require_tracings: bool = False,
) -> CalibrationSet:
    """Draw `size` clips of a TRAIN or VAL split with one strategy (see strategies.py).

    Frames come through the FrameCache (cache_dir, default the shared frame cache), so a video
    decoded for training is not decoded again, and the bytes are those training saw.
    """
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet

    # Cheap checks first: a bad argument should not cost a dataset scan.
    strategy = check_strategy(strategy)
    split = check_split(split)
    size = check_size(size, min_size)
    reader = EchoNet(Path(data_root), require_tracings=require_tracings)
    records = reader.records(split)
    plan = plan_draws(strategy, records, spec, size, seed, split=split, min_videos=min_videos,
                      acquisition=acquisition_for(strategy, reader.root))
    clips = extract_clips(plan.draws, spec, FrameCache(reader, cache_dir), progress)
    manifest = make_manifest(plan, clips, spec, strategy=strategy, seed=seed, split=split,
                             available=Counter(ef_band(r.ef) for r in records),
                             fingerprint=reader.fingerprint(), data_root=reader.root.resolve())
    return CalibrationSet(clips, manifest)


def extract_clips(draws: list[Draw], spec: ClipSpec, frames_source: Any, progress: bool = True
                  ) -> np.ndarray:
    """(N, C, T, H, W) float32 in draw order; each video is loaded once for all its clips."""
    from rich.progress import Progress

    out = np.empty((len(draws), *spec.input_shape()[1:]), dtype=np.float32)
    by_video: dict[str, list[int]] = {}
    for i, d in enumerate(draws):
        by_video.setdefault(d.record.file_name, []).append(i)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("calibration clips", total=len(draws))
        for indices in by_video.values():
            frames = frames_source(draws[indices[0]].record)
            for i in indices:
                out[i] = extract_clip(frames, draws[i].start, spec)
                bar.advance(task)
    return out


def make_manifest(plan: Plan, clips: np.ndarray, spec: ClipSpec, *, strategy: str, seed: int,
                  split: str, available: Counter, fingerprint: str, data_root: Path
                  ) -> dict[str, Any]:
    from echoedge import __version__

    entries = [_clip_entry(d, clip) for d, clip in zip(plan.draws, clips)]
    band_videos: dict[str, set[str]] = {b: set() for b in EF_BANDS}
    for e in entries:
        band_videos[e["band"]].add(e["video"])
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "strategy": strategy,
        "size": len(entries),
        "seed": int(seed),
        "split": split,
        "clip_spec": spec.to_dict(),
        "dtype": "float32",
        "shape": list(clips.shape),
        "dataset_fingerprint": fingerprint,
        "videos": len({e["video"] for e in entries}),
        "bands": {
            "edges": list(EF_BAND_EDGES),
            "clips": {b: sum(e["band"] == b for e in entries) for b in EF_BANDS},
            "videos": {b: len(band_videos[b]) for b in EF_BANDS},
            "available_videos": {b: int(available.get(b, 0)) for b in EF_BANDS},
        },
        "skipped": dict(plan.skipped),
        "notes": list(plan.notes),
        "clips": entries,
        "tool_version": __version__,
        "data_root": str(data_root),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["id"] = manifest_id(manifest)
    return manifest


def _clip_entry(d: Draw, clip: np.ndarray) -> dict[str, Any]:
    r = d.record
    return {"video": r.file_name, "start": int(d.start), "ef": float(r.ef), "band": ef_band(r.ef),
            "ed_frame": r.ed_frame, "es_frame": r.es_frame, "sha256": clip_sha256(clip)}


# ---------------------------------------------------------------------------------------------
# On disk: <folder>/calibration.npz (array "clips") and <folder>/manifest.json


def save_calibration_set(cs: CalibrationSet, out_dir: Path) -> Path:
    """Write the set to out_dir (created or replaced whole); returns out_dir.

    Both files are written into a temporary sibling folder that is then renamed into place, so
    a killed run leaves either the old set or the new one, never a half-written folder.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out_dir)  # what a killed save left (echoedge.atomic)
    tmp, old = temp_sibling(out_dir), temp_sibling(out_dir, "old")
    try:
        tmp.mkdir()
        np.savez(tmp / CLIPS_FILE, clips=np.ascontiguousarray(cs.clips, dtype="<f4"))
        text = json.dumps({**cs.manifest, "id": cs.id}, indent=2, sort_keys=True, allow_nan=False)
        (tmp / MANIFEST_FILE).write_text(text + "\n")
        for name in (CLIPS_FILE, MANIFEST_FILE):
            _fsync(tmp / name)
        if out_dir.exists():
            os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except BaseException:
            if old.exists():  # the previous set stays rather than none at all
                os.rename(old, out_dir)
            raise
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(out_dir, "the calibration set") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    # Replacing a folder deletes it: only ever one that holds nothing but a calibration set.
    if out_dir.exists() and not out_dir.is_dir():
        raise EchoEdgeError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in (CLIPS_FILE, MANIFEST_FILE))
        if others:
            raise EchoEdgeError(f"{out_dir}: folder holds other files ({', '.join(others[:3])}); "
                                "choose an empty or new folder for the calibration set")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def load_calibration_set(path: Path) -> CalibrationSet:
    """Load a saved set (its folder, or either of its files) and verify every clip and the id."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest = _read_manifest(folder / MANIFEST_FILE)
    clips = _read_clips(folder / CLIPS_FILE, manifest)
    return CalibrationSet(clips, manifest)


def is_calibration_folder(path: Path) -> bool:
    """Whether `path` holds a calibration manifest (an artefact folder's manifest.json is not one);
    a damaged calibration manifest still counts, so that loading it names the damage."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return (Path(path) / MANIFEST_FILE).is_file() and (Path(path) / CLIPS_FILE).is_file()
    return isinstance(manifest, dict) and manifest.get("schema") == SCHEMA


def _read_manifest(mpath: Path) -> dict[str, Any]:
    if not mpath.is_file():
        raise EchoEdgeError(f"{mpath}: calibration manifest not found")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EchoEdgeError(f"{mpath}: not a readable calibration manifest ({e})") from None
    except RecursionError:  # thousands of nested brackets
        raise EchoEdgeError(f"{mpath}: not a readable calibration manifest (nested too deeply)") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise EchoEdgeError(f"{mpath}: not an echo-edge calibration manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise EchoEdgeError(f"{mpath}: calibration manifest schema version "
                            f"{manifest.get('schema_version')!r}, this tool reads {SCHEMA_VERSION}")
    for key in ("id", "clips", "shape", "clip_spec"):
        if key not in manifest:
            raise EchoEdgeError(f"{mpath}: calibration manifest lacks '{key}'")
    try:
        expected = manifest_id(manifest)
    except (TypeError, ValueError) as e:
        raise EchoEdgeError(f"{mpath}: calibration manifest is not canonical JSON ({e})") from None
    if manifest["id"] != expected:
        raise EchoEdgeError(f"{mpath}: manifest id {manifest['id']!r} does not match its content "
                            f"({expected}); the manifest was edited or is corrupt")
    _check_shape(mpath, manifest)
    return manifest


def _check_shape(mpath: Path, manifest: dict[str, Any]) -> None:
    """The fields the loader and its callers index: a manifest whose id was recomputed after an
    edit passes the id check, and must still fail with a line, not a TypeError later."""
    shape, entries = manifest["shape"], manifest["clips"]
    if not (isinstance(shape, list) and len(shape) == 5
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise EchoEdgeError(f"{mpath}: calibration manifest 'shape' is {shape!r}; expected "
                            "[N, C, T, H, W] of integers")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EchoEdgeError(f"{mpath}: calibration manifest 'clips' must be a list of objects")
    spec = manifest["clip_spec"]
    try:
        if not isinstance(spec, dict):
            raise TypeError("not an object")
        ClipSpec.from_dict(spec)
    except (EchoEdgeError, TypeError, ValueError) as e:
        raise EchoEdgeError(f"{mpath}: calibration manifest 'clip_spec' is unusable ({e})") from None


def _read_clips(cpath: Path, manifest: dict[str, Any]) -> np.ndarray:
    if not cpath.is_file():
        raise EchoEdgeError(f"{cpath}: calibration clips not found")
    try:
        with np.load(cpath, allow_pickle=False) as z:
            clips = np.asarray(z["clips"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise EchoEdgeError(f"{cpath}: not a readable calibration set ({type(e).__name__}: "
                            f"{str(e)[:120]})") from None
    entries = manifest["clips"]
    if clips.dtype != np.float32 or list(clips.shape) != list(manifest["shape"]) \
            or len(entries) != clips.shape[0]:
        raise EchoEdgeError(f"{cpath}: clips are {clips.dtype} {list(clips.shape)}, the manifest "
                            f"says float32 {manifest['shape']} with {len(entries)} clips")
    for i, (clip, e) in enumerate(zip(clips, entries)):
        if clip_sha256(clip) != e.get("sha256"):
            raise EchoEdgeError(f"{cpath}: clip {i} ({e.get('video')} start {e.get('start')}) "
                                "does not match its sha256 in the manifest (tampered or corrupt)")
    return clips


# ---------------------------------------------------------------------------------------------
# For the CLI


def parse_calibration_arg(text: str) -> tuple[str, int]:
    """"ef-stratified:128" -> ("ef-stratified", 128); a bare strategy gets DEFAULT_SIZE."""
    name, sep, size_text = str(text).strip().partition(":")
    strategy = check_strategy(name)
    if not sep:
        return strategy, DEFAULT_SIZE
    try:
        size = int(size_text.strip())
    except ValueError:
        raise EchoEdgeError(f"calibration size {size_text!r} in {text!r} is not an integer "
                            f"(write e.g. {strategy}:{DEFAULT_SIZE})") from None
    if size < 1:
        raise EchoEdgeError(f"calibration size in {text!r} must be a positive number of clips")
    return strategy, size


def describe(cs: CalibrationSet) -> str:
    """One paragraph for the CLI: strategy, N, videos, EF band counts, notes, id."""
    m = cs.manifest
    # Band order from EF_BANDS: a reloaded manifest has its keys sorted as text ("<40" after "50-59").
    bands = ", ".join(f"{b}: {m['bands']['clips'].get(b, 0)}" for b in EF_BANDS)
    shape = "x".join(str(s) for s in m["shape"][1:])
    text = (f"{m['strategy']} calibration set {cs.id}: {len(cs)} clips ({shape}) from "
            f"{m['videos']} {m['split']} videos, seed {m['seed']}, dataset "
            f"{m['dataset_fingerprint']}; clips per EF band {bands}.")
    if m.get("notes"):
        text += " Note: " + "; ".join(m["notes"]) + "."
    return text


def spec_from_checkpoint(checkpoint: Path) -> ClipSpec:
    """The ClipSpec a checkpoint was trained with, without building its model."""
    from echoedge.model.checkpoint import read_payload
    from echoedge.errors import CheckpointError

    try:
        return ClipSpec.from_dict(read_payload(checkpoint)["clip_spec"])
    except CheckpointError:
        raise
    except EchoEdgeError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None


def calibrate(data_root: Path, checkpoint: Path, out_dir: Path,
              calibration: str = f"ef-stratified:{DEFAULT_SIZE}", seed: int = 0,
              split: str = "TRAIN", cache_dir: Path | None = None, progress: bool = True,
              require_tracings: bool = False) -> CalibrationSet:
    """`echo-edge calibrate`: build a set with the checkpoint's ClipSpec and save it to out_dir."""
    strategy, size = parse_calibration_arg(calibration)
    spec = spec_from_checkpoint(Path(checkpoint))
    cs = build_calibration_set(Path(data_root), spec, strategy=strategy, size=size, seed=seed,
                               split=split, cache_dir=cache_dir, progress=progress,
                               require_tracings=require_tracings)
    save_calibration_set(cs, Path(out_dir))
    return cs


__all__ = [
    "CALIBRATION_SPLITS", "CLIPS_FILE", "DEFAULT_SIZE", "MANIFEST_FILE", "MIN_SIZE", "MIN_VIDEOS",
    "STRATEGIES", "CalibrationSet", "build_calibration_set", "calibrate", "describe",
    "load_calibration_set", "manifest_id", "parse_calibration_arg", "save_calibration_set",
    "spec_from_checkpoint",
]
