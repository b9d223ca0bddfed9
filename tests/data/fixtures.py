"""Small EchoNet-layout folders for the data tests: hand-written CSV rows and tiny AVIs.

Each video shows a dark elliptical "cavity" on speckle inside a 90-degree sector; the cavity is
largest at the ED frame and smallest at the ES frame, and the tracings are that ellipse's long
axis and 20 perpendicular chords, so tracings, volumes and pictures agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoedge.data.video import write_video

FILELIST_HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"
TRACINGS_HEADER = "FileName,X1,Y1,X2,Y2,Frame"


def ellipse_rows(a: float, b: float, centre: tuple[float, float] = (56.0, 50.0),
                 angle_deg: float = 0.0, chords: int = 20) -> np.ndarray:
    """(1 + chords, 4) tracing of an ellipse: row 0 the long axis (apex -> base, semi-axis a),
    then chords perpendicular to it at the disk midpoints, apex to base (half-width from b).

    angle_deg tilts the axis from straight down (+y) towards +x.
    """
    t = np.radians(angle_deg)
    u = np.array([np.sin(t), np.cos(t)])  # apex -> base direction
    n = np.array([np.cos(t), -np.sin(t)])  # perpendicular
    c = np.asarray(centre, dtype=np.float64)
    apex, base = c - a * u, c + a * u
    rows = [np.concatenate([apex, base])]
    h = 2 * a / chords
    for i in range(chords):
        s = -a + (i + 0.5) * h
        half = b * np.sqrt(max(1 - (s / a) ** 2, 0.0))
        mid = c + s * u
        rows.append(np.concatenate([mid - half * n, mid + half * n]))
    return np.array(rows)


@dataclass
class FixtureVideo:
    """One video of a fixture dataset and how to (mis)write it."""

    name: str
    split: str = "TRAIN"  # written verbatim, so " train " tests normalisation
    edv: float = 100.0
    esv: float = 40.0
    ef_cell: str | None = None  # None: 100*(EDV-ESV)/EDV
    num_frames: int = 72
    fps: float = 50.0
    ed_frame: int = 10
    es_frame: int = 26
    size: tuple[int, int] = (112, 112)  # (height, width) of the AVI
    listed_size: tuple[int, int] | None = None  # FrameHeight, FrameWidth in FileList (default: size)
    listed_with_avi: bool = False
    traced: tuple[str, ...] = ("ED", "ES")
    es_first: bool = False  # write the ES frame's rows before the ED frame's
    avi: str = "ok"  # "ok", "missing" or "corrupt"

    def geometry(self, phase: str) -> tuple[float, float, tuple[float, float]]:
        """(a, b, centre) of the cavity ellipse in this video's pixels."""
        h, w = self.size
        scale = 1.0 if phase == "ED" else 0.82
        return 0.27 * h * scale, 0.13 * w * (scale if phase == "ED" else 0.75), (0.5 * w, 0.45 * h)

    def tracing(self, phase: str) -> np.ndarray:
        a, b, c = self.geometry(phase)
        return ellipse_rows(a, b, c)

    def frame_of(self, phase: str) -> int:
        return self.ed_frame if phase == "ED" else self.es_frame


def video_frames(v: FixtureVideo, seed: int = 0) -> np.ndarray:
    """uint8 (F, H, W): speckled sector with a dark cavity breathing between the ED and ES shapes."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = v.size
    yy, xx = np.mgrid[0:h, 0:w]
    # 90-degree sector with its vertex at the top, as in EchoNet videos.
    sector = np.abs(np.arctan2(xx - 0.6 * w, yy + 1e-6)) <= np.pi / 4
    a_ed, b_ed, c = v.geometry("ED")
    a_es, b_es, _ = v.geometry("ES")
    cycle = max(2 * abs(v.es_frame - v.ed_frame), 2)
    frames = np.empty((v.num_frames, h, w), dtype=np.uint8)
    for t in range(v.num_frames):
        s = 0.5 * (1 + np.cos(2 * np.pi * (t - v.ed_frame) / cycle))  # 1 at ED, 0 at ES
        img = rng.integers(70, 200, size=(h, w)).astype(np.uint8)
        axes = (int(round(b_es + s * (b_ed - b_es))), int(round(a_es + s * (a_ed - a_es))))
        cv2.ellipse(img, (int(round(c[0])), int(round(c[1]))), axes, 0, 0, 360, 18, thickness=-1)
        img[~sector] = 0
        frames[t] = img
    return frames


def filelist_line(v: FixtureVideo) -> str:
    ef = v.ef_cell if v.ef_cell is not None else f"{100 * (v.edv - v.esv) / v.edv:.4f}"
    lh, lw = v.listed_size or v.size
    name = v.name + (".avi" if v.listed_with_avi else "")
    return f"{name},{ef},{v.esv:g},{v.edv:g},{lh},{lw},{v.fps:g},{v.num_frames},{v.split}"


def tracing_lines(v: FixtureVideo) -> list[str]:
    phases = [p for p in (("ES", "ED") if v.es_first else ("ED", "ES")) if p in v.traced]
    out = []
    for phase in phases:
        for x1, y1, x2, y2 in v.tracing(phase):
            out.append(f"{v.name}.avi,{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{v.frame_of(phase)}")
    return out


def write_dataset(root: Path, videos: list[FixtureVideo], tracings: bool = True) -> Path:
    root = Path(root)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    write_lines(root / "FileList.csv", [FILELIST_HEADER] + [filelist_line(v) for v in videos])
    if tracings:
        write_lines(root / "VolumeTracings.csv",
                    [TRACINGS_HEADER] + [ln for v in videos for ln in tracing_lines(v)])
    for i, v in enumerate(videos):
        path = root / "Videos" / f"{v.name}.avi"
        if v.avi == "ok":
            write_video(path, video_frames(v, seed=i), v.fps)
        elif v.avi == "corrupt":
            path.write_bytes(np.random.default_rng(i).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return root


def standard_videos() -> list[FixtureVideo]:
    """A clean little set: 4 TRAIN, 2 VAL, 2 TEST, every video traced."""
    splits = ["TRAIN"] * 4 + ["VAL"] * 2 + ["TEST"] * 2
    return [FixtureVideo(name=f"0X{i:04X}", split=sp, edv=90.0 + 5 * i, esv=30.0 + 3 * i,
                         ed_frame=6 + i, es_frame=22 + i)
            for i, sp in enumerate(splits)]


def write_standard(root: Path) -> Path:
    return write_dataset(root, standard_videos())


def write_lines(path: Path, lines: list[str]) -> None:
    Path(path).write_text("\n".join(lines) + "\n")


def read_lines(path: Path) -> list[str]:
    return Path(path).read_text().splitlines()


def edit_line(path: Path, lineno: int, new: str | None) -> None:
    """Replace (or with None delete) 1-based line `lineno` of a text file."""
    lines = read_lines(path)
    if new is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new
    write_lines(path, lines)


def find_line(path: Path, *needles: str) -> int:
    """1-based number of the first line containing every needle."""
    for i, line in enumerate(read_lines(path), start=1):
        if all(n in line for n in needles):
            return i
    raise AssertionError(f"no line of {path} contains {needles}")


def derive_dataset(src: Path, dst: Path, splits: tuple[str, ...] | None = None,
                   untraced: range | tuple[int, ...] | None = (), split_column: bool = True) -> Path:
    """A copy of the EchoNet-layout folder `src` reshaped like a user's own data.

    splits: keep only the FileList rows of these splits (None: all); untraced: drop the tracing
    rows of the kept videos at these positions (None: no VolumeTracings.csv at all); split_column: False
    writes FileList.csv without its Split column.
    """
    import csv
    import shutil

    with open(src / "FileList.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if splits is None or r["Split"] in splits]
    names = [r["FileName"].removesuffix(".avi") for r in rows]
    (dst / "Videos").mkdir(parents=True)
    for n in names:
        shutil.copy2(src / "Videos" / f"{n}.avi", dst / "Videos" / f"{n}.avi")
    columns = [c for c in rows[0] if split_column or c != "Split"]
    with open(dst / "FileList.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if untraced is not None:
        keep = {n for i, n in enumerate(names) if i not in untraced}
        lines = read_lines(src / "VolumeTracings.csv")
        write_lines(dst / "VolumeTracings.csv",
                    lines[:1] + [ln for ln in lines[1:] if ln.split(",")[0].removesuffix(".avi") in keep])
    return dst
