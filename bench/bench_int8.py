"""Whole-model int8 (issue 15): ExecuTorch int8 and TFLite int8 side by side against eager fp32.

One process, one run: fp32, int8 with the "whole" recipe (every conv and linear weight int8) and
int8 with today's default "conv-stages" recipe, `.pte` and `.tflite`, all converted from the same
deploy form with the same echo calibration set (`echo-edge run`'s: ef-stratified, 32 TRAIN clips,
seed 0), then

- **what the files hold**, read from each file itself (echoedge.convert.weights): file size, weight
  bytes by dtype, the int8 share of weight bytes, conv/linear layers whose weight is stored float;
- **latency**: batch 1, --threads threads, warm-up calls discarded, then the median and p90 of
  --runs calls taken round-robin across eager fp32 (the 3D reference) and every artefact, so a
  load burst on this shared machine hits all alike;
- **EF drift** against the eager fp32 reference, per video with `evaluate`'s protocol:
  (a) `run`'s protocol, the first 24 TEST videos x 2 clips of the default dataset, and
  (b) >= 100 TEST videos (--videos) x --clips clips of a larger synthetic set with the same seed
      (its TEST videos are held out from the shipped checkpoint's training set, as the default's).

    python bench/bench_int8.py                               # shipped checkpoint, all of it
    python bench/bench_int8.py --keep /tmp/b15 --reuse       # time again without reconverting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.validate.agreement import band_agreement, delta_stats
from echoedge.validate.latency import LoadWindow, cpu_line, host_fingerprint, round_robin

GOALS = {"int8_share": 0.95, "size_mb": 2.0, "mean": 0.25, "p95": 0.6, "tflite_ms": 30.0,
         "et_vs_tflite": 1.2, "speedup": 8.0}


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.calibration import build_calibration_set
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.executorch import export_executorch
    from echoedge.convert.tflite import export_tflite
    from echoedge.convert.weights import weight_breakdown
    from echoedge.data.cache import FrameCache
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.evaluate import predict_videos
    from echoedge.validate.runner import EagerRunner, open_runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--videos", type=int, default=100, help="TEST videos of the large set (>= 100)")
    ap.add_argument("--clips", type=int, default=2, help="clips per video on the large set")
    ap.add_argument("--large-set", type=int, default=800,
                    help="synthetic videos in the large set (800: >= 100 TEST videos with the varied look)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    data = default_dataset()
    calib = build_calibration_set(data, spec, strategy="ef-stratified", size=32, seed=0, progress=False)
    form = to_deploy_form(ck.model, torch.from_numpy(calib.clips[:2].copy()))

    tmp = tempfile.TemporaryDirectory(prefix="bench-int8-") if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    converters = {"executorch": export_executorch, "tflite": export_tflite}
    folders: dict[str, Path] = {}
    jobs = [("fp32", None, ""), ("int8", "whole", ""), ("int8", "conv-stages", " (conv-stages)")]
    for fmt, convert in converters.items():
        for precision, recipe, suffix in jobs:
            name = f"{fmt}-{precision}{suffix}"
            folder = root / name.replace(" (", "-").rstrip(")")
            if not (args.reuse and (folder / "manifest.json").is_file()):
                t0 = time.perf_counter()
                extra = {"recipe": recipe} if recipe else {}
                convert(form, spec, folder, precision, calib if precision == "int8" else None,
                        ck.sha256, progress=False, overwrite=args.keep is not None, **extra)
                print(f"converted {name} in {time.perf_counter() - t0:.0f} s", flush=True)
            folders[name] = folder

    files: dict[str, dict[str, Any]] = {}
    for name, folder in folders.items():
        m = read_manifest(folder)
        b = weight_breakdown(folder / m.model_file, m.format)
        files[name] = {"mb": m.model_bytes / 1e6, "int8_share": b.int8_share,
                       "weight_mb": b.weight_bytes / 1e6, "float_layers": b.float_weight_layers,
                       "heavy_layers": b.heavy_layers}

    reference = EagerRunner(ck.model, threads=args.threads)
    runners = {"eager fp32": reference}
    runners.update({name: open_runner(folder, threads=args.threads) for name, folder in folders.items()})
    clip = calib.clips[:1].copy()
    window = LoadWindow()
    lat = {k: v.to_dict() for k, v in round_robin(runners, clip, args.runs, args.warmup).items()}
    load = window.stop()
    base = lat["eager fp32"]["p50_ms"]

    def drift(root_dir: Path, videos: int, clips: int, what: str) -> dict[str, Any]:
        reader = EchoNet(root_dir)
        frames = FrameCache(reader, None)
        test = reader.records("TEST")[:videos]
        if len(test) < videos:
            print(f"note: {what}: the set has only {len(test)} TEST videos (asked {videos}); "
                  "raise --large-set", flush=True)

        def ef(infer: Any) -> np.ndarray:
            return np.array([p.ef for p in predict_videos(infer, test, frames, spec, clips_per_video=clips,
                                                          progress=False)])
        ref = ef(reference)
        out = {"videos": len(test), "clips": clips}
        for name in folders:
            if "int8" in name:
                got = ef(runners[name])
                s = delta_stats(ref, got)
                out[name] = {"mean": s.mean_abs, "p95": s.p95_abs, "max": s.max_abs,
                             "band": band_agreement(ref, got)[0]}
        print(f"drift on {what}: done", flush=True)
        return out

    run_protocol = drift(data, 24, 2, "run's protocol")
    large = drift(default_dataset(videos=args.large_set, progress=False), args.videos, args.clips,
                  f"{args.videos} TEST videos")

    print()
    print(f"checkpoint {args.checkpoint.name}, input {spec.input_shape(1)}, batch 1, {args.threads} threads, "
          f"{args.warmup} warm-up + {args.runs} timed calls round-robin (one run)")
    print(f"host: {cpu_line(host_fingerprint(args.threads))}"
          + (f"; while timing, other processes {load['other_processes_cores']:.2f} cores, steal "
             f"{100 * load['steal_share']:.0f} %" if load else ""))
    head = f"{'':<30} {'MB':>6} {'int8 w%':>7} {'float layers':>12} {'p50 ms':>7} {'p90 ms':>7} {'vs eager':>8}"
    print(head)
    print("-" * len(head))
    print(f"{'eager fp32':<30} {'-':>6} {'-':>7} {'-':>12} {base:7.1f} {lat['eager fp32']['p90_ms']:7.1f} {'1.00x':>8}")
    for name in folders:
        f, row = files[name], lat[name]
        share = "-" if f["int8_share"] is None else f"{100 * f['int8_share']:.1f}"
        print(f"{name:<30} {f['mb']:6.2f} {share:>7} {len(f['float_layers']):>5}/{f['heavy_layers']:<6} "
              f"{row['p50_ms']:7.1f} {row['p90_ms']:7.1f} {base / row['p50_ms']:7.2f}x")
    ratio = lat["executorch-int8"]["p50_ms"] / lat["tflite-int8"]["p50_ms"]
    print(f"ExecuTorch int8 / TFLite int8 p50: {ratio:.2f}x")
    for title, d in (("run's protocol", run_protocol), (f"{large['videos']} TEST videos", large)):
        print(f"\nEF drift vs eager fp32, {title} ({d['videos']} videos x {d['clips']} clips)")
        for name in [n for n in folders if "int8" in n]:
            s = d[name]
            print(f"  {name:<30} mean |dEF| {s['mean']:.3f}  p95 {s['p95']:.3f}  max {s['max']:.3f}  "
                  f"band agreement {100 * s['band']:.1f} %")
    print("\ngoals (issue 15), int8 with the whole recipe:")
    for name in ("executorch-int8", "tflite-int8"):
        f = files[name]
        ok = lambda c: "met" if c else "NOT met"  # noqa: E731
        worst = max(run_protocol[name]["mean"], large[name]["mean"])
        worst95 = max(run_protocol[name]["p95"], large[name]["p95"])
        band = min(run_protocol[name]["band"], large[name]["band"])
        print(f"  {name}: int8 weights >= 95 %: {ok((f['int8_share'] or 0) >= GOALS['int8_share'])}; "
              f"file <= 2.0 MB: {ok(f['mb'] <= GOALS['size_mb'])}; mean |dEF| <= 0.25: {ok(worst <= GOALS['mean'])} "
              f"({worst:.3f}); p95 <= 0.6: {ok(worst95 <= GOALS['p95'])} ({worst95:.3f}); "
              f"band agreement 100 %: {ok(band >= 1.0)} ({100 * band:.1f} %); "
              f">= 8x eager: {ok(base / lat[name]['p50_ms'] >= GOALS['speedup'])}")
    print(f"  tflite-int8 p50 <= 30 ms: {'met' if lat['tflite-int8']['p50_ms'] <= GOALS['tflite_ms'] else 'NOT met'}; "
          f"executorch-int8 within 1.2x of tflite-int8: {'met' if ratio <= GOALS['et_vs_tflite'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"files": files, "latency": lat, "run_protocol": run_protocol,
                                         "large": large}, indent=2, default=float))
    for r in runners.values():
        r.close()
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
