"""Latency of a runner on one clip, and the fingerprint of the host that measured it.

A latency figure means nothing without the machine and thread count behind it, so every report
carries a host fingerprint (CPU model and generation, SIMD features, cores, threads, runtime
versions) and its short id; two reports with different ids must not be compared as if they were
one run.
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


# The SIMD features that decide which kernels XNNPACK, oneDNN and TFLite pick, and so how fast
# int8 runs. KVM guests often show a generic model name ("AMD EPYC" on a Zen 3 host with AVX2
# only) that says nothing of them; the whole-recipe .pte ran 4.0x eager fp32 on a host with
# AVX-512 VNNI and 2.6x on that one.
_X86_SIMD = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")
_ARM_SIMD = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "asimdhp")
# Fields of /proc/cpuinfo that tell CPU generations apart where the model name does not; x86
# then Arm.
_CPU_ID_FIELDS = ("cpu family", "model", "stepping", "cpu implementer", "cpu architecture",
                  "cpu variant", "cpu part")


def _cpuinfo_first_block(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


# macOS has no /proc/cpuinfo; `sysctl hw.optional` names the same features its own way.
_DARWIN_SIMD = {"hw.optional.avx2_0": "avx2", "hw.optional.fma": "fma",
                "hw.optional.avx512f": "avx512f", "hw.optional.avx512bw": "avx512bw",
                "hw.optional.avx512vl": "avx512vl", "hw.optional.avx512vnni": "avx512_vnni",
                "hw.optional.neon": "asimd", "hw.optional.arm.FEAT_DotProd": "asimddp",
                "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_BF16": "bf16",
                "hw.optional.arm.FEAT_FP16": "asimdhp"}


def darwin_simd(sysctl_text: str) -> list[str]:
    """The features `sysctl hw.optional` reports as 1, in this module's (Linux) names."""
    on = {k.strip() for k, _, v in (line.partition(":") for line in sysctl_text.splitlines())
          if v.strip() == "1"}
    names = {n for key, n in _DARWIN_SIMD.items() if key in on}
    return [f for f in (*_X86_SIMD, *_ARM_SIMD) if f in names]


def cpu_isa(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's identification fields and the SIMD features among those that pick kernels.

    `cpuinfo` is /proc/cpuinfo's text (read when None). On macOS the features come from
    `sysctl hw.optional`; elsewhere without /proc/cpuinfo: no fields, no features.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            if platform.system() == "Darwin":
                import subprocess

                try:
                    out = subprocess.run(["sysctl", "hw.optional"], capture_output=True,
                                         text=True, timeout=10).stdout
                except (OSError, subprocess.SubprocessError):
                    out = ""
                return {"id": {}, "simd": darwin_simd(out)}
            cpuinfo = ""
    fields = _cpuinfo_first_block(cpuinfo)
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    known = _X86_SIMD if "flags" in fields else _ARM_SIMD
    return {"id": {k: fields[k] for k in _CPU_ID_FIELDS if k in fields},
            "simd": [f for f in known if f in flags]}


def simd_summary(simd: list[str]) -> str:
    """What the int8 kernels can use, in a few words: "AVX-512 VNNI", "NEON, dot product", ..."""
    have = set(simd)
    if {"avx2", "avx512f"} & have:
        if "amx_int8" in have:
            return "AMX int8, AVX-512 VNNI" if "avx512_vnni" in have else "AMX int8"
        if "avx512_vnni" in have:
            return "AVX-512 VNNI"
        if "avx512f" in have:
            return "AVX-512, no VNNI"
        return "AVX2, AVX-VNNI" if "avx_vnni" in have else "AVX2, no AVX-512, no VNNI"
    if "asimd" in have:
        dot = [n for f, n in (("asimddp", "dot product"), ("i8mm", "i8mm"), ("sve", "SVE")) if f in have]
        return "NEON" + (", " + ", ".join(dot) if dot else ", no dot product")
    return "unknown SIMD"


def cpu_line(host: dict[str, Any]) -> str:
    """A fingerprint's CPU in one phrase: "AMD EPYC (family 25, model 1; AVX2, no AVX-512, no VNNI)".
    Reports written before the fingerprint had cpu_id and simd give the model name alone."""
    ident = ", ".join(f"{k.removeprefix('cpu ')} {v}" for k, v in (host.get("cpu_id") or {}).items()
                      if k != "stepping")
    parts = [p for p in (ident, simd_summary(host["simd"]) if "simd" in host else "") if p]
    return host["cpu_model"] + (f" ({'; '.join(parts)})" if parts else "")


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in RUNTIME_DISTS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) CPU seconds of all CPUs since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    if len(ticks) < 8:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = ticks  # guest time is inside user
    busy = user + nice + system + irq + softirq
    return busy / hz, steal / hz, (busy + idle + iowait + steal) / hz


def _own_cpu_s() -> float:
    """CPU seconds of this process's threads and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWindow:
    """How much CPU other processes used, and the hypervisor stole, while this process timed:
    from its creation to `stop()`.

    The 1-minute load average cannot say it: in `run` it still counts the conversions that
    finished just before validation, and it counts this process's own threads. Here the CPU time
    of every process (/proc/stat) minus this process's own (os.times, waited-for children
    included) over the window is what others used; the steal share is the time the vCPUs waited
    for the host.
    """

    def __init__(self) -> None:
        self._start = (_proc_stat(), _own_cpu_s(), time.perf_counter())

    def stop(self) -> dict[str, float] | None:
        """The window's figures (None where /proc/stat cannot be read)."""
        end = (_proc_stat(), _own_cpu_s(), time.perf_counter())
        if self._start[0] is None or end[0] is None:
            return None
        (b0, st0, tot0), own0, w0 = self._start
        (b1, st1, tot1), own1, w1 = end
        wall = w1 - w0
        if wall <= 0 or tot1 <= tot0:
            return None
        return {"other_processes_cores": round(max(0.0, (b1 - b0) - (own1 - own0)) / wall, 2),
                "steal_share": round((st1 - st0) / (tot1 - tot0), 3), "window_s": round(wall, 1)}


def host_fingerprint(threads: int, load_while_timing: dict[str, float] | None = None) -> dict[str, Any]:
    """CPU model and generation (cpu_id), its kernel-picking SIMD features, cores, threads, OS and
    runtime versions, plus a short id over all of them; `load_while_timing` (LoadWindow.stop's
    figures, not part of the id) is added when given."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    isa = cpu_isa()
    fp = {
        "cpu_model": cpu_model(),
        "cpu_id": isa["id"],
        "simd": isa["simd"],
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
    if load_while_timing:
        fp["load_while_timing"] = load_while_timing
    return fp
