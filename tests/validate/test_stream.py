"""`echo-edge stream`: the replay's frame selection is the bridges' (golden vectors), it writes a
playable annotated video, its frame-mode hop-1 EF is `evaluate --clips 0`'s, bad input is one line;
and `run`'s report carries the smallest real-time hop per artefact."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from echoedge.cli import main as cli_main
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError
from echoedge.validate.realtime import smallest_hop
from echoedge.validate.stream import StreamOptions, replay, stream_video

GOLDEN_SPEC = ClipSpec(frames=8, period=2, height=32, width=32, mean=30.0, std=45.0)


class _Recorder:
    """A runner that keeps the clips it is given (the replay's output, to compare with golden)."""

    def __init__(self) -> None:
        self.clips: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        self.clips.append(batch[0].copy())
        k = np.full((1, 42, 2), 0.5, np.float32)
        return (np.full(1, float(batch.mean()), np.float32), np.ones(1, np.float32), np.ones(1, np.float32), k, k)


def test_stream_selects_the_frames_the_java_clipbuffer_selects_on_the_golden_vectors():
    """golden_clips hold one frame-mode and two time-mode clips (30 FPS RGB; ~40 FPS BGRA with
    jitter); tests/bridge/test_android_bridge.py checks the Java ClipBuffer's selection and tensor
    against the same `selected_frames` and input tensors."""
    from echoedge.bridges.golden import golden_clips, preprocess_clip

    clips = golden_clips(GOLDEN_SPEC)
    assert {c.model_fps is None for c in clips} == {True, False}  # both modes
    for c in clips:
        want_x, want_sel = preprocess_clip(c, GOLDEN_SPEC)
        rec = _Recorder()
        ts = c.timestamps_us
        fps = 1e6 * (len(ts) - 1) / (ts[-1] - ts[0])
        hops = replay(c.frames, fps, rec, GOLDEN_SPEC, StreamOptions(hop=1, model_fps=c.model_fps, pace=False),
                      timestamps_us=ts)
        assert hops[-1].newest_frame == len(c.frames) - 1
        assert hops[-1].selected == want_sel, c.id
        assert np.array_equal(rec.clips[-1], want_x), c.id
        # Every hop's clip ends at its newest frame; hop 3 runs on every third frame once ready.
        assert all(h.selected[-1] == h.newest_frame for h in hops)
        every3 = replay(c.frames, fps, _Recorder(), GOLDEN_SPEC,
                        StreamOptions(hop=3, model_fps=c.model_fps, pace=False), timestamps_us=ts)
        assert [h.newest_frame for h in every3] == [h.newest_frame for h in hops][::3]


def test_smallest_hop_is_the_least_hop_whose_update_fits_its_frames():
    assert smallest_hop(30.0, 50.0, frame_ms=1.0, clip_ms=2.0) == 2  # 1 x 1 + 2 + 30 > 20; 2 + 2 + 30 <= 40
    assert smallest_hop(15.0, 50.0) == 1
    assert smallest_hop(20.0, 50.0) == 1  # exactly one frame interval
    assert smallest_hop(5.0, 50.0, frame_ms=20.0) is None  # one frame's preprocessing fills the interval


@pytest.fixture(scope="module")
def model_size_video(tiny_run, tmp_path_factory) -> Path:
    """A TEST video of the tiny dataset at the tiny model's size (64 x 64), a few frames past one
    clip, so `evaluate`'s uint8 resize and the app's float resize have nothing to differ on."""
    import cv2

    from echoedge.data.echonet import EchoNet
    from echoedge.data.video import read_video, write_video

    rec = EchoNet(tiny_run.data).records("TEST")[0]
    frames = read_video(rec.path)[:36]
    small = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames])
    path = tmp_path_factory.mktemp("stream") / "small.avi"
    write_video(path, small, fps=50.0)
    return path


def test_stream_writes_a_playable_video_csv_and_summary(tiny_run, model_size_video, tmp_path):
    import cv2

    out = tmp_path / "out"
    res = stream_video(tiny_run.fp32, model_size_video, out, StreamOptions(hop=2), video_out=tmp_path / "v.mp4")
    cap = cv2.VideoCapture(str(res.files["video"]))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 36
    s = json.loads((out / "stream_summary.json").read_text())
    assert s["paced"] and s["fps"] == 50.0 and s["fps_from"] == "file" and s["hops"] == 3  # frames 30, 32, 34
    assert s["rtf"] > 0 and s["latency_ms_p95"] >= s["latency_ms_p50"] > 0 and 0 <= s["late"] <= 3
    rows = list(csv.DictReader((out / "stream_hops.csv").open()))
    assert [int(r["newest_frame"]) for r in rows] == [30, 32, 34]
    assert float(rows[0]["ef"]) == pytest.approx(res.hops[0].ef, abs=1e-4) and "es_y41" in rows[0]
    assert sorted(p.name for p in out.iterdir()) == ["stream.log", "stream_hops.csv", "stream_summary.json"]
    # Same frames, same EF, paced or not: only the timing columns depend on the machine.
    fast = stream_video(tiny_run.fp32, model_size_video, tmp_path / "fast", StreamOptions(hop=2, pace=False),
                        video_out=tmp_path / "v.gif")
    assert [h.ef for h in fast.hops] == [h.ef for h in res.hops]
    assert fast.files["video"].stat().st_size > 0


def test_frame_mode_hop_1_whole_video_ef_equals_evaluate_all_clips(tiny_run, model_size_video, tmp_path):
    from echoedge.bridges.golden import tolerance_for
    from echoedge.data.video import read_video
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.evaluate import eager_infer, predict_videos
    from echoedge.validate.stream import _VideoOnly

    res = stream_video(tiny_run.fp32, model_size_video, tmp_path, StreamOptions(hop=1, pace=False))
    s = res.summary
    assert s["hops"] == s["all_clips_n"] == 36 - 31 + 1
    # evaluate --clips 0 (every start) of the checkpoint the artefact was built from, eager PyTorch.
    ck = load_checkpoint(tiny_run.checkpoint)
    frames = read_video(model_size_video)
    (p,) = predict_videos(eager_infer(ck.model), [_VideoOnly("small.avi")], lambda _r: frames, ck.spec, None,
                          progress=False)
    tol = tolerance_for(s["format"], s["precision"])
    assert abs(s["ef"] - p.ef) <= tol["atol"] + tol["rtol"] * abs(p.ef)
    assert abs(s["ef"] - s["all_clips_ef"]) <= tol["atol"] + tol["rtol"] * abs(p.ef)  # same runner


def _one_line_error(argv: list[str], capsys) -> str:
    rc = cli_main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_bad_video_and_bad_hop_are_one_line_errors(tiny_run, model_size_video, tmp_path, capsys):
    missing = tmp_path / "nope.avi"
    assert "nope.avi: video file not found" in _one_line_error(["stream", str(tiny_run.fp32), str(missing)], capsys)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    assert "junk.avi" in _one_line_error(["stream", str(tiny_run.fp32), str(junk), "--out", str(tmp_path / "o")],
                                         capsys)
    assert "--hop" in _one_line_error(["stream", str(tiny_run.fp32), str(model_size_video), "--hop", "0"], capsys)
    with pytest.raises(EchoEdgeError, match="hop"):
        StreamOptions(hop=0).check()
    assert not (tmp_path / "o" / "stream_summary.json").exists()


def test_run_report_has_the_smallest_real_time_hop_per_artefact(tiny_run):
    report = json.loads((tiny_run.out / "report.json").read_text())
    rt = report["realtime"]
    assert rt["fps"] and rt["threads"] == [1, 2]
    rows = {r["name"]: r for r in rt["rows"]}
    et = rows["executorch-fp32"]
    for t in ("1", "2"):
        ms = et["inference_ms_p50"][t]
        assert ms is not None and ms > 0
        for fps, h in et["smallest_hop"][t].items():
            assert h == smallest_hop(ms, float(fps), rt["preprocess"]["frame_ms"], rt["preprocess"]["clip_ms"])
    assert rows["coreml-fp32"]["inference_ms_p50"] == {"1": None, "2": None}  # MIL interpreter: no timing
    assert any(name.startswith("eager:") for name in rows)
    assert "Live stream: smallest real-time hop" in (tiny_run.out / "report.md").read_text()
    assert "realtime-table" in (tiny_run.out / "report.html").read_text()
