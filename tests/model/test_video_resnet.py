"""EchoNet-Dynamic's video ResNets: torchvision's names and shapes, built without torchvision."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from echoedge.errors import EchoEdgeError
from echoedge.model.video_resnet import (
    ARCHITECTURES, EF_BIAS_INIT, build_video_resnet, midplanes, r2plus1d_18,
)

FROZEN = Path(__file__).parent / "frozen" / "torchvision_video_resnet18_keys.txt"


def _frozen_keys() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    arch = None
    for line in FROZEN.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            arch = line.strip("[]")
            out[arch] = []
            continue
        name, _, shape = line.partition(" ")
        out[arch].append((name, tuple(int(s) for s in shape.split(",") if s)))
    return out


def _layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_full_width_state_dict_equals_torchvision(arch):
    with torch.device("meta"):  # names and shapes only: no 30 M random draws
        model = build_video_resnet(arch)
    frozen = _frozen_keys()[arch]
    mine = _layout(model)
    assert [k for k, _ in mine] == [k for k, _ in frozen]
    assert mine == frozen


def test_r2plus1d_18_has_echonets_parameter_count():
    with torch.device("meta"):
        model = r2plus1d_18()
    n = sum(p.numel() for p in model.parameters())
    assert n == 31_300_638  # 31.3 M, torchvision's r2plus1d_18 with fc 512 -> 1
    assert model.fc.out_features == 1 and model.stem[0].out_channels == 45


def test_midplanes_is_torchvisions_formula():
    # layer2's first block: 64 -> 128, and its second: 128 -> 128.
    assert midplanes(64, 128) == 230 and midplanes(128, 128) == 288
    assert midplanes(64, 64) == 144


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scaled_down_model_builds_and_runs(arch):
    torch.manual_seed(0)
    model = build_video_resnet(arch, base_width=8).eval()
    assert model.layer4[0].conv2[1].num_features == 64
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    assert model.fc.bias.item() == pytest.approx(EF_BIAS_INIT)


def test_builders_are_reproducible_under_a_seed():
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(build_video_resnet("mc3_18", base_width=4).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unknown_architecture_is_one_line():
    with pytest.raises(EchoEdgeError, match="unknown video ResNet 'resnet50'.*r2plus1d_18"):
        build_video_resnet("resnet50")


def test_no_torchvision_import():
    build_video_resnet("r3d_18", base_width=2)
    assert "torchvision" not in sys.modules
