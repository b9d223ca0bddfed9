"""`echo-edge evaluate`: per-video EF metrics of a checkpoint on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import data_arg, model_arg, resolve_checkpoint, resolve_data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="per-video EF metrics of a checkpoint on one split",
        description="Per-video EF = mean over N evenly spaced clips. Prints MAE, RMSE, R2, bias, "
        "EDV/ESV and landmark errors (n/a on videos without tracings), the EF-band confusion and "
        "the MAE of always predicting one EF: the training EF mean recorded in the checkpoint, "
        "else the dataset's TRAIN mean, else n/a (only --split must have videos). Writes "
        "results.json and scatter.png to --out.",
    )
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="default: the shipped checkpoint (Echo-E3Net)")
    model_arg(p)
    data_arg(p)
    p.add_argument("--split", default="TEST", type=str.upper, choices=["TRAIN", "VAL", "TEST"])
    p.add_argument("--clips", type=int, default=4, help="clips per video (0 = every start)")
    p.add_argument("--videos", type=int, default=None, help="only the first N videos of the split")
    p.add_argument("--config", default=None, help="fail unless the checkpoint is of this Echo-E3Net preset")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from echoedge.model.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(
        resolve_checkpoint(args.checkpoint, args.model), resolve_data(args.data), split=args.split,
        clips_per_video=args.clips or None, videos=args.videos, out=args.out,
        cache_dir=args.cache_dir, expect_config=args.config, require_tracings=args.require_tracings,
        model=args.model,
    )
    print(res.describe())
    print(f"wrote {args.out / 'results.json'} and {args.out / 'scatter.png'}")
    return 0
