"""`echo-edge bridge android|ios`: bundle artefacts for an Android or iOS app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bridge", help="bundle artefacts for an Android or iOS app (glue code + golden vectors)",
        description="Bundle the artefacts a device engineer needs: the model files and manifests, "
        "source code that feeds the model from probe frames and turns its outputs into EF (a Gradle "
        "module with a pure-Java core for Android, a Swift package for iOS), and golden vectors "
        "computed by the validation runners. Written all-or-nothing.",
    )
    bsub = p.add_subparsers(dest="platform", required=True, metavar="{android,ios}")
    for name, formats in (("android", ".pte and .tflite"), ("ios", ".mlpackage and .pte")):
        b = bsub.add_parser(name, help=f"{name} bundle from the {formats} artefacts")
        b.add_argument("artefacts", type=Path, help="artefacts folder (ARTEFACTS/<format>-<precision>/)")
        b.add_argument("--out", type=Path, required=True, help="bundle folder to write")
        b.add_argument("--report", type=Path, default=None,
                       help="validation report.json to copy EF errors from (default: ARTEFACTS/../report.json "
                       "when present; otherwise the bundle says 'not validated')")
        b.add_argument("--threads", type=int, default=2, help="runtime threads for the golden outputs")
        b.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
        b.set_defaults(func=_cmd_bridge)


def _cmd_bridge(args: argparse.Namespace) -> int:
    if args.platform == "android":
        from echoedge.bridges.android import build_android_bundle as build
    else:
        from echoedge.bridges.ios import build_ios_bundle as build
    summary = build(args.artefacts, args.out, report=args.report, overwrite=args.overwrite,
                    threads=args.threads, progress=sys.stderr.isatty())
    print(summary.describe())
    return 0
