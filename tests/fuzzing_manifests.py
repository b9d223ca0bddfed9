"""Fuzzed manifests: an artefact's manifest.json, report.json and a calibration set's manifest,
tampered with (wrong sha256, missing keys, a future schema version, odd values, damaged bytes).

Same property as tests/fuzzing.py: the reader returns what the file states, and only when the
file is whole and consistent (hashes match, numbers finite), or raises a one-line EchoEdgeError
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.fuzzing import CASES, Workdir, damaged, expect_clean

# Any JSON value, small: what an editor or a broken writer might leave in a field.
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.text(max_size=6),
              st.floats(allow_nan=True, allow_infinity=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += [prefix + (k,)] + _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += [prefix + (i,)] + _paths(v, prefix + (i,))
    return out


def _parent(obj: Any, path: tuple) -> Any:
    for k in path[:-1]:
        obj = obj[k]
    return obj


@st.composite
def tampered_json(draw: st.DrawFn, doc: dict[str, Any], hot: dict[str, list[Any]]) -> bytes:
    """`doc` with up to three edits (a key deleted, a value replaced by any JSON or by one of the
    `hot` values of that key), written as JSON, then possibly damaged as bytes or nested deep."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        what = draw(st.sampled_from(["delete", "replace", "hot"]))
        if what == "delete":
            del parent[path[-1]]
        elif what == "hot" and path[-1] in hot:
            parent[path[-1]] = draw(st.sampled_from(hot[path[-1]]))
        else:
            parent[path[-1]] = draw(json_values)
    text = json.dumps(doc, indent=1)  # NaN/Infinity spelled as Python's json reads them back
    if draw(st.integers(0, 9)) == 0:
        text = "[" * 3000 + "]" * 3000
    return draw(damaged(text.encode()))


def _finite_numbers(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


# ---------------------------------------------------------------------------------------------
# An artefact folder's manifest.json (echoedge.convert.artefact.verify_artefact)

MODEL_BYTES = b"\x00model-bytes\x01" * 8


def artefact_manifest() -> dict[str, Any]:
    from echoedge.convert.artefact import echo_tensor_specs
    from echoedge.data.clipspec import ClipSpec

    spec = ClipSpec(frames=4, height=16, width=16)
    inputs, outputs = echo_tensor_specs(spec.input_shape(1), [(1,), (1,), (1,), (1, 42, 2), (1, 42, 2)])
    inputs[0].scale, inputs[0].zero_point, inputs[0].dtype = 0.02, -3, "int8"
    return {"format": "executorch", "precision": "int8", "runtime": "executorch-xnnpack",
            "model_file": "model.pte", "clip_spec": spec.to_dict(),
            "inputs": [vars(t) for t in inputs], "outputs": [vars(t) for t in outputs],
            "source_checkpoint_sha256": "c" * 64, "calibration_id": "0123456789abcdef",
            "model_sha256": hashlib.sha256(MODEL_BYTES).hexdigest(), "model_bytes": len(MODEL_BYTES),
            "tool_versions": {"torch": "2.13.0"}, "created_at": "2026-01-01T00:00:00+00:00",
            "details": {}, "schema_version": 1}


ARTEFACT_HOT = {"schema_version": [2, 99, 0, -1, "1", True, 1.5], "model_sha256": ["", "0" * 64, None, 7],
                "model_file": ["..", ".", "../model.pte", "sub/model.pte", "", "missing.pte"],
                "scale": [0.0, -1.0, math.nan, math.inf, "0.1", None],
                "zero_point": [1.5, "0", None, True], "shape": [[], [1, "x"], None, "1x4"]}


def folder_of(folder: Path, files: dict[str, bytes]) -> Path:
    """A new folder holding `files` (name -> bytes): a fuzzed case as the reader finds it on disk."""
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@st.composite
def artefact_cases(draw: st.DrawFn) -> tuple[bytes, bytes]:
    manifest = draw(tampered_json(artefact_manifest(), ARTEFACT_HOT))
    model = MODEL_BYTES if draw(st.integers(0, 2)) else draw(damaged(MODEL_BYTES))
    return manifest, model


def check_artefact(case: tuple[bytes, bytes]) -> None:
    from echoedge.convert.artefact import verify_artefact

    manifest, model = case
    with Workdir() as tmp:
        folder = folder_of(tmp / "executorch-int8", {"manifest.json": manifest, "model.pte": model})
        CASES["manifest.json"] += 1
        m = expect_clean("manifest.json", ("manifest.json", "model.pte", str(folder)),
                         lambda: verify_artefact(folder))
        if m is not None:  # accepted: the file is the one the manifest hashes, numbers usable
            assert (folder / m.model_file).resolve().parent == folder.resolve()
            assert m.model_sha256 == hashlib.sha256((folder / m.model_file).read_bytes()).hexdigest()
            assert m.schema_version == 1
            for t in [*m.inputs, *m.outputs]:
                assert t.scale is None or (math.isfinite(t.scale) and t.scale > 0), t


# ---------------------------------------------------------------------------------------------
# report.json (echoedge.validate.report_json.read_report)


def minimal_instance(schema: Any) -> Any:
    """The smallest value the report schema accepts: every required key, lists empty, numbers 1."""
    if isinstance(schema, tuple):
        schema = {"type": schema}
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, tuple) else kind
    if kind == "object":
        return {k: minimal_instance(v) for k, v in schema.get("required", {}).items()}
    return {"array": [], "string": "s", "integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]


def report_doc() -> dict[str, Any]:
    from echoedge.validate.report_json import SCHEMA, SCHEMA_ID, SCHEMA_VERSION, _PREDICTIONS

    doc = minimal_instance(SCHEMA)
    doc.update(schema=SCHEMA_ID, schema_version=SCHEMA_VERSION)
    doc["reference"]["predictions"] = [{"file_name": "0X01", "ef_true": 55.0, "ef": 54.2}]
    entry = minimal_instance(SCHEMA["required"]["artefacts"]["items"])
    entry["predictions"] = [minimal_instance(_PREDICTIONS["items"])]
    doc["artefacts"] = [entry]
    return doc


REPORT_HOT = {"schema_version": [2, 99, "1", None], "schema": ["echo-edge/other", ""],
              "mae": [math.nan, math.inf, -math.inf, 1e308, "1"], "ef": [math.nan, math.inf, None],
              "status": ["OK", "pass", None], "passed": [1, "true", None], "n": [1.5, True, "3"]}


def check_report_file(data: bytes) -> None:
    from echoedge.validate.report_json import check_report, read_report

    with Workdir() as tmp:
        (tmp / "report.json").write_bytes(data)
        CASES["report.json"] += 1
        report = expect_clean("report.json", "report.json", lambda: read_report(tmp))
        if report is not None:
            assert check_report(report) == [] and _finite_numbers(report)


# ---------------------------------------------------------------------------------------------
# A calibration set (echoedge.calibration.calibset.load_calibration_set)

_CLIPS = np.random.default_rng(0).standard_normal((2, 1, 2, 4, 4)).astype(np.float32)


def calibration_manifest() -> dict[str, Any]:
    from echoedge.calibration.calibset import SCHEMA, SCHEMA_VERSION, clip_sha256, manifest_id
    from echoedge.data.clipspec import ClipSpec

    m = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "strategy": "ef-stratified", "size": 2,
         "seed": 0, "split": "TRAIN", "clip_spec": ClipSpec(frames=2, height=4, width=4).to_dict(),
         "dtype": "float32", "shape": list(_CLIPS.shape), "dataset_fingerprint": "f" * 16,
         "clips": [{"video": f"0X0{i}", "start": i, "ef": 50.0 + i, "band": "normal",
                    "sha256": clip_sha256(c)} for i, c in enumerate(_CLIPS)],
         "tool_version": "0", "data_root": "/data", "created_at": "2026-01-01T00:00:00+00:00"}
    m["id"] = manifest_id(m)
    return m


CALIBRATION_HOT = {"schema_version": [2, 99, "1", None], "sha256": ["0" * 64, "", None],
                   "shape": [[2, 1, 2, 4], [2, 1, 2, 4, 5], "2x1", [2, 1, 2, 4, -4], [True] * 5],
                   "frames": [0, -1, "x", None, 2.5], "std": [0, math.nan, -1], "mean": [math.nan, math.inf],
                   "clips": [{}, [1, 2], None, [None]], "clip_spec": [None, [], {"frames": 2}]}


@st.composite
def calibration_cases(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(manifest.json bytes, calibration.npz bytes). Half the tampered manifests get their id
    recomputed, as a careful editor would, so the checks behind the id are reached too."""
    from echoedge.calibration.calibset import manifest_id

    text = draw(tampered_json(calibration_manifest(), CALIBRATION_HOT))
    if draw(st.booleans()):
        try:
            doc = json.loads(text)
            doc["id"] = manifest_id(doc)
            text = json.dumps(doc).encode()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass  # not a JSON object any more: keep the damaged bytes
    clips = _CLIPS.copy()
    if draw(st.integers(0, 3)) == 0:
        clips[draw(st.integers(0, 1)), 0, 0, 0, draw(st.integers(0, 3))] += 1.0  # one value changed
    npz = _npz_bytes(clips)
    return text, (npz if draw(st.integers(0, 2)) else draw(damaged(npz)))


def _npz_bytes(clips: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, clips=clips)
    return buf.getvalue()


def check_calibration(case: tuple[bytes, bytes]) -> None:
    from echoedge.calibration.calibset import clip_sha256, load_calibration_set, manifest_id

    manifest, npz = case
    with Workdir() as tmp:
        folder = folder_of(tmp / "calibration", {"manifest.json": manifest, "calibration.npz": npz})
        CASES["calibration manifest"] += 1
        cs = expect_clean("calibration manifest", ("manifest.json", "calibration.npz"),
                          lambda: load_calibration_set(folder))
        if cs is not None:  # accepted: every clip is the one hashed, the id is the content's
            assert cs.manifest["id"] == manifest_id(cs.manifest)
            assert cs.clips.dtype == np.float32 and list(cs.clips.shape) == cs.manifest["shape"]
            assert all(clip_sha256(c) == e["sha256"] for c, e in zip(cs.clips, cs.manifest["clips"]))
            assert cs.spec.std > 0 and math.isfinite(cs.spec.mean)
            assert np.isfinite(cs.clips).all() or not np.isfinite(_CLIPS).all()

