"""Video ResNet checkpoints as EchoNet-Dynamic and torchvision users hold them.

What is accepted (whatever a device engineer's `torch.save` wrote):
- a bare state dict, or a dict with it under `state_dict` (EchoNet-Dynamic's `checkpoint.pt` /
  `best.pt` also carry `epoch`, `frames`, `period`, `best_loss`, optimizer and scheduler state);
- keys with the `module.` prefix of `nn.DataParallel` / DistributedDataParallel (EchoNet-Dynamic
  trains under DataParallel, so its files have it);
- an `fc` with one output (EF in %), at any width: the width is read from `fc.weight`;
- BatchNorm's `num_batches_tracked` may be missing (files from before torch 0.4.1 lack it; eval
  mode never reads it).

The architecture is the one asked for, or else the one whose every name and shape the file fits;
a file that fits none gets one line naming its first mismatch against the closest architecture.

Loading is `torch.load(weights_only=True)`, as for echo-edge's own checkpoints, with two numpy
types allowed: EchoNet-Dynamic stores its R^2 (`r2`) as a numpy float64, which pickles as
`numpy.core.multiarray.scalar(dtype, bytes)`; rebuilding a scalar from its dtype and bytes runs
no code, unlike the blanket `weights_only=False` torch's own message suggests.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.data.clipspec import ECHONET_DYNAMIC_SPEC, ClipSpec
from echoedge.errors import CheckpointError, DataError, EchoEdgeError
from echoedge.model.checkpoint import _unreadable_kind, file_sha256
from echoedge.model.video_resnet import ARCHITECTURES, build_video_resnet

EXPECTED_VIDEO = ("expected a state dict of " + ", ".join(ARCHITECTURES)
                  + " (EchoNet-Dynamic's checkpoint.pt / best.pt)")
PREFIXES = ("module.",)  # DataParallel / DistributedDataParallel wrappers


class CheckpointMismatchError(CheckpointError, DataError):
    """The file's tensors do not fit the architecture (a missing, unexpected or reshaped tensor).

    A CheckpointError like every other unusable checkpoint, and a DataError: the file is bad
    input, not a failure of the toolkit.
    """


@dataclass(frozen=True)
class VideoResNetConfig:
    """The model_config of a video ResNet that `echo-edge train` wrote (echo-edge's checkpoint
    format; the state dict inside keeps torchvision's names)."""

    arch: str
    base_width: int

    @property
    def name(self) -> str:
        return f"{self.arch}-w{self.base_width}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "base_width": self.base_width}


@dataclass
class VideoCheckpoint:
    model: Any  # VideoResNet in eval mode (typed loosely to keep torch out of import time)
    arch: str
    spec: ClipSpec
    path: Path
    sha256: str
    base_width: int
    meta: dict[str, Any] = field(default_factory=dict)  # plain numbers the file carried
    train_ef_mean: float | None = None  # files `echo-edge train` wrote record their TRAIN EF mean
    train_ef_videos: int | None = None


def _torch_load(path: Path) -> Any:
    import numpy as np
    import torch

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype,
               *(type(np.dtype(c)) for c in "?bBhHiIlLqQefdg")]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_unreadable_kind(path, e)}); "
                              f"{EXPECTED_VIDEO}") from None


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def read_video_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict with wrapper prefixes removed, the payload's other plain entries)."""
    path = Path(path)
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == "echo-edge-checkpoint":
        arch = (payload.get("model_config") or {}).get("arch")
        if arch not in ARCHITECTURES:
            raise CheckpointMismatchError(
                f"{path}: an echo-edge Echo-E3Net checkpoint, not a video ResNet "
                f"({', '.join(ARCHITECTURES)}); load it as model e3net")
    if _is_state_dict(payload):
        state, rest = payload, {}
    elif isinstance(payload, dict) and _is_state_dict(payload.get("state_dict")):
        state = payload["state_dict"]
        rest = {k: v for k, v in payload.items() if k != "state_dict"}
    else:
        what = (f"a dict with keys {', '.join(map(str, list(payload)[:6]))}"
                if isinstance(payload, dict) else f"a {type(payload).__name__}")
        raise CheckpointMismatchError(f"{path}: no state dict in the file ({what}); "
                                      f"{EXPECTED_VIDEO}")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, rest


def _shape(s: Any) -> str:
    return "(" + ", ".join(str(int(n)) for n in s) + ")"


def first_mismatch(expected: dict[str, tuple[int, ...]], state: dict[str, Any]) -> str | None:
    """The first tensor, in the model's order, that the file lacks or holds in another shape; else
    the first tensor the model has no place for; None when the file fits."""
    for name, shape in expected.items():
        if name not in state:
            if name.endswith(".num_batches_tracked"):
                continue
            return f"{name} is missing from the file"
        got = tuple(state[name].shape)
        if got != shape:
            return f"{name} has shape {_shape(got)} in the file, {_shape(shape)} in the model"
    extra = next((k for k in state if k not in expected), None)
    return None if extra is None else f"{extra} is in the file but not in the model"


def _fitted(expected: dict[str, tuple[int, ...]], state: dict[str, Any]) -> int:
    return sum(1 for k, s in expected.items() if k in state and tuple(state[k].shape) == s)


def _layouts(state: dict[str, Any]) -> tuple[int, dict[str, dict[str, tuple[int, ...]]]]:
    """(base width read from fc, each architecture's names and shapes at that width)."""
    import torch

    fc = state.get("fc.weight")
    width = int(fc.shape[1]) // 8 if fc is not None and fc.dim() == 2 and fc.shape[1] >= 8 else 64
    layouts = {}
    for arch in ARCHITECTURES:
        with torch.device("meta"):  # names and shapes only
            model = build_video_resnet(arch, base_width=width)
        layouts[arch] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return width, layouts


def match_architecture(state: dict[str, Any], path: Path, arch: str | None = None
                       ) -> tuple[str, int]:
    """(architecture, base width) the state fits; CheckpointMismatchError naming the first
    mismatch otherwise."""
    if arch is not None and arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown video ResNet '{arch}' (choose from "
                              f"{', '.join(ARCHITECTURES)})")
    fc = state.get("fc.weight")
    if fc is not None and fc.dim() == 2 and fc.shape[0] != 1:
        raise CheckpointMismatchError(
            f"{path}: fc.weight has {fc.shape[0]} outputs; an EF model has 1 (a Kinetics "
            f"classifier needs its fc replaced and trained for EF first)")
    width, layouts = _layouts(state)
    candidates = [arch] if arch else list(ARCHITECTURES)
    misses = {a: first_mismatch(layouts[a], state) for a in candidates}
    fits = [a for a in candidates if misses[a] is None]
    if fits:
        return fits[0], width
    closest = max(candidates, key=lambda a: _fitted(layouts[a], state))
    head = (f"weights do not fit {arch}" if arch else
            f"weights fit none of {', '.join(ARCHITECTURES)}; closest {closest}")
    raise CheckpointMismatchError(f"{path}: {head}: {misses[closest]}")


def _plain_meta(rest: dict[str, Any]) -> dict[str, Any]:
    """The file's scalar entries (epoch, frames, period, best_loss, r2 ...) as Python numbers;
    non-finite floats are dropped (a NaN loss says nothing)."""
    import numpy as np
    import torch

    meta: dict[str, Any] = {}
    for k, v in rest.items():
        if isinstance(v, np.generic) or (isinstance(v, torch.Tensor) and v.numel() == 1):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            continue
        if isinstance(v, (bool, int, float, str)):
            meta[str(k)] = v
    return meta


def _spec_from(rest: dict[str, Any], meta: dict[str, Any], path: Path) -> ClipSpec:
    """echo-edge's own ClipSpec where the file has one; else EchoNet-Dynamic's, with the file's
    frames and period where it records them (EchoNet-Dynamic's training script saves both)."""
    try:
        if isinstance(rest.get("clip_spec"), dict):
            return ClipSpec.from_dict(rest["clip_spec"])
        spec = ECHONET_DYNAMIC_SPEC.to_dict()
        for key in ("frames", "period"):
            v = meta.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
                spec[key] = v
        return ClipSpec.from_dict(spec)
    except EchoEdgeError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_video_checkpoint(path: str | Path, arch: str | None = None) -> VideoCheckpoint:
    """A video ResNet in eval mode with the file's weights (see the module docstring)."""
    import torch

    path = Path(path)
    state, rest = read_video_state(path)
    arch, width = match_architecture(state, path, arch)
    model = build_video_resnet(arch, base_width=width)
    full = dict(state)
    for name, buf in model.state_dict().items():
        if name.endswith(".num_batches_tracked") and name not in full:
            full[name] = torch.zeros_like(buf)
    bad = [k for k, v in full.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {bad[0]} holds NaN or infinite values")
    model.load_state_dict(full, strict=True)  # fits: checked name by name above
    model.eval()
    meta = _plain_meta(rest)
    spec = _spec_from(rest, meta, path)
    train_ef = rest.get("train_ef") if isinstance(rest.get("train_ef"), dict) else {}
    ef_mean, ef_videos = train_ef.get("mean"), train_ef.get("videos")
    return VideoCheckpoint(model=model, arch=arch, spec=spec, path=path, sha256=file_sha256(path),
                           base_width=width, meta=meta,
                           train_ef_mean=float(ef_mean) if isinstance(ef_mean, (int, float)) else None,
                           train_ef_videos=int(ef_videos) if isinstance(ef_videos, int) else None)


__all__ = [
    "CheckpointMismatchError", "VideoCheckpoint", "VideoResNetConfig", "first_mismatch", "load_video_checkpoint",
    "match_architecture", "read_video_state",
]
