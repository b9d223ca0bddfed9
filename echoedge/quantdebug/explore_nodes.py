"""The nodes Model Explorer draws for an artefact's model file, under the ids its adapters give them.

A node-data overlay attaches by (graph id, node id) only, so the ids here must be the adapters'
own (checked against the installed adapters in tests/quantdebug/test_explore.py):

    .tflite  builtin_tflite_flatbuffer adapter: graph id = subgraph 0's name ("main"), node id =
             the operator's index in subgraph 0 ("0", "1", ...).
    .pte     pte_adapter_model_explorer (ExecuTorch's extension): graph id = execution plan name
             ("forward"), node id = "{plan}_{chain}_{instruction}"; each XNNPACK delegate call's
             graph has id "{model file name}::{that node id}" and node ids = the XNNPACK node's
             index in the delegate graph ("0", "1", ...).

The files are read here, not through the adapters, so the overlay JSON is written whether or not
the optional `explore` extra is installed: the flatbuffers with the schemas the runtimes ship
(ai_edge_litert's TFLite schema; executorch's program deserializer and XNNPACK schema, through
`convert.weights_pte`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echoedge.errors import DataError

CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "Conv2d", "DepthwiseConv2d"}
FC_OPS = {"FULLY_CONNECTED", "FullyConnected"}


@dataclass
class Node:
    """One node of the drawn graph."""

    graph: str  # Model Explorer graph id
    id: str  # Model Explorer node id within the graph
    op: str  # op name (TFLite builtin, XNNPACK node kind, or ExecuTorch operator)
    dtype: str  # what it computes in: its first input's element type
    conv_key: tuple[int, int, int, int] | None = None  # a conv's (out, in/groups, kh, kw)
    instruction: int | None = None  # .pte: the top-level instruction that runs it
    # .tflite: a conv's filter as float in torch layout (out, in/groups, kh, kw), int8 dequantized;
    # tells apart same-shaped convs that onnx2tf put in another order than the model's forward
    filter: Any = None


@dataclass
class FileGraph:
    """Every node of a model file in execution order (a delegate's nodes at its call)."""

    format: str  # "tflite" | "executorch"
    model_file: str
    nodes: list[Node]

    @property
    def graphs(self) -> list[str]:
        return list(dict.fromkeys(n.graph for n in self.nodes))

    def convs(self) -> list[Node]:
        return [n for n in self.nodes if n.conv_key is not None]


def read_graph(path: Path, fmt: str) -> FileGraph:
    """The drawn nodes of `path` (a .tflite or .pte); bad files become one DataError line."""
    if fmt == "tflite":
        return _read_tflite(path)
    if fmt == "executorch":
        return _read_pte(path)
    raise DataError(f"{path}: Model Explorer has no adapter for {fmt} artefacts "
                    "(explore handles ExecuTorch .pte and TFLite .tflite)")


# ------------------------------------------------------------------------------------- TFLite
def _read_tflite(path: Path) -> FileGraph:
    from ai_edge_litert import schema_py_generated as schema

    from echoedge.convert.tflite_ops import dtype_names, op_code_names

    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise DataError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    dtypes = dtype_names()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        codes = op_code_names(model)
        sg = model.Subgraphs(0)
        graph = (sg.Name() or b"main").decode("utf-8", "replace")
        nodes = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
            first = next((t for t in ins if t >= 0), -1)
            dtype = dtypes.get(sg.Tensors(first).Type(), "?") if first >= 0 else "-"
            name = codes[op.OpcodeIndex()]
            key = None
            if name in CONV_OPS and len(ins) > 1 and ins[1] >= 0:
                f = [int(s) for s in sg.Tensors(ins[1]).ShapeAsNumpy()]
                key = _conv_key(f, depthwise=name == "DEPTHWISE_CONV_2D")
            node = Node(graph, str(i), name, dtype, key)
            if key is not None:
                node.filter = _tflite_filter(model, sg.Tensors(ins[1]), name == "DEPTHWISE_CONV_2D")
            nodes.append(node)
    except DataError:
        raise
    except Exception as e:  # a truncated flatbuffer fails deep inside the generated reader
        raise DataError(f"{path}: corrupt TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return FileGraph("tflite", path.name, nodes)


def _tflite_filter(model: Any, t: Any, depthwise: bool) -> Any:
    """A conv filter tensor as float32 in torch layout; None when it is not a stored constant."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    b = model.Buffers(t.Buffer())
    if b is None or b.DataLength() == 0:
        return None
    shape = [int(s) for s in t.ShapeAsNumpy()]
    raw = b.DataAsNumpy().tobytes()
    if t.Type() == schema.TensorType.FLOAT32:
        w = np.frombuffer(raw, np.float32).reshape(shape)
    elif t.Type() == schema.TensorType.INT8:
        q = t.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.ones(1, np.float32)
        axis = q.QuantizedDimension() if q is not None else 0
        w = np.frombuffer(raw, np.int8).reshape(shape).astype(np.float32)
        bshape = [1] * 4
        bshape[axis] = -1
        w = w * (scale.reshape(bshape) if scale.size > 1 else scale[0])
    else:
        return None
    return w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)


def _conv_key(filt: list[int], depthwise: bool) -> tuple[int, int, int, int] | None:
    """(out, in/groups, kh, kw) of a TFLite / XNNPACK filter: (O, kh, kw, I) or depthwise (1, kh, kw, O)."""
    if len(filt) != 4:
        return None
    if depthwise:
        return (filt[3], 1, filt[1], filt[2])
    return (filt[0], filt[3], filt[1], filt[2])


# ------------------------------------------------------------------------------------ ExecuTorch
def _read_pte(path: Path) -> FileGraph:
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = path.read_bytes()
    if data[4:6] != b"ET":
        raise DataError(f"{path}: not an ExecuTorch program (no ET file identifier)")
    try:
        pte = deserialize_pte_binary(data)
    except Exception as e:
        raise DataError(f"{path}: corrupt ExecuTorch program ({type(e).__name__}: {e})") from None
    prog = pte.program
    plan = prog.execution_plan[0]
    nodes: list[Node] = []
    for c, chain in enumerate(plan.chains):
        for k, ins in enumerate(chain.instructions):
            call = ins.instr_args
            node_id = f"{plan.name}_{c}_{k}"
            kind = type(call).__name__
            if kind == "KernelCall":
                op = plan.operators[call.op_index].name
                nodes.append(Node(plan.name, node_id, op, _value_dtype(call.args, plan.values), None, k))
            elif kind == "DelegateCall":
                d = plan.delegates[call.delegate_index]
                nodes.append(Node(plan.name, node_id, d.id, "delegate", None, k))
                if d.id == "XnnpackBackend" and d.processed.location.name == "INLINE":
                    blob = bytes(prog.backend_delegate_data[d.processed.index].data)
                    nodes += _xnnpack_nodes(blob, f"{path.name}::{node_id}", k)
            else:  # moves, jumps, frees: drawn, nothing to say about them
                nodes.append(Node(plan.name, node_id, kind, "-", None, k))
    return FileGraph("executorch", path.name, nodes)


def _xnnpack_nodes(blob: bytes, graph: str, instruction: int) -> list[Node]:
    # convert.weights_pte reads XNNPACK graphs (flatc with executorch's schema); its dtype names too.
    from echoedge.convert.weights_pte import _node_dtype, _xnn_graph, _xnn_tensor

    g = _xnn_graph(blob)
    if g is None:
        return []
    values = [_xnn_tensor(v) for v in g.get("xvalues", [])]
    out = []
    for i, xn in enumerate(g.get("xnodes", [])):
        kind = xn.get("xnode_union_type", "?").removeprefix("XNN")
        u = xn.get("xnode_union") or {}
        key = None
        fid = int(u.get("filter_id", -1))
        if kind in CONV_OPS and 0 <= fid < len(values):
            key = _conv_key([int(d) for d in values[fid].get("dims") or []], depthwise=kind == "DepthwiseConv2d")
        out.append(Node(graph, str(i), kind, _node_dtype(u, values), key, instruction))
    return out


def _value_dtype(args: list[int], values: list) -> str:
    from echoedge.convert.weights_pte import _first_tensor_dtype

    return _first_tensor_dtype(args, values)


__all__ = ["CONV_OPS", "FC_OPS", "FileGraph", "Node", "read_graph"]
