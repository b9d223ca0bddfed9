"""The `echo-edge` command. Thin: parse, call the packages, print.

Expected failures (EchoEdgeError) become one line on stderr and a non-zero exit; only bugs show
a traceback. Every import of a heavy package happens inside the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echoedge.errors import EchoEdgeError

DEFAULT_CONFIG = "paper"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic EchoNet-Dynamic-format dataset",
        description=(
            "Generate apical-4-chamber-like echo videos with traced ED/ES frames, written in "
            "exactly EchoNet-Dynamic's layout (FileList.csv, VolumeTracings.csv, Videos/*.avi). "
            "The same seed gives the same bytes; a dataset of N videos is a prefix of one of "
            "M > N videos with the same seed."
        ),
    )
    p.add_argument("out", type=Path, help="output folder (created; must be empty or absent)")
    p.add_argument("--videos", type=int, default=300, help="number of videos (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from echoedge.data.synthetic import generate_dataset

    summary = generate_dataset(args.out, videos=args.videos, seed=args.seed, workers=args.workers)
    print(summary.describe())
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect an EchoNet-Dynamic-format dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,show,summary}")
    c = dsub.add_parser(
        "check",
        help="validate a dataset folder, one line per problem",
        description="Check FileList.csv, VolumeTracings.csv and every video. Prints one line per "
        "problem; exits 1 if any problem is fatal (the reader would refuse or drop data).",
    )
    c.add_argument("root", type=Path)
    c.add_argument("--no-videos", action="store_true", help="skip decoding every video (faster)")
    c.set_defaults(func=_cmd_data_check)
    s = dsub.add_parser(
        "show",
        help="montage of frames with the ED/ES tracings and landmarks drawn on",
    )
    s.add_argument("root", type=Path)
    s.add_argument("filename", help="FileName as in FileList.csv (with or without .avi)")
    s.add_argument("-o", "--out", type=Path, required=True, help="output PNG")
    s.set_defaults(func=_cmd_data_show)
    m = dsub.add_parser("summary", help="counts, splits and EF distribution of a dataset")
    m.add_argument("root", type=Path)
    m.set_defaults(func=_cmd_data_summary)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from echoedge.data.check import check_dataset

    problems = check_dataset(args.root, decode_videos=not args.no_videos)
    for pr in problems:
        print(pr.line())
    fatal = sum(pr.fatal for pr in problems)
    print(f"{args.root}: {len(problems)} problem(s), {fatal} fatal")
    return 1 if fatal else 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from echoedge.data.show import render_montage

    out = render_montage(args.root, args.filename, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from echoedge.data.echonet import EchoNet

    print(EchoNet(args.root).summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echo-edge",
        description=(
            "Echo-E3Net ejection-fraction models, from training to validated on-device "
            "artefacts. Start with `echo-edge run` (the whole job on a built-in synthetic "
            "dataset and the shipped checkpoint)."
        ),
    )
    from echoedge import __version__

    parser.add_argument("--version", action="version", version=f"echo-edge {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EchoEdgeError as e:
        print(f"echo-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("echo-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
