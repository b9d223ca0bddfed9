"""`echo-edge calibrate`: draw an echo calibration set for int8 quantization."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import data_arg, resolve_checkpoint, resolve_data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="draw an echo calibration set for int8 quantization",
        description="Draw N clips from TRAIN (or VAL with --split VAL; never TEST: a test-only "
        "dataset cannot calibrate itself) with a strategy: random, "
        "ef-stratified (equal share per EF band <40, 40-49, 50-59, >=60, so low-EF hearts are "
        "represented), phase-aware (clips holding the traced ED and ES frames) or "
        "acquisition-diverse (videos spread over the probe settings in the dataset's Acquisition.csv "
        "by farthest-point sampling, so int8 ranges cover dark, blurred and deep clips). Clips use the "
        "checkpoint's ClipSpec and normalisation. Writes calibration.npz and manifest.json "
        "(strategy, N, seed, video ids, starts, sha256 per clip, dataset fingerprint).",
    )
    data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    p.add_argument("--strategy", default="ef-stratified", help="random | ef-stratified | phase-aware | acquisition-diverse (default ef-stratified)")
    p.add_argument("--size", type=int, default=128, help="number of clips (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="TRAIN", type=str.upper, help="TRAIN or VAL")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from echoedge.calibration import calibrate, describe

    cs = calibrate(resolve_data(args.data), resolve_checkpoint(args.checkpoint), args.out,
                   calibration=f"{args.strategy}:{args.size}", seed=args.seed, split=args.split,
                   cache_dir=args.cache_dir, require_tracings=args.require_tracings)
    print(describe(cs))
    print(f"wrote {args.out}")
    return 0
