"""Per-layer sensitivity: a layer made deliberately fragile is ranked first, in both modes.

A small 2D network with Echo-E3Net's input/output layout: conv1 -> ReLU -> conv2 -> ReLU -> conv3,
pooled into the EF head. conv2 gets one huge weight per output channel, so per-channel int8 (step =
max|w| / 127) rounds every other weight of the channel to a few steps: int8 wrecks that layer and
only that layer. Videos: the session's tiny synthetic set (3 VAL videos, 1 clip each).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")

from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.quantdebug.sensitivity import (  # noqa: E402
    sensitivity_plot, sensitivity_sweep, sensitivity_table,
)
from echoedge.quantdebug.simulate import ef_per_video, load_videos, quant_units  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)


@pytest.fixture(scope="module")
def setup(synth_root, fragile_model):
    model = fragile_model()
    videos = load_videos(synth_root, SPEC, "VAL", videos=3, clips_per_video=1)
    ref = ef_per_video(model, videos)
    clips = np.random.default_rng(1).standard_normal((8, *SPEC.input_shape(1)[1:])).astype(np.float32)
    return model, videos, ref, clips


@pytest.fixture(scope="module")
def all_but(setup):
    model, videos, ref, clips = setup
    return sensitivity_sweep(model, videos, clips, "executorch", "int8", "all-but", ef_reference=ref)


def test_units_of_a_plain_model_are_its_convs(setup):
    assert [u.name for u in quant_units(setup[0])] == ["conv1", "conv2", "conv3"]


def test_all_but_sweep_ranks_the_fragile_layer_first(all_but):
    r = all_but
    assert r.ranking()[0] == "conv2"
    top, rest = r.units[0], r.units[1:]
    # Keeping conv2 float wins back most of the error; the others barely matter.
    assert top.effect > 0.5 * r.baseline
    assert all(u.effect < 0.5 * top.effect for u in rest)
    assert r.evaluations == 4 and r.wall_s > 0 and r.videos and r.calibration_clips == 8
    assert "conv2" in sensitivity_table(r).splitlines()[2]


def test_only_sweep_ranks_the_fragile_layer_first(setup):
    model, videos, ref, clips = setup
    r = sensitivity_sweep(model, videos, clips, "coreml", "w8", "only", ef_reference=ref)
    # Core ML W8 units: weights above coremltools' threshold (not conv1's 72; the lm Linear too).
    assert r.ranking()[0] == "conv2" and set(r.ranking()) == {"conv2", "conv3", "lm"}
    assert r.units[0].effect > 3 * r.units[1].effect


def test_plot_is_a_png(all_but, tmp_path):
    out = sensitivity_plot(all_but, tmp_path / "s.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_mode_and_unit_fail_clearly(setup):
    model, videos, ref, clips = setup
    with pytest.raises(EchoEdgeError, match="mode"):
        sensitivity_sweep(model, videos, clips, mode="sideways", ef_reference=ref)
    with pytest.raises(EchoEdgeError, match="unknown units nope"):
        sensitivity_sweep(model, videos, clips, units=["nope"], ef_reference=ref)
