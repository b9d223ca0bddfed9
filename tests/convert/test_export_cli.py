"""`echo-edge export` end to end on a tiny checkpoint: deploy form, calibration set, int8 .pte.

The fp32 .pte of the same tiny checkpoint through `echo-edge export` is checked in
tests/validate/test_reproducible.py (the session's tiny run rebuilt: no calibration set, float
weights, equal to the 3D reference); one calibration set shared by fp32 and int8 in one export
call, in tests/convert/test_tflite.py (the same front end, echoedge.convert.export).
"""

from __future__ import annotations

import json
from pathlib import Path

from echoedge.cli import main as cli_main
from tests.tiny_e3net import tiny_checkpoint as _tiny_checkpoint


def test_export_cli_writes_whole_recipe_int8_with_its_calibration_set(tmp_path: Path, synth_root: Path, capsys):
    ck = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "artefacts"
    rc = cli_main(["export", "--checkpoint", str(ck), "--data", str(synth_root), "--format", "executorch",
                   "--precision", "int8", "--calibration", "random:8", "--out", str(out),
                   "--cache-dir", str(tmp_path / "frames"), "--int8-recipe", "whole"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "deploy form" in text
    # Toolchain chatter goes to the log (what reaches it: tests/test_console.py).
    assert f"toolchain messages -> {out / 'logs' / 'export.log'}" in text
    assert (out / "logs" / "export.log").is_file()
    calib = json.loads((out / "calibration" / "manifest.json").read_text())
    int8 = json.loads((out / "executorch-int8" / "manifest.json").read_text())
    assert int8["calibration_id"] == calib["id"] and int8["precision"] == "int8"
    assert int8["details"]["quantization"]["calibration"]["clips"] == 8
    assert (out / "executorch-int8" / "model.pte").is_file()
    # Whole-model int8, read back from the program itself: every conv and linear weight is int8,
    # the stem's too; nothing silently stays float.
    weights = int8["details"]["weights"]
    assert int8["details"]["quantization"]["recipe"]["name"] == "whole"
    assert int8["details"]["quantization"]["recipe"]["float"] == "none"
    # E2FA's statistics row and output scaling stay float; its Linear layers are int8 (below).
    assert int8["details"]["quantization"]["recipe"]["float_glue"] == ["fa"]
    assert weights["heavy_layers"] > 20
    assert weights["float_weight_layers"] == [], weights["float_weight_layers"]
    # The output shift was measured on the 8 calibration clips and taken out of the program.
    shift = int8["details"]["quantization"]["output_shift"]
    assert shift["outputs"] == ["ef", "edv", "esv"] and shift["clips"] == 8
    assert shift["applied_to"] == "the program's fa.out_mean constant"
    assert cli_main(["info", str(out / "executorch-int8")]) == 0
    assert "output shift taken out: ef " in capsys.readouterr().out
    assert weights["int8_share"] >= 0.9, weights["bytes_by_dtype"]
    # The int8 program runs and stays close to the 3D eager reference (random weights, 8 random
    # calibration clips: a loose bound in EF points and normalised landmark units).
    from echoedge.calibration import load_calibration_set
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.validate import EagerRunner, open_runner

    x = load_calibration_set(out / "calibration").clips[:2]
    eager = EagerRunner(load_checkpoint(ck).model)(x)
    with open_runner(out / "executorch-int8") as r:
        got = r(x)
    ef_err = float(abs(got[0] - eager[0]).max())
    lm_err = max(float(abs(got[k] - eager[k]).max()) for k in (3, 4))
    assert ef_err <= 2.0 and lm_err <= 0.05, (ef_err, lm_err)
    # A second export into the same folder (its calibration set given, so nothing is redrawn)
    # refuses to clobber the artefact.
    rc = cli_main(["export", "--checkpoint", str(ck), "--data", str(synth_root), "--format", "executorch",
                   "--precision", "int8", "--calibration-set", str(out / "calibration"), "--out", str(out),
                   "--cache-dir", str(tmp_path / "frames")])
    # (ExecuTorch's runtime, loaded above in this process, may log its own threadpool line.)
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("echo-edge")]
    assert rc == 2 and len(err) == 1 and "executorch-int8" in err[0] and "already exists" in err[0]


def test_export_cli_rejects_unknown_format(tmp_path: Path, capsys):
    rc = cli_main(["export", "--format", "onnx-magic", "--out", str(tmp_path / "a")])
    assert rc == 2 and "unknown format" in capsys.readouterr().err
