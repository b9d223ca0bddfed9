"""The video ResNet a command uses when `--model r2plus1d_18` (r3d_18, mc3_18) comes without
`--checkpoint`: one trained briefly on the built-in synthetic set, once, then cached.

No EchoNet-Dynamic weights ship with echo-edge (they are Stanford's, under a research licence, and
nothing is downloaded at run time), and a trained full-width R(2+1)D-18 is 125 MB: too big to
ship in the package. So the first run without a checkpoint trains one here, within a CPU time
budget, at 16 frames every 4th (the 64-frame span of EchoNet-Dynamic's 32 every 2nd, at half the
compute), and every later run reuses it. Its EF follows the input (MAE well under the
always-mean baseline; the MODEL_CARD says how far); it is a stand-in that lets the whole pipeline
run without a download, not a clinical model.

The cache key names everything that decides the weights: architecture, the recipe below, and the
dataset's own folder name (seed, size, look, generator version); a recipe change gets a new key.
Training goes to a temporary sibling that is renamed into place when done, so an interrupted run
leaves nothing that a later one would take for finished.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

RECIPE_VERSION = 1


@dataclass(frozen=True)
class DefaultTraining:
    """How the stand-in is trained (train.TrainConfig fields)."""

    config: str = "full"
    frames: int = 16
    period: int = 4
    epochs: int = 6  # an upper bound: the budget shrinks it after the first epoch
    batch_size: int = 4
    lr: float = 1e-3
    time_budget_s: float = 1800.0  # the CPU budget: 30 minutes on 2 cores
    val_videos: int = 20
    max_train_videos: int | None = None
    workers: int = 1
    seed: int = 0

    @property
    def key(self) -> str:
        return (f"{self.config}-f{self.frames}p{self.period}-e{self.epochs}-b{self.batch_size}"
                f"-t{int(self.time_budget_s)}-s{self.seed}-r{RECIPE_VERSION}")


TRAINING = DefaultTraining()


def default_video_dir(arch: str, data: Path, training: DefaultTraining | None = None) -> Path:
    from echoedge.data.default import cache_root

    training = training or TRAINING
    return cache_root() / "models" / f"{arch}-{data.name}-{training.key}"


def default_video_checkpoint(arch: str, training: DefaultTraining | None = None,
                             progress: bool = True) -> Path:
    """best.pt of the cached stand-in for `arch`, training it first when it is not there."""
    from echoedge.data.default import default_dataset

    training = training or TRAINING
    data = default_dataset(progress=progress)
    done = default_video_dir(arch, data, training)
    if (done / "best.pt").is_file():
        return done / "best.pt"
    print(f"no --checkpoint for {arch}: training one on the built-in synthetic set "
          f"({training.frames} frames every {training.period}th, at most "
          f"{training.time_budget_s / 60:.0f} min on this machine's CPU; once, then cached in "
          f"{done})", flush=True)
    _train_into(arch, data, done, training, progress)
    return done / "best.pt"


def _train_into(arch: str, data: Path, done: Path, training: DefaultTraining,
                progress: bool) -> None:
    from echoedge.model.train import TrainConfig, train

    tmp = done.with_name(f".{done.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fields = {k: v for k, v in asdict(training).items()}
    tc = TrainConfig(data=str(data), out=str(tmp), model=arch, progress=progress, **fields)
    try:
        res = train(tc)
        try:
            os.rename(tmp, done)  # atomic; refuses when another process finished first
        except OSError:
            if not (done / "best.pt").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the other process's is as good: same key
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"trained {arch} in {res.wall_s / 60:.1f} min: VAL EF MAE {res.best_val_mae:.2f}",
          file=sys.stdout, flush=True)


def with_training(**changes: object) -> DefaultTraining:
    """TRAINING with some fields changed (tests train a tiny stand-in this way)."""
    return replace(TRAINING, **changes)


__all__ = ["DefaultTraining", "RECIPE_VERSION", "TRAINING", "default_video_checkpoint",
           "default_video_dir", "with_training"]
