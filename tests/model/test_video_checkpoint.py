"""Video ResNet checkpoints as EchoNet-Dynamic writes them load as is; others get one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from echoedge.errors import CheckpointError, DataError
from echoedge.model.checkpoint import SHIPPED
from echoedge.model.video_checkpoint import (
    CheckpointMismatchError, load_video_checkpoint, read_video_state,
)
from echoedge.model.video_resnet import build_video_resnet

WIDTH = 4  # every test model is 1/16 of torchvision's width: a few thousand parameters


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_video_resnet(arch, base_width=WIDTH)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():  # non-trivial statistics, so a wrong load shows in the output
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _echonet_save(model: nn.Module, path: Path) -> Path:
    """What EchoNet-Dynamic's training script writes: DataParallel keys inside a wrapper dict,
    with an optimizer state and its R^2 as a numpy float."""
    wrapped = nn.DataParallel(model)  # CPU-only: a plain wrapper that prefixes `module.`
    opt = torch.optim.SGD(wrapped.parameters(), lr=1e-4, momentum=0.9)
    torch.save({"epoch": 44, "state_dict": wrapped.state_dict(), "period": 2, "frames": 16,
                "best_loss": 18.25, "loss": 18.25, "r2": np.float64(0.79),
                "opt_dict": opt.state_dict()}, path)
    return path


def test_dataparallel_echonet_checkpoint_loads_as_is(tmp_path):
    model = _model("r2plus1d_18")
    path = _echonet_save(model, tmp_path / "best.pt")
    state, _ = read_video_state(path)
    assert next(iter(state)) == "stem.0.weight"
    ck = load_video_checkpoint(path)
    assert ck.arch == "r2plus1d_18" and ck.base_width == WIDTH and not ck.model.training
    assert _same_outputs(model, ck.model)
    assert (ck.spec.channels, ck.spec.frames, ck.spec.period) == (3, 16, 2)
    assert (ck.spec.height, ck.spec.width) == (112, 112)
    assert ck.meta["epoch"] == 44 and ck.meta["r2"] == pytest.approx(0.79)
    assert len(ck.sha256) == 64


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18"])
def test_bare_state_dict_is_told_apart_by_its_shapes(tmp_path, arch):
    model = _model(arch, seed=2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    ck = load_video_checkpoint(tmp_path / "w.pt")
    assert ck.arch == arch and _same_outputs(model, ck.model)
    assert ck.spec.frames == 32  # EchoNet-Dynamic's default where the file says nothing


def test_missing_num_batches_tracked_is_accepted(tmp_path):
    model = _model("mc3_18")
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"state_dict": state}, tmp_path / "old.pt")
    assert _same_outputs(model, load_video_checkpoint(tmp_path / "old.pt").model)


def _one_line(path: Path, arch: str | None = None) -> str:
    with pytest.raises(CheckpointError) as e:
        load_video_checkpoint(path, arch)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg


def test_a_reshaped_tensor_is_named(tmp_path):
    state = _model("r2plus1d_18").state_dict()
    right = tuple(state["layer2.0.conv1.0.3.weight"].shape)  # (8, 14, 3, 1, 1) at width 4: midplanes(4, 8)
    state["layer2.0.conv1.0.3.weight"] = torch.zeros(8, 9, 3, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as e:
        load_video_checkpoint(tmp_path / "bad.pt")
    assert isinstance(e.value, DataError) and isinstance(e.value, CheckpointError)
    assert right == (8, 14, 3, 1, 1)
    assert _one_line(tmp_path / "bad.pt") == (
        f"{tmp_path / 'bad.pt'}: weights fit none of r2plus1d_18, r3d_18, mc3_18; closest "
        f"r2plus1d_18: layer2.0.conv1.0.3.weight has shape (8, 9, 3, 1, 1) in the file, "
        f"(8, 14, 3, 1, 1) in the model")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    state = _model("r3d_18").state_dict()
    del state["layer3.1.conv2.1.running_var"]
    torch.save(state, tmp_path / "missing.pt")
    assert _one_line(tmp_path / "missing.pt").endswith(
        "closest r3d_18: layer3.1.conv2.1.running_var is missing from the file")
    state = _model("r3d_18").state_dict()
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    assert _one_line(tmp_path / "extra.pt").endswith(
        "head.weight is in the file but not in the model")


def test_the_asked_architecture_is_checked(tmp_path):
    torch.save(_model("r2plus1d_18").state_dict(), tmp_path / "r21d.pt")
    msg = _one_line(tmp_path / "r21d.pt", "r3d_18")
    assert "weights do not fit r3d_18: stem.0.weight has shape (3, 3, 1, 7, 7) in the file, " \
           "(4, 3, 3, 7, 7) in the model" in msg


def test_a_kinetics_classifier_head_is_refused(tmp_path):
    model = build_video_resnet("r3d_18", base_width=WIDTH, outputs=400)
    torch.save(model.state_dict(), tmp_path / "kinetics.pt")
    assert "fc.weight has 400 outputs; an EF model has 1" in _one_line(tmp_path / "kinetics.pt")


def test_an_echo_e3net_checkpoint_is_named_as_such():
    assert "an echo-edge Echo-E3Net checkpoint, not a video ResNet" in _one_line(SHIPPED)


def test_files_without_a_state_dict_say_what_they_hold(tmp_path):
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "odd.pt")
    assert "no state dict in the file (a dict with keys epoch, weights)" in \
        _one_line(tmp_path / "odd.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    assert "truncated or damaged zip archive" in _one_line(tmp_path / "cut.pt")
    assert _one_line(tmp_path / "none.pt").endswith("checkpoint not found")
