"""What `train` needs to know about the network it trains, one entry per model family.

`train` owns the loop (data, schedule, validation, checkpoints, resume, logs); a Trainee says how
to build the network, what it eats, how its loss is computed and how its checkpoint is written.
Echo-E3Net trains on EF, volumes and landmarks (model.loss); EchoNet-Dynamic's video ResNets
train on EF alone with a mean squared error, as EchoNet-Dynamic trains them (echonet/utils/
video.py), their EF head's bias started at the TRAIN EF mean so the first step is the always-mean
baseline, not a 50-point error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from echoedge.data.clipspec import ECHONET_DYNAMIC_SPEC, ClipSpec
from echoedge.errors import EchoEdgeError

# Mean squared EF error is divided by this so the loss starts near 1 (EF SD ~ 10 points).
EF_LOSS_SCALE = 100.0


@dataclass
class Trainee:
    """A network ready to train, and the facts `train` writes with it."""

    model: str  # registry name
    config_name: str  # what a resumed run must match: the e3net preset, or "<arch>-w<width>"
    net: Any  # nn.Module; forward returns a tuple, EF (B,) first
    spec: ClipSpec
    loss: Callable[[Sequence[Any], Mapping[str, Any]], tuple[Any, dict[str, float]]]
    save: Callable[..., Path]  # (path, fingerprint, metrics, meta, train_ef, train_state=None)


def check_frames(model: str, frames: int | None, period: int | None) -> None:
    """--frames/--period choose a video ResNet's clip; Echo-E3Net's frames are its config's."""
    if model == "e3net" and (frames is not None or period is not None):
        raise EchoEdgeError("--frames/--period apply to the video ResNets; Echo-E3Net's clip "
                            "comes from --config")
    for name, v in (("--frames", frames), ("--period", period)):
        if v is not None and v < 1:
            raise EchoEdgeError(f"{name} must be at least 1, got {v}")


def make_trainee(model: str, config: str, mean: float, std: float, init: Any = None,
                 frames: int | None = None, period: int | None = None,
                 train_ef_mean: float | None = None, loss_weights: Mapping[str, float] | None = None
                 ) -> Trainee:
    """The network named `model` at `config` ("paper"/"tiny" for Echo-E3Net; for the video
    ResNets "tiny" is 1/8 width, anything else torchvision's), input normalised by mean/std.
    `init` is a loaded checkpoint (Checkpoint or VideoCheckpoint) whose weights it starts from."""
    check_frames(model, frames, period)
    if model == "e3net":
        return _e3net(config, mean, std, init, loss_weights or {})
    return _video_resnet(model, config, mean, std, init, frames, period, train_ef_mean)


def _e3net(config: str, mean: float, std: float, init: Any,
           loss_weights: Mapping[str, float]) -> Trainee:
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.loss import LossWeights, e3net_loss
    from echoedge.model.network import EchoE3Net

    cfg = get_config(config)
    spec = clip_spec_for(cfg, mean=mean, std=std)
    net = EchoE3Net(cfg)
    if init is not None:
        net.load_state_dict(init.model.state_dict())
    weights = LossWeights(**loss_weights)

    def loss(outputs: Sequence[Any], batch: Mapping[str, Any]) -> tuple[Any, dict[str, float]]:
        return e3net_loss(outputs, batch, weights, spec_hw=(spec.height, spec.width))

    def save(path: Path, fingerprint: str, metrics: dict, meta: dict, train_ef: tuple[float, int],
             train_state: dict | None = None) -> Path:
        return save_checkpoint(path, net, cfg, spec, fingerprint, metrics, meta,
                               train_ef=train_ef, train_state=train_state)

    return Trainee("e3net", cfg.name, net, spec, loss, save)


def _video_resnet(arch: str, config: str, mean: float, std: float, init: Any,
                  frames: int | None, period: int | None, train_ef_mean: float | None) -> Trainee:
    import torch

    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.video_checkpoint import VideoResNetConfig
    from echoedge.model.video_resnet import EFOutputs, build_video_resnet

    if init is not None:
        width, base = init.base_width, init.spec
    else:
        width, base = video_width(config), ECHONET_DYNAMIC_SPEC
    d = base.to_dict()
    d.update(mean=float(mean), std=float(std))
    if frames is not None:
        d["frames"] = int(frames)
    if period is not None:
        d["period"] = int(period)
    spec = ClipSpec.from_dict(d)
    inner = build_video_resnet(arch, base_width=width)
    if init is not None:
        inner.load_state_dict(init.model.state_dict())
    elif train_ef_mean is not None:
        with torch.no_grad():
            inner.fc.bias.fill_(float(train_ef_mean))
    net = EFOutputs(inner)
    cfg = VideoResNetConfig(arch, width)

    def loss(outputs: Sequence[Any], batch: Mapping[str, Any]) -> tuple[Any, dict[str, float]]:
        err = outputs[0].float() - batch["ef"]
        total = (err ** 2).mean() / EF_LOSS_SCALE
        return total, {"total": float(total.detach()), "ef_mae": float(err.detach().abs().mean())}

    def save(path: Path, fingerprint: str, metrics: dict, meta: dict, train_ef: tuple[float, int],
             train_state: dict | None = None) -> Path:
        # The inner network's names are torchvision's, so the file loads wherever an
        # EchoNet-Dynamic checkpoint does.
        return save_checkpoint(path, inner, cfg, spec, fingerprint, metrics, meta,
                               train_ef=train_ef, train_state=train_state)

    return Trainee(arch, cfg.name, net, spec, loss, save)


def video_width(config: str) -> int:
    """A video ResNet's base width for --config: paper / full = torchvision's 64, tiny = 8,
    wN = N (a narrower network of the same layout: w16 has 1.96 M parameters to 31.3 M)."""
    if config in ("paper", "full"):
        return 64
    if config == "tiny":
        return 8
    if config.startswith("w") and config[1:].isdigit() and int(config[1:]) >= 1:
        return int(config[1:])
    raise EchoEdgeError(f"unknown video ResNet size '{config}' (choose from full | tiny | wN, "
                        "e.g. w16 for base width 16)")


def load_init(model: str, path: str | Path, config: str) -> Any:
    """The checkpoint --init names, of the model being trained (one line for any other)."""
    if model == "e3net":
        from echoedge.model.checkpoint import load_checkpoint

        return load_checkpoint(Path(path), expect_config=config)
    from echoedge.model.video_checkpoint import load_video_checkpoint

    return load_video_checkpoint(path, arch=model)


__all__ = ["EF_LOSS_SCALE", "Trainee", "check_frames", "load_init", "make_trainee", "video_width"]
