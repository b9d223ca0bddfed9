"""The landmark convention shared by the reader, the loss and every exported model.

A VolumeTracings frame has 21 rows of (X1, Y1, X2, Y2) in pixels: row 0 is the LV long axis
(apex to mitral-annulus midpoint, endpoint order not guaranteed), rows 1..20 are chords across
the cavity, perpendicular to the axis, from apex to base. We turn one traced frame into K = 42
points in a *canonical* order so that a network can regress them:

    index 0        apex            (long-axis endpoint nearer to chord 1, the apical one)
    index 1        base            (mitral-annulus midpoint, the other long-axis endpoint)
    index 2 + 2j   chord j side A  (j = 0..19, apex -> base, sorted by projection on the axis)
    index 3 + 2j   chord j side B

Side A is the chord endpoint on the left of the apex->base direction in image coordinates
(x = column right, y = row down), i.e. where cross(base - apex, p - apex) < 0.
Coordinates are (x, y); normalised landmarks divide x by the frame width and y by its height,
so they lie in [0, 1].
"""

from __future__ import annotations

import numpy as np

NUM_CHORDS = 20
NUM_ROWS = NUM_CHORDS + 1
NUM_LANDMARKS = 2 + 2 * NUM_CHORDS  # K per phase


def canonical_landmarks(rows: np.ndarray) -> np.ndarray:
    """(21, 4) tracing rows in pixels -> (42, 2) canonical landmarks in pixels."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape != (NUM_ROWS, 4):
        raise ValueError(f"a tracing needs {NUM_ROWS} rows of 4 coordinates, got {rows.shape}")
    p, q = rows[0, :2], rows[0, 2:]
    chords = rows[1:]
    mids = (chords[:, :2] + chords[:, 2:]) / 2.0
    # Rows 1..20 are listed apex -> base, so the apex is the axis endpoint that sits nearer the
    # first chord and farther from the last (both ends voted, so one odd chord cannot flip it).
    near_p = np.linalg.norm(p - mids[0]) + np.linalg.norm(q - mids[-1])
    near_q = np.linalg.norm(q - mids[0]) + np.linalg.norm(p - mids[-1])
    apex, base = (p, q) if near_p <= near_q else (q, p)
    axis = base - apex
    order = np.argsort((mids - apex) @ axis, kind="stable")
    chords = chords[order]
    a, b = chords[:, :2], chords[:, 2:]
    cross = axis[0] * (a[:, 1] - apex[1]) - axis[1] * (a[:, 0] - apex[0])
    swap = cross > 0
    side_a = np.where(swap[:, None], b, a)
    side_b = np.where(swap[:, None], a, b)
    out = np.empty((NUM_LANDMARKS, 2), dtype=np.float64)
    out[0], out[1] = apex, base
    out[2::2], out[3::2] = side_a, side_b
    return out


def simpson_volume(landmarks: np.ndarray) -> np.ndarray:
    """Single-plane Simpson volume from (..., 42, 2) landmarks, in the cube of their unit.

    V = (pi/4) * (L/20) * sum(d_i^2), with L the long-axis length and d_i the chord lengths.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    length = np.linalg.norm(lm[..., 1, :] - lm[..., 0, :], axis=-1)
    d = np.linalg.norm(lm[..., 2::2, :] - lm[..., 3::2, :], axis=-1)
    return np.pi / 4.0 * (length / NUM_CHORDS) * (d**2).sum(axis=-1)


def simpson_volume_rows(rows: np.ndarray) -> float:
    """Simpson volume (px^3) straight from the 21 tracing rows."""
    rows = np.asarray(rows, dtype=np.float64)
    length = np.hypot(rows[0, 2] - rows[0, 0], rows[0, 3] - rows[0, 1])
    d = np.hypot(rows[1:, 2] - rows[1:, 0], rows[1:, 3] - rows[1:, 1])
    return float(np.pi / 4.0 * (length / NUM_CHORDS) * (d**2).sum())


def normalise(landmarks_px: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(landmarks_px, dtype=np.float64) / np.array([width, height], dtype=np.float64)


def denormalise(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(landmarks, dtype=np.float64) * np.array([width, height], dtype=np.float64)
