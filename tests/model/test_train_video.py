"""`train --model` for EchoNet-Dynamic's video ResNets: a tiny R(2+1)D-18 trains, its checkpoint
keeps torchvision's names and loads wherever an EchoNet-Dynamic file does, and --init fine-tunes
from one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from echoedge.cli import main as cli_main
from echoedge.errors import EchoEdgeError
from echoedge.model.registry import load
from echoedge.model.train import TrainConfig, train
from echoedge.model.video_checkpoint import load_video_checkpoint
from echoedge.model.video_resnet import build_video_resnet
from tests.model.test_train_eval import _tc as tiny_train_config


def _tc(data: Path, out: Path, **kw) -> TrainConfig:
    """test_train_eval's tiny run, for a 1/8-width R(2+1)D-18 on 4-frame clips."""
    base = dict(model="r2plus1d_18", frames=4, period=2, max_train_videos=4)
    base.update(kw)
    return tiny_train_config(data, out, **base)


@pytest.fixture(scope="module")
def video_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("train_video") / "run"
    return train(_tc(synth_root, out)), synth_root


def test_video_resnet_trains_and_its_checkpoint_loads_as_echonet_dynamic_layout(video_run):
    res, _ = video_run
    rows = list(csv.DictReader(open(res.out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["train_ef_mae"]) < 100 for r in rows)  # an EF error in points, not NaN
    vk = load_video_checkpoint(res.best)
    assert vk.arch == "r2plus1d_18" and vk.base_width == 8
    # The clip it was trained on travels with it: 4 frames, 3 channels, the TRAIN normalisation.
    assert (vk.spec.frames, vk.spec.period, vk.spec.channels) == (4, 2, 3)
    assert vk.spec.mean != 32.5
    assert vk.train_ef_mean is not None and 20 < vk.train_ef_mean < 80
    # The state dict inside has torchvision's names, nothing of the EFOutputs wrapper.
    payload = torch.load(res.best, map_location="cpu", weights_only=True)
    assert set(payload["state_dict"]) == set(build_video_resnet("r2plus1d_18", 8).state_dict())
    lm = load("r2plus1d_18", res.best)
    x = torch.randn(lm.spec.input_shape(1), generator=torch.Generator().manual_seed(0))
    assert lm.runnable(x)[0].shape == (1,)
    assert lm.train_ef_mean == vk.train_ef_mean


def test_video_resnet_head_starts_at_the_train_ef_mean(synth_root: Path, tmp_path: Path):
    """An untrained network predicts the TRAIN EF mean, so the first step starts from the
    always-mean baseline instead of a 50-point error."""
    from echoedge.model.trainee import make_trainee

    t = make_trainee("r2plus1d_18", "tiny", 30.0, 40.0, frames=4, train_ef_mean=57.25)
    assert float(t.net.net.fc.bias.detach()) == pytest.approx(57.25)


def test_resume_and_init_for_a_video_resnet(video_run, tmp_path: Path):
    res, data = video_run
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "last.pt").write_bytes(res.last.read_bytes())
    assert train(_tc(data, out, resume=True)).epochs == 2
    ft = train(_tc(data, tmp_path / "ft", init=str(res.best), epochs=1, frames=None, period=None))
    vk = load_video_checkpoint(ft.best)
    # Fine-tuning keeps the input contract of the weights it starts from.
    assert vk.spec == load_video_checkpoint(res.best).spec


def test_train_model_errors_are_one_line(synth_root: Path, tmp_path: Path, video_run, capsys):
    res, data = video_run
    with pytest.raises(EchoEdgeError, match="--frames/--period apply to the video ResNets"):
        train(_tc(data, tmp_path / "a", model="e3net"))
    # An Echo-E3Net checkpoint is not a video ResNet to start from.
    from echoedge.model.checkpoint import SHIPPED

    rc = cli_main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--model", "r3d_18",
                   "--init", str(SHIPPED), "--epochs", "1", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "not a video ResNet" in err and len(err.strip().splitlines()) == 1
    # A r2plus1d_18 file is not a r3d_18 one.
    rc = cli_main(["train", "--data", str(data), "--out", str(tmp_path / "c"), "--model", "r3d_18",
                   "--init", str(res.best), "--epochs", "1", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "do not fit r3d_18" in err


def test_video_resnet_sizes():
    from echoedge.model.trainee import video_width

    assert [video_width(c) for c in ("paper", "full", "tiny", "w16")] == [64, 64, 8, 16]
    with pytest.raises(EchoEdgeError, match="unknown video ResNet size 'huge'"):
        video_width("huge")
