"""Where an ExecuTorch program spends its time, per kernel (issue 15's speed goal).

Runs each `.pte` (an artefact folder or the file) with ExecuTorch's event tracer on (ETDump), at
batch 1 on --threads threads, and reads the trace back with ExecuTorch's Inspector. XNNPACK
reports one event per kernel inside each delegate call; portable kernels report one per op. The
kernels are grouped by kind (convolution, fully connected, data movement, quantize/convert,
element-wise, portable ops), and the time no kernel accounts for is shown as delegate and
runtime overhead. With the checkpoint's multiply-adds (echoedge.model.info) it prints the
convolutions' and fully connected layers' throughput, the figure that bounds how fast the file
can get on this CPU, and the time the rest of the file takes.

The event tracer adds a little time per event; the totals here are a breakdown, not the latency
figure (`bench_int8.py` and `echo-edge validate` time without it). Kernel times do not depend on
the input's values, so the input is a seeded random clip.

    python bench/bench_profile.py RUN/artefacts/executorch-int8 RUN/artefacts/executorch-fp32
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# XNNPACK operator names ("Convolution (NHWC, QC8) IGEMM #5") by their first word(s).
KINDS = (
    ("convolution", ("Convolution", "Deconvolution")),
    ("fully connected", ("Fully Connected", "Batch Matrix Multiply")),
    ("data movement", ("Copy", "Slice", "Concatenate", "Transpose", "Even Split", "Constant Pad",
                       "Static Reshape", "Static Resize", "Resize")),
    ("quantize / convert", ("Convert",)),
    ("pooling / reduce", ("Max Pooling", "Average Pooling", "Global Average", "Mean", "Sum",
                          "Reduce", "ArgMax")),
)
MAC_KINDS = ("convolution", "fully connected")


def kind_of(event: str, delegated: bool) -> str:
    if not delegated:
        return "portable ops"
    for kind, prefixes in KINDS:
        if event.startswith(prefixes):
            return kind
    return "element-wise / other"


def profile(pte: Path, clip: np.ndarray, threads: int, calls: int, warmup: int) -> dict[str, Any]:
    """Per-kind p50 ms per call, the execute total, the delegate calls' total and the kernels."""
    import torch
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    import executorch.kernels.quantized  # noqa: F401  registers the quantized out-variants

    portable_lib._unsafe_reset_threadpool(threads)
    x = torch.from_numpy(clip)
    module = portable_lib._load_for_executorch(str(pte), enable_etdump=True)
    for _ in range(warmup + calls):  # the warm-up calls' events are dropped below
        module.forward([x])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.etdp"
        module.write_etdump_result_to_file(str(path))
        inspector = Inspector(etdump_path=str(path))
    kinds: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    total = delegate = 0.0
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for ev in block.events:
            if ev.perf_data is None:
                continue
            # One sample per call (every kernel runs once per call in these programs); the first
            # calls pack weights and size the arena.
            ms = float(np.median(ev.perf_data.raw[warmup:] or ev.perf_data.raw))
            if ev.name == "Method::execute":
                total += ms
            elif ev.name == "DELEGATE_CALL":
                delegate += ms
            elif ev.name != "OPERATOR_CALL":  # OPERATOR_CALL wraps a portable op's own event
                kinds[kind_of(ev.name, bool(ev.is_delegated_op))] += ms
                kernels[re.sub(r" #\d+$", "", ev.name)] += ms
    return {"total": total, "delegate": delegate, "kinds": dict(kinds), "kernels": dict(kernels)}


def main(argv: list[str] | None = None) -> None:
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.info import model_info
    from echoedge.validate.latency import cpu_line, host_fingerprint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artefacts", nargs="+", type=Path, help="ExecuTorch artefact folders or .pte files")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED,
                    help="the checkpoint the files were converted from: its multiply-adds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=10, help="traced calls per file (median per event)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--top", type=int, default=8, help="kernels listed per file")
    args = ap.parse_args(argv)

    ck = load_checkpoint(args.checkpoint)
    macs = model_info(ck.config).macs
    clip = np.random.default_rng(0).standard_normal(ck.spec.input_shape(1)).astype(np.float32)
    print(f"batch 1, {args.threads} threads, {args.calls} traced calls (median per event), host: "
          f"{cpu_line(host_fingerprint(args.threads))}")
    print(f"{ck.config.name}: {macs / 1e9:.2f} G multiply-adds per clip (convs and matmuls)")
    for item in args.artefacts:
        pte = item / "model.pte" if item.is_dir() else item
        p = profile(pte, clip, args.threads, args.calls, args.warmup)
        kernels_ms = sum(p["kinds"].values())
        delegated_ms = kernels_ms - p["kinds"].get("portable ops", 0.0)
        rows = sorted(p["kinds"].items(), key=lambda kv: -kv[1])
        rows.append(("delegate + runtime overhead", max(p["total"] - kernels_ms, 0.0)))
        print(f"\n{pte}: Method::execute {p['total']:.1f} ms, in XNNPACK kernels {delegated_ms:.1f} ms")
        for kind, ms in rows:
            print(f"  {kind:<28} {ms:8.2f} ms  {100 * ms / p['total']:5.1f} %")
        mac_ms = sum(p["kinds"].get(k, 0.0) for k in MAC_KINDS)
        if mac_ms > 0:
            print(f"  convs + matmuls: {macs / mac_ms / 1e6:.0f} G multiply-adds/s; "
                  f"the rest of the file takes {p['total'] - mac_ms:.1f} ms")
        print("  heaviest kernels:")
        for name, ms in sorted(p["kernels"].items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"    {ms:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
