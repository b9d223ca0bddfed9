"""Error attribution: three EF figures on the same videos, terms that add up, calibration lookup.

A small 2D network with Echo-E3Net's I/O is converted to real ExecuTorch fp32 and int8 artefacts
(the int8 one calibrated on a real echo calibration set saved next to it, as `echo-edge export`
lays them out); the tiny synthetic dataset's VAL videos are the fixed videos.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")
from torch import nn  # noqa: E402

from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.quantdebug.attribution import (  # noqa: E402
    AttributionContext, attribute, attribution_table, decompose, find_calibration,
)
from echoedge.quantdebug.simulate import ef_per_video, load_videos, simulate  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)


class Toy2D(nn.Module):
    def __init__(self, k: int = 42) -> None:
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
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
        return z[:, 0], z[:, 1], z[:, 2], lm[:, 0], lm[:, 1]


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    m = Toy2D().eval()
    with torch.no_grad():  # EF-like outputs (~55 +- a few points) from the head directly
        m.head.weight.mul_(torch.tensor([[12.0], [35.0], [25.0]]))
        m.head.bias.copy_(torch.tensor([55.0, 90.0, 40.0]))
    return m


@pytest.fixture(scope="module")
def setup(synth_root, tmp_path_factory):
    from echoedge.calibration import build_calibration_set, save_calibration_set
    from echoedge.convert.executorch import export_executorch

    model = toy_model()
    root = tmp_path_factory.mktemp("att") / "artefacts"
    calib = build_calibration_set(synth_root, SPEC, "random", size=8, seed=0, progress=False)
    save_calibration_set(calib, root / "calibration")
    fp32 = export_executorch(model, SPEC, root / "executorch-fp32", "fp32", None, "d" * 64, progress=False)
    int8 = export_executorch(model, SPEC, root / "executorch-int8", "int8", calib, "d" * 64, progress=False)
    videos = load_videos(synth_root, SPEC, "VAL", videos=3, clips_per_video=2)
    ctx = AttributionContext(model, videos, ef_per_video(model, videos), "d" * 64)
    return model, calib, ctx, fp32, int8


@pytest.fixture(scope="module")
def att_int8(setup):
    model, calib, ctx, fp32, int8 = setup
    return attribute(int8, ctx)  # finds ../calibration by the manifest's calibration id


def test_terms_are_measured_on_the_same_videos_and_add_up(setup, att_int8):
    model, calib, ctx, fp32, int8 = setup
    a = att_int8
    assert a.videos == ctx.videos.names and len(a.ef_artefact) == len(a.ef_simulated) == len(a.videos) == 3
    ref, sim, art = (np.array(v) for v in (a.ef_reference, a.ef_simulated, a.ef_artefact))
    # Per video, signed: artefact - reference = quantization term + conversion term.
    assert np.allclose((sim - ref) + (art - sim), art - ref, atol=1e-12)
    assert a.bias_total == pytest.approx(a.bias_quantization + a.bias_conversion, abs=1e-12)
    assert a.total == pytest.approx(np.mean(np.abs(art - ref)))
    # Absolute terms: the triangle inequality, video by video and so in the mean.
    assert a.total <= a.quantization + a.conversion + 1e-12
    assert a.calibration_id == calib.id and a.format == "executorch" and a.precision == "int8"


def test_each_term_is_what_it_claims(setup, att_int8):
    """Recompute the artefact's EF through its runner and the simulation independently."""
    from echoedge.validate.runner import open_runner

    model, calib, ctx, fp32, int8 = setup
    with open_runner(int8) as r:
        art = ef_per_video(r, ctx.videos)
    sim = ef_per_video(simulate(model, "executorch", "int8", calib.clips), ctx.videos)
    assert np.array_equal(art, att_int8.ef_artefact)
    assert np.allclose(sim, att_int8.ef_simulated, atol=1e-6)
    assert att_int8.quantization > 0  # a real int8 simulation, not the float model
    assert att_int8.quantization == pytest.approx(np.mean(np.abs(sim - ctx.ef_reference)), abs=1e-6)


def test_the_artefacts_own_int8_recipe_is_simulated(setup, att_int8, tmp_path):
    """A whole-recipe file is attributed against the whole recipe's simulation, not the default's
    (which would book the recipes' difference as conversion/runtime); each says which it was."""
    import shutil

    from echoedge.convert.executorch import export_executorch

    model, calib, ctx, fp32, int8 = setup
    assert "[int8 recipe: conv-stages]" in att_int8.simulation
    root = tmp_path / "artefacts"
    shutil.copytree(int8.parent / "calibration", root / "calibration")
    whole = export_executorch(model, SPEC, root / "executorch-int8", "int8", calib, "d" * 64,
                              progress=False, recipe="whole")
    a = attribute(whole, ctx)
    assert "[int8 recipe: whole, output shift taken out as at conversion]" in a.simulation
    sim = ef_per_video(simulate(model, "executorch", "int8", calib.clips, recipe="whole"), ctx.videos)
    assert np.allclose(sim, a.ef_simulated, atol=1e-6)


def test_float_artefact_has_no_quantization_term(setup):
    model, calib, ctx, fp32, int8 = setup
    a = attribute(fp32, ctx)
    assert a.quantization == 0.0 and a.total == pytest.approx(a.conversion)
    assert a.total < 0.01  # fp32 .pte vs eager
    table = attribution_table([a])
    assert "executorch-fp32" in table and "executorch-xnnpack" in table


def test_missing_or_wrong_calibration_fails_clearly(setup, tmp_path):
    model, calib, ctx, fp32, int8 = setup
    with pytest.raises(EchoEdgeError, match="names calibration set abc.*not among"):
        find_calibration(tmp_path / "executorch-int8", "abc", [tmp_path])
    # The artefact folder itself given as where to look (`debug-quant ARTEFACT_DIR`): its
    # manifest.json is the artefact's, skipped; the sibling calibration/ is found.
    assert find_calibration(int8, calib.id, [int8]).id == calib.id
    other = type(calib)(calib.clips, {**calib.manifest, "seed": 99})
    with pytest.raises(EchoEdgeError, match="given"):
        attribute(int8, ctx, calibration=other)
    wrong = AttributionContext(model, ctx.videos, ctx.ef_reference, "e" * 64)
    with pytest.raises(EchoEdgeError, match="not the one being debugged"):
        attribute(fp32, wrong)


def test_decompose_refuses_mismatched_videos():
    with pytest.raises(EchoEdgeError, match="same videos"):
        decompose([1.0, 2.0], [1.0], [1.0, 2.0])
    d = decompose([50.0, 60.0], [50.5, 59.0], [51.0, 59.5])
    assert d["quantization"] == pytest.approx(0.75) and d["conversion"] == pytest.approx(0.5)
    assert d["total"] == pytest.approx(0.75) and d["bias_total"] == pytest.approx(0.25)


def test_sweeps_on_a_whole_recipe_artefact_say_which_recipe_they_keep_layers_float_on(tmp_path):
    from types import SimpleNamespace

    from echoedge.quantdebug.parts import scoped_note

    whole = SimpleNamespace(details={"quantization": {"recipe": {"name": "whole"}}})
    scoped = SimpleNamespace(details={"quantization": {"recipe": {"name": "conv-stages"}}})
    fp32 = SimpleNamespace(details={})
    dq: dict = {"notes": []}
    logged: list[str] = []
    scoped_note({tmp_path / "executorch-int8": whole, tmp_path / "tflite-int8": scoped,
                 tmp_path / "executorch-fp32": fp32}, dq, logged.append)
    assert len(dq["notes"]) == 1 and len(logged) == 1
    assert dq["notes"][0].startswith("executorch-int8: built with the whole int8 recipe")
    assert "on top of the conv-stages recipe" in dq["notes"][0]
