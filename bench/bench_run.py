"""Wall time of `echo-edge run` (the main job) with a per-stage breakdown.

Runs the real command in a subprocess (a fresh interpreter, as a user would: imports, dataset
check, checkpoint load, calibration, every conversion, validation, report), measures its wall
time from outside, and reads the stage timings the job writes to OUT/run.json. The goal from the
issue: at most 5 minutes on this project's 2-core machine with the defaults.

    python bench/bench_run.py                         # defaults, into a fresh temporary folder
    python bench/bench_run.py --out /tmp/run --reuse  # time validation alone (artefacts kept)
    python bench/bench_run.py -- --format executorch --videos 50   # flags passed to `echo-edge run`

Load from other processes inflates every figure: the script prints the 1-minute load average
before and after, so a reader can tell a busy machine from a slow job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a new temporary one)")
    ap.add_argument("--reuse", action="store_true", help="pass --reuse (keep artefacts already in --out)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("run_args", nargs="*", help="extra flags for `echo-edge run` (after --)")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-run-"))
    exe = Path(sys.executable).with_name("echo-edge")
    cmd = [str(exe) if exe.exists() else "echo-edge", "run", "--out", str(out), "--no-progress",
           *(["--reuse"] if args.reuse else []), *args.run_args]
    load0 = os.getloadavg()[0]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]

    run_json = out / "run.json"
    if not run_json.is_file():
        print(f"echo-edge run exited {proc.returncode} without writing {run_json}", file=sys.stderr)
        return 2
    run = json.loads(run_json.read_text())
    stages = run["timings_s"]
    inner = stages.get("total", 0.0)
    print()
    print(f"{'stage':<24} {'seconds':>8} {'share':>6}")
    for name, secs in stages.items():
        if name == "total":
            continue
        print(f"{name:<24} {secs:>8.1f} {100 * secs / max(wall, 1e-9):>5.0f}%")
    for name, secs in run.get("validation_timings_s", {}).items():
        print(f"  validate: {name:<14} {secs:>8.1f}")
    print(f"{'start-up + imports':<24} {wall - inner:>8.1f} {100 * (wall - inner) / wall:>5.0f}%")
    print(f"{'wall (whole command)':<24} {wall:>8.1f}   goal {GOAL_S:.0f} s: "
          f"{'met' if wall <= GOAL_S else 'NOT met'}")
    print(f"exit code {proc.returncode}; built {run['built']}, reused {run['reused']}, failed {run['failed']}")
    print(f"1-min load average {load0:.1f} before, {load1:.1f} after (2 cores; > 2 means other work ran)")
    if args.json:
        args.json.write_text(json.dumps({"wall_s": wall, "stages_s": stages, "exit_code": proc.returncode,
                                         "load_before": load0, "load_after": load1, "out": str(out),
                                         "cmd": cmd}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
