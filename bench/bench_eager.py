"""Eager fp32 CPU latency of Echo-E3Net: the honest baseline every exported artefact is compared to.

One clip (batch 1) under torch.inference_mode with a fixed thread count (default 2, this project's
CPU machines); warm-up runs are discarded, then the median and p90 of --runs timed forwards.

    python bench/bench_eager.py --config paper --runs 30 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from echoedge.model.config import get_config
from echoedge.model.network import build_model, check_input, count_parameters


def bench(config: str, runs: int, threads: int, warmup: int, batch: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = get_config(config)
    model = build_model(cfg).eval()
    x = torch.randn(cfg.input_shape(batch))
    check_input(x, cfg)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    median = statistics.median(times)
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return {"params": count_parameters(model), "median_ms": median * 1e3, "p90_ms": p90 * 1e3,
            "min_ms": times[0] * 1e3, "clips_per_s": batch / median}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper", help="model preset (paper, tiny)")
    ap.add_argument("--runs", type=int, default=30, help="timed forwards (>= 20 recommended)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    r = bench(args.config, args.runs, args.threads, args.warmup, args.batch)
    cfg = get_config(args.config)
    print(f"Echo-E3Net '{args.config}' eager fp32, input {cfg.input_shape(args.batch)}, "
          f"{r['params']:,} params")
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {args.threads} threads, {cpu}, "
          f"{args.warmup} warm-up + {args.runs} timed runs")
    print(f"median {r['median_ms']:.1f} ms   p90 {r['p90_ms']:.1f} ms   min {r['min_ms']:.1f} ms   "
          f"{r['clips_per_s']:.2f} clips/s")


if __name__ == "__main__":
    main()
