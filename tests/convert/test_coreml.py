"""Core ML converter and runner on Linux: every precision converts, its manifest says what the
package holds, and the runner gives real numbers through the reference interpreter (or refuses,
when asked for Core ML itself, with PlatformError -> SKIPPED_PLATFORM).

A small 2D-only model with Echo-E3Net's I/O (convs incl. depthwise/dilated, layer norm, tanh GELU,
softmax attention, linear, sigmoid) keeps these fast: each artefact is built once per module. The
tiny Echo-E3Net end-to-end run (W8A8) is marked slow; its fp32 package is checked where the suite
already converts it (tests/validate/test_reproducible.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")
from torch import nn  # noqa: E402

from echoedge.convert.artefact import OUTPUT_NAMES, model_sha256, read_manifest, verify_artefact  # noqa: E402
from echoedge.convert.coreml import (  # noqa: E402
    W8A8_ROUTE, export_coreml, io_dtypes,
)
from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.errors import EchoEdgeError, PlatformError, ShapeError  # noqa: E402
from echoedge.validate.coreml_runner import CoreMLRunner  # noqa: E402
from echoedge.validate.runner import EagerRunner, open_runner  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)
# fp16 bound, stated: an fp16 program stores every op's output in float16 (~3 significant
# digits, 2**-11 relative rounding per op); over this model's ~40 ops EF/EDV/ESV stay within
# 0.3 % of the output scale and landmarks within 3e-3. Measured: ~5e-4 and ~5e-4.
FP16_REL_BOUND = 3e-3
FP16_LANDMARK_BOUND = 3e-3
# W8 / W8A8 bounds: int8 weights per channel (and int8 activations from 12 calibration clips of
# the test clips' distribution) keep EF/EDV/ESV within 2 % of scale and landmarks within 0.02.
INT8_REL_BOUND = 0.02
INT8_LANDMARK_BOUND = 0.02


class ToyEcho(nn.Module):
    """(B, C, T, H, W) -> per-frame convs -> token attention -> EF/EDV/ESV and two landmark sets."""

    def __init__(self, c: int = 1, k: int = 42, d: int = 16) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.conv1 = nn.Conv2d(c, d, 3, padding=1)
        self.dw = nn.Conv2d(d, d, 5, padding=4, dilation=2, groups=d)
        self.conv2 = nn.Conv2d(d, d, 3, padding=1, stride=2)
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp = nn.Linear(d, 2 * d)
        self.head = nn.Linear(2 * d, 3)
        self.lm = nn.Linear(2 * d, 2 * k * 2)
        # E2FA's output offset and scale: W8A8 takes its output shift out of `out_mean`.
        self.register_buffer("out_mean", torch.tensor([55.0, 90.0, 40.0]))
        self.register_buffer("out_scale", torch.tensor([12.0, 35.0, 25.0]))

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        y = torch.relu(self.conv1(y))
        y = y + nn.functional.gelu(self.dw(y), approximate="tanh")
        y = torch.relu(self.conv2(y))  # (b*t, d, h/2, w/2)
        tok = y.mean(dim=(2, 3)).reshape(b, t, self.d)
        q, kk, v = self.qkv(self.norm(tok)).chunk(3, dim=-1)
        att = torch.softmax(q @ kk.transpose(1, 2) / self.d ** 0.5, dim=-1)
        tok = tok + att @ v
        z = nn.functional.gelu(self.mlp(tok), approximate="tanh").mean(dim=1)
        out = self.out_mean + self.out_scale * self.head(z)
        lm = torch.sigmoid(self.lm(z)).reshape(b, 2, self.k, 2)
        return out[:, 0], out[:, 1], out[:, 2], lm[:, 0], lm[:, 1]


@dataclass
class FakeCalibration:
    clips: np.ndarray
    id: str = "calib-coreml-0001"
    manifest: dict = field(default_factory=dict)


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return ToyEcho().eval()


@pytest.fixture(scope="module")
def calib():
    return FakeCalibration(_clips(12, seed=1))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, toy, calib):
    root = tmp_path_factory.mktemp("coreml")
    return {p: export_coreml(toy, SPEC, root / p, p, calib if p == "w8a8" else None, "a" * 64,
                             progress=False)
            for p in ("fp32", "fp16", "w8", "w8a8")}


@pytest.fixture(scope="module")
def eval_clips(toy):
    x = _clips(3, seed=7)
    return x, EagerRunner(toy)(x)


@pytest.fixture(scope="module")
def outputs(artefacts, eval_clips):
    x, _ = eval_clips
    outs = {}
    for p, folder in artefacts.items():
        with open_runner(folder) as r:
            outs[p] = r(x)
    return outs


def _rel_err(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def test_fp32_package_equals_eager_within_1e_4(outputs, eval_clips):
    _, eager = eval_clips
    for name, o, e in zip(OUTPUT_NAMES, outputs["fp32"], eager):
        assert o.shape == e.shape and o.dtype == np.float32, name
        assert _rel_err(o, e) <= 1e-4, name


def test_fp16_package_within_the_fp16_bound_and_really_fp16(outputs, eval_clips):
    _, eager = eval_clips
    out = outputs["fp16"]
    for name, o, e in zip(OUTPUT_NAMES[:3], out[:3], eager[:3]):
        assert np.abs(o - e).max() <= FP16_REL_BOUND * np.abs(e).max(), name
    for name, o, e in zip(OUTPUT_NAMES[3:], out[3:], eager[3:]):
        assert np.abs(o - e).max() <= FP16_LANDMARK_BOUND, name
    # fp16 storage is visible: the fp16 program does not reproduce fp32 to 1e-6.
    assert max(_rel_err(o, e) for o, e in zip(out, eager)) > 1e-6


@pytest.mark.parametrize("precision", ["w8", "w8a8"])
def test_int8_packages_stay_within_the_stated_bound(outputs, eval_clips, precision):
    _, eager = eval_clips
    out = outputs[precision]
    for name, o, e in zip(OUTPUT_NAMES[:3], out[:3], eager[:3]):
        assert np.abs(o - e).max() <= INT8_REL_BOUND * np.abs(e).max(), name
    for name, o, e in zip(OUTPUT_NAMES[3:], out[3:], eager[3:]):
        assert np.abs(o - e).max() <= INT8_LANDMARK_BOUND, name
    # ...and quantization changed the numbers beyond fp16 alone.
    assert max(_rel_err(o, f) for o, f in zip(out, outputs["fp16"])) > 1e-4


def test_manifests_record_program_quantization_and_hashes(artefacts, calib):
    ms = {p: verify_artefact(f) for p, f in artefacts.items()}
    for p, m in ms.items():
        assert m.format == "coreml" and m.precision == p and m.runtime == "coreml"
        assert m.model_file == "model.mlpackage" and (artefacts[p] / m.model_file).is_dir()
        assert m.model_sha256 == model_sha256(artefacts[p] / m.model_file)
        assert m.model_bytes > 0 and m.source_checkpoint_sha256 == "a" * 64
        assert m.inputs[0].name == "clip" and m.inputs[0].shape == list(SPEC.input_shape(1))
        assert [t.name for t in m.outputs] == list(OUTPUT_NAMES)
        assert m.tool_versions["coremltools"] != "not installed"
        d = m.details
        assert d["minimum_deployment_target"] == "iOS17"
        assert d["compute_precision"] == ("fp32" if p == "fp32" else "fp16")
        hist = d["ml_program"]["op_histogram"]
        assert hist["conv"] == 3 and hist["linear"] >= 4 and hist["softmax"] == 1 and hist["layer_norm"] == 1
        assert d["golden_vs_eager"]["cases"] == 3
        assert d["golden_vs_eager"]["interpreter_precision"] == d["compute_precision"]
    assert ms["fp32"].inputs[0].dtype == "float32"
    # The manifest's I/O dtypes are the ones the package declares (coremltools' quantization
    # passes turn an fp16 program's I/O into float16), read here straight from the spec.
    for p, m in ms.items():
        spec = ct.models.MLModel(str(artefacts[p] / "model.mlpackage"), skip_model_load=True).get_spec()
        declared = io_dtypes(spec)
        assert {t.name: t.dtype for t in m.inputs + m.outputs} == declared, p
    for p in ("fp32", "fp16"):
        assert ms[p].details["ml_program"]["quantization_ops"] == {}
        assert ms[p].calibration_id is None and ms[p].details["quantization"]["int8_weight_elements"] == 0
    # Weight dtypes read from the MIL program itself: the fp32 package stores every conv and
    # linear weight float, the W8 one stores as int8 exactly the weights its threshold quantizes.
    fp32_w, w8_w = ms["fp32"].details["weights"], ms["w8"].details["weights"]
    assert fp32_w["int8_share"] == 0.0
    assert len(fp32_w["float_weight_layers"]) == fp32_w["heavy_layers"] >= 7
    assert w8_w["heavy_layers"] == fp32_w["heavy_layers"]
    assert w8_w["bytes_by_dtype"]["int8"] == ms["w8"].details["quantization"]["int8_weight_elements"]
    assert len(w8_w["float_weight_layers"]) < w8_w["heavy_layers"]
    w8 = ms["w8"].details
    assert w8["ml_program"]["quantization_ops"].get("constexpr_affine_dequantize", 0) >= 3
    assert "quantize" not in w8["ml_program"]["quantization_ops"]
    assert w8["quantization"]["int8_weight_elements"] > w8["quantization"]["float_const_elements"]
    a8 = ms["w8a8"]
    q = a8.details["ml_program"]["quantization_ops"]
    assert q["quantize"] >= 3 and q["dequantize"] >= 3 and q["constexpr_affine_dequantize"] >= 3
    assert a8.calibration_id == calib.id
    act = a8.details["quantization"]["activations"]
    assert act["route"] == W8A8_ROUTE and act["clips"] == 12 and act["tensors_with_ranges"] > 10
    assert a8.details["quantization"]["calibration"] == {"id": calib.id, "clips": 12}
    # the I/O dtype it states is the one the package declares
    assert a8.details["quantization"]["io"].startswith(a8.inputs[0].dtype)
    json.loads((artefacts["w8a8"] / "manifest.json").read_text())


def test_w8a8_activations_have_zero_points_and_its_output_shift_is_in_the_file(artefacts, calib, toy,
                                                                                tmp_path):
    """W8A8 quantizes activations with a zero point (read from the program), and the output
    shift in its manifest went into the package: the offset const holds out_mean - shift, and
    measuring the written package again finds what is left within the const's float16 grid."""
    from echoedge.convert.coreml_mlprogram import load_program_quietly
    from echoedge.convert.coreml_output_shift import take_out_shift
    from echoedge.mil.program import SPEC_FILE
    from coremltools.proto import Model_pb2

    m = read_manifest(artefacts["w8a8"])
    q = m.details["quantization"]
    assert q["activations"]["mode"] == "linear"
    prog, _ = load_program_quietly(artefacts["w8a8"] / "model.mlpackage")
    zero_points = [op.inputs["zero_point"].val for op in prog.functions["main"].operations
                   if op.op_type == "quantize" and op.inputs.get("zero_point") is not None]
    assert zero_points and any(int(np.asarray(z).ravel()[0]) != 0 for z in zero_points)

    shift = q["output_shift"]
    assert shift["outputs"] == ["ef", "edv", "esv"] and shift["clips"] == len(calib.clips)
    assert shift["applied_to"].startswith("the ML program's const b_out_mean")
    spec = Model_pb2.Model()
    spec.ParseFromString((artefacts["w8a8"] / "model.mlpackage" / SPEC_FILE).read_bytes())
    fn = spec.mlProgram.functions["main"]
    const = [op for op in fn.block_specializations[fn.opset].operations
             if op.type == "const" and op.outputs[0].name == "b_out_mean_to_fp16"]
    raw = const[0].attributes["val"].immediateValue.tensor.bytes.values
    stored = np.frombuffer(raw, dtype="<f2")
    wanted = toy.out_mean.numpy() - np.array(shift["shift"])
    grid = np.spacing(stored.astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(stored - wanted) <= grid / 2 + 1e-6), (stored, wanted)

    again_pkg = tmp_path / "again.mlpackage"
    shutil.copytree(artefacts["w8a8"] / "model.mlpackage", again_pkg)
    again = take_out_shift(again_pkg, toy, calib.clips, OUTPUT_NAMES[:3], "out_mean", threads=2)
    for before, left, g in zip(shift["shift"], again.shift, grid):
        assert abs(left) <= 0.05 * abs(before) + g / 2 + 1e-4, (shift["shift"], again.shift)


def test_runner_is_the_interpreter_on_linux_and_says_so(artefacts):
    if sys.platform == "darwin":
        pytest.skip("on macOS the runner uses Core ML itself")
    with open_runner(artefacts["w8"]) as r:
        assert isinstance(r, CoreMLRunner)
        assert r.runtime == "reference-interpreter" and r.measures_latency is False
        assert r.interpreter_precision == "fp16" and "not Core ML" in r.describe()


def test_core_ml_itself_is_a_platform_skip_off_macos(artefacts):
    if sys.platform == "darwin":
        pytest.skip("Core ML runs here")
    with pytest.raises(PlatformError, match="only on macOS") as e:
        CoreMLRunner(artefacts["fp16"], backend="coreml")
    assert str(artefacts["fp16"] / "model.mlpackage") in str(e.value)


def test_runner_loops_over_batch_and_checks_input_shape(artefacts):
    with open_runner(artefacts["fp32"]) as r:
        x = _clips(3, seed=3)
        batched = r(x)
        single = [r(x[i : i + 1]) for i in range(3)]
        for k in range(5):
            np.testing.assert_array_equal(batched[k], np.concatenate([s[k] for s in single]))
        with pytest.raises(ShapeError, match=r"expects input \(B, 1, 4, 16, 16\)"):
            r(np.zeros((1, 1, 8, 16, 16), np.float32))


def test_w8a8_without_calibration_and_unknown_precision_are_refused(tmp_path, toy):
    with pytest.raises(EchoEdgeError, match="w8a8 needs a calibration set"):
        export_coreml(toy, SPEC, tmp_path / "x", "w8a8", None, "a" * 64, progress=False)
    with pytest.raises(EchoEdgeError, match="precision must be one of"):
        export_coreml(toy, SPEC, tmp_path / "x", "int8", None, "a" * 64, progress=False)
    assert not (tmp_path / "x").exists()


def test_a_failed_conversion_is_one_line_and_leaves_no_folder(tmp_path, capfd):
    class Unconvertible(nn.Module):  # an op coremltools 9 has no conversion for
        def forward(self, x):
            y = torch.special.i0(x).mean(dim=(1, 2, 3, 4))
            lm = torch.zeros(x.shape[0], 42, 2) + y[:, None, None]
            return y, y, y, lm, lm

    with pytest.raises(EchoEdgeError, match="Core ML fp32 conversion failed") as e:
        export_coreml(Unconvertible(), SPEC, tmp_path / "x", "fp32", None, "a" * 64, progress=False)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_tampered_or_missing_package_is_a_clear_error(artefacts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(artefacts["fp32"], broken)
    weights = next((broken / "model.mlpackage").rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(EchoEdgeError, match="sha256 does not match"):
        verify_artefact(broken)
    shutil.rmtree(broken / "model.mlpackage")
    with pytest.raises(EchoEdgeError, match="missing"):
        open_runner(broken)


def test_coreml_runner_serves_predict_videos(artefacts, toy, synth_root):
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.model.evaluate import predict_videos

    reader = EchoNet(synth_root)
    records = reader.records("TEST")[:2]
    frames = FrameCache(reader, None)
    with open_runner(artefacts["fp32"]) as r:
        got = predict_videos(r, records, frames, SPEC, clips_per_video=2, batch_size=2, progress=False)
    want = predict_videos(EagerRunner(toy), records, frames, SPEC, clips_per_video=2, progress=False)
    for g, w in zip(got, want):
        assert g.n_clips == 2 and abs(g.ef - w.ef) <= 1e-4 * abs(w.ef)


@pytest.fixture(scope="module")
def tiny_e3net():
    from echoedge.model.config import clip_spec_for
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    spec = clip_spec_for(model.cfg)
    clips = np.random.default_rng(0).standard_normal((6, *spec.input_shape(1)[1:])).astype(np.float32)
    form = to_deploy_form(model, torch.from_numpy(clips[:1])).eval()
    return model, form, spec, clips


@pytest.mark.slow
def test_tiny_echo_e3net_w8a8_end_to_end(tiny_e3net, tmp_path):
    """(The tiny Echo-E3Net's fp32 package against the 3D reference, all five outputs, is checked
    in tests/validate/test_reproducible.py on the session's `echo-edge export` rebuild of the same
    weights: converting them here too cost one more Core ML conversion.)"""
    model, form, spec, clips = tiny_e3net
    w8a8 = export_coreml(form, spec, tmp_path / "w8a8", "w8a8", FakeCalibration(clips[:4]), "b" * 64,
                         progress=False)
    x = clips[4:]
    eager = EagerRunner(model)(x)  # the 3D reference, not the deploy form
    with open_runner(w8a8) as r:
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES[:3], out[:3], eager[:3]):
        assert np.abs(o - e).max() <= INT8_REL_BOUND * np.abs(e).max(), name
    assert read_manifest(w8a8).details["ml_program"]["quantization_ops"]["quantize"] > 10


def test_tanh_gelu_stays_tanh_in_the_program(artefacts):
    # coremltools 9 drops torch.export's keyword `approximate` and emits the exact (erf) GELU;
    # the converter must keep the tanh form the model was trained with (DESIGN.md).
    from echoedge.mil.program import load_mil_program

    prog, _ = load_mil_program(artefacts["fp32"] / "model.mlpackage")
    modes = [op.inputs["mode"].val for op in prog.functions["main"].operations if op.op_type == "gelu"]
    assert modes == ["TANH_APPROXIMATION"] * 2
