"""`echo-edge run --model r2plus1d_18 --checkpoint C`: EchoNet-Dynamic's model end to end.

The checkpoint is written as EchoNet-Dynamic writes its own (DataParallel's `module.` prefix
under `state_dict`), at 1/16 width and with a small clip (8 frames of 32 x 32, recorded in the
file as echo-edge's `clip_spec`) so the conversion takes seconds. The synthetic videos are grey;
the model eats 3 channels: the clip path repeats the grey frame on each (as EchoNet-Dynamic
reads its AVIs). The model gives EF only: EDV, ESV and landmarks are null in report.json and
"not produced by this model" wherever they are shown.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from echoedge.cli import main as cli_main
from echoedge.validate.report_json import read_report

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2tf")


def _echonet_checkpoint(path: Path) -> Path:
    from tests.video_resnet_tiny import tiny_echonet_checkpoint

    return tiny_echonet_checkpoint(path, base_width=4, frames=8, size=32)


def _cli(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(args)
    return rc, buf.getvalue()


def test_run_r2plus1d_18_end_to_end(synth_root: Path, tmp_path: Path, capsys):
    ck = _echonet_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "run"
    rc, stdout = _cli(["run", "--model", "r2plus1d_18", "--checkpoint", str(ck), "--data",
                       str(synth_root), "--format", "tflite", "--precision", "fp32",
                       "--videos", "2", "--clips", "1", "--runs", "3", "--warmup", "1",
                       "--bootstrap", "100", "--no-memory", "--jobs", "1", "--out", str(out),
                       "--cache-dir", str(tmp_path / "frames"), "--no-progress"])
    assert rc == 0, stdout
    report = read_report(out / "report.json")
    ref = report["reference"]
    assert ref["model"] == "r2plus1d_18" and ref["outputs"] == ["ef"]
    assert ref["vs_truth"]["edv_mae"] is None and ref["vs_truth"]["landmark_error_px"] is None
    (art,) = report["artefacts"]
    assert art["name"] == "tflite-fp32" and art["status"] == "PASS"
    assert art["vs_reference"]["ef"]["max_abs"] < 1e-2  # fp32: float rounding
    vr = art["vs_reference"]
    assert vr["edv_mean_abs"] is None and vr["esv_mean_abs"] is None
    assert vr["landmark_delta_px"] is None
    assert all(p["edv"] is None for p in art["predictions"])
    md = (out / "report.md").read_text()
    assert "not produced by this model" in md and "not produced by this model" in stdout
    assert "model: r2plus1d_18 from" in stdout

    # A checkpoint of another model is one line naming the mismatch, exit 2, no traceback.
    for model, words in (("e3net", "it is a r2plus1d_18 state dict: pass --model r2plus1d_18"),
                         ("mc3_18", "weights do not fit mc3_18: ")):
        rc, _ = _cli(["export", "--model", model, "--checkpoint", str(ck), "--data",
                      str(synth_root), "--out", str(tmp_path / model)])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1


def test_a_video_resnet_needs_a_checkpoint(capsys):
    rc = cli_main(["run", "--model", "r3d_18", "--out", "/nonexistent/never-written"])
    err = capsys.readouterr().err
    assert rc == 2 and "--model r3d_18 needs --checkpoint" in err
