"""`echo-edge stress` and `echo-edge stream` on EchoNet-Dynamic's R(2+1)D-18 (EF only, 3 channels).

A tiny checkpoint (tests/video_resnet_tiny.py) and its TFLite fp32 artefact: stress reads the
model from the artefact's manifest and runs the reference and the artefact on shifted frames;
stream replays a video into the checkpoint (eager, --model r2plus1d_18) and into the artefact
(model from its manifest), hop by hop on the same clips. EDV, ESV and landmarks are never made
up: null in JSON, empty cells in the CSV, no contours in the video.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx2tf")

from echoedge.cli import main as cli_main  # noqa: E402
from echoedge.validate.report_json import read_report  # noqa: E402
from tests.video_resnet_tiny import ARCH, tiny_echonet_checkpoint  # noqa: E402


def _cli(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(args)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def video_fp32(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> dict:
    root = tmp_path_factory.mktemp("video_fp32")
    ck = tiny_echonet_checkpoint(root / "best.pt")
    arts = root / "artefacts"
    rc, stdout = _cli(["export", "--model", ARCH, "--checkpoint", str(ck), "--data", str(synth_root),
                       "--format", "tflite", "--precision", "fp32", "--out", str(arts)])
    assert rc == 0, stdout
    video = sorted((synth_root / "Videos").glob("*.avi"))[0]
    return {"root": root, "ck": ck, "arts": arts, "art": arts / "tflite-fp32", "video": video}


def test_stress_runs_a_video_resnet_and_reads_its_model_from_the_manifest(video_fp32: dict, synth_root: Path):
    out = video_fp32["root"] / "stress"
    rc, stdout = _cli(["stress", "--artefacts", str(video_fp32["arts"]), "--checkpoint", str(video_fp32["ck"]),
                       "--data", str(synth_root), "--shifts", "blur,gain-down", "--levels", "mild",
                       "--videos", "2", "--clips", "1", "--runs", "3", "--bootstrap", "50", "--no-memory",
                       "--out", str(out), "--cache-dir", str(video_fp32["root"] / "frames"), "--no-progress"])
    assert rc == 0, stdout
    rep = read_report(out / "report.json")
    assert rep["reference"]["model"] == ARCH and rep["reference"]["outputs"] == ["ef"]
    assert rep["reference"]["vs_truth"]["edv_mae"] is None
    st = rep["stress"]
    assert [(c["shift"], c["level"]) for c in st["reference"]["conditions"]] == [("blur", "mild"),
                                                                               ("gain-down", "mild")]
    (row,) = st["artefacts"]
    assert row["name"] == "tflite-fp32" and row["status"] == "ok" and len(row["conditions"]) == 2
    for c in row["conditions"]:  # fp32 of the same function: float rounding on shifted frames too
        assert c["vs_reference"]["ef"]["max_abs"] < 1e-2
    assert "not produced by this model" in (out / "report.md").read_text()


def _hops(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_stream_replays_a_video_resnet_checkpoint_and_artefact_on_the_same_clips(video_fp32: dict,
                                                                                  tmp_path: Path):
    eager, art = tmp_path / "eager", tmp_path / "art"
    common = [str(video_fp32["video"]), "--no-pace", "--hop", "3", "--no-progress"]
    rc, stdout = _cli(["stream", str(video_fp32["ck"]), *common, "--model", ARCH, "--out", str(eager),
                       "--video-out", str(tmp_path / "replay.gif")])
    assert rc == 0, stdout
    assert "EDV, ESV and landmarks (r2plus1d_18): – (not produced by this model)" in stdout
    s = json.loads((eager / "stream_summary.json").read_text())
    assert s["model"] == ARCH and s["outputs"] == ["ef"] and s["edv"] is None and s["esv"] is None
    assert s["clip_spec"]["channels"] == 3 and np.isfinite(s["ef"]) and np.isfinite(s["all_clips_ef"])
    rows = _hops(eager / "stream_hops.csv")
    assert rows and all(r["edv"] == "" and r["esv"] == "" for r in rows)
    assert not [k for k in rows[0] if k.startswith(("ed_x", "es_x"))]  # no landmark columns
    assert (tmp_path / "replay.gif").stat().st_size > 0

    # The artefact folder: no --model (its manifest names it); same hops, same clips, same EF.
    rc, stdout = _cli(["stream", str(video_fp32["art"]), *common, "--no-all-clips", "--out", str(art)])
    assert rc == 0, stdout
    sa = json.loads((art / "stream_summary.json").read_text())
    assert sa["model"] == ARCH and sa["format"] == "tflite" and sa["edv"] is None
    rows_a = _hops(art / "stream_hops.csv")
    assert [r["selected_frames"] for r in rows_a] == [r["selected_frames"] for r in rows]
    assert np.allclose([float(r["ef"]) for r in rows_a], [float(r["ef"]) for r in rows], atol=1e-2)


def test_a_model_the_artefacts_or_checkpoint_contradict_is_one_line(video_fp32: dict, synth_root: Path,
                                                                      tmp_path: Path, capsys):
    from echoedge.model.checkpoint import SHIPPED

    def one_line(args: list[str], *words: str) -> None:
        rc = cli_main(args)
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc == 2 and len(err) == 1, err
        assert all(w in err[0] for w in words), err[0]

    video = str(video_fp32["video"])
    # stream: a video ResNet checkpoint read as the default Echo-E3Net says which --model it is.
    one_line(["stream", str(video_fp32["ck"]), video, "--out", str(tmp_path / "s")],
             "it is a r2plus1d_18 state dict: pass --model r2plus1d_18")
    one_line(["stream", str(video_fp32["art"]), video, "--model", "e3net", "--out", str(tmp_path / "s")],
             "converted from a r2plus1d_18 model", "not --model e3net")
    stress = ["stress", "--artefacts", str(video_fp32["arts"]), "--data", str(synth_root),
              "--out", str(tmp_path / "x"), "--shifts", "blur", "--no-progress"]
    one_line([*stress, "--model", "mc3_18", "--checkpoint", str(video_fp32["ck"])],
             "converted from a r2plus1d_18 model", "not --model mc3_18")
    # An Echo-E3Net checkpoint as the reference of r2plus1d_18 artefacts.
    one_line([*stress, "--checkpoint", str(SHIPPED)], SHIPPED.name, "not a video ResNet")


def test_manifests_without_a_model_or_with_two_models(video_fp32: dict, tmp_path: Path):
    """Artefacts written before manifests recorded the model leave --model to the user (None:
    the caller's default); artefacts of two different models in one run are refused."""
    import shutil

    from echoedge.convert.artefact import artefacts_model
    from echoedge.errors import EchoEdgeError

    old, other = tmp_path / "old" / "tflite-fp32", tmp_path / "other" / "tflite-fp32"
    for folder, model in ((old, None), (other, "mc3_18")):
        shutil.copytree(video_fp32["art"], folder)
        m = json.loads((folder / "manifest.json").read_text())
        if model is None:
            del m["model"]
        else:
            m["model"] = model
        (folder / "manifest.json").write_text(json.dumps(m))
    assert artefacts_model([old], None) is None and artefacts_model([old], "r3d_18") == "r3d_18"
    assert artefacts_model([old, video_fp32["art"]], None) == ARCH
    with pytest.raises(EchoEdgeError, match="from a r2plus1d_18 model and .* from a mc3_18 model"):
        artefacts_model([video_fp32["art"], other], None)
