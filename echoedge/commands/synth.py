"""`echo-edge synth`: write a synthetic EchoNet-Dynamic-format dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic EchoNet-Dynamic-format dataset",
        description=(
            "Generate apical-4-chamber-like echo videos with traced ED/ES frames, written in "
            "exactly EchoNet-Dynamic's layout (FileList.csv, VolumeTracings.csv with each video's "
            "ES rows before its ED rows, Videos/*.avi), plus Acquisition.csv: each video's probe "
            "settings and view. The same seed gives the same bytes; a dataset of N videos is a "
            "prefix of one of M > N videos with the same seed."
        ),
    )
    p.add_argument("out", type=Path, help="output folder (created; must be empty or absent)")
    p.add_argument("--videos", type=int, default=300, help="number of videos (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument(
        "--acquisition", choices=("fixed", "varied"), default="varied",
        help=("how the videos are acquired. varied (default): the acquisition variety real "
              "probes show (gain, TGC, dynamic range, speckle, resolution, depth, sector width, "
              "probe rotation and tilt, noise, dropout, shadows, ~5%% foreshortened or off-axis "
              "views), drawn per video from the seed; the look the shipped checkpoint was "
              "fine-tuned on. fixed: every video with the same neutral probe settings (the look "
              "of e3net_paper_synthetic.pt). Both write the same hearts and FileList labels for "
              "a seed; see docs/acquisition.md"),
    )
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from echoedge.data.synthetic import generate_dataset

    summary = generate_dataset(args.out, videos=args.videos, seed=args.seed, workers=args.workers,
                               acquisition=args.acquisition)
    print(summary.describe())
    return 0
