"""The EF models a `--model` option can name: Echo-E3Net and EchoNet-Dynamic's video ResNets.

One entry per name says what the model eats (its default ClipSpec), what it returns, how to
build a fresh one and how to load a checkpoint of it; commands resolve `--model NAME` here and
need no per-model branches. Echo-E3Net's ClipSpec comes from its config (1 grey channel); the
video ResNets eat EchoNet-Dynamic's (3 channels, 32 frames every 2nd, 112 x 112, its mean/sd).

Kept free of torch at import (the CLI imports it to list the names): builders and loaders
import their modules when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.data.clipspec import ECHONET_DYNAMIC_SPEC, ClipSpec
from echoedge.errors import CheckpointError, EchoEdgeError
from echoedge.model.config import clip_spec_for, get_config

DEFAULT_MODEL = "e3net"
VIDEO_RESNETS = ("r2plus1d_18", "r3d_18", "mc3_18")  # = video_resnet.ARCHITECTURES
E3NET_OUTPUTS = ("ef", "edv", "esv", "ed_landmarks", "es_landmarks")  # = network.OUTPUT_NAMES


@dataclass(frozen=True)
class ModelEntry:
    """What a model name stands for; plain data, safe to print or put in a manifest."""

    name: str
    family: str  # "e3net" | "video_resnet"
    description: str
    spec: ClipSpec  # the input it eats by default
    outputs: tuple[str, ...]  # forward's outputs, in order; "ef" is in %
    ef_shape: str  # how forward returns EF
    parameters: int  # at full size (the paper preset / torchvision's width)


@dataclass
class LoadedModel:
    """A model in eval mode with the facts every later stage writes into its manifests."""

    entry: ModelEntry
    model: Any  # nn.Module
    spec: ClipSpec
    path: Path | None = None
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # the Checkpoint / VideoCheckpoint it came from, when loaded
    _runnable: Any = field(default=None, repr=False)

    @property
    def runnable(self) -> Any:
        """The module every stage runs, converts and compares: forward returns the tuple of
        `entry.outputs` (EF first, shape (B,)); the video ResNets are wrapped (EFOutputs)."""
        if self._runnable is None:
            if self.entry.family == "e3net":
                self._runnable = self.model
            else:
                from echoedge.model.video_resnet import EFOutputs

                self._runnable = EFOutputs(self.model).eval()
        return self._runnable

    @property
    def train_ef_mean(self) -> float | None:
        """The training EF mean the checkpoint records (the always-mean baseline); EchoNet-
        Dynamic's files record none, so the dataset's TRAIN mean stands in (model.baseline)."""
        return getattr(self.source, "train_ef_mean", None)

    @property
    def train_ef_videos(self) -> int | None:
        return getattr(self.source, "train_ef_videos", None)

    def produces(self, output: str) -> bool:
        return output in self.entry.outputs


MODELS: dict[str, ModelEntry] = {
    "e3net": ModelEntry(
        "e3net", "e3net", "Echo-E3Net (this project's 1.5 M-parameter EF + landmark network)",
        clip_spec_for(get_config("paper")), E3NET_OUTPUTS, "(B,) tensor, first of a 5-tuple",
        1_550_703),
    "r2plus1d_18": ModelEntry(
        "r2plus1d_18", "video_resnet",
        "R(2+1)D-18, EchoNet-Dynamic's EF model (torchvision layout, fc 512 -> 1)",
        ECHONET_DYNAMIC_SPEC, ("ef",), "(B, 1) tensor, as torchvision's fc returns it",
        31_300_638),
    "r3d_18": ModelEntry(
        "r3d_18", "video_resnet", "R3D-18 (torchvision layout, fc 512 -> 1)",
        ECHONET_DYNAMIC_SPEC, ("ef",), "(B, 1) tensor, as torchvision's fc returns it",
        33_166_785),
    "mc3_18": ModelEntry(
        "mc3_18", "video_resnet", "MC3-18 (torchvision layout, fc 512 -> 1)",
        ECHONET_DYNAMIC_SPEC, ("ef",), "(B, 1) tensor, as torchvision's fc returns it",
        11_490_753),
}
MODEL_NAMES = tuple(MODELS)


def get_model_entry(name: str) -> ModelEntry:
    """The entry for `name`; one line listing the choices for any other name."""
    try:
        return MODELS[name]
    except KeyError:
        raise EchoEdgeError(f"unknown model '{name}' (choose from "
                            f"{' | '.join(MODEL_NAMES)})") from None


def build(name: str, size: str = "full", seed: int | None = None) -> LoadedModel:
    """A freshly initialised model in eval mode. `size` "full" is the paper preset / torchvision's
    width; "tiny" is Echo-E3Net's tiny preset or a video ResNet at 1/8 width (tests, smoke runs).
    With `seed`, the initial weights are the same on every call."""
    import torch

    entry = get_model_entry(name)
    if size not in ("full", "tiny"):
        raise EchoEdgeError(f"unknown model size '{size}' (choose from full | tiny)")
    if seed is not None:
        torch.manual_seed(seed)
    if entry.family == "e3net":
        from echoedge.model.network import build_model

        cfg = get_config("paper" if size == "full" else "tiny")
        return LoadedModel(entry, build_model(cfg).eval(), clip_spec_for(cfg))
    from echoedge.model.video_resnet import build_video_resnet

    model = build_video_resnet(name, base_width=64 if size == "full" else 8)
    return LoadedModel(entry, model.eval(), entry.spec)


def load(name: str, path: str | Path) -> LoadedModel:
    """A checkpoint of model `name` in eval mode (CheckpointError, one line, for any other file).

    Echo-E3Net reads echo-edge's own checkpoints; the video ResNets read EchoNet-Dynamic's (or
    any state dict of that layout, see echoedge.model.video_checkpoint).
    """
    entry = get_model_entry(name)
    if entry.family == "e3net":
        from echoedge.model.checkpoint import load_checkpoint

        try:
            ck = load_checkpoint(path)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{_video_hint(path)}") from None
        return LoadedModel(entry, ck.model, ck.spec, ck.path, ck.sha256, dict(ck.meta), ck)
    from echoedge.model.video_checkpoint import load_video_checkpoint

    vk = load_video_checkpoint(path, arch=name)
    return LoadedModel(entry, vk.model, vk.spec, vk.path, vk.sha256, dict(vk.meta), vk)


def name_of(module: Any) -> str | None:
    """The registry name of the network inside `module` (a reference model, its EFOutputs wrapper
    or its deploy form: the rewrites keep the outer modules), None for any other module. What a
    converter records in the artefact's manifest, so later commands need no --model for it."""
    from echoedge.model.network import EchoE3Net
    from echoedge.model.video_resnet import VideoResNet

    for m in module.modules():
        if isinstance(m, EchoE3Net):
            return "e3net"
        if isinstance(m, VideoResNet):
            return m.arch if m.arch in MODELS else None
    return None


def _video_hint(path: str | Path) -> str:
    """"; it is a r3d_18 state dict: pass --model r3d_18" when the file is one, else ""."""
    from echoedge.model.video_checkpoint import match_architecture, read_video_state

    try:
        state, _ = read_video_state(path)
        arch, _ = match_architecture(state, Path(path))
    except Exception:  # not a video ResNet either: the e3net message stands alone
        return ""
    return f"; it is a {arch} state dict: pass --model {arch}"


def open_model(name: str | None, checkpoint: str | Path | None) -> LoadedModel:
    """`--model NAME --checkpoint PATH` as every command reads them, in eval mode.

    Echo-E3Net without a checkpoint is the shipped one; the video ResNets ship none (their
    weights are EchoNet-Dynamic's, or a user's), so they need one. A checkpoint of another model
    is one line (CheckpointError) naming the first mismatch.
    """
    entry = get_model_entry(name or DEFAULT_MODEL)
    return load(entry.name, checkpoint if checkpoint is not None else default_checkpoint(entry.name))


def default_checkpoint(name: str) -> Path:
    """The checkpoint a command uses when none is given: the shipped one for Echo-E3Net; the
    video ResNets ship none (CheckpointError, one line)."""
    from echoedge.model.checkpoint import SHIPPED

    entry = get_model_entry(name)
    if entry.family != "e3net":
        # No stand-in is trained on the fly: from scratch, R(2+1)D-18 did not learn EF within
        # 30 min on a 2-core CPU (measured: loss flat, VAL MAE above the always-mean baseline).
        raise CheckpointError(f"--model {entry.name} needs --checkpoint: no {entry.name} weights "
                              "ship with echo-edge (EchoNet-Dynamic's checkpoint.pt / best.pt, or "
                              "any state dict of that layout), or train one with `echo-edge train "
                              f"--model {entry.name}` (on a GPU: from scratch it does not learn EF "
                              "in 30 min on a 2-core CPU)")
    if not SHIPPED.is_file():
        raise CheckpointError(f"{SHIPPED}: the shipped checkpoint is missing from this install")
    return SHIPPED


__all__ = [
    "DEFAULT_MODEL", "LoadedModel", "default_checkpoint", "MODELS", "MODEL_NAMES", "ModelEntry", "build",
    "get_model_entry", "load", "name_of", "open_model",
]
