"""A reference interpreter of Core ML ML programs, so Core ML artefacts get real numbers on Linux.

Core ML executes a model only on macOS (coremltools' `predict` needs `libcoremlpython`), yet the
program inside a `.mlpackage` is plain data: coremltools loads it on any OS into its MIL Python
representation (`milproto.load.load(spec, version, weights_dir)`; see `echoedge.mil.program`).
This module walks that program op by op and executes each op with the PyTorch CPU kernels of
`echoedge.mil.ops`, which follow the op definitions in coremltools' MIL reference
(coremltools/converters/mil/mil/ops/defs/iOS15..iOS18):

- every op the toolkit's artefacts contain (see `SUPPORTED_OPS`); anything else is refused when
  the program is loaded, with an error naming the op, so an unknown op never runs as a guess;
- `constexpr_*` dequantization (W8 weights) is evaluated once at load, `quantize`/`dequantize`
  (W8A8 activations) at run time: round half to even, clip to the integer range;
- **compute precision**: an fp16 program declares fp16 tensors; after every op the interpreter
  rounds each output that the program types fp16 to float16 (storage precision), while the op
  itself accumulates in float32. Apple's CPU/GPU/ANE kernels store fp16 between ops too, but may
  accumulate differently, so fp16 numbers from here are close to, not identical with, a device's.
  `Interpreter.precision` says which precision a program used ("fp32" or "fp16").

The numbers are real outputs of the artefact's own program and weights; the speed is not Core
ML's speed, so runners built on this never report latency (RunnerBase.measures_latency = False).
coremltools and torch are imported inside functions: `import echoedge` stays cheap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from echoedge.errors import EchoEdgeError, first_line
from echoedge.mil.ops import _CONSTEXPR, _OPS, SUPPORTED_OPS
from echoedge.mil.ops.registry import UnsupportedOpError, _Op
from echoedge.mil.program import _dtype_name, load_mil_program, program_info

RUNTIME = "reference-interpreter"


def _as_tensor(T: Any, val: Any) -> Any:
    """A const's value as a tensor (floats as float32; strings stay Python strings)."""
    if isinstance(val, str) or val is None:
        return val
    arr = np.asarray(val)
    if arr.dtype.kind == "U" or arr.dtype == object:
        return val
    if arr.dtype.kind == "f":
        return T.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if arr.dtype.kind == "b":
        return T.from_numpy(np.ascontiguousarray(arr))
    if arr.dtype == np.uint8:
        return T.from_numpy(np.ascontiguousarray(arr)).to(T.int32)
    return T.from_numpy(np.ascontiguousarray(arr))


# Ops whose outputs are values of their input tensors, moved or selected but never computed.
_SELECTING = frozenset({"reshape", "transpose", "slice_by_index", "slice_by_size", "concat", "split",
                        "squeeze", "expand_dims", "max_pool", "gather", "identity", "tile"})


def _fp16_inputs_only(op: Any) -> bool:
    """Every floating-point input of `op` is typed fp16 (integer inputs, e.g. shapes, aside)."""
    for value in op.inputs.values():
        for var in value if isinstance(value, (list, tuple)) else (value,):
            name = _dtype_name(var)
            if name.startswith("fp") and name != "fp16":
                return False
    return True


class Interpreter:
    """Executes the `main` function of a Core ML ML program with PyTorch CPU ops.

    `Interpreter(package)` loads a saved `.mlpackage`; `Interpreter.from_program(prog)` takes a
    pymil Program (e.g. coremltools' MIL builder output). Call `run({input_name: array})` for a
    dict of output name -> float32 array. `observe(name, tensor)`, when given to `run`, sees
    every non-const op output (used to gather activation ranges for W8A8 calibration).
    """

    def __init__(self, package: str | Path, threads: int | None = None) -> None:
        prog, spec = load_mil_program(package)
        self._init(prog, spec, str(package), threads)

    @classmethod
    def from_program(cls, prog: Any, where: str = "MIL program", threads: int | None = None) -> "Interpreter":
        self = cls.__new__(cls)
        self._init(prog, None, where, threads)
        return self

    def _init(self, prog: Any, spec: Any, where: str, threads: int | None) -> None:
        import torch

        self._torch = torch
        self.where = where
        self.threads = threads
        fn = prog.functions.get("main")
        if fn is None:
            raise EchoEdgeError(f"{where}: the ML program has no 'main' function")
        self.info = program_info(prog, spec)
        self.precision = self.info.precision
        unknown = sorted({op.op_type for op in fn.operations} - SUPPORTED_OPS)
        if unknown:
            raise UnsupportedOpError(f"{where}: the reference interpreter does not implement MIL "
                                     f"op{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        self.input_names = list(fn.inputs)
        self.input_shapes = {k: tuple(int(s) for s in v.shape) for k, v in fn.inputs.items()}
        self.input_fp16 = {k: _dtype_name(v) == "fp16" for k, v in fn.inputs.items()}
        self.output_names = [v.name for v in fn.outputs]
        self._consts: dict[str, Any] = {}
        self._plan: list[tuple[Any, Callable[[_Op], Any], list[tuple[str, bool]]]] = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for op in fn.operations:
                outs = [(v.name, _dtype_name(v) == "fp16") for v in op.outputs]
                if op.op_type == "const":
                    v = op.outputs[0]
                    self._consts[v.name] = _as_tensor(torch, v.val)
                elif op.op_type in _CONSTEXPR:
                    self._store(self._consts, outs, self._exec(op, _OPS[op.op_type], self._consts))
                else:
                    if op.op_type in _SELECTING and _fp16_inputs_only(op):
                        # Values picked from fp16 tensors are fp16 already (inputs and consts
                        # are stored rounded): rounding them again changes nothing and took a
                        # third of an fp16 program's time.
                        outs = [(name, False) for name, _ in outs]
                    self._plan.append((op, _OPS[op.op_type], outs))
        self.load_s = time.perf_counter() - t0

    def _exec(self, op: Any, fn: Callable[[_Op], Any], env: dict[str, Any]) -> Any:
        try:
            return fn(_Op(op, env, self._torch))
        except UnsupportedOpError as e:
            raise UnsupportedOpError(f"{self.where}: op {op.op_type} '{op.name}': {e}") from None
        except Exception as e:
            raise EchoEdgeError(f"{self.where}: op {op.op_type} '{op.name}' failed in the reference "
                                f"interpreter ({type(e).__name__}: {first_line(e)})") from None

    def _store(self, env: dict[str, Any], outs: list[tuple[str, bool]], result: Any) -> None:
        results = result if isinstance(result, (tuple, list)) else (result,)
        for (name, fp16), value in zip(outs, results):
            if fp16 and value.is_floating_point():
                # fp16 compute precision: the op's output is stored as float16.
                value = value.to(self._torch.float16).float()
            env[name] = value

    def run(self, inputs: dict[str, np.ndarray],
            observe: Callable[[str, Any], None] | None = None) -> dict[str, np.ndarray]:
        T = self._torch
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EchoEdgeError(f"{self.where}: missing input(s) {', '.join(missing)}")
        env: dict[str, Any] = dict(self._consts)
        for name in self.input_names:
            arr = np.asarray(inputs[name], dtype=np.float32)
            if tuple(arr.shape) != self.input_shapes[name]:
                raise EchoEdgeError(f"{self.where}: input '{name}' must have shape "
                                    f"{self.input_shapes[name]}, got {arr.shape}")
            x = T.from_numpy(np.ascontiguousarray(arr))
            env[name] = x.to(T.float16).float() if self.input_fp16[name] else x
        old_threads = T.get_num_threads()
        if self.threads and old_threads != self.threads:
            T.set_num_threads(self.threads)
        try:
            with T.no_grad():
                for op, fn, outs in self._plan:
                    self._store(env, outs, self._exec(op, fn, env))
                    if observe is not None:
                        for name, _ in outs:
                            observe(name, env[name])
        finally:
            if self.threads and old_threads != self.threads:
                T.set_num_threads(old_threads)
        return {n: env[n].float().numpy().copy() for n in self.output_names}


def activation_ranges(interp: Interpreter, input_name: str, clips: Iterable[np.ndarray],
                      progress: bool = False, total: int | None = None) -> dict[str, dict[str, float]]:
    """min/max of the input and of every non-const op output over `clips` (one run per clip).

    The same statistics coremltools' `linear_quantize_activations` gathers by running the model
    through Core ML (macOS only), here gathered through the interpreter.
    """
    import sys

    from rich.console import Console
    from rich.progress import Progress

    stats: dict[str, dict[str, float]] = {}

    def update(name: str, t: Any) -> None:
        if not t.is_floating_point() or t.numel() == 0:
            return
        lo, hi = (float(v) for v in t.aminmax())  # one pass over the tensor, not two
        s = stats.get(name)
        if s is None:
            stats[name] = {"rmin": lo, "rmax": hi}
        else:
            s["rmin"], s["rmax"] = min(s["rmin"], lo), max(s["rmax"], hi)

    # The real stderr: converters capture coremltools' chatter by redirecting sys.stderr.
    with Progress(disable=not progress, transient=True, console=Console(file=sys.__stderr__)) as bar:
        task = bar.add_task("W8A8 activation ranges (reference interpreter)", total=total)
        for clip in clips:
            x = np.asarray(clip, dtype=np.float32)
            if x.ndim == len(interp.input_shapes[input_name]) - 1:  # one clip without its batch axis
                x = x[None]
            update(input_name, interp._torch.from_numpy(np.ascontiguousarray(x)))
            interp.run({input_name: x}, observe=update)
            bar.advance(task)
    return stats


__all__ = ("Interpreter", "UnsupportedOpError", "RUNTIME", "activation_ranges")
