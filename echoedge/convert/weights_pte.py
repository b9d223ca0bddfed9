"""Reading a .pte file's weights: the program flatbuffer and each XNNPACK delegate's graph.

The program is read with executorch's own deserializer; XNNPACK's graphs have no Python reader in
executorch (it writes them through flatc from JSON), so they are read back the same way: flatc
--json with the schema that ships with executorch. Each constant tensor's dtype comes from its
graph value, its size from the delegate's constant data or the program's named data.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from echoedge.convert.weights import INT8, WeightBreakdown
from echoedge.errors import EchoEdgeError, first_line

# --- ExecuTorch -----------------------------------------------------------------------------------

# XNNPACK's datatype enum (backends/xnnpack/serialization/schema.fbs) -> the stored element type.
_XNN_DTYPES = {
    "xnn_datatype_fp32": "float32", "xnn_datatype_fp16": "float16", "xnn_datatype_bf16": "bfloat16",
    "xnn_datatype_qint8": INT8, "xnn_datatype_qcint8": INT8, "xnn_datatype_quint8": "uint8",
    "xnn_datatype_qint32": "int32", "xnn_datatype_qcint32": "int32", "xnn_datatype_qcint4": "int4",
    "xnn_datatype_qbint4": "int4", "xnn_datatype_qdint8": "int8 (dynamic)",
    "xnn_datatype_qpint8": "int8 (dynamic)", "xnn_datatype_int32": "int32",
}
# ExecuTorch ScalarType -> (name, bytes per element)
_ET_SCALARS = {0: ("uint8", 1), 1: (INT8, 1), 2: ("int16", 2), 3: ("int32", 4), 4: ("int64", 8),
               5: ("float16", 2), 6: ("float32", 4), 7: ("float64", 8), 11: ("bool", 1),
               15: ("bfloat16", 2)}
_XNN_HEAVY = ("Conv2d", "DepthwiseConv2d", "FullyConnected", "ConvTranspose2d")
_PORTABLE_HEAVY = ("convolution", "linear", "addmm", "mm", "conv2d")
# flatc writes non-finite floats (a quantized tensor's unused min/max) as bare words JSON lacks.
_NON_FINITE = re.compile(rb"(?<=[:\[,\s])(-?inf|-?infinity|nan)(?=[\s,\]}])")


def read_pte(path: Path) -> WeightBreakdown:
    """The weight breakdown of a .pte file (see echoedge.convert.weights)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = path.read_bytes()
    if data[4:6] != b"ET":  # the program flatbuffer's file identifier, "ET12" today
        raise EchoEdgeError(f"{path}: not an ExecuTorch program (no ET file identifier)")
    pte = deserialize_pte_binary(data)
    prog = pte.program
    named = {}
    if pte.named_data is not None:
        named = {k: len(pte.named_data.buffers[e.buffer_index]) for k, e in pte.named_data.pte_data.items()}
    by_dtype: Counter = Counter()
    count: Counter = Counter()
    ops: dict[str, Counter] = {}
    seen: set[str] = set()
    heavy = 0
    floats: list[str] = []
    macs_in = macs_out = 0
    for blob in prog.backend_delegate_data:
        graph = _xnn_graph(bytes(blob.data))
        if graph is None:
            continue
        values = [_xnn_tensor(v) for v in graph.get("xvalues", [])]
        consts = graph.get("constant_data", [])
        for v in values:
            idx = v.get("constant_buffer_idx") or 0
            if idx <= 0 or idx >= len(consts):
                continue
            entry = consts[idx]
            key = entry.get("named_key") or ""
            if key:  # named data is stored once per key, however many delegates read it
                if key in seen:
                    continue
                seen.add(key)
            size = int(entry.get("size") or 0) or named.get(key, 0)
            dt = _XNN_DTYPES.get(v.get("datatype", ""), v.get("datatype", "?"))
            by_dtype[dt] += size
            count[dt] += 1
        for node in graph.get("xnodes", []):
            kind = node.get("xnode_union_type", "?").removeprefix("XNN")
            u = node.get("xnode_union") or {}
            macs_in += _xnn_macs(kind, u, values)
            ops.setdefault("xnnpack." + kind, Counter())[_node_dtype(u, values)] += 1
            if kind in _XNN_HEAVY and 0 <= int(u.get("filter_id", -1)) < len(values):
                heavy += 1
                dt = _XNN_DTYPES.get(values[int(u["filter_id"])].get("datatype", ""), "?")
                if dt.startswith("float") or dt == "bfloat16":
                    floats.append(f"xnnpack.{kind} #{node.get('debug_handle', '?')} ({dt})")
    plan = prog.execution_plan[0]
    for value in plan.values:  # constants the portable kernels read
        t = value.val
        if type(t).__name__ != "Tensor" or not getattr(t, "data_buffer_idx", 0):
            continue
        name, size = _ET_SCALARS.get(int(t.scalar_type), (f"scalar{int(t.scalar_type)}", 4))
        n = 1
        for s in t.sizes:
            n *= int(s)
        by_dtype[name] += n * size
        count[name] += 1
    for chain in plan.chains:
        for ins in chain.instructions:
            call = ins.instr_args
            if type(call).__name__ != "KernelCall":
                continue
            name = plan.operators[call.op_index].name.removeprefix("aten::")
            dt = _first_tensor_dtype(call.args, plan.values)
            ops.setdefault("portable." + name, Counter())[dt] += 1
            macs_out += _portable_macs(name, call.args, plan.values)
            if name in _PORTABLE_HEAVY:
                # Outside XNNPACK a conv or linear computes in float; its weight is stored float
                # when it reads a float constant, int8 when it reads a dequantize's output.
                heavy += 1
                const = _float_constant_arg(call.args, plan.values)
                if const is not None:
                    floats.append(f"portable.{name} ({const})")
    # Named data is shared by delegates (one entry per key), so scale bytes are counted once.
    scales = sum(v for k, v in named.items() if k.startswith("scale_"))
    return WeightBreakdown("executorch", dict(by_dtype), dict(count), {k: dict(v) for k, v in ops.items()},
                           scales, "program flatbuffer and XNNPACK delegate graphs",
                           float_weight_layers=floats, heavy_layers=heavy,
                           delegated_mac_share=macs_in / (macs_in + macs_out) if macs_in + macs_out else None)


def _xnn_graph(blob: bytes) -> dict[str, Any] | None:
    """Decode one XNNPACK delegate payload's graph to a dict (None: not an XNNPACK payload)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader

    if blob[4:8] != XNNHeader.EXPECTED_MAGIC:
        return None
    h = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
    fb = blob[h.flatbuffer_offset : h.flatbuffer_offset + h.flatbuffer_size]
    return _flatc_json(fb, "executorch.backends.xnnpack.serialization", "schema.fbs")


def _flatc_json(buf: bytes, schema_package: str, schema_name: str) -> dict[str, Any]:
    # No Python reader of XNNPACK's graph schema ships with executorch (it writes it through
    # flatc from JSON), so read it back the same way: flatc --json with the shipped schema.
    from importlib import resources

    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    schema = resources.files(schema_package).joinpath(schema_name).read_bytes()
    with tempfile.TemporaryDirectory(prefix="echoedge-flatc-") as d:
        root = Path(d)
        (root / "schema.fbs").write_bytes(schema)
        (root / "graph.bin").write_bytes(buf)
        proc = subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--defaults-json", "--raw-binary", "-o", d,
                               str(root / "schema.fbs"), "--", str(root / "graph.bin")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise EchoEdgeError(f"flatc could not decode an XNNPACK graph: {first_line(proc.stderr)}")
        text = _NON_FINITE.sub(b"0", (root / "graph.json").read_bytes())
    return json.loads(text)


def _xnn_tensor(v: dict[str, Any]) -> dict[str, Any]:
    u = v.get("xvalue_union") or {}
    return u.get("tensor_value", u)  # quantized tensors wrap the plain tensor value


def _node_dtype(node: dict[str, Any], values: list[dict[str, Any]]) -> str:
    for key in ("input_id", "input1_id"):
        if key in node and 0 <= int(node[key]) < len(values):
            dt = values[int(node[key])].get("datatype", "")
            return _XNN_DTYPES.get(dt, dt or "?")
    return "-"


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _xnn_macs(kind: str, node: dict[str, Any], values: list[dict[str, Any]]) -> int:
    """Multiply-adds of one XNNPACK node (0 for ops that are not conv / linear / matmul)."""
    def dims(key: str) -> list[int]:
        i = int(node.get(key, -1))
        return list(values[i].get("dims") or []) if 0 <= i < len(values) else []

    out = _numel(dims("output_id"))
    if kind == "Conv2d":  # filter (O, kh, kw, I/groups)
        f = dims("filter_id")
        return out * _numel(f[1:]) if len(f) == 4 else 0
    if kind == "DepthwiseConv2d":  # filter (1, kh, kw, O)
        f = dims("filter_id")
        return out * f[1] * f[2] if len(f) == 4 else 0
    if kind == "FullyConnected":  # filter (O, I)
        f = dims("filter_id")
        return out * f[-1] if f else 0
    if kind == "BatchMatrixMultiply":  # (..., M, K) x (..., K, N)
        a = dims("input1_id")
        return out * a[-1] if a else 0
    return 0


def _portable_macs(name: str, args: list[int], values: list[Any]) -> int:
    """Multiply-adds of a portable matmul-like kernel from its operands' sizes (0 otherwise)."""
    mats = [list(values[a].val.sizes) for a in args
            if type(values[a].val).__name__ == "Tensor" and len(values[a].val.sizes) >= 2]
    if name in ("mm", "addmm", "bmm", "linear") and len(mats) >= 2:
        a, b = mats[-2], mats[-1]  # addmm(bias, a, b); the last two matrices are the product's
        return _numel(a) * b[-1]
    return 0


def _float_constant_arg(args: list[int], values: list[Any]) -> str | None:
    """The dtype of a float constant matrix among a kernel's arguments (its weight), or None."""
    for a in args:
        t = values[a].val
        if type(t).__name__ == "Tensor" and getattr(t, "data_buffer_idx", 0) and len(t.sizes) >= 2:
            name = _ET_SCALARS.get(int(t.scalar_type), ("?", 0))[0]
            if name.startswith("float") or name == "bfloat16":
                return name
    return None


def _first_tensor_dtype(args: list[int], values: list[Any]) -> str:
    for a in args:
        t = values[a].val
        if type(t).__name__ == "Tensor":
            return _ET_SCALARS.get(int(t.scalar_type), (f"scalar{int(t.scalar_type)}", 0))[0]
    return "-"
