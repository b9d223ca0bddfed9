"""Quantization simulated in PyTorch: the int8 recipe's numbers without any converter or runtime.

`simulate_int8` runs the same PT2E flow the ExecuTorch converter runs (torch.export -> the
recipe's XNNPACK quantizer -> calibration on the same clips, one clip at a time -> convert_pt2e)
and returns the converted graph module: quantize/dequantize pairs around every quantized op, the
ops themselves in float. Running it gives the EF the recipe would give if every runtime rounded
exactly like PyTorch's reference q/dq; the gap between that and an artefact's EF is what the
converter and runtime add (`echo-edge debug-quant`'s attribution).

`ef_per_video` is the evaluation protocol of `validate` (same videos, same evenly spaced clips,
per-video mean), for any callable model, at batch 1 because the simulated graph is exported at
batch 1 like the artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError


@dataclass
class VideoSet:
    """Held-out videos and the clip protocol an EF figure is measured on."""

    records: list[Any]
    frames: Callable[[Any], np.ndarray]
    spec: Any  # ClipSpec
    clips_per_video: int
    split: str

    @property
    def names(self) -> list[str]:
        return [r.file_name for r in self.records]


def load_videos(data: str | Path, spec: Any, split: str = "VAL", videos: int | None = 12,
                clips_per_video: int = 2, cache_dir: Path | None = None) -> VideoSet:
    """The first `videos` videos of `split` (all when None) with a frame cache."""
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet

    reader = EchoNet(Path(data))
    records = reader.records(split)
    if videos:
        records = records[:videos]
    if not records:
        raise EchoEdgeError(f"{data}: split {split} has no videos")
    return VideoSet(records, FrameCache(reader, cache_dir), spec, clips_per_video, split)


def ef_per_video(model: Any, videos: VideoSet, progress: bool = False,
                 description: str = "EF") -> np.ndarray:
    """Per-video EF (mean over the clips) of a torch module or an Infer callable, batch 1."""
    import torch

    from echoedge.model.evaluate import predict_videos

    infer = model
    if isinstance(model, torch.nn.Module):
        # Not eager_infer: a PT2E graph module refuses .eval(); callers put modules in eval mode.
        def infer(batch: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [o.float().numpy() for o in model(torch.from_numpy(np.ascontiguousarray(batch)))]
    preds = predict_videos(infer, videos.records, videos.frames, videos.spec, videos.clips_per_video,
                           batch_size=1, progress=progress, description=description)
    return np.array([p.ef for p in preds], dtype=np.float64)


def simulate_int8(deploy: Any, clips: np.ndarray, keep_float: Sequence[str] = (),
                  progress: bool = False) -> Any:
    """The deploy form with the ExecuTorch int8 recipe applied in PyTorch (fake quantization).

    `clips` are the calibration clips (float32 (N, C, T, H, W)); `keep_float` names module paths
    kept float on top of the recipe (`echoedge.convert.executorch.quantizer_for`).
    """
    import torch
    from rich.progress import Progress
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from echoedge.convert.executorch import quantizer_for

    clips = np.asarray(clips)
    if clips.ndim != 5 or len(clips) == 0:
        raise EchoEdgeError(f"calibration clips: expected (N, C, T, H, W) with N >= 1, got {clips.shape}")
    example = (torch.from_numpy(np.ascontiguousarray(clips[:1], dtype=np.float32)),)
    deploy.eval()
    with torch.no_grad():
        ep = torch.export.export(deploy, example)
        quantizer, _ = quantizer_for(deploy, keep_float=keep_float)
        prepared = prepare_pt2e(ep.module(), quantizer)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("calibrating (simulation)", total=len(clips))
            for clip in clips:
                prepared(torch.from_numpy(np.ascontiguousarray(clip[None], dtype=np.float32)))
                bar.advance(task)
        return convert_pt2e(prepared)


def quantized_layers(deploy: Any) -> list[str]:
    """Module paths of the convs the int8 recipe quantizes, in forward order (sensitivity units)."""
    from torch import nn

    from echoedge.convert.executorch import int8_scope

    scope = int8_scope(deploy)
    out = []
    for name, m in deploy.named_modules():
        if isinstance(m, nn.Conv2d) and (scope is None or name.startswith(scope)):
            out.append(name)
    return out
