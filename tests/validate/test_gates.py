"""Gates: YAML resolution and checks, statuses and exit codes from a report dict."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoedge.errors import EchoEdgeError
from echoedge.validate.gates import apply_gates, load_gates, thresholds_for
from echoedge.validate.report_md import band_cell


def _entry(name: str, fmt: str, precision: str, mean: float = 0.1, p95: float = 0.3, band: float = 1.0,
           run_status: str = "ok") -> dict:
    ran = run_status == "ok"
    return {"name": name, "format": fmt, "precision": precision, "run_status": run_status,
            "status": "PASS" if ran else run_status, "reason": None if ran else "why",
            "vs_reference": {"ef": {"mean_abs": mean, "p95_abs": p95, "max_abs": p95 * 2},
                             "band_agreement": band} if ran else None,
            "vs_truth": {"mae": 3.0, "band_agreement": 0.9} if ran else None,
            "latency": {"p50_ms": 20.0} if ran else None}


def _report(*entries: dict) -> dict:
    return {"reference": {"vs_truth": {"mae": 2.5}}, "artefacts": list(entries)}


def test_shipped_gates_match_the_issue():
    g = load_gates()
    int8 = thresholds_for(g, "executorch", "int8")
    assert int8["mean_abs_delta_ef"] == 0.5 and int8["p95_abs_delta_ef"] == 1.5
    assert int8["band_agreement_reference"] == 98.0
    fp32 = thresholds_for(g, "tflite", "fp32")
    assert fp32["mean_abs_delta_ef"] < 0.5 / 5 and fp32["p95_abs_delta_ef"] < 1.5 / 5
    assert "p50_latency_ms" not in fp32  # null = disabled


def test_user_file_overrides_per_format_and_precision(tmp_path: Path):
    f = tmp_path / "gates.yaml"
    f.write_text("version: 1\nprecision:\n  int8: {mean_abs_delta_ef: 0.8}\n"
                 "format:\n  tflite:\n    all: {p50_latency_ms: 50}\n    int8: {p95_abs_delta_ef: 2.5}\n")
    g = load_gates(f)
    et, tf = thresholds_for(g, "executorch", "int8"), thresholds_for(g, "tflite", "int8")
    assert et["mean_abs_delta_ef"] == tf["mean_abs_delta_ef"] == 0.8
    assert et["p95_abs_delta_ef"] == 1.5 and tf["p95_abs_delta_ef"] == 2.5
    assert tf["p50_latency_ms"] == 50 and "p50_latency_ms" not in et
    assert thresholds_for(g, "tflite", "fp32")["mean_abs_delta_ef"] == 0.05  # shipped value kept
    assert g["source"] == str(f)


@pytest.mark.parametrize("text, words", [
    ("version: 1\ndefaults: {mean_abs_delta: 0.5}\n", "unknown gate 'mean_abs_delta'"),
    ("version: 1\nprecision:\n  int8: {p95_abs_delta_ef: lots}\n", "must be a number"),
    ("version: 2\n", "version 2"),
    ("- a\n- b\n", "YAML mapping"),
    ("version: 1\nthresholds: {}\n", "unknown top-level"),
    ("version: 1\ndefaults: {a: [\n", "unreadable gates file"),
])
def test_bad_gates_files_are_one_line_errors_naming_the_file(tmp_path: Path, text: str, words: str):
    f = tmp_path / "g.yaml"
    f.write_text(text)
    with pytest.raises(EchoEdgeError) as e:
        load_gates(f)
    msg = str(e.value)
    assert str(f) in msg and words in msg and "\n" not in msg


def test_missing_gates_file(tmp_path: Path):
    with pytest.raises(EchoEdgeError, match="gates file not found"):
        load_gates(tmp_path / "nope.yaml")


def test_statuses_and_exit_codes():
    g = load_gates()
    ok = _report(_entry("et-fp32", "executorch", "fp32", mean=0.01, p95=0.02),
                 _entry("et-int8", "executorch", "int8", mean=0.4, p95=1.2, band=0.98))
    apply_gates(ok, g)
    assert [e["status"] for e in ok["artefacts"]] == ["PASS", "PASS"]
    assert ok["summary"]["exit_code"] == 0 and ok["summary"]["counts"]["PASS"] == 2

    bad = _report(_entry("et-int8", "executorch", "int8", mean=0.6, p95=1.2, band=0.97))
    apply_gates(bad, g)
    e = bad["artefacts"][0]
    assert e["status"] == "FAIL_ACCURACY" and bad["summary"]["exit_code"] == 1
    failed = {x["name"] for x in e["gates"] if not x["passed"]}
    assert failed == {"mean_abs_delta_ef", "band_agreement_reference"}
    assert "mean_abs_delta_ef = 0.6, needs <= 0.5 EF points" in e["reason"]
    assert "band_agreement_reference = 97, needs >= 98%" in e["reason"]


def test_runtime_failure_fails_and_skip_fails_only_under_strict():
    g = load_gates()
    rep = _report(_entry("ok", "executorch", "fp32", mean=0.0, p95=0.0),
                  _entry("mac", "coreml", "fp32", run_status="SKIPPED_PLATFORM"))
    assert apply_gates(rep, g)["summary"]["exit_code"] == 0
    assert apply_gates(rep, g, strict=True)["summary"]["exit_code"] == 1
    assert rep["artefacts"][1]["status"] == "SKIPPED_PLATFORM" and rep["artefacts"][1]["gates"] == []
    rep = _report(_entry("broken", "tflite", "int8", run_status="FAIL_RUNTIME"))
    assert apply_gates(rep, g)["summary"]["exit_code"] == 1
    assert rep["summary"]["counts"]["FAIL_RUNTIME"] == 1


def test_band_gate_leaves_out_borderline_flips_by_the_mean_gate_or_band_margin(tmp_path: Path):
    # 24 videos, one flip: strict 95.8 % fails 98 %; a reference EF 0.25 from the edge is inside
    # the int8 mean gate (0.5), so the gate reads 100 %; 2 EF points from it is a real flip.
    def entry(ref_ef: float, ef: float) -> dict:
        e = _entry("et-int8", "executorch", "int8", band=23 / 24)
        e["vs_reference"].update(bland_altman={"n": 24},
                                 band_flips=[{"file_name": "v", "ef_reference": ref_ef, "ef": ef}])
        return e

    r = apply_gates(_report(entry(50.25, 49.76), entry(52.0, 49.5), _entry("old", "tflite", "int8", band=23 / 24)),
                    load_gates())
    near, far, old = r["artefacts"]
    assert near["status"] == "PASS"
    assert next(g for g in near["gates"] if g["name"] == "band_agreement_reference")["value"] == 100.0
    assert far["status"] == "FAIL_ACCURACY" and "band_agreement_reference = 95.8" in far["reason"]
    assert old["status"] == "FAIL_ACCURACY"  # a report without band_flips keeps the strict figure
    assert band_cell(near) == "95.8 (100.0 gated)" and band_cell(far) == "95.8"
    strict = tmp_path / "g.yaml"
    strict.write_text("version: 1\ndefaults: {band_margin_ef: 0}\n")
    assert apply_gates(_report(entry(50.25, 49.76)), load_gates(strict))["artefacts"][0]["status"] == "FAIL_ACCURACY"
    wide = tmp_path / "w.yaml"
    wide.write_text("version: 1\nprecision:\n  int8: {band_margin_ef: 2.5}\n")
    assert apply_gates(_report(entry(52.0, 49.5)), load_gates(wide))["artefacts"][0]["status"] == "PASS"
    neg = tmp_path / "n.yaml"
    neg.write_text("version: 1\ndefaults: {band_margin_ef: -1}\n")
    with pytest.raises(EchoEdgeError, match="band_margin_ef: must be >= 0"):
        load_gates(neg)


def test_relative_and_missing_values(tmp_path: Path):
    f = tmp_path / "g.yaml"
    f.write_text("version: 1\ndefaults: {mae_increase: 0.4, p50_latency_ms: 10}\n")
    g = load_gates(f)
    rep = _report(_entry("x", "executorch", "int8", mean=0.1, p95=0.2))
    rep["artefacts"][0]["latency"] = None  # e.g. an interpreter: a set latency gate cannot pass
    apply_gates(rep, g)
    by = {x["name"]: x for x in rep["artefacts"][0]["gates"]}
    assert by["mae_increase"]["value"] == pytest.approx(0.5) and not by["mae_increase"]["passed"]
    assert by["p50_latency_ms"]["value"] is None and not by["p50_latency_ms"]["passed"]
