"""`echo-edge debug-quant`: where the int8 EF error comes from, and how to remove it."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import (
    artefacts_model, data_arg, model_arg, resolve_checkpoint, resolve_data, show_progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "debug-quant", help="where the int8 EF error comes from, and how to remove it",
        description="For artefacts converted from one checkpoint, on held-out videos against the fp32 "
        "deploy form: (attribution) each artefact's |ΔEF| split into quantization (the same scheme "
        "simulated in PyTorch) and conversion/runtime; (sensitivity) one layer at a time kept float in "
        "the simulation, ranked; (budget) the most sensitive layers kept float until the simulated mean "
        "|ΔEF| meets --budget, the mixed artefact emitted per format and measured for real (EF, latency, "
        "size; Pareto front); (calibration) disjoint calibration draws x sizes x strategies: spread, "
        "size curve, low-EF hearts apart, recommended N. Writes OUT/debug_quant.json, debug_quant.md, "
        "PNG plots and OUT/artefacts/*-mixed; with --report adds a 'Quantization debugging' section to "
        "that report. Slow on a CPU (each simulated evaluation costs seconds per clip): size it with "
        "--videos, --clips, --calibration-clips, --sizes and --draws. Exit 0, 1 when a budget cannot "
        "be met, 2 on an error.",
    )
    p.add_argument("artefacts", type=Path, nargs="*",
                   help="artefact folders or folders holding them (not needed for --parts calibration)")
    data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the checkpoint the artefacts were converted from (default: the shipped checkpoint)")
    model_arg(p, from_artefacts=True)
    p.add_argument("--out", type=Path, default=Path("runs/debug-quant"), help="output folder")
    p.add_argument("--parts", default="all",
                   help="comma list of attribution, sensitivity, budget, calibration (default all; "
                   "budget runs the sensitivity sweep it needs)")
    p.add_argument("--budget", type=float, default=0.25, help="EF budget: mean |ΔEF| vs fp32 (default 0.25)")
    p.add_argument("--split", default="VAL", type=str.upper, choices=["TRAIN", "VAL", "TEST"],
                   help="videos every part is measured on (default VAL; validate uses TEST)")
    p.add_argument("--videos", type=int, default=8, help="first N videos of the split (default 8)")
    p.add_argument("--clips", type=int, default=1, help="clips per video (default 1)")
    p.add_argument("--calibration-clips", type=int, default=32,
                   help="clips of each artefact's calibration set the sweeps calibrate on (default 32)")
    p.add_argument("--mode", default="all-but", choices=["all-but", "only"],
                   help="sensitivity: keep one layer float (all-but, default) or quantize only it (only)")
    p.add_argument("--units", default=None, help="comma list of layers to sweep (default: all the recipe quantizes)")
    p.add_argument("--max-float", type=int, default=None, help="at most this many layers float in the budget search")
    p.add_argument("--max-memory-mb", type=float, default=None, metavar="MB",
                   help="activation-memory limit beside --budget: the search leaves a layer int8 when "
                        "keeping it float would need more than MB of activations (estimated from the "
                        "graph: int8 tensors 1 byte, float 4; the liveness peak); the emitted artefact's "
                        "own figures are then recorded beside the limit")
    p.add_argument("--keep-float", default=None, metavar="UNITS",
                   help="comma list of layers: skip the search and emit exactly this mix (checked against "
                        "--budget in simulation, then measured); no sensitivity sweep needed")
    p.add_argument("--no-emit", action="store_true", help="search the budget in simulation only; emit nothing")
    p.add_argument("--strategies", default="random,ef-stratified,phase-aware",
                   help="calibration strategies to compare (default all three)")
    p.add_argument("--sizes", default="8,16,32", help="calibration sizes N for the size curve (default 8,16,32)")
    p.add_argument("--draws", type=int, default=3, help="disjoint calibration draws per N (default 3)")
    p.add_argument("--calibration-split", default="TRAIN", type=str.upper, help="TRAIN or VAL (never TEST)")
    p.add_argument("--report", type=Path, default=None, metavar="REPORT_JSON",
                   help="a validation report.json to add the section to (report.md/.html are re-rendered)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("--runs", type=int, default=20, help="timed latency runs per candidate artefact")
    p.add_argument("--shift", default=None, metavar="NAME",
                   help="measure every part on held-out frames changed by this stress-suite shift "
                        "(e.g. blur; `echo-edge stress --help` lists them), to find why an int8 "
                        "artefact drifts under an acquisition change. Calibration stays as built")
    p.add_argument("--shift-level", default="moderate", choices=["mild", "moderate", "severe"],
                   help="level of --shift (default moderate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-frame cache folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_debug_quant)


def _cmd_debug_quant(args: argparse.Namespace) -> int:
    from echoedge.quantdebug.job import DebugQuantOptions, debug_quant, parse_parts, parse_sizes

    opt = DebugQuantOptions(
        parts=parse_parts(args.parts), split=args.split, videos=args.videos, clips_per_video=args.clips,
        calibration_clips=args.calibration_clips, budget=args.budget, mode=args.mode,
        units=tuple(u.strip() for u in args.units.split(",") if u.strip()) if args.units else None,
        max_float=args.max_float, max_memory_mb=args.max_memory_mb, emit=not args.no_emit,
        keep_float=tuple(u.strip() for u in args.keep_float.split(",") if u.strip())
        if args.keep_float is not None else None,
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        sizes=parse_sizes(args.sizes), draws=args.draws, calibration_split=args.calibration_split,
        threads=args.threads, latency_runs=args.runs, seed=args.seed, cache_dir=args.cache_dir,
        progress=show_progress(args.no_progress), require_tracings=args.require_tracings,
        shift=args.shift, shift_level=args.shift_level)
    from echoedge.console import stderr_to

    model = artefacts_model(args.artefacts, args.model)
    data, checkpoint = resolve_data(args.data), resolve_checkpoint(args.checkpoint, model)
    chatter = args.out / "logs" / "debug-quant.log"
    print(f"toolchain messages -> {chatter}")
    with stderr_to(chatter):  # torchao, ExecuTorch's cpuinfo/threadpool, TensorFlow: off the console
        res = debug_quant(args.artefacts, data, checkpoint, args.out, opt, report=args.report, model=model)
    for b in res.data.get("budget") or []:
        if not b["met"]:
            print(f"budget {b['budget']:g} not met for {b['format']} {b['precision']}: {b['reason']}")
        elif b.get("memory"):
            mem = b["memory"]
            print(f"memory limit {mem['limit_mb']:g} MB, {b['format']} {b['precision']} mixed artefact: "
                  f"graph peak {mem['graph_peak_mb']:.1f} MB ({'within' if mem['within_limit'] else 'OVER'})")
    for g in res.data.get("goal") or []:
        print(f"goal ({g['budget']:g} EF points, {g['speedup_goal']:g}x eager) {g['format']}: {g['status']}"
              + (f" by {g['candidate']}" if g["status"] == "met" else f" ({g['reason']})"))
    print("wrote " + ", ".join(str(p) for p in res.files.values()))
    return res.exit_code
