"""Core ML artefacts (fp32, fp16, W8, W8A8) of the shipped checkpoint: conversion, size, EF drift.

Core ML runs models only on macOS, so on Linux every artefact is executed by echoedge's reference
interpreter of its ML program (echoedge.mil.interpreter): the EF numbers are the program's
own, the time per clip is the interpreter's cost in CI, never Core ML's latency.

For each precision: conversion wall time (W8A8's includes its calibration, shown apart as
"calib s": activation ranges and the output shift, two passes of the interpreter over the
calibration set, run's 32 ef-stratified clips by default), package size, then EF on --videos
synthetic TEST videos (echoedge.model.evaluate.predict_videos, --clips-per-video clips each, the
CoreMLRunner as `infer`) against the fp32 eager reference (the 3D model the checkpoint holds):
|dEF| mean / p95 / max over videos, the signed mean, and EF-band agreement (<40, 40-49, >=50)
with the reference's bands.

    python bench/bench_coreml.py                          # shipped checkpoint, 40 TEST videos
    python bench/bench_coreml.py --keep /tmp/cm --reuse   # re-measure without reconverting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.calibration import build_calibration_set
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.coreml import PRECISIONS, export_coreml
    from echoedge.data.cache import FrameCache
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.evaluate import eager_infer, predict_videos
    from echoedge.model.metrics import ef_band
    from echoedge.validate.coreml_runner import CoreMLRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--data", type=Path, default=None, help="EchoNet-format root (default: synthetic set)")
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--clips-per-video", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="folder for the artefacts (default: temporary)")
    ap.add_argument("--reuse", action="store_true", help="reuse artefacts already in --keep")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    data = args.data or default_dataset()
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    out_root = args.keep or Path(tempfile.mkdtemp(prefix="bench-coreml-"))
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    print(f"checkpoint {args.checkpoint.name} ({ck.sha256[:12]}), input {tuple(spec.input_shape(1))}, "
          f"data {data}, threads {args.threads}")
    t0 = time.perf_counter()
    calib = build_calibration_set(data, spec, strategy="ef-stratified", size=args.calib_size, seed=0,
                                  progress=False)
    print(f"calibration set {calib.id}: {len(calib.clips)} clips ({time.perf_counter() - t0:.1f} s)")
    deploy = to_deploy_form(ck.model, example=torch.from_numpy(calib.clips[:2].copy()))
    check = getattr(deploy, "deploy_check", None)
    if check is not None:
        print(f"deploy form: {check.summary()}")

    reader = EchoNet(data)
    records = reader.records("TEST")[: args.videos]
    frames = FrameCache(reader, None)
    t0 = time.perf_counter()
    ref = predict_videos(eager_infer(ck.model), records, frames, spec,
                         clips_per_video=args.clips_per_video, progress=False)
    eager_s = (time.perf_counter() - t0) / sum(p.n_clips for p in ref)
    ref_ef = np.array([p.ef for p in ref])
    true_ef = np.array([p.ef_true for p in ref])
    print(f"eager fp32 reference: {len(ref)} TEST videos x {args.clips_per_video} clips, "
          f"MAE vs truth {np.abs(ref_ef - true_ef).mean():.2f}, {eager_s * 1e3:.0f} ms/clip\n")

    rows: list[dict[str, Any]] = []
    for precision in precisions:
        folder = out_root / f"coreml-{precision}"
        if args.reuse and (folder / "manifest.json").is_file():
            convert_s = read_manifest(folder).details.get("timings_s", {}).get("total", float("nan"))
            print(f"{precision}: reusing {folder}")
        else:
            print(f"{precision}: converting -> {folder}")
            t0 = time.perf_counter()
            export_coreml(deploy, spec, folder, precision, calib if precision == "w8a8" else None,
                          ck.sha256, golden_inputs=calib.clips[:2], progress=True, overwrite=True)
            convert_s = time.perf_counter() - t0
        m = read_manifest(folder)
        with CoreMLRunner(folder, threads=args.threads) as runner:
            t0 = time.perf_counter()
            preds = predict_videos(runner, records, frames, spec, clips_per_video=args.clips_per_video,
                                   batch_size=4, progress=True, description=f"coreml {precision}")
            per_clip = (time.perf_counter() - t0) / sum(p.n_clips for p in preds)
            runtime, interp_prec = runner.runtime, getattr(runner, "interpreter_precision", None)
        ef = np.array([p.ef for p in preds])
        d = np.abs(ef - ref_ef)
        rows.append({
            "precision": precision,
            "convert_s": round(float(convert_s), 1),
            # W8A8's calibration: activation ranges and output shift, both through the interpreter
            "calibration_s": sum(m.details.get("timings_s", {}).get(k, 0.0)
                                 for k in ("activation_ranges", "output_shift")),
            "mb": round(m.model_bytes / 1e6, 3),
            "dEF_mean": float(d.mean()), "dEF_p95": float(np.percentile(d, 95)), "dEF_max": float(d.max()),
            "dEF_signed_mean": float((ef - ref_ef).mean()),
            "band_agreement_vs_ref": float((ef_band(ef) == ef_band(ref_ef)).mean()),
            "mae_vs_truth": float(np.abs(ef - true_ef).mean()),
            "runtime": runtime, "compute": interp_prec,
            "s_per_clip": round(per_clip, 3),
            "quantization_ops": m.details.get("ml_program", {}).get("quantization_ops", {}),
        })
        r = rows[-1]
        print(f"  |dEF| mean {r['dEF_mean']:.3f} p95 {r['dEF_p95']:.3f} max {r['dEF_max']:.3f}, "
              f"band agreement {r['band_agreement_vs_ref']:.3f}, {r['s_per_clip']:.2f} s/clip ({runtime})")

    print(f"\nCore ML artefacts vs the fp32 eager reference: {len(records)} synthetic TEST videos x "
          f"{args.clips_per_video} clips; numbers from the reference interpreter where runtime says so "
          "(s/clip is the interpreter's cost, not Core ML latency)")
    head = (f"{'precision':<9} {'convert s':>9} {'calib s':>7} {'MB':>7} {'|dEF| mean':>10} {'p95':>7} "
            f"{'max':>7} {'signed':>7} {'band agr':>8} {'MAE':>6} {'s/clip':>7}  runtime (compute)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['precision']:<9} {r['convert_s']:>9.1f} {r['calibration_s']:>7.1f} {r['mb']:>7.2f} "
              f"{r['dEF_mean']:>10.4f} {r['dEF_p95']:>7.4f} {r['dEF_max']:>7.4f} "
              f"{r['dEF_signed_mean']:>+7.3f} {r['band_agreement_vs_ref']:>8.3f} "
              f"{r['mae_vs_truth']:>6.2f} {r['s_per_clip']:>7.2f}  {r['runtime']} ({r['compute']})")
    print(f"eager fp32 reference: MAE vs truth {np.abs(ref_ef - true_ef).mean():.2f}, "
          f"{eager_s:.3f} s/clip (same process, same threads)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "videos": len(records),
                                         "clips_per_video": args.clips_per_video,
                                         "calibration_id": calib.id, "eager_s_per_clip": eager_s},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
