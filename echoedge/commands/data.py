"""`echo-edge data check|show|summary|import`: inspect an EchoNet-Dynamic-format dataset, or
make one from your own videos and DICOM cines."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import tracings_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect an EchoNet-Dynamic-format dataset, or import your own")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,show,summary,import}")
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
    _register_import(dsub)


def _register_import(dsub: argparse._SubParsersAction) -> None:
    i = dsub.add_parser(
        "import",
        help="make an EchoNet-layout dataset from your own echo videos or DICOM cines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read echo cines (AVI/MP4/MOV/M4V videos of any size, or DICOM files, with or without\n"
            "an extension), find the ultrasound sector in each, blank everything outside it (text,\n"
            "ECG trace, colour bars, logos), crop it square and resize to 112x112 grey as\n"
            "EchoNet-Dynamic does, and write ROOT/FileList.csv + ROOT/Videos/*.avi with your EF labels.\n"
            "\n"
            "Output names are salted hashes, never your file names; the hash -> file mapping and\n"
            "its salt go to a file OUTSIDE ROOT (keep it private; a re-import that finds it gives\n"
            "the same names). ROOT/import_log.csv says, per input, whether it was used and why not,\n"
            "and what the sector finder decided. Inputs that cannot be used are skipped with one\n"
            "line each; the command fails (exit 2) only on bad labels, a taken ROOT, or when no\n"
            "input at all could be imported."
        ),
        epilog=(
            "labels CSV: a file column (file, FileName or filename; any case) and EF, optionally\n"
            "ESV, EDV and Split (TRAIN/VAL/TEST; TEST when absent). A file cell matches an input\n"
            "by its path relative to the folder given, that path without extension, its name, or\n"
            "its stem. Example:\n"
            "    file,EF,Split\n"
            "    patient01/a4c.mp4,58.2,TRAIN\n"
            "    IM_0007,34.0,TEST"
        ),
    )
    i.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                   help="folders (searched recursively) or files")
    i.add_argument("--labels", type=Path, required=True, metavar="CSV",
                   help="the labels CSV (see below)")
    i.add_argument("--out", type=Path, required=True, metavar="ROOT",
                   help="dataset folder to write (must be absent or empty, unless --force)")
    i.add_argument("--fps", type=float, default=None,
                   help="frame rate for every input, overriding what the files state (for videos "
                   "whose container has none or a wrong one)")
    i.add_argument("--mapping", type=Path, default=None, metavar="CSV",
                   help="where the hash -> source mapping and its salt go (default: ROOT.mapping.csv "
                   "beside ROOT; must lie outside ROOT); an existing one's salt is reused")
    i.add_argument("--force", action="store_true",
                   help="replace ROOT when it holds an earlier import (swapped in at the end; "
                   "any other non-empty folder is refused)")
    i.add_argument("--square", choices=("depth", "whole"), default="depth",
                   help="how the sector is made square: 'depth' (default) keeps the full depth and "
                   "centres the width on it, EchoNet's framing (a wide fan loses its far tips); "
                   "'whole' keeps the whole sector, smaller in the frame")
    i.set_defaults(func=_cmd_data_import)


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


def _cmd_data_import(args: argparse.Namespace) -> int:
    import sys

    from echoedge.data.ingest.importer import import_dataset

    summary = import_dataset(
        args.inputs, args.labels, args.out, fps=args.fps, mapping=args.mapping, force=args.force,
        square=args.square, progress=sys.stderr.isatty(), say=lambda line: print(line, file=sys.stderr),
    )
    print(summary.describe())
    return 0
