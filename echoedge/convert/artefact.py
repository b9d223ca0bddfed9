"""The artefact folder contract: one model file plus `manifest.json` (and the golden vectors
`echo-edge verify` re-runs: model.bpte or golden.npz), written all-or-nothing.

A runtime user needs nothing but the folder to feed the model correctly: the manifest carries the
ClipSpec, the input/output tensors (names, shapes, dtypes, layouts, quantization of quantized I/O),
the hashes that tie the file to its source checkpoint and calibration set, and the tool versions.

Every converter builds into a hidden temporary sibling folder and renames it into place only when
the build returned, so an exception or Ctrl-C never leaves a half-written artefact that a later
`validate` would pick up as real.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.atomic import disk_full, is_disk_full, sweep_leftovers, temp_sibling
from echoedge.convert.reproducible import content_sha256, reproducibility
from echoedge.errors import EchoEdgeError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
FORMATS = ("executorch", "coreml", "tflite")
# Echo-E3Net's fixed output order (echoedge.model.network.OUTPUT_NAMES, repeated here so reading a
# manifest never imports torch). An EF-only model's artefact has the first name only.
OUTPUT_NAMES = ("ef", "edv", "esv", "ed_landmarks", "es_landmarks")
INPUT_NAME = "clip"


@dataclass
class TensorSpec:
    """One input or output tensor of an artefact.

    `layout` names the axes (e.g. "NCTHW"; "NK2" for landmarks: batch, landmark, (x/W, y/H)).
    `scale`/`zero_point` are set only for quantized I/O (real = scale * (q - zero_point));
    float I/O has both None.
    """

    name: str
    shape: list[int]
    dtype: str
    layout: str
    scale: float | None = None
    zero_point: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ArtefactManifest:
    format: str  # one of FORMATS
    precision: str  # "fp32", "fp16", "int8", ...
    runtime: str  # what runs it, e.g. "executorch-xnnpack"
    model_file: str  # file name inside the artefact folder
    clip_spec: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]  # in OUTPUT_NAMES order (a prefix of it: ef first)
    source_checkpoint_sha256: str
    calibration_id: str | None = None  # None for float artefacts
    model_sha256: str = ""  # filled by write_artefact from the file itself
    model_bytes: int = 0  # likewise
    # The model's content, stable across rebuilds from the same inputs where model_sha256 is not
    # (a .mlpackage's random item ids); echoedge.convert.reproducible. Filled by write_artefact.
    content_sha256: str = ""
    tool_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""  # ISO 8601, UTC; filled by write_artefact when empty
    details: dict[str, Any] = field(default_factory=dict)  # converter-specific (delegation, ...)
    schema_version: int = SCHEMA_VERSION
    # The network converted, by its --model name (echoedge.model.registry.name_of): later commands
    # read it instead of asking. None in artefacts written before it was recorded.
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "ArtefactManifest":
        if not isinstance(d, dict):
            raise EchoEdgeError(f"{where}: manifest is not a JSON object")
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise EchoEdgeError(f"{where}: manifest lacks {', '.join(missing)}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise EchoEdgeError(f"{where}: manifest schema version {version!r} is not a version number")
        if version > SCHEMA_VERSION:
            raise EchoEdgeError(f"{where}: manifest schema version {version!r} is newer than this "
                                f"echo-edge understands ({SCHEMA_VERSION}); upgrade echo-edge")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        try:
            kw["inputs"] = [TensorSpec.from_dict(t) for t in d["inputs"]]
            kw["outputs"] = [TensorSpec.from_dict(t) for t in d["outputs"]]
        except (TypeError, AttributeError) as e:
            raise EchoEdgeError(f"{where}: malformed inputs/outputs ({e})") from None
        m = cls(**kw)
        m.check(where)
        return m

    def check(self, where: str = "manifest") -> None:
        """Raise EchoEdgeError on a manifest no runner could use (wrong types, empty names)."""
        for name in ("format", "precision", "runtime", "model_file"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise EchoEdgeError(f"{where}: '{name}' must be a non-empty string")
        if Path(self.model_file).name != self.model_file or self.model_file in (".", ".."):
            # The file must live inside the folder, so an artefact stays relocatable.
            raise EchoEdgeError(f"{where}: model_file must be a bare file name, got {self.model_file!r}")
        if not isinstance(self.clip_spec, dict):
            raise EchoEdgeError(f"{where}: 'clip_spec' must be an object")
        if not self.inputs or not self.outputs:
            raise EchoEdgeError(f"{where}: manifest needs at least one input and one output")
        for t in [*self.inputs, *self.outputs]:
            if not isinstance(t.shape, list) or not all(isinstance(s, int) for s in t.shape):
                raise EchoEdgeError(f"{where}: tensor '{t.name}' has a malformed shape {t.shape!r}")
            # A NaN or zero scale would turn every dequantized output into NaN or 0: a silently
            # wrong EF, so refuse it here rather than in the app.
            if t.scale is not None and not (_is_number(t.scale) and math.isfinite(t.scale)
                                            and t.scale > 0):
                raise EchoEdgeError(f"{where}: tensor '{t.name}' has scale {t.scale!r}; "
                                    "expected a finite number > 0")
            if t.zero_point is not None and (not isinstance(t.zero_point, int)
                                             or isinstance(t.zero_point, bool)):
                raise EchoEdgeError(f"{where}: tensor '{t.name}' has zero_point {t.zero_point!r}; "
                                    "expected an integer")
        if not isinstance(self.model_sha256, str):
            raise EchoEdgeError(f"{where}: 'model_sha256' must be a string")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise EchoEdgeError(f"{where}: 'model' must be a non-empty string (a --model name) or null")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs[0].shape)


def output_names_for(n: int) -> tuple[str, ...]:
    """The names of a model's `n` outputs: a prefix of OUTPUT_NAMES, EF always first.

    Echo-E3Net returns all five; an EF-only model (EchoNet-Dynamic's video ResNets) returns
    (ef,). EDV, ESV and landmarks are then not produced, and every later stage says so.
    """
    if not 1 <= n <= len(OUTPUT_NAMES):
        raise EchoEdgeError(f"a model has 1 to {len(OUTPUT_NAMES)} outputs "
                            f"({', '.join(OUTPUT_NAMES)}, EF first), got {n}")
    return OUTPUT_NAMES[:n]


def echo_tensor_specs(clip_shape: Sequence[int], output_shapes: Sequence[Sequence[int]],
                      dtype: str = "float32") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs/outputs of an artefact with float I/O, from the shapes it was built with (outputs
    named by `output_names_for`)."""
    names = output_names_for(len(output_shapes))
    inputs = [TensorSpec(INPUT_NAME, [int(s) for s in clip_shape], dtype, "NCTHW")]
    outputs = [
        TensorSpec(name, [int(s) for s in shape], dtype, "N" if len(shape) == 1 else "NK2")
        for name, shape in zip(names, output_shapes)
    ]
    return inputs, outputs


def tool_versions(*extra: str) -> dict[str, str]:
    """Versions of the tools that shaped an artefact, from package metadata (imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("echo-edge", "torch", "numpy", *extra):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_artefact(out_dir: str | Path, build: Callable[[Path], ArtefactManifest],
                   overwrite: bool = False) -> Path:
    """Run `build(tmp_dir)` and move the folder it filled to `out_dir` only if it returned.

    `build` writes the model file (and any side files) into `tmp_dir` and returns the manifest;
    this function fills `model_sha256`, `model_bytes`, `content_sha256` and
    `details["reproducibility"]` (echoedge.convert.reproducible), `created_at`, `details["weights"]` (the
    weight bytes by dtype, echoedge.convert.weights) and `details["memory"]` (the planned activation
    memory, echoedge.convert.memory_plan) from the file itself and writes `manifest.json`. An
    existing `out_dir` is an error unless `overwrite`, and even then
    only an artefact folder (one with a manifest) or an empty folder is replaced, so a typo in
    --out cannot wipe an unrelated directory.
    """

    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Temporaries and backups a killed run left for this folder go first (echoedge.atomic).
    sweep_leftovers(out_dir)
    _check_target(out_dir, overwrite)  # a restored backup counts as existing
    # A sibling, so the final rename stays on one file system (atomic); hidden, so find_artefacts
    # and globbing users skip it; named with our pid, so the next run knows it for a leftover.
    tmp = temp_sibling(out_dir)
    try:
        tmp.mkdir()
        manifest = build(tmp)
        if not isinstance(manifest, ArtefactManifest):
            raise TypeError(f"artefact build returned {type(manifest).__name__}, not ArtefactManifest")
        manifest.check(str(tmp / MANIFEST_NAME))
        model = tmp / manifest.model_file
        if not model.exists():
            raise EchoEdgeError(f"{out_dir}: the build did not write its model file {manifest.model_file}")
        manifest.model_sha256 = model_sha256(model)
        manifest.model_bytes = model_bytes(model)
        manifest.created_at = manifest.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest.content_sha256 = content_sha256(model)
        if manifest.format in FORMATS:
            manifest.details = {**manifest.details, "weights": read_weights(model, manifest.format),
                                "memory": read_memory(model, manifest.format),
                                "reproducibility": reproducibility(model, manifest.format)}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException as e:  # KeyboardInterrupt too: nothing half-built may survive
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full_cause(e):
            raise disk_full(out_dir, f"the {out_dir.name} artefact") from None
        raise
    return out_dir


def _disk_full_cause(e: BaseException) -> bool:
    """Whether a full disk is behind `e`: toolchains (torch.save, TensorFlow, coremltools) wrap
    the OSError in their own exception types, keeping it as the cause or context."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 8:
        if is_disk_full(cur) or "No space left on device" in str(cur):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False


def read_weights(model: Path, fmt: str) -> dict[str, Any]:
    """The file's weight breakdown (echoedge.convert.weights) as a manifest entry; never raises."""
    from echoedge.convert.weights import weight_breakdown

    try:
        return weight_breakdown(model, fmt).to_dict()
    except EchoEdgeError as e:  # the artefact is still usable; the manifest says what could not be read
        # Named by file name: the build folder is a temporary sibling renamed after this.
        return {"error": str(e).replace(str(model), model.name)}


def read_memory(model: Path, fmt: str) -> dict[str, Any]:
    """The file's planned activation memory (echoedge.convert.memory_plan) as a manifest entry;
    never raises, like read_weights."""
    from echoedge.convert.memory_plan import activation_plan

    try:
        return activation_plan(model, fmt).to_dict()
    except EchoEdgeError as e:
        return {"error": str(e).replace(str(model), model.name)}


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not overwrite:
        raise EchoEdgeError(f"{out_dir}: already exists; pass overwrite to replace it")
    if not out_dir.is_dir():
        raise EchoEdgeError(f"{out_dir}: exists and is not a folder; will not replace it")
    if not (out_dir / MANIFEST_NAME).is_file() and any(out_dir.iterdir()):
        raise EchoEdgeError(f"{out_dir}: exists and is not an artefact folder (no {MANIFEST_NAME}); "
                            "will not replace it")


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    _check_target(out_dir, overwrite)  # again: the build may have taken minutes
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    # Swap via a backup so that a failure between the two renames restores the old artefact (and
    # a kill between them leaves the backup that the next run's sweep_leftovers puts back).
    old = temp_sibling(out_dir, "old")
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_manifest(folder: str | Path) -> ArtefactManifest:
    """The manifest of an artefact folder; EchoEdgeError naming the file if missing or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EchoEdgeError(f"{folder}: artefact folder not found")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise EchoEdgeError(f"{path}: not found; {folder} is not an echo-edge artefact")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EchoEdgeError(f"{path}: unreadable manifest ({e})") from None
    except RecursionError:  # thousands of nested brackets: not a manifest
        raise EchoEdgeError(f"{path}: unreadable manifest (nested too deeply)") from None
    try:
        return ArtefactManifest.from_dict(data, where=str(path))
    except TypeError as e:  # a field of the wrong kind reaching the dataclass
        raise EchoEdgeError(f"{path}: malformed manifest ({e})") from None


def artefacts_model(folders: Sequence[str | Path], model: str | None) -> str | None:
    """The network the artefact folders were converted from: `model` (a --model given) checked
    against what their manifests record, else what they record; None when neither says (the
    caller's default applies). One line (EchoEdgeError) when a manifest records another model than
    `model`, or two record different ones. Unreadable manifests are left to the caller's checks."""
    recorded: dict[str, Path] = {}
    for folder in map(Path, folders):
        try:
            m = read_manifest(folder)
        except EchoEdgeError:
            continue
        if m.model:
            recorded.setdefault(m.model, folder)
    if len(recorded) > 1:
        (a, fa), (b, fb) = list(recorded.items())[:2]
        raise EchoEdgeError(f"{fa} was converted from a {a} model and {fb} from a {b} model; give "
                            "the artefacts of one checkpoint")
    for rec, folder in recorded.items():
        if model is not None and rec != model:
            raise EchoEdgeError(f"{folder}: converted from a {rec} model (its manifest), not "
                                f"--model {model}; pass --model {rec}, or leave --model out")
    return model or next(iter(recorded), None)


def model_sha256(path: str | Path) -> str:
    """sha256 of a model file, or of a model folder (a Core ML .mlpackage): over its files in
    sorted relative-path order, each contributing its relative POSIX path and its own sha256, so
    both a renamed and an edited file change it."""
    import hashlib

    from echoedge.model.checkpoint import file_sha256

    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return h.hexdigest()


def model_bytes(path: str | Path) -> int:
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def verify_artefact(folder: str | Path) -> ArtefactManifest:
    """read_manifest plus: the model file (or folder) is there and its sha256 matches the manifest."""
    folder = Path(folder)
    m = read_manifest(folder)
    model = folder / m.model_file
    if not model.exists():
        raise EchoEdgeError(f"{model}: model file named in the manifest is missing")
    if not m.model_sha256:
        # write_artefact always records it: without it nothing proves the file is the one built.
        raise EchoEdgeError(f"{folder / MANIFEST_NAME}: manifest has no model_sha256; cannot verify "
                            f"{m.model_file}")
    if model_sha256(model) != m.model_sha256:
        raise EchoEdgeError(f"{model}: sha256 does not match the manifest (file changed or corrupt)")
    return m


def _is_artefact_manifest(path: Path) -> bool:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # unreadable: let read_manifest report it with the file name
    return not isinstance(d, dict) or "model_file" in d or "format" in d


def find_artefacts(root: str | Path) -> list[Path]:
    """Artefact folders (those holding a manifest.json) at or below `root`, sorted.

    Hidden folders are skipped: they are in-progress builds or backups of write_artefact.
    """
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        return [root] if _is_artefact_manifest(root / MANIFEST_NAME) else []
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if MANIFEST_NAME in filenames:
            # A calibration set's folder has a manifest.json too; an artefact's names its model.
            if _is_artefact_manifest(Path(dirpath) / MANIFEST_NAME):
                found.append(Path(dirpath))
            dirnames[:] = []  # an artefact does not nest artefacts
    return sorted(found)


def check_clips(clips: Any, clip_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Clips a converter takes (calibration set, golden inputs): float32 (N, C, T, H, W), N >= 1."""
    arr = np.asarray(clips)
    if arr.ndim != 5 or tuple(arr.shape[1:]) != tuple(clip_shape[1:]) or len(arr) == 0:
        raise EchoEdgeError(f"{what}: expected clips of shape (N, {', '.join(map(str, clip_shape[1:]))}) "
                            f"with N >= 1, got {arr.shape}")
    if arr.dtype != np.float32:
        raise EchoEdgeError(f"{what}: expected float32 clips, got {arr.dtype}")
    return arr


def output_errors(out: np.ndarray, ref: np.ndarray, scale_floor: float = 1e-12) -> dict[str, float]:
    """Max abs and max relative error of a converted output (relative to max(|ref|, scale_floor))."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    scale = max(float(np.abs(ref).max()), scale_floor)
    return {"max_abs": float(diff.max()), "max_rel": float(diff.max() / scale)}
