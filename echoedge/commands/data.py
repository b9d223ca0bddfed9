"""`echo-edge data check|show|summary`: inspect an EchoNet-Dynamic-format dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import tracings_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect an EchoNet-Dynamic-format dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,show,summary}")
    c = dsub.add_parser(
        "check",
        help="validate a dataset folder, one line per problem",
        description="Check FileList.csv, VolumeTracings.csv and every video. Prints one line per "
        "problem; exits 1 if any problem is fatal (the reader would refuse or drop data). Videos "
        "without tracings are one warning line with their count (EF validation works, landmark "
        "metrics are n/a) unless --require-tracings; broken tracings are fatal. A FileList.csv "
        "without a Split column counts as all TEST (one warning).",
    )
    c.add_argument("root", type=Path)
    c.add_argument("--no-videos", action="store_true", help="skip decoding every video (faster)")
    tracings_arg(c)
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
    tracings_arg(m)
    m.set_defaults(func=_cmd_data_summary)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from echoedge.data.check import check_dataset

    problems = check_dataset(args.root, decode_videos=not args.no_videos,
                             require_tracings=args.require_tracings)
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

    print(EchoNet(args.root, require_tracings=args.require_tracings).summary())
    return 0
