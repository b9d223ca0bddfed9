"""Calibration size and stability for the shipped checkpoint: the size curve per strategy, the
spread over disjoint draws, low-EF hearts apart, and a recommended N.

Everything is measured through the PT2E simulation of the ExecuTorch int8 recipe
(echoedge.quantdebug.stability; the simulation was measured within 0.01 mean |dEF| of the real
.pte). Calibration clips come from TRAIN (never TEST); the EF error is measured on the first
--videos TEST videos plus every other TEST video whose true EF is < 40, --clips evenly spaced
clips each, against the fp32 deploy form on the same clips.

    python bench/bench_calibration.py                           # defaults below, ~40-60 min on 2 cores
    python bench/bench_calibration.py --sizes 8,32 --draws 2 --strategies ef-stratified --videos 6

Writes --out/calibration_stability.json (every number, every draw's clips) and
--out/calibration_size.png, and prints the table, the recommendations and the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.data.default import default_dataset
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.quantdebug.stability import (
        DEFAULT_STRATEGIES, calibration_stability, evaluation_videos, plot_stability, stability_table,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--data", type=Path, default=None,
                    help="default: the built-in synthetic set (echoedge.data.default.default_dataset)")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--sizes", default="8,16,32,64,128")
    ap.add_argument("--draws", type=int, default=3, help="disjoint draws per (strategy, N)")
    ap.add_argument("--max-clips-per-video", type=int, default=2)
    ap.add_argument("--split", default="TRAIN", help="calibration split (TRAIN or VAL)")
    ap.add_argument("--eval-split", default="TEST")
    ap.add_argument("--videos", type=int, default=12, help="first N eval videos (+ every low-EF one)")
    ap.add_argument("--clips", type=int, default=1, help="clips per eval video")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_calibration"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = args.data or default_dataset()
    t0 = time.perf_counter()
    ck = load_checkpoint(args.checkpoint)
    deploy = to_deploy_form(ck.model.eval(), example=torch.zeros(ck.spec.input_shape(1))).eval()
    videos = evaluation_videos(data, ck.spec, args.eval_split, args.videos, args.clips, add_low_ef=True)
    print(f"checkpoint {args.checkpoint.name} ({ck.sha256[:12]}), data {data}; eval {len(videos.records)} "
          f"{videos.split} videos x {args.clips} clips; setup {time.perf_counter() - t0:.0f} s")
    res = calibration_stability(
        deploy, data, ck.spec, videos, strategies=args.strategies.split(","),
        sizes=[int(s) for s in args.sizes.split(",")], draws=args.draws, seed=args.seed,
        split=args.split, max_clips_per_video=args.max_clips_per_video, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    d = res.to_dict()
    d["bench"] = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": ck.sha256, "data": str(data),
                  "threads": args.threads, "load_average": os.getloadavg()}
    (args.out / "calibration_stability.json").write_text(json.dumps(d, indent=1) + "\n")
    png = plot_stability(res, args.out / "calibration_size.png")

    print()
    print(f"{res.label}; calibration from {args.split}, {args.draws} disjoint draws per N; eval "
          f"{len(videos.records)} {videos.split} videos x {args.clips} clips "
          f"({res.videos['n_low_ef']} with reference EF < 40)")
    print(stability_table(res))
    for s, r in res.recommendations.items():
        print(f"recommended {s}: N={r.size} (mean |dEF| {r.mean:.3f}, sd {r.sd if r.sd is None else round(r.sd, 3)}; "
              f"{'rule met' if r.rule_met else 'rule NOT met'}: {r.reason})")
    if res.overall:
        print(f"overall: {res.overall.strategy} N={res.overall.size}")
    for n in res.notes:
        print(f"note: {n}")
    print("cost: " + ", ".join(f"{k} {v}" for k, v in res.cost.items()))
    print(f"wrote {args.out / 'calibration_stability.json'} and {png}")


if __name__ == "__main__":
    main()
