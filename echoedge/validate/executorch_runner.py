"""Run an ExecuTorch artefact folder through `executorch.runtime` (XNNPACK + portable kernels)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from echoedge.convert.artefact import read_manifest
from echoedge.errors import EchoEdgeError, first_line
from echoedge.validate.runner import RunnerBase


class ExecuTorchRunner(RunnerBase):
    """`threads` sizes ExecuTorch's thread pool, which is process-wide: the last runner opened
    sets it for all ExecuTorch runners in the process (and it is reset at every open)."""

    def __init__(self, folder: str | Path, threads: int = 2) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.format != "executorch":
            raise EchoEdgeError(f"{self.folder}: artefact format is '{self.manifest.format}', not executorch")
        self.path = self.folder / self.manifest.model_file
        if not self.path.is_file():
            raise EchoEdgeError(f"{self.path}: model file named in the manifest is missing")
        self.name = self.folder.name
        self.format = "executorch"
        self.precision = self.manifest.precision
        self.runtime = self.manifest.runtime or "executorch"
        self.threads = int(threads)
        shape = self.manifest.input_shape
        self.program_batch = shape[0]
        self.clip_shape = tuple(shape[1:])

        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if self.precision != "fp32":
            # Registers quantized_decomposed out-variants; without it an int8 program fails to
            # load with "Missing out variants".
            import executorch.kernels.quantized  # noqa: F401

        self._torch = torch
        portable_lib._unsafe_reset_threadpool(self.threads)
        t0 = time.perf_counter()  # after the imports: load_s is the program's load, not Python's
        try:
            self._program = Runtime.get().load_program(self.path)
            self._method = self._program.load_method("forward")
            meta = self._method.metadata
            program_shape = tuple(meta.input_tensor_meta(0).sizes())
        except Exception as e:  # the runtime raises RuntimeError/ValueError with an error code
            raise EchoEdgeError(f"{self.path}: ExecuTorch could not load the program "
                                f"({first_line(e)})") from None
        if program_shape != tuple(shape):
            raise EchoEdgeError(f"{self.path}: program input {program_shape} does not match the "
                                f"manifest's {tuple(shape)}")
        self.load_s = time.perf_counter() - t0

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._method is None:
            raise EchoEdgeError(f"{self.path}: runner is closed")
        n = self.program_batch
        if len(batch) % n:
            raise EchoEdgeError(f"{self.path}: program has a static batch of {n}; "
                                f"got a batch of {len(batch)}")
        parts = []
        for i in range(0, len(batch), n):
            x = self._torch.from_numpy(batch[i : i + n])
            try:
                parts.append([o.numpy() for o in self._method.execute([x])])
            except Exception as e:
                raise EchoEdgeError(f"{self.path}: ExecuTorch failed to run the program "
                                    f"({first_line(e)})") from None
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def close(self) -> None:
        self._method = None
        self._program = None
