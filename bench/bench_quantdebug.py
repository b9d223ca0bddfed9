"""Where the shipped checkpoint's int8 EF error comes from, and the mixed precision that removes it.

Prints, for the shipped checkpoint on the default synthetic data:

1. the attribution table per artefact (fp32 reference / PyTorch simulation of the artefact's
   quantization with its own calibration set / the artefact in its runtime), on --att-videos
   TEST videos x --att-clips clips;
2. the per-unit sensitivity sweeps (ExecuTorch/TFLite int8 scheme: "all-but"; Core ML W8: "all-but")
   on --videos VAL videos x 1 clip, with their cost;
3. the greedy search to --budget EF points (simulated, same VAL videos), the mixed artefacts it
   emits (ExecuTorch via the quantizer's per-module filter, TFLite via denylisted nodes, Core ML
   via per-op selection), and every candidate's real |dEF| on the TEST videos, p50 latency
   (batch 1, --threads threads) and size, against eager fp32 and pure int8.

Artefacts that already exist are reused (--artefacts, default the lead's /tmp/lead/run1/artefacts:
executorch-fp32/int8, tflite-fp32/int8, coreml-fp32/w8 and calibration/); mixed artefacts and the
JSON of every stage go to --out (a stage whose JSON exists is not recomputed; --fresh recomputes).

    nice -n 19 python bench/bench_quantdebug.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def cached(out: Path, name: str, fresh: bool, compute: Callable[[], Any]) -> Any:
    path = out / f"{name}.json"
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=1, default=str))
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset root (default: the built-in synthetic set, generated if absent)")
    ap.add_argument("--artefacts", type=Path, default=Path("/tmp/lead/run1/artefacts"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/fa/bench"))
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--videos", type=int, default=12, help="VAL videos for sweep and search (1 clip each)")
    ap.add_argument("--sweep-calib", type=int, default=32, help="calibration clips in the sweep/search")
    ap.add_argument("--attribute", default="executorch-fp32,executorch-int8,tflite-fp32,tflite-int8,coreml-w8",
                    help="artefact folder names under --artefacts to attribute and measure")
    ap.add_argument("--att-videos", type=int, default=12)
    ap.add_argument("--att-clips", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--formats", default="executorch,tflite,coreml")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--stages", default="all",
                    help="all, or 'attribution' / 'sweeps' (sweeps, search, emits) to fill the caches "
                         "in two processes; a final 'all' run reuses them")
    args = ap.parse_args()

    import torch

    from echoedge.calibration import load_calibration_set
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.quantdebug.attribution import AttributionContext, attribute, attribution_table
    from echoedge.quantdebug.budget import (
        MIXED_PRECISION, CandidatePoint, candidates_table, emit_mixed, measure_candidate,
        pareto_front, pareto_plot, reference_point, search_budget,
    )
    from echoedge.quantdebug.sensitivity import SensitivityResult, UnitSensitivity, sensitivity_sweep, sensitivity_table, sensitivity_plot
    from echoedge.quantdebug.simulate import ef_per_video, fidelity, load_videos

    torch.manual_seed(0)
    if args.data is None:
        from echoedge.data.default import default_dataset

        args.data = default_dataset()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    t_all = time.perf_counter()
    ck = load_checkpoint(SHIPPED)
    deploy = to_deploy_form(ck.model.eval(), example=torch.zeros(ck.spec.input_shape(1))).eval()
    calib = load_calibration_set(args.artefacts / "calibration")
    sweep_clips = calib.clips[: args.sweep_calib]
    print(f"shipped checkpoint {ck.sha256[:12]}, data {args.data}, calibration {calib.id} "
          f"({len(calib)} clips; sweeps use the first {len(sweep_clips)})")

    # ---------------------------------------------------------------- 1. attribution
    test = load_videos(args.data, ck.spec, "TEST", args.att_videos, args.att_clips)
    ref_test = np.array(cached(out, "ref_test", args.fresh,
                               lambda: ef_per_video(deploy, test, progress=True).tolist()))
    ctx = AttributionContext(deploy, test, ref_test, ck.sha256)
    # coreml-fp32 is left out by default: its reference-interpreter run costs minutes and only
    # shows the fp16/interpreter rounding, which coreml-w8's conversion term already carries.
    names = [n for n in args.attribute.split(",") if (args.artefacts / n).is_dir()]
    if args.stages == "sweeps":
        names = []

    def attribution_row(n: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        a = attribute(args.artefacts / n, ctx, calibration=calib if n.endswith("int8") else None,
                      threads=args.threads, progress=False)
        print(f"  {n}: total {a.total:.3f} = quant {a.quantization:.3f} / conv {a.conversion:.3f} "
              f"({time.perf_counter() - t0:.0f} s: {a.seconds})", flush=True)
        return a.to_dict()

    att = [cached(out, f"attribution_{n}", args.fresh, lambda n=n: attribution_row(n)) for n in names]
    print(f"\n## 1. Attribution ({len(test.records)} TEST videos x {args.att_clips} clips; EF points)\n")
    from echoedge.quantdebug.attribution import Attribution

    att_objs = [Attribution(**{k: v for k, v in r.items() if k not in ("quantization_share", "definitions")})
                for r in att]
    print(attribution_table(att_objs))
    for a in att_objs:
        if a.precision not in ("fp32", "fp16"):
            print(f"- {a.artefact}: simulation = {fidelity(a.format, a.precision)}")

    if args.stages == "attribution":
        return
    # ---------------------------------------------------------------- 2. sensitivity
    val = load_videos(args.data, ck.spec, "VAL", args.videos, 1)
    ref_val = np.array(cached(out, "ref_val", args.fresh,
                              lambda: ef_per_video(deploy, val, progress=True).tolist()))
    schemes = {"int8": ("executorch", "int8"), "w8": ("coreml", "w8")}
    wanted = {"int8"} if {"executorch", "tflite"} & set(formats) else set()
    if "coreml" in formats:
        wanted.add("w8")
    sweeps: dict[str, SensitivityResult] = {}
    for key in sorted(wanted):
        fmt, prec = schemes[key]
        d = cached(out, f"sweep_{key}", args.fresh,
                   lambda: sensitivity_sweep(deploy, val, sweep_clips, fmt, prec, "all-but",
                                             ef_reference=ref_val, progress=False, log=print).to_dict())
        d["units"] = [UnitSensitivity(**u) for u in d["units"]]
        sweeps[key] = SensitivityResult(**d)
        print(f"\n## 2. Sensitivity: {fmt} {prec} scheme, all-but ({len(val.records)} VAL videos x 1 clip)\n")
        print(sensitivity_table(sweeps[key], top=10))
        sensitivity_plot(sweeps[key], out / f"sensitivity_{key}.png")

    # ---------------------------------------------------------------- 3. budget + mixed artefacts
    searches: dict[str, dict[str, Any]] = {}
    for key, sweep in sweeps.items():
        fmt, prec = schemes[key]

        def search() -> dict[str, Any]:
            from echoedge.quantdebug.budget import BudgetError

            try:
                return search_budget(deploy, val, sweep_clips, args.budget, sweep, fmt, prec,
                                     ef_reference=ref_val, log=print).to_dict()
            except BudgetError as e:
                return {"error": str(e)}
        searches[key] = cached(out, f"budget_{key}", args.fresh, search)
        s = searches[key]
        print(f"\n## 3. Budget {args.budget} on the {fmt} {prec} simulation")
        if "error" in s:
            print(f"  {s['error']}")
        else:
            for st in s["steps"]:
                print(f"  float: {st['kept_float'] or '(none)'} -> simulated mean |dEF| {st['mean_abs_def']:.3f} "
                      f"({st['seconds']:.0f} s)")
            print(f"  -> kept float: {s['kept_float']} ({s['evaluations']} evaluations, {s['wall_s']:.0f} s)")

    # Mixed artefacts: each format gets the kept-float units of its scheme's search.
    mixed: dict[str, Path] = {}
    for fmt in formats:
        key = "w8" if fmt == "coreml" else "int8"
        s = searches.get(key) or {}
        kept = s.get("kept_float") or []
        if not kept:
            continue
        folder = out / f"{fmt}-{MIXED_PRECISION[fmt]}-mixed"
        if not (folder / "manifest.json").is_file() or args.fresh:
            t0 = time.perf_counter()
            emit_mixed(deploy, ck.spec, fmt, kept, folder, calib, ck.sha256, progress=False,
                       overwrite=True)
            print(f"emitted {folder.name} ({time.perf_counter() - t0:.0f} s), float: {kept}", flush=True)
        mixed[fmt] = folder

    lat_clip = calib.clips[:1]
    if args.stages == "sweeps":
        return

    def latency_only(f: Path, a: dict[str, Any], sim: float | None) -> CandidatePoint:
        from echoedge.convert.artefact import model_bytes, read_manifest
        from echoedge.validate.latency import measure_latency
        from echoedge.validate.runner import open_runner

        m = read_manifest(f)
        lat = None
        if a["runtime_is_device"]:
            with open_runner(f, threads=args.threads) as r:
                lat = measure_latency(r, lat_clip, runs=args.runs, threads=args.threads).p50_ms
        return CandidatePoint(f.name, str(f), m.format, m.precision, [], a["total"], a["max_total"], lat,
                              int(model_bytes(f / m.model_file)), a["runtime"], sim)

    def measure_all() -> list[dict[str, Any]]:
        pts = [reference_point(ck.model, ck.spec.input_shape(1)[1:], args.threads, args.runs,
                               latency_clip=lat_clip, name="eager fp32 (3D reference)").to_dict()]
        sim_of = {}
        for key, s in searches.items():
            if "steps" in s:
                sim_of[key] = (s["steps"][0]["mean_abs_def"], s["mean_abs_def"])
        folders = [args.artefacts / n for n in names] + list(mixed.values())
        for f in folders:
            if f.name.endswith("fp32") and not f.name.startswith(("executorch", "tflite")):
                continue  # the Core ML fp32 interpreter run adds nothing to the trade-off
            key = "w8" if f.name.startswith("coreml") else "int8"
            sim = None
            if key in sim_of and not f.name.endswith("fp32"):
                sim = sim_of[key][1] if "mixed" in f.name else sim_of[key][0]
            t0 = time.perf_counter()
            a = next((r for r in att if r["artefact"] == f.name), None)
            if a is not None:  # EF already measured by the attribution, on the same TEST videos
                p = latency_only(f, a, sim)
            else:
                p = measure_candidate(f, test, ref_test, args.threads, args.runs, latency_clip=lat_clip,
                                      simulated_abs_def=sim)
            print(f"  measured {f.name}: |dEF| {p.mean_abs_def:.3f}, p50 {p.latency_ms} ms "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            pts.append(p.to_dict())
        return pts

    points = [CandidatePoint(**p) for p in cached(out, "candidates", args.fresh, measure_all)]
    print(f"\n## 4. Candidates (real, {len(test.records)} TEST videos x {args.att_clips} clips; "
          f"sim = simulated on {len(val.records)} VAL videos)\n")
    print(candidates_table(points))
    eager = next(p for p in points if p.format == "pytorch")
    print(f"\nPareto front (EF error, latency, size): {', '.join(p.name for p in pareto_front(points))}")
    pareto_plot(points, out / "pareto.png", budget=args.budget)
    print(f"\n## Goal: per format an int8-or-mixed artefact with mean |dEF| <= {args.budget} and >= 2.5x "
          f"faster than eager fp32 ({eager.latency_ms:.1f} ms)\n")
    for fmt in sorted({p.format for p in points} - {"pytorch"}):
        cands = [p for p in points if p.format == fmt and p.precision not in ("fp32", "fp16")]
        ok = [p for p in cands if p.mean_abs_def <= args.budget]
        for p in cands:
            speed = "-" if p.latency_ms is None else f"{eager.latency_ms / p.latency_ms:.2f}x"
            verdict = "meets budget" if p.mean_abs_def <= args.budget else "over budget"
            print(f"- {p.name}: |dEF| {p.mean_abs_def:.3f} ({verdict}), speed-up vs eager fp32 {speed}"
                  + ("" if p.latency_ms is not None else f" (no latency: {p.runtime})"))
        if not ok:
            print(f"- {fmt}: no candidate meets the budget")
    costs = {k: f"{v.evaluations} evaluations, {v.wall_s:.0f} s" for k, v in sweeps.items()}
    print(f"\nsweep cost: {costs}; search cost: "
          f"{ {k: (s.get('evaluations'), s.get('wall_s')) for k, s in searches.items()} }")
    print(f"plots: {out / 'pareto.png'}, " + ", ".join(str(out / f'sensitivity_{k}.png') for k in sweeps))
    print(f"total wall time of this run: {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
