"""What a model file stores its weights as: constant bytes and ops by dtype, read from the file.

"int8" on an artefact's name is the recipe's word; this module reads the file itself, so a layer
that silently stayed float shows up as float bytes. Per format:

- `.pte`: the program flatbuffer (`executorch.exir._serialize`), each XNNPACK delegate's graph
  (its own flatbuffer, decoded with the `flatc` that ships with executorch and the delegate's
  schema) with the dtype of every constant tensor and the byte size of its data (inline or in the
  program's named data), plus the program's own constant tensors (portable kernels).
- `.tflite`: every tensor of every subgraph that has a non-empty buffer (`ai_edge_litert`'s schema).
- `.mlpackage`: the MIL program's `const` and `constexpr_*` ops (`echoedge.mil.program`).

Weight bytes are every constant tensor the model computes with (conv and linear weights, biases,
norm parameters, embedded constants); quantization scales and zero points are counted apart
(`scale_bytes`). `int8_share` is int8 bytes over weight bytes. Ops are counted by the dtype they
compute in (their first input's dtype; "int8 (dynamic)" for XNNPACK's dynamically quantized
activations).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.errors import EchoEdgeError, first_line

INT8 = "int8"


@dataclass
class WeightBreakdown:
    """Constant bytes by dtype and op counts by compute dtype of one model file."""

    format: str
    bytes_by_dtype: dict[str, int]
    tensors_by_dtype: dict[str, int]
    ops_by_dtype: dict[str, dict[str, int]]  # op -> {dtype: count}
    scale_bytes: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)
    # Conv / depthwise conv / linear (fully connected) ops whose weight the file stores as float
    # ("op #index (weight dtype)"): empty when every heavy layer's weight is integer.
    float_weight_layers: list[str] = field(default_factory=list)
    heavy_layers: int = 0  # conv / linear ops with a constant weight, float or not
    # Multiply-adds of conv / linear / matmul ops inside the delegate, over all of them (None where
    # the format decides delegation at load time, as TFLite's interpreter does).
    delegated_mac_share: float | None = None

    @property
    def weight_bytes(self) -> int:
        return int(sum(self.bytes_by_dtype.values()))

    @property
    def int8_share(self) -> float | None:
        total = self.weight_bytes
        return self.bytes_by_dtype.get(INT8, 0) / total if total else None

    def to_dict(self) -> dict[str, Any]:
        share = self.int8_share
        return {"format": self.format, "source": self.source, "weight_bytes": self.weight_bytes,
                "int8_share": round(share, 6) if share is not None else None,
                "bytes_by_dtype": dict(sorted(self.bytes_by_dtype.items())),
                "tensors_by_dtype": dict(sorted(self.tensors_by_dtype.items())),
                "scale_bytes": int(self.scale_bytes),
                "ops_by_dtype": {op: dict(sorted(c.items())) for op, c in sorted(self.ops_by_dtype.items())},
                "heavy_layers": int(self.heavy_layers),
                "delegated_mac_share": (round(self.delegated_mac_share, 6)
                                        if self.delegated_mac_share is not None else None),
                "float_weight_layers": list(self.float_weight_layers),
                "notes": list(self.notes)}


def weight_breakdown(path: str | Path, fmt: str) -> WeightBreakdown:
    """Read `path` (a .pte file, a .tflite file or an .mlpackage folder) of format `fmt`."""
    path = Path(path)
    from echoedge.convert.weights_pte import read_pte

    return read_model_file(path, fmt, {"executorch": read_pte, "tflite": _tflite, "coreml": _mlpackage},
                           "weights")


def read_model_file(path: Path, fmt: str, readers: dict[str, Any], what: str, *args: Any) -> Any:
    """Call the reader of `fmt` on `path`; every failure is one EchoEdgeError naming the file."""
    if fmt not in readers:
        raise EchoEdgeError(f"{path}: no {what} reader for format {fmt!r}")
    if not path.exists():
        raise EchoEdgeError(f"{path}: model file not found")
    try:
        return readers[fmt](path, *args)
    except EchoEdgeError:
        raise
    except Exception as e:  # a truncated or foreign file fails deep inside a flatbuffer reader
        raise EchoEdgeError(f"{path}: cannot read its {what} ({type(e).__name__}: {first_line(e)})") from None


def breakdown_table(b: dict[str, Any]) -> str:
    """A short text report of a breakdown dict (`WeightBreakdown.to_dict()` or a manifest's)."""
    total = b.get("weight_bytes") or 0
    share = b.get("int8_share")
    lines = [f"weights: {total / 1e6:.3f} MB in {sum(b['tensors_by_dtype'].values())} constant tensors, "
             f"{'-' if share is None else f'{100 * share:.1f} %'} int8 (read from {b.get('source') or 'the file'})"]
    for dt, n in sorted(b["bytes_by_dtype"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {dt:<16} {n / 1e6:9.3f} MB  {b['tensors_by_dtype'].get(dt, 0):5d} tensors"
                     f"  {100 * n / total if total else 0:5.1f} %")
    if "heavy_layers" in b:
        floats = b.get("float_weight_layers") or []
        lines.append(f"conv/linear layers: {b['heavy_layers']}, weights stored float: {len(floats)}"
                     + (f" ({', '.join(floats[:6])}{', ...' if len(floats) > 6 else ''})" if floats else ""))
    if b.get("delegated_mac_share") is not None:
        lines.append(f"multiply-adds in the delegate: {100 * b['delegated_mac_share']:.2f} %")
    if b.get("scale_bytes"):
        lines.append(f"  (+ {b['scale_bytes'] / 1e3:.1f} kB of quantization scales)")
    ops = b.get("ops_by_dtype") or {}
    if ops:
        width = max(len(op) for op in ops)
        lines.append("ops by compute dtype:")
        for op, c in sorted(ops.items(), key=lambda kv: -sum(kv[1].values())):
            lines.append(f"  {op:<{width}}  " + ", ".join(f"{dt} x{n}" for dt, n in sorted(c.items())))
    lines += [f"note: {n}" for n in b.get("notes") or []]
    return "\n".join(lines)


# --- TFLite ---------------------------------------------------------------------------------------

_TFLITE_SIZES = {"float32": 4, "float16": 2, "int32": 4, "int64": 8, INT8: 1, "uint8": 1, "int16": 2,
                 "bool": 1, "float64": 8, "int4": 0.5}


_TFLITE_HEAVY = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


def _tflite(path: Path) -> WeightBreakdown:
    from ai_edge_litert import schema_py_generated as schema

    from echoedge.convert.tflite_ops import inspect_tflite

    info = inspect_tflite(path)  # validates the identifier and names ops with their dtypes
    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    by_dtype: Counter = Counter()
    count: Counter = Counter()
    scales = 0
    seen: set[int] = set()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            b = t.Buffer()
            if b in seen:  # a buffer shared by two tensors is stored once
                continue
            buffer = model.Buffers(b)
            size = buffer.DataLength() if buffer is not None else 0
            if not size and buffer is not None and buffer.Size():  # stored outside the flatbuffer
                size = int(buffer.Size())
            if not size:
                continue
            seen.add(b)
            dt = names.get(t.Type(), "?")
            by_dtype[dt] += size
            count[dt] += 1
            q = t.Quantization()
            if q is not None:
                scales += 4 * q.ScaleLength() + 8 * q.ZeroPointLength()
    ops: dict[str, Counter] = {}
    heavy = 0
    floats: list[str] = []
    for op in info.ops:
        if op.op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        ops.setdefault(op.op, Counter())[op.compute_dtype or "-"] += 1
        if op.op in _TFLITE_HEAVY and len(op.inputs) > 1:
            heavy += 1
            if op.inputs[1] in ("float32", "float16"):  # the filter / weights tensor
                floats.append(f"{op.op} #{op.index} ({op.inputs[1]})")
    return WeightBreakdown("tflite", dict(by_dtype), dict(count), {k: dict(v) for k, v in ops.items()},
                           scales, "flatbuffer tensors with data", float_weight_layers=floats,
                           heavy_layers=heavy)


# --- Core ML --------------------------------------------------------------------------------------


def _mlpackage(path: Path) -> WeightBreakdown:
    import numpy as np

    from echoedge.mil.program import load_mil_program

    prog, _ = load_mil_program(path)
    by_dtype: Counter = Counter()
    count: Counter = Counter()
    ops: dict[str, Counter] = {}
    scales = 0
    heavy = 0
    floats: list[str] = []

    def add(arr: Any) -> None:
        a = np.asarray(arr)
        dt = str(a.dtype)
        by_dtype[dt] += int(a.nbytes)
        count[dt] += 1

    for fn in prog.functions.values():
        for op in fn.operations:
            kind = op.op_type
            if kind == "const":
                out = op.outputs[0]
                if any(c.op_type.startswith("constexpr_") for c in out.child_ops):
                    continue  # the data, scale or zero point of a constexpr: counted there
                val = out.val
                if val is not None and np.ndim(val) > 0:  # scalars are op attributes, not weights
                    add(val)
            elif kind.startswith("constexpr_"):
                data = next((getattr(op, k) for k in ("quantized_data", "data", "source_val")
                             if getattr(op, k, None) is not None), None)
                if data is not None and data.val is not None:
                    add(data.val)
                for k in ("scale", "zero_point", "offset"):
                    p = getattr(op, k, None)
                    if p is not None and p.val is not None:
                        scales += int(np.asarray(p.val).nbytes)
            else:
                dt = _mil_dtype(op)
                ops.setdefault(kind, Counter())[dt] += 1
                weight = getattr(op, "weight", None)
                if kind in ("conv", "linear", "conv_transpose") and weight is not None:
                    heavy += 1
                    src = weight.op.op_type if weight.op is not None else "input"
                    if src == "const":  # a constexpr_* source holds the weight quantized
                        floats.append(f"{kind} {op.name} ({_mil_var_dtype(weight)})")
    return WeightBreakdown("coreml", dict(by_dtype), dict(count), {k: dict(v) for k, v in ops.items()},
                           scales, "MIL program constants", float_weight_layers=floats,
                           heavy_layers=heavy)


def _mil_var_dtype(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype) if getattr(var, "dtype", None) is not None else "?"


def _mil_dtype(op: Any) -> str:
    from coremltools.converters.mil.mil import types

    for v in op.inputs.values():
        v = v[0] if isinstance(v, (list, tuple)) and v else v
        t = getattr(v, "dtype", None)
        if t is not None and getattr(v, "val", None) is None:  # the first non-constant input
            return types.builtin_to_string(t)
    return "-"
