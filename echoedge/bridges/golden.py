"""Golden vectors: app-like raw frames, the tensor they must become, and what each artefact returns.

Both bridges ship the same golden/ folder, in a format Java and Swift read without libraries:

    golden/index.json                      clip spec, clips, artefacts, tolerances, post-processed results
    golden/<clip>.frames.u8                raw frames, uint8, interleaved as `pixel_format` says
    golden/<clip>.input.f32                the preprocessed model input (1, C, T, H, W), float32 LE
    golden/<artefact>.<clip>.out.f32       the artefact's 5 outputs concatenated, float32 LE
    golden/<artefact>.<clip>.input.q8      (int8-input files only) the quantized input

The tensors come from echoedge.data.preprocess (the app-side reference) and the outputs from
echoedge.validate.runner.open_runner, the code validation uses, so a bundle and report.json cannot
disagree. An artefact this host cannot run (Core ML off macOS) is listed with status "not-run" and
its reason; its outputs are never made up.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.convert.golden_vectors import tolerance_for
from echoedge.data.clipspec import ClipSpec
from echoedge.data.preprocess import ClipBuffer, postprocess, quantize
from echoedge.errors import EchoEdgeError, PlatformError, first_line

GOLDEN_DIR = "golden"
INDEX_NAME = "index.json"
GOLDEN_FORMAT = "echo-edge-golden"
GOLDEN_VERSION = 1
# Time mode's reference rate: EchoNet-Dynamic videos (and 79 % of the synthetic ones) are 50 FPS,
# so `period` frames at 50 FPS is the temporal spacing the model saw in training.
MODEL_FPS = 50.0
# Tolerances: echoedge.convert.golden_vectors.tolerance_for (shared with `echo-edge verify`).


@dataclass
class GoldenClip:
    """Frames as an app receives them, and how it is told to buffer them."""

    id: str
    description: str
    frames: np.ndarray  # (N, H, W) gray8 or (N, H, W, 3|4) uint8
    pixel_format: str  # gray8 | rgb888 | bgr888 | rgba8888 | bgra8888
    timestamps_us: list[int]
    model_fps: float | None  # None: frame mode


def _source_video(seed: int, index: int) -> np.ndarray:
    """(F, 112, 112) uint8 frames of one synthetic echo video (the generator's own renderer)."""
    from echoedge.data.synthetic_heart import draw_params
    from echoedge.data.synthetic_render import render_video

    return render_video(draw_params(seed, index), np.random.default_rng([seed, index, 7]))


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    interp = cv2.INTER_AREA if height <= frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def golden_clips(spec: ClipSpec, seed: int = 0) -> list[GoldenClip]:
    """Three clips that exercise every branch an app hits.

    1. grey frames at the model size in frame mode: the training path (no resize, every
       `period`-th frame) -- the app tensor must equal echoedge.data.clips.extract_clip's;
    2. RGB 144 x 192 at 30 FPS in time mode: colour, a non-integer downscale, rate conversion;
    3. BGRA 130 x 150 at ~40 FPS with timestamp jitter: alpha, another downscale, uneven frames.
    Each feeds a few frames more than a clip needs, so the buffer's eviction is exercised too.
    """
    rng = np.random.default_rng(seed)
    dur_s = (spec.frames - 1) * spec.period / MODEL_FPS
    # Videos 1, 5 and 8 of seed 0 are 50 FPS with EF about 52, 40 and 56 (three EF bands' edges).
    v1, v2, v3 = (_source_video(0, i) for i in (1, 5, 8))

    n1 = spec.span + 5
    f1 = _fit(_tile(v1, n1), spec.height, spec.width)
    clip1 = GoldenClip("gray-modelsize-framemode", f"grey {spec.height}x{spec.width}, every frame a source frame "
                       "(the training sampling)", f1, "gray8", [int(k * 20_000) for k in range(n1)], None)

    n2 = int(math.ceil(dur_s * 30)) + 6
    src = _tile(v2, int(math.ceil(n2 * 50 / 30)) + 2)
    g2 = _fit(src[[int(round(k * 50 / 30)) for k in range(n2)]], 144, 192)
    tint = np.stack([g2, np.clip(g2 * 0.97 + 3, 0, 255), np.clip(g2 * 1.03, 0, 255)], axis=-1)
    clip2 = GoldenClip("rgb-144x192-30fps", "RGB 144x192 at 30 FPS, tinted channels, time mode at 50 FPS",
                       tint.round().astype(np.uint8), "rgb888", [int(round(k * 1e6 / 30)) for k in range(n2)],
                       MODEL_FPS)

    n3 = int(math.ceil(dur_s * 40)) + 6
    ts3 = np.cumsum(np.r_[0, 25_000 + rng.integers(-3_000, 3_001, n3 - 1)]).astype(np.int64)
    src3 = _tile(v3, int(ts3[-1] * 50 / 1e6) + 2)
    g3 = _fit(src3[[int(round(t * 50 / 1e6)) for t in ts3]], 130, 150)
    bgra = np.stack([g3, g3, g3, np.full_like(g3, 255)], axis=-1)
    clip3 = GoldenClip("bgra-130x150-40fps-jitter", "BGRA 130x150 at ~40 FPS with +-3 ms jitter, time mode at 50 FPS",
                       bgra, "bgra8888", [int(t) for t in ts3], MODEL_FPS)
    return [clip1, clip2, clip3]


def _tile(video: np.ndarray, n: int) -> np.ndarray:
    """The first n frames, looping the video if it is shorter (a short synthetic video)."""
    reps = -(-n // len(video))
    return np.concatenate([video] * reps)[:n]


def preprocess_clip(clip: GoldenClip, spec: ClipSpec) -> tuple[np.ndarray, list[int]]:
    """Feed a golden clip through the Python ClipBuffer: (C, T, H, W) float32 and selected frames."""
    buf = ClipBuffer(spec, clip.model_fps)
    for frame, ts in zip(clip.frames, clip.timestamps_us):
        buf.add(frame, ts)
    if not buf.ready():
        raise EchoEdgeError(f"golden clip {clip.id}: {len(clip.frames)} frames do not fill a clip")
    return buf.clip(), buf.selected()


@dataclass
class GoldenArtefact:
    name: str  # the artefact folder's name, e.g. executorch-int8
    folder: Path


@dataclass
class GoldenSummary:
    index: dict[str, Any]

    def status(self, name: str) -> dict[str, Any]:
        for a in self.index["artefacts"]:
            if a["name"] == name:
                return a
        raise KeyError(name)


def write_golden(dest: Path, spec: ClipSpec, artefacts: list[GoldenArtefact], seed: int = 0,
                 threads: int = 2, progress: bool = True) -> GoldenSummary:
    """Write golden/ into `dest` (created): clips, tensors, each artefact's outputs, index.json."""
    from echoedge.convert.artefact import read_manifest
    from echoedge.validate.runner import open_runner

    dest.mkdir(parents=True, exist_ok=True)
    clips = golden_clips(spec, seed)
    clip_entries, inputs = [], {}
    for c in clips:
        x, selected = preprocess_clip(c, spec)
        inputs[c.id] = x
        (dest / f"{c.id}.frames.u8").write_bytes(np.ascontiguousarray(c.frames, dtype=np.uint8).tobytes())
        (dest / f"{c.id}.input.f32").write_bytes(x.astype("<f4").tobytes())
        clip_entries.append({
            "id": c.id, "description": c.description, "pixel_format": c.pixel_format,
            "frames_file": f"{c.id}.frames.u8", "frame_count": int(len(c.frames)),
            "frame_height": int(c.frames.shape[1]), "frame_width": int(c.frames.shape[2]),
            "timestamps_us": c.timestamps_us, "model_fps": c.model_fps,
            "selected_frames": [int(i) for i in selected],
            "input_file": f"{c.id}.input.f32", "input_shape": [1, *spec.input_shape(1)[1:]],
        })

    art_entries = []
    for art in _progress(artefacts, progress, "golden vectors"):
        m = read_manifest(art.folder)
        inp = m.inputs[0]
        entry: dict[str, Any] = {
            "name": art.name, "format": m.format, "precision": m.precision, "model_file": m.model_file,
            "model_sha256": m.model_sha256, "status": "ok", "reason": None, "runtime_used": None,
            "runtime_measures_latency": None, "tolerance": tolerance_for(m.format, m.precision),
            "input": {"name": inp.name, "dtype": inp.dtype, "layout": inp.layout, "shape": inp.shape,
                      "scale": inp.scale, "zero_point": inp.zero_point},
            "expected": [],
        }
        try:
            runner = open_runner(art.folder, threads=threads)
        except PlatformError as e:
            entry.update(status="not-run", reason=first_line(e))
            art_entries.append(entry)
            continue
        with runner:
            entry["runtime_used"] = runner.runtime
            entry["runtime_measures_latency"] = bool(getattr(runner, "measures_latency", True))
            for c in clips:
                try:
                    outs = runner(inputs[c.id][None])
                except PlatformError as e:  # a runner that opens lazily may refuse only here
                    entry.update(status="not-run", reason=first_line(e), expected=[])
                    break
                outs = [np.asarray(o, dtype=np.float32)[:1] for o in outs]
                name = f"{art.name}.{c.id}"
                (dest / f"{name}.out.f32").write_bytes(
                    np.concatenate([o.reshape(-1) for o in outs]).astype("<f4").tobytes())
                res = postprocess(outs, int(c.frames.shape[1]), int(c.frames.shape[2]))
                e: dict[str, Any] = {"clip": c.id, "outputs_file": f"{name}.out.f32",
                                     "output_sizes": [int(o.size) for o in outs],
                                     "result": res.to_dict(), "quantized_input_file": None}
                if inp.scale is not None and inp.zero_point is not None and inp.dtype in ("int8", "uint8"):
                    q = quantize(inputs[c.id][None], inp.scale, inp.zero_point, inp.dtype)
                    (dest / f"{name}.input.q8").write_bytes(q.tobytes())
                    e["quantized_input_file"] = f"{name}.input.q8"
                entry["expected"].append(e)
        art_entries.append(entry)

    index = {"format": GOLDEN_FORMAT, "version": GOLDEN_VERSION, "byte_order": "little",
             "clip_spec": spec.to_dict(), "model_fps": MODEL_FPS, "input_tolerance": 1e-5,
             "clips": clip_entries, "artefacts": art_entries}
    (dest / INDEX_NAME).write_text(json.dumps(index, indent=1, allow_nan=False) + "\n")
    return GoldenSummary(index)


def read_golden(folder: Path) -> dict[str, Any]:
    """golden/index.json, or EchoEdgeError naming the file."""
    path = Path(folder) / INDEX_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EchoEdgeError(f"{path}: unreadable golden-vector index ({first_line(e)})") from None
    if data.get("format") != GOLDEN_FORMAT:
        raise EchoEdgeError(f"{path}: not an echo-edge golden-vector index")
    return data


def _progress(items: list, show: bool, what: str) -> Any:
    if not show or not items:
        return items
    from rich.progress import track

    return track(items, description=what, transient=True)
