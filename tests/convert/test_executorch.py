"""ExecuTorch converter and runner: fp32 equals eager, int8 stays close, the folder says what it holds.

A small 2D-only model with Echo-E3Net's input and output layout keeps these fast; the tiny
Echo-E3Net end to end lives where its conversions are already made (see the note further down).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")
from torch import nn  # noqa: E402

from echoedge.convert.artefact import OUTPUT_NAMES, read_manifest, verify_artefact  # noqa: E402
from echoedge.convert.executorch import export_executorch, portable_ops  # noqa: E402
from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.errors import EchoEdgeError, ShapeError  # noqa: E402
from echoedge.validate.runner import EagerRunner, open_runner  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)
# int8 bound, stated: on this model, calibrated on 12 clips of the same distribution as the test
# clips, EF/EDV/ESV stay within 1 % of the output's scale (EF ~55 -> 0.55 points) and landmarks
# within 0.01 (normalised coordinates; ~1 px at 112). Measured: ~0.2 % and ~0.001.
INT8_REL_BOUND = 0.01
INT8_LANDMARK_BOUND = 0.01


class Toy2D(nn.Module):
    """(B, C, T, H, W) -> per-frame Conv2d -> pooled -> EF/EDV/ESV and two landmark sets."""

    def __init__(self, c: int = 1, k: int = 42) -> None:
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.head = nn.Linear(16, 3)
        self.lm = nn.Linear(16, 2 * k * 2)

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        y = torch.relu(self.conv2(torch.relu(self.conv1(y))))
        y = y.mean(dim=(2, 3)).reshape(b, t, 16).mean(dim=1)
        z = self.head(y)
        lm = torch.sigmoid(self.lm(y)).reshape(b, 2, self.k, 2)
        return 55 + 12 * z[:, 0], 90 + 35 * z[:, 1], 40 + 25 * z[:, 2], lm[:, 0], lm[:, 1]


@dataclass
class FakeCalibration:
    """Stands in for echoedge.calibration.CalibrationSet: the converter reads .clips and .id."""

    clips: np.ndarray
    id: str = "calib-test-0001"
    manifest: dict = field(default_factory=dict)


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return Toy2D().eval()


@pytest.fixture(scope="module")
def calib():
    return FakeCalibration(_clips(12, seed=1))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, toy, calib):
    root = tmp_path_factory.mktemp("et")
    fp32 = export_executorch(toy, SPEC, root / "fp32", "fp32", None, "a" * 64, progress=False)
    int8 = export_executorch(toy, SPEC, root / "int8", "int8", calib, "a" * 64, progress=False)
    return {"fp32": fp32, "int8": int8}


def _rel_err(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def test_fp32_pte_equals_eager_within_1e_4(artefacts, toy):
    x = _clips(3, seed=7)
    eager = EagerRunner(toy)(x)
    with open_runner(artefacts["fp32"], threads=2) as r:
        assert r.runtime == "executorch-xnnpack" and r.precision == "fp32" and r.load_s >= 0
        out = r(x)
    assert len(out) == 5
    for name, o, e in zip(OUTPUT_NAMES, out, eager):
        assert o.shape == e.shape, name
        assert _rel_err(o, e) <= 1e-4, name


def test_int8_pte_stays_within_the_stated_bound(artefacts, toy):
    x = _clips(4, seed=8)
    eager = EagerRunner(toy)(x)
    with open_runner(artefacts["int8"]) as r:
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES[:3], out[:3], eager[:3]):
        assert np.abs(o - e).max() <= INT8_REL_BOUND * np.abs(e).max(), name
    for name, o, e in zip(OUTPUT_NAMES[3:], out[3:], eager[3:]):
        assert np.abs(o - e).max() <= INT8_LANDMARK_BOUND, name
    # ...and it is really quantized, not a float program under an int8 label.
    assert max(_rel_err(o, e) for o, e in zip(out, eager)) > 1e-6


def test_int8_without_calibration_is_refused(tmp_path, toy):
    with pytest.raises(EchoEdgeError, match="int8 needs a calibration set"):
        export_executorch(toy, SPEC, tmp_path / "int8", "int8", None, "a" * 64, progress=False)
    assert not (tmp_path / "int8").exists()


def test_unknown_precision_and_wrong_calibration_shape_are_refused(tmp_path, toy):
    with pytest.raises(EchoEdgeError, match="precision must be one of"):
        export_executorch(toy, SPEC, tmp_path / "x", "int4", None, "a" * 64, progress=False)
    bad = FakeCalibration(np.zeros((4, 1, 8, 16, 16), np.float32))
    with pytest.raises(EchoEdgeError, match="calibration set: expected clips of shape"):
        export_executorch(toy, SPEC, tmp_path / "x", "int8", bad, "a" * 64, progress=False)


def test_a_3d_model_is_refused_before_export(tmp_path):
    class With3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(EchoEdgeError, match="3D op at 'conv'.*deploy form"):
        export_executorch(With3D(), SPEC, tmp_path / "x", "fp32", None, "a" * 64, progress=False)


def test_a_program_failing_at_run_time_leaves_no_artefact(tmp_path, monkeypatch):
    import echoedge.convert.executorch as et

    class Conv3dNet(nn.Module):  # lowers, but the portable Conv3d kernel rejects 5-D input
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x).mean(dim=(1, 2, 3, 4))
            lm = torch.zeros(x.shape[0], 42, 2) + y[:, None, None]
            return y, y, y, lm, lm

    monkeypatch.setattr(et, "_refuse_3d_ops", lambda model: None)
    with pytest.raises(EchoEdgeError, match="fails in the ExecuTorch runtime"):
        export_executorch(Conv3dNet(), SPEC, tmp_path / "x", "fp32", None, "a" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_manifest_records_delegation_calibration_and_hashes(artefacts, calib):
    fp32, int8 = (verify_artefact(artefacts[k]) for k in ("fp32", "int8"))
    for m in (fp32, int8):
        assert m.format == "executorch" and m.model_file == "model.pte"
        assert m.source_checkpoint_sha256 == "a" * 64
        assert m.inputs[0].shape == list(SPEC.input_shape(1))
        assert [t.name for t in m.outputs] == list(OUTPUT_NAMES)
        assert all(t.dtype == "float32" and t.scale is None for t in m.inputs + m.outputs)
        assert m.tool_versions["executorch"] != "not installed" and "torchao" in m.tool_versions
        d = m.details["delegation"]
        assert d["by_op"]["aten_convolution_default"] == {"xnnpack": 2, "portable": 0}
        assert d["by_op"]["aten_linear_default"]["xnnpack"] == 2
        assert d["xnnpack_subgraphs"] >= 1
        assert portable_ops(d).get("aten_mean_dim") == 2  # mean over tokens is not delegated
        assert d["portable_nodes"] == sum(portable_ops(d).values())
    assert fp32.calibration_id is None and fp32.details["quantization"]["scheme"] is None
    assert int8.calibration_id == calib.id
    assert int8.details["quantization"]["calibration"] == {"id": calib.id, "clips": 12}
    assert int8.details["delegation"]["by_op"]["quantized_decomposed_quantize_per_tensor_default"]["xnnpack"] > 0
    assert int8.details["golden_vs_eager"]["cases"] == 3
    # The manifest is plain JSON a device engineer can read without echo-edge.
    json.loads((artefacts["int8"] / "manifest.json").read_text())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bundled_program_checks_itself(artefacts, precision):
    from executorch.extension.pybindings import portable_lib

    import executorch.kernels.quantized  # noqa: F401

    m = read_manifest(artefacts[precision])
    info = m.details["bundled_program"]
    assert info.get("error") is None, info
    assert info["file"] == "model.bpte" and info["cases"] == 3 and info["verified_on_host"]
    bundle = portable_lib._load_bundled_program_from_buffer((artefacts[precision] / "model.bpte").read_bytes())
    for i in range(info["cases"]):
        # Same runtime, same kernels: the host reproduces its own expected outputs tightly.
        bundle.verify_result_with_bundled_expected_output("forward", i, 1e-5, 1e-6)


def test_runner_loops_over_batch_and_checks_input_shape(artefacts):
    with open_runner(artefacts["fp32"]) as r:
        x = _clips(5, seed=3)
        batched = r(x)
        single = [r(x[i : i + 1]) for i in range(5)]
        for k in range(5):
            np.testing.assert_array_equal(batched[k], np.concatenate([s[k] for s in single]))
        with pytest.raises(ShapeError, match=r"expects input \(B, 1, 4, 16, 16\)"):
            r(np.zeros((1, 1, 8, 16, 16), np.float32))


def test_corrupt_pte_is_a_clear_error_naming_the_file(artefacts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(artefacts["fp32"], broken)
    (broken / "model.pte").write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(EchoEdgeError, match="could not load the program") as e:
        open_runner(broken)
    assert str(broken / "model.pte") in str(e.value)
    (broken / "model.pte").unlink()
    with pytest.raises(EchoEdgeError, match="missing"):
        open_runner(broken)


def test_executorch_runner_serves_predict_videos(artefacts, toy, synth_root):
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.model.evaluate import predict_videos

    reader = EchoNet(synth_root)
    records = reader.records("TEST")[:2]
    frames = FrameCache(reader, None)
    with open_runner(artefacts["fp32"]) as r:
        got = predict_videos(r, records, frames, SPEC, clips_per_video=3, batch_size=2, progress=False)
    want = predict_videos(EagerRunner(toy), records, frames, SPEC, clips_per_video=3, progress=False)
    for g, w in zip(got, want):
        assert g.n_clips == 3 and abs(g.ef - w.ef) <= 1e-4 * abs(w.ef)


# The tiny Echo-E3Net end to end: fp32 (its .pte against the 3D reference, all five outputs) in
# tests/validate/test_reproducible.py, on the `echo-edge export` rebuild of the session's tiny run
# (the same weights; converting them here too cost one more ~1 min lowering); int8 in
# test_export_cli.py (one int8 e2e per suite: its lowering alone takes ~2 min on 2 cores).


def test_default_int8_recipe_quantizes_only_the_echo_e3net_conv_stages():
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from echoedge.convert.executorch_quantizer import quantizer_for
    from echoedge.convert.int8_recipe import int8_scope
    from echoedge.model.config import get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model

    torch.manual_seed(0)
    cfg = get_config("tiny")
    x = torch.randn(cfg.input_shape(1))
    deploy = to_deploy_form(build_model(cfg).eval(), example=x)
    assert int8_scope(deploy) == ("encoder.cnn",)
    quantizer, recipe = quantizer_for(deploy)
    assert recipe["int8_modules"] == ["encoder.cnn"]
    prepared = prepare_pt2e(torch.export.export(deploy, (x,)).module(), quantizer)
    prepared(x)
    converted = convert_pt2e(prepared)
    quantized_weights = [n for n in converted.graph.nodes
                         if "dequantize_per_channel" in str(n.target)]
    assert quantized_weights
    for n in quantized_weights:
        for user in n.users:
            paths = [p for p, _ in (user.meta.get("nn_module_stack") or {}).values()]
            assert any(p.startswith("encoder.cnn") for p in paths), paths
    # A model that is not Echo-E3Net gets every conv quantized (no scope).
    assert int8_scope(torch.nn.Conv2d(1, 1, 1)) is None


def test_manifest_and_info_read_weight_dtypes_from_the_file(artefacts, capsys):
    """The weight breakdown is read from model.pte itself: the toy's two convs are int8 in the
    int8 program and its two Linear layers float (the conv-stages recipe keeps Linear float), so a
    float layer shows up by name, whatever the recipe claims."""
    from echoedge.cli import main as cli_main
    from echoedge.convert.weights import weight_breakdown

    fp32 = read_manifest(artefacts["fp32"]).details["weights"]
    int8 = read_manifest(artefacts["int8"]).details["weights"]
    assert fp32["int8_share"] == 0.0 and fp32["heavy_layers"] == 4
    assert len(fp32["float_weight_layers"]) == 4
    assert int8["heavy_layers"] == 4 and int8["bytes_by_dtype"]["int8"] > 0
    assert sorted(x.split(" #")[0] for x in int8["float_weight_layers"]) == ["xnnpack.FullyConnected"] * 2
    assert int8["ops_by_dtype"]["xnnpack.Conv2d"] == {"int8": 1}
    # The manifest's figures are the file's: read again, the same.
    again = weight_breakdown(artefacts["int8"] / "model.pte", "executorch").to_dict()
    assert again == int8
    # int8 bytes: the two conv weights (8*1*3*3 + 16*8*3*3 = 1224) and the six scalar constants
    # of the heads' int8 multiply/add (55 + 12 * z ...), nothing else.
    assert int8["bytes_by_dtype"]["int8"] == 1224 + 6
    assert cli_main(["info", str(artefacts["int8"])]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "weights stored float: 2" in out


def test_info_on_a_folder_that_is_no_artefact_is_one_line(tmp_path, capsys):
    from echoedge.cli import main as cli_main

    assert cli_main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an echo-edge artefact" in err[0]


def test_the_written_program_keeps_frames_4d_between_convs(tmp_path, tiny_run):
    """Read back from the written .pte of the tiny Echo-E3Net (the session's `echo-edge run`, whose
    converter applied the 4D frames pass, echoedge.model.deploy_layout): XNNPACK is left far fewer
    transposes than in the plain export of the same deploy form, and the program still equals eager."""
    from executorch.exir import to_edge_transform_and_lower

    from echoedge.convert.weights_pte import read_pte
    from echoedge.convert.xnnpack_int8_ops import partitioner
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.deploy import to_deploy_form

    assert tiny_run.rc == 0, tiny_run.stdout
    ck = load_checkpoint(tiny_run.checkpoint)
    x = np.random.default_rng(3).standard_normal((2, *ck.spec.input_shape(1)[1:])).astype(np.float32)
    deploy = to_deploy_form(ck.model, torch.from_numpy(x)).eval()
    folder = tiny_run.fp32
    plain = tmp_path / "plain.pte"
    ep = torch.export.export(deploy, (torch.from_numpy(x[:1]),))
    plain.write_bytes(to_edge_transform_and_lower(ep, partitioner=[partitioner()]).to_executorch().buffer)
    transposes = {name: sum(read_pte(p).ops_by_dtype.get("xnnpack.StaticTranspose", {}).values())
                  for name, p in (("pass", folder / "model.pte"), ("plain", plain))}
    assert transposes["pass"] <= 0.75 * transposes["plain"], transposes
    eager = EagerRunner(deploy)(x)
    with open_runner(folder) as r:
        out = r(x)
    for name, o, e in zip(OUTPUT_NAMES, out, eager):
        assert _rel_err(o, e) <= 1e-4, name
