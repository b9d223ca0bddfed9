"""`echo-edge debug-quant` on EchoNet-Dynamic's R(2+1)D-18 (EF only, 3 channels, Conv3d blocks).

One TFLite int8 artefact of a tiny checkpoint (tests/video_resnet_tiny.py) is debugged end to end:
the model is read from the artefact's manifest (no --model), attribution and the sensitivity
sweep run the PT2E simulation on the video ResNet's deploy form, whose units are its Conv3d
layers (a rewritten Conv3d is one unit), and the budget search ranks them. The mixed artefact a
budget emits keeps the named conv float in the TFLite file (no Echo-E3Net scope needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")  # the PT2E simulation's XNNPACK quantizer
pytest.importorskip("onnx2tf")

from echoedge.cli import main as cli_main  # noqa: E402
from tests.video_resnet_tiny import ARCH, tiny_echonet_checkpoint  # noqa: E402

# A Conv3d of the first residual block (R(2+1)D's spatial 1x3x3 half), by its torchvision path
# under EFOutputs' `net.`: one unit of the sweep, kept to one so the test stays short.
UNIT = "net.layer1.0.conv1.0.0"
# The sweeps calibrate on all 8 clips of the set, as the attribution's simulation does.
FAST = ["--videos", "2", "--clips", "1", "--calibration-clips", "8", "--runs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def video_job(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> dict:
    """The checkpoint and its TFLite int8 artefact (8 random TRAIN clips), as `export` writes them."""
    root = tmp_path_factory.mktemp("dqvideo")
    ck = tiny_echonet_checkpoint(root / "best.pt")
    arts, frames = root / "artefacts", root / "frames"
    assert cli_main(["export", "--model", ARCH, "--checkpoint", str(ck), "--data", str(synth_root),
                     "--format", "tflite", "--precision", "int8", "--calibration", "random:8",
                     "--out", str(arts), "--cache-dir", str(frames)]) == 0
    manifest = json.loads((arts / "tflite-int8" / "manifest.json").read_text())
    assert manifest["model"] == ARCH  # what lets the later commands leave --model out
    return {"root": root, "ck": ck, "arts": arts, "frames": frames}


@pytest.mark.slow  # 83 s on 2 loaded cores: four PT2E simulations (each export + XNNPACK annotation)
def test_debug_quant_runs_on_a_video_resnet(video_job: dict, synth_root: Path, capsys):
    out = video_job["root"] / "dq"
    # No --model: read from the manifest. A budget no configuration meets, so the search must
    # rank the swept unit, try it and say why it stops (exit 1).
    rc = cli_main(["debug-quant", str(video_job["arts"]), "--checkpoint", str(video_job["ck"]),
                   "--data", str(synth_root), "--out", str(out), "--cache-dir", str(video_job["frames"]),
                   "--parts", "attribution,sensitivity,budget", "--units", UNIT, "--budget", "1e-9",
                   "--max-float", "1", *FAST])
    stdout = capsys.readouterr().out
    assert rc == 1, stdout
    dq = json.loads((out / "debug_quant.json").read_text())
    assert dq["model"] == ARCH and dq["outputs"] == ["ef"]

    (att,) = dq["attribution"]
    assert att["artefact"] == "tflite-int8" and len(att["videos"]) == 2
    assert all(np.isfinite(v) for k in ("ef_reference", "ef_simulated", "ef_artefact") for v in att[k])
    for r, s, a in zip(att["ef_reference"], att["ef_simulated"], att["ef_artefact"]):
        assert (s - r) + (a - s) == pytest.approx(a - r, abs=1e-9)
    # The simulation quantized something: a PT2E graph identical to fp32 would give 0 exactly.
    assert att["quantization"] > 0

    (sens,) = dq["sensitivity"]
    assert sens["family"] == "int8" and sens["formats"] == ["tflite"]
    assert [u["unit"] for u in sens["units"]] == [UNIT]
    assert sens["baseline"] == pytest.approx(att["quantization"], abs=1e-9)  # same scheme, clips, videos

    (row,) = dq["budget"]
    assert row["format"] == "tflite" and not row["met"] and "cannot be met" in row["reason"]
    assert "budget 1e-09 not met for tflite int8" in stdout
    names = [c["name"] for c in dq["candidates"]]
    assert names[0].startswith("eager fp32") and "tflite-int8" in names
    md = (out / "debug_quant.md").read_text()
    assert UNIT in md and "tflite-int8" in md and f"(r2plus1d_18, {dq['checkpoint_sha256'][:12]})" in md


def test_a_mixed_tflite_artefact_keeps_a_video_resnet_conv_float(video_job: dict, tmp_path: Path):
    """The budget's emit step: no Echo-E3Net scope, so the kept unit's convs (found by weight in
    the TFLite graph) are the only float convs; the file runs and gives EF only."""
    from echoedge.calibration import load_calibration_set
    from echoedge.convert.artefact import read_manifest
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.registry import load
    from echoedge.quantdebug.budget import emit_mixed
    from echoedge.quantdebug.simulate import quant_units
    from echoedge.validate.runner import open_runner

    ck = load(ARCH, video_job["ck"])
    cs = load_calibration_set(video_job["arts"] / "calibration")
    deploy = to_deploy_form(ck.runnable, example=torch.from_numpy(cs.clips[:2].copy())).eval()
    units = {u.name: u for u in quant_units(deploy, "tflite", "int8")}
    assert UNIT in units and "net.fc" not in units  # the recipe's units are the convs; fc is float
    folder = emit_mixed(deploy, ck.spec, "tflite", [UNIT], tmp_path / "tflite-int8-mixed", cs, ck.sha256,
                        progress=False)
    m = read_manifest(folder)
    q = m.details["quantization"]
    assert m.model == ARCH and q["kept_float"] == [UNIT] and q["int8_modules"] == "all"
    assert q["scope"]["kept_float_convs"] == len(units[UNIT].layers)
    assert q["scope"]["float_by_recipe"] == {"CONV_2D": len(units[UNIT].layers)}
    runner = open_runner(folder)
    try:
        outs = runner(cs.clips[:1])
    finally:
        runner.close()
    assert len(outs) == 1 and np.isfinite(outs[0]).all()


def test_a_model_the_artefacts_or_checkpoint_contradict_is_one_line(video_job: dict, synth_root: Path,
                                                                      tmp_path: Path, capsys):
    from echoedge.model.checkpoint import SHIPPED

    def run(*extra: str) -> tuple[int, list[str]]:
        rc = cli_main(["debug-quant", str(video_job["arts"]), "--data", str(synth_root),
                       "--out", str(tmp_path / "x"), "--parts", "attribution", *extra])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return rc, [line for line in err.splitlines() if line.strip()]

    # --model against the manifest: refused before the checkpoint is even looked for.
    rc, err = run("--model", "e3net")
    assert rc == 2 and len(err) == 1
    assert "converted from a r2plus1d_18 model" in err[0] and "pass --model r2plus1d_18" in err[0]
    # An Echo-E3Net checkpoint read as the video ResNet the artefacts record.
    rc, err = run("--checkpoint", str(SHIPPED))
    assert rc == 2 and len(err) == 1 and SHIPPED.name in err[0] and "not a video ResNet" in err[0]
