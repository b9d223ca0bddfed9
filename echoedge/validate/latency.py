"""Latency of a runner on one clip, and the fingerprint of the host that measured it.

A latency figure means nothing without the machine and thread count behind it, so every report
carries a host fingerprint (CPU model, cores, threads, runtime versions) and its short id; two
reports with different ids must not be compared as if they were one run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Distributions whose versions decide a runtime's speed or numbers (missing ones are reported so).
RUNTIME_DISTS = ("echo-edge", "torch", "executorch", "torchao", "ai-edge-litert", "tensorflow-cpu",
                 "tensorflow", "coremltools", "onnxruntime", "numpy")


@dataclass
class Latency:
    load_s: float
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    clips_per_s: float  # 1000 / mean latency: one clip at a time, batch 1
    runs: int
    warmup: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(runner: Any, clip: np.ndarray, runs: int = 20, warmup: int = 3,
                    threads: int = 2) -> Latency:
    """Time `runner(clip)` `runs` times after `warmup` untimed calls (batch 1, fixed threads).

    Warm-up matters: the first calls of XNNPACK and of PyTorch pay for packing weights and
    allocating; they would inflate the p90 of a short series.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    x = np.ascontiguousarray(clip if clip.ndim == 5 else clip[None], dtype=np.float32)[:1]
    for _ in range(max(0, warmup)):
        runner(x)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        runner(x)
        times[i] = time.perf_counter() - t0
    return latency_from_times(times, warmup, threads, float(getattr(runner, "load_s", 0.0)))


def latency_from_times(times_s: Any, warmup: int, threads: int, load_s: float = 0.0) -> Latency:
    """Latency figures from timed batch-1 calls (seconds each; warm-up calls already dropped)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timed runs")
    return Latency(load_s=float(load_s), p50_ms=float(np.percentile(ms, 50)),
                   p90_ms=float(np.percentile(ms, 90)), mean_ms=float(ms.mean()), min_ms=float(ms.min()),
                   clips_per_s=float(1000.0 / ms.mean()), runs=int(ms.size), warmup=int(warmup),
                   threads=int(threads))


def round_robin(runners: dict[str, Any], clip: np.ndarray, runs: int = 20, warmup: int = 3,
                threads: int = 2) -> dict[str, Latency]:
    """Time several runners side by side: call i of every runner is timed back to back.

    On a shared machine a burst of load from another process then hits all runners alike
    instead of skewing one of them, so their ratios stay meaningful (the benches' figures).
    """
    x = np.ascontiguousarray(clip if clip.ndim == 5 else clip[None], dtype=np.float32)[:1]
    for r in runners.values():
        for _ in range(max(0, warmup)):
            r(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            times[name].append(time.perf_counter() - t0)
    return {name: latency_from_times(ts, warmup, threads, float(getattr(runners[name], "load_s", 0.0)))
            for name, ts in times.items()}


class TimedRunner:
    """Wraps a runner and times every call, so the accuracy pass doubles as the latency series.

    The clips differ from call to call, which does not matter for a static-shape program: its
    work does not depend on the pixel values. Only the runner call is timed, not clip extraction.
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.times: list[float] = []

    def __call__(self, batch: np.ndarray) -> Any:
        t0 = time.perf_counter()
        out = self.runner(batch)
        self.times.append(time.perf_counter() - t0)
        return out

    def latency(self, clip: np.ndarray, runs: int, warmup: int, threads: int) -> Latency:
        """The calls after the first `warmup`, topped up with calls on `clip` to at least `runs`."""
        x = np.ascontiguousarray(clip if clip.ndim == 5 else clip[None], dtype=np.float32)[:1]
        times = list(self.times[max(0, warmup):])
        if len(self.times) < warmup:  # too few accuracy calls even to warm up
            for _ in range(warmup - len(self.times)):
                self.runner(x)
        while len(times) < runs:
            t0 = time.perf_counter()
            self.runner(x)
            times.append(time.perf_counter() - t0)
        return latency_from_times(times, warmup, threads, float(getattr(self.runner, "load_s", 0.0)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in RUNTIME_DISTS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def host_fingerprint(threads: int) -> dict[str, Any]:
    """CPU model, cores, threads, OS and runtime versions, plus a short id over all of them."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    fp = {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "logical_cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "threads": int(threads),
        "runtime_versions": runtime_versions(),
    }
    fp["id"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    # Not part of the id (it is the moment, not the machine), but a busy host explains slow
    # figures: a 1-minute load above the core count means other work shared the CPUs.
    try:
        fp["load_average_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        fp["load_average_1m"] = None
    return fp
