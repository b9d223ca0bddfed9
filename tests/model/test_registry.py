"""The model registry a `--model` option resolves: names, ClipSpecs, builders and loaders."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from echoedge.data.clipspec import ECHONET_DYNAMIC_SPEC
from echoedge.errors import CheckpointError, EchoEdgeError
from echoedge.model.checkpoint import SHIPPED
from echoedge.model.network import OUTPUT_NAMES
from echoedge.model.registry import MODEL_NAMES, MODELS, build, get_model_entry, load
from echoedge.model.video_resnet import ARCHITECTURES, build_video_resnet


def test_names_are_e3net_and_the_video_resnets():
    assert MODEL_NAMES == ("e3net", "r2plus1d_18", "r3d_18", "mc3_18")
    assert tuple(n for n in MODEL_NAMES if MODELS[n].family == "video_resnet") == ARCHITECTURES
    assert MODELS["e3net"].outputs == OUTPUT_NAMES


def test_video_resnets_eat_echonet_dynamics_clips():
    spec = get_model_entry("r2plus1d_18").spec
    assert spec is ECHONET_DYNAMIC_SPEC
    assert (spec.channels, spec.frames, spec.period, spec.height, spec.width) == (3, 32, 2, 112, 112)
    assert (spec.mean, spec.std) == (32.5, 50.0)
    assert get_model_entry("e3net").spec.channels == 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_are_the_full_size_models(name):
    entry = get_model_entry(name)
    with torch.device("meta"):
        model = build(name).model
    assert sum(p.numel() for p in model.parameters()) == entry.parameters


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_builds_run_on_their_clip_shape(name):
    built = build(name, size="tiny", seed=0)
    spec = built.spec
    x = torch.zeros(1, spec.channels, 8 if name != "e3net" else spec.frames,
                    32 if name != "e3net" else spec.height, 32 if name != "e3net" else spec.width)
    with torch.no_grad():
        out = built.model(x)
    ef = out[0] if isinstance(out, tuple) else out
    assert ef.shape[0] == 1 and not built.model.training
    again = build(name, size="tiny", seed=0).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in built.model.state_dict().items())


def test_load_reads_each_familys_checkpoints(tmp_path):
    torch.manual_seed(1)
    net = build_video_resnet("r3d_18", base_width=4).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "r3d.pt")
    loaded = load("r3d_18", tmp_path / "r3d.pt")
    assert loaded.entry.name == "r3d_18" and loaded.spec.channels == 3 and len(loaded.sha256) == 64
    e3 = load("e3net", SHIPPED)
    assert e3.entry.name == "e3net" and e3.spec.channels == 1
    with pytest.raises(CheckpointError, match="weights do not fit mc3_18: layer2.0.conv1.0.weight"):
        load("mc3_18", tmp_path / "r3d.pt")


def test_unknown_names_are_one_line():
    with pytest.raises(EchoEdgeError, match=r"unknown model 'resnet' \(choose from e3net \| "
                                            r"r2plus1d_18 \| r3d_18 \| mc3_18\)"):
        get_model_entry("resnet")
    with pytest.raises(EchoEdgeError, match="unknown model size"):
        build("e3net", size="huge")


def test_registry_imports_without_torch():
    code = ("import sys; import echoedge.model.registry as r; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(r.MODEL_NAMES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4"


def test_cli_model_choices_are_the_registry_names():
    from echoedge.commands.common import MODEL_CHOICES

    assert MODEL_CHOICES == MODEL_NAMES


def test_runnable_returns_the_outputs_tuple_with_ef_first(tmp_path):
    from echoedge.model.registry import open_model

    torch.manual_seed(2)
    net = build_video_resnet("mc3_18", base_width=4).eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "mc3.pt")
    loaded = open_model("mc3_18", tmp_path / "mc3.pt")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        (ef,) = loaded.runnable(x)
        assert torch.equal(ef, net(x)[:, 0])  # (B,), as Echo-E3Net's EF
    assert loaded.train_ef_mean is None and not loaded.produces("edv")
    shipped = open_model(None, None)
    assert shipped.entry.name == "e3net" and shipped.runnable is shipped.model
    assert shipped.produces("ed_landmarks")
    with pytest.raises(CheckpointError, match="--model r2plus1d_18 needs --checkpoint"):
        open_model("r2plus1d_18", None)
    with pytest.raises(CheckpointError, match="it is a mc3_18 state dict: pass --model mc3_18"):
        open_model("e3net", tmp_path / "mc3.pt")
