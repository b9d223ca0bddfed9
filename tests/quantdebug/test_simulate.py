"""Per-format quantization simulations and the units a user keeps float.

Units are checked on the tiny Echo-E3Net deploy form (no quantization run: cheap); the Core ML W8
weight rounding against coremltools' own linear_symmetric int8 rule; the PT2E simulation's
keep_float / only on a small 2D network (the quantize/dequantize graph is inspected, not timed).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")
from torch import nn  # noqa: E402

from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.quantdebug.simulate import (  # noqa: E402
    fake_quantize_weight, fidelity, quant_units, quantized_layers, simulate, simulated_formats,
)


@pytest.fixture(scope="module")
def tiny():
    from echoedge.model.config import get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model

    cfg = get_config("tiny")
    torch.manual_seed(0)
    ref = build_model(cfg).eval()
    x = torch.randn(1, cfg.channels, cfg.frames, cfg.height, cfg.width)
    return ref, to_deploy_form(ref, example=x)


def test_units_group_the_deploy_convs_of_one_reference_conv3d(tiny):
    ref, deploy = tiny
    units = quant_units(deploy, "executorch", "int8")
    ref_modules = dict(ref.named_modules())
    # Every unit is a Conv3d of the reference model a user recognises...
    assert all(isinstance(ref_modules[u.name], nn.Conv3d) for u in units)
    names = [u.name for u in units]
    # the recipe keeps the stem float (its most EF-sensitive layer): not a unit
    assert "encoder.cnn.0.block.conv1" in names and not any(n.startswith("encoder.stem") for n in names)
    # ...and together they hold exactly the convs the int8 recipe quantizes, each once.
    layers = [p for u in units for p in u.layers]
    assert sorted(layers) == sorted(quantized_layers(deploy)) and len(set(layers)) == len(layers)
    conv1 = next(u for u in units if u.name == "encoder.cnn.0.block.conv1")
    assert len(conv1.layers) == 3 and all(p.startswith(conv1.name + ".") for p in conv1.layers)
    # 3 taps (full kernel) + 2 + 2 (the two boundary runs' weight slices) = 7/3 of the Conv3d's
    assert 3 * conv1.params == 7 * ref_modules[conv1.name].weight.numel()
    # TFLite int8 has the same scope; Core ML W8 reaches beyond it (Linear layers, hybrid stages).
    assert [u.name for u in quant_units(deploy, "tflite", "int8")] == [u.name for u in units]
    coreml = [u.name for u in quant_units(deploy, "coreml", "w8")]
    assert "encoder.hybrid.0.down.0" in coreml and "fa.mlp.0" in coreml
    assert quant_units(deploy, "executorch", "fp32") == []


def test_core_ml_w8_rounding_follows_coremltools():
    from coremltools.optimize._utils import quantize_weight_by_dtype
    from coremltools.converters.mil.mil import types

    w = torch.randn(6, 4, 3, 3) * torch.linspace(0.01, 3, 6)[:, None, None, None]
    got = fake_quantize_weight(w).numpy()
    w16 = w.numpy().astype(np.float16)
    q, scale, _ = quantize_weight_by_dtype(w16, axes=(1, 2, 3), dtype=types.int8,
                                           quantization_mode="LINEAR_SYMMETRIC")
    want = (q.astype(np.float16) * scale.astype(np.float16)[:, None, None, None]).astype(np.float32)
    assert np.array_equal(got, want)  # Core ML dequantizes to fp16: q * scale in fp16
    assert np.abs(q).max() <= 127


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        y = torch.relu(self.conv2(torch.relu(self.conv1(y))))
        z = self.head(y.mean(dim=(2, 3)).reshape(b, t, 8).mean(dim=1))
        return z[:, 0], z[:, 1], z[:, 2], z[:, :2], z[:, 1:]


def _weight_dqs(gm) -> int:
    return sum(1 for n in gm.graph.nodes if "dequantize_per_channel" in str(n.target))


def test_pt2e_simulation_keep_float_and_only():
    torch.manual_seed(0)
    toy = Toy().eval()
    clips = np.random.default_rng(0).standard_normal((4, 1, 2, 8, 8)).astype(np.float32)
    assert _weight_dqs(simulate(toy, "executorch", "int8", clips)) == 2
    assert _weight_dqs(simulate(toy, "executorch", "int8", clips, keep_float=["conv1"])) == 1
    assert _weight_dqs(simulate(toy, "tflite", "int8", clips, only=["conv2"])) == 1
    with pytest.raises(EchoEdgeError, match="calibration clips"):
        simulate(toy, "executorch", "int8", None)


def test_core_ml_w8_simulation_copies_and_respects_keep_float():
    torch.manual_seed(0)
    toy = Toy().eval()
    toy.conv2.weight.data.mul_(1.37)  # conv2: 288 weights (> 256), conv1: 36 (below the threshold)
    before = toy.conv2.weight.detach().clone()
    assert [u.name for u in quant_units(toy, "coreml", "w8")] == ["conv2"]
    sim = simulate(toy, "coreml", "w8")
    assert torch.equal(toy.conv2.weight, before)  # the deploy form is never touched
    assert not torch.equal(sim.conv2.weight, before) and torch.equal(sim.conv1.weight, toy.conv1.weight)
    kept = simulate(toy, "coreml", "w8", keep_float=["conv2"])
    assert torch.equal(kept.conv2.weight, before)


def test_float_and_unknown_formats():
    toy = Toy().eval()
    assert simulate(toy, "tflite", "fp16") is toy
    assert ("executorch", "int8") in simulated_formats()
    assert "exact recipe" in fidelity("executorch", "int8")
    with pytest.raises(EchoEdgeError, match="no quantization simulation for tflite int8-full"):
        fidelity("tflite", "int8-full")


def test_calibrating_once_gives_the_same_simulation():
    """observer_stats (whole recipe, once) fills a keep-float configuration's observers exactly as
    its own calibration would: PT2E observers see float activations."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from echoedge.convert.executorch_quantizer import quantizer_for
    from echoedge.quantdebug.observers import load_observer_stats, observer_stats

    torch.manual_seed(0)
    toy = Toy().eval()
    clips = np.random.default_rng(0).standard_normal((4, 1, 2, 8, 8)).astype(np.float32)
    stats = observer_stats(toy, clips)
    x = torch.from_numpy(clips[1:2])
    for keep in ([], ["conv1"], ["conv2"]):
        with torch.no_grad():
            own = simulate(toy, "executorch", "int8", clips, keep_float=keep)(x)
            shared = simulate(toy, "executorch", "int8", clips, keep_float=keep, stats=stats)(x)
        assert all(torch.equal(a, b) for a, b in zip(own, shared)), keep
    prepared = prepare_pt2e(torch.export.export(toy, (x,)).module(), quantizer_for(toy)[0])
    assert load_observer_stats(prepared, stats)  # really filled, not calibrated again
    assert not load_observer_stats(prepared, {})


def test_load_videos_with_a_shift_gives_the_stress_suites_frames(synth_root, tmp_path):
    from echoedge.data.clipspec import ClipSpec
    from echoedge.data.echonet import EchoNet
    from echoedge.data.shifts import apply_shift
    from echoedge.quantdebug.simulate import load_videos

    spec = ClipSpec(frames=8, period=1, height=64, width=64, mean=40.0, std=45.0)
    clean = load_videos(synth_root, spec, "VAL", 2, 1, tmp_path)
    blurred = load_videos(synth_root, spec, "VAL", 2, 1, tmp_path, shift="blur", shift_level="moderate", seed=3)
    rec = clean.records[0]
    raw = EchoNet(synth_root).load_frames(rec)
    np.testing.assert_array_equal(clean.frames(rec), raw)
    want = apply_shift(raw, "blur", "moderate", seed=3, video=rec.file_name, fps=rec.fps).frames
    np.testing.assert_array_equal(blurred.frames(blurred.records[0]), want)
    with pytest.raises(EchoEdgeError, match="unknown shift 'haze'"):
        load_videos(synth_root, spec, "VAL", 2, 1, tmp_path, shift="haze")


def test_whole_recipe_simulation_quantizes_every_layer_and_takes_the_shift_out(tiny):
    """debug-quant simulates an artefact's own int8 recipe: the whole recipe's graph holds more int8
    weights than the default's (E2FA's Linears among them) and, as the ExecuTorch converter does,
    has its output shift subtracted from E2FA's out_mean, measured on the same clips; the deploy
    form keeps its own offset."""
    from echoedge.convert.artefact import OUTPUT_NAMES
    from echoedge.convert.output_shift import measure_shift, reference_outputs

    from echoedge.model.config import get_config

    _, deploy = tiny
    cfg = get_config("tiny")
    shape = (3, cfg.channels, cfg.frames, cfg.height, cfg.width)
    clips = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    before = deploy.fa.out_mean.detach().clone()
    scoped = simulate(deploy, "executorch", "int8", clips)
    whole = simulate(deploy, "executorch", "int8", clips, recipe="whole")
    assert _weight_dqs(whole) > _weight_dqs(scoped)
    assert any("fa" in str(n.args[0]) for n in whole.graph.nodes
               if "dequantize_per_channel" in str(n.target) and n.args)
    assert torch.equal(deploy.fa.out_mean, before) and torch.equal(scoped.get_buffer("fa.out_mean"), before)
    # What was subtracted is the shift the uncorrected graph shows on the clips: after it, none left.
    left = measure_shift(reference_outputs(whole, clips), reference_outputs(deploy, clips), OUTPUT_NAMES[:3], "")
    assert not torch.equal(whole.get_buffer("fa.out_mean"), before)
    assert np.abs(left.shift).max() <= 1e-3 * (1 + np.abs(before.numpy()).max())

