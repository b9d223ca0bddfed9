"""Training Echo-E3Net or a video ResNet (model.trainee says how each is built, fed, scored and
saved): AdamW + linear warm-up + cosine decay, the reference shift augmentation,
per-epoch validation MAE, `best`/`last` checkpoints, resume, CSV/JSON log and a curve PNG.

Runs on CPU, on one CUDA GPU (bf16 autocast), or on several processes under
`torchrun --nproc_per_node N` (DistributedDataParallel; NCCL on GPUs, gloo on CPU). Only rank 0
validates and writes files. Videos are decoded once into a frame cache, since MJPG decoding would
otherwise dominate an epoch on a 2-core machine.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.errors import EchoEdgeError


@dataclass
class TrainConfig:
    data: str
    out: str
    config: str = "paper"
    model: str = "e3net"  # echoedge.model.registry name
    frames: int | None = None  # a video ResNet's clip length (default EchoNet-Dynamic's 32)
    period: int | None = None  # and its frame step (default 2)
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    repeats: int = 1  # clips drawn per TRAIN video per epoch
    workers: int = 2
    seed: int = 0
    val_clips: int = 2
    val_videos: int | None = None
    max_train_videos: int | None = None
    require_tracings: bool = False  # EchoNet-Dynamic's rule: drop untraced videos
    traced_fraction: float = 0.5
    shift_pad: int = 12
    recipe: str = "paper"  # training augmentations: echoedge.data.augment.RECIPES
    init: str | None = None  # start from this checkpoint's weights and input normalisation
    norm_videos: int = 200  # videos used for the TRAIN mean/std
    time_budget_s: float | None = None  # shrink the schedule so training ends within this
    device: str = "auto"
    amp: bool = True
    cache_dir: str | None = None
    resume: bool = False
    progress: bool = True
    loss: dict[str, float] = field(default_factory=dict)  # LossWeights overrides

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    out: Path
    best: Path
    last: Path
    epochs: int
    best_val_mae: float
    wall_s: float
    history: list[dict[str, Any]]


class _Dist:
    """World info from torchrun's environment variables (a single process otherwise)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def _pick_device(name: str, dist: _Dist) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EchoEdgeError("--device cuda asked for, but CUDA is not available")
        torch.cuda.set_device(dist.local_rank)
        return f"cuda:{dist.local_rank}"
    return name


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # Norm weights, biases, learned queries and positional terms are not decayed (standard
    # practice for attention models: decaying them only shrinks scale parameters).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "query" in name or "pos" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Schedule:
    """Linear warm-up then cosine to zero over `total` steps; `total` may shrink mid-run."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = max(1, warmup)
        self.total = max(total, self.warmup + 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * t))


def _host() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "gpu": gpu}


def _init_checkpoint(tc: TrainConfig):  # -> Checkpoint | VideoCheckpoint | None
    if not tc.init:
        return None
    from echoedge.model.trainee import load_init

    if tc.resume:
        raise EchoEdgeError("--init starts a new run from a checkpoint's weights; --resume continues "
                            "one: pass one of them")
    return load_init(tc.model, tc.init, tc.config)


def train(tc: TrainConfig) -> TrainResult:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from echoedge.data.cache import FrameCache
    from echoedge.data.clips import compute_mean_std
    from echoedge.data.dataset import EchoClipDataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import read_payload
    from echoedge.model.evaluate import eager_infer, predict_videos
    from echoedge.model.metrics import ef_metrics
    from echoedge.model.registry import get_model_entry
    from echoedge.model.trainee import check_frames, make_trainee

    t_start = time.time()
    get_model_entry(tc.model)  # an unknown name fails before any work
    check_frames(tc.model, tc.frames, tc.period)
    import cv2

    # DataLoader workers are forked; a fork taken while OpenCV's thread pool is alive can deadlock
    # in the child's first OpenCV call. One OpenCV thread in this process means no pool at all.
    cv2.setNumThreads(1)
    dist = _Dist()
    if dist.enabled:
        import torch.distributed as tdist

        backend = "nccl" if (tc.device != "cpu" and torch.cuda.is_available()) else "gloo"
        tdist.init_process_group(backend=backend)
    device = _pick_device(tc.device, dist)
    use_amp = tc.amp and device.startswith("cuda")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out = Path(tc.out)
    best_path, last_path = out / "best.pt", out / "last.pt"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        if not tc.resume and last_path.exists():
            raise EchoEdgeError(f"{out}: already holds a run (last.pt); pass --resume or another --out")

    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)

    reader = EchoNet(Path(tc.data), require_tracings=tc.require_tracings)
    train_recs = reader.records("TRAIN")
    val_recs = reader.records("VAL")
    if tc.max_train_videos:
        train_recs = train_recs[: tc.max_train_videos]
    if tc.val_videos:
        val_recs = val_recs[: tc.val_videos]
    if not any(r.has_tracings for r in train_recs):
        import warnings

        warnings.warn(f"{tc.data}: no tracings in TRAIN; landmark and geometry terms are masked")
    # The always-mean EF baseline travels in the checkpoint, so evaluating on a test-only set
    # compares against the mean of what the model was actually trained on.
    train_ef_values = [r.ef for r in train_recs if math.isfinite(r.ef)]
    train_ef = (float(np.mean(train_ef_values)), len(train_ef_values))

    cache = FrameCache(reader, Path(tc.cache_dir) if tc.cache_dir else None)
    if dist.main:
        cache.build(train_recs + val_recs, workers=max(1, tc.workers), progress=tc.progress)
    dist.barrier()
    init = _init_checkpoint(tc)
    if init is not None:  # fine-tuning keeps the input contract the weights were trained with
        mean, std = init.spec.mean, init.spec.std
    else:
        mean, std = compute_mean_std(reader, "TRAIN", max_videos=tc.norm_videos, frames_source=cache)
    trainee = make_trainee(tc.model, tc.config, mean, std, init, frames=tc.frames, period=tc.period,
                           train_ef_mean=train_ef[0] if train_ef[1] else None, loss_weights=tc.loss)
    spec = trainee.spec

    train_ds = EchoClipDataset(train_recs * tc.repeats, cache, spec, mode="train",
                               shift_pad=tc.shift_pad, traced_fraction=tc.traced_fraction, seed=tc.seed,
                               recipe=tc.recipe)
    sampler = (DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                  seed=tc.seed, drop_last=True) if dist.enabled else None)
    gen = torch.Generator().manual_seed(tc.seed)
    loader = DataLoader(train_ds, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=tc.workers, drop_last=True, generator=gen,
                        pin_memory=device.startswith("cuda"), persistent_workers=tc.workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise EchoEdgeError(f"{tc.data}: {len(train_ds)} TRAIN clips is fewer than one batch of {tc.batch_size}")

    model = trainee.net.to(device)
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.999))
    sched_fn = _Schedule(int(tc.warmup_epochs * steps_per_epoch), tc.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, sched_fn)
    total_epochs, start_epoch, best_mae, history = tc.epochs, 0, float("inf"), []

    if tc.resume:
        payload = read_payload(last_path)
        state = payload.get("train_state")
        if state is None:
            raise EchoEdgeError(f"{last_path}: holds no training state to resume from")
        if payload["model_config"].get("name") != trainee.config_name:
            raise EchoEdgeError(f"{last_path}: run is of config '{payload['model_config'].get('name')}', "
                                f"not '{trainee.config_name}'")
        # A video ResNet's file holds the inner network (torchvision's names), not EFOutputs.
        getattr(model, "net", model).load_state_dict(payload["state_dict"])
        opt.load_state_dict(state["optimizer"])
        total_epochs = int(state["total_epochs"])
        sched_fn.total = total_epochs * steps_per_epoch
        sched.load_state_dict(state["scheduler"])
        start_epoch, best_mae, history = int(state["epoch"]) + 1, float(state["best_mae"]), list(state["history"])
        if dist.main and history:
            _write_log(out, history)

    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)

    meta_base = {"train_config": asdict(tc), "host": _host(), "world_size": dist.world,
                 "data_root": str(tc.data), "n_train_videos": len(train_recs), "n_val_videos": len(val_recs)}
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    epoch = start_epoch
    while epoch < total_epochs:
        t_epoch = time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        net.train()
        sums: dict[str, float] = {}
        n_batches = 0
        with Progress(TextColumn("epoch {task.fields[ep]}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                      TimeRemainingColumn(), disable=not (tc.progress and dist.main), transient=True) as bar:
            task = bar.add_task("train", total=steps_per_epoch, ep=f"{epoch + 1}/{total_epochs}", loss="")
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    outputs = net(batch["clip"])
                outputs = tuple(o.float() for o in outputs)
                loss, parts = trainee.loss(outputs, batch)
                if not torch.isfinite(loss):
                    raise EchoEdgeError(f"non-finite loss at epoch {epoch + 1} (parts: {parts}); lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n_batches += 1
                bar.update(task, advance=1, loss=f"loss {sums.get('total', 0.0) / n_batches:.3f}")
        train_s = time.time() - t_epoch

        row: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_s": round(train_s, 2)}
        row.update({f"train_{k}": v / max(1, n_batches) for k, v in sums.items()})
        if dist.main:
            preds = predict_videos(eager_infer(model, device), val_recs, cache, spec,
                                   clips_per_video=tc.val_clips, batch_size=max(8, tc.batch_size),
                                   progress=False)
            m = ef_metrics(np.array([p.ef_true for p in preds]), np.array([p.ef for p in preds]))
            row.update({"val_mae": m.mae, "val_rmse": m.rmse, "val_r2": m.r2, "epoch_s": round(time.time() - t_epoch, 2)})
            history.append(row)
            improved = m.mae < best_mae
            best_mae = min(best_mae, m.mae)
            meta = {**meta_base, "epoch": epoch + 1, "total_epochs": total_epochs,
                    "wall_s": round(time.time() - t_start, 1)}
            metrics = {"val_mae": m.mae, "val_rmse": m.rmse, "val_r2": m.r2, "best_val_mae": best_mae}
            fingerprint = reader.fingerprint()
            if improved:
                trainee.save(best_path, fingerprint, metrics, meta, train_ef)
            trainee.save(last_path, fingerprint, metrics, meta, train_ef, train_state={
                                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                "epoch": epoch, "total_epochs": total_epochs, "best_mae": best_mae,
                                "history": history})
            _write_log(out, history)
            print(f"epoch {epoch + 1}/{total_epochs}  loss {row.get('train_total', float('nan')):.4f}  "
                  f"val MAE {m.mae:.2f}  RMSE {m.rmse:.2f}  R2 {m.r2:.3f}  ({row['epoch_s']:.0f} s)"
                  + ("  *best" if improved else ""), flush=True)
        dist.barrier()
        if tc.time_budget_s and epoch == start_epoch:
            total_epochs = _fit_to_budget(tc.time_budget_s, t_start, t_epoch, epoch, total_epochs, dist)
            sched_fn.total = total_epochs * steps_per_epoch
        epoch += 1

    if dist.enabled:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    return TrainResult(out=out, best=best_path, last=last_path, epochs=total_epochs,
                       best_val_mae=best_mae, wall_s=time.time() - t_start, history=history)


def _fit_to_budget(budget_s: float, t_start: float, t_epoch: float, epoch: int, total: int, dist: _Dist) -> int:
    """Shrink the number of epochs so the run ends within the budget, judged on the first full
    epoch (training and validation) with 5 % headroom; the cosine schedule then still decays
    fully. Rank 0 decides and broadcasts, so every process runs the same number of epochs."""
    per_epoch = (time.time() - t_epoch) * 1.05
    fit = epoch + 1 + int((budget_s - (time.time() - t_start)) / per_epoch)
    new_total = min(total, max(epoch + 1, fit))
    if dist.enabled:
        import torch
        import torch.distributed as tdist

        t = torch.tensor([new_total], dtype=torch.int64)
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.broadcast(t, src=0)
        new_total = int(t.item())
    return new_total


def _write_log(out: Path, history: list[dict[str, Any]]) -> None:
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    tmp = out / ".log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, out / "log.csv")
    (out / ".log.json.tmp").write_text(json.dumps(history, indent=1))
    os.replace(out / ".log.json.tmp", out / "log.json")
    _plot_curves(out / "curves.png", history)


def _plot_curves(path: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    a.plot(ep, [r.get("train_total", np.nan) for r in history], label="train loss")
    a.set(xlabel="epoch", ylabel="loss", yscale="log")
    a.legend()
    b.plot(ep, [r.get("val_mae", np.nan) for r in history], color="C1", label="VAL EF MAE")
    b.set(xlabel="epoch", ylabel="EF MAE (points)")
    b.legend()
    fig.tight_layout()
    tmp = path.with_name(".curves.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
