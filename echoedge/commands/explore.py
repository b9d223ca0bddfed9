"""`echo-edge explore`: an artefact's graph in Model Explorer, with per-node dtype, quantization
error (from debug-quant) and latency overlays (echoedge.quantdebug.explore)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore", help="Model Explorer overlays for an artefact: dtype, quantization error, latency per node",
        description="Reads ARTEFACT_DIR's model file (.pte or .tflite) and writes Model Explorer "
        "node-data files (the documented custom node data format) keyed by the node ids of Model "
        "Explorer's own adapter for that format: dtype.json (what each node computes in), "
        "sensitivity.json with --debug-quant (per conv node, the |dEF| that keeping its layer float "
        "wins back, from debug-quant's sensitivity sweep), latency.json (.pte: mean ms per op from an "
        "ETDump; .tflite: not available in LiteRT's Python runtime, explore.json says so), and "
        "explore.json (what was mapped, the artefact's attribution, notes). With --serve and the "
        "optional extra installed (pip install 'echo-edge[explore]'), starts Model Explorer on "
        "localhost with the model and overlays loaded. Exit 0, 2 on bad input.",
    )
    p.add_argument("artefact", type=Path, metavar="ARTEFACT_DIR",
                   help="an artefact folder (manifest.json + model.pte or model.tflite)")
    p.add_argument("--debug-quant", type=Path, default=None, metavar="DIR",
                   help="an `echo-edge debug-quant` output folder (debug_quant.json) of the same checkpoint: "
                        "adds the sensitivity overlay and the attribution figures")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the checkpoint the artefact was converted from, to name its layers (default: "
                        "the one debug_quant.json records)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the node-data files and explore.json (default runs/explore/<artefact "
                        "folder name>); one file per overlay, since a node-data file holds one value per node")
    p.add_argument("--no-latency", action="store_true", help="skip the per-op latency run")
    p.add_argument("--runs", type=int, default=10, help="timed runs for the latency overlay (default 10)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads for the latency runs (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip the latency runs feed")
    p.add_argument("--serve", action=argparse.BooleanOptionalAction, default=False,
                   help="start Model Explorer on localhost with the overlays (default --no-serve)")
    p.add_argument("--host", default="localhost", help="--serve: host (default localhost)")
    p.add_argument("--port", type=int, default=8080,
                   help="--serve: port (default 8080; Model Explorer takes the next free one up to 8099)")
    p.add_argument("--open", action=argparse.BooleanOptionalAction, default=True,
                   help="--serve: open the view in a browser (default --open)")
    p.set_defaults(func=_cmd_explore)


def _cmd_explore(args: argparse.Namespace) -> int:
    from echoedge.console import stderr_to
    from echoedge.errors import EchoEdgeError
    from echoedge.quantdebug.explore import explore, serve

    if args.runs < 1:
        raise EchoEdgeError(f"--runs must be >= 1, got {args.runs}")
    out = args.out if args.out is not None else Path("runs/explore") / args.artefact.name
    # executorch / LiteRT / Model Explorer chatter goes to the log, for the server's lifetime too
    # (a logger created inside the block keeps writing to it)
    with stderr_to(out / "logs" / "explore.log"):
        res = explore(args.artefact, args.debug_quant, out, checkpoint=args.checkpoint,
                      latency=not args.no_latency, runs=args.runs, seed=args.seed, threads=args.threads)
        for key, o in res.summary["overlays"].items():
            print(f"{key:12s} {o['nodes']:5d} nodes  {res.out / o['file']}", flush=True)
        print(f"wrote {res.files['summary']}", flush=True)
        if args.serve:
            serve(res, host=args.host, port=args.port, open_browser=args.open)
    return 0
