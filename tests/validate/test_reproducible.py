"""Reproducibility on the tiny config: `echo-edge export` rebuilds run's artefacts byte for byte
(ExecuTorch; Core ML but for the random item ids coremltools writes, which the manifest names), and
`echo-edge run` on the same inputs gives the same EF numbers.

The rebuild is one more conversion per format, of the session's `tiny_run` (tests/validate/
conftest.py): the same checkpoint, data and seed through `echo-edge export`, the function `run`
itself converts with (echoedge.convert.export.export).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from echoedge.cli import main as cli_main
from echoedge.convert.reproducible import PACKAGE_MANIFEST, build_fields

pytest.importorskip("executorch")
pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def rebuilt(tiny_run, tmp_path_factory) -> Path:
    assert tiny_run.rc == 0, tiny_run.stdout[-2000:]
    out = tmp_path_factory.mktemp("rebuild") / "artefacts"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(["export", "--checkpoint", str(tiny_run.checkpoint), "--data", str(tiny_run.data),
                       "--format", "executorch,coreml", "--precision", "fp32", "--seed", "0",
                       "--out", str(out), "--cache-dir", str(tiny_run.frames)])
    assert rc == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def _without_build_fields(manifest: dict) -> dict:
    """A manifest with the fields the reproducibility entry names as build records removed."""
    m = json.loads(json.dumps(manifest))
    for dotted in build_fields(m["format"]):
        *parents, leaf = dotted.split(".")
        node = m
        for p in parents:
            node = node[p]
        node.pop(leaf)
    return m


def test_rebuild_of_the_tiny_pte_is_byte_identical(tiny_run, rebuilt):
    first, again = _files(tiny_run.fp32), _files(rebuilt / "executorch-fp32")
    assert sorted(first) == sorted(again) == ["manifest.json", "model.bpte", "model.pte"]
    assert first["model.pte"] == again["model.pte"] and first["model.bpte"] == again["model.bpte"]
    m1, m2 = (json.loads(f["manifest.json"]) for f in (first, again))
    assert m1["details"]["reproducibility"]["byte_identical_rebuild"] is True
    assert m1["content_sha256"] == m1["model_sha256"] == m2["model_sha256"]
    assert _without_build_fields(m1) == _without_build_fields(m2)


@pytest.mark.parametrize("fmt", ["executorch", "coreml"])
def test_export_fp32_of_the_tiny_e3net_matches_its_3d_reference(tiny_run, rebuilt, fmt):
    """`echo-edge export` to fp32 alone, end to end on the tiny Echo-E3Net: no calibration set
    drawn, float weights, and the artefact in its runtime (Core ML: the reference interpreter, off
    macOS) equal to the 3D eager reference (not the deploy form) on all five outputs within float
    rounding.

    (Moved here: test_export_cli's fp32 half, test_executorch's and test_coreml's tiny fp32 e2e
    tests and tests/mil's tiny fp32 program each converted these same weights once more.)"""
    import numpy as np

    from echoedge.convert.artefact import OUTPUT_NAMES, read_manifest
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.validate import EagerRunner, open_runner

    assert not (rebuilt / "calibration").exists()  # fp32 needs no calibration clips
    folder = rebuilt / f"{fmt}-fp32"
    m = read_manifest(folder)
    assert m.format == fmt and m.precision == "fp32" and m.calibration_id is None
    if fmt == "executorch":
        assert m.details["weights"]["int8_share"] == 0.0
        assert m.details["delegation"]["xnnpack_subgraphs"] >= 1
    ck = load_checkpoint(tiny_run.checkpoint)
    x = np.random.default_rng(0).standard_normal((2, *ck.spec.input_shape(1)[1:])).astype(np.float32)
    eager = EagerRunner(ck.model)(x)
    with open_runner(folder) as r:
        if fmt == "coreml" and r.interpreter_precision is not None:  # off macOS: the MIL interpreter
            assert r.interpreter_precision == "fp32"  # it reads the program's own precision
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES, out, eager):
        assert o.shape == e.shape, name
        assert float(np.abs(o - e).max() / np.abs(e).max()) <= 1e-4, name


def test_rebuild_of_the_tiny_mlpackage_differs_only_where_the_manifest_says(tiny_run, rebuilt):
    first = _files(tiny_run.out / "artefacts" / "coreml-fp32")
    again = _files(rebuilt / "coreml-fp32")
    assert sorted(first) == sorted(again)
    differ = sorted(k for k in first if first[k] != again[k])
    m1, m2 = (json.loads(f["manifest.json"]) for f in (first, again))
    named = [v["file"] for v in m1["details"]["reproducibility"]["varies"]]
    # Only coremltools' random item ids (and the manifest recording the build) differ...
    assert differ == ["manifest.json", f"model.mlpackage/{PACKAGE_MANIFEST}"] == sorted(named)
    ids1, ids2 = (json.loads(f[f"model.mlpackage/{PACKAGE_MANIFEST}"])["itemInfoEntries"] for f in (first, again))
    assert set(ids1).isdisjoint(ids2)
    assert sorted(ids1.values(), key=str) == sorted(ids2.values(), key=str)
    # ...so the content hash is stable where the file hash is not.
    assert m1["model_sha256"] != m2["model_sha256"]
    assert m1["content_sha256"] == m2["content_sha256"]
    a, b = _without_build_fields(m1), _without_build_fields(m2)
    a.pop("model_sha256"), b.pop("model_sha256")
    assert a == b


_TIMING = ("latency", "speedup", "memory", "timings", "realtime", "load_s")


def _ef_figures(node):
    """report.json without what measures time or memory (and the folder, another --out): every
    EF, volume and landmark figure, gate values included, left to compare."""
    if isinstance(node, dict):
        return {k: _ef_figures(v) for k, v in node.items()
                if not any(t in k for t in _TIMING) and k != "folder"}
    if isinstance(node, list):
        return [_ef_figures(v) for v in node
                if not (isinstance(v, dict) and any(t in str(v.get("name", "")) for t in _TIMING))]
    return node


def test_run_twice_on_the_same_inputs_gives_the_same_ef_numbers(tiny_run, tmp_path: Path):
    """run again into another --out, the artefacts reused (their rebuild is byte-identical, above):
    every EF figure of report.json equal, bootstrap intervals included."""
    out = tmp_path / "again"
    shutil.copytree(tiny_run.out / "artefacts", out / "artefacts")
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(["run", "--checkpoint", str(tiny_run.checkpoint), "--data", str(tiny_run.data),
                       "--format", "executorch,coreml", "--precision", "fp32", "--videos", "2", "--clips", "2",
                       "--runs", "3", "--warmup", "1", "--bootstrap", "200", "--reuse", "--out", str(out),
                       "--cache-dir", str(tiny_run.frames), "--no-progress"])
    assert rc == tiny_run.rc == 0
    first = json.loads((tiny_run.out / "report.json").read_text())
    again = json.loads((out / "report.json").read_text())
    assert sorted(json.loads((out / "run.json").read_text())["reused"]) == ["coreml-fp32", "executorch-fp32"]
    a, b = (_ef_figures({k: r[k] for k in ("reference", "artefacts", "summary")}) for r in (first, again))
    assert sorted(x["name"] for x in a["artefacts"]) == ["coreml-fp32", "executorch-fp32"]
    assert a["artefacts"][0]["vs_reference"]["ef"]["max_abs"] is not None  # figures, not emptiness
    assert a == b
