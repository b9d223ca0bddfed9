"""Per-op latency of an artefact, where its runtime gives one, keyed by Model Explorer node.

ExecuTorch: the pip runtime writes an ETDump (`_load_for_executorch(..., enable_etdump=True)`),
read back with ExecuTorch's `Inspector`. Every top-level instruction's event (OPERATOR_CALL of a
portable kernel, DELEGATE_CALL of an XNNPACK partition) carries its instruction id, which is the
PTE adapter's node "{plan}_0_{id}": an exact key. Inside a delegate, XNNPACK's own profiler names
its operators ("Convolution (NHWC, QC8) IGEMM #3") with no node index, and fuses small nodes
(activations, reshapes) into others. A conv or fully-connected node never disappears, but XNNPACK
runs a 1x1 conv as a "Fully Connected" operator, so the two are one family: the k-th
convolution-or-fully-connected event of one delegate call is the k-th conv / depthwise conv /
fully-connected node of that delegate's graph (operators are created in node order). That is used
only where the counts agree; otherwise the delegate's inner ops are left out and a note says so.

TFLite: LiteRT's Python interpreter (ai_edge_litert 2.3) exposes no op profiler (only the C++
benchmark tool has --enable_op_profiling), so a .tflite gets no latency overlay and the
summary says why.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.errors import EchoEdgeError, first_line

TFLITE_NOTE = ("per-op latency: not available for TFLite -- the LiteRT Python interpreter "
               "(ai_edge_litert 2.3) has no op profiler; LiteRT's C++ benchmark_model "
               "--enable_op_profiling on the device gives it")
# XNNPACK operator name prefixes -> the delegate graph's node kinds they run (one family: see above)
_HEAVY_EVENTS = ("Convolution", "Fully Connected")
_HEAVY_NODES = ("Conv2d", "DepthwiseConv2d", "FullyConnected")


@dataclass
class OpLatency:
    """Mean milliseconds per run, by (graph id, node id), and what could not be keyed."""

    ms: dict[tuple[str, str], float]
    runs: int
    notes: list[str] = field(default_factory=list)


def pte_latency(path: Path, graph: Any, input_shape: list[int], runs: int = 10, seed: int = 0,
                threads: int = 2) -> OpLatency:
    """Run the .pte `runs` times with ETDump on and key each event to a node of `graph`
    (an explore_nodes.FileGraph of the same file)."""
    import torch
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    import executorch.kernels.quantized  # noqa: F401  (quantized portable kernels some programs call)

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="echoedge-etdump-") as d:
        dump = Path(d) / "run.etdp"
        try:
            module = portable_lib._load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
            for _ in range(runs):
                module.forward((x,))
            module.write_etdump_result_to_file(str(dump))
            inspector = Inspector(etdump_path=str(dump), etrecord=None)
        except Exception as e:  # noqa: BLE001 -- any runtime failure becomes a note, not a crash
            raise EchoEdgeError(f"{path}: ETDump profiling failed ({first_line(e)})") from None
    events = [e for b in inspector.event_blocks if b.name == "Execute" for e in b.events]
    return key_events(events, graph, runs)


def key_events(events: list[Any], graph: Any, runs: int) -> OpLatency:
    """Inspector events -> node latencies (see the module docstring for the keying rules)."""
    plan = next((n.graph for n in graph.nodes if n.instruction is not None and "::" not in n.graph), "forward")
    top = {n.instruction: n for n in graph.nodes if n.graph == plan}
    inner: dict[int, list[Any]] = {}
    ms: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for e in events:
        iid = e._instruction_id  # Inspector keeps it private; it is the only exact key there is
        if e.perf_data is None or iid is None:
            continue
        if e.name in ("OPERATOR_CALL", "DELEGATE_CALL") and iid in top:
            ms[(plan, top[iid].id)] = float(e.perf_data.avg)
        elif e.is_delegated_op:
            inner.setdefault(iid, []).append(e)
    for iid, evs in sorted(inner.items()):
        nodes = [n for n in graph.nodes if n.instruction == iid and "::" in n.graph]
        fe = [e for e in evs if str(e.delegate_debug_identifier or e.name).startswith(_HEAVY_EVENTS)]
        fn = [n for n in nodes if n.op in _HEAVY_NODES]
        if len(fe) != len(fn):
            notes.append(f"delegate call {iid}: {len(fe)} convolution / fully-connected events for "
                         f"{len(fn)} such nodes; its inner ops are left out")
            continue
        for e, n in zip(fe, fn):
            ms[(n.graph, n.id)] = float(e.perf_data.avg)
    return OpLatency(ms, runs, notes)


__all__ = ["OpLatency", "TFLITE_NOTE", "key_events", "pte_latency"]
