"""`echo-edge data show`: a montage of one video with its ED/ES tracings and landmarks drawn on."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np

from echoedge.data.echonet import EchoNet, VideoRecord
from echoedge.data.landmarks import denormalise

COLUMNS = 4
PHASE_COLOURS = {"ED": "tab:red", "ES": "tab:cyan"}


def montage_frames(num_frames: int, n_frames: int, traced: list[int]) -> list[int]:
    """n_frames indices spanning the video evenly, each traced frame replacing its nearest pick."""
    traced = sorted({f for f in traced if 0 <= f < num_frames})
    picks = sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, max(n_frames, len(traced)))})
    for f in traced:
        if f in picks:
            continue
        free = [p for p in picks if p not in traced]
        picks.remove(min(free, key=lambda p: abs(p - f)))
        picks.append(f)
    return sorted(picks)


def _cavity_polygon(rows: np.ndarray) -> np.ndarray:
    """(40, 2) x, y polygon: X1 of chords 1..20 then X2 of chords 20..1 (echonet-format.md)."""
    return np.concatenate([rows[1:, 0:2], rows[1:, 2:4][::-1]])


def _cavity_grey(frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean grey inside the ED cavity per frame: low when the cavity is open, rising at ES."""
    from skimage.draw import polygon

    poly = _cavity_polygon(rows)
    rr, cc = polygon(poly[:, 1], poly[:, 0], shape=frames.shape[1:])
    if len(rr) == 0:
        return np.zeros(len(frames))
    return frames[:, rr, cc].mean(axis=1)


def _draw_tracing(ax, rec: VideoRecord, phase: str, size: tuple[int, int]) -> None:
    from matplotlib.patches import Polygon

    rows = rec.ed_tracing if phase == "ED" else rec.es_tracing
    lm = rec.ed_landmarks if phase == "ED" else rec.es_landmarks
    colour = PHASE_COLOURS[phase]
    ax.add_patch(Polygon(_cavity_polygon(rows), closed=True, fill=True, facecolor=colour,
                         alpha=0.25, edgecolor=colour, linewidth=1.0))
    ax.plot(rows[0, [0, 2]], rows[0, [1, 3]], color="yellow", linewidth=1.0)  # long axis
    px = denormalise(lm, width=size[1], height=size[0])
    ax.scatter(px[2::2, 0], px[2::2, 1], s=5, color="white", linewidths=0, label="side A")
    ax.scatter(px[3::2, 0], px[3::2, 1], s=5, color="orange", linewidths=0, label="side B")
    ax.scatter(*px[0], s=40, marker="^", color="lime", edgecolors="black", linewidths=0.5,
               label="apex", zorder=3)
    ax.scatter(*px[1], s=40, marker="s", color="magenta", edgecolors="black", linewidths=0.5,
               label="base", zorder=3)


def _title(rec: VideoRecord, num_frames: int) -> str:
    vol = (f"EDV {rec.edv:.1f} mL, ESV {rec.esv:.1f} mL" if math.isfinite(rec.edv)
           and math.isfinite(rec.esv) else "EDV/ESV not given")
    text = (f"{rec.file_name}  |  {rec.split}  |  EF {rec.ef:.1f}%  |  {vol}  |  "
            f"{rec.fps:g} FPS, {num_frames} frames")
    if rec.has_tracings and rec.ed_volume_px:
        ef_t = 100.0 * (rec.ed_volume_px - rec.es_volume_px) / rec.ed_volume_px
        text += f"\nED frame {rec.ed_frame}, ES frame {rec.es_frame}; EF from tracings {ef_t:.1f}%"
    else:
        text += "\nno tracings"
    return text


def render_montage(root: Path, file_name: str, out: Path, n_frames: int = 8) -> Path:
    """Write a PNG montage of `file_name` (with or without .avi); returns the path written."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    reader = EchoNet(root)
    rec = reader.record(file_name)
    frames = reader.load_frames(rec)
    num_frames, h, w = frames.shape
    traced = [rec.ed_frame, rec.es_frame] if rec.has_tracings else []
    picks = montage_frames(num_frames, n_frames, traced)
    n_rows = math.ceil(len(picks) / COLUMNS)
    strip = rec.has_tracings
    fig = Figure(figsize=(COLUMNS * 2.4, n_rows * 2.5 + (1.6 if strip else 0) + 0.7), dpi=110)
    grid = fig.add_gridspec(n_rows + (1 if strip else 0), COLUMNS,
                            height_ratios=[1.0] * n_rows + ([0.55] if strip else []))
    for k, idx in enumerate(picks):
        ax = fig.add_subplot(grid[k // COLUMNS, k % COLUMNS])
        ax.imshow(frames[idx], cmap="gray", vmin=0, vmax=255, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        phases = [p for p, f in (("ED", rec.ed_frame), ("ES", rec.es_frame)) if f == idx and strip]
        for phase in phases:
            _draw_tracing(ax, rec, phase, (h, w))
        label = f"frame {idx}" + "".join(f"  {p}" for p in phases)
        ax.set_title(label, fontsize=9, color=PHASE_COLOURS[phases[0]] if phases else "black")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if phases and phases[0] == "ED":
            ax.legend(loc="lower right", fontsize=5, markerscale=0.8, framealpha=0.6)
    if strip:
        ax = fig.add_subplot(grid[n_rows, :])
        ax.plot(np.arange(num_frames), _cavity_grey(frames, rec.ed_tracing), color="black", lw=1)
        for phase, f in (("ED", rec.ed_frame), ("ES", rec.es_frame)):
            ax.axvline(f, color=PHASE_COLOURS[phase], lw=1.2, label=phase)
        ax.set_xlim(0, num_frames - 1)
        ax.set_xlabel("frame", fontsize=8)
        ax.set_ylabel("grey in ED cavity", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(_title(rec, num_frames), fontsize=9)
    fig.tight_layout()
    return _save_atomic(fig, Path(out))


def _save_atomic(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
