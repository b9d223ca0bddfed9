"""ExecuTorch .pte fp32 and int8 against the eager fp32 reference: latency, size, conversion time,
and the int8 EF drift for each calibration strategy.

One process, one clip (batch 1), a fixed thread count (default 2) for every runner: the eager 3D
reference (the honest baseline: PyTorch's own Conv3d is fast on CPU), the eager deploy form, and
the fp32 and int8 .pte built from the deploy form. Warm-up runs are discarded, then the median
and p90 of --runs timed calls, taken round-robin across the runners (this machine may be shared;
a load burst then hits every runner alike).

EF drift: per-video EF with `evaluate`'s protocol (--clips evenly spaced clips per video) on the
first --videos TEST videos of the default dataset, each int8 program against the eager 3D
reference; one int8 program per calibration strategy (--strategies), each calibrated on its own
--calib-size clips drawn from TRAIN with the same seed.

    python bench/bench_executorch.py                          # shipped checkpoint (paper config)
    python bench/bench_executorch.py --strategies ef-stratified --videos 20
    python bench/bench_executorch.py --keep /tmp/et --reuse   # time again without reconverting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.validate.agreement import delta_stats
from echoedge.validate.latency import round_robin


def _drift(ef: np.ndarray, ref: np.ndarray) -> Any:
    return delta_stats(ref, ef)


STRATEGIES = ("random", "ef-stratified", "phase-aware")


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.calibration import build_calibration_set
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.executorch import export_executorch, portable_ops
    from echoedge.data.cache import FrameCache
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.evaluate import predict_videos
    from echoedge.validate.runner import EagerRunner, open_runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--data", type=Path, default=None, help="default: the built-in synthetic set")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--videos", type=int, default=50, help="TEST videos for the EF drift")
    ap.add_argument("--clips", type=int, default=4, help="clips per video")
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
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    main_strategy = "ef-stratified" if "ef-stratified" in strategies else strategies[0]

    torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    data = args.data or default_dataset()
    reader = EchoNet(data)
    frames = FrameCache(reader, None)
    test = reader.records("TEST")[: args.videos]
    calibs = {s: build_calibration_set(data, spec, strategy=s, size=args.calib_size, seed=0,
                                       progress=False) for s in strategies}
    example = torch.from_numpy(calibs[main_strategy].clips[:2].copy())
    t0 = time.perf_counter()
    form = to_deploy_form(ck.model, example)
    deploy_s = time.perf_counter() - t0

    tmp = tempfile.TemporaryDirectory(prefix="bench-et-") if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    folders: dict[str, Path] = {}
    convert_s: dict[str, float] = {}
    jobs = [("fp32", "fp32", None)] + [(f"int8 {s}", "int8", calibs[s]) for s in strategies]
    for key, precision, calib in jobs:
        folder = root / ("et-" + key.replace(" ", "-"))
        if args.reuse and (folder / "manifest.json").is_file():
            folders[key] = folder
            convert_s[key] = read_manifest(folder).details["timings_s"]["total"]
            continue
        t0 = time.perf_counter()
        folders[key] = export_executorch(form, spec, folder, precision, calib, ck.sha256,
                                         progress=True, overwrite=args.keep is not None)
        convert_s[key] = time.perf_counter() - t0

    reference = EagerRunner(ck.model, threads=args.threads)
    runners = {
        "eager fp32 (3D reference)": reference,
        "eager fp32 (deploy form)": EagerRunner(form, threads=args.threads, name="deploy"),
        ".pte fp32": open_runner(folders["fp32"], threads=args.threads),
        f".pte int8 ({main_strategy})": open_runner(folders[f"int8 {main_strategy}"], threads=args.threads),
    }
    clip = calibs[main_strategy].clips[:1].copy()
    rows = {k: v.to_dict() for k, v in round_robin(runners, clip, args.runs, args.warmup).items()}
    base = rows["eager fp32 (3D reference)"]["p50_ms"]

    def per_video_ef(infer: Any, what: str) -> np.ndarray:
        preds = predict_videos(infer, test, frames, spec, clips_per_video=args.clips,
                               progress=True, description=what)
        return np.array([p.ef for p in preds])

    ref_ef = per_video_ef(reference, "eager reference")
    drifts: dict[str, dict[str, float]] = {}
    for key in folders:
        r = open_runner(folders[key], threads=args.threads)
        drifts[key] = _drift(per_video_ef(r, key), ref_ef)
        r.close()

    print()
    print(f"checkpoint {args.checkpoint.name} ({ck.config.name}), input {spec.input_shape(1)}, "
          f"batch 1, {args.threads} threads, {args.warmup} warm-up + {args.runs} timed runs (round-robin)")
    print(f"torch {torch.__version__}, executorch {read_manifest(folders['fp32']).tool_versions['executorch']}; "
          f"deploy form built in {deploy_s:.1f} s ({form.deploy_check.summary()})")
    head = f"{'':<30} {'median ms':>9} {'p90 ms':>7} {'speed-up':>8} {'MB':>6} {'conv s':>6}"
    print(head)
    print("-" * len(head))
    names = {".pte fp32": "fp32", f".pte int8 ({main_strategy})": f"int8 {main_strategy}"}
    for name, row in rows.items():
        key = names.get(name)
        size = f"{read_manifest(folders[key]).model_bytes / 1e6:.2f}" if key else "-"
        conv = f"{convert_s[key]:.0f}" if key else "-"
        print(f"{name:<30} {row['p50_ms']:9.1f} {row['p90_ms']:7.1f} {base / row['p50_ms']:7.2f}x "
              f"{size:>6} {conv:>6}")
    print()
    print(f"EF drift vs the eager fp32 reference, {len(test)} TEST videos x {args.clips} clips "
          f"(calibration: {args.calib_size} TRAIN clips per strategy, seed 0)")
    head = f"{'artefact':<28} {'|dEF| mean':>10} {'p95':>6} {'max':>6} {'calibration id':>18}"
    print(head)
    print("-" * len(head))
    for key, d in drifts.items():
        cid = read_manifest(folders[key]).calibration_id or "-"
        print(f"{'.pte ' + key:<28} {d.mean_abs:10.3f} {d.p95_abs:6.3f} {d.max_abs:6.3f} {cid:>18}")
    print()
    for key in folders:
        m = read_manifest(folders[key])
        d = m.details["delegation"]
        left = ", ".join(f"{op} x{n}" for op, n in sorted(portable_ops(d).items(), key=lambda kv: -kv[1]))
        t = m.details["timings_s"]
        print(f".pte {key}: {d['xnnpack_nodes']} nodes in {d['xnnpack_subgraphs']} XNNPACK subgraphs, "
              f"{d['portable_nodes']} on portable kernels ({left or 'none'}); conversion {t['total']:.0f} s "
              f"= export+quantize {t['export_quantize']:.0f} + lower {t['lower']:.0f} + "
              f"check/bundle {t['run_check'] + t['bundle']:.0f}")
    if args.json:
        args.json.write_text(json.dumps({"latency": rows, "drift": {k: asdict(v) for k, v in drifts.items()}, "convert_s": convert_s,
                                         "threads": args.threads, "runs": args.runs,
                                         "videos": len(test), "clips": args.clips}, indent=2))
    for r in runners.values():
        r.close()
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
