"""`validate` and `run` on a user's own data: EF-only folders (no tracings) and test-only folders.

A hospital or vendor test set has videos and EF labels, no tracings, and is all TEST. Each shape
below is cut from the tiny synthetic set and validated with the fp32 .pte that `echo-edge run`
built in the session fixture: EF metrics as usual, landmark metrics "n/a (no tracings)" in every
place they are shown and null in report.json, and the always-mean baseline named by its source.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from echoedge.cli import main as cli_main
from echoedge.validate.report_json import read_report
from tests.data.fixtures import derive_dataset

# Needs the session's `echo-edge run` (an ExecuTorch conversion); the validations are seconds each.
pytestmark = pytest.mark.slow

NO_TRACINGS = "n/a (no tracings)"


def _test_rows(root: Path) -> range | tuple[int, ...]:
    with open(root / "FileList.csv", newline="") as f:
        return tuple(i for i, r in enumerate(csv.DictReader(f)) if r["Split"] == "TEST")


def _shape(name: str, src: Path, dst: Path) -> Path:
    if name == "no-tracings-file":
        return derive_dataset(src, dst, untraced=None)
    if name == "test-videos-untraced":  # VolumeTracings.csv present, TEST videos not in it
        return derive_dataset(src, dst, untraced=_test_rows(src))
    if name == "only-test-rows":
        return derive_dataset(src, dst, splits=("TEST",), untraced=None)
    if name == "no-split-column":
        return derive_dataset(src, dst, splits=("TEST",), untraced=None, split_column=False)
    raise AssertionError(name)


def _validate(tiny_run, artefact: Path, checkpoint: Path, data: Path, out: Path, *extra: str
              ) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["validate", str(artefact), "--checkpoint", str(checkpoint), "--data", str(data),
                       "--clips", "1", "--runs", "2", "--warmup", "1", "--bootstrap", "50",
                       "--out", str(out), "--cache-dir", str(out.parent / "frames"), "--no-progress",
                       *extra])
    return rc, buf.getvalue()


@pytest.mark.parametrize("shape", ["no-tracings-file", "test-videos-untraced", "only-test-rows",
                                   "no-split-column"])
def test_validate_ef_only_and_test_only_folders(shape: str, tiny_run, tmp_path: Path):
    data = _shape(shape, tiny_run.data, tmp_path / "data")
    rc, stdout = _validate(tiny_run, tiny_run.fp32, tiny_run.checkpoint, data, tmp_path / "report")
    assert rc == 0, stdout
    report = read_report(tmp_path / "report" / "report.json")
    d = report["data"]
    assert d["split"] == "TEST" and d["n_videos"] == 3 and d["n_traced"] == 0
    ref, (e,) = report["reference"], report["artefacts"]
    assert e["status"] == "PASS" and e["vs_reference"]["ef"]["max_abs"] < 1e-3
    for vt in (ref["vs_truth"], e["vs_truth"]):
        assert np.isfinite(vt["mae"]) and np.isfinite(vt["edv_mae"]) and np.isfinite(vt["esv_mae"])
        assert vt["landmark_error_px"] is None  # null, never a fake 0
    assert e["vs_reference"]["landmark_delta_px"] is None
    # Every place a landmark figure is shown says why there is none.
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert f"landmarks {NO_TRACINGS}" in md and f"landmarks {NO_TRACINGS}" in stdout
    assert html.count(f"<td>{NO_TRACINGS}</td>") == 2 and f"landmarks {NO_TRACINGS}" in html
    assert "3 of 3 TEST videos have no tracings" in stdout
    # The tiny checkpoint records no training EF mean: the dataset's TRAIN, else n/a (no error).
    b = report["baseline"]
    if shape in ("only-test-rows", "no-split-column"):
        assert b["ef"] is None and b["source"] is None and b["mae"] is None
        want = ("Baseline: n/a (the checkpoint records no training EF mean and this dataset has "
                "no TRAIN videos)")
    else:
        assert b["source"] == "train-split" and b["mae"] == pytest.approx(ref["vs_truth"]["baseline_mae"])
        want = f"Baseline: always {b['ef']:.1f} % (TRAIN split mean of this dataset"
    assert want in md and want in stdout and want in html


def test_baseline_from_the_checkpoint_and_require_tracings(tiny_run, tmp_path: Path):
    """A checkpoint carrying its training EF mean names it as the baseline, on any dataset."""
    import torch

    from echoedge.model.checkpoint import file_sha256, read_payload

    payload = read_payload(tiny_run.checkpoint)
    payload["train_ef"] = {"mean": 57.25, "videos": 10}  # same weights, now with its mean
    ck = tmp_path / "with-mean.pt"
    torch.save(payload, ck)
    art = tmp_path / "artefacts" / "executorch-fp32"
    shutil.copytree(tiny_run.fp32, art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["source_checkpoint_sha256"] = file_sha256(ck)
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2))

    data = _shape("only-test-rows", tiny_run.data, tmp_path / "data")
    rc, stdout = _validate(tiny_run, art, ck, data, tmp_path / "report")
    assert rc == 0, stdout
    report = read_report(tmp_path / "report" / "report.json")
    truth = np.array([p["ef_true"] for p in report["reference"]["predictions"]])
    b = report["baseline"]
    assert (b["ef"], b["source"], b["videos"]) == (57.25, "checkpoint", 10)
    assert b["mae"] == pytest.approx(np.abs(truth - 57.25).mean())
    want = "Baseline: always 57.2 % (training EF mean, from the checkpoint): EF MAE"
    assert want in stdout and want in (tmp_path / "report" / "report.md").read_text()
    assert "baseline: always 57.2 % (training EF mean, from the checkpoint)" in stdout  # the log line

    # EchoNet-Dynamic's rule drops the untraced TEST videos: nothing is left to validate.
    partly = _shape("test-videos-untraced", tiny_run.data, tmp_path / "partly")
    rc, _ = _validate(tiny_run, art, ck, partly, tmp_path / "strict", "--require-tracings")
    assert rc == 2


def test_run_on_a_test_only_folder_needs_no_train(tiny_run, tmp_path: Path):
    """`run` validates a test-only folder (fp32 artefacts reused: no conversion, no calibration)."""
    data = _shape("no-split-column", tiny_run.data, tmp_path / "data")
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out / "artefacts", out / "artefacts")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["run", "--checkpoint", str(tiny_run.checkpoint), "--data", str(data),
                       "--format", "executorch", "--precision", "fp32", "--clips", "1", "--runs", "1",
                       "--warmup", "0", "--reuse", "--out", str(out), "--cache-dir",
                       str(tmp_path / "frames"), "--no-progress"])
    stdout = buf.getvalue()
    assert rc == 0, stdout
    report = read_report(out / "report.json")
    assert report["data"]["n_videos"] == 3 and report["baseline"]["ef"] is None
    assert f"landmarks {NO_TRACINGS}" in stdout and "Baseline: n/a" in stdout
