"""TFLite converter, op-dtype check and runner on the tiny Echo-E3Net deploy form.

The ONNX + onnx2tf front end is the slow part (about a minute on an idle 2-core machine); it runs
once per process (tflite_onnx2tf.front_end caches it per model) and every precision, including the CLI
test's, is converted from it.

Measured on the tiny config with random weights (seed 0): fp32 .tflite vs eager ~4e-4 relative
(onnx2tf's graph rounds differently and random weights amplify it; the shipped paper checkpoint
gives 5e-7), fp16 about the same, selective int8 ~0.1 EF points and ~1e-3 landmark units.
The tiny config is an Echo-E3Net, so its int8 file is scoped: the 14 convs of the CNN
stages int8, everything else float by recipe (tflite_int8.int8_scope).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

from echoedge.convert import tflite as tfl  # noqa: E402
from echoedge.convert.artefact import OUTPUT_NAMES, read_manifest, verify_artefact  # noqa: E402
from echoedge.convert.tflite_int8 import int8_scope, int8_scope_plan  # noqa: E402
from echoedge.convert.tflite_interpreter import input_layout, to_layout  # noqa: E402
from echoedge.convert.tflite_onnx2tf import front_end  # noqa: E402
from echoedge.convert.tflite_ops import (  # noqa: E402
    OpRecord, TFLiteOps, check_ops, check_scoped_int8, check_tflite, inspect_tflite,
)
from echoedge.errors import EchoEdgeError, ShapeError  # noqa: E402
from echoedge.model.config import clip_spec_for, get_config  # noqa: E402
from echoedge.validate.runner import EagerRunner, open_runner  # noqa: E402
from echoedge.validate.tflite_runner import TFLiteRunner  # noqa: E402

CFG = get_config("tiny")
SPEC = clip_spec_for(CFG, mean=35.0, std=48.0)
FP32_RTOL = 1e-3  # relative to max(1, |eager|); measured 4e-4 here (see the module docstring)
FP16_RTOL = 5e-3
INT8_EF_BOUND = 2.0  # EF / EDV / ESV points (measured ~0.1)
INT8_LANDMARK_BOUND = 0.05  # normalised coordinates (measured ~1e-3)


@dataclass
class FakeCalibration:
    """Stands in for echoedge.calibration.CalibrationSet: the converter reads .clips and .id."""

    clips: np.ndarray
    id: str = "calib-tflite-test"
    manifest: dict = field(default_factory=dict)


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def deploy():
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(0)  # the same weights as test_export_cli's tiny checkpoint
    model = EchoE3Net(CFG).eval()
    return to_deploy_form(model, example=torch.from_numpy(_clips(2, seed=0)))


@pytest.fixture(scope="module")
def calib():
    return FakeCalibration(_clips(8, seed=1))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, deploy, calib):
    root = tmp_path_factory.mktemp("tflite")
    out = {}
    for p in ("fp32", "fp16", "int8", "int8-full"):
        out[p] = tfl.export_tflite(deploy, SPEC, root / p, p, calib if p.startswith("int8") else None,
                                   "a" * 64, progress=False)
    out["int8-whole"] = tfl.export_tflite(deploy, SPEC, root / "int8-whole", "int8", calib, "a" * 64,
                                          progress=False, recipe="whole")
    return out


def _rel(o: np.ndarray, e: np.ndarray) -> float:
    return float(np.abs(o - e).max() / max(1.0, float(np.abs(e).max())))


def _assert_int8_close(folder: Path, deploy) -> tuple[list, list]:
    """An int8 file within the stated bounds of the eager deploy form on 3 clips; its outputs."""
    x = _clips(3, seed=9)
    eager = EagerRunner(deploy)(x)
    with TFLiteRunner(folder) as r:
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES[:3], out[:3], eager[:3]):
        assert np.abs(o - e).max() <= INT8_EF_BOUND, name
    for name, o, e in zip(OUTPUT_NAMES[3:], out[3:], eager[3:]):
        assert np.abs(o - e).max() <= INT8_LANDMARK_BOUND, name
    return out, eager


def test_fp32_tflite_matches_the_eager_deploy_form(artefacts, deploy):
    x = _clips(3, seed=7)
    eager = EagerRunner(deploy, clip_shape=SPEC.input_shape(1)[1:])(x)
    with open_runner(artefacts["fp32"], threads=2) as r:
        assert isinstance(r, TFLiteRunner) and r.precision == "fp32" and "xnnpack" in r.runtime
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES, out, eager):
        assert o.shape == e.shape, name
        assert _rel(o, e) <= FP32_RTOL, (name, _rel(o, e))


def test_fp16_is_close_and_smaller(artefacts, deploy):
    x = _clips(2, seed=8)
    eager = EagerRunner(deploy)(x)
    with TFLiteRunner(artefacts["fp16"]) as r:
        out = r(x)
    assert max(_rel(o, e) for o, e in zip(out, eager)) <= FP16_RTOL
    assert read_manifest(artefacts["fp16"]).model_bytes < read_manifest(artefacts["fp32"]).model_bytes


def test_int8_is_really_int8_in_its_scope_and_stays_close(artefacts, deploy):
    m = read_manifest(artefacts["int8"])
    d = m.details
    q = d["quantization"]
    assert q["int8_modules"] == list(int8_scope(deploy)) == ["encoder.cnn"]
    scope = q["scope"]
    path = artefacts["int8"] / m.model_file
    # What the file holds, re-read: every in-scope conv int8, the rest float by recipe.
    chk = check_scoped_int8(path, scope["heavy_nodes"])
    assert chk["int8_heavy_ops_in_scope"] == scope["int8_convs"] == scope["onnx_convs_in_scope"] == 14
    assert chk["float_by_recipe"] == scope["float_by_recipe"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(chk["float_by_recipe"])
    assert "int8/int8/int32->int8" in d["op_histogram"]["CONV_2D"]
    # The strict (unscoped) check refuses it: only the recorded scope makes those convs legitimate.
    with pytest.raises(EchoEdgeError, match="float heavy ops in a file labelled int8"):
        check_tflite(path, "int8")
    info = inspect_tflite(path)
    assert not info.flex_ops and 0.0 < d["int8_op_fraction"] < 0.5
    assert d["int8_op_fraction"] == round(info.int8_fraction, 4)
    assert "SOFTMAX" in d["ops_left_in_float"]  # selective: the fragile ops stay float
    assert m.inputs[0].dtype == "float32" and m.calibration_id == "calib-tflite-test"
    out, eager = _assert_int8_close(artefacts["int8"], deploy)
    assert max(_rel(o, e) for o, e in zip(out, eager)) > 1e-6  # quantized, not float relabelled


def test_whole_recipe_stores_every_conv_and_linear_weight_int8(artefacts, deploy):
    """Read back from the flatbuffer: no CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED keeps a
    float weight, the file passes the strict (unscoped) int8 check, and stays close to eager."""
    m = read_manifest(artefacts["int8-whole"])
    w = m.details["weights"]
    assert w["heavy_layers"] > 20 and w["float_weight_layers"] == [], w["float_weight_layers"]
    assert w["int8_share"] >= 0.95, w["bytes_by_dtype"]
    assert m.details["quantization"]["int8_modules"] == "all"
    path = artefacts["int8-whole"] / m.model_file
    check_tflite(path, "int8")  # strict: a float heavy op would raise
    scoped = read_manifest(artefacts["int8"]).details["weights"]
    assert scoped["float_weight_layers"] and scoped["int8_share"] < w["int8_share"]
    assert m.model_bytes < read_manifest(artefacts["int8"]).model_bytes
    _assert_int8_close(artefacts["int8-whole"], deploy)


def test_whole_recipe_keeps_the_glue_float_and_drops_intermediate_names(artefacts):
    """Read from the written flatbuffer: every MUL and every op on 2-D (batch, features) tensors
    but FULLY_CONNECTED computes in float (ExecuTorch's E2FA glue), the FULLY_CONNECTED layers stay
    int8, and only the graph's inputs and outputs keep a tensor name."""
    from ai_edge_litert import schema_py_generated as schema

    from echoedge.convert.tflite_ops import tflite_graph

    m = read_manifest(artefacts["int8-whole"])
    q = m.details["quantization"]
    assert q["recipe"]["float_glue"] == ["fa"] and "MUL" in q["denylisted_ops"]
    buf = (artefacts["int8-whole"] / m.model_file).read_bytes()
    ops, _, _ = tflite_graph(buf)
    sg = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    kinds = {}
    for i, op in enumerate(ops):
        outs = [sg.Tensors(t) for t in op.outputs]
        if op.op == "MUL" or (op.op not in ("FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE")
                              and all(t.ShapeLength() <= 2 for t in outs)):
            assert all(t.Type() == schema.TensorType.FLOAT32 for t in outs), (i, op.op)
            kinds[op.op] = kinds.get(op.op, 0) + 1
        if op.op == "FULLY_CONNECTED":
            assert sg.Tensors(op.inputs[1]).Type() == schema.TensorType.INT8, i
    assert kinds.get("MUL") and kinds.get("CONCATENATION"), kinds  # the statistics row is there
    io = {int(t) for t in list(sg.InputsAsNumpy()) + list(sg.OutputsAsNumpy())}
    named = {i for i in range(sg.TensorsLength()) if sg.Tensors(i).Name()}
    assert named == io, sorted(named - io)[:5]
    assert m.details["tensor_names"]["names_dropped"] > 100
    assert m.details["tensor_names"]["bytes_saved"] > 0


def test_whole_recipe_runs_the_float_islands_fully_connected_layers_hybrid(artefacts):
    """Read from the written file: the FULLY_CONNECTED layers of E2FA's float glue read float and
    write float with int8 weights (hybrid), and no FULLY_CONNECTED between a QUANTIZE and a
    DEQUANTIZE is left (the output rounding the rewrite removes)."""
    from ai_edge_litert import schema_py_generated as schema

    from echoedge.convert.tflite_ops import tflite_graph

    m = read_manifest(artefacts["int8-whole"])
    hybrid = m.details["quantization"]["hybrid_fully_connected"]
    buf = (artefacts["int8-whole"] / m.model_file).read_bytes()
    ops, _, _ = tflite_graph(buf)
    sg = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    dtype = lambda t: sg.Tensors(t).Type()  # noqa: E731
    readers, producer = {}, {t: op.op for op in ops for t in op.outputs}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op.op)
    f32, i8 = schema.TensorType.FLOAT32, schema.TensorType.INT8
    fcs = [op for op in ops if op.op == "FULLY_CONNECTED"]
    hybrids = [op for op in fcs if dtype(op.inputs[0]) == f32]
    assert len(hybrids) == hybrid["hybrid_fully_connected"] >= 1
    for op in hybrids:
        assert dtype(op.inputs[1]) == i8 and dtype(op.outputs[0]) == f32
    for op in fcs:  # an int8 layer fed by int8 work (the landmark heads) stays as it is
        island = producer.get(op.inputs[0]) == "QUANTIZE" and readers.get(op.outputs[0]) == ["DEQUANTIZE"]
        assert not (dtype(op.outputs[0]) == i8 and island)
    info = inspect_tflite(artefacts["int8-whole"] / m.model_file)
    assert info.float_heavy_ops() == []  # a hybrid layer multiplies in int8


def test_whole_recipe_takes_the_files_own_output_shift_out(artefacts, deploy, calib):
    """The shift recorded in the manifest was taken out of the file: measured again on the
    written file, on the same calibration clips, almost nothing is left; and an output that no
    fully-connected bias computes (a landmark, through a LOGISTIC) is refused with a reason."""
    from tensorflow.lite.tools import flatbuffer_utils

    from echoedge.convert.tflite_interpreter import make_interpreter, signature_io
    from echoedge.convert.tflite_output_shift import bias_slots, take_out_shift

    m = read_manifest(artefacts["int8-whole"])
    shift = m.details["quantization"]["output_shift"]
    assert shift["outputs"] == ["ef", "edv", "esv"] and shift["clips"] == len(calib.clips)
    assert shift["applied_to"].startswith("the bias of fully-connected op")
    path = artefacts["int8-whole"] / m.model_file
    data = path.read_bytes()
    _, again = take_out_shift(data, deploy, calib.clips, SPEC.input_shape(1), OUTPUT_NAMES[:3],
                              artefacts["int8-whole"].parent)
    for before, left in zip(shift["shift"], again.shift):
        assert abs(left) <= 0.05 * abs(before) + 1e-5, (shift["shift"], again.shift)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    io_ = signature_io(make_interpreter(path), SPEC.input_shape(1))
    why = bias_slots(model, ["ed_landmarks"], [io_.output_keys[3]])
    assert isinstance(why, str) and "LOGISTIC" in why


def test_float_glue_refuses_a_scope_or_kept_float_convs():
    """The glue rule belongs to the unscoped whole recipe: asked with a scope (or kept-float
    convs) it says so instead of silently dropping one of the two."""
    from echoedge.convert.tflite_int8 import selective_int8

    with pytest.raises(EchoEdgeError, match="float glue"):
        selective_int8(None, lambda: iter(()), scope=("encoder.cnn",), float_glue=True)
    with pytest.raises(EchoEdgeError, match="float glue"):
        selective_int8(None, lambda: iter(()), float_weights=[np.zeros((1, 1, 1, 1), np.float32)],
                       float_glue=True)


def test_run_reuses_an_int8_file_only_when_it_was_built_with_the_asked_recipe(artefacts, calib):
    """The manifest records the recipe; `run --reuse --int8-recipe X` must not keep a file of
    the other recipe (same checkpoint and calibration set, different file)."""
    from echoedge.convert.int8_recipe import recipe_of
    from echoedge.validate.pipeline import _reusable

    whole, scoped = read_manifest(artefacts["int8-whole"]), read_manifest(artefacts["int8"])
    assert recipe_of(whole.details) == "whole" and recipe_of(scoped.details) == "conv-stages"
    assert recipe_of(read_manifest(artefacts["fp32"]).details) is None
    sha, cid = "a" * 64, whole.calibration_id
    assert _reusable(artefacts["int8-whole"], sha, cid, "whole")
    assert not _reusable(artefacts["int8-whole"], sha, cid, "conv-stages")
    assert _reusable(artefacts["int8"], sha, cid, "conv-stages") and _reusable(artefacts["int8"], sha, cid)
    assert not _reusable(artefacts["int8"], sha, cid, "whole")
    assert _reusable(artefacts["fp32"], sha, None, "whole")  # the recipe is int8's only


def test_scoped_check_rejects_float_in_scope_convs_and_unknown_scopes(artefacts, deploy):
    """The fp32 file has the same node names as the int8 one: with the int8 file's scope its
    in-scope convs are float, which the scoped check refuses."""
    fp32 = artefacts["fp32"] / "model.tflite"
    nodes = read_manifest(artefacts["int8"]).details["quantization"]["scope"]["heavy_nodes"]
    with pytest.raises(EchoEdgeError) as e:
        check_scoped_int8(fp32, nodes)
    msg = str(e.value)
    assert "float heavy ops inside the int8 scope" in msg and "CONV_2D#" in msg and "\n" not in msg
    with pytest.raises(EchoEdgeError, match="1 of the 1 in-scope convs are missing"):
        check_scoped_int8(artefacts["int8"] / "model.tflite", ["no/such/tensor"])
    # The plan itself, on the float graph and the front end's ONNX file.
    fe = front_end(deploy, _clips(1, seed=0), lambda *a, **k: None)
    plan = int8_scope_plan(fp32.read_bytes(), fe.folder / "model.onnx", int8_scope(deploy))
    assert sorted(plan.heavy_nodes) == sorted(nodes) and plan.denylisted_nodes
    with pytest.raises(EchoEdgeError, match="no Conv node is named under the int8 scope"):
        int8_scope_plan(fp32.read_bytes(), fe.folder / "model.onnx", ("decoder.nothing",))
    assert int8_scope(torch.nn.Linear(2, 2)) is None  # other models: whole-graph int8


def test_int8_full_has_int8_io_with_its_quantization_in_the_manifest(artefacts, deploy):
    m = read_manifest(artefacts["int8-full"])
    clip = m.inputs[0]
    assert clip.dtype == "int8" and clip.scale > 0 and -128 <= clip.zero_point <= 127
    assert all(t.dtype == "int8" and t.scale > 0 for t in m.outputs)
    info = check_tflite(artefacts["int8-full"] / m.model_file, "int8-full")
    assert info.inputs[0].dtype == "int8" and abs(info.inputs[0].scale - clip.scale) < 1e-12
    # Both int8 files take their activation ranges from echo-edge's pass, not TensorFlow's calibrator.
    for p in ("int8", "int8-full"):
        calib = read_manifest(artefacts[p]).details["quantization"]["calibration"]
        assert "tflite_calibration" in calib["ranges"] and calib["tensors"] > 0, p
    x = _clips(2, seed=10)
    eager = EagerRunner(deploy)(x)
    with TFLiteRunner(artefacts["int8-full"]) as r:
        out = r(x)
    # All-integer (layer norm and softmax too) drifts more than the selective file: loose bound.
    assert np.abs(out[0] - eager[0]).max() <= 4 * INT8_EF_BOUND
    assert max(float(np.abs(o - e).max()) for o, e in zip(out[3:], eager[3:])) <= 2 * INT8_LANDMARK_BOUND


def test_op_check_rejects_a_float_conv_file_labelled_int8(artefacts):
    fp32 = artefacts["fp32"] / "model.tflite"
    check_tflite(fp32, "fp32")  # fine as what it is
    with pytest.raises(EchoEdgeError) as e:
        check_tflite(fp32, "int8")
    msg = str(e.value)
    assert "float heavy ops in a file labelled int8" in msg and "CONV_2D#" in msg
    assert str(fp32) in msg and "\n" not in msg


def test_flex_ops_fail_every_precision():
    ops = [OpRecord(0, "CONV_2D", ["int8", "int8", "int32"], ["int8"]),
           OpRecord(1, "FlexErf", ["float32"], ["float32"])]
    info = TFLiteOps("m.tflite", ops, [], [])
    for p in ("fp32", "fp16", "int8"):
        with pytest.raises(EchoEdgeError, match="Flex.*FlexErf"):
            check_ops(info, p)


def test_no_artefact_holds_a_flex_op_and_manifests_are_complete(artefacts):
    for p, folder in artefacts.items():
        m = verify_artefact(folder)
        d = m.details
        assert m.format == "tflite" and m.precision == p.removesuffix("-whole")
        assert inspect_tflite(folder / m.model_file).flex_ops == [] and d["flex_ops"] == []
        assert d["input_layout"] == m.inputs[0].layout == "NCTHW" and m.inputs[0].shape == [1, 1, 16, 64, 64]
        assert d["route"] == tfl.ROUTES[m.precision] and set(d["signature"]["outputs"]) == set(OUTPUT_NAMES)
        for tool in ("onnx", "onnx2tf", "tensorflow-cpu", "ai-edge-litert"):
            assert m.tool_versions[tool] != "not installed", tool
        assert (m.calibration_id is not None) == p.startswith("int8")
        assert sorted(p.name for p in folder.iterdir()) == ["golden.npz", "manifest.json", "model.tflite"]


def test_manifests_carry_the_arena_and_int8_names_its_float_tensors(artefacts):
    from echoedge.validate.memory import measure

    for p in ("fp32", "int8"):
        mem = read_manifest(artefacts[p]).details["memory"]
        assert mem["planned_bytes"] > 0 and mem["graph_peak_bytes"] > 0 and not mem["estimate"], mem
        assert "arena" in mem["how"]
    int8 = read_manifest(artefacts["int8"]).details["memory"]
    assert int8["bytes_by_dtype"].get("int8", 0) > 0  # the scoped convs' activations
    assert int8["float_tensors"] and all(t["bytes"] > 0 and t["dtype"] == "float32" for t in int8["float_tensors"])
    measured, why = measure(artefacts["fp32"])  # a fresh process, as a user meets it
    assert why is None and measured["working_bytes"] > 0 and measured["peak_rss_bytes"] > 0
    assert read_manifest(artefacts["fp32"]).details["memory"]["planned_bytes"] <= measured["working_bytes"]


def test_runner_interpreters_threads_layout_and_shape_checks(artefacts):
    x = _clips(3, seed=11)
    with TFLiteRunner(artefacts["fp32"], threads=1, interpreter="litert") as a, \
            TFLiteRunner(artefacts["fp32"], threads=2, interpreter="tf") as b:
        assert a.threads == 1 and "litert" in a.runtime and "tf interpreter" in b.runtime
        for oa, ob in zip(a(x), b(x)):
            assert np.allclose(oa, ob, rtol=1e-5, atol=1e-5)
        with pytest.raises(ShapeError):
            a(x[:, :, :8])
    with pytest.raises(EchoEdgeError, match="unknown TFLite interpreter"):
        TFLiteRunner(artefacts["fp32"], interpreter="gpu")
    # A channels-last file would be fed transposed: the layout helper does exactly that.
    y = to_layout(x[:1], "NTHWC")
    assert y.shape == (1, 16, 64, 64, 1) and np.array_equal(y[0, 3, 5, 7, 0], x[0, 0, 3, 5, 7])
    assert input_layout([1, 16, 64, 64, 1], (1, 1, 16, 64, 64)) == "NTHWC"


def test_interrupted_export_leaves_no_folder(tmp_path, deploy, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfl, "convert_saved_model", boom)
    with pytest.raises(KeyboardInterrupt):
        tfl.export_tflite(deploy, SPEC, tmp_path / "fp32", "fp32", None, "a" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_one_line_errors(tmp_path, deploy, monkeypatch):
    with pytest.raises(EchoEdgeError, match="int8 needs a calibration set"):
        tfl.export_tflite(deploy, SPEC, tmp_path / "a", "int8", None, "a" * 64, progress=False)
    with pytest.raises(EchoEdgeError, match="precision must be one of"):
        tfl.export_tflite(deploy, SPEC, tmp_path / "a", "int4", None, "a" * 64, progress=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnx2tf" else real(n, *a))
    with pytest.raises(EchoEdgeError, match="TFLite toolchain is not installed.*onnx2tf"):
        tfl.export_tflite(deploy, SPEC, tmp_path / "a", "fp32", None, "a" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(EchoEdgeError, match="bad.tflite: not a TFLite flatbuffer"):
        inspect_tflite(bad)


@pytest.mark.slow
def test_export_cli_tflite_fp32_and_int8(tmp_path: Path, synth_root: Path, artefacts, capsys):
    """End to end through `echo-edge export` (the front end is shared with the fixtures above:
    the CLI's tiny checkpoint has the same weights)."""
    from echoedge.cli import main as cli_main
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "tiny.pt", EchoE3Net(CFG).eval(), CFG, SPEC, "test")
    out = tmp_path / "art"
    rc = cli_main(["export", "--checkpoint", str(ck), "--data", str(synth_root), "--format", "tflite",
                   "--precision", "fp32,int8", "--calibration", "random:8", "--out", str(out),
                   "--cache-dir", str(tmp_path / "frames")])
    assert rc == 0, capsys.readouterr().err
    calib = json.loads((out / "calibration" / "manifest.json").read_text())
    fp32, int8 = read_manifest(out / "tflite-fp32"), read_manifest(out / "tflite-int8")
    assert int8.calibration_id == calib["id"] and fp32.calibration_id is None
    assert int8.details["quantization"]["calibration"]["clips"] == 8
    from echoedge.calibration import load_calibration_set

    x = load_calibration_set(out / "calibration").clips[:2]
    with open_runner(out / "tflite-fp32") as a, open_runner(out / "tflite-int8") as b:
        fa, fb = a(x), b(x)
    assert np.abs(fa[0] - fb[0]).max() <= INT8_EF_BOUND


def test_rebuild_from_the_same_inputs_is_byte_identical(artefacts, deploy, calib, tmp_path, monkeypatch):
    """fp32 and int8 once more from the fixture's deploy form and calibration set, the ONNX and
    onnx2tf front end rebuilt too (its per-process cache emptied): the same bytes."""
    import echoedge.convert.tflite_onnx2tf as fe_mod
    from echoedge.convert.reproducible import build_fields

    monkeypatch.setattr(fe_mod, "_FRONT_ENDS", {})
    for p in ("fp32", "int8"):
        again = tfl.export_tflite(deploy, SPEC, tmp_path / p, p, calib if p == "int8" else None, "a" * 64,
                                  progress=False)
        names = sorted(f.name for f in again.iterdir())
        assert names == sorted(f.name for f in artefacts[p].iterdir()) == ["golden.npz", "manifest.json",
                                                                             "model.tflite"]
        for name in ("model.tflite", "golden.npz"):
            assert (again / name).read_bytes() == (artefacts[p] / name).read_bytes(), (p, name)
        m1, m2 = (json.loads((f / "manifest.json").read_text()) for f in (artefacts[p], again))
        assert m1["content_sha256"] == m2["content_sha256"] == m1["model_sha256"]
        assert m1["details"]["reproducibility"]["byte_identical_rebuild"] is True
        for m in (m1, m2):  # what the manifest names as build records is all that differs
            for dotted in build_fields("tflite"):
                *parents, leaf = dotted.split(".")
                node = m
                for key in parents:
                    node = node[key]
                node.pop(leaf)
        assert [k for k in m1["details"] if m1["details"][k] != m2["details"][k]] == []
        assert m1 == m2


def test_verify_reruns_the_golden_vectors_in_litert(artefacts, tmp_path, capsys):
    import shutil

    from echoedge.cli import main as cli_main

    rc = cli_main(["verify", str(artefacts["fp32"]), str(artefacts["int8-full"])])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 2
    for line, p in zip(out, ("fp32", "int8-full")):
        assert line.startswith(f"PASS {artefacts[p]}: model.tflite sha256 matches; golden.npz sha256 "
                               "matches; 3 golden cases in tflite-xnnpack (litert interpreter): max |err| 0 ")
    bad = tmp_path / "fp32"
    shutil.copytree(artefacts["fp32"], bad)
    data = bytearray((bad / "golden.npz").read_bytes())
    data[-200] ^= 0x10
    (bad / "golden.npz").write_bytes(bytes(data))
    assert cli_main(["verify", str(bad)]) == 1
    assert capsys.readouterr().out.strip() == (f"FAIL {bad}: model.tflite sha256 matches; {bad / 'golden.npz'}: "
                                               "sha256 does not match the manifest (golden vectors changed or corrupt)")
