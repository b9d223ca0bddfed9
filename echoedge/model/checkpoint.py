"""One-file checkpoints: state dict + model config + ClipSpec + data fingerprint + metrics, and
the training EF mean (`train_ef`: the always-mean baseline of `evaluate` and `validate`, so a
test-only dataset needs no TRAIN split for it; absent from checkpoints written before it existed).

Saved with plain containers only (dicts, lists, str, numbers, tensors) so that they load with
`torch.load(weights_only=True)`: a checkpoint can never execute code on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.data.clipspec import ClipSpec
from echoedge.errors import CheckpointError, EchoEdgeError

FORMAT_VERSION = 1
# The tail of every "not a checkpoint" line: what the user should have passed.
EXPECTED = "expected a .pt file written by `echo-edge train`"
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "e3net_paper_acquisition.pt"


@dataclass
class Checkpoint:
    model: Any  # EchoE3Net (typed loosely to keep torch out of import time)
    config: Any  # E3NetConfig
    spec: ClipSpec
    data_fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    train_ef_mean: float | None = None  # mean EF (%) of the videos it was trained on
    train_ef_videos: int | None = None  # how many videos that mean is over


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: Any,
    config: Any,
    spec: ClipSpec,
    data_fingerprint: str,
    metrics: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    train_ef: tuple[float, int] | None = None,
) -> Path:
    """Write atomically (temporary name, then rename) so an interrupted save keeps the old file.

    `train_ef` is (mean EF %, number of videos) of the training set, the always-mean baseline.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.module if hasattr(model, "module") else model
    payload: dict[str, Any] = {
        "format": "echo-edge-checkpoint",
        "format_version": FORMAT_VERSION,
        "model_config": config.to_dict(),
        "clip_spec": spec.to_dict(),
        "data_fingerprint": data_fingerprint,
        # Through JSON so only plain types reach the pickle (weights_only=True refuses the rest,
        # e.g. torch.__version__ is a TorchVersion object).
        "metrics": _plain(metrics or {}),
        "meta": _plain(meta or {}),
        "state_dict": {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                       for k, v in net.state_dict().items()},
    }
    if train_ef is not None:
        payload["train_ef"] = {"mean": float(train_ef[0]), "videos": int(train_ef[1])}
    if train_state is not None:
        payload["train_state"] = train_state
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(obj, default=str))


def read_payload(path: str | Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a corrupt or foreign file
        raise CheckpointError(f"{path}: not an echo-edge checkpoint ({_unreadable_kind(path, e)}); "
                              f"{EXPECTED}") from None
    if not isinstance(payload, dict) or payload.get("format") != "echo-edge-checkpoint":
        what = ("a PyTorch file without echo-edge's format marker" if isinstance(payload, dict)
                else f"a PyTorch file holding a {type(payload).__name__}, not a checkpoint's dict")
        raise CheckpointError(f"{path}: not an echo-edge checkpoint ({what}); {EXPECTED}")
    for key in ("model_config", "clip_spec", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


UNSAFE = ("holding objects other than tensors and plain containers (refused: loading it could "
          "run code)")


def _unreadable_kind(path: Path, error: BaseException) -> str:
    """What a file torch.load refused is, in the user's words, from its first bytes.

    torch's own messages run for paragraphs (miniz's "internal error" advice, the weights_only
    migration notes) and say nothing about what the file is, so the file is looked at instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if size == 0:
        return "empty file"
    # weights_only=True refuses any pickled object that is not a tensor or plain container.
    refused = type(error).__name__ == "UnpicklingError"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):  # no end-of-archive record: cut short or damaged
            return f"truncated or damaged zip archive, {size} bytes"
        with zipfile.ZipFile(path) as z:
            written_by_torch = any(n.endswith("/data.pkl") for n in z.namelist())
        if not written_by_torch:
            return "a zip archive, but not one written by torch.save"
        if refused:
            return f"a PyTorch file {UNSAFE}"
        return "a damaged PyTorch file"
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy format or a plain pickle
        return f"a pickle {UNSAFE}" if refused else "a damaged or truncated pickle"
    return f"unrecognised content, {size} bytes, neither a zip archive nor a pickle"


def load_checkpoint(path: str | Path, expect_config: str | None = None) -> Checkpoint:
    """Load a checkpoint into a fresh EchoE3Net in eval mode.

    `expect_config` (a preset name) turns a checkpoint of another config into a clear error
    rather than a silently different model.
    """
    from echoedge.model.config import E3NetConfig
    from echoedge.model.network import EchoE3Net

    path = Path(path)
    payload = read_payload(path)
    try:
        cfg = E3NetConfig.from_dict(payload["model_config"])
        spec = ClipSpec.from_dict(payload["clip_spec"])
    except EchoEdgeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if expect_config is not None and cfg.name != expect_config:
        raise CheckpointError(
            f"{path}: checkpoint is of config '{cfg.name}', but '{expect_config}' was asked for"
        )
    model = EchoE3Net(cfg)
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise CheckpointError(
            f"{path}: weights do not fit config '{cfg.name}' ({str(e).splitlines()[-1].strip()[:160]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        n_miss, n_unexp = len(result.missing_keys), len(result.unexpected_keys)
        raise CheckpointError(
            f"{path}: weights do not fit config '{cfg.name}' ({n_miss} missing, "
            f"{n_unexp} unexpected tensors; was it saved from another version or config?)"
        )
    model.eval()
    mean, videos = _train_ef(payload.get("train_ef"))
    return Checkpoint(
        model=model,
        config=cfg,
        spec=spec,
        data_fingerprint=str(payload.get("data_fingerprint", "")),
        metrics=dict(payload.get("metrics", {})),
        meta=dict(payload.get("meta", {})),
        path=path,
        sha256=file_sha256(path),
        train_ef_mean=mean,
        train_ef_videos=videos,
    )


def _train_ef(entry: Any) -> tuple[float | None, int | None]:
    """(mean, videos) from the payload; (None, None) when absent or not a finite number (a
    baseline from a damaged entry would be a wrong number, not a missing one)."""
    if not isinstance(entry, dict):
        return None, None
    mean, videos = entry.get("mean"), entry.get("videos")
    if not isinstance(mean, (int, float)) or isinstance(mean, bool) or not math.isfinite(mean):
        return None, None
    return float(mean), int(videos) if isinstance(videos, int) and not isinstance(videos, bool) else None
