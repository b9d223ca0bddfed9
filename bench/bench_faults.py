"""Kill -9 of `echo-edge export` and `echo-edge run` at seeded moments, and what survives.

For each command: one unkilled run into a fresh --out measures how long each stage takes (from
the time its log lines appear); then each kill point starts the same command into the same --out,
sends SIGKILL at its drawn moment, and checks what was left:

- every folder holding a manifest.json (hidden ones too) is put through what `validate` trusts:
  verify_artefact (manifest + sha256) and open_runner (the runtime loads it). A folder that passes
  is "accepted"; it must also be one `find_artefacts` lists (not a hidden temporary), or the kill
  point fails. A half-written manifest or model is rejected by the hash, so a pass means whole.
- the calibration set, report.json, junit.xml and run.json, when present, must load whole;
- no process of the killed job may outlive it (a worker finishing a conversion into --out);
- the next run into the same --out must exit 0 and leave no temporaries behind.

Kill moments: one drawn inside each stage's interval of the unkilled run (calibration, each
conversion, validation, report writing), the rest stratified over the whole duration, all from
--seed. A kill point "survived" when all of the above held.

    python bench/bench_faults.py                    # 20 kill points, export and run, seed 0
    python bench/bench_faults.py --kills 30 --seed 3 --commands run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Log-line prefix -> stage; the last line printed before the kill names the stage hit.
STAGE_MARKS = (
    ("toolchain messages", "start"),
    ("data:", "start"),
    ("calibration:", "calibration"),
    ("deploy form:", "deploy form"),
    ("converting ->", "convert {}"),
    ("wrote ", "convert done"),
    ("baseline:", "validation"),
    ("reference:", "validation"),
    ("report: writing", "report"),
)


@dataclass
class Setup:
    work: Path
    checkpoint: Path
    data: Path
    frames: Path
    fmt: str
    precisions: str


@dataclass
class Attempt:
    lines: list[tuple[float, str]] = field(default_factory=list)
    rc: int | None = None
    seconds: float = 0.0
    killed: bool = False
    orphans: int = 0


def stage_of(line: str) -> str | None:
    text = line.split("] ", 1)[-1] if line.startswith("[") else line
    for mark, stage in STAGE_MARKS:
        if mark in text:
            if "{}" in stage:
                return stage.format(text.split(":", 1)[0].strip())
            return stage
    if ": mean |ΔEF|" in text or text.split(":", 1)[0].count("-") == 1 and "(" in text:
        return "validation"
    return None


def last_stage(lines: list[tuple[float, str]]) -> str:
    stage = "start"
    for _, line in lines:
        stage = stage_of(line) or stage
    return stage


def command(which: str, s: Setup, out: Path) -> list[str]:
    base = [sys.executable, "-m", "echoedge.cli", which, "--checkpoint", str(s.checkpoint), "--data",
            str(s.data), "--format", s.fmt, "--precision", s.precisions, "--calibration", "random:8",
            "--out", str(out), "--cache-dir", str(s.frames)]
    if which == "export":
        return base + ["--overwrite"]
    return base + ["--videos", "2", "--clips", "1", "--runs", "2", "--warmup", "1", "--bootstrap", "50",
                   "--no-progress", "--no-memory", "--jobs", "1"]


def launch(cmd: list[str], kill_at: float | None) -> Attempt:
    """Run `cmd` in its own session; SIGKILL its leader `kill_at` seconds in (None: never)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    a = Attempt()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)

    def read() -> None:
        for line in proc.stdout:
            a.lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=kill_at)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # the leader only, as a user's kill -9 or the OOM killer
        proc.wait()
        a.killed = True
        time.sleep(1.0)  # give orphans, if any, a moment to show they survived
        a.orphans = _group_alive(proc.pid)
        if a.orphans:
            os.killpg(proc.pid, signal.SIGKILL)  # our own processes: clean up for the next point
    a.rc, a.seconds = proc.returncode, time.perf_counter() - t0
    reader.join(timeout=5)
    return a


def _group_alive(pgid: int) -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                n += 1
    return n


def inspect(out: Path) -> dict:
    """What a later `validate` (or `run --reuse`) would trust in `out`, and what else is there."""
    from echoedge.atomic import is_leftover
    from echoedge.calibration import load_calibration_set
    from echoedge.convert.artefact import MANIFEST_NAME, find_artefacts, verify_artefact
    from echoedge.errors import EchoEdgeError
    from echoedge.validate.report_json import read_report
    from echoedge.validate.runner import open_runner

    listed = {p.resolve() for p in find_artefacts(out)}
    res = {"accepted": [], "rejected": [], "leftovers": [], "bad": [], "files": {}}
    for dirpath, dirnames, filenames in os.walk(out):
        d = Path(dirpath)
        for name in dirnames + filenames:
            # A writer's temporary or backup; not other hidden files (run's lock file stays).
            if is_leftover(name):
                res["leftovers"].append(str((d / name).relative_to(out)))
        if MANIFEST_NAME not in filenames or d.name == "calibration":
            continue
        rel = str(d.relative_to(out))
        try:
            verify_artefact(d)
            open_runner(d, threads=1)
        except EchoEdgeError:
            res["rejected"].append(rel)
            continue
        except Exception as e:  # a runtime that chokes on a file the hash passed: half-built
            res["bad"].append(f"{rel} (passed the hash, failed to load: {type(e).__name__})")
            continue
        res["accepted"].append(rel)
        if d.resolve() not in listed:
            res["bad"].append(f"{rel} (hidden temporary accepted as an artefact)")
    checks = {"artefacts/calibration": load_calibration_set, "calibration": load_calibration_set,
              "report.json": read_report, "run.json": lambda p: json.loads(p.read_text()),
              "junit.xml": _parse_xml}
    for rel, load in checks.items():
        p = out / rel
        if not p.exists():
            continue
        try:
            load(p)
            res["files"][rel] = "whole"
        except Exception as e:  # noqa: BLE001 - whatever the failure, it is a damaged file
            res["files"][rel] = f"DAMAGED ({type(e).__name__})"
            res["bad"].append(f"{rel} damaged")
    return res


def _parse_xml(p: Path) -> None:
    import xml.etree.ElementTree as ET

    ET.parse(p)


def stage_windows(lines: list[tuple[float, str]], total: float) -> dict[str, tuple[float, float]]:
    """Stage -> (start, end) seconds in an unkilled run, from when its log lines appeared."""
    marks = [(t, stage_of(line)) for t, line in lines]
    marks = [(t, s) for t, s in marks if s and s not in ("start", "convert done")]
    windows: dict[str, tuple[float, float]] = {}
    for i, (t, s) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else total
        lo, _ = windows.get(s, (t, t))
        windows[s] = (lo, max(end, windows.get(s, (t, t))[1]))
    return windows


def draw_kills(rng: random.Random, n: int, windows: dict[str, tuple[float, float]],
               total: float) -> list[float]:
    """One moment inside each stage (as many as n allows), the rest stratified over the run."""
    picks = [rng.uniform(lo, max(lo + 0.05, hi)) for lo, hi in list(windows.values())[:n]]
    rest = n - len(picks)
    picks += [rng.uniform(total * i / rest, total * (i + 1) / rest) * 0.97 for i in range(rest)]
    return sorted(picks)


def prepare(work: Path, fmt: str, precisions: str) -> Setup:
    import torch

    from echoedge.data.synthetic import generate_dataset
    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.network import EchoE3Net

    work.mkdir(parents=True, exist_ok=True)
    ck = work / "tiny.pt"
    if not ck.exists():
        torch.manual_seed(0)
        cfg = get_config("tiny")
        save_checkpoint(ck, EchoE3Net(cfg).eval(), cfg, clip_spec_for(cfg, mean=35.0, std=48.0), "bench")
    data = work / "echonet"
    if not (data / "FileList.csv").exists():
        generate_dataset(data, videos=16, seed=5, workers=2, progress=False)
    return Setup(work, ck, data, work / "frames", fmt, precisions)


def kill_loop(which: str, s: Setup, kills: int, rng: random.Random, say=print) -> tuple[int, int]:
    from echoedge.console import stderr_to

    out = s.work / f"out-{which}"
    ref = launch(command(which, s, out), None)
    if ref.rc not in (0, 1):  # run exits 1 when a gate fails: still complete
        raise SystemExit(f"{which}: the unkilled run failed (exit {ref.rc}):\n"
                         + "\n".join(line for _, line in ref.lines[-15:]))
    windows = stage_windows(ref.lines, ref.seconds)
    say(f"\n== {which}: unkilled run {ref.seconds:.1f} s; stages: "
        + ", ".join(f"{k} {lo:.1f}-{hi:.1f} s" for k, (lo, hi) in windows.items()))
    tried = survived = 0
    for i, t in enumerate(draw_kills(rng, kills, windows, ref.seconds), 1):
        a = launch(command(which, s, out), t)
        if not a.killed:
            say(f"{which} #{i:2d} t={t:6.1f} s: finished (exit {a.rc}) before the kill; not counted")
            continue
        tried += 1
        with stderr_to(s.work / "inspect.log"):  # the runtimes' chatter as they load artefacts
            left = inspect(out)
        nxt = launch(command(which, s, out), None)
        with stderr_to(s.work / "inspect.log"):
            after = inspect(out)
        ok_next = nxt.rc in (0, 1) and not after["bad"] and not after["leftovers"]
        ok = not left["bad"] and a.orphans == 0 and ok_next
        survived += ok
        files = ", ".join(f"{k} {v}" for k, v in left["files"].items()) or "no report/calibration files"
        say(f"{which} #{i:2d} t={t:6.1f} s stage={last_stage(a.lines):<18} "
            f"left: {len(left['accepted'])} accepted ({', '.join(left['accepted']) or '-'}), "
            f"{len(left['rejected'])} rejected, {len(left['leftovers'])} hidden temporaries; {files}; "
            f"half-built accepted: {'; '.join(left['bad']) or 'none'}; orphans: {a.orphans}; "
            f"next run: exit {nxt.rc} in {nxt.seconds:.0f} s, temporaries after {len(after['leftovers'])}"
            f" -> {'SURVIVED' if ok else 'FAILED'}")
    return tried, survived


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    ap.add_argument("--kills", type=int, default=20, help="kill points in all, split over the commands")
    ap.add_argument("--commands", default="export,run", help="comma list of export, run")
    ap.add_argument("--format", default="coreml", help="what the commands convert (default %(default)s)")
    ap.add_argument("--precision", default="fp32,w8a8",
                    help="precisions (default %(default)s: one float, one calibrated)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    args = ap.parse_args(argv)
    if args.kills < 1:
        ap.error("--kills must be >= 1")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("ECHOEDGE_CACHE", str((args.work or Path(tempfile.gettempdir())) / "echoedge-cache"))
    s = prepare(args.work or Path(tempfile.mkdtemp(prefix="bench-faults-")), args.format, args.precision)
    rng = random.Random(args.seed)
    cmds = [c.strip() for c in args.commands.split(",") if c.strip()]
    per = [math.ceil(args.kills / len(cmds)) if i < args.kills % len(cmds) or args.kills % len(cmds) == 0
           else args.kills // len(cmds) for i in range(len(cmds))]
    print(f"kill -9 loop: seed {args.seed}, {args.kills} kill points, {args.format} {args.precision}, "
          f"work {s.work}, load {os.getloadavg()[0]:.1f}")
    tried = survived = 0
    for which, n in zip(cmds, per):
        t, ok = kill_loop(which, s, n, rng)
        tried, survived = tried + t, survived + ok
    print(f"\nkill points tried / survived: {tried} / {survived}")
    return 0 if tried and survived == tried else 1


if __name__ == "__main__":
    sys.exit(main())
