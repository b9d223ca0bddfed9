"""Run a TFLite artefact folder in a LiteRT interpreter (XNNPACK delegate, set thread count).

The runner takes NCTHW float32 clips like every runner and feeds the file what its manifest says:
the input layout (transposed when the file is channels-last), int8 quantization of the input
(scale / zero point from the manifest's TensorSpec) and dequantization of int8 outputs. Outputs
are read from the file's serving signature by the keys recorded in the manifest, so their order
never depends on the interpreter.

Two interpreters run the same file at different speeds (toolchain.md): `tf` (tf.lite.Interpreter)
and `litert` (ai_edge_litert). The default is the one bench/bench_tflite.py measured faster
(echoedge.convert.tflite_interpreter.DEFAULT_INTERPRETER); `runtime` says which one ran.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from echoedge.convert.artefact import read_manifest
from echoedge.errors import EchoEdgeError, first_line
from echoedge.validate.runner import RunnerBase


class TFLiteRunner(RunnerBase):
    def __init__(self, folder: str | Path, threads: int = 2, interpreter: str | None = None) -> None:
        from echoedge.convert.tflite_interpreter import (
            DEFAULT_INTERPRETER, INTERPRETERS, SIGNATURE_KEY, TFLiteIO, make_interpreter,
        )

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.format != "tflite":
            raise EchoEdgeError(f"{self.folder}: artefact format is '{self.manifest.format}', not tflite")
        self.path = self.folder / self.manifest.model_file
        if not self.path.is_file():
            raise EchoEdgeError(f"{self.path}: model file named in the manifest is missing")
        kind = interpreter or DEFAULT_INTERPRETER
        if kind not in INTERPRETERS:
            raise EchoEdgeError(f"unknown TFLite interpreter {kind!r}; choose from {', '.join(INTERPRETERS)}")
        self.interpreter_kind = kind
        self.name = self.folder.name
        self.format = "tflite"
        self.precision = self.manifest.precision
        self.runtime = f"tflite-xnnpack ({kind} interpreter)"
        self.threads = int(threads)
        clip = self.manifest.inputs[0]
        spec = self.manifest.clip_spec
        try:
            self.clip_shape = (int(spec["channels"]), int(spec["frames"]), int(spec["height"]),
                               int(spec["width"]))
        except (KeyError, TypeError, ValueError):
            raise EchoEdgeError(f"{self.folder}: manifest clip_spec lacks channels/frames/height/width") from None
        sig = self.manifest.details.get("signature") or {}
        if not sig.get("input") or not isinstance(sig.get("outputs"), dict):
            raise EchoEdgeError(f"{self.folder}: manifest details lack the file's signature keys")
        outputs = self.manifest.outputs
        missing = [t.name for t in outputs if t.name not in sig["outputs"]]
        if missing:
            raise EchoEdgeError(f"{self.folder}: manifest signature has no key for {', '.join(missing)}")
        self.io = TFLiteIO(
            layout=clip.layout, input_key=sig["input"],
            output_keys=[sig["outputs"][t.name] for t in outputs],
            input_quant=(float(clip.scale), int(clip.zero_point)) if clip.dtype == "int8" else None,
            output_quant=[(float(t.scale), int(t.zero_point)) if t.dtype == "int8" else None
                          for t in outputs])
        if clip.dtype == "int8" and (clip.scale is None or clip.zero_point is None):
            raise EchoEdgeError(f"{self.folder}: int8 input without scale/zero point in the manifest")
        self.program_batch = int(clip.shape[0]) if clip.shape else 1
        self._key = sig.get("key", SIGNATURE_KEY)
        t0 = time.perf_counter()
        try:
            self._it = make_interpreter(self.path, threads=self.threads, kind=kind)
            self._runner = self._it.get_signature_runner(self._key)
            details = self._runner.get_input_details()[self.io.input_key]
        except EchoEdgeError:
            raise
        except Exception as e:
            raise EchoEdgeError(f"{self.path}: the {kind} interpreter could not load the file "
                                f"({first_line(e)})") from None
        if [int(s) for s in details["shape"]] != list(clip.shape):
            raise EchoEdgeError(f"{self.path}: file input {details['shape'].tolist()} does not match "
                                f"the manifest's {clip.shape} ({clip.layout})")
        self.load_s = time.perf_counter() - t0

    def _feed(self, clips: np.ndarray) -> np.ndarray:
        """NCTHW float32 -> the file's layout and dtype."""
        x = clips if self.io.layout == "NCTHW" else clips.transpose(0, 2, 3, 4, 1)
        if self.io.input_quant is not None:
            s, z = self.io.input_quant
            return np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._runner is None:
            raise EchoEdgeError(f"{self.path}: runner is closed")
        n = self.program_batch
        if len(batch) % n:
            raise EchoEdgeError(f"{self.path}: file has a static batch of {n}; got a batch of {len(batch)}")
        parts = []
        for i in range(0, len(batch), n):
            try:
                out = self._runner(**{self.io.input_key: self._feed(batch[i : i + n])})
            except Exception as e:
                raise EchoEdgeError(f"{self.path}: the interpreter failed ({first_line(e)})") from None
            vals = []
            for key, q in zip(self.io.output_keys, self.io.output_quant):
                v = out[key]
                vals.append(v.astype(np.float32) if q is None else (v.astype(np.float32) - q[1]) * q[0])
            parts.append(vals)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def close(self) -> None:
        self._runner = None
        self._it = None
