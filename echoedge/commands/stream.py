"""`echo-edge stream ARTEFACT VIDEO`: replay a video as a live probe stream into one artefact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echoedge.commands.common import MODEL_CHOICES, show_progress

DESCRIPTION = (
    "Replay VIDEO as a live probe stream: frames arrive at the video's frame rate (or --fps) into "
    "the app's ClipBuffer (the Python twin of the Android/iOS bridges' ClipBuffer: grey, exact area "
    "resize; frame mode by default, time mode with --model-fps), and ARTEFACT (an artefact folder, "
    "or a checkpoint .pt for the eager fp32 model) runs every --hop frames. "
    "Paced by default: frames arrive on the wall clock and one worker adds frames and runs the "
    "model, as one inference thread on a device would; --no-pace feeds frames as fast as possible "
    "and simulates the same schedule from the measured durations. No frame is dropped from the "
    "clip and every hop runs on the clip it was due on, so EF does not depend on the machine's "
    "speed; a hop is LATE when its EF is ready after the next hop is due, and DROPPED (counted, "
    "still computed) when the next hop's frame had arrived before its compute started (an app "
    "running only the newest clip would skip it). "
    "Writes to --out: stream_hops.csv (per hop: newest frame, time, EF, EDV, ESV, preprocessing "
    "and inference ms, latency from the newest frame to its EF, late, dropped, the selected frames, "
    "ED/ES landmarks normalised to [0, 1]) and stream_summary.json (whole-video EF = mean over hops, "
    "beside `evaluate --clips 0`'s all-clips EF for the same video through the same runner; "
    "real-time factor = mean compute per hop / hop duration, below 1 keeps up; latency p50/p95; "
    "late and dropped counts); --video-out x.mp4|x.gif draws the ED/ES contours on every frame "
    "with a running EF trace. Toolchain output goes to OUT/stream.log."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="replay a video as a live stream into one artefact: per-hop EF, "
                       "latency, real-time factor", description=DESCRIPTION)
    p.add_argument("artefact", type=Path, metavar="ARTEFACT",
                   help="artefact folder (with manifest.json), or a checkpoint .pt (eager fp32)")
    p.add_argument("video", type=Path, metavar="VIDEO", help="a video OpenCV reads (EchoNet AVI, MP4, ...)")
    p.add_argument("--model", default=None, choices=MODEL_CHOICES,
                   help="the network a checkpoint ARTEFACT holds (default e3net): r2plus1d_18 | r3d_18 | "
                   "mc3_18 read EchoNet-Dynamic's checkpoint.pt / best.pt and produce EF only (the EDV, "
                   "ESV and landmark columns stay empty, no contours are drawn). An artefact folder's "
                   "manifest names its model; a --model it contradicts is an error")
    p.add_argument("--hop", type=int, default=1, help="frames between two model runs (default 1)")
    p.add_argument("--fps", type=float, default=None,
                   help="arrival rate in frames per second (default: the rate the file states)")
    p.add_argument("--model-fps", type=float, default=None, metavar="FPS",
                   help="time mode: the clip samples frames nearest to a grid of period/FPS seconds, as "
                   "the bridges do for a probe whose rate differs from training's (EchoNet: 50). "
                   "Default: frame mode, every arriving frame is a source frame, as in training")
    p.add_argument("--no-pace", action="store_true",
                   help="feed frames as fast as possible; timing columns from a simulated schedule")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/stream/<video>-<artefact>)")
    p.add_argument("--video-out", type=Path, default=None, metavar="FILE",
                   help="also write the annotated replay, .mp4 (OpenCV) or .gif (imageio)")
    p.add_argument("--no-all-clips", action="store_true",
                   help="skip the `evaluate --clips 0` comparison (it runs every clip start once more)")
    p.add_argument("--no-progress", action="store_true", help="no live status line")
    p.set_defaults(func=_cmd_stream)


def _cmd_stream(args: argparse.Namespace) -> int:
    from echoedge.errors import EchoEdgeError
    from echoedge.validate.stream import StreamOptions, status_line, stream_video

    opt = StreamOptions(hop=args.hop, fps=args.fps, model_fps=args.model_fps, pace=not args.no_pace,
                        threads=args.threads, all_clips=not args.no_all_clips)
    opt.check()  # before the video is decoded or the artefact loaded
    if not args.video.is_file():
        raise EchoEdgeError(f"{args.video}: video file not found")
    if args.video_out is not None and args.video_out.suffix.lower() not in (".mp4", ".gif"):
        raise EchoEdgeError(f"{args.video_out}: --video-out must end in .mp4 or .gif")
    out = args.out or Path("runs/stream") / f"{args.video.stem}-{args.artefact.stem}"
    live = show_progress(args.no_progress)
    fps = args.fps
    if fps is None:
        from echoedge.data.video import video_fps

        fps = video_fps(args.video)  # None: stream_video says so in one line
    hop_ms = 1000.0 * args.hop / fps if fps else float("nan")

    def on_hop(h) -> None:
        if live:
            sys.stdout.write("\r" + status_line(h, hop_ms) + "\033[K")
            sys.stdout.flush()

    res = stream_video(args.artefact, args.video, out, opt, video_out=args.video_out, on_hop=on_hop,
                       model=args.model)
    if live:
        sys.stdout.write("\n")
    for line in summary_lines(res.summary):
        print(line)
    for path in res.files.values():
        print(f"wrote {path}")
    return 0


def summary_lines(s: dict) -> list[str]:
    """The final summary, a few plain lines."""
    mode = "frame mode" if s["mode"] == "frame" else f"time mode at {s['model_fps']:g} FPS"
    lines = [
        f"stream: {s['artefact']} ({s['format']} {s['precision']}, {s['runtime']}, {s['threads']} threads) on "
        f"{Path(s['video']).name}: {s['frames']} frames at {s['fps']:g} FPS ({s['fps_from']}), {mode}, "
        f"hop {s['hop']} ({s['hop_ms']:.1f} ms), {'paced' if s['paced'] else 'unpaced'}",
        f"  EF {s['ef']:.2f} % (mean of {s['hops']} hops, sd {s['ef_sd_over_hops']:.2f})"
        + (f"; evaluate --clips 0: {s['all_clips_ef']:.2f} % over {s['all_clips_n']} clips "
           f"(difference {s['ef_minus_all_clips']:+.3f})" if s.get("all_clips_ef") is not None else ""),
        f"  real-time factor {s['rtf']:.2f} (p95 {s['rtf_p95']:.2f}): compute {s['compute_ms_p50']:.1f} ms "
        f"per hop (preprocessing {s['preprocess_ms_p50']:.1f} + inference {s['inference_ms_p50']:.1f}) "
        f"for {s['hop_ms']:.1f} ms of video -> {'keeps up' if s['sustains_real_time'] else 'falls behind'}",
        f"  latency newest frame -> EF: p50 {s['latency_ms_p50']:.1f} ms, p95 {s['latency_ms_p95']:.1f} ms, "
        f"max {s['latency_ms_max']:.1f} ms; late {s['late']}, dropped {s['dropped']} of {s['hops']} hops",
    ]
    if s.get("outputs") and "edv" not in s["outputs"]:
        from echoedge.model.evaluate import NOT_PRODUCED

        lines.append(f"  EDV, ESV and landmarks ({s.get('model') or 'this model'}): {NOT_PRODUCED}")
    if s.get("timing_note"):
        lines.append(f"  note: {s['timing_note']}")
    return lines
