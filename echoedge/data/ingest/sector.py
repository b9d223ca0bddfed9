"""Finding the ultrasound sector in a cine, masking everything else, and framing it as EchoNet does.

A scanner's screen carries much besides the image: burned-in text, an ECG trace, colour bars,
depth scales, logos. What tells the B-mode sector apart is that it is grey (R = G = B) and that
its speckle changes from frame to frame, while text, bars and logos are static and ECG traces
are coloured or touch a given pixel only in the few frames the sweep passes over it. So:

1. evidence: pixels that are never saturated in colour, not black on average, and that change
   in at least one frame pair in ten (the 90th percentile of |f[t] - f[t-1]| over t is at least
   MOTION_MIN), so a trace or cursor passing a pixel now and then does not count, while dark
   speckle behind a codec that skips still blocks, or a screen capture that repeats frames,
   still does;
2. a majority (median) filter over a window ~2% of the frame: thin strokes and lines vanish,
   the holes of a dark cavity fill;
3. the largest connected component, filled with its convex hull: a sector (a fan, a trapezoid,
   a rectangle) is convex, and the hull gives back its dark, still corners.

When the source states where the image lies (DICOM's ultrasound region) the search runs only
there. The output follows EchoNet-Dynamic's ConvertDICOMToAVI: crop to the image, make it
square, cv2.resize with cubic interpolation to 112 x 112, pixels outside the sector set to 0
(they used a fixed wedge; we use the sector we found).

cv2 and skimage are imported inside the functions: this module is on the CLI's import path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echoedge.data.ingest.cine import Cine, UnusableInput

# Frames sampled for the evidence (evenly over the cine): enough for stable percentiles, and a
# bound on the memory a long, large cine costs.
SAMPLE_FRAMES = 64
# A pixel is coloured when max(R,G,B) - min(R,G,B) exceeds this in any sampled frame. Codec
# chroma noise on grey speckle stays well below it (measured <= 12 on MJPG and MPEG-4 Part 2 at
# default quality); ECG traces, colour bars and coloured labels are far above it.
CHROMA_MAX = 32
# A pixel moves when |f[t] - f[t-1]| >= MOTION_MIN grey levels in at least a share
# 1 - MOTION_QUANTILE of the frame pairs. Measured on synthetic sectors behind MJPG and MPEG-4
# (tests/test_import_videos.py's sources): quantile 0.75 lost the dark corners behind MPEG-4's
# skipped blocks (crop box 20-36 px off on a 168 px sector), 0.95 let JPEG ringing around the
# sector in; 0.9 and 2 levels put every box within 6 px. An ECG sweep touches a pixel in a few
# frames per pass, far below one in ten.
MOTION_QUANTILE = 0.9
MOTION_MIN = 2
# ...and its mean over time is at least MEAN_MIN: the JPEG/MPEG ringing just outside a sector
# flickers with the speckle but stays near black. Measured on 12 sources (6 seeds x 2 codecs):
# without it the mask grew by 300-2300 px of ring; with 3, 100-330 px, missing at most 300 px.
MEAN_MIN = 3
# The majority filter's window, as a fraction of the frame's shorter side (odd, >= 5 px).
FILTER_FRACTION = 0.02
# Below this share of the search area, what we found is not an image sector.
MIN_AREA_FRACTION = 0.02
MIN_SIDE_PX = 16


@dataclass
class SectorCrop:
    """What the sector finder decided for one cine (all in source pixels unless named _out).

    box: the square crop (x0, y0, side) in source pixels; it may extend past the frame (padded
        with zeros) when the sector is taller than the frame is wide.
    sector_box: the sector's bounding box (x0, y0, x1, y1), exclusive ends.
    area_px / area_fraction: the sector mask's area and its share of the whole source frame.
    frames_kept: frames written (every frame of the cine).
    size: output side (112).
    """

    box: tuple[int, int, int]
    sector_box: tuple[int, int, int, int]
    area_px: int
    area_fraction: float
    frames_kept: int
    size: int


def to_grey(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB or (T, H, W) grey -> (T, H, W) uint8; the channels' rounded mean, as
    `echoedge.data.video.read_video` reads EchoNet's three-channel grey."""
    if frames.ndim == 3:
        return frames
    out = np.empty(frames.shape[:3], np.uint8)
    for t in range(frames.shape[0]):  # frame by frame: a float copy of a long cine is gigabytes
        out[t] = (frames[t].astype(np.uint16).sum(axis=2) * (1 / 3) + 0.5).astype(np.uint8)
    return out


def _sample_index(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, SAMPLE_FRAMES)).round().astype(int))


def sector_evidence(frames: np.ndarray) -> np.ndarray:
    """Boolean (H, W): grey pixels that keep changing over the cine (steps 1 of the module doc)."""
    import cv2

    idx = _sample_index(frames.shape[0])
    sample = frames[idx]
    grey = to_grey(sample)
    if sample.ndim == 4:
        coloured = np.zeros(sample.shape[1:3], bool)
        for f in sample:
            chroma = f.max(axis=2) - f.min(axis=2)  # uint8: max >= min, no wrap-around
            coloured |= chroma > CHROMA_MAX
    else:
        coloured = np.zeros(sample.shape[1:3], bool)
    diffs = np.stack([cv2.absdiff(grey[k], grey[k - 1]) for k in range(1, len(grey))])
    # the quantile over time by np.partition (no full sort; diffs is (T-1, H, W) uint8)
    q = int(round(MOTION_QUANTILE * (len(diffs) - 1)))
    motion = np.partition(diffs, q, axis=0)[q]
    bright = grey.mean(axis=0, dtype=np.float32) >= MEAN_MIN
    return (motion >= MOTION_MIN) & bright & ~coloured


def _majority(mask: np.ndarray) -> np.ndarray:
    import cv2

    k = max(5, int(round(FILTER_FRACTION * min(mask.shape))) | 1)
    return cv2.medianBlur(mask.astype(np.uint8) * 255, k) > 127


def find_sector(cine: Cine) -> np.ndarray:
    """Boolean (H, W) sector mask of the cine; UnusableInput when there is none."""
    import cv2
    from skimage.morphology import convex_hull_image

    frames = cine.frames
    h, w = frames.shape[1:3]
    if frames.shape[0] < 2:
        raise UnusableInput(cine.source, "a single frame: nothing moves, no sector to find")
    x0, y0, x1, y1 = _search_area(cine)
    evidence = np.zeros((h, w), bool)
    evidence[y0:y1, x0:x1] = sector_evidence(frames[:, y0:y1, x0:x1])
    evidence = _majority(evidence)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(evidence.astype(np.uint8), connectivity=8)
    search_area = (x1 - x0) * (y1 - y0)
    if count < 2:
        raise UnusableInput(cine.source, "no ultrasound sector found (no grey image that changes "
                            "over time; a still frame or a colour-only view?)")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    bw, bh = stats[biggest, cv2.CC_STAT_WIDTH], stats[biggest, cv2.CC_STAT_HEIGHT]
    mask = convex_hull_image(labels == biggest)
    share = float(mask.sum()) / search_area
    if share < MIN_AREA_FRACTION or min(bw, bh) < MIN_SIDE_PX:
        raise UnusableInput(cine.source, f"no ultrasound sector found (the largest moving grey "
                            f"area is {bw}x{bh} px, {100 * share:.1f}% of the image)")
    return mask


def _search_area(cine: Cine) -> tuple[int, int, int, int]:
    h, w = cine.frames.shape[1:3]
    if cine.region is None:
        return 0, 0, w, h
    x0, y0, x1, y1 = (int(v) for v in cine.region)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < MIN_SIDE_PX or y1 - y0 < MIN_SIDE_PX:
        raise UnusableInput(cine.source, f"the stated ultrasound region {cine.region} leaves "
                            f"{max(0, x1 - x0)}x{max(0, y1 - y0)} px of the {w}x{h} frame")
    return x0, y0, x1, y1


def square_box(mask: np.ndarray, square: str = "depth") -> tuple[int, int, int]:
    """The square crop (x0, y0, side) around a sector mask.

    "depth" (default): side = the sector's height, centred on it horizontally. For the usual fan,
    wider than deep, this is EchoNet-Dynamic's framing (their notebook centre-crops the image to
    its height): the whole depth, the fan's far left and right tips cut, so hearts come out at
    the scale the model learnt. "whole": side = the longer of width and height, the whole sector
    kept, smaller in the frame.
    """
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    if square == "depth":
        side = y1 - y0
    elif square == "whole":
        side = max(x1 - x0, y1 - y0)
    else:
        raise ValueError(f"square must be 'depth' or 'whole', got {square!r}")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(np.floor(cx - side / 2 + 0.5)), int(np.floor(cy - side / 2 + 0.5)), side


def _crop(img: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """img[y0:y0+side, x0:x0+side] with zeros where the box leaves the image."""
    x0, y0, side = box
    h, w = img.shape[:2]
    out = np.zeros((side, side), img.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def crop_frames(frames: np.ndarray, mask: np.ndarray, box: tuple[int, int, int],
                size: int = 112) -> np.ndarray:
    """Grey (T, size, size) uint8: each frame cropped to `box`, resized with cubic interpolation
    (EchoNet's cv2.INTER_CUBIC), and zero outside the resized sector mask."""
    import cv2

    # The mask resized with area averaging and cut at half: its border lands where the frame's does.
    small = cv2.resize(_crop(mask.astype(np.float32), box), (size, size), interpolation=cv2.INTER_AREA)
    keep = small >= 0.5
    out = np.empty((frames.shape[0], size, size), np.uint8)
    grey_all = frames.ndim == 3
    for t in range(frames.shape[0]):
        grey = frames[t] if grey_all else to_grey(frames[t:t + 1])[0]
        out[t] = cv2.resize(_crop(grey, box), (size, size), interpolation=cv2.INTER_CUBIC)
    out[:, ~keep] = 0
    return out


def crop_sector(cine: Cine, size: int = 112, square: str = "depth") -> tuple[np.ndarray, SectorCrop]:
    """The cine's sector, masked, cropped square and resized: ((T, size, size) uint8, decisions)."""
    mask = find_sector(cine)
    box = square_box(mask, square)
    ys, xs = np.nonzero(mask)
    frames = crop_frames(cine.frames, mask, box, size)
    h, w = mask.shape
    area = int(mask.sum())
    crop = SectorCrop(box=box, sector_box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                      area_px=area, area_fraction=area / float(h * w), frames_kept=int(frames.shape[0]),
                      size=size)
    return frames, crop


__all__ = ["SectorCrop", "crop_frames", "crop_sector", "find_sector", "sector_evidence",
           "square_box", "to_grey"]
