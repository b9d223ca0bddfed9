"""Synthetic apical-4-chamber echo videos, written in exactly EchoNet-Dynamic's layout.

The point is a dataset that exercises every consumer of the real one (reader, clip sampler,
Simpson loss, landmark heads, calibration, validation) and that a model must actually learn from:
EF is only visible as the change of the dark cavity's size over the cycle.

Model of the image
------------------
*Probe frame (fixed).* A 90 degree sector with its vertex near row 0, column 57-66; pixels outside
it are exactly 0. Depth attenuation exp(-alpha * r) with a partial time-gain compensation, a
lateral fall-off towards the sector edges, a random overall gain and an additive haze floor
(which, with the faint blood scatter, sets the cavity grey near 15-20).

*Tissue frame (moves).* The heart is drawn once, at end-diastole (ED), as an echogenicity map in
pixel space: LV cavity (a "bullet": rounded apex at the top, widest at about two thirds of the
length, narrowing a little to the mitral annulus near rows 75-90), a speckled myocardial band
around it, RV to the left (thin free wall), both atria below the valve planes, a bright pericardial
rim, bright annulus spots, weak tissue outside the heart and a bright near-field band. The map is
multiplied by a Rayleigh speckle texture (modulus of two smoothed Gaussian fields, elongated
laterally like a real point-spread function), by slow echogenicity heterogeneity and by 0-2 wall
dropouts. Because speckle lives in the tissue frame it moves with the wall, as real speckle does.

*Motion.* The LV is described in its own coordinates (u along the long axis from the apex,
v across it). At contraction c in [0, 1] its length and width are L(c), W(c), interpolated
linearly between ED (c = 0) and ES (c = 1); the apex stays put and the base moves towards it.
Each frame is a backward warp (cv2.remap) of the ED tissue map: inside the cavity the map is the
exact scaling (u, v) -> (u * L_ed / L, v * W_ed / W), so the cavity border at any frame is exactly
|v| = W f(u / L); outside, the border displacement decays exponentially with distance, so the wall
thickens in systole and distant structures barely move. The mitral leaflets are drawn per frame
(closed in systole, open in early and late diastole).

*Cycle.* c(phase) rises smoothly during systole (about 35% of the cycle, 1 - cos), then falls with
a fast early filling (80%) and an atrial kick (20%). The systolic fraction is rounded to a whole
number of frames and the start phase is chosen so that one beat's ED frame (c = 0) and ES frame
(c = 1) both fall exactly on video frames: those two frames are traced.

*Tracing and labels.* The 21 VolumeTracings rows of a traced frame come from that frame's exact
geometry: row 0 the long axis (endpoint order random), rows 1..20 chords at the disk mid-points
(i - 0.5) / 20 of the axis, perpendicular to it, ending on the border. The ES frame's rows come
first and the ED frame's last, as EchoNet-Dynamic's reference loader expects (it takes a video's
first traced frame as ES and its last as ED). With this geometry the
Simpson volume is pi * L * W^2 * mean(f^2), so ES/ED = (L_es / L_ed) * (W_es / W_ed)^2 and we choose
L_es / L_ed from a longitudinal shortening of 18-32% of EF, then W_es / W_ed to hit the drawn EF.
FileList's EDV/ESV are those Simpson volumes (from the rounded coordinates actually written) times
PIXEL_SPACING_CM**3, and its EF is computed from those exact numbers.

*Draws.* Everything for video i comes from default_rng(SeedSequence([seed, i])), in a fixed order
(name, split, parameters, textures, noise), so a dataset is a byte-exact prefix of a larger one
with the same seed and the worker count does not matter.

*Acquisition.* `acquisition="fixed"` renders every video with the neutral probe settings (the look
above); `"varied"` draws each video's gain, TGC, dynamic range, speckle, resolution, depth, sector,
probe rotation and tilt, noise, dropout, shadow and view from its own stream
(echoedge.data.acquisition), so the hearts, textures and FileList labels are those of the fixed
set with the same seed. Geometry settings move the frames and the tracings together; FileList's
EF, EDV and ESV are always the true heart's (a foreshortened view's tracings trace the shorter
cavity the frames show, so their Simpson volumes are smaller; their EF is the same). Each video's
settings are written to Acquisition.csv beside the EchoNet files.

Modules: this one lays out the dataset (`generate_dataset`, `make_video`); `synthetic_heart` draws
a video's parameters and gives the LV's shape, motion and tracings; `synthetic_render` renders the
frames; `synthetic_probe` applies an acquisition; `acquisition` draws and stores the settings.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echoedge.data.acquisition import (
    ACQUISITION_CSV, MODES, AcquisitionSettings, settings_for, write_acquisition_csv,
)
from echoedge.data.landmarks import simpson_volume_rows
from echoedge.data.synthetic_heart import (
    FRAME, PIXEL_SPACING_CM, SPLITS, VideoParams, draw_params_from, tracing_rows, video_rng,
)
from echoedge.data.synthetic_probe import acquired_params, fit_to_heart
from echoedge.data.synthetic_render import render_video
from echoedge.errors import EchoEdgeError

# Bump when the files a seed produces change, so caches keyed on it (echoedge.data.default) are
# regenerated. 2: VolumeTracings ES rows first, ED last; Acquisition.csv.
SYNTH_FORMAT = 2

FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")

_COORD_DECIMALS = 4  # VolumeTracings coordinates as written
_LABEL_DECIMALS = 5  # FileList EF/ESV/EDV as written


# --------------------------------------------------------------------------------------------
# One video end to end, and the dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoRecord:
    """What one rendered video contributes to the CSVs."""

    filelist: tuple[str, ...]
    tracings: tuple[tuple[str, ...], ...]
    ef: float
    split: str
    acquisition: AcquisitionSettings


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def heart_labels(p: VideoParams) -> tuple[float, float, float]:
    """(EF %, ESV mL, EDV mL) as FileList.csv writes them.

    Labels are the true heart's, whatever the acquisition: Simpson volumes of its tracings at the
    neutral depth (identical to the fixed set's), rounded as written. Needs no rendering, so a
    set's labels (a training split's EF mean, say) cost milliseconds per video.
    """
    ml = PIXEL_SPACING_CM**3
    edv = round(simpson_volume_rows(np.round(tracing_rows(p, 0.0), _COORD_DECIMALS)) * ml, _LABEL_DECIMALS)
    esv = round(simpson_volume_rows(np.round(tracing_rows(p, 1.0), _COORD_DECIMALS)) * ml, _LABEL_DECIMALS)
    return round(100.0 * (edv - esv) / edv, _LABEL_DECIMALS), esv, edv


def make_video(seed: int, index: int, videos_dir: Path, acquisition: str = "fixed") -> VideoRecord:
    """Render video `index`, write its AVI under `videos_dir` and return its CSV rows."""
    from echoedge.data.video import write_video

    rng = video_rng(seed, index)
    p = draw_params_from(rng, index)
    acq = fit_to_heart(p, settings_for(acquisition, seed, index))
    shown = acquired_params(p, acq)  # the heart as this acquisition shows it
    frames = render_video(shown, rng, acq)
    write_video(Path(videos_dir) / f"{p.name}.avi", frames, p.fps)

    ef, esv, edv = heart_labels(p)
    filelist = (p.name, _fmt(ef, _LABEL_DECIMALS), _fmt(esv, _LABEL_DECIMALS),
                _fmt(edv, _LABEL_DECIMALS), str(FRAME), str(FRAME), str(p.fps), str(p.frames),
                p.split)
    # Tracings trace what the frames show. ES first, ED last: EchoNet-Dynamic's reference loader
    # (echonet/datasets/echo.py) takes the first traced frame as ES and the last as ED.
    traced = [(np.round(tracing_rows(shown, 1.0), _COORD_DECIMALS), p.es_frame),
              (np.round(tracing_rows(shown, 0.0), _COORD_DECIMALS), p.ed_frame)]
    tracings = tuple(
        (f"{p.name}.avi", *(_fmt(x, _COORD_DECIMALS) for x in row), str(frame))
        for rows, frame in traced
        for row in rows
    )
    return VideoRecord(filelist=filelist, tracings=tracings, ef=ef, split=p.split, acquisition=acq)


def _make_video_job(job: tuple[int, int, str, str]) -> VideoRecord:
    return make_video(job[0], job[1], Path(job[2]), job[3])


def _worker_init() -> None:
    import cv2

    # Each worker is one process per core already; OpenCV's own threads would oversubscribe.
    cv2.setNumThreads(1)


@dataclass
class SynthSummary:
    """What generate_dataset wrote."""

    out: Path
    videos: int
    splits: dict[str, int] = field(default_factory=dict)
    acquisition: str = "fixed"
    views: dict[str, int] = field(default_factory=dict)
    ef_mean: float = 0.0
    ef_sd: float = 0.0
    ef_min: float = 0.0
    ef_max: float = 0.0
    frac_below_50: float = 0.0
    seconds: float = 0.0
    videos_per_second: float = 0.0

    def describe(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        views = ", ".join(f"{v} {k}" for k, v in sorted(self.views.items()))
        return (
            f"wrote {self.videos} synthetic videos to {self.out} ({splits})\n"
            f"acquisition {self.acquisition}" + (f": {views}" if views else "") + "\n"
            f"EF mean {self.ef_mean:.1f} sd {self.ef_sd:.1f} range {self.ef_min:.1f}-{self.ef_max:.1f}, "
            f"{100 * self.frac_below_50:.0f}% below 50\n"
            f"{self.seconds:.1f} s, {self.videos_per_second:.1f} videos/s"
        )


def _check_args(out: Path, videos: int, seed: int, workers: int | None, acquisition: str) -> None:
    if acquisition not in MODES:
        raise EchoEdgeError(f"--acquisition must be one of {', '.join(MODES)}, got {acquisition!r}")
    if int(videos) < 1:
        raise EchoEdgeError(f"--videos must be >= 1, got {videos}")
    if int(seed) < 0:
        raise EchoEdgeError(f"--seed must be >= 0, got {seed}")
    if workers is not None and int(workers) < 1:
        raise EchoEdgeError(f"--workers must be >= 1, got {workers}")
    if out.exists():
        if not out.is_dir():
            raise EchoEdgeError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            raise OutputTaken(f"{out}: folder exists and is not empty; choose a new or empty folder")


class OutputTaken(EchoEdgeError):
    """The output folder is not empty (or another process filled it while this one generated)."""


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished set onto `out`. Two processes may generate the same folder at once
    (two commands filling the default dataset's cache): the first rename wins whole, and the
    second finds the folder taken and says so (OutputTaken), never mixing the two."""
    if out.exists():
        try:
            out.rmdir()  # was empty when checked
        except OSError:
            pass  # filled meanwhile by another process: the rename below fails and says so
    try:
        os.rename(tmp, out)  # atomic; refuses a non-empty target folder (ENOTEMPTY / EEXIST)
    except OSError as e:
        if out.is_dir() and any(out.iterdir()):
            raise OutputTaken(f"{out}: another process filled this folder while this one generated; "
                              "the set there is whole (it was renamed into place)") from None
        raise EchoEdgeError(f"{out}: cannot move the generated set into place ({e.strerror or e})") from None


def _write_csvs(root: Path, records: list[VideoRecord]) -> None:
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FILELIST_COLUMNS)
        w.writerows(r.filelist for r in records)
    with open(root / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRACING_COLUMNS)
        for r in records:
            w.writerows(r.tracings)
    write_acquisition_csv(root / ACQUISITION_CSV, [(r.filelist[0], r.acquisition) for r in records])


def _pool(workers: int):  # -> multiprocessing.pool.Pool
    """A forked worker pool that is safe even when the caller has already used OpenCV.

    A child forked while OpenCV's thread pool is alive inherits its locks but not its threads and
    deadlocks in its first OpenCV call (seen: cv2.setNumThreads hanging in pthread_cond_destroy).
    Dropping OpenCV to one thread joins those threads, so the children fork from a clean state;
    the caller's setting is restored right after. Fork (not forkserver/spawn) also works from
    `python -`, notebooks and scripts without a __main__ guard, and starts in milliseconds.
    """
    import multiprocessing

    import cv2

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return multiprocessing.get_context(method).Pool(workers, initializer=_worker_init)
    finally:
        cv2.setNumThreads(previous)


def _render_all(jobs: list[tuple[int, int, str, str]], workers: int, progress: bool) -> list[VideoRecord]:
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    pool = None
    if workers == 1:
        results = map(_make_video_job, jobs)
    else:
        pool = _pool(workers)
        results = pool.imap(_make_video_job, jobs, chunksize=1)
    bar = (Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
           if progress else nullcontext())
    records: list[VideoRecord] = []
    try:
        with bar:
            task = bar.add_task("synth", total=len(jobs)) if progress else None
            for rec in results:  # imap keeps job order, so the CSVs never depend on timing
                records.append(rec)
                if progress:
                    bar.advance(task)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return records


def generate_dataset(
    out: Path,
    videos: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    acquisition: str = "fixed",
) -> SynthSummary:
    """Write `videos` synthetic videos in EchoNet-Dynamic's layout to the folder `out`.

    The folder must be absent or empty. Everything is written to a temporary sibling first and
    renamed at the end, so an interrupted run leaves no half dataset. Same seed -> same bytes,
    whatever `workers` (default: CPU count); N videos are a prefix of M > N with the same seed.
    `acquisition` is 'fixed' (the neutral look for every video) or 'varied' (per-video settings,
    echoedge.data.acquisition); either way Acquisition.csv records them.
    """
    out = Path(out)
    _check_args(out, videos, seed, workers, acquisition)
    n_workers = max(1, min(int(workers or os.cpu_count() or 1), int(videos)))
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "Videos").mkdir(parents=True)
        jobs = [(int(seed), i, str(tmp / "Videos"), acquisition) for i in range(int(videos))]
        records = _render_all(jobs, n_workers, progress)
        names = [r.filelist[0] for r in records]
        if len(set(names)) != len(names):  # 64-bit names: practically never
            raise EchoEdgeError(f"seed {seed}: two videos drew the same name; use another seed")
        _write_csvs(tmp, records)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    return _summarise(out, records, seconds, acquisition)


def _summarise(out: Path, records: list[VideoRecord], seconds: float, acquisition: str) -> SynthSummary:
    ef = np.array([r.ef for r in records])
    splits = {s: sum(r.split == s for r in records) for s in SPLITS}
    views = {}
    for r in records:
        views[r.acquisition.view] = views.get(r.acquisition.view, 0) + 1
    return SynthSummary(
        out=out, videos=len(records), splits=splits, acquisition=acquisition, views=views,
        ef_mean=float(ef.mean()),
        ef_sd=float(ef.std()), ef_min=float(ef.min()), ef_max=float(ef.max()),
        frac_below_50=float((ef < 50).mean()), seconds=seconds,
        videos_per_second=len(records) / max(seconds, 1e-9),
    )
