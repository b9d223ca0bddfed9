"""`echo-edge debug-quant` end to end on a tiny checkpoint and a real tiny ExecuTorch int8 artefact."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")

from echoedge.cli import main as cli_main  # noqa: E402

# Every simulated calibration clip costs a forward through the observed model (~1 s on 2 cores): the
# sweeps calibrate on the first 4 clips of the artefact's 8 (attribution still uses all 8, as the
# artefact was built) and each stability draw holds 4 clips; what the tests check does not depend
# on these counts.
FAST = ["--videos", "2", "--clips", "1", "--calibration-clips", "4", "--sizes", "4", "--draws", "2",
        "--strategies", "random,ef-stratified", "--runs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory: pytest.TempPathFactory, synth_root: Path):
    """A tiny checkpoint, its ExecuTorch int8 artefact (8 random TRAIN clips) and a validation report."""
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.network import EchoE3Net

    from echoedge.model.deploy import to_deploy_form
    from echoedge.quantdebug.simulate import quant_units

    root = tmp_path_factory.mktemp("dq")
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = EchoE3Net(cfg).eval()
    spec = clip_spec_for(cfg, mean=35.0, std=48.0)
    ck = save_checkpoint(root / "tiny.pt", model, cfg, spec, "test")
    # Sweep two units only: each one is a full simulation (export, calibrate, evaluate).
    units = [u.name for u in quant_units(to_deploy_form(model, example=torch.zeros(spec.input_shape(1))))][:2]
    frames = root / "frames"
    arts = root / "artefacts"
    assert cli_main(["export", "--checkpoint", str(ck), "--data", str(synth_root), "--format", "executorch",
                     "--precision", "int8", "--calibration", "random:8", "--out", str(arts),
                     "--cache-dir", str(frames)]) == 0
    rc = cli_main(["validate", str(arts), "--checkpoint", str(ck), "--data", str(synth_root),
                   "--out", str(root / "report"), "--videos", "2", "--clips", "1", "--runs", "3",
                   "--bootstrap", "50", "--cache-dir", str(frames), "--no-progress"])
    assert rc in (0, 1)  # a random-weight model may fail an accuracy gate; the report is what matters
    return {"root": root, "ck": ck, "arts": arts, "frames": frames, "report": root / "report" / "report.json",
            "units": units}


def _run(job: dict, synth_root: Path, out: Path, *extra: str) -> int:
    return cli_main(["debug-quant", str(job["arts"]), "--checkpoint", str(job["ck"]), "--data", str(synth_root),
                     "--out", str(out), "--cache-dir", str(job["frames"]), "--units", ",".join(job["units"]),
                     *FAST, *extra])


@pytest.fixture(scope="module")
def first_run(tiny_job: dict, synth_root: Path):
    """Every part, with a budget no configuration can meet (so the search must say so)."""
    out = tiny_job["root"] / "dq1"
    rc = _run(tiny_job, synth_root, out, "--budget", "1e-9", "--max-float", "1")
    return rc, json.loads((out / "debug_quant.json").read_text()), out


def test_all_parts_write_json_md_and_plots(first_run):
    rc, dq, out = first_run
    assert dq["schema"] == "echo-edge/debug-quant" and dq["schema_version"] == 1
    assert dq["parts"] == ["attribution", "sensitivity", "budget", "calibration"]
    assert (out / "logs" / "debug-quant.log").is_file()  # toolchain chatter went there (console.stderr_to)
    att = dq["attribution"][0]
    assert att["artefact"] == "executorch-int8"
    # Attribution terms come from the same videos: the signed terms add up video by video.
    for r, s, a in zip(att["ef_reference"], att["ef_simulated"], att["ef_artefact"]):
        assert (s - r) + (a - s) == pytest.approx(a - r, abs=1e-9)
    assert att["bias_total"] == pytest.approx(att["bias_quantization"] + att["bias_conversion"], abs=1e-9)
    sens = dq["sensitivity"][0]
    assert sens["family"] == "int8" and sens["formats"] == ["executorch"] and sens["units"]
    cal = dq["calibration"]
    assert [p["strategy"] for p in cal["points"]] == ["random", "ef-stratified"]
    assert cal["label"].startswith("PT2E simulation")
    for name in ("sensitivity_int8", "calibration_size"):
        assert (out / dq["figures"][name]).stat().st_size > 5000
    md = (out / "debug_quant.md").read_text()
    for heading in ("### Error attribution", "### Per-layer sensitivity", "### Mixed precision",
                    "### Calibration stability and size"):
        assert heading in md


def test_unreachable_budget_exits_1_with_the_reason(first_run, capsys):
    rc, dq, out = first_run
    b = dq["budget"][0]
    assert rc == 1 and b["met"] is False and "cannot be met" in b["reason"]
    assert not (out / "artefacts").exists()  # nothing emitted for a budget that failed


def test_met_budget_emits_a_mixed_artefact_and_the_report_shows_the_section(first_run, tiny_job, synth_root):
    """A hand-picked mix (--keep-float, no search) within the budget is emitted, measured, reported.

    The mix is the tiny Echo-E3Net's first two int8 units float: the suite's one real mixed .pte of
    it (tests/quantdebug/test_budget.py checks on the same weights and units that keep_float reaches
    the quantizer, in the graph it lowers, without converting again).

    (The greedy search itself, ranking a fragile layer first and keeping it float, is tested on a
    network built fragile in test_budget/test_sensitivity: a random-weight Echo-E3Net's EF barely
    depends on its input, so which of its layers matters most is a coin toss.)
    """
    _, dq, _ = first_run
    units = tiny_job["units"]  # the first two units of the recipe
    out = tiny_job["root"] / "dq2"
    # An earlier run's result in the same folder: the parts this run does not redo are kept.
    out.mkdir()
    shutil.copy(first_run[2] / "debug_quant.json", out / "debug_quant.json")
    shutil.copy(first_run[2] / dq["figures"]["calibration_size"], out / dq["figures"]["calibration_size"])
    rc = _run(tiny_job, synth_root, out, "--parts", "budget", "--keep-float", ",".join(units), "--budget", "10",
              "--max-memory-mb", "1000", "--report", str(tiny_job["report"]))
    assert rc == 0
    dq2 = json.loads((out / "debug_quant.json").read_text())
    # No sweep (the mix was given): the earlier run's sweep is kept with the other parts.
    assert dq2["parts"] == ["attribution", "sensitivity", "budget", "calibration"]
    assert dq2["carried_over"]["parts"] == ["attribution", "sensitivity", "calibration"]
    for key in ("attribution", "sensitivity", "calibration"):
        assert dq2[key] == dq[key]
    assert dq2["figures"]["calibration_size"] == dq["figures"]["calibration_size"]
    b = dq2["budget"][0]
    assert b["met"] and b["kept_float"] == units and b["search"]["evaluations"] == 1
    # The memory limit: the search's estimate and the emitted file's own figures beside it.
    mem = b["memory"]
    assert mem["limit_mb"] == 1000 and 0 < mem["estimate_mb"] and mem["within_limit"]
    assert 0 < mem["graph_peak_mb"] <= 1000 and mem["planned_mb"] >= 0
    mixed = out / "artefacts" / "executorch-int8-mixed"
    man = json.loads((mixed / "manifest.json").read_text())
    assert man["details"]["quantization"]["recipe"]["kept_float"] == units
    names = [c["name"] for c in dq2["candidates"]]
    assert names[0].startswith("eager fp32") and "executorch-int8" in names and "executorch-int8-mixed" in names
    assert all(c["latency_ms"] > 0 for c in dq2["candidates"])
    # The mixed .pte really ran in the ExecuTorch runtime: its EF on the videos is a number.
    mixed_c = next(c for c in dq2["candidates"] if c["name"] == "executorch-int8-mixed")
    assert mixed_c["kept_float"] == units
    assert math.isfinite(mixed_c["mean_abs_def"]) and math.isfinite(mixed_c["max_abs_def"])
    assert [g["format"] for g in dq2["goal"]] == ["executorch"]
    assert dq2["goal"][0]["status"] in ("met", "not met")
    # The report: the key in report.json, the section in report.md and a self-contained report.html.
    rep_dir = tiny_job["report"].parent
    rep = json.loads(tiny_job["report"].read_text())
    assert rep["debug_quant"]["budget"][0]["kept_float"] == units
    assert "## Quantization debugging" in (rep_dir / "report.md").read_text()
    html = (rep_dir / "report.html").read_text()
    section = html[html.index("Quantization debugging"):]
    assert "data:image/png;base64," in section and "executorch-int8-mixed" in section
    assert "src='http" not in html and "<script" not in html


def test_bad_input_is_one_line_and_exit_2(tiny_job, synth_root, tmp_path, capsys):
    def err_lines() -> list[str]:
        return [l for l in capsys.readouterr().err.splitlines() if l.startswith("echo-edge")]

    assert cli_main(["debug-quant", str(tiny_job["arts"]), "--parts", "attribution,magic"]) == 2
    e = err_lines()
    assert len(e) == 1 and "magic" in e[0]
    rc = cli_main(["debug-quant", "--checkpoint", str(tiny_job["ck"]), "--data", str(synth_root),
                   "--out", str(tmp_path / "x"), "--parts", "attribution"])
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "need ARTEFACTS" in e[0]
    rc = cli_main(["debug-quant", str(tmp_path / "nowhere"), "--checkpoint", str(tiny_job["ck"]),
                   "--data", str(synth_root), "--out", str(tmp_path / "x")])
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "nowhere" in e[0] and "not found" in e[0]
    rc = _run(tiny_job, synth_root, tmp_path / "x", "--report", str(tmp_path / "no-report.json"))
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "no-report.json" in e[0]
    rc = _run(tiny_job, synth_root, tmp_path / "x", "--sizes", "8,x")
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "8,x" in e[0]
    rc = _run(tiny_job, synth_root, tmp_path / "x", "--parts", "budget", "--max-memory-mb", "-1")
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "--max-memory-mb" in e[0]
    rc = _run(tiny_job, synth_root, tmp_path / "x", "--parts", "budget", "--keep-float", "encoder.nope")
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "encoder.nope" in e[0] and "encoder.cnn.0.block.conv1" in e[0]
    # Artefacts from another checkpoint: refused before any work, naming the folder.
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(1)
    cfg = get_config("tiny")
    other = save_checkpoint(tmp_path / "other.pt", EchoE3Net(cfg).eval(), cfg, clip_spec_for(cfg), "test")
    rc = cli_main(["debug-quant", str(tiny_job["arts"]), "--checkpoint", str(other), "--data", str(synth_root),
                   "--out", str(tmp_path / "x"), "--parts", "attribution"])
    e = err_lines()
    assert rc == 2 and len(e) == 1 and "executorch-int8" in e[0] and "checkpoint" in e[0]


def test_report_renders_the_section_from_the_dict_alone(first_run, tiny_job):
    """No --report needed: any report dict with a `debug_quant` key renders the section."""
    from echoedge.quantdebug.output import report_section
    from echoedge.validate.report_html import render_html
    from echoedge.validate.report_json import read_report
    from echoedge.validate.report_md import render_markdown

    _, dq, _ = first_run
    rep = read_report(tiny_job["report"])
    rep.pop("debug_quant", None)
    assert "Quantization debugging" not in render_markdown(rep)
    rep["debug_quant"] = report_section(dq)
    assert all("clips" not in d for d in rep["debug_quant"]["calibration"]["draws"])
    md = render_markdown(rep)
    assert "## Quantization debugging" in md and "not met" in md and "recommended N" in md
    html = render_html(rep)
    section = html[html.index("id='quantization-debugging'"):]
    # attribution, sensitivity and calibration figures inline; tables carry the numbers.
    assert section.count("data:image/png;base64,") >= 3
    assert f"{dq['attribution'][0]['total']:.3f}" in section


def test_goal_verdict_per_format_names_the_reason():
    from echoedge.quantdebug.candidates import goal_verdicts

    def cand(name, fmt, prec, d, speed, runtime="rt"):
        return {"name": name, "folder": f"/a/{name}", "format": fmt, "precision": prec, "mean_abs_def": d,
                "speedup_vs_eager": speed, "meets_goal": speed is not None and d <= 0.25 and speed >= 2.5,
                "runtime": runtime}

    cands = [{"name": "eager", "folder": None, "format": "pytorch", "precision": "fp32", "mean_abs_def": 0.0,
              "speedup_vs_eager": 1.0, "meets_goal": False, "runtime": "pytorch-eager"},
             cand("tflite-fp32", "tflite", "fp32", 0.0, 2.0),  # float: not an int8-or-mixed candidate
             cand("tflite-int8", "tflite", "int8", 0.13, 2.6),
             cand("tflite-int8-mixed", "tflite", "int8", 0.10, 2.4),
             cand("executorch-int8", "executorch", "int8", 0.30, 1.9),
             cand("executorch-int8-mixed", "executorch", "int8", 0.20, 1.7),
             cand("coreml-w8", "coreml", "w8", 0.05, None, runtime="reference-interpreter"),
             cand("other-int8", "other", "int8", 0.9, 3.0)]
    g = {r["format"]: r for r in goal_verdicts(cands, 0.25)}
    assert list(g) == ["tflite", "executorch", "coreml", "other"]
    assert g["tflite"]["status"] == "met" and g["tflite"]["candidate"] == "tflite-int8"
    assert g["executorch"]["status"] == "not met" and g["executorch"]["candidate"] == "executorch-int8-mixed"
    assert "1.70x eager fp32, under 2.5x" in g["executorch"]["reason"]
    assert g["coreml"]["status"] == "unmeasured" and "reference-interpreter" in g["coreml"]["reason"]
    assert g["other"]["status"] == "not met" and "within the budget" in g["other"]["reason"]
