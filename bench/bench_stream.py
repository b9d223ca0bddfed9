"""Live stream (issue 22): per-update cost and the smallest hop sustained in real time at 50 FPS,
on 1 and on 2 threads, for a run folder's artefacts side by side with the eager fp32 model.

Per thread count, every runner (the artefacts that time on a device runtime, plus the eager fp32
checkpoint) is opened at that count and timed round-robin (echoedge.validate.latency.round_robin:
call i of every runner back to back, so a burst of load from another process hits all alike) at
batch 1 on a real clip. Preprocessing is the app path (echoedge.data.preprocess.ClipBuffer:
grey + exact area resize of each arriving frame, then the clip), measured on the same video at its
own frame size (echoedge.validate.realtime.preprocess_cost). An update at hop h costs
h x frame + clip + inference; the smallest sustained hop is the least h with cost <= h / fps.
The issue's goal: the int8 artefacts sustain hop <= 2 at 50 FPS on 2 threads, i.e. an update at
hop 2 costs <= 40 ms, preprocessing included; the table says, per runner, whether it does.
With --replay each runner also replays the video unpaced through `echo-edge stream`'s code at its
smallest hop, to confirm the real-time factor and count late hops.

    python -m echoedge.cli run --out /tmp/run                  # once: the default job's artefacts
    python bench/bench_stream.py /tmp/run                      # the table (default protocol below)
    python bench/bench_stream.py /tmp/run --runs 5 --warmup 1  # a smoke run

Prints the table and the 1-min load average before and after (the machine may be shared); --json
writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from echoedge.console import captured_output
    from echoedge.convert.artefact import find_artefacts
    from echoedge.data.echonet import EchoNet
    from echoedge.data.preprocess import ClipBuffer
    from echoedge.data.video import read_video
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.validate.latency import round_robin
    from echoedge.validate.realtime import preprocess_cost, smallest_hop
    from echoedge.validate.runner import EagerRunner, open_runner
    from echoedge.validate.stream import StreamOptions, replay, summarise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `echo-edge run` output folder (report.json names data and checkpoint)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the run report's reference")
    ap.add_argument("--video", type=Path, default=None, help="default: the first TEST video of the run's data")
    ap.add_argument("--fps", type=float, default=50.0)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--goal-hop", type=int, default=2)
    ap.add_argument("--replay", action="store_true", help="also replay the video unpaced at each smallest hop")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=Path("/tmp/bench_stream.log"), help="toolchain output goes here")
    args = ap.parse_args(argv)

    report = json.loads((args.run / "report.json").read_text())
    ck_path = args.checkpoint or Path(report["reference"]["checkpoint"])
    ck = load_checkpoint(ck_path)
    video = args.video or EchoNet(Path(report["data"]["root"])).records("TEST")[0].path
    frames = read_video(video)
    pre = preprocess_cost(frames, ck.spec)
    buf = ClipBuffer(ck.spec)
    for f in frames[: ck.spec.span]:
        buf.add(f)
    clip = buf.clip()[None]
    folders = find_artefacts(args.run / "artefacts" if (args.run / "artefacts").is_dir() else args.run)
    load0 = os.getloadavg()[0]
    print(f"checkpoint {ck_path.name}, video {Path(video).name} {frames.shape[1]}x{frames.shape[2]}, "
          f"{args.fps:g} FPS; preprocessing {pre['frame_ms']:.2f} ms/frame + {pre['clip_ms']:.2f} ms/clip; "
          f"{args.runs} timed calls after {args.warmup}; load {load0:.2f}")
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    for threads in [int(t) for t in args.threads.split(",")]:
        runners = {"eager-fp32": EagerRunner(ck.model, threads=threads, name="eager-fp32")}
        with captured_output(args.log):  # the runtimes' load and first-call lines
            for folder in folders:
                r = open_runner(folder, threads=threads)
                if getattr(r, "measures_latency", True):
                    runners[folder.name] = r
                else:
                    r.close()  # a reference interpreter's speed is not the artefact's
            lat = round_robin(runners, clip, runs=args.runs, warmup=args.warmup, threads=threads)
        for name, l in lat.items():
            h = smallest_hop(l.p50_ms, args.fps, pre["frame_ms"], pre["clip_ms"])
            goal_ms = args.goal_hop * pre["frame_ms"] + pre["clip_ms"] + l.p50_ms
            row = {"inference_ms_p50": l.p50_ms, "inference_ms_p90": l.p90_ms, "smallest_hop": h,
                   f"update_ms_hop{args.goal_hop}": goal_ms,
                   "meets_goal": goal_ms <= 1000.0 * args.goal_hop / args.fps}
            if args.replay and h:
                hops = replay(frames, args.fps, runners[name], ck.spec, StreamOptions(hop=h, pace=False, threads=threads))
                s = summarise(hops, args.fps, StreamOptions(hop=h, pace=False))
                row.update(replay_rtf=s["rtf"], replay_late=s["late"], replay_hops=s["hops"])
            results.setdefault(name, {})[str(threads)] = row
        for r in runners.values():
            r.close()
    print_table(results, args.fps, args.goal_hop)
    print(f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}; {time.perf_counter() - t_all:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"video": str(video), "fps": args.fps, "preprocess": pre,
                                         "runners": results}, indent=2))
        print(f"wrote {args.json}")


def print_table(results: dict[str, dict], fps: float, goal_hop: int) -> None:
    threads = sorted({t for r in results.values() for t in r}, key=int)
    head = f"{'runner':<18}" + "".join(f"  {t} thr: infer p50  upd@hop{goal_hop}  min hop  goal" for t in threads)
    print(head)
    for name, by_t in results.items():
        cells = []
        for t in threads:
            r = by_t.get(t)
            if r is None:
                cells.append(" " * 44)
                continue
            hop = str(r["smallest_hop"]) if r["smallest_hop"] else "none"
            extra = f" rtf {r['replay_rtf']:.2f}" if "replay_rtf" in r else ""
            cells.append(f"  {r['inference_ms_p50']:13.1f} ms {r[f'update_ms_hop{goal_hop}']:8.1f} ms "
                         f"{hop:>7}  {'yes' if r['meets_goal'] else 'no':>4}{extra}")
        print(f"{name:<18}" + "".join(cells))
    print(f"goal: update at hop {goal_hop} <= {1000.0 * goal_hop / fps:.0f} ms at {fps:g} FPS (preprocessing included)")


if __name__ == "__main__":
    main()
