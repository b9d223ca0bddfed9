"""Run a Core ML artefact folder: Core ML itself on macOS, the reference interpreter elsewhere.

Core ML executes models only on macOS (coremltools' prediction needs `libcoremlpython`). On
other hosts the runner executes the package's own ML program through
`echoedge.mil.interpreter` and says so: `runtime == "reference-interpreter"` and
`measures_latency == False` (its EF numbers are the program's, its speed is not Core ML's).
`backend="coreml"` insists on Core ML and raises PlatformError where it cannot run, which
validation reports as SKIPPED_PLATFORM.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from echoedge.convert.artefact import read_manifest
from echoedge.errors import EchoEdgeError, PlatformError, first_line
from echoedge.validate.runner import RunnerBase

BACKENDS = ("auto", "coreml", "interpreter")
CORE_ML_RUNTIME = "coreml"
INTERPRETER_RUNTIME = "reference-interpreter"


def coreml_prediction_available() -> tuple[bool, str]:
    """(can this host run Core ML prediction, why not)."""
    if sys.platform != "darwin":
        return False, f"Core ML runs models only on macOS (this host is {sys.platform})"
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
    except ImportError as e:
        return False, f"coremltools has no Core ML runtime bindings here ({first_line(e)})"
    return True, ""


class CoreMLRunner(RunnerBase):
    """`threads` bounds the interpreter's PyTorch threads (Core ML picks its own on macOS)."""

    def __init__(self, folder: str | Path, threads: int = 2, backend: str = "auto") -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.format != "coreml":
            raise EchoEdgeError(f"{self.folder}: artefact format is '{self.manifest.format}', not coreml")
        if backend not in BACKENDS:
            raise EchoEdgeError(f"Core ML runner backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.path = self.folder / self.manifest.model_file
        if not self.path.is_dir():
            raise EchoEdgeError(f"{self.path}: Core ML package named in the manifest is missing")
        self.name = self.folder.name
        self.format = "coreml"
        self.precision = self.manifest.precision
        self.threads = int(threads)
        shape = self.manifest.input_shape
        self.program_batch = shape[0]
        self.clip_shape = tuple(shape[1:])
        self.input_name = self.manifest.inputs[0].name
        self.output_names = [t.name for t in self.manifest.outputs]
        self._model = None
        self._interp = None

        ok, why = coreml_prediction_available()
        if backend == "coreml" and not ok:
            raise PlatformError(f"{self.path}: {why}; run it on a Mac, or use the reference interpreter")
        use_coreml = ok and backend != "interpreter"
        from echoedge.convert.coreml_mlprogram import _import_coremltools

        _import_coremltools()  # (seconds: it imports TensorFlow too) not part of load_s
        t0 = time.perf_counter()
        if use_coreml:
            self._load_coreml()
            self.runtime = CORE_ML_RUNTIME
            self.measures_latency = True
            self.interpreter_precision = None
        else:
            from echoedge.convert.coreml_mlprogram import quiet_coremltools
            from echoedge.mil.interpreter import Interpreter

            with quiet_coremltools():
                self._interp = Interpreter(self.path, threads=self.threads)
            missing = [n for n in self.output_names if n not in self._interp.output_names]
            if missing or self.input_name not in self._interp.input_names:
                raise EchoEdgeError(f"{self.path}: program I/O ({', '.join(self._interp.input_names)} -> "
                                    f"{', '.join(self._interp.output_names)}) does not match the manifest")
            self.runtime = INTERPRETER_RUNTIME
            # Not Core ML's speed: validation must not report the interpreter's time as latency.
            self.measures_latency = False
            self.interpreter_precision = self._interp.precision
            self.platform_note = why
        self.load_s = time.perf_counter() - t0

    def _load_coreml(self) -> None:  # pragma: no cover - macOS only
        import coremltools as ct

        try:
            self._model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as e:
            raise EchoEdgeError(f"{self.path}: Core ML could not load the package ({first_line(e)})") from None

    def _run_one(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._interp is not None:
            return self._interp.run({self.input_name: x})
        if self._model is None:
            raise EchoEdgeError(f"{self.path}: runner is closed")
        try:  # pragma: no cover - macOS only
            out = self._model.predict({self.input_name: x})
        except Exception as e:  # pragma: no cover
            raise EchoEdgeError(f"{self.path}: Core ML failed to run the program ({first_line(e)})") from None
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}  # pragma: no cover

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._interp is None and self._model is None:
            raise EchoEdgeError(f"{self.path}: runner is closed")
        n = self.program_batch
        if len(batch) % n:
            raise EchoEdgeError(f"{self.path}: program has a static batch of {n}; got a batch of {len(batch)}")
        parts = [self._run_one(batch[i : i + n]) for i in range(0, len(batch), n)]
        return tuple(np.concatenate([p[name] for p in parts]).astype(np.float32, copy=False)
                     for name in self.output_names)

    def describe(self) -> str:
        if self.runtime == INTERPRETER_RUNTIME:
            return (f"{self.name}: coreml {self.precision} on the reference interpreter "
                    f"({self.interpreter_precision} compute; not Core ML, no latency; "
                    f"loaded in {self.load_s:.2f} s)")
        return super().describe()

    def close(self) -> None:
        self._model = None
        self._interp = None
