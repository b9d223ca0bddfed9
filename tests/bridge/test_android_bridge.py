"""`echo-edge bridge android` on a tiny ExecuTorch artefact: a complete Gradle module, golden vectors
that the validation runner reproduces, and a pure-Java core that, compiled with javac and run on the
JVM over the golden raw frames, gives the Python tensor within 1e-5 and the Python post-processing
bit for bit. The runtime adapters compile against signature stubs of the two Android APIs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from echoedge.bridges.bundling import BundleArtefact, Validation, attach_validation
from echoedge.bridges.golden import read_golden
from echoedge.cli import main as cli_main
from echoedge.convert.artefact import read_manifest, verify_artefact
from echoedge.data.preprocess import postprocess
from tests.bridge.helpers import STUBS, javac, need_jdk

MODULE = "echo-edge-bridge"
GOLDEN = Path(MODULE) / "src/androidTest/assets/echoedge/golden"


def _f32(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<f4")


def test_bundle_holds_module_artefact_sources_and_golden_vectors(android_bundle: Path, tiny_artefacts: Path):
    mod = android_bundle / MODULE
    for rel in ("build.gradle", "src/main/AndroidManifest.xml",
                "src/main/java/org/echoedge/bridge/ClipBuffer.java",
                "src/main/java/org/echoedge/bridge/executorch/ExecuTorchRunner.java",
                "src/main/assets/echoedge/artefacts/executorch-fp32/model.pte",
                "src/main/assets/echoedge/artefacts/executorch-fp32/manifest.json",
                "src/androidTest/java/org/echoedge/bridge/GoldenVectorsInstrumentedTest.java"):
        assert (mod / rel).is_file(), rel
    # Only the adapters of the bundled formats ship (no .tflite here, so no LiteRT dependency).
    assert not (mod / "src/main/java/org/echoedge/bridge/litert").exists()
    gradle = (mod / "build.gradle").read_text()
    assert "org.pytorch:executorch-android" in gradle and "litert" not in gradle
    test = (mod / "src/androidTest/java/org/echoedge/bridge/GoldenVectorsInstrumentedTest.java").read_text()
    assert "ExecuTorchRunner(dir, 2)" in test and "@OPEN_RUNNERS@" not in test
    # The copied artefact is the artefact, byte for byte.
    src = tiny_artefacts / "executorch-fp32"
    dst = mod / "src/main/assets/echoedge/artefacts/executorch-fp32"
    assert (src / "model.pte").read_bytes() == (dst / "model.pte").read_bytes()
    assert verify_artefact(dst).model_sha256 == read_manifest(src).model_sha256
    assert (src / "model.bpte").is_file() and not (dst / "model.bpte").exists()  # side files stay behind
    record = json.loads((android_bundle / "bundle.json").read_text())
    assert [a["name"] for a in record["artefacts"]] == ["executorch-fp32"]
    assert record["artefacts"][0]["model_sha256"] == read_manifest(src).model_sha256
    assert record["artefacts"][0]["validated"] is False


def test_readme_states_the_contract_and_that_nothing_was_validated(android_bundle: Path):
    text = (android_bundle / "README.md").read_text()
    spec = read_golden(android_bundle / GOLDEN)["clip_spec"]
    assert f"{spec['frames']} frames per clip, one every **{spec['period']}**" in text
    assert f"**{spec['height']} x {spec['width']}**" in text
    assert f"(grey - {spec['mean']!r}) / {spec['std']!r}" in text
    assert "float32 NCTHW" in text and "not validated" in text
    assert "executorch-xnnpack" in text  # where the golden outputs came from


def test_golden_outputs_are_what_the_validation_runner_returns(android_bundle: Path, tiny_artefacts: Path):
    from echoedge.validate.runner import open_runner

    golden = android_bundle / GOLDEN
    index = read_golden(golden)
    (art,) = index["artefacts"]
    assert art["status"] == "ok" and art["runtime_used"] == "executorch-xnnpack"
    assert art["tolerance"] == {"rtol": 1e-3, "atol": 1e-3}  # ExecuTorch's BUNDLE_TOLERANCE for fp32
    assert len(art["expected"]) == len(index["clips"]) == 3
    spec = index["clip_spec"]
    with open_runner(tiny_artefacts / "executorch-fp32") as runner:
        for clip, exp in zip(index["clips"], art["expected"]):
            x = _f32(golden / clip["input_file"]).reshape(clip["input_shape"])
            assert clip["input_shape"] == [1, spec["channels"], spec["frames"], spec["height"], spec["width"]]
            outs = runner(x)
            stored = _f32(golden / exp["outputs_file"])
            assert np.array_equal(np.concatenate([o.reshape(-1) for o in outs]), stored)
            res = postprocess(outs, clip["frame_height"], clip["frame_width"]).to_dict()
            assert res == exp["result"]
            raw = (golden / clip["frames_file"]).stat().st_size
            bpp = {"gray8": 1, "rgb888": 3, "bgr888": 3, "rgba8888": 4, "bgra8888": 4}[clip["pixel_format"]]
            assert raw == clip["frame_count"] * clip["frame_height"] * clip["frame_width"] * bpp
            assert len(clip["timestamps_us"]) == clip["frame_count"]


@pytest.fixture(scope="module")
def java_core(android_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's pure-Java core compiled with javac, warnings as errors (no Android on the classpath)."""
    need_jdk()
    out = tmp_path_factory.mktemp("jvm")
    javac(sorted((android_bundle / MODULE / "src/main/java/org/echoedge/bridge").glob("*.java")), out)
    return out


def _golden_check(classes: Path, golden: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", str(classes), "org.echoedge.bridge.GoldenCheck", str(golden), str(out)],
                          capture_output=True, text=True, timeout=120)


def test_java_core_reproduces_python_preprocessing_and_postprocessing(android_bundle: Path, java_core: Path,
                                                                       tmp_path: Path):
    golden = android_bundle / GOLDEN
    proc = _golden_check(java_core, golden, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GOLDEN OK" in proc.stdout
    index = read_golden(golden)
    for clip in index["clips"]:
        # Independently of Java's own verdict: its tensor against Python's, here.
        java = _f32(tmp_path / f"{clip['id']}.input.f32")
        python = _f32(golden / clip["input_file"])
        assert java.shape == python.shape and float(np.abs(java - python).max()) <= 1e-5, clip["id"]
        sel = np.fromfile(tmp_path / f"{clip['id']}.selected.f64", dtype="<f8").astype(int).tolist()
        assert sel == clip["selected_frames"]
    for art in index["artefacts"]:
        for exp in art["expected"]:
            clip = next(c for c in index["clips"] if c["id"] == exp["clip"])
            outs = np.split(_f32(golden / exp["outputs_file"]), np.cumsum(exp["output_sizes"])[:-1])
            k = exp["output_sizes"][3] // 2
            outs = [o if len(o) == 1 else o.reshape(1, k, 2) for o in outs]
            r = postprocess(outs, clip["frame_height"], clip["frame_width"])
            want = np.array([r.ef, r.edv, r.esv, r.band, *np.ravel(r.ed_landmarks_px), *np.ravel(r.es_landmarks_px)])
            got = np.fromfile(tmp_path / f"{art['name']}.{clip['id']}.post.f64", dtype="<f8")
            assert np.array_equal(got, want), clip["id"]  # exactly, not approximately


def test_java_check_fails_on_a_tensor_that_is_off(android_bundle: Path, java_core: Path, tmp_path: Path):
    golden = tmp_path / "golden"
    shutil.copytree(android_bundle / GOLDEN, golden)
    clip = read_golden(golden)["clips"][1]
    x = _f32(golden / clip["input_file"])
    x[1234] += 2e-5  # just over the 1e-5 limit
    x.astype("<f4").tofile(golden / clip["input_file"])
    proc = _golden_check(java_core, golden, tmp_path / "out")
    assert proc.returncode == 1 and "GOLDEN FAILED" in proc.stdout
    assert f"FAIL {clip['id']}: preprocessed tensor" in proc.stdout


def test_adapters_and_instrumentation_test_compile_against_api_stubs(android_bundle: Path, tmp_path: Path):
    """Signature stubs (tests/bridge/stubs) of ExecuTorch's and LiteRT's Java APIs, and of the few
    Android/AndroidX/JUnit classes the instrumentation test touches, stand in for the AARs."""
    need_jdk()
    from echoedge.bridges.android.bundle import package_data

    stubs = sorted(STUBS.rglob("*.java"))
    # All adapters (LiteRT too, though this bundle has no .tflite), from the package's sources.
    javac(sorted(package_data("java").rglob("*.java")) + stubs, tmp_path / "package")
    assert (tmp_path / "package/org/echoedge/bridge/litert/LiteRtRunner.class").is_file()
    assert (tmp_path / "package/org/echoedge/bridge/executorch/ExecuTorchRunner.class").is_file()
    # The module as bundled: main sources and the generated instrumentation test.
    javac(sorted((android_bundle / MODULE / "src").rglob("*.java")) + stubs, tmp_path / "module")
    assert (tmp_path / "module/org/echoedge/bridge/GoldenVectorsInstrumentedTest.class").is_file()


def test_report_figures_reach_the_readme_and_a_stale_entry_is_refused(tiny_artefacts: Path, tmp_path: Path):
    folder = tiny_artefacts / "executorch-fp32"
    m = read_manifest(folder)
    report = tmp_path / "report.json"
    entry = {"name": "executorch-fp32", "folder": str(folder), "status": "PASS",
             "facts": {"model_sha256": m.model_sha256}, "vs_truth": {"n": 50, "mae": 2.345},
             "vs_reference": {"ef": {"mean_abs": 0.0123, "max_abs": 0.05}}}
    report.write_text(json.dumps({"schema_version": 1, "artefacts": [entry]}))
    arts = [BundleArtefact("executorch-fp32", folder, m, Validation(False, "not validated"))]
    assert attach_validation(arts, tiny_artefacts, report) == report
    v = arts[0].validation
    assert v.validated and v.ef_mae == 2.345 and v.ef_vs_reference == 0.0123
    assert "EF MAE 2.35 points vs ground truth (50 videos)" in v.text and "PASS" in v.text
    entry["facts"]["model_sha256"] = "0" * 64  # the report is about another build of this name
    report.write_text(json.dumps({"artefacts": [entry]}))
    attach_validation(arts, tiny_artefacts, report)
    assert not arts[0].validation.validated and "another file" in arts[0].validation.text


def test_cli_errors_are_one_line(tiny_artefacts: Path, android_bundle: Path, tmp_path: Path, capsys):
    def run(*argv: str) -> str:
        rc = cli_main(list(argv))
        err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("echo-edge")]
        assert rc == 2 and len(err) == 1, err
        return err[0]

    assert "not found" in run("bridge", "android", str(tmp_path / "nope"), "--out", str(tmp_path / "b"))
    assert "already exists" in run("bridge", "android", str(tiny_artefacts), "--out", str(android_bundle))
    assert "report not found" in run("bridge", "android", str(tiny_artefacts), "--out", str(tmp_path / "c"),
                                     "--report", str(tmp_path / "missing.json"))
    # A changed model file is refused before anything is bundled.
    bad = tmp_path / "bad"
    shutil.copytree(tiny_artefacts / "executorch-fp32", bad / "executorch-fp32")
    with open(bad / "executorch-fp32" / "model.pte", "ab") as f:
        f.write(b"\0")
    assert "sha256" in run("bridge", "android", str(bad), "--out", str(tmp_path / "d"))
    # No half-written bundle is left behind by any of them.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_java_quantizes_like_python_for_int8_input_files(android_bundle: Path, java_core: Path, tmp_path: Path):
    """An int8-input file (TFLite int8-full) gets q = clamp(round_half_away(x / scale) + zp): Java's
    bytes from its own tensor against Python's from the golden tensor (a scale fine enough that
    rounding ties and both clamps occur)."""
    from echoedge.data.preprocess import quantize

    golden = tmp_path / "golden"
    shutil.copytree(android_bundle / GOLDEN, golden)
    index = read_golden(golden)
    scale, zp = 0.005, -7
    index["artefacts"][0]["input"].update(dtype="int8", scale=scale, zero_point=zp)
    (golden / "index.json").write_text(json.dumps(index))
    proc = _golden_check(java_core, golden, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = index["artefacts"][0]["name"]
    for clip in index["clips"]:
        java = np.fromfile(tmp_path / "out" / f"{name}.{clip['id']}.input.q8", dtype=np.int8)
        python = quantize(_f32(golden / clip["input_file"]), scale, zp).reshape(-1)
        assert java.shape == python.shape
        assert np.array_equal(java, python), int(np.abs(java.astype(int) - python).max())
        assert python.min() == -128 and python.max() == 127  # the clamps were exercised


def test_selection_skips_the_calibration_set_and_other_formats(tiny_artefacts: Path, tmp_path: Path):
    from echoedge.bridges.bundling import select_artefacts
    from echoedge.errors import EchoEdgeError

    root = tmp_path / "artefacts"
    shutil.copytree(tiny_artefacts / "executorch-fp32", root / "executorch-fp32")
    (root / "calibration").mkdir()
    (root / "calibration" / "manifest.json").write_text(json.dumps({"id": "abc", "clips": 8}))
    arts, spec = select_artefacts(root, ("executorch", "tflite"), "Android")
    assert [a.name for a in arts] == ["executorch-fp32"] and spec.frames == 16
    with pytest.raises(EchoEdgeError, match="no coreml artefacts.*executorch-fp32"):
        select_artefacts(root, ("coreml",), "iOS")
    (root / "executorch-fp32" / "manifest.json").write_text("{not json")
    with pytest.raises(EchoEdgeError, match="unreadable manifest"):
        select_artefacts(root, ("executorch",), "Android")
