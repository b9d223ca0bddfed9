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
