"""`echo-edge run` and `echo-edge validate` end to end on a tiny checkpoint with real runtimes.

One validation covers four artefacts at once: a good fp32 .pte (PASS), the same checkpoint
converted with its EF made worse on purpose (FAIL_ACCURACY, exit 1), a folder whose runtime fails
to load it (FAIL_RUNTIME) and one whose host cannot run it (SKIPPED_PLATFORM). The report it
writes is then checked as CI would: schema, junit.xml, re-gating from report.json alone,
--strict, and rendering in headless Chromium.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from echoedge.cli import main as cli_main
from echoedge.validate.report_json import SCHEMA_VERSION, check_report, read_report


# Two ExecuTorch conversions of the tiny deploy form (session fixtures) dominate this module:
# ~2.5 min of CPU here (5.9 min wall on a shared, overloaded 2-core machine). Still in the default
# run; `-m "not slow"` skips it for a quick pass.
pytestmark = pytest.mark.slow

MAC_ONLY = '''
from echoedge.errors import PlatformError

class MacOnlyRunner:
    def __init__(self, folder, threads=2):
        raise PlatformError(f"{folder}: Core ML prediction needs macOS (this host is Linux)")
'''


def test_run_end_to_end_on_tiny_config(tiny_run):
    assert tiny_run.rc == 0, tiny_run.stdout
    out = tiny_run.out
    for name in ("report.json", "report.md", "report.html", "junit.xml", "run.json"):
        assert (out / name).is_file(), name
    report = read_report(out / "report.json")
    assert [e["name"] for e in report["artefacts"]] == ["executorch-fp32", "coreml-fp32"]
    e, cm = report["artefacts"]
    assert e["status"] == "PASS" and e["runtime"] == "executorch-xnnpack"
    # fp32 ExecuTorch vs the 3D eager reference: float rounding only
    assert e["vs_reference"]["ef"]["max_abs"] < 1e-3
    assert e["latency"]["runs"] == 3 and e["latency"]["p50_ms"] > 0 and e["speedup_vs_reference"] > 0
    # Core ML off macOS: real EF through the reference interpreter, no latency figure
    assert cm["status"] == "PASS" and cm["vs_reference"]["ef"]["max_abs"] < 1e-3
    assert cm["latency"] is None and "reference interpreter" in cm["latency_note"]
    assert report["data"]["n_videos"] == 2 and report["data"]["clips_per_video"] == 2
    run = json.loads((out / "run.json").read_text())
    assert sorted(run["built"]) == ["coreml-fp32", "executorch-fp32"] and run["exit_code"] == 0
    for stage in ("data", "checkpoint", "calibrate", "export executorch", "export coreml",
                  "export (wall)", "validate", "report", "total"):
        assert stage in run["timings_s"], stage
    # the conversions ran in two worker processes, their log lines relayed with the format
    assert "[executorch] executorch fp32: converting" in tiny_run.stdout
    assert "[coreml] coreml fp32: converting" in tiny_run.stdout
    # the printed summary names the status and the report
    assert "executorch-fp32" in tiny_run.stdout and "PASS" in tiny_run.stdout
    assert str(out / "report.html") in tiny_run.stdout
    # ... and the CPU the latencies were measured on, with the SIMD the int8 kernels could use
    from echoedge.validate.latency import cpu_line

    host = report["host"]
    assert isinstance(host["simd"], list) and isinstance(host["cpu_id"], dict)
    assert host["load_while_timing"]["window_s"] > 0  # other work measured while timing
    assert f"Latency: batch 1, 2 threads, {cpu_line(host)}, host {host['id']}" in tiny_run.stdout
    assert cpu_line(host) in (out / "report.md").read_text()


def test_run_reuses_artefacts_built_from_the_same_checkpoint(tiny_run, tmp_path: Path, capsys):
    out = tmp_path / "again"
    shutil.copytree(tiny_run.out / "artefacts", out / "artefacts")
    rc = cli_main(["run", "--checkpoint", str(tiny_run.checkpoint), "--data", str(tiny_run.data),
                   "--format", "executorch", "--precision", "fp32", "--videos", "1", "--clips", "1",
                   "--runs", "1", "--warmup", "0", "--reuse", "--out", str(out),
                   "--cache-dir", str(tiny_run.frames), "--no-progress"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["reused"] == ["executorch-fp32"] and run["built"] == []


@pytest.fixture(scope="module")
def mixed(tiny_run, worse_artefact: Path, tmp_path_factory, monkeypatch_module, helpers):
    """validate over PASS / FAIL_ACCURACY / FAIL_RUNTIME / SKIPPED_PLATFORM artefacts, once."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("mixed")
    arts = root / "artefacts"
    shutil.copytree(tiny_run.fp32, arts / "executorch-fp32")
    shutil.copytree(worse_artefact, arts / "executorch-worse")
    # A .pte that claims to be a TFLite file: the TFLite runner (or its absence) fails to load it.
    copy_as_format = helpers["copy_as_format"]
    copy_as_format(tiny_run.fp32, arts / "tflite-fp32", "tflite")
    # A host that cannot run Core ML: the runner raises PlatformError at open.
    copy_as_format(tiny_run.fp32, arts / "coreml-fp32", "coreml")
    (root / "maconly_runner.py").write_text(MAC_ONLY)
    monkeypatch_module.syspath_prepend(str(root))
    from echoedge.validate import runner as runner_mod

    monkeypatch_module.setitem(runner_mod.RUNNERS, "coreml", "maconly_runner:MacOnlyRunner")
    out = root / "report"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["validate", str(arts), "--checkpoint", str(tiny_run.checkpoint), "--data",
                       str(tiny_run.data), "--videos", "2", "--clips", "2", "--runs", "3", "--warmup", "1",
                       "--bootstrap", "200", "--out", str(out), "--cache-dir", str(tiny_run.frames),
                       "--no-progress"])
    return rc, out, buf.getvalue()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_gate_that_must_fail_fails_with_exit_1(mixed):
    rc, out, stdout = mixed
    assert rc == 1, stdout
    report = read_report(out / "report.json")
    by = {e["name"]: e for e in report["artefacts"]}
    assert by["executorch-fp32"]["status"] == "PASS"
    worse = by["executorch-worse"]
    assert worse["status"] == "FAIL_ACCURACY"
    # measured, not assumed: the runtime's EF is 0.8 points above the reference on every video
    assert worse["vs_reference"]["ef"]["mean_abs"] == pytest.approx(0.8, abs=1e-3)
    assert worse["vs_reference"]["bland_altman"]["bias"] == pytest.approx(0.8, abs=1e-3)
    assert "mean_abs_delta_ef" in worse["reason"]
    assert {g["name"] for g in worse["gates"] if not g["passed"]} >= {"mean_abs_delta_ef", "p95_abs_delta_ef"}
    assert by["tflite-fp32"]["status"] == "FAIL_RUNTIME" and by["tflite-fp32"]["stage"] == "load"
    assert by["tflite-fp32"]["reason"] and "\n" not in by["tflite-fp32"]["reason"]
    assert by["coreml-fp32"]["status"] == "SKIPPED_PLATFORM" and "macOS" in by["coreml-fp32"]["reason"]
    assert report["summary"]["counts"] == {"PASS": 1, "FAIL_ACCURACY": 1, "FAIL_RUNTIME": 1,
                                           "SKIPPED_PLATFORM": 1}
    assert "FAIL_ACCURACY" in stdout and "report.html" in stdout


def test_report_json_matches_its_schema_and_the_checker_catches_damage(mixed):
    _, out, _ = mixed
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION and check_report(report) == []
    assert report["host"]["threads"] == 2 and report["reference"]["latency"]["runs"] == 3
    broken = json.loads(json.dumps(report))
    by = {e["name"]: e for e in broken["artefacts"]}
    del by["executorch-fp32"]["vs_reference"]["bland_altman"]["loa_low"]
    by["executorch-worse"]["status"] = "MAYBE"
    broken["summary"]["exit_code"] = "1"
    problems = check_report(broken)
    assert any("bland_altman: missing 'loa_low'" in p for p in problems)
    assert any("status: 'MAYBE'" in p for p in problems)
    assert any("summary.exit_code: expected integer" in p for p in problems)
    bad = out.parent / "bad.json"
    bad.write_text(json.dumps(broken))
    rc = cli_main(["validate", "--from-report", str(bad), "--out", str(out.parent / "x")])
    assert rc == 2


def test_junit_has_one_case_per_artefact_and_gate(mixed):
    _, out, _ = mixed
    report = read_report(out / "report.json")
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    n_gates = sum(len(e["gates"]) for e in report["artefacts"])
    assert len(cases) == len(report["artefacts"]) + n_gates
    failures = [c for c in cases if c.find("failure") is not None]
    kinds = sorted({f.find("failure").get("type") for f in failures})
    assert kinds == ["FAIL_ACCURACY", "FAIL_RUNTIME"]
    assert len([c for c in cases if c.find("skipped") is not None]) == 1
    assert int(root.get("tests")) == len(cases) and int(root.get("failures")) == len(failures)


def test_regate_reads_only_the_report_and_strict_fails_skips(mixed, tmp_path: Path):
    _, out, _ = mixed
    loose = tmp_path / "loose.yaml"
    # Loosen fp32 enough for the +0.8 artefact and ignore... nothing else: the TFLite load failure
    # still fails, so drop it from a copy of the report to isolate SKIPPED_PLATFORM.
    loose.write_text("version: 1\nprecision:\n  fp32: {mean_abs_delta_ef: 1.0, p95_abs_delta_ef: 1.0, "
                     "max_abs_delta_ef: 1.0}\n")
    report = json.loads((out / "report.json").read_text())
    report["artefacts"] = [e for e in report["artefacts"] if e["name"] != "tflite-fp32"]
    src = tmp_path / "r" / "report.json"
    src.parent.mkdir()
    src.write_text(json.dumps(report))
    assert cli_main(["validate", "--from-report", str(src), "--gates", str(loose), "--out", str(tmp_path / "a")]) == 0
    regated = read_report(tmp_path / "a" / "report.json")
    assert {e["name"]: e["status"] for e in regated["artefacts"]}["executorch-worse"] == "PASS"
    assert regated["gates"]["source"] == str(loose)
    assert cli_main(["validate", "--from-report", str(src), "--gates", str(loose), "--strict",
                     "--out", str(tmp_path / "b")]) == 1
    strict = read_report(tmp_path / "b" / "report.json")
    assert strict["summary"]["strict"] and strict["summary"]["exit_code"] == 1
    junit = ET.parse(tmp_path / "b" / "junit.xml").getroot()
    assert any(f.get("type") == "SKIPPED_PLATFORM" for f in junit.iter("failure"))


def test_markdown_is_a_pasteable_table(mixed, tmp_path: Path):
    _, out, _ = mixed
    md = (out / "report.md").read_text()
    assert "| artefact | status |" in md and "FAILED" in md
    for name in ("reference (eager fp32)", "executorch-fp32", "executorch-worse", "tflite-fp32", "coreml-fp32"):
        assert f"| {name} |" in md, name
    # A report in which nothing ran still renders (no scatter of artefacts, no Bland-Altman).
    from echoedge.validate.validate import write_outputs

    report = read_report(out / "report.json")
    report["artefacts"] = [e for e in report["artefacts"] if e["run_status"] != "ok"]
    files = write_outputs(report, tmp_path / "none-ran")
    assert "Bland-Altman" not in files["html"].read_text() and "tflite-fp32" in files["md"].read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make sysdeps)")
def test_html_renders_in_headless_chromium(mixed, tmp_path: Path):
    import numpy as np
    from matplotlib.image import imread

    _, out, _ = mixed
    html = out / "report.html"
    text = html.read_text()
    # self-contained: every image inline, nothing fetched
    assert "data:image/png;base64," in text and "src='http" not in text and "<link" not in text
    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,1600", html.as_uri()], tmp_path / "p1")
    assert shot.is_file()
    img = imread(shot)
    assert img.shape[0] == 1600 and img.shape[1] == 1280
    # not blank: a rendered page with tables and plots has real variation in its pixels
    assert float(np.std(img[..., :3])) > 0.05
    dom = _chromium(["--dump-dom", html.as_uri()], tmp_path / "p2").stdout
    assert "id=\"status-table\"" in dom
    for status in ("PASS", "FAIL_ACCURACY", "FAIL_RUNTIME", "SKIPPED_PLATFORM"):
        assert f'data-status="{status}"' in dom, status
    # every inline image decoded by the browser: chromium keeps them as <img> with data URIs
    assert dom.count("data:image/png;base64,") >= 3


def test_validate_errors_are_one_line(tmp_path: Path, tiny_run, capsys, helpers):
    rc = cli_main(["validate", str(tmp_path / "nothing"), "--data", str(tiny_run.data),
                   "--checkpoint", str(tiny_run.checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nothing" in err[0] and "not found" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = cli_main(["validate", str(empty), "--data", str(tiny_run.data), "--checkpoint", str(tiny_run.checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no artefact folders" in err[0]
    # an artefact from another checkpoint is refused before anything runs
    other = helpers["tiny_checkpoint"](tmp_path / "other.pt", seed=1)
    rc = cli_main(["validate", str(tiny_run.fp32), "--data", str(tiny_run.data), "--checkpoint", str(other)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "built from checkpoint" in err[0]
