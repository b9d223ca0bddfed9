"""ExecuTorch .pte fp32 and int8 against the eager fp32 reference: latency, size, conversion time.

One process, one clip (batch 1), a fixed thread count (default 2) for every runner: the eager 3D
reference (the honest baseline: PyTorch's own Conv3d is fast on CPU), the eager deploy form, and
the fp32 and int8 .pte built from the deploy form into a temporary folder. Warm-up runs are
discarded, then the median and p90 of --runs timed calls, taken round-robin across the runners
(this machine may be shared; a load burst then hits every runner alike). EF drift is measured on
held-out TEST clips of the default dataset.

Calibration: an ef-stratified set from echoedge.calibration on the default dataset's TRAIN split.
If echoedge.calibration is not importable, the documented fallback is one clip from the middle of
each of the first --calib-size TRAIN videos of the default dataset (its TRAIN videos are TRAIN
videos of the set the shipped checkpoint was trained on).

    python bench/bench_executorch.py                      # shipped checkpoint (paper config)
    python bench/bench_executorch.py --checkpoint RUN/best.pt --runs 30 --calib-size 64
    python bench/bench_executorch.py --keep /tmp/et --reuse   # time again without reconverting
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FallbackCalibration:
    clips: np.ndarray
    id: str
    manifest: dict[str, Any] = field(default_factory=dict)


def calibration_set(data: Path, spec: Any, size: int) -> tuple[Any, str]:
    try:
        from echoedge.calibration import build_calibration_set
    except ImportError:
        return fallback_calibration(data, spec, size), "fallback: middle clip of the first TRAIN videos"
    return build_calibration_set(data, spec, size=size, progress=False), "echoedge.calibration ef-stratified"


def fallback_calibration(data: Path, spec: Any, size: int) -> FallbackCalibration:
    from echoedge.data.cache import FrameCache
    from echoedge.data.clips import extract_clip
    from echoedge.data.echonet import EchoNet

    reader = EchoNet(data)
    frames = FrameCache(reader, None)
    clips = []
    for rec in reader.records("TRAIN")[:size]:
        f = frames(rec)
        clips.append(extract_clip(f, max(0, (len(f) - spec.span) // 2), spec))
    arr = np.stack(clips).astype(np.float32)
    return FallbackCalibration(arr, "fallback-train-" + hashlib.sha256(arr.tobytes()).hexdigest()[:16])


def held_out_clips(data: Path, spec: Any, n: int) -> np.ndarray:
    from echoedge.data.cache import FrameCache
    from echoedge.data.clips import extract_clip
    from echoedge.data.echonet import EchoNet

    reader = EchoNet(data)
    frames = FrameCache(reader, None)
    out = []
    for rec in reader.records("TEST")[:n]:
        f = frames(rec)
        out.append(extract_clip(f, 0, spec))
    return np.stack(out).astype(np.float32)


def time_runners(runners: dict[str, Any], clip: np.ndarray, runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Round-robin: call i of every runner is timed back to back, so a burst of load from another
    process on this shared machine hits all runners alike instead of skewing one of them."""
    for r in runners.values():
        for _ in range(warmup):
            r(clip)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, r in runners.items():
            t0 = time.perf_counter()
            r(clip)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        ts.sort()
        p90 = ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        out[name] = {"median_ms": statistics.median(ts) * 1e3, "p90_ms": p90 * 1e3, "min_ms": ts[0] * 1e3}
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.executorch import export_executorch, portable_ops
    from echoedge.data.default import default_dataset
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.validate.runner import EagerRunner, open_runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--test-clips", type=int, default=16, help="held-out clips for the EF drift")
    ap.add_argument("--runs", type=int, default=30, help="timed calls (>= 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="write the artefacts here instead of a temp dir")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse artefacts already there (conversion times from their manifests)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error("--runs must be >= 20")
    if args.reuse and args.keep is None:
        ap.error("--reuse needs --keep DIR")

    torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    data = default_dataset()
    calib, calib_how = calibration_set(data, spec, args.calib_size)
    held_out = held_out_clips(data, spec, args.test_clips)
    t0 = time.perf_counter()
    form = to_deploy_form(ck.model, torch.from_numpy(held_out[:2]))
    deploy_s = time.perf_counter() - t0

    tmp = tempfile.TemporaryDirectory(prefix="bench-et-") if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    folders, convert_s = {}, {}
    for precision in ("fp32", "int8"):
        t0 = time.perf_counter()
        folder = root / f"et-{precision}"
        if args.reuse and (folder / "manifest.json").is_file():
            folders[precision] = folder
            convert_s[precision] = read_manifest(folder).details["timings_s"]["total"]
            continue
        folders[precision] = export_executorch(
            form, spec, root / f"et-{precision}", precision, calib if precision == "int8" else None,
            ck.sha256, golden_inputs=held_out[:3], progress=True, overwrite=args.keep is not None)
        convert_s[precision] = time.perf_counter() - t0

    runners = {
        "eager fp32 (3D reference)": EagerRunner(ck.model, threads=args.threads),
        "eager fp32 (deploy form)": EagerRunner(form, threads=args.threads, name="deploy"),
        ".pte fp32": open_runner(folders["fp32"], threads=args.threads),
        ".pte int8": open_runner(folders["int8"], threads=args.threads),
    }
    ref = runners["eager fp32 (3D reference)"](held_out)
    clip = held_out[:1]
    rows = time_runners(runners, clip, args.runs, args.warmup)
    for name, r in runners.items():
        out = r(held_out)
        row: dict[str, Any] = rows[name]
        row["ef_max_abs_diff"] = float(np.abs(out[0] - ref[0]).max())
        row["ef_mean_abs_diff"] = float(np.abs(out[0] - ref[0]).mean())
        row["landmark_max_abs_diff"] = float(max(np.abs(out[k] - ref[k]).max() for k in (3, 4)))
        r.close()
    base = rows["eager fp32 (3D reference)"]["median_ms"]
    for precision, name in (("fp32", ".pte fp32"), ("int8", ".pte int8")):
        m = read_manifest(folders[precision])
        rows[name]["size_mb"] = m.model_bytes / 1e6
        rows[name]["convert_s"] = convert_s[precision]
        rows[name]["delegation"] = m.details["delegation"]
        rows[name]["bundled"] = m.details["bundled_program"]
        rows[name]["timings_s"] = m.details["timings_s"]

    print()
    print(f"checkpoint {args.checkpoint.name} ({ck.config.name}), input {spec.input_shape(1)}, "
          f"batch 1, {args.threads} threads, {args.warmup} warm-up + {args.runs} timed runs")
    int8_calib = read_manifest(folders["int8"]).calibration_id  # a reused artefact keeps its own
    print(f"calibration: {len(calib.clips)} clips, {calib_how}, id {int8_calib}; "
          f"EF drift on {len(held_out)} TEST clips; deploy form built in {deploy_s:.1f} s")
    print(f"torch {torch.__version__}, executorch {read_manifest(folders['fp32']).tool_versions['executorch']}")
    head = f"{'':<27} {'median ms':>9} {'p90 ms':>7} {'x eager':>7} {'MB':>6} {'conv s':>6} " \
           f"{'EF |d| mean/max':>15} {'LM |d| max':>10}"
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        size = f"{row['size_mb']:.2f}" if "size_mb" in row else "-"
        conv = f"{row['convert_s']:.0f}" if "convert_s" in row else "-"
        print(f"{name:<27} {row['median_ms']:9.1f} {row['p90_ms']:7.1f} {row['median_ms'] / base:7.2f} "
              f"{size:>6} {conv:>6} {row['ef_mean_abs_diff']:7.3f}/{row['ef_max_abs_diff']:<7.3f} "
              f"{row['landmark_max_abs_diff']:10.4f}")
    for name in (".pte fp32", ".pte int8"):
        d = rows[name]["delegation"]
        left = ", ".join(f"{op} x{n}" for op, n in sorted(portable_ops(d).items(), key=lambda kv: -kv[1]))
        print(f"{name}: {d['xnnpack_nodes']} nodes in {d['xnnpack_subgraphs']} XNNPACK subgraphs, "
              f"{d['portable_nodes']} on portable kernels: {left or 'none'}")
        t = rows[name]["timings_s"]
        print(f"{name}: conversion {t['total']:.0f} s = export+quantize {t['export_quantize']:.0f} s, "
              f"lower {t['lower']:.0f} s, check+bundle {t['run_check'] + t['bundle']:.0f} s")
        b = rows[name]["bundled"]
        print(f"{name}: bundled program " + (f"{b['file']} ({b['cases']} cases, verified on host)"
                                           if b.get("file") else f"not written: {b['error']}"))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "calibration_id": calib.id,
                                         "threads": args.threads, "runs": args.runs}, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
