"""Acquisition shifts (issue 21): the fp32 reference's EF MAE vs truth and each int8 artefact's
|ΔEF| vs the reference, per shift, side by side in one run.

For the int8 artefacts of an `echo-edge run` output folder (TFLite int8 and ExecuTorch int8 on the
default job), on `run`'s protocol (the first 24 TEST videos x 2 clips of its dataset), through
`echo-edge stress`'s code (echoedge.validate.stress: the same records, clips and runners as
`validate`, shifted frames from echoedge.data.shifts): one row per shift at --levels (default
moderate) and a clean row, columns fp32 MAE vs truth, then mean / p95 |ΔEF| per artefact. Also
prints what the stress section cost, per runner, and the 1-min load average before and after
(the machine may be shared).

    python -m echoedge.cli run --out /tmp/wtf-run          # once: the default job's artefacts
    python bench/bench_stress.py /tmp/wtf-run              # the table
    python bench/bench_stress.py /tmp/wtf-run --levels mild,moderate,severe --shifts blur,gamma
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from echoedge.commands.stress import stress_options
    from echoedge.convert.artefact import find_artefacts, read_manifest
    from echoedge.data.default import default_dataset
    from echoedge.model.checkpoint import SHIPPED
    from echoedge.validate.validate import ValidateOptions, validate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `echo-edge run` output folder (or a folder of artefacts)")
    ap.add_argument("--data", type=Path, default=None, help="default: the built-in dataset")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--shifts", default="all")
    ap.add_argument("--levels", default="moderate")
    ap.add_argument("--precisions", default="int8,int8-full,w8a8",
                    help="artefacts in the table, by precision (default: int8 activations)")
    ap.add_argument("--out", type=Path, default=None, help="keep the report here (default: a temp folder)")
    args = ap.parse_args(argv)

    sopt = stress_options(args.shifts, args.levels, args.precisions)
    folders = [f for f in find_artefacts(args.run) if read_manifest(f).precision in sopt.precisions]
    if not folders:
        raise SystemExit(f"{args.run}: no artefacts of precision {args.precisions}")
    data = args.data or default_dataset()
    opt = ValidateOptions(videos=args.videos, clips_per_video=args.clips, latency_runs=1, warmup=0,
                          bootstrap=0, progress=False, stress=sopt)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = validate(folders, data, args.checkpoint, args.out or Path(tmp), options=opt, log=lambda m: None)
    wall = time.perf_counter() - t0
    rep = res.report
    st = rep["stress"]
    names = [a["name"] for a in st["artefacts"] if a["conditions"]]
    clean = {e["name"]: e["vs_reference"]["ef"] for e in rep["artefacts"] if e.get("vs_reference")}

    head = ["change to every frame", "fp32 MAE vs truth"] + [f"{n} |ΔEF| mean / p95" for n in names]
    rows = [["none", f"{rep['reference']['vs_truth']['mae']:.2f}"]
            + [f"{clean[n]['mean_abs']:.2f} / {clean[n]['p95_abs']:.2f}" if n in clean else "–" for n in names]]
    for s in st["shifts"]:
        for lv in st["levels"]:
            ref = next(c for c in st["reference"]["conditions"] if (c["shift"], c["level"]) == (s["name"], lv))
            row = [f"{s['name']} {lv} ({s['levels'][lv]:g}{s['unit']})", f"{ref['vs_truth']['mae']:.2f}"]
            for n in names:
                a = next(a for a in st["artefacts"] if a["name"] == n)
                c = next((c for c in a["conditions"] if (c["shift"], c["level"]) == (s["name"], lv)), None)
                ef = c["vs_reference"]["ef"] if c else None
                fail = " ✗" if c and c.get("passed") is False else ""
                row.append(f"{ef['mean_abs']:.2f} / {ef['p95_abs']:.2f}{fail}" if ef else "–")
            rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    print(f"{st['n_videos']} {st['split']} videos x {st['clips_per_video']} clips of {data}; "
          f"checkpoint {args.checkpoint.name}; seed {st['seed']}; ✗: fails its stress gate")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    t = st["timings_s"]
    n_cond = len(st["reference"]["conditions"])
    print(f"\nstress section: {t['total']:.0f} s for {n_cond} conditions ({t['total'] / n_cond:.1f} s each): "
          + ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "total")
          + f"; whole bench {wall:.0f} s; 1-min load {load0:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"on {os.cpu_count()} cores")
    print(f"exit code with the shipped gates: {res.exit_code}"
          + "".join(f"\n  {e['name']}: {e['reason']}" for e in rep["artefacts"] if e.get("reason")))


if __name__ == "__main__":
    main()
