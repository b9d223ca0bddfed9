"""Echo-E3Net: budgets, shapes, determinism, and the rules that keep mobile backends reachable."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, ShapeError
from echoedge.model.config import (
    PRESETS, E3NetConfig, check_clip_spec, clip_spec_for, get_config,
)
from echoedge.model.network import (
    OUTPUT_NAMES, EchoE3Net, build_model, check_input, count_parameters,
)

PAPER_PARAMS = (1.463e6, 1.617e6)  # 1.54 M +- 5 %


@pytest.fixture(scope="module")
def tiny_export():
    model = build_model("tiny").eval()
    return torch.export.export(model, (torch.randn(model.cfg.input_shape(1)),))


def test_paper_parameter_budget():
    with torch.device("meta"):
        model = build_model("paper")
    n = count_parameters(model)
    assert PAPER_PARAMS[0] <= n <= PAPER_PARAMS[1], n


def test_tiny_parameter_count_is_small():
    assert 10_000 <= count_parameters(build_model("tiny")) <= 80_000


def test_paper_forward_shapes_on_cpu():
    torch.manual_seed(0)
    model = build_model("paper").eval()
    x = torch.randn(model.cfg.input_shape(1))
    check_input(x, model.cfg)
    with torch.inference_mode():
        out = model(x)
    assert [tuple(o.shape) for o in out] == [(1,), (1,), (1,), (1, 42, 2), (1, 42, 2)]
    assert all(torch.isfinite(o).all() for o in out)


def test_tiny_forward_backward_shapes_and_ranges():
    torch.manual_seed(1)
    model = build_model("tiny").train()
    x = torch.randn(model.cfg.input_shape(2))
    out = model(x)
    assert len(out) == len(OUTPUT_NAMES) == 5
    ef, edv, esv, ed, es = out
    assert ef.shape == edv.shape == esv.shape == (2,)
    assert ed.shape == es.shape == (2, model.cfg.num_landmarks, 2)
    for lm in (ed, es):
        assert lm.min() >= 0.0 and lm.max() <= 1.0
    sum(o.mean() for o in out).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} is unused"
        assert torch.isfinite(p.grad).all(), name


def test_tiny_outputs_are_scaled_around_the_configured_means():
    torch.manual_seed(2)
    model = build_model("tiny").eval()
    with torch.inference_mode():
        ef, edv, esv, _, _ = model(torch.randn(model.cfg.input_shape(2)))
    cfg = model.cfg
    # A fresh head outputs small z, so values sit within a few scales of the means.
    assert (ef - cfg.ef_mean).abs().max() < 5 * cfg.ef_scale
    assert (edv - cfg.edv_mean).abs().max() < 5 * cfg.edv_scale
    assert (esv - cfg.esv_mean).abs().max() < 5 * cfg.esv_scale


def test_tiny_is_deterministic_with_a_seed():
    x = torch.randn(get_config("tiny").input_shape(2))
    outs, states = [], []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("tiny").eval()
        states.append(model.state_dict())
        with torch.inference_mode():
            outs.append(model(x))
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def _conv_like(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d)):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 3
            s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 3
            p = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 3
            d = getattr(m, "dilation", 1)
            d = d if isinstance(d, tuple) else (d,) * 3
            yield name, m, k, s, p, d


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_temporal_downsampling_never_overlaps(preset):
    with torch.device("meta"):
        model = build_model(preset)
    seen = 0
    for name, m, k, s, p, d in _conv_like(model):
        seen += 1
        if s[0] != 1:
            assert k[0] == s[0] and p[0] == 0, f"{name}: temporal kernel {k[0]} stride {s[0]}"
        else:
            assert k[0] % 2 == 1 and p[0] == d[0] * (k[0] // 2), f"{name}: not 'same' in time"
        for axis in (1, 2):
            if s[axis] > 1:
                assert k[axis] == s[axis] or (k[axis] % 2 == 1 and p[axis] == k[axis] // 2), name
    assert seen > 10


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_stage_strides_divide_the_input_exactly(preset):
    cfg = get_config(preset)
    size = (cfg.frames, cfg.height, cfg.width)
    for stride, shape in zip(cfg.stage_strides(), cfg.stage_shapes()):
        assert all(n % st == 0 for n, st in zip(size, stride))
        size = tuple(n // st for n, st in zip(size, stride))
        assert size == shape


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_no_erf_gelu_no_instance_norm_no_adaptive_pool_modules(preset):
    with torch.device("meta"):
        model = build_model(preset)
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(m.approximate == "tanh" for m in gelus)
    banned = (nn.InstanceNorm3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d, nn.MultiheadAttention)
    assert not [m for m in model.modules() if isinstance(m, banned)]


def test_tiny_exports_with_only_backend_friendly_ops(tiny_export):
    targets = []
    for node in tiny_export.graph.nodes:
        if node.op != "call_function":
            continue
        t = str(node.target)
        targets.append(t)
        if "gelu" in t:
            assert node.kwargs.get("approximate") == "tanh", node.format_node()
        if t.startswith("aten.slice"):
            step = node.args[4] if len(node.args) > 4 else 1
            assert step == 1, f"strided slice: {node.format_node()}"
    joined = " ".join(targets)
    for bad in ("scaled_dot_product", "pad", "adaptive", "instance_norm", "deform", "erf",
                "var", "std", "normalize", "linalg"):
        assert bad not in joined, bad
    assert "aten.bmm.default" in targets and "aten.softmax.int" in targets


def test_tiny_export_matches_eager(tiny_export):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    model.load_state_dict(tiny_export.state_dict)
    x = torch.randn(model.cfg.input_shape(1))
    with torch.inference_mode():
        eager = model(x)
        exported = tiny_export.module()(x)
    for a, b in zip(eager, exported):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_round_trips_through_json(preset):
    cfg = get_config(preset)
    back = E3NetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert isinstance(back.cnn_strides[0], tuple)


def test_config_from_dict_rejects_unknown_and_missing_keys():
    d = get_config("tiny").to_dict()
    with pytest.raises(EchoEdgeError, match="unknown keys: bogus"):
        E3NetConfig.from_dict({**d, "bogus": 1})
    d.pop("frames")
    with pytest.raises(EchoEdgeError, match="missing keys: frames"):
        E3NetConfig.from_dict(d)


def test_get_config_unknown_name_lists_presets():
    with pytest.raises(EchoEdgeError, match="paper.*tiny"):
        get_config("huge")
    assert get_config("paper").name == "paper"


def test_config_rejects_strides_that_do_not_divide():
    with pytest.raises(EchoEdgeError, match="does not divide"):
        get_config("paper").replace(hybrid_strides=((2, 2, 2), (2, 2, 2), (2, 2, 2)))
    with pytest.raises(EchoEdgeError, match="activation"):
        get_config("paper").replace(activation="gelu")


def test_clip_spec_for_and_check_clip_spec():
    tiny = get_config("tiny")
    spec = clip_spec_for(tiny, mean=30.0, std=45.0)
    assert spec.input_shape(2) == tiny.input_shape(2)
    assert (spec.mean, spec.std, spec.period) == (30.0, 45.0, 2)
    check_clip_spec(tiny, spec)
    check_clip_spec(get_config("paper"), ClipSpec())
    with pytest.raises(EchoEdgeError, match="frames: model 16 vs clip 32.*height.*width"):
        check_clip_spec(tiny, ClipSpec())


def test_check_input_raises_shape_error_naming_expected_and_got():
    cfg = get_config("tiny")
    check_input(torch.zeros(cfg.input_shape(3)), cfg)
    with pytest.raises(ShapeError, match=r"\(B, 1, 16, 64, 64\) float32.*\(1, 1, 32, 64, 64\)"):
        check_input(torch.zeros(1, 1, 32, 64, 64), cfg)
    with pytest.raises(ShapeError, match="float64"):
        check_input(torch.zeros(cfg.input_shape(1), dtype=torch.float64), cfg)
    with pytest.raises(ShapeError):
        check_input(torch.zeros(1, 16, 64, 64), cfg)
    with pytest.raises(ShapeError, match="ndarray"):
        import numpy as np
        check_input(np.zeros(cfg.input_shape(1)), cfg)


def test_build_model_accepts_config_or_name():
    cfg = get_config("tiny")
    assert isinstance(build_model(cfg), EchoE3Net)
    assert build_model("tiny").cfg == cfg
