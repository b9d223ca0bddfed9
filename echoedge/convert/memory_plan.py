"""Planned activation memory of a model file: what the format itself states, read from the file.

Weights are echoedge.convert.weights; this module is about the tensors a call writes. Per format,
`planned_bytes` is the figure the format states where it states one:

- `.pte`: the method's memory-planned buffers, `ExecutionPlan.non_const_buffer_sizes[1:]` of the
  program flatbuffer, the field the runtime's `MethodMeta::memory_planned_buffer_size` returns (the
  Python binding of executorch 1.5 does not expose it, so it is read from the file). They hold
  the values passed between delegate calls and portable kernels; a value inside an XNNPACK
  delegate lives in XNNPACK's own workspace, which no field states.
- `.tflite`: the arena of the interpreter the runner uses (XNNPACK applied), after
  `allocate_tensors`: the address span of its non-constant tensors. No LiteRT Python API returns
  the arena size, so it is read from where the arena planner put the tensors. Values inside a
  delegated partition live in XNNPACK's workspace, not in the arena.
- `.mlpackage`: no size is stated anywhere, so it is an estimate (`estimate=True`): the liveness
  peak of the MIL program's tensors (below).

Every format also gets `graph_peak_bytes`, an estimate that ignores delegation: walking the ops in
execution order, the largest sum of bytes of activation tensors alive at once (produced, and not
yet read for the last time; graph inputs live from the start, graph outputs to the end). For a
`.pte` it is the largest such peak among the XNNPACK delegate graphs and the program's planned
values. `float_tensors` lists the largest activation tensors that are not int8 (the ones that
keep an int8 artefact's working memory above a quarter of fp32's), `bytes_by_dtype` sums every
activation tensor (not a peak) by dtype.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from echoedge.errors import EchoEdgeError

TOP_FLOAT = 8  # how many of the largest float activation tensors a plan names
_INT8 = ("int8", "uint8")


@dataclass
class ActivationPlan:
    """Planned activation memory of one model file (see the module docstring)."""

    format: str
    planned_bytes: int
    how: str  # what planned_bytes is, in words
    estimate: bool  # True where echo-edge computed it rather than reading a figure of the format
    graph_peak_bytes: int
    bytes_by_dtype: dict[str, int]
    float_tensors: list[dict[str, Any]]  # {name, dtype, shape, bytes}, largest first
    buffers: list[int] = field(default_factory=list)  # ExecuTorch's planned buffers, one per memory id
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "planned_bytes": int(self.planned_bytes), "how": self.how,
                "estimate": bool(self.estimate), "graph_peak_bytes": int(self.graph_peak_bytes),
                "bytes_by_dtype": dict(sorted(self.bytes_by_dtype.items())),
                "float_bytes": int(sum(n for d, n in self.bytes_by_dtype.items() if d not in _INT8)),
                "float_tensors": list(self.float_tensors), "buffers": [int(b) for b in self.buffers],
                "notes": list(self.notes)}


def activation_plan(path: str | Path, fmt: str, threads: int = 1) -> ActivationPlan:
    """Read `path` (a .pte file, a .tflite file or an .mlpackage folder) of format `fmt`."""
    path = Path(path)
    from echoedge.convert.weights import read_model_file

    return read_model_file(path, fmt, {"executorch": _pte, "tflite": _tflite, "coreml": _mlpackage},
                           "activation memory", threads)


def liveness_peak(steps: Sequence[tuple[Sequence[Any], Sequence[Any]]], sizes: dict[Any, int],
                  inputs: Iterable[Any] = (), outputs: Iterable[Any] = ()) -> int:
    """The largest sum of `sizes` alive at once over `steps` ((reads, writes) per op, in order).

    A tensor lives from the step that writes it (graph `inputs` from the start) to the last step
    that reads it (graph `outputs` to the end); a written tensor nobody reads dies at once. Keys
    absent from `sizes` (constants) cost nothing.
    """
    end = len(steps)
    last: dict[Any, int] = {}
    for i, (reads, _) in enumerate(steps):
        for k in reads:
            last[k] = i
    for k in outputs:
        last[k] = end
    live = {k for k in inputs if k in sizes}
    cur = sum(sizes[k] for k in live)
    peak = cur
    for i, (reads, writes) in enumerate(steps):
        for k in writes:
            if k in sizes and k not in live:
                live.add(k)
                cur += sizes[k]
        peak = max(peak, cur)
        for k in {*reads, *writes}:
            if k in live and last.get(k, i) <= i:
                live.discard(k)
                cur -= sizes[k]
    return peak


def plan_lines(p: dict[str, Any]) -> list[str]:
    """Short text of a plan dict (`ActivationPlan.to_dict()` or a manifest's `details.memory`)."""
    if p.get("error"):
        return [f"activation memory: not read ({p['error']})"]
    label = " (estimate)" if p.get("estimate") else ""
    lines = [f"activation memory: {p['planned_bytes'] / 1e6:.2f} MB planned{label}: {p['how']}",
             f"  graph liveness peak (estimate, ignores delegation): {p['graph_peak_bytes'] / 1e6:.2f} MB; "
             "activation bytes by dtype: " + ", ".join(f"{d} {n / 1e6:.2f} MB" for d, n in p["bytes_by_dtype"].items())]
    floats = p.get("float_tensors") or []
    if floats and set(p["bytes_by_dtype"]) - {"float32", "fp32"}:  # int8 or fp16: what stays wider
        lines.append("  largest tensors that stay float: " + ", ".join(
            f"{t['name']} {t['dtype']} {'x'.join(map(str, t['shape']))} {t['bytes'] / 1e6:.2f} MB" for t in floats[:4]))
    lines += [f"  note: {n}" for n in p.get("notes") or []]
    return lines


def _top_float(tensors: Iterable[tuple[str, str, Sequence[int], int]]) -> list[dict[str, Any]]:
    floats = sorted((t for t in tensors if t[1] not in _INT8 and t[1].startswith(("float", "fp", "bfloat"))),
                    key=lambda t: -t[3])
    return [{"name": n, "dtype": d, "shape": [int(s) for s in shp], "bytes": int(b)}
            for n, d, shp, b in floats[:TOP_FLOAT]]


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return n


# --- ExecuTorch -----------------------------------------------------------------------------------

_XNN_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int32": 4,
              "int8 (dynamic)": 1, "int4": 1}


def _pte(path: Path, threads: int) -> ActivationPlan:
    from executorch.exir._serialize._program import deserialize_pte_binary

    from echoedge.convert.weights_pte import _ET_SCALARS, _XNN_DTYPES, _xnn_graph, _xnn_tensor

    data = path.read_bytes()
    if data[4:6] != b"ET":
        raise EchoEdgeError(f"{path}: not an ExecuTorch program (no ET file identifier)")
    prog = deserialize_pte_binary(data).program
    plan = prog.execution_plan[0]
    buffers = [int(b) for b in plan.non_const_buffer_sizes[1:]]  # [0] is reserved by the format
    tensors: list[tuple[str, str, Sequence[int], int]] = []
    by_dtype: Counter = Counter()
    peaks = [0]
    for d, blob in enumerate(prog.backend_delegate_data):
        graph = _xnn_graph(bytes(blob.data))
        if graph is None:
            continue
        steps, made_by = [], {}
        for node in graph.get("xnodes", []):
            u = node.get("xnode_union") or {}
            ids = [(k, int(v)) for k, v in u.items() if k.endswith("_id") and isinstance(v, int)]
            steps.append(([i for k, i in ids if "output" not in k], [i for k, i in ids if "output" in k]))
            made_by.update((i, node.get("xnode_union_type", "?").removeprefix("XNN")) for i in steps[-1][1])
        sizes: dict[int, int] = {}
        for v in graph.get("xvalues", []):
            t = _xnn_tensor(v)
            if (t.get("constant_buffer_idx") or 0) > 0:
                continue  # a weight
            dt = _XNN_DTYPES.get(t.get("datatype", ""), t.get("datatype", "?"))
            shape = [int(s) for s in t.get("dims") or []]
            n = _numel(shape) * _XNN_BYTES.get(dt, 4)
            sizes[int(t.get("id_out", -1))] = n
            if not int(t.get("flags") or 0):  # external I/O is the program's planned values, counted below
                by_dtype[dt] += n
                vid = int(t.get("id_out", -1))
                tensors.append((f"delegate {d} value {vid} ({made_by.get(vid, 'input')} output)", dt, shape, n))
        peaks.append(liveness_peak(steps, sizes, graph.get("input_ids") or [], graph.get("output_ids") or []))
    planned_sizes: dict[int, int] = {}
    for i, value in enumerate(plan.values):
        t = value.val
        if type(t).__name__ != "Tensor" or t.allocation_info is None:
            continue  # constants and unplanned values
        name, size = _ET_SCALARS.get(int(t.scalar_type), (f"scalar{int(t.scalar_type)}", 4))
        planned_sizes[i] = _numel(t.sizes) * size
        by_dtype[name] += planned_sizes[i]
        tensors.append((f"planned value {i}", name, list(t.sizes), planned_sizes[i]))
    steps = []
    for chain in plan.chains:
        for ins in chain.instructions:
            args = list(getattr(ins.instr_args, "args", []) or [])
            # A call's last argument is its out tensor (portable out-variants); a delegate call
            # passes its inputs then its outputs, so treat every planned argument as read and written.
            steps.append((args, args[-1:] if type(ins.instr_args).__name__ == "KernelCall" else args))
    peaks.append(liveness_peak(steps, planned_sizes, plan.inputs, plan.outputs))
    return ActivationPlan(
        "executorch", sum(buffers),
        f"{len(buffers)} memory-planned buffer(s) of the method (program flatbuffer, as MethodMeta states them)",
        False, max(peaks), dict(by_dtype), _top_float(tensors), buffers,
        ["values inside the XNNPACK delegates live in XNNPACK's workspace, not in the planned buffers"])


# --- TFLite ---------------------------------------------------------------------------------------

_TFL_BYTES = {"float32": 4, "float16": 2, "int32": 4, "int64": 8, "int8": 1, "uint8": 1, "int16": 2,
              "bool": 1, "float64": 8}


def _tflite(path: Path, threads: int) -> ActivationPlan:
    from ai_edge_litert import schema_py_generated as schema

    from echoedge.convert.tflite_interpreter import make_interpreter

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    sg = model.Subgraphs(0)
    sizes: dict[int, int] = {}
    tensors = []
    by_dtype: Counter = Counter()
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = model.Buffers(t.Buffer())
        if buf is not None and (buf.DataLength() or buf.Size()):
            continue  # a constant
        dt = names.get(t.Type(), "?")
        shape = [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else []
        sizes[i] = _numel(shape) * _TFL_BYTES.get(dt, 4)
        by_dtype[dt] += sizes[i]
        tensors.append(((t.Name() or b"").decode(errors="replace") or f"tensor {i}", dt, shape, sizes[i]))
    steps = [([int(x) for x in op.InputsAsNumpy() if x >= 0] if op.InputsLength() else [],
              [int(x) for x in op.OutputsAsNumpy() if x >= 0] if op.OutputsLength() else [])
             for op in (sg.Operators(j) for j in range(sg.OperatorsLength()))]
    peak = liveness_peak(steps, sizes, [int(x) for x in sg.InputsAsNumpy()], [int(x) for x in sg.OutputsAsNumpy()])
    arena, note = _tflite_arena(make_interpreter(path, threads=threads), set(sizes))
    return ActivationPlan(
        "tflite", arena, "the interpreter's arena after allocate_tensors (XNNPACK applied): address span "
        "of its non-constant tensors", False, peak, dict(by_dtype), _top_float(tensors),
        notes=[note] if note else ["values inside XNNPACK-delegated partitions live in XNNPACK's "
                                   "workspace, not in the arena"])


def _tflite_arena(it: Any, activations: set[int]) -> tuple[int, str]:
    """(bytes, note) of the arena, read from where the interpreter placed its tensors."""
    spans = []
    for d in it.get_tensor_details():
        if d["index"] not in activations:
            continue
        try:
            a = it.tensor(d["index"])()
        except ValueError:  # "Tensor data is null": a value a delegate holds, not in the arena
            continue
        spans.append((a.__array_interface__["data"][0], a.nbytes))
    if not spans:
        return 0, "no tensor in the arena"
    total = sum(n for _, n in spans)
    span = max(a + n for a, n in spans) - min(a for a, _ in spans)
    if span > total:  # not one block: the tensors cannot share, so their sum bounds what they hold
        return total, "the arena tensors are not in one block: the sum of their sizes is given"
    return span, ""


# --- Core ML --------------------------------------------------------------------------------------

_MIL_BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
              "bool": 1, "fp64": 8, "int64": 8}


def _mlpackage(path: Path, threads: int) -> ActivationPlan:
    from echoedge.mil.program import _dtype_name, load_mil_program

    from echoedge.convert.coreml_mlprogram import quiet_coremltools

    with quiet_coremltools():
        prog, _ = load_mil_program(path)
    fn = prog.functions["main"]
    sizes: dict[str, int] = {}
    tensors = []
    by_dtype: Counter = Counter()

    def add(var: Any) -> None:
        shape = getattr(var, "shape", None)
        if shape is None or var.name in sizes:
            return
        dt = _dtype_name(var)
        sizes[var.name] = _numel(s if isinstance(s, int) else 1 for s in shape) * _MIL_BYTES.get(dt, 4)
        by_dtype[dt] += sizes[var.name]
        tensors.append((var.name, dt, [s if isinstance(s, int) else -1 for s in shape], sizes[var.name]))

    for v in fn.inputs.values():
        add(v)
    steps = []
    for op in fn.operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue  # weights, evaluated once
        reads = [var.name for v in op.inputs.values() for var in (v if isinstance(v, (list, tuple)) else [v])
                 if not _is_weight(var)]
        for o in op.outputs:
            add(o)
        steps.append((reads, [o.name for o in op.outputs]))
    peak = liveness_peak(steps, sizes, list(fn.inputs), [v.name for v in fn.outputs])
    return ActivationPlan(
        "coreml", peak, "estimate: liveness peak of the MIL program's tensors over its op order "
        "(Core ML states no activation size; its own planner may differ)", True, peak, dict(by_dtype),
        _top_float(tensors))


def _is_weight(var: Any) -> bool:
    src = getattr(var, "op", None)  # None for a function input
    return src is not None and (src.op_type == "const" or src.op_type.startswith("constexpr_"))


__all__ = ("ActivationPlan", "activation_plan", "liveness_peak", "plan_lines")
