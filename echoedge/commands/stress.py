"""`echo-edge stress`: validate artefacts on frames changed the way another probe or preset would
change them (named acquisition shifts at mild, moderate and severe levels), and gate int8 on them.

Also holds the stress options `run --stress` shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import artefacts_model, data_arg, model_arg, resolve_checkpoint, resolve_data
from echoedge.commands.validate import add_validate_options, print_result, validate_options
from echoedge.errors import EchoEdgeError


def add_stress_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--shifts and --levels (`run` names them --stress-shifts / --stress-levels)."""
    p.add_argument(f"--{prefix}shifts", default="all", metavar="NAMES",
                   help="comma list of shifts (default all; `echo-edge stress --list` names them)")
    p.add_argument(f"--{prefix}levels", default="mild,moderate,severe", metavar="LEVELS",
                   help="comma list of mild, moderate, severe (default all three; the shipped gates "
                   "gate int8 artefacts at mild and moderate)")


def stress_options(shifts: str, levels: str, precisions: str | None = None):
    from echoedge.data.shifts import parse_levels, parse_shifts
    from echoedge.validate.stress import StressOptions

    names, lv = parse_shifts(shifts), parse_levels(levels)
    if not lv:
        raise EchoEdgeError("--levels: name at least one of mild, moderate, severe")
    prec = None if precisions in (None, "all") else tuple(
        dict.fromkeys(p.strip() for p in precisions.split(",") if p.strip()))
    return StressOptions(shifts=names, levels=lv, precisions=prec)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stress", help="validate artefacts under acquisition shifts (gain, blur, zoom, frame rate, ...)",
        description="The clean validation of `echo-edge validate`, then the same videos again under "
        "each named acquisition shift (gain down/up, TGC slope, gamma, Rayleigh speckle, blur, zoom "
        "in/out and rotation about the sector's vertex, translation, frame rate, JPEG, noise) at mild, "
        "moderate and severe levels, the same change to every frame of a video: the fp32 reference's EF "
        "MAE vs truth under each shift, and each artefact's |ΔEF| vs the reference on the same shifted "
        "frames (mean, p95, band agreement). Writes report.json (with a `stress` section), report.md "
        "(+ stress_heatmap.png), report.html (artefact x shift heat map) and junit.xml (a case per "
        "artefact x gated shift) to --out. Works on any EchoNet-format dataset (TEST split by default). "
        "Gates: the clean ones, and an int8 artefact must meet its clean gates under every mild and "
        "moderate shift (gates.yaml, part `stress`). Exit 0 when all pass, 1 when a gate fails, 2 on "
        "an error.",
    )
    p.add_argument("--artefacts", type=Path, nargs="+", default=[], metavar="DIR",
                   help="artefact folders, or folders holding them (an `echo-edge run` output folder)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the fp32 reference the artefacts were converted from (default: the shipped checkpoint)")
    model_arg(p, from_artefacts=True)
    data_arg(p)
    add_stress_options(p)
    p.add_argument("--precisions", default="all", metavar="LIST",
                   help="stress only artefacts of these precisions, e.g. int8 (default all; the others "
                   "are validated clean only). Core ML off macOS runs in the MIL interpreter: minutes "
                   "per shifted condition")
    p.add_argument("--list", action="store_true", help="print the shifts and their levels, and exit")
    p.add_argument("--out", type=Path, default=Path("runs/stress"), help="report folder")
    add_validate_options(p, videos_default=24, clips_default=2)
    p.set_defaults(func=_cmd_stress)


def list_shifts() -> str:
    from echoedge.data.shifts import LEVELS, SHIFTS

    rows = [(s.name, " / ".join(f"{s.value(lv):g}" for lv in LEVELS) + s.unit, s.description)
            for s in SHIFTS.values()]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    head = f"{'shift'.ljust(w0)}  {'mild / moderate / severe'.ljust(w1)}  what it models"
    return "\n".join([head] + [f"{a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows])


def _cmd_stress(args: argparse.Namespace) -> int:
    from echoedge.validate.validate import validate

    if args.list:
        print(list_shifts())
        return 0
    if not args.artefacts:
        raise EchoEdgeError("no --artefacts given (artefact folders, or a folder holding them)")
    opt = validate_options(args)
    opt.stress = stress_options(args.shifts, args.levels, args.precisions)
    model = artefacts_model(args.artefacts, args.model)
    res = validate(args.artefacts, resolve_data(args.data), resolve_checkpoint(args.checkpoint, model),
                   args.out, gates=args.gates, strict=args.strict, options=opt, model=model)
    return print_result(res)
