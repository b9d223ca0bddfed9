"""Record the shipped checkpoint's training EF mean in the checkpoint itself.

The shipped checkpoint was trained before `train` recorded the training EF mean (the always-mean
baseline of `evaluate`, `validate` and `run`). Its training set is known exactly: `echo-edge synth
--videos 3000 --seed 0` (MODEL_CARD.md), TRAIN split. The generator's labels need no rendering
(`synthetic.heart_labels`), so the mean is recomputed here from the same draws, checked against
the number of TRAIN videos the checkpoint's meta recorded, and written in atomically.

    PYTHONPATH=. python tools/record_train_ef.py [--videos 3000 --seed 0] [CHECKPOINT]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from echoedge.data.synthetic import heart_labels
from echoedge.data.synthetic_heart import draw_params
from echoedge.model.checkpoint import SHIPPED, read_payload


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", type=Path, default=SHIPPED)
    ap.add_argument("--videos", type=int, default=3000, help="videos of the synthetic training set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    payload = read_payload(args.checkpoint)
    train = [heart_labels(p)[0] for p in (draw_params(args.seed, i) for i in range(args.videos))
             if p.split == "TRAIN"]
    expected = payload.get("meta", {}).get("n_train_videos")
    if expected is not None and expected != len(train):
        raise SystemExit(f"{args.checkpoint}: trained on {expected} TRAIN videos, but seed "
                         f"{args.seed} x {args.videos} has {len(train)}: not its training set")
    mean = float(np.mean(train))
    payload["train_ef"] = {"mean": mean, "videos": len(train)}
    payload["meta"]["train_ef_source"] = (f"recomputed from the generator's labels (synth --videos "
                                          f"{args.videos} --seed {args.seed}, TRAIN) by "
                                          "tools/record_train_ef.py")
    tmp = args.checkpoint.with_name(f".{args.checkpoint.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, args.checkpoint)
    print(f"{args.checkpoint}: training EF mean {mean:.2f} % over {len(train)} TRAIN videos recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
