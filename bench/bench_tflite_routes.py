"""The two TFLite routes side by side: onnx2tf (`--format tflite`) and litert-torch
(`--format tflite-litert`), converted from the same deploy form with the same calibration set.

Per artefact: file size, p50 latency (batch 1, --threads threads, round-robin with the eager
reference so a load burst on a shared machine hits every runner alike), per-video |dEF| mean and
p95 against the eager fp32 reference (evaluate's protocol, --clips clips per video, the first
--videos TEST videos), int8 weight share (bytes of int8 weights over all weight bytes, read from the
file: echoedge.convert.weights), op count, and XNNPACK coverage (ops XNNPACK takes vs fallback ops
and partitions, read from a loaded interpreter: echoedge.convert.tflite_delegation). Both routes'
files run in the same interpreter (--interpreter, default the runner's).

    python bench/bench_tflite_routes.py                      # shipped checkpoint (paper config)
    python bench/bench_tflite_routes.py --tiny --runs 3 --videos 4 --clips 1   # smoke run, minutes

The litert-torch route needs its environment (`make litert`). Timing figures are only worth
reading on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROUTES = {"tflite": "onnx2tf", "tflite-litert": "litert-torch"}


def _tiny_setup(work: Path) -> tuple[Path, Path]:
    """A tiny random-weight checkpoint (seed 0) and a 16-video synthetic set: a smoke run."""
    import torch

    from echoedge.data.synthetic import generate_dataset
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.network import EchoE3Net

    ck = work / "tiny.pt"
    if not ck.exists():
        torch.manual_seed(0)
        cfg = get_config("tiny")
        save_checkpoint(ck, EchoE3Net(cfg).eval(), cfg, clip_spec_for(cfg, mean=35.0, std=48.0), "bench")
    data = work / "echonet"
    if not (data / "FileList.csv").exists():
        generate_dataset(data, videos=16, seed=5, workers=2, progress=False)
    return ck, data


def _convert(route: str, form: Any, spec: Any, folder: Path, precision: str, calib: Any, sha: str,
             recipe: str) -> tuple[Path, float]:
    from echoedge.convert.tflite import export_tflite
    from echoedge.convert.tflite_litert import export_tflite_litert

    export = export_tflite if route == "tflite" else export_tflite_litert
    extra = {"recipe": recipe} if precision == "int8" else {}
    t0 = time.perf_counter()
    export(form, spec, folder, precision, calib if precision == "int8" else None, sha,
           progress=False, overwrite=True, **extra)
    return folder, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not results
    import torch

    from echoedge.calibration import build_calibration_set
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.tflite_delegation import xnnpack_coverage
    from echoedge.convert.tflite_interpreter import DEFAULT_INTERPRETER, INTERPRETERS
    from echoedge.convert.tflite_ops import inspect_tflite
    from echoedge.data.cache import FrameCache
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.evaluate import predict_videos
    from echoedge.validate.agreement import delta_stats
    from echoedge.validate.latency import round_robin
    from echoedge.validate.runner import EagerRunner
    from echoedge.validate.tflite_runner import TFLiteRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED, help="default: the shipped checkpoint")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke run: a tiny random-weight checkpoint and a 16-video synthetic set "
                    "(ignores --checkpoint and --data)")
    ap.add_argument("--data", type=Path, default=None, help="default: the built-in synthetic set")
    ap.add_argument("--calibration", default="ef-stratified", help="calibration strategy")
    ap.add_argument("--calib-size", type=int, default=64, help="calibration clips (both routes)")
    ap.add_argument("--precisions", default="fp32,int8", help="comma list of fp32, int8")
    ap.add_argument("--int8-recipe", default="conv-stages", choices=("conv-stages", "whole"))
    ap.add_argument("--videos", type=int, default=50, help="TEST videos for |dEF|")
    ap.add_argument("--clips", type=int, default=2, help="clips per video")
    ap.add_argument("--runs", type=int, default=30, help="timed calls per runner")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interpreter", default=DEFAULT_INTERPRETER, choices=INTERPRETERS,
                    help="the LiteRT interpreter both routes' files run in")
    ap.add_argument("--keep", type=Path, default=None, help="write the artefacts here instead of a temp dir")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "int8") for p in precisions):
        ap.error("--precisions takes fp32 and/or int8 (the precisions both routes offer)")
    if args.runs < 1 or args.videos < 1 or args.clips < 1:
        ap.error("--runs, --videos and --clips must be >= 1")

    tmp = tempfile.TemporaryDirectory(prefix="bench-tflite-routes-") if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    root.mkdir(parents=True, exist_ok=True)
    checkpoint, data = (_tiny_setup(root) if args.tiny else (args.checkpoint, args.data or default_dataset()))
    torch.set_num_threads(args.threads)
    ck = load_checkpoint(checkpoint)
    spec = ck.spec
    reader = EchoNet(data)
    frames = FrameCache(reader, None)
    test = reader.records("TEST")[: args.videos]
    calib = build_calibration_set(data, spec, strategy=args.calibration, size=args.calib_size,
                                  seed=0, progress=False)
    form = to_deploy_form(ck.model, torch.from_numpy(calib.clips[:2].copy()))

    names: dict[str, tuple[str, str]] = {}  # row -> (route, precision)
    folders: dict[str, Path] = {}
    convert_s: dict[str, float] = {}
    for p in precisions:
        for route, label in ROUTES.items():
            row = f"{label} {p}"
            print(f"converting {row} ...", flush=True)
            folders[row], convert_s[row] = _convert(route, form, spec, root / f"{route}-{p}", p, calib,
                                                    ck.sha256, args.int8_recipe)
            names[row] = (route, p)

    reference = EagerRunner(ck.model, threads=args.threads)
    runners: dict[str, Any] = {"eager fp32 (reference)": reference}
    for row, folder in folders.items():
        runners[row] = TFLiteRunner(folder, threads=args.threads, interpreter=args.interpreter)
    lat = {k: v.to_dict() for k, v in round_robin(runners, calib.clips[:1].copy(), args.runs,
                                                   args.warmup, args.threads).items()}

    def per_video_ef(infer: Any, what: str) -> np.ndarray:
        preds = predict_videos(infer, test, frames, spec, clips_per_video=args.clips,
                               progress=False, description=what)
        return np.array([v.ef for v in preds])

    ref_ef = per_video_ef(reference, "eager reference")
    results: dict[str, dict[str, Any]] = {}
    for row, folder in folders.items():
        m = read_manifest(folder)
        d = delta_stats(ref_ef, per_video_ef(runners[row], row))
        cov = xnnpack_coverage(folder / m.model_file, threads=args.threads, kind=args.interpreter)
        results[row] = {
            "route": names[row][0], "precision": names[row][1], "folder": str(folder),
            "model_mb": m.model_bytes / 1e6, "p50_ms": lat[row]["p50_ms"], "p90_ms": lat[row]["p90_ms"],
            "def_mean": d.mean_abs, "def_p95": d.p95_abs, "def_max": d.max_abs,
            "int8_weight_share": (m.details.get("weights") or {}).get("int8_share"),
            "ops": len(inspect_tflite(folder / m.model_file).ops),
            "delegated_ops": cov.delegated_ops, "fallback_ops": cov.fallback_ops,
            "partitions": cov.partitions, "fallback_by_op": cov.fallback_by_op,
            "convert_s": convert_s[row], "tool_versions": m.tool_versions,
        }
    for r in runners.values():
        r.close()

    print()
    print(f"checkpoint {Path(checkpoint).name} ({ck.config.name}), input {spec.input_shape(1)}, batch 1, "
          f"{args.threads} threads, {args.interpreter} interpreter, {args.warmup} warm-up + {args.runs} "
          f"timed runs (round-robin); calibration {calib.id} ({len(calib)} clips, {args.calibration}), "
          f"int8 recipe {args.int8_recipe}; |dEF| on {len(test)} TEST videos x {args.clips} clips")
    print(f"eager fp32 reference: p50 {lat['eager fp32 (reference)']['p50_ms']:.1f} ms")
    head = (f"{'route / precision':<20} {'MB':>6} {'p50 ms':>7} {'|dEF| mean':>10} {'p95':>6} "
            f"{'int8 w':>6} {'ops':>5} {'XNNPACK':>9} {'parts':>5} {'conv s':>6}")
    print(head)
    print("-" * len(head))
    for row, r in results.items():
        share = "-" if r["int8_weight_share"] is None else f"{r['int8_weight_share']:.0%}"
        print(f"{row:<20} {r['model_mb']:6.2f} {r['p50_ms']:7.1f} {r['def_mean']:10.3f} "
              f"{r['def_p95']:6.3f} {share:>6} {r['ops']:5d} {r['delegated_ops']:>4}/{r['ops']:<4} "
              f"{r['partitions']:5d} {r['convert_s']:6.0f}")
    for row, r in results.items():
        if r["fallback_by_op"]:
            print(f"  {row}: not on XNNPACK: "
                  + ", ".join(f"{op} x{n}" for op, n in r["fallback_by_op"].items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": results, "reference_p50_ms": lat["eager fp32 (reference)"]["p50_ms"],
                                         "threads": args.threads, "runs": args.runs,
                                         "interpreter": args.interpreter, "videos": len(test),
                                         "clips": args.clips, "calibration_id": calib.id}, indent=2) + "\n")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
