"""`echo-edge train`: train Echo-E3Net, or one of EchoNet-Dynamic's video ResNets, on an
EchoNet-Dynamic-format dataset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from echoedge.commands.common import MODEL_CHOICES, show_progress, DEFAULT_CONFIG, tracings_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train Echo-E3Net (or a video ResNet) on an EchoNet-Dynamic-format dataset",
        description="AdamW + warm-up + cosine, shift augmentation, per-epoch VAL MAE, best.pt and "
        "last.pt in --out (each records the TRAIN EF mean, the always-mean baseline of evaluate "
        "and validate), log.csv/log.json/curves.png. Needs TRAIN and VAL videos; videos without "
        "tracings train the EF and volume heads only (landmark terms masked). --model r2plus1d_18 | "
        "r3d_18 | mc3_18 trains EchoNet-Dynamic's EF network instead (EF only, mean squared error, "
        "its checkpoint loads with --model on every other command). Uses CUDA (bf16 autocast) when present; "
        "for several GPUs or processes launch with `torchrun --nproc_per_node N -m echoedge.cli train ...`.",
    )
    p.add_argument("--data", type=Path, required=True, help="EchoNet-Dynamic-format folder")
    tracings_arg(p)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs)")
    p.add_argument("--model", default="e3net", choices=MODEL_CHOICES,
                   help="the network to train (default %(default)s, Echo-E3Net)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="model size: Echo-E3Net's preset (paper | tiny); for a video ResNet, tiny "
                   "is 1/8 of torchvision's width and anything else is torchvision's (default: paper)")
    p.add_argument("--frames", type=int, default=None,
                   help="video ResNets: frames per clip (default 32, EchoNet-Dynamic's; 16 halves "
                   "the compute)")
    p.add_argument("--period", type=int, default=None,
                   help="video ResNets: take every N-th frame (default 2, EchoNet-Dynamic's)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=1, help="clips per TRAIN video per epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-clips", type=int, default=2, help="clips per VAL video for the epoch MAE")
    p.add_argument("--val-videos", type=int, default=None, help="limit VAL videos (faster epochs)")
    p.add_argument("--max-train-videos", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="fit the cosine schedule so that training ends within this wall time")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-frame cache folder")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    p.add_argument("--recipe", default="paper", choices=["paper", "acquisition"],
                   help="training augmentations. paper: EchoNet's random shift only (the paper's "
                   "recipe); acquisition: plus random gain, gamma, TGC, blur, speckle, noise, JPEG, "
                   "rotation and depth, so EF holds when the probe's settings change (see "
                   "echoedge/data/augment.py and `echo-edge stress`)")
    p.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights and input normalisation (fine-tuning, "
                   "e.g. the shipped checkpoint on a new recipe or your data); same --config")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from echoedge.model.train import TrainConfig, train

    tc = TrainConfig(
        data=str(args.data), out=str(args.out), config=args.config, model=args.model,
        frames=args.frames, period=args.period, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        repeats=args.repeats, workers=args.workers, seed=args.seed, val_clips=args.val_clips,
        val_videos=args.val_videos, max_train_videos=args.max_train_videos,
        require_tracings=args.require_tracings,
        time_budget_s=args.time_budget, device=args.device, amp=not args.no_amp,
        cache_dir=str(args.cache_dir) if args.cache_dir else None, resume=args.resume,
        recipe=args.recipe, init=str(args.init) if args.init else None,
        progress=show_progress(args.no_progress),
    )
    res = train(tc)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best VAL MAE {res.best_val_mae:.2f} after {res.epochs} epochs in {res.wall_s / 60:.1f} min; "
              f"checkpoints: {res.best}, {res.last}")
    return 0
