"""The stress suite: its section and gates in report.json / .md / .html / junit.xml, on the tiny
config with the session's converted artefacts (no new conversion), and its gates from a dict."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from echoedge.cli import main as cli_main
from echoedge.errors import EchoEdgeError
from echoedge.validate.gates import apply_gates, load_gates, stress_thresholds_for
from echoedge.validate.report_json import check_report, read_report

SHIFTS = "gain-down,blur,frame-rate"




def run_cli(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(args)
    return rc, buf.getvalue()


def common(tiny_run, out: Path) -> list[str]:
    return ["--checkpoint", str(tiny_run.checkpoint), "--data", str(tiny_run.data), "--videos", "2",
            "--clips", "2", "--runs", "3", "--warmup", "1", "--bootstrap", "50", "--out", str(out),
            "--cache-dir", str(tiny_run.frames), "--no-progress"]


@pytest.fixture(scope="module")
def stressed(tiny_run, tmp_path_factory, helpers):
    """`echo-edge stress` on the run's ExecuTorch fp32 artefact and a copy claiming int8 (gated)."""
    root = tmp_path_factory.mktemp("stress")
    arts = root / "arts"
    shutil.copytree(tiny_run.fp32, arts / "executorch-fp32")
    helpers["copy_with_manifest"](tiny_run.fp32, arts / "executorch-int8", precision="int8")
    out = root / "out"
    rc, stdout = run_cli(["stress", "--artefacts", str(arts), "--shifts", SHIFTS, *common(tiny_run, out)])
    return rc, stdout, out


def test_stress_section_is_in_report_json_with_every_condition(stressed):
    rc, stdout, out = stressed
    assert rc == 0, stdout
    rep = read_report(out / "report.json")
    st = rep["stress"]
    assert st["schema_version"] == 1 and st["levels"] == ["mild", "moderate", "severe"]
    assert [s["name"] for s in st["shifts"]] == SHIFTS.split(",")
    assert len(st["reference"]["conditions"]) == 9
    rows = {a["name"]: a for a in st["artefacts"]}
    assert set(rows) == {"executorch-fp32", "executorch-int8"}
    for row in rows.values():
        assert len(row["conditions"]) == 9
        for c in row["conditions"]:
            # the same program as the reference's deploy form: agreement stays at float rounding
            assert c["vs_reference"]["ef"]["mean_abs"] < 0.05
    # gated: int8 at mild and moderate (shipped gates); severe and fp32 only reported
    gated = [(c["shift"], c["level"]) for c in rows["executorch-int8"]["conditions"] if c["passed"] is not None]
    assert sorted(gated) == sorted((s, lv) for s in SHIFTS.split(",") for lv in ("mild", "moderate"))
    assert all(c["passed"] for c in rows["executorch-int8"]["conditions"] if c["passed"] is not None)
    assert all(c["passed"] is None for c in rows["executorch-fp32"]["conditions"])
    g = next(c for c in rows["executorch-int8"]["conditions"] if c["passed"])["gates"]
    assert {x["name"] for x in g} == {"mean_abs_delta_ef", "p95_abs_delta_ef", "band_agreement_reference"}
    assert rep["gates"]["stress"]["levels"] == ["mild", "moderate"]
    # the shifts really reach the model: the reference's EF changes with the frames
    maes = {(c["shift"], c["level"]): c["vs_truth"]["mae"] for c in st["reference"]["conditions"]}
    assert maes[("blur", "severe")] != maes[("blur", "mild")]


def test_stress_renders_in_markdown_html_and_junit(stressed):
    _, stdout, out = stressed
    md = (out / "report.md").read_text()
    assert "## Acquisition shifts (stress)" in md and "worst shift (mean |ΔEF|; reference: MAE)" in md
    assert "![artefact × shift heat map of mean |ΔEF|](stress_heatmap.png)" in md
    assert (out / "stress_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "| blur (0.75, 1.5, 2.5 px) |" in md
    html = (out / "report.html").read_text()
    assert "<h2 id='stress'>" in html and "alt='stress heat map'" in html and "id='stress-table'" in html
    assert "worst shift" in stdout  # the console's status table names it too
    suites = ET.parse(out / "junit.xml").getroot()
    cases = [c for c in suites.iter("testcase") if c.get("classname", "").endswith(".stress")]
    assert len(cases) == 6  # int8 x 3 shifts x 2 gated levels; fp32 is not gated
    assert {c.get("name") for c in cases} >= {"executorch-int8 under blur moderate (1.5 px)",
                                              "executorch-int8 under frame-rate mild (0.8x fps)"}
    assert all(c.find("failure") is None for c in cases)


def test_a_failing_stress_gate_exits_1(tiny_run, worse_artefact, tmp_path: Path, helpers):
    """EF off by 0.8 points passes a loosened clean gate but not the stress gate: exit 1, and the
    reason, the Markdown and JUnit name the shifted conditions."""
    arts = tmp_path / "arts"
    helpers["copy_with_manifest"](worse_artefact, arts / "executorch-int8", precision="int8")
    gates = tmp_path / "gates.yaml"
    gates.write_text("version: 1\nprecision:\n  int8: {mean_abs_delta_ef: 1.0, p95_abs_delta_ef: 2.0, "
                     "band_agreement_reference: 0}\nstress:\n  thresholds: {mean_abs_delta_ef: 0.5}\n")
    out = tmp_path / "out"
    rc, stdout = run_cli(["stress", "--artefacts", str(arts), "--shifts", "gain-up,noise", "--levels",
                          "moderate", "--gates", str(gates), *common(tiny_run, out)])
    assert rc == 1, stdout
    rep = read_report(out / "report.json")
    e = rep["artefacts"][0]
    assert e["status"] == "FAIL_ACCURACY" and all(g["passed"] for g in e["gates"])  # clean gates held
    assert e["reason"].startswith("stress: 2 of 2 gated shifted conditions fail")
    assert "mean_abs_delta_ef" in e["reason"] and rep["summary"]["exit_code"] == 1
    fails = [c for c in ET.parse(out / "junit.xml").getroot().iter("testcase")
             if c.get("classname", "").endswith(".stress") and c.find("failure") is not None]
    assert len(fails) == 2
    assert "**Failed stress gates**" in (out / "report.md").read_text()
    # re-gating the stored report with the shipped gates, nothing re-run: the clean gate fails too
    rc2, _ = run_cli(["validate", "--from-report", str(out / "report.json"), "--out", str(tmp_path / "re")])
    assert rc2 == 1
    assert read_report(tmp_path / "re" / "report.json")["stress"]["reference"] == rep["stress"]["reference"]


def test_run_stress_adds_the_section_to_the_main_job(tiny_run, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run.out / "artefacts", out / "artefacts")  # --reuse: nothing converted again
    rc, stdout = run_cli(["run", "--reuse", "--format", "executorch", "--precision", "fp32", "--stress",
                          "--stress-shifts", "gain-up", "--stress-levels", "moderate",
                          "--stress-precisions", "all", *common(tiny_run, out)])
    assert rc == 0, stdout
    st = read_report(out / "report.json")["stress"]
    assert [(c["shift"], c["level"]) for c in st["artefacts"][0]["conditions"]] == [("gain-up", "moderate")]
    assert json.loads((out / "run.json").read_text())["options"]["stress"]["shifts"] == ["gain-up"]


def test_stress_errors_are_one_line_and_list_names_the_shifts(tiny_run, tmp_path: Path, capsys):
    rc = cli_main(["stress", "--artefacts", str(tiny_run.fp32), "--shifts", "blur,glare",
                   *common(tiny_run, tmp_path / "x")])
    assert rc == 2 and "unknown shift 'glare'" in capsys.readouterr().err
    rc = cli_main(["stress", "--artefacts", str(tiny_run.fp32), "--levels", "extreme",
                   *common(tiny_run, tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown shift level 'extreme'" in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["stress", "--list"])
    assert rc == 0 and "frame-rate-unadjusted" in capsys.readouterr().out


# --- gates and schema from dicts (no runner) ------------------------------------------------------


def _report(mean: float, precision: str = "int8") -> dict:
    cond = lambda lv, m: {"shift": "blur", "level": lv, "value": 1.0,  # noqa: E731
                          "vs_reference": {"ef": {"mean_abs": m, "p95_abs": m, "max_abs": m}, "bias": m,
                                           "band_agreement": 1.0}, "vs_truth": {"mae": 3.0}}
    return {"reference": {"vs_truth": {"mae": 2.5}},
            "artefacts": [{"name": "a", "format": "tflite", "precision": precision, "run_status": "ok",
                           "status": "PASS", "reason": None,
                           "vs_reference": {"ef": {"mean_abs": 0.01, "p95_abs": 0.02, "max_abs": 0.03},
                                            "band_agreement": 1.0}, "vs_truth": {"mae": 2.6}}],
            "stress": {"reference": {"conditions": [{"shift": "blur", "level": lv, "value": 1.0,
                                                     "vs_truth": {"mae": 3.0}} for lv in ("mild", "moderate", "severe")]},
                       "artefacts": [{"name": "a", "conditions": [cond("mild", 0.1), cond("moderate", mean),
                                                                  cond("severe", 9.0)]}]}}


def test_stress_gates_fail_int8_at_moderate_never_at_severe_and_skip_fp32():
    g = load_gates()
    assert apply_gates(_report(0.4), g)["summary"]["exit_code"] == 0  # severe 9.0 is not gated
    bad = apply_gates(_report(0.7), g)
    assert bad["summary"]["exit_code"] == 1 and bad["artefacts"][0]["status"] == "FAIL_ACCURACY"
    assert "worst blur moderate" in bad["artefacts"][0]["reason"]
    assert apply_gates(_report(0.7, "fp32"), g)["summary"]["exit_code"] == 0
    assert stress_thresholds_for(g, "tflite", "w8", "blur", "moderate") is None


def test_stress_part_of_the_gates_file_overrides_per_shift_and_is_checked(tmp_path: Path):
    f = tmp_path / "g.yaml"
    f.write_text("version: 1\nstress:\n  levels: [moderate]\n  shift:\n    blur: {p95_abs_delta_ef: 3.0, "
                 "mean_abs_delta_ef: null}\n")
    g = load_gates(f)
    th = stress_thresholds_for(g, "tflite", "int8", "blur", "moderate")
    assert th["p95_abs_delta_ef"] == 3.0 and "mean_abs_delta_ef" not in th
    assert stress_thresholds_for(g, "tflite", "int8", "gain-up", "moderate")["mean_abs_delta_ef"] == 0.5
    assert stress_thresholds_for(g, "tflite", "int8", "blur", "mild") is None
    for text, words in (("stress:\n  shift: {glare: {}}\n", "unknown shift 'glare'"),
                        ("stress:\n  levels: [extreme]\n", "unknown extreme"),
                        ("stress:\n  thresholds: {p50_latency_ms: 5}\n", "unknown gate 'p50_latency_ms'"),
                        ("stress:\n  gated: true\n", "unknown key(s) gated")):
        f.write_text("version: 1\n" + text)
        with pytest.raises(EchoEdgeError) as e:
            load_gates(f)
        assert str(f) in str(e.value) and words in str(e.value)


def test_reports_without_stress_stay_valid_and_a_damaged_section_is_caught(stressed):
    _, _, out = stressed
    rep = json.loads((out / "report.json").read_text())
    old = {k: v for k, v in rep.items() if k != "stress"}
    assert check_report(old) == []
    del rep["stress"]["artefacts"][0]["conditions"][0]["vs_reference"]
    assert any("stress.artefacts[0].conditions[0]: missing 'vs_reference'" in p for p in check_report(rep))
