"""The smallest hop each artefact sustains in real time, for `run`'s report (key `realtime`).

A stream at `fps` with hop h delivers h frames per update; one worker must grey and resize those
h frames, build the clip and run the model before the next update is due (echoedge.validate.stream
replays it frame by frame). So the cost of an update is

    cost(h) = h * frame_ms + clip_ms + inference_ms      (batch 1, p50 of each)

and the smallest sustained hop is the least integer h with cost(h) <= 1000 * h / fps; none exists
when one frame's preprocessing alone takes longer than a frame interval. frame_ms and clip_ms are
measured once on the app path (echoedge.data.preprocess.ClipBuffer) on the first validated video,
at its own frame size; inference_ms is each artefact's p50 latency. The validation already timed
every runner at the run's thread count: that figure is reused, and only the other of 1 and 2
threads is measured here, with a short series (REALTIME_WARMUP + REALTIME_RUNS calls per artefact
and for the eager reference). A runtime that is a reference interpreter
(Core ML off macOS) gets no figure, as in the latency column.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

THREADS = (1, 2)
REALTIME_RUNS = 3  # a short series: this section must not lengthen `run` by more than seconds
REALTIME_WARMUP = 1
MAX_HOP = 1000  # beyond this a "stream" is a batch job; reported as not sustained


def smallest_hop(inference_ms: float, fps: float, frame_ms: float = 0.0, clip_ms: float = 0.0) -> int | None:
    """Least integer h with h * frame_ms + clip_ms + inference_ms <= 1000 * h / fps, or None."""
    interval = 1000.0 / fps
    if frame_ms >= interval:
        return None
    h = max(1, math.ceil((clip_ms + inference_ms) / (interval - frame_ms) - 1e-9))
    return h if h <= MAX_HOP else None


def preprocess_cost(frames: np.ndarray, spec: Any, repeats: int = 3) -> dict[str, float]:
    """p50 ms of ClipBuffer.add (grey + area resize of one frame) and of ClipBuffer.clip()."""
    from echoedge.data.preprocess import ClipBuffer

    from echoedge.validate.stream import single_thread_blas

    buf = ClipBuffer(spec)
    adds, clips = [], []
    with single_thread_blas():
        _time_buffer(buf, frames, spec, repeats, adds, clips)
    return {"frame_ms": 1000.0 * float(np.median(adds)),
            "clip_ms": 1000.0 * float(np.median(clips)) if clips else 0.0,
            "frame_size": [int(frames.shape[1]), int(frames.shape[2])]}


def _time_buffer(buf: Any, frames: np.ndarray, spec: Any, repeats: int, adds: list, clips: list) -> None:
    n = min(len(frames), spec.span + 8)
    for r in range(repeats):
        for i in range(n):
            t = time.perf_counter()
            buf.add(frames[(r * n + i) % len(frames)])
            adds.append(time.perf_counter() - t)
            if buf.ready():
                t = time.perf_counter()
                buf.clip()
                clips.append(time.perf_counter() - t)


def _row(name: str, inference: dict[int, float | None], fps_list: list[float], pre: dict[str, float]) -> dict:
    cost = {str(t): (None if ms is None else pre["frame_ms"] + pre["clip_ms"] + ms) for t, ms in inference.items()}
    hops = {str(t): {f"{fps:g}": (None if ms is None else smallest_hop(ms, fps, pre["frame_ms"], pre["clip_ms"]))
                     for fps in fps_list} for t, ms in inference.items()}
    return {"name": name, "inference_ms_p50": {str(t): v for t, v in inference.items()},
            "update_ms_hop1": cost, "smallest_hop": hops}


def _short_latency(runner: Any, clip: np.ndarray, threads: int) -> float:
    from echoedge.validate.latency import measure_latency

    return measure_latency(runner, clip, runs=REALTIME_RUNS, warmup=REALTIME_WARMUP, threads=threads).p50_ms


def realtime_section(entries: list[dict[str, Any]], reference: dict[str, Any], ck: Any, records: list,
                     frames: Callable[[Any], np.ndarray], opt: Any, latency_clip: np.ndarray,
                     chatter: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The report's `realtime` section: per artefact and the reference (checkpoint `ck`), the p50
    inference at 1 and 2 threads, the update cost at hop 1, and the smallest sustained hop at each
    frame rate of the validated videos (`opt`: ValidateOptions, for the run's thread count)."""
    # The pipeline's form of the model (its outputs tuple), where `ck` is a registry LoadedModel.
    model, spec, threads = getattr(ck, "runnable", ck.model), ck.spec, opt.threads
    from echoedge.console import captured_output
    from echoedge.validate.runner import EagerRunner, open_runner

    t0 = time.perf_counter()
    rates = [float(r.fps) for r in records if getattr(r, "fps", None)]
    fps_list = sorted(set(rates))
    common = max(fps_list, key=lambda f: (rates.count(f), f)) if fps_list else None
    pre = preprocess_cost(np.asarray(frames(records[0])), spec)
    others = [t for t in THREADS if t != threads]

    def measured(make: Callable[[int], Any], own_ms: float | None) -> dict[int, float | None]:
        out: dict[int, float | None] = {t: (own_ms if t == threads else None) for t in THREADS}
        if own_ms is None:
            return out
        for t in others:
            try:
                with captured_output(chatter) if chatter else contextlib.nullcontext():
                    runner = make(t)
                try:
                    out[t] = _short_latency(runner, latency_clip, t)
                finally:
                    runner.close()
            except Exception as e:  # a figure missing is reported as such, not fatal to the run
                log(f"realtime: {t}-thread latency not measured ({type(e).__name__}: {e})")
        return out

    ref_ms = (reference.get("latency") or {}).get("p50_ms")
    rows = [_row(reference["name"], measured(lambda t: EagerRunner(model, threads=t, name="reference"), ref_ms),
                 fps_list, pre)]
    for e in entries:
        own = (e.get("latency") or {}).get("p50_ms") if e.get("run_status") == "ok" else None
        rows.append(_row(e["name"], measured(lambda t, f=e["folder"]: open_runner(f, threads=t), own), fps_list, pre))
    torch_threads(threads)
    return {"fps": fps_list, "fps_most_common": common, "threads": list(THREADS), "run_threads": threads, "preprocess": pre,
            "rows": rows, "seconds": round(time.perf_counter() - t0, 2)}


def torch_threads(n: int) -> None:
    """EagerRunner sets torch's process-wide thread count per call; put the run's count back."""
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------
# Rendering (report.md / report.html): from the report dict alone.


def _hop_text(rt: dict[str, Any], row: dict[str, Any], fps: float) -> str:
    cells = []
    for t in rt["threads"]:
        h = row["smallest_hop"][str(t)].get(f"{fps:g}")
        cells.append("–" if row["inference_ms_p50"][str(t)] is None else (str(h) if h else "none"))
    return " / ".join(cells)


def _table(rt: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    # Every rate is in report.json; the table shows the most common one and the fastest (the hardest).
    fps_list = sorted({f for f in (rt.get("fps_most_common"), rt["fps"][-1] if rt["fps"] else None) if f})
    thr = "/".join(map(str, rt["threads"]))
    head = ["artefact", f"update ms at hop 1 ({thr} threads)"] + [f"hop at {f:g} FPS" for f in fps_list]
    rows = []
    for row in rt["rows"]:
        cost = " / ".join("–" if row["update_ms_hop1"][str(t)] is None else f"{row['update_ms_hop1'][str(t)]:.1f}"
                          for t in rt["threads"])
        rows.append([row["name"], cost] + [_hop_text(rt, row, f) for f in fps_list])
    return head, rows


def _caption(rt: dict[str, Any]) -> str:
    p = rt["preprocess"]
    return (f"Smallest hop (frames between two EF updates) each runner sustains in real time at the "
            f"validated videos' most common and highest frame rates (all {len(rt['fps'])} in report.json), on {' / '.join(map(str, rt['threads']))} threads: the least h with "
            f"h × {p['frame_ms']:.2f} ms (grey + resize of a {p['frame_size'][0]}×{p['frame_size'][1]} "
            f"frame) + {p['clip_ms']:.2f} ms (clip) + p50 inference ≤ h frame intervals. "
            f"{rt['run_threads']}-thread inference is the latency column's; the other from "
            f"{REALTIME_RUNS} calls. – = no device timing; none = even one frame's preprocessing is too slow. "
            "`echo-edge stream` replays a video at any hop.")


def markdown_lines(report: dict[str, Any]) -> list[str]:
    rt = report.get("realtime")
    if not rt or not rt.get("rows"):
        return []
    head, rows = _table(rt)
    lines = ["**Live stream: smallest real-time hop**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + ["", _caption(rt), ""]


def html_section(report: dict[str, Any]) -> str:
    import html

    rt = report.get("realtime")
    if not rt or not rt.get("rows"):
        return ""
    head, rows = _table(rt)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<h2>Live stream: smallest real-time hop</h2><table id='realtime-table'><thead><tr>{th}</tr></thead>"
            f"<tbody>{body}</tbody></table><p class='meta'>{html.escape(_caption(rt))}</p>")
