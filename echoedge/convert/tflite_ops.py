"""What is inside a .tflite file: every op with its input/output dtypes, read from the flatbuffer.

The file is read with the schema that ships with `ai_edge_litert` (`schema_py_generated`), not by
loading an interpreter: an interpreter refuses to prepare a Flex op, and the point here is to name
such ops, not to trip over them.

Checks (issue 5): no artefact of any precision may hold a Flex (select-TF) op -- the stock LiteRT
interpreter cannot run it -- and an int8 artefact may hold no float CONV_2D, DEPTHWISE_CONV_2D or
FULLY_CONNECTED: a file is int8 because of what its heavy ops compute, not because of its name
(onnx2tf's "dynamic range" file keeps float activations and must never pass as int8). The one
exception is a *scoped* int8 file (`check_scoped_int8`, scope from echoedge.convert.tflite_int8):
every heavy op inside the recipe's int8 scope must be integer, and the float heavy ops outside it
are recorded in the manifest as float by recipe. `tflite_graph` reads subgraph 0 with tensor names
and constant weights, which the scoped check and the int8 scope plan match on.

An op counts as integer when its first input is an integer tensor (int8/uint8/int16); QUANTIZE and
DEQUANTIZE convert between domains and are left out of the fraction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

HEAVY_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")
INTEGER_DTYPES = ("int8", "uint8", "int16")
FLOAT_DTYPES = ("float32", "float16")


@dataclass
class OpRecord:
    index: int
    op: str  # builtin name, or the custom code ("FlexErf")
    inputs: list[str]  # dtypes of the inputs that exist ("" for an omitted optional input)
    outputs: list[str]

    @property
    def is_flex(self) -> bool:
        return self.op.startswith("Flex")

    @property
    def compute_dtype(self) -> str:
        if self.is_hybrid:  # the float input is quantized per call; the multiply-adds are int8
            return self.inputs[1]
        return self.inputs[0] if self.inputs and self.inputs[0] else (self.outputs[0] if self.outputs else "")

    @property
    def is_hybrid(self) -> bool:
        """A heavy op with float activations and int8 weights (tflite_hybrid_fc)."""
        return (self.op in HEAVY_OPS and len(self.inputs) > 1 and self.inputs[0] in FLOAT_DTYPES
                and self.inputs[1] in INTEGER_DTYPES)


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class TFLiteOps:
    """The op inventory of one .tflite file."""

    path: str
    ops: list[OpRecord]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    subgraphs: int = 1
    histogram: dict[str, dict[str, int]] = field(default_factory=dict)  # op -> {"in->out": n}

    @property
    def flex_ops(self) -> list[str]:
        return sorted({o.op for o in self.ops if o.is_flex})

    @property
    def compute_ops(self) -> list[OpRecord]:
        return [o for o in self.ops if o.op not in CONVERSION_OPS]

    @property
    def int8_fraction(self) -> float:
        ops = self.compute_ops
        return sum(o.compute_dtype in INTEGER_DTYPES for o in ops) / len(ops) if ops else 0.0

    @property
    def float_ops(self) -> dict[str, int]:
        """Compute ops that run on float tensors, with counts."""
        return dict(sorted(Counter(o.op for o in self.compute_ops
                                   if o.compute_dtype in FLOAT_DTYPES).items()))

    def float_heavy_ops(self) -> list[str]:
        return [f"{o.op}#{o.index} ({o.compute_dtype})" for o in self.compute_ops
                if o.op in HEAVY_OPS and o.compute_dtype not in INTEGER_DTYPES]

    def summary(self) -> dict[str, Any]:
        return {"ops": len(self.ops), "subgraphs": self.subgraphs,
                "int8_op_fraction": round(self.int8_fraction, 4),
                "ops_left_in_float": self.float_ops, "flex_ops": self.flex_ops,
                "histogram": self.histogram}

    def table(self) -> str:
        rows = sorted(self.histogram.items())
        width = max([len(op) for op, _ in rows] + [2])
        lines = [f"{'op':<{width}}  dtypes (inputs -> outputs): count"]
        for op, by in rows:
            lines.append(f"{op:<{width}}  " + ", ".join(f"{k}: {n}" for k, n in sorted(by.items())))
        lines.append(f"int8 op fraction {self.int8_fraction:.2f} ({len(self.compute_ops)} compute ops)")
        return "\n".join(lines)


def _enum_names(cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def dtype_names() -> dict[int, str]:
    """TFLite TensorType values -> lower-case names ("int8", "float32", ...)."""
    from ai_edge_litert import schema_py_generated as schema

    return {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}


def op_code_names(model: Any) -> list[str]:
    """The operator name of each operator code of a flatbuffer `Model` (custom ops by their code)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = _enum_names(schema.BuiltinOperator)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # Builtin codes > 127 live in BuiltinCode; older files only fill the deprecated byte.
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = builtin.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = (oc.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        codes.append(name)
    return codes


def object_op_names(model: Any) -> list[str]:
    """op_code_names for a model in flatbuffer_utils' object form (ModelT): the builtin name of
    each operator code (the file rewrites, tflite_hybrid_fc and tflite_output_shift, work on it)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = _enum_names(schema.BuiltinOperator)
    return [builtin.get(max(int(c.builtinCode), int(c.deprecatedBuiltinCode)), "?")
            for c in model.operatorCodes]


def inspect_tflite(path: str | Path) -> TFLiteOps:
    """Read every operator of every subgraph of a .tflite file, with tensor dtypes."""
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise EchoEdgeError(f"{path}: cannot read ({e.strerror})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise EchoEdgeError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    dtypes = dtype_names()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        codes = op_code_names(model)
        ops: list[OpRecord] = []
        hist: dict[str, Counter] = {}
        inputs: list[TensorInfo] = []
        outputs: list[TensorInfo] = []
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)

            def dt(t: int) -> str:
                return "" if t < 0 else dtypes.get(sg.Tensors(t).Type(), "?")

            for i in range(sg.OperatorsLength()):
                op = sg.Operators(i)
                rec = OpRecord(len(ops), codes[op.OpcodeIndex()],
                               [dt(int(t)) for t in op.InputsAsNumpy()] if op.InputsLength() else [],
                               [dt(int(t)) for t in op.OutputsAsNumpy()] if op.OutputsLength() else [])
                ops.append(rec)
                key = f"{'/'.join(d for d in rec.inputs if d)}->{'/'.join(rec.outputs)}"
                hist.setdefault(rec.op, Counter())[key] += 1
            if s == 0:
                inputs = [_tensor(sg.Tensors(int(t)), dtypes) for t in sg.InputsAsNumpy()]
                outputs = [_tensor(sg.Tensors(int(t)), dtypes) for t in sg.OutputsAsNumpy()]
    except EchoEdgeError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer raises from deep inside
        raise EchoEdgeError(f"{path}: corrupt TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return TFLiteOps(str(path), ops, inputs, outputs, model.SubgraphsLength(),
                     {k: dict(v) for k, v in sorted(hist.items())})


def _tensor(t: Any, dtypes: dict[int, str]) -> TensorInfo:
    q = t.Quantization()
    scale = zp = None
    if q is not None and q.ScaleLength() == 1:  # per-tensor quantized I/O
        scale, zp = float(q.Scale(0)), int(q.ZeroPoint(0))
    name = t.Name().decode("utf-8", "replace") if t.Name() else ""
    return TensorInfo(name, [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else [],
                      dtypes.get(t.Type(), "?"), scale, zp)


def check_ops(info: TFLiteOps, precision: str) -> None:
    """Raise EchoEdgeError listing the offending ops if the file breaks its precision's rules."""
    problems = []
    if info.flex_ops:
        problems.append("Flex (select-TF) ops the stock LiteRT interpreter cannot run: "
                        + ", ".join(info.flex_ops))
    if precision.startswith("int8"):
        heavy = info.float_heavy_ops()
        if heavy:
            shown = ", ".join(heavy[:8]) + (f" and {len(heavy) - 8} more" if len(heavy) > 8 else "")
            problems.append(f"float heavy ops in a file labelled {precision}: {shown}")
        if precision == "int8-full":
            bad_io = [t.name or "?" for t in [*info.inputs, *info.outputs] if t.dtype != "int8"]
            if bad_io:
                problems.append("non-int8 I/O in an all-integer file: " + ", ".join(bad_io))
    if problems:
        raise EchoEdgeError(f"{info.path}: " + "; ".join(problems))


def check_tflite(path: str | Path, precision: str) -> TFLiteOps:
    """inspect_tflite + check_ops."""
    info = inspect_tflite(path)
    check_ops(info, precision)
    return info


@dataclass
class GraphOp:
    """One operator of subgraph 0: its op name and its input and output tensor indices."""

    op: str
    inputs: list[int]
    outputs: list[int]


def tflite_graph(buf: bytes) -> tuple[list[GraphOp], list[str], Callable[[int], np.ndarray | None]]:
    """Ops (subgraph 0), tensor names, and a reader of constant float32 tensors."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(buf, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items()
               if not k.startswith("_") and isinstance(v, int)}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append(builtin.get(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())), "?"))
    sg = model.Subgraphs(0)
    ops = [GraphOp(codes[o.OpcodeIndex()],
                   [int(t) for t in o.InputsAsNumpy()] if o.InputsLength() else [],
                   [int(t) for t in o.OutputsAsNumpy()] if o.OutputsLength() else [])
           for o in (sg.Operators(i) for i in range(sg.OperatorsLength()))]
    names = [(sg.Tensors(i).Name() or b"").decode("utf-8", "replace") for i in range(sg.TensorsLength())]

    def const(t: int) -> np.ndarray | None:
        if t < 0:
            return None
        ten = sg.Tensors(t)
        if ten.Type() != schema.TensorType.FLOAT32:
            return None
        b = model.Buffers(ten.Buffer())
        if b is None or b.DataLength() == 0:
            return None
        shape = [int(x) for x in ten.ShapeAsNumpy()] if ten.ShapeLength() else []
        return np.frombuffer(b.DataAsNumpy().tobytes(), np.float32).reshape(shape)

    return ops, names, const


def check_scoped_int8(path: str | Path, heavy_nodes: Sequence[str]) -> dict[str, Any]:
    """The op check of a scoped int8 file: no Flex op, every in-scope conv (named by its output
    tensor) int8. The float heavy ops outside the scope are returned as 'float by recipe'."""
    path = Path(path)
    info = inspect_tflite(path)
    ops, names, _ = tflite_graph(path.read_bytes())
    wanted = set(heavy_nodes)
    problems = []
    if info.flex_ops:
        problems.append("Flex (select-TF) ops the stock LiteRT interpreter cannot run: "
                        + ", ".join(info.flex_ops))
    seen: set[str] = set()
    float_in, by_recipe = [], []
    for rec, o in zip(info.ops, ops):  # subgraph 0 comes first in both
        if rec.op not in HEAVY_OPS:
            continue
        name = names[o.outputs[0]] if o.outputs else ""
        is_int = rec.compute_dtype in INTEGER_DTYPES
        if name in wanted:
            seen.add(name)
            if not is_int:
                float_in.append(f"{rec.op}#{rec.index} ({rec.compute_dtype})")
        elif not is_int:
            by_recipe.append(f"{rec.op}#{rec.index}")
    if float_in:
        shown = ", ".join(float_in[:8]) + (f" and {len(float_in) - 8} more" if len(float_in) > 8 else "")
        problems.append(f"float heavy ops inside the int8 scope of a file labelled int8: {shown}")
    if len(seen) != len(wanted):
        problems.append(f"{len(wanted) - len(seen)} of the {len(wanted)} in-scope convs are missing")
    if problems:
        raise EchoEdgeError(f"{path}: " + "; ".join(problems))
    counts: dict[str, int] = {}
    for r in by_recipe:
        counts[r.split("#")[0]] = counts.get(r.split("#")[0], 0) + 1
    return {"int8_heavy_ops_in_scope": len(seen), "float_by_recipe": dict(sorted(counts.items())),
            "float_by_recipe_ops": by_recipe}


__all__ = ["HEAVY_OPS", "GraphOp", "OpRecord", "TFLiteOps", "TensorInfo", "check_ops",
           "check_scoped_int8", "check_tflite", "inspect_tflite", "tflite_graph"]
