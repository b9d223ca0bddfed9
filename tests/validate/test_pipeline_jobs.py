"""Conversions in worker processes: a failing toolchain is a report entry, and logs come back."""

from __future__ import annotations

from pathlib import Path

from echoedge.validate.gates import FAIL_RUNTIME
from echoedge.validate.pipeline import ExportTask, _run_exports


def _task(fmt: str, precisions: list[str], tmp_path: Path) -> ExportTask:
    return ExportTask(fmt, precisions, tmp_path / "missing.pt", tmp_path, tmp_path / "artefacts",
                      "random:8", None, 0, None, False)


def test_failed_conversions_in_workers_become_fail_runtime_entries(tmp_path: Path):
    stale = tmp_path / "artefacts" / "tflite-int8"
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")  # an earlier run's folder must not be validated
    lines: list[str] = []
    done = _run_exports([_task("executorch", ["fp32"], tmp_path),
                         _task("tflite", ["fp32", "int8"], tmp_path)], jobs=2, log=lines.append)
    assert [d.fmt for d in done] == ["executorch", "tflite"]
    assert [d.failed for d in done] == [["executorch-fp32"], ["tflite-fp32", "tflite-int8"]]
    assert all(not d.built for d in done)
    for d in done:
        for e in d.entries:
            assert e["status"] == FAIL_RUNTIME and e["stage"] == "convert"
    first, second = done[1].entries
    assert "missing.pt" in first["reason"] and "conversion failed" in first["reason"]
    assert "before it failed" in second["reason"]
    assert not stale.exists()
    # each worker's lines are relayed to the parent's log, tagged with its format
    assert any(line.startswith("[executorch] executorch-fp32: conversion failed") for line in lines)
    assert any(line.startswith("[tflite] tflite-fp32: conversion failed") for line in lines)
    # the toolchains' own stderr goes to one file per format, named in the log
    for fmt in ("executorch", "tflite"):
        assert (tmp_path / "logs" / f"export-{fmt}.log").is_file()
        assert f"[{fmt}] toolchain messages -> {tmp_path / 'logs' / f'export-{fmt}.log'}" in lines


def test_run_calibrates_a_test_only_dataset_on_other_videos(synth_root: Path, tmp_path: Path,
                                                            monkeypatch, helpers):
    """`run` on a test-only folder must not fit int8 ranges on the TEST videos it validates."""
    import json

    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.validate.pipeline import _calibrate
    from echoedge.validate.validate import ValidateOptions
    from tests.data.fixtures import derive_dataset

    # The built-in synthetic set is 300 videos; the tiny one stands in for it.
    monkeypatch.setattr("echoedge.data.default.default_dataset", lambda progress=True: synth_root)
    test_only = derive_dataset(synth_root, tmp_path / "test-only", splits=("TEST",), untraced=None)
    ck = load_checkpoint(helpers["tiny_checkpoint"](tmp_path / "tiny.pt"))
    lines: list[str] = []
    opt = ValidateOptions(progress=False, cache_dir=tmp_path / "frames")
    path, note = _calibrate(test_only, ck, tmp_path / "artefacts", "random:8", None, None, 0, False,
                            opt, lines.append)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["split"] == "TRAIN" and manifest["data_root"] == str(synth_root.resolve())
    test_names = {p.stem for p in (test_only / "Videos").iterdir()}
    assert not test_names & {c["video"] for c in manifest["clips"]}
    assert "no TRAIN or VAL videos" in note and f"calibration: {note}" in lines
    assert f"calibration: drawing random:8 from TRAIN of {synth_root}" in lines
    # The same set is reused only when it came from the same source.
    again, _ = _calibrate(test_only, ck, tmp_path / "artefacts", "random:8", None, None, 0, True,
                          opt, lines.append)
    assert again == path and lines[-1].startswith("calibration: reusing")
