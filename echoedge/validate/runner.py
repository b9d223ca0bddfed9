"""One interface for running every artefact format, so validation is written once.

A runner takes a normalised float32 clip batch (B, C, T, H, W) and returns Echo-E3Net's 5-tuple
(ef, edv, esv, ed_landmarks, es_landmarks) as NumPy arrays with batch B. It is directly usable as
the `infer` callable of `echoedge.model.evaluate.predict_videos`. A runner whose program has a
static batch of 1 loops over the batch.

`open_runner(folder)` picks the runner from the artefact manifest's `format`; a new format plugs
in by adding its class to `RUNNERS` (module path, so its toolchain is imported only when used).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from echoedge.errors import EchoEdgeError, ShapeError

# format -> "module:Class"; the class is called as Class(folder, threads=threads).
RUNNERS: dict[str, str] = {
    "executorch": "echoedge.validate.executorch_runner:ExecuTorchRunner",
    "tflite": "echoedge.validate.tflite_runner:TFLiteRunner",
    "coreml": "echoedge.validate.coreml_runner:CoreMLRunner",
}


@runtime_checkable
class Runner(Protocol):
    name: str
    format: str  # "pytorch", "executorch", "coreml", "tflite"
    precision: str  # "fp32", "int8", ...
    runtime: str  # what executes it, e.g. "pytorch-eager", "executorch-xnnpack"
    load_s: float  # seconds the load took

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


class RunnerBase:
    """Shared checks and context-manager support; subclasses implement `_run`."""

    name: str = ""
    format: str = ""
    precision: str = ""
    runtime: str = ""
    load_s: float = 0.0
    clip_shape: tuple[int, ...] | None = None  # (C, T, H, W) when known
    # False where the runtime is not the one a device uses (e.g. a reference interpreter of a
    # Core ML program): its EF numbers are real, its speed is not the artefact's speed.
    measures_latency: bool = True

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._run(self.check_batch(batch))

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def check_batch(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise ShapeError(f"{self.name}: expects a NumPy float32 (B, C, T, H, W) batch, "
                             f"got {type(batch).__name__}")
        want = "(B, " + ", ".join(map(str, self.clip_shape)) + ")" if self.clip_shape else "(B, C, T, H, W)"
        if batch.ndim != 5 or batch.shape[0] < 1 or (
                self.clip_shape is not None and tuple(batch.shape[1:]) != tuple(self.clip_shape)):
            raise ShapeError(f"{self.name}: expects input {want} float32, got {batch.shape}")
        if batch.dtype != np.float32:
            raise ShapeError(f"{self.name}: expects float32 input, got {batch.dtype}")
        return np.ascontiguousarray(batch)

    def close(self) -> None:
        pass

    def __enter__(self) -> "RunnerBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name}: {self.format} {self.precision} on {self.runtime} (loaded in {self.load_s:.2f} s)"


class EagerRunner(RunnerBase):
    """A torch module in eager mode: the fp32 reference every artefact is compared to."""

    def __init__(self, model: Any, threads: int = 2, name: str = "eager", precision: str = "fp32",
                 clip_shape: tuple[int, ...] | None = None) -> None:
        import torch

        t0 = time.perf_counter()
        self.model = model.eval()
        self.threads = int(threads)
        self.name = name
        self.format = "pytorch"
        self.precision = precision
        self.runtime = "pytorch-eager"
        cfg = getattr(model, "cfg", None)
        if clip_shape is None and cfg is not None:
            clip_shape = (cfg.channels, cfg.frames, cfg.height, cfg.width)
        self.clip_shape = tuple(clip_shape) if clip_shape is not None else None
        self._torch = torch
        self.load_s = time.perf_counter() - t0

    @classmethod
    def from_checkpoint(cls, path: str | Path, threads: int = 2) -> "EagerRunner":
        from echoedge.model.checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        t0 = time.perf_counter()
        runner = cls(ck.model, threads=threads, name=f"eager:{Path(path).name}")
        runner.load_s += time.perf_counter() - t0
        return runner

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self._torch
        # torch's thread count is process-wide; set it per call so another runner's setting
        # does not leak into this one's timings.
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch))
        return tuple(o.float().numpy() for o in out)

    def close(self) -> None:
        self.model = None


def open_runner(folder: str | Path, threads: int = 2) -> Runner:
    """Load the artefact at `folder` into the runner its manifest's format calls for."""
    from echoedge.convert.artefact import FORMATS, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    target = RUNNERS.get(manifest.format)
    if target is None:
        if manifest.format in FORMATS:
            raise EchoEdgeError(f"{folder}: no runner for format '{manifest.format}' in this version "
                                f"of echo-edge (runners: {', '.join(sorted(RUNNERS))})")
        raise EchoEdgeError(f"{folder}: unknown artefact format '{manifest.format}' "
                            f"(known: {', '.join(FORMATS)})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(folder, threads=threads)
