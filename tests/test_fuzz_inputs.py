"""Fuzzed inputs (issue 16): every reader either parses a damaged file to what it states or says
what is wrong in one line naming the file; never a traceback, never a silently wrong number.

The strategies and properties live in tests/fuzzing.py and tests/fuzzing_manifests.py (shared
with bench/bench_fuzz.py, which runs them with many more cases). Here they run derandomized (the
same cases on every run and machine) with a bounded count, so the module stays within seconds;
the last test prints how many cases were tried.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests import fuzzing as fz
from tests import fuzzing_manifests as fm

settings.register_profile(
    "echo-edge-fuzz", derandomize=True, max_examples=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("echo-edge-fuzz")


@FUZZ
@given(fz.filelist_cases())
def test_filelist_csv(case):
    fz.check_filelist(case)


@FUZZ
@given(fz.tracings_cases())
def test_volume_tracings_csv(case):
    fz.check_tracings(case)


@settings(FUZZ, max_examples=80)
@given(fz.video_cases())
def test_video_reader(case):
    fz.check_video(case)


@FUZZ
@given(fm.artefact_cases())
def test_artefact_manifest(case):
    fm.check_artefact(case)


@settings(FUZZ, max_examples=40)
@given(fm.tampered_json(fm.report_doc(), fm.REPORT_HOT))
def test_report_json(case):
    fm.check_report_file(case)


@FUZZ
@given(fm.calibration_cases())
def test_calibration_manifest(case):
    fm.check_calibration(case)


def test_untampered_inputs_parse(tmp_path):
    """The baselines the strategies damage are themselves valid: a property that only ever sees
    refusals would prove nothing."""
    import json

    from echoedge.calibration.calibset import load_calibration_set
    from echoedge.convert.artefact import verify_artefact
    from echoedge.validate.report_json import read_report

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(fm.artefact_manifest()))
    (tmp_path / "a" / "model.pte").write_bytes(fm.MODEL_BYTES)
    assert verify_artefact(tmp_path / "a").inputs[0].scale == 0.02
    (tmp_path / "report.json").write_text(json.dumps(fm.report_doc()))
    assert read_report(tmp_path)["reference"]["predictions"][0]["ef"] == 54.2
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(fm.calibration_manifest()))
    (tmp_path / "c" / "calibration.npz").write_bytes(fm._npz_bytes(fm._CLIPS))
    assert len(load_calibration_set(tmp_path / "c")) == 2
    frames = fz.tiny_avi()[1]
    assert frames.shape == (6, 24, 32)


def test_zz_cases_tried(capsys):
    """Runs last in this module: the count of cases the properties above tried."""
    total = sum(fz.CASES.values())
    lines = [f"{t}: {n} cases (reads: {fz.OUTCOMES[(t, 'parsed')]} parsed, {fz.OUTCOMES[(t, 'refused')]} "
             "refused with one line)" for t, n in sorted(fz.CASES.items())]
    with capsys.disabled():
        print(f"\nfuzzed inputs: {total} cases tried, 0 tracebacks\n  " + "\n  ".join(lines))
    if len(fz.CASES) == 6:  # the whole module ran (not a -k selection)
        assert total >= 300 and all(fz.OUTCOMES[(t, "refused")] for t in fz.CASES)
