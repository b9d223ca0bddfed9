"""What of an artefact folder is reproducible byte for byte, and a hash of the content that is.

Measured on the tiny config (tests/convert/test_*.py `test_rebuild_*`): exporting the same deploy
form with the same calibration set twice gives byte-identical model.pte and model.bpte, model.tflite
and golden.npz; the .mlpackage (once coreml.py drops the conversion date coremltools stamps into
the spec, rewrites the spec in protobuf's deterministic encoding, as coremltools writes its metadata
map in hash order, and runs the golden check on a fixed thread count) is identical
except its Manifest.json, in which coremltools' ModelPackage names each item (the model spec, the weights folder) by a fresh random UUID on every
save. coremltools has no option to fix them, and echo-edge does not rewrite Apple's package file, so
the manifest says so and carries `content_sha256`: the package hashed with Manifest.json read as
what it means (item paths, names, authors, which item is the root), not as the ids it happens to
use. For the other formats `content_sha256` equals `model_sha256`.

manifest.json itself records when and how fast the build ran (created_at, details.timings_s; TFLite's
details.onnx.seconds), so it differs between builds in those fields only (`build_fields`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PACKAGE_MANIFEST = "Manifest.json"  # inside a .mlpackage

# Fields of manifest.json that record the build rather than the artefact.
BUILD_FIELDS = {"created_at": "the time of the build (UTC)",
                "details.timings_s": "how long each conversion step took"}
_FORMAT_BUILD_FIELDS = {"tflite": {"details.onnx.seconds": "how long the ONNX export took"}}


def build_fields(fmt: str) -> dict[str, str]:
    """The manifest fields (dotted paths) of a `fmt` artefact that record its build, and what."""
    return {**BUILD_FIELDS, **_FORMAT_BUILD_FIELDS.get(fmt, {})}
_MLPACKAGE_IDS = ("coremltools' ModelPackage gives each item (model spec, weights) a fresh random UUID "
                  "on every save: the keys of itemInfoEntries and rootModelIdentifier")


def content_sha256(model: Path) -> str:
    """sha256 over the model's content: the file itself, or a folder's files in sorted order
    (as artefact.model_sha256) with a .mlpackage's Manifest.json in its id-free form."""
    from echoedge.model.checkpoint import file_sha256

    if not model.is_dir():
        return file_sha256(model)
    h = hashlib.sha256()
    for f in sorted(q for q in model.rglob("*") if q.is_file()):
        rel = f.relative_to(model).as_posix()
        digest = (hashlib.sha256(_package_manifest_content(f)).hexdigest() if rel == PACKAGE_MANIFEST
                  else file_sha256(f))
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()


def _package_manifest_content(path: Path) -> bytes:
    """A .mlpackage Manifest.json with its random item ids replaced by the items' paths; the raw
    bytes when it is not the JSON coremltools writes (so any damage still changes the hash)."""
    raw = path.read_bytes()
    try:
        d = json.loads(raw)
        items = d["itemInfoEntries"]
        by_id = {key: item["path"] for key, item in items.items()}
        canon = {**{k: v for k, v in d.items() if k not in ("itemInfoEntries", "rootModelIdentifier")},
                 "items": sorted(items.values(), key=lambda item: item["path"]),
                 "root": by_id[d["rootModelIdentifier"]]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw
    return json.dumps(canon, sort_keys=True).encode()


def reproducibility(model: Path, fmt: str) -> dict[str, Any]:
    """The manifest's details["reproducibility"]: what differs between two builds of the same
    inputs, and why; `content_sha256` (a top-level field) is what stays the same."""
    fields = build_fields(fmt)
    varies: list[dict[str, str]] = [{"file": "manifest.json", "fields": ", ".join(fields),
                                     "why": "; ".join(fields.values())}]
    if fmt == "coreml" and model.is_dir():
        varies.append({"file": f"{model.name}/{PACKAGE_MANIFEST}", "why": _MLPACKAGE_IDS})
        varies[0]["fields"] += ", model_sha256"
        varies[0]["why"] += f"; model_sha256 hashes {PACKAGE_MANIFEST} as written"
    return {"byte_identical_rebuild": len(varies) == 1, "varies": varies,
            "content_sha256": "the model's content, stable across rebuilds from the same inputs"
            + (f" ({PACKAGE_MANIFEST} read without its random item ids)" if len(varies) > 1 else
               ": equal to model_sha256")}
