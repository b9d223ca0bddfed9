"""The litert-torch TFLite route (tflite_litert + litert_worker) on the tiny Echo-E3Net deploy form,
and the XNNPACK coverage reader both TFLite routes' numbers use.

The end-to-end test needs litert-torch's own environment (`make litert`, .venv-litert, ~2 GB) and
skips without it; it converts fp32 and int8 once per module (about 2 minutes on 2 busy cores).
Measured on the tiny config, random weights (seed 0): fp32 file vs eager 1.5e-5 abs on EDV (~90 mL);
int8 (conv-stages recipe: the 14 convs of the CNN stages) within 1e-3 EF points of eager, one
XNNPACK partition holding every op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert")

from echoedge.convert import tflite_litert as tl  # noqa: E402
from echoedge.convert.artefact import OUTPUT_NAMES, read_manifest, verify_artefact  # noqa: E402
from echoedge.convert.export import (  # noqa: E402
    CONVERTERS, DEFAULT_FORMATS, parse_list, plan_exports,
)
from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.model.config import clip_spec_for, get_config  # noqa: E402

CFG = get_config("tiny")
SPEC = clip_spec_for(CFG, mean=35.0, std=48.0)
FP32_RTOL = 1e-3  # relative to max(1, |eager|); measured ~2e-7
INT8_EF_BOUND = 2.0  # EF / EDV / ESV points


@dataclass
class FakeCalibration:
    clips: np.ndarray
    id: str = "calib-litert-test"
    manifest: dict = field(default_factory=lambda: {"strategy": "random", "seed": 1})


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


def _have_litert() -> str | None:
    try:
        tl.litert_python()
    except EchoEdgeError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def deploy():
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(0)
    model = EchoE3Net(CFG).eval()
    return to_deploy_form(model, example=torch.from_numpy(_clips(2, seed=0)))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, deploy):
    why = _have_litert()
    if why:
        pytest.skip(f"litert-torch environment absent: {why}")
    root = tmp_path_factory.mktemp("litert")
    calib = FakeCalibration(_clips(8, seed=1))
    return {p: tl.export_tflite_litert(deploy, SPEC, root / f"tflite-litert-{p}", p,
                                        calib if p == "int8" else None, "0" * 64, progress=False)
            for p in ("fp32", "int8")}


def _eager(deploy, clips):
    with torch.inference_mode():
        return [o.numpy() for o in deploy(torch.from_numpy(clips))]


def test_fp32_artefact_is_an_ordinary_tflite_folder_that_matches_eager(artefacts, deploy):
    from echoedge.validate.runner import open_runner

    folder = artefacts["fp32"]
    m = verify_artefact(folder)
    assert m.format == "tflite" and m.precision == "fp32"
    assert m.details["converter"] == "litert-torch"
    assert m.tool_versions["litert-torch (worker)"] == "0.10.0"
    assert m.details["flex_ops"] == [] and m.details["op_count"] > 0
    assert m.details["delegated_ops"] + m.details["fallback_ops"] == m.details["op_count"]
    assert m.details["weights"]["int8_share"] == 0.0
    clips = _clips(2, seed=5)
    runner = open_runner(folder)
    try:
        outs = runner(clips)
    finally:
        runner.close()
    for name, o, r in zip(OUTPUT_NAMES, outs, _eager(deploy, clips)):
        assert o.shape == r.shape, name
        assert np.abs(o - r).max() / max(1.0, np.abs(r).max()) < FP32_RTOL, name


def test_int8_quantizes_the_recipe_scope_with_the_calibration_set(artefacts, deploy):
    from echoedge.validate.tflite_runner import TFLiteRunner

    m = read_manifest(artefacts["int8"])
    q = m.details["quantization"]
    assert m.calibration_id == "calib-litert-test" and q["calibration"]["clips"] == 8
    assert q["recipe"] == {"name": "conv-stages"} and q["int8_modules"] == ["encoder.cnn"]
    # Every conv the quantizer took is int8 in the file; the rest stays float by recipe.
    int8_convs = m.details["op_histogram"]["CONV_2D"].get("int8/int8/int32->int8", 0)
    assert int8_convs == q["quantized_heavy_ops"] > 0
    assert m.details["op_histogram"]["FULLY_CONNECTED"].get("int8/int8/int32->int8", 0) == 0
    assert 0 < m.details["weights"]["int8_share"] < 1
    clips = _clips(3, seed=6)
    runner = TFLiteRunner(artefacts["int8"], interpreter="litert")
    try:
        outs = runner(clips)
    finally:
        runner.close()
    ref = _eager(deploy, clips)
    for k in range(3):  # EF, EDV, ESV
        assert np.abs(outs[k] - ref[k]).max() < INT8_EF_BOUND, OUTPUT_NAMES[k]
    assert not np.allclose(outs[0], ref[0], atol=0, rtol=0)  # really quantized, not the float file


def test_missing_environment_is_one_line_and_writes_nothing(tmp_path, monkeypatch, deploy):
    monkeypatch.setenv(tl.ENV_VAR, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(EchoEdgeError, match="make litert") as err:
        tl.export_tflite_litert(deploy, SPEC, tmp_path / "out", "fp32", None, "0" * 64, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_python_without_litert_torch_is_refused(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv(tl.ENV_VAR, sys.executable)  # this environment: no litert_torch here
    if _have_litert() is None:
        pytest.skip("litert_torch importable from this interpreter")
    with pytest.raises(EchoEdgeError, match="has no litert_torch"):
        tl.litert_python()


def test_worker_failure_is_one_line(tmp_path):
    why = _have_litert()
    if why:
        pytest.skip(f"litert-torch environment absent: {why}")
    bad = tmp_path / "deploy.pt2"
    bad.write_bytes(b"not a torch.export archive")
    with pytest.raises(EchoEdgeError, match="litert-torch failed for fp32") as err:
        tl.run_worker(tl.litert_python(), bad, tmp_path / "model.tflite", "fp32", None, None, (), 0,
                      tmp_path / "log.txt")
    assert "\n" not in str(err.value)


def test_route_is_opt_in_and_offers_fp32_and_int8():
    assert "tflite-litert" in CONVERTERS and "tflite-litert" not in DEFAULT_FORMATS
    assert parse_list("all", tuple(CONVERTERS), "format", DEFAULT_FORMATS) == list(DEFAULT_FORMATS)
    assert parse_list("tflite,tflite-litert", tuple(CONVERTERS), "format", DEFAULT_FORMATS) == \
        ["tflite", "tflite-litert"]
    assert plan_exports(["tflite-litert"], ["fp32", "int8"]) == [("tflite-litert", "fp32"),
                                                                   ("tflite-litert", "int8")]
    with pytest.raises(EchoEdgeError, match="fp16"):
        plan_exports(["tflite-litert"], ["fp16"])


def test_xnnpack_coverage_names_the_op_it_does_not_take(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from echoedge.convert.tflite_delegation import xnnpack_coverage

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            y = tf.math.cumsum(x * 2.0 + 1.0, axis=1)  # CUMSUM: not an XNNPACK op
            return {"out": (y - 1.0) * 3.0}

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path = tmp_path / "mixed.tflite"
    path.write_bytes(conv.convert())
    cov = xnnpack_coverage(path)
    assert (cov.ops, cov.fallback_ops, cov.partitions) == (5, 1, 2)
    assert cov.fallback_by_op == {"CUMSUM": 1}
    assert json.loads(json.dumps(cov.to_dict()))["delegated_share"] == 0.8
