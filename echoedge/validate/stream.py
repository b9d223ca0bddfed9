"""The live-stream replay: a video played frame by frame into the app's ClipBuffer, one artefact
run every `hop` frames, timed as a point-of-care device would see it.

The path is the app's, not training's: every frame goes through echoedge.data.preprocess.ClipBuffer
(the Python twin of the Android/iOS ClipBuffer: grey, exact area resize, frame or time mode), and
the clip it returns goes to a Runner (any artefact format, or the eager checkpoint).

Replay modes
- Paced (default): frame i arrives on the wall clock at i / fps after the start. One worker does
  everything, as a single inference thread on a device would: it adds each frame to the buffer
  when the frame has arrived, and when a hop is due (the buffer is ready and `hop` frames have
  arrived since the last one) it builds the clip and runs the model. Frames that arrive while it
  is busy wait in the grabber's queue and are added as soon as it is free.
- Unpaced (`pace=False`, `--no-pace`): frames are fed as fast as possible; the same single-worker
  schedule is then simulated on a virtual clock from the measured durations, so latency, late
  and dropped figures mean the same thing in both modes without waiting for the video's length.

Frame policy (deterministic EF): no frame is ever dropped from the buffer and every hop is run on
exactly the clip it was due on, so the same frames give the same EF whatever the machine's speed;
only the timing columns vary. A hop is *late* when its EF is ready after the next hop is due
(latency > hop duration). A hop is *dropped* (counted, still computed) when the next hop's newest
frame had already arrived before its compute started: an app that always runs the newest clip
would have skipped it. Paced replay of a machine that cannot keep up takes longer than the video.

Timing per hop: preprocessing (the grey + resize of the frames added since the previous hop, plus
building the normalised clip) apart from inference (the runner call); latency = EF ready minus
arrival of the hop's newest frame. The real-time factor is the mean compute per hop (both parts)
over the hop duration, over the steady hops (all but the first, which also filled the buffer);
below 1 the stream keeps up. A runner that is a reference interpreter (Core ML off macOS) gives
real EF but no device timing; the summary says so.

`all_clips_ef` is `evaluate --clips 0`'s figure for the same video (echoedge.model.evaluate's
every-start protocol via predict_videos) through the same runner, so whole-video EF minus it isolates
the replay (hops, time mode, the app's resize) from the runtime. With frame mode, hop 1 and a
video at the model's size the two see identical clips; a video of another size is resized by the
app's exact float area average here and by OpenCV's uint8 INTER_AREA in `evaluate`, a difference of
up to half a grey level per pixel.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from echoedge.data.clipspec import ClipSpec
from echoedge.data.preprocess import ClipBuffer
from echoedge.errors import EchoEdgeError

HOPS_CSV = "stream_hops.csv"
SUMMARY_JSON = "stream_summary.json"


@dataclass
class StreamOptions:
    hop: int = 1  # frames between two model runs
    fps: float | None = None  # arrival rate; None: the video file's own
    model_fps: float | None = None  # None: frame mode; set: the ClipBuffer's time mode at this rate
    pace: bool = True
    threads: int = 2
    all_clips: bool = True  # also compute evaluate's all-clips EF for the video

    def check(self) -> None:
        if isinstance(self.hop, bool) or int(self.hop) != self.hop or self.hop < 1:
            raise EchoEdgeError(f"--hop must be a whole number of frames >= 1, got {self.hop}")
        if self.fps is not None and not self.fps > 0:
            raise EchoEdgeError(f"--fps must be > 0, got {self.fps}")
        if self.model_fps is not None and not self.model_fps > 0:
            raise EchoEdgeError(f"--model-fps must be > 0, got {self.model_fps}")
        if self.threads < 1:
            raise EchoEdgeError(f"--threads must be >= 1, got {self.threads}")


@dataclass
class HopResult:
    hop: int
    newest_frame: int  # arrival index of the clip's newest frame
    timestamp_s: float  # its arrival time after the first frame
    selected: list[int]  # the frames the clip is made of (ClipBuffer.selected)
    ef: float
    # None where the model does not produce them (EchoNet-Dynamic's video ResNets: EF only).
    edv: float | None
    esv: float | None
    ed_landmarks: list[list[float]] | None  # (K, 2) normalised (x / W, y / H)
    es_landmarks: list[list[float]] | None
    preprocess_ms: float
    inference_ms: float
    latency_ms: float
    late: bool
    dropped: bool


@dataclass
class StreamResult:
    hops: list[HopResult]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def single_thread_blas() -> Any:
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl, when installed).

    The resize is two small matmuls per frame; with PyTorch's OpenMP pool loaded in the same
    process, OpenBLAS's own threads contend with it and one 112 x 112 frame took ~8 ms instead of
    ~0.1 ms on a 2-core host. A device preprocesses on one thread (the bridges' plain loops), so
    timing it single-threaded is also the faithful measurement.
    """
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def frame_time_us(i: int, fps: float) -> int:
    """Arrival timestamp of frame i at `fps`, whole microseconds (what a device clock gives)."""
    return int(round(i * 1_000_000.0 / fps))


def replay(frames: Iterable[np.ndarray], fps: float, runner: Callable[[np.ndarray], Any], spec: ClipSpec,
           opt: StreamOptions, on_hop: Callable[[HopResult], None] | None = None,
           timestamps_us: Sequence[int] | None = None, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep) -> list[HopResult]:
    """Feed `frames` (uint8, any size, grey or colour) at `fps` into a ClipBuffer; run `runner` on
    the clip at every hop. Returns one HopResult per hop, in order (see the module's docstring).

    `timestamps_us` (one per frame, increasing) replaces the even `fps` grid, for a device's
    uneven clock; `fps` then only sets the hop duration."""
    opt.check()
    buf = ClipBuffer(spec, opt.model_fps)
    hop_s = opt.hop / fps
    hops: list[HopResult] = []
    with single_thread_blas():
        for h in _replay_loop(frames, fps, runner, buf, opt, hop_s, timestamps_us, clock, sleep):
            hops.append(h)
            if on_hop is not None:
                on_hop(h)
    return hops


def _replay_loop(frames: Iterable[np.ndarray], fps: float, runner: Callable[[np.ndarray], Any],
                 buf: ClipBuffer, opt: StreamOptions, hop_s: float, timestamps_us: Sequence[int] | None,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> Iterable[HopResult]:
    t0 = clock()
    vnow = 0.0  # the unpaced mode's virtual clock, seconds after the first arrival
    prep_s = 0.0  # preprocessing since the previous hop
    first_ready: int | None = None
    n = 0
    for i, frame in enumerate(frames):
        ts = frame_time_us(i, fps) if timestamps_us is None else int(timestamps_us[i])
        arrival = (ts - (0 if timestamps_us is None else int(timestamps_us[0]))) / 1e6
        if opt.pace:
            wait = t0 + arrival - clock()
            if wait > 0:
                sleep(wait)
        else:
            vnow = max(vnow, arrival)
        a = clock()
        buf.add(frame, ts)
        d = clock() - a
        prep_s += d
        vnow += d
        if not buf.ready():
            continue
        if first_ready is None:
            first_ready = i
        if (i - first_ready) % opt.hop:
            continue
        start = (clock() - t0) if opt.pace else vnow
        c = clock()
        selected = buf.selected()
        clip = buf.clip()
        b = clock()
        outs = runner(clip[None])
        e = clock()
        prep_s += b - c
        vnow += e - c
        done = (clock() - t0) if opt.pace else vnow
        # Outputs in OUTPUT_NAMES order, EF first; an EF-only model returns fewer: those are None.
        ef, edv, esv = (float(np.asarray(o, dtype=np.float32).reshape(-1)[0]) if o is not None else None
                        for o in _padded(outs, 3))
        ed_lm, es_lm = (np.asarray(o, dtype=np.float32)[0].astype(float).tolist() if o is not None else None
                        for o in _padded(outs, 5)[3:])
        latency = done - arrival
        h = HopResult(
            hop=n, newest_frame=i, timestamp_s=arrival, selected=[int(s) for s in selected],
            ef=ef, edv=edv, esv=esv, ed_landmarks=ed_lm, es_landmarks=es_lm,
            preprocess_ms=1000.0 * prep_s, inference_ms=1000.0 * (e - b), latency_ms=1000.0 * latency,
            late=latency > hop_s, dropped=start >= arrival + hop_s,
        )
        n += 1
        prep_s = 0.0
        yield h


def _padded(outs: Sequence[Any], n: int) -> list[Any]:
    return [outs[k] if k < len(outs) else None for k in range(n)]


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def summarise(hops: list[HopResult], fps: float, opt: StreamOptions) -> dict[str, Any]:
    """Whole-video EF (mean over hops) and the timing figures of one replay."""
    if not hops:
        raise EchoEdgeError("the stream produced no hop")
    steady = hops[1:] if len(hops) > 1 else hops
    compute = np.array([h.preprocess_ms + h.inference_ms for h in steady])
    lat = np.array([h.latency_ms for h in hops])
    hop_ms = 1000.0 * opt.hop / fps
    return {
        "hops": len(hops),
        "ef": float(np.mean([h.ef for h in hops])),
        "edv": _mean_or_none([h.edv for h in hops]),
        "esv": _mean_or_none([h.esv for h in hops]),
        "ef_sd_over_hops": float(np.std([h.ef for h in hops])),
        "hop_ms": hop_ms,
        "rtf": float(compute.mean() / hop_ms),
        "rtf_p95": float(np.percentile(compute, 95) / hop_ms),
        "compute_ms_p50": float(np.median(compute)),
        "preprocess_ms_p50": float(np.median([h.preprocess_ms for h in steady])),
        "inference_ms_p50": float(np.median([h.inference_ms for h in steady])),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_max": float(lat.max()),
        "late": int(sum(h.late for h in hops)),
        "dropped": int(sum(h.dropped for h in hops)),
        "sustains_real_time": bool(compute.mean() <= hop_ms),
    }


@dataclass
class _VideoOnly:
    """A video with no labels, in the shape predict_videos reads (truth is NaN, no tracings)."""

    file_name: str
    split: str = "STREAM"
    ef: float = float("nan")
    edv: float = float("nan")
    esv: float = float("nan")
    ed_frame: int | None = None
    es_frame: int | None = None


def all_clips_ef(runner: Any, frames: np.ndarray, spec: ClipSpec, name: str) -> tuple[float, int]:
    """`evaluate --clips 0` for one video through `runner`: mean EF over every clip start."""
    from echoedge.model.evaluate import predict_videos

    (p,) = predict_videos(runner, [_VideoOnly(name)], lambda _r: frames, spec, None, batch_size=8,
                          progress=False)
    return p.ef, p.n_clips


@dataclass
class StreamSource:
    """What `stream` runs: the runner, the ClipSpec it eats, its name, and which network it is."""

    runner: Any
    spec: ClipSpec
    name: str
    model: str | None  # the --model name (None: an artefact whose manifest does not record it)
    outputs: tuple[str, ...]  # what it returns, EF first


def open_stream_runner(source: Path, threads: int, chatter: Path | None = None,
                       model: str | None = None) -> StreamSource:
    """An artefact folder's runner, or the eager runner of a checkpoint file (.pt) of `model`
    (echoedge.model.registry; None: Echo-E3Net). For a folder, a `model` its manifest contradicts
    is one line (EchoEdgeError)."""
    import contextlib

    from echoedge.console import captured_output

    source = Path(source)
    if not source.exists():
        raise EchoEdgeError(f"{source}: artefact folder (or checkpoint) not found")
    with captured_output(chatter) if chatter else contextlib.nullcontext():
        if source.is_file():
            from echoedge.model.registry import DEFAULT_MODEL, load
            from echoedge.validate.runner import EagerRunner

            ck = load(model or DEFAULT_MODEL, source)
            name = f"eager:{source.name}"
            runner = EagerRunner(ck.runnable, threads=threads, name=name, clip_shape=ck.spec.input_shape()[1:])
            return StreamSource(runner, ck.spec, name, ck.entry.name, ck.entry.outputs)
        from echoedge.convert.artefact import artefacts_model, verify_artefact
        from echoedge.validate.runner import open_runner

        m = verify_artefact(source)
        recorded = artefacts_model([source], model)
        return StreamSource(open_runner(source, threads=threads), ClipSpec.from_dict(m.clip_spec),
                            source.name, recorded, tuple(t.name for t in m.outputs))


def read_stream_video(path: Path, fps: float | None) -> tuple[np.ndarray, float, str]:
    """Grey frames (EchoNet's reader), the arrival rate, and where it came from (file or --fps)."""
    from echoedge.data.video import read_video, video_fps

    frames = read_video(path)
    if fps is not None:
        return frames, float(fps), "--fps"
    file_fps = video_fps(path)
    if file_fps is None:
        raise EchoEdgeError(f"{path}: the file states no frame rate; pass --fps")
    return frames, file_fps, "file"


def stream_video(source: Path, video: Path, out: Path, opt: StreamOptions, video_out: Path | None = None,
                 on_hop: Callable[[HopResult], None] | None = None,
                 log: Callable[[str], None] = print, model: str | None = None) -> StreamResult:
    """`echo-edge stream`: replay `video` into the artefact (or checkpoint of `model`) at `source`;
    write the per-hop CSV, the summary JSON and optionally the annotated video into `out`. What
    the model does not produce (an EF-only model's EDV, ESV, landmarks) is null / an empty cell."""
    from echoedge.console import captured_output

    opt.check()
    video, out = Path(video), Path(out)
    frames, fps, fps_from = read_stream_video(video, opt.fps)
    out.mkdir(parents=True, exist_ok=True)
    chatter = out / "stream.log"
    src = open_stream_runner(Path(source), opt.threads, chatter, model)
    runner, spec = src.runner, src.spec
    try:
        need = spec.span if opt.model_fps is None else None
        if need is not None and len(frames) < need:
            raise EchoEdgeError(f"{video}: {len(frames)} frames do not fill one clip ({need} needed: "
                                f"{spec.frames} frames every {spec.period})")
        # The first call of XNNPACK/PyTorch packs weights; an app does it at load, not on a frame.
        with captured_output(chatter):
            runner(np.zeros(spec.input_shape(1), np.float32))
        hops = replay(frames, fps, runner, spec, opt, on_hop=on_hop)
        if not hops:
            raise EchoEdgeError(f"{video}: {len(frames)} frames at {fps:g} FPS never filled a clip "
                                f"in time mode at {opt.model_fps:g} FPS")
        summary = _summary_dict(hops, fps, fps_from, frames, video, src, opt)
        if opt.all_clips:
            ef_all, n = all_clips_ef(runner, frames, spec, video.name)
            summary.update(all_clips_ef=ef_all, all_clips_n=n, ef_minus_all_clips=summary["ef"] - ef_all)
    finally:
        runner.close()
    files = {"csv": write_hops_csv(hops, out / HOPS_CSV), "json": write_summary(summary, out / SUMMARY_JSON)}
    if video_out is not None:
        from echoedge.validate.stream_video import write_stream_video

        files["video"] = write_stream_video(Path(video_out), frames, fps, hops, opt.hop)
    return StreamResult(hops, summary, files)


def _summary_dict(hops: list[HopResult], fps: float, fps_from: str, frames: np.ndarray, video: Path,
                  src: StreamSource, opt: StreamOptions) -> dict[str, Any]:
    runner, spec, name = src.runner, src.spec, src.name
    measures = bool(getattr(runner, "measures_latency", True))
    return {
        "video": str(video), "frames": int(len(frames)), "frame_size": [int(frames.shape[1]), int(frames.shape[2])],
        "fps": fps, "fps_from": fps_from,
        "mode": "frame" if opt.model_fps is None else "time", "model_fps": opt.model_fps,
        "hop": opt.hop, "paced": opt.pace, "threads": opt.threads,
        "artefact": name, "format": getattr(runner, "format", None), "precision": getattr(runner, "precision", None),
        "runtime": getattr(runner, "runtime", None), "clip_spec": spec.to_dict(),
        "model": src.model, "outputs": list(src.outputs),
        **summarise(hops, fps, opt),
        "all_clips_ef": None, "all_clips_n": None, "ef_minus_all_clips": None,
        "timing_note": None if measures else (
            f"{getattr(runner, 'runtime', '?')} is a reference interpreter, not the device runtime: "
            "EF is real, timings are not the artefact's"),
        "options": asdict(opt),
    }


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_hops_csv(hops: list[HopResult], path: Path) -> Path:
    """One row per hop; landmarks as columns ed_x0, ed_y0, ... (normalised [0, 1]); none for a
    model without landmarks, and empty EDV/ESV cells for one without volumes."""
    k = len(hops[0].ed_landmarks) if hops and hops[0].ed_landmarks is not None else 0
    lm_cols = [f"{ph}_{c}{j}" for ph in ("ed", "es") for j in range(k) for c in ("x", "y")]
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    w.writerow(["hop", "newest_frame", "timestamp_s", "ef", "edv", "esv", "preprocess_ms", "inference_ms",
                "latency_ms", "late", "dropped", "selected_frames", *lm_cols])
    for h in hops:
        lms = [f"{v:.5f}" for lm in (h.ed_landmarks, h.es_landmarks) if lm is not None for p in lm for v in p]
        w.writerow([h.hop, h.newest_frame, f"{h.timestamp_s:.6f}", f"{h.ef:.4f}", _cell(h.edv), _cell(h.esv),
                    f"{h.preprocess_ms:.3f}", f"{h.inference_ms:.3f}", f"{h.latency_ms:.3f}", int(h.late),
                    int(h.dropped), " ".join(map(str, h.selected)), *lms])
    return _atomic_write(path, s.getvalue())


def _cell(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    from echoedge.validate.report_json import to_json_safe

    return _atomic_write(path, json.dumps(to_json_safe(summary), indent=2, allow_nan=False) + "\n")


def status_line(h: HopResult, hop_ms: float) -> str:
    """The live line: hop, EF, latency and this hop's real-time factor."""
    rtf = (h.preprocess_ms + h.inference_ms) / hop_ms
    flag = " LATE" if h.late else ""
    return (f"hop {h.hop:4d}  frame {h.newest_frame:5d}  EF {h.ef:5.1f} %  latency {h.latency_ms:7.1f} ms  "
            f"RTF {rtf:5.2f}{flag}")
