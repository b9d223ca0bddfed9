"""Loading a Core ML ML program off macOS, and what the program declares.

A `.mlpackage` is plain data: coremltools loads its ML program on any OS into its MIL Python
representation (`milproto.load.load(spec, version, weights_dir)`), without Core ML's runtime.
`load_mil_program` does that; `program_info` summarises a loaded program (I/O, op histogram,
precision, quantization ops). coremltools is imported inside the functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.errors import EchoEdgeError, first_line

WEIGHTS_SUBDIR = os.path.join("Data", "com.apple.CoreML", "weights")
# The ML program spec inside a package (the converters rewrite it in place).
SPEC_FILE = os.path.join("Data", "com.apple.CoreML", "model.mlmodel")


@dataclass
class ProgramInfo:
    """What a loaded ML program declares: I/O names, shapes and the op histogram."""

    inputs: dict[str, list[int]]
    outputs: list[str]
    op_histogram: dict[str, int]
    precision: str  # "fp16" when any op output is fp16, else "fp32"
    spec_version: int
    quantization_ops: dict[str, int] = field(default_factory=dict)


QUANTIZATION_OPS = ("quantize", "dequantize", "constexpr_affine_dequantize",
                    "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_cast")


def load_mil_program(package: str | Path) -> tuple[Any, Any]:
    """(pymil Program, model spec) of a saved `.mlpackage`, without Core ML's runtime."""
    package = Path(package)
    if not package.is_dir():
        raise EchoEdgeError(f"{package}: Core ML package not found (an .mlpackage is a folder)")
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load
    except ImportError as e:
        raise EchoEdgeError(f"{package}: coremltools is not installed ({first_line(e)})") from None
    try:
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    except Exception as e:
        raise EchoEdgeError(f"{package}: not a readable Core ML package ({first_line(e)})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise EchoEdgeError(f"{package}: holds a '{spec.WhichOneof('Type')}' model; the interpreter "
                            "runs ML programs only")
    try:
        prog = load(spec, spec.specificationVersion, str(package / WEIGHTS_SUBDIR))
    except Exception as e:
        raise EchoEdgeError(f"{package}: coremltools could not load the ML program "
                            f"({first_line(e)})") from None
    return prog, spec


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    dt = var.dtype
    return types.builtin_to_string(dt) if dt is not None else "?"


def program_info(prog: Any, spec: Any | None = None) -> ProgramInfo:
    fn = prog.functions["main"]
    hist: dict[str, int] = {}
    fp16 = False
    for op in fn.operations:
        hist[op.op_type] = hist.get(op.op_type, 0) + 1
        if op.op_type != "const" and any(_dtype_name(o) == "fp16" for o in op.outputs):
            fp16 = True
    return ProgramInfo(
        inputs={k: [int(s) for s in v.shape] for k, v in fn.inputs.items()},
        outputs=[v.name for v in fn.outputs],
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        precision="fp16" if fp16 else "fp32",
        spec_version=int(spec.specificationVersion) if spec is not None else 0,
        quantization_ops={k: v for k, v in sorted(hist.items()) if k in QUANTIZATION_OPS},
    )


__all__ = ("ProgramInfo", "QUANTIZATION_OPS", "WEIGHTS_SUBDIR", "load_mil_program", "program_info")
