"""Applying an acquisition (echoedge.data.acquisition) to a synthetic heart's rendering.

Three places, each skipped where the setting is neutral so the neutral look stays byte-identical:

- *Geometry* (`acquired_params`): depth (zoom), probe rotation and tilt, the view and the sector
  width change the `VideoParams` the heart is drawn from, so the frames and the tracings (which
  come from the same parameters) stay in register. Zooming scales the anatomy about the sector
  vertex rather than resampling finished frames: the tissue beyond the neutral frame is drawn,
  not mirrored in.
- *Tissue* (`speckle_power`, `lateral_dropout`): speckle contrast and an extra dropout on the mid
  lateral wall live in the ED tissue map, so they move with the wall as real ones do.
- *Probe* (`ProbeDisplay`): a rib/lung shadow and the noise floor act on the received echo; the
  point-spread blur acts along and across the beam (in polar coordinates about the vertex, so the
  lateral blur is a constant angle and its width in pixels grows with depth, as a diverging beam's
  does); gain, TGC and dynamic range act last, as the display's log compression does.

The display model takes the neutral frames' grey levels as a log-compressed display at
NEUTRAL.dynamic_range_db (55 dB): grey g is an echo level of DR0 * (g / 255 - 1) dB below white.
Gain and TGC add dB to that level; a dynamic range of DR shows it on 0..255 as
255 * (1 + level / DR). This is a modelling choice (the generator's grey is not literally a
log-compressed envelope), documented in docs/acquisition.md.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from echoedge.data.acquisition import NEUTRAL, NEUTRAL_DEPTH_CM, AcquisitionSettings
from echoedge.data.synthetic_heart import FRAME, VideoParams, axes, cavity_profile

# How far a bad view is off at severity 1 (judgement; docs/acquisition.md): a foreshortened cut
# misses the true apex (shorter, rounder LV), an off-axis cut misses the LV's widest plane
# (narrower LV, more RV).
FORESHORTEN_LENGTH = 0.30
FORESHORTEN_BLUNT = 0.45
OFF_AXIS_WIDTH = 0.25
OFF_AXIS_RV = 0.40


def zoom(acq: AcquisitionSettings) -> float:
    """Anatomy size in pixels relative to the neutral depth (< 1 when the display is deeper)."""
    return NEUTRAL_DEPTH_CM / acq.depth_cm


def acquired_params(p: VideoParams, acq: AcquisitionSettings) -> VideoParams:
    """The heart as this acquisition shows it: the parameters frames and tracings are drawn from."""
    changes: dict[str, object] = {}
    length, width, blunt = p.length_ed, p.width_ed, p.bluntness
    if acq.view == "foreshortened":
        length *= 1.0 - FORESHORTEN_LENGTH * acq.view_severity
        blunt *= 1.0 - FORESHORTEN_BLUNT * acq.view_severity
    elif acq.view == "off-axis":
        width *= 1.0 - OFF_AXIS_WIDTH * acq.view_severity
        changes["rv_scale"] = 1.0 + OFF_AXIS_RV * acq.view_severity
    if acq.tilt_deg:
        # An elevation tilt cuts the long axis obliquely: it shows shorter by cos(tilt).
        length *= math.cos(math.radians(acq.tilt_deg))
    apex = np.asarray(p.apex, dtype=np.float64)
    vertex = np.asarray(p.vertex, dtype=np.float64)
    wall = p.wall
    if acq.depth_cm != NEUTRAL.depth_cm:
        z = zoom(acq)
        apex = vertex + (apex - vertex) * z
        length, width, wall = length * z, width * z, wall * z
        changes["anatomy_scale"] = z
    tilt = p.tilt
    if acq.rotation_deg:
        t = math.radians(acq.rotation_deg)
        d = apex - vertex
        # Same sense as VideoParams.tilt: a positive angle swings the heart (and its base) right.
        apex = vertex + np.array([d[0] * math.cos(t) + d[1] * math.sin(t),
                                  -d[0] * math.sin(t) + d[1] * math.cos(t)])
        tilt = p.tilt + t
    if acq.sector_deg != NEUTRAL.sector_deg:
        changes["sector_deg"] = float(acq.sector_deg)
    for key, new, old in (("length_ed", length, p.length_ed), ("width_ed", width, p.width_ed),
                          ("bluntness", blunt, p.bluntness), ("wall", wall, p.wall),
                          ("tilt", tilt, p.tilt)):
        if new != old:
            changes[key] = float(new)
    if not np.array_equal(apex, np.asarray(p.apex)):
        changes["apex"] = (float(apex[0]), float(apex[1]))
    return dataclasses.replace(p, **changes) if changes else p


SECTOR_MARGIN_DEG = 5.0  # a narrowed sector keeps this much room beside the LV's tracing


def fit_to_heart(p: VideoParams, acq: AcquisitionSettings) -> AcquisitionSettings:
    """`acq` with its sector widened where the drawn one would cut off part of the LV.

    A user narrows the sector only as far as the LV allows. The drawn width and rotation are
    independent of the heart, so now and then they would put part of the LV outside the image,
    leaving a tracing on nothing (measured: 6 of 2000 traced frames of seed 0). Keeping a margin
    widens about 4% of the varied videos' sectors.
    """
    if acq.sector_deg >= 90.0:
        return acq
    from echoedge.data.synthetic_heart import tracing_rows

    shown = acquired_params(p, acq)
    rows = tracing_rows(shown, 0.0)  # ED: the largest cavity
    pts = np.concatenate([rows[:, 0:2], rows[:, 2:4]]) - np.asarray(shown.vertex)
    widest = float(np.degrees(np.abs(np.arctan2(pts[:, 0], np.maximum(pts[:, 1], 1e-6)))).max())
    needed = math.ceil(2.0 * (widest + SECTOR_MARGIN_DEG) * 1000.0) / 1000.0  # CSV precision
    if needed <= acq.sector_deg:
        return acq
    return dataclasses.replace(acq, sector_deg=min(90.0, needed))


# --------------------------------------------------------------------------------------------
# Tissue
# --------------------------------------------------------------------------------------------


def speckle_power(speckle: np.ndarray, acq: AcquisitionSettings) -> np.ndarray:
    """Speckle with its contrast raised to `acq.speckle` (mean kept at 1)."""
    if acq.speckle == NEUTRAL.speckle:
        return speckle
    out = np.power(np.maximum(speckle, 0.0), np.float32(acq.speckle))
    return (out / out.mean()).astype(np.float32)


def lateral_dropout(p: VideoParams, acq: AcquisitionSettings, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Multiplicative echo loss on the mid lateral wall, where it runs along the beam; None if off."""
    if acq.dropout <= 0.0:
        return None
    a, n = axes(p.tilt)
    s = 0.55
    off = p.width_ed * float(cavity_profile(np.array([s]), p)[0]) + 0.5 * p.wall
    cx, cy = np.asarray(p.apex) + s * p.length_ed * a + off * n
    radius = 7.0 * p.anatomy_scale
    return 1.0 - acq.dropout * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))


# --------------------------------------------------------------------------------------------
# Probe and display
# --------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float) -> np.ndarray:
    import cv2

    if sigma < 0.05:
        return np.ones((1, 1), np.float32)
    return cv2.getGaussianKernel(2 * math.ceil(3.0 * sigma) + 1, sigma, cv2.CV_32F)


class ProbeDisplay:
    """Everything of an acquisition that acts on the rendered echo, precomputed per video."""

    _RADII = 160  # polar samples along the beam (~0.8 px each)
    _ANGLES = 224  # polar samples across the sector (< 1 px apart at the sector's bottom)

    def __init__(self, p: VideoParams, acq: AcquisitionSettings, mask: np.ndarray) -> None:
        self.acq = acq
        self.mask = mask.astype(np.float32)
        t = np.arange(FRAME, dtype=np.float64)  # pixel centres, as synthetic_render._grid(1)
        x, y = np.meshgrid(t, t)
        dx, dy = x - p.vertex[0], y - p.vertex[1]
        self.depth_px = np.hypot(dx, dy)
        self.angle = np.arctan2(dx, np.maximum(dy, 1e-6))
        self.px_per_cm = 1.0 / acq.pixel_spacing_cm
        self._polar = self._polar_maps(p) if acq.lateral_blur_deg > 0 or acq.axial_blur_mm > 0 else None

    # -- the received echo ---------------------------------------------------------------------

    def echo_gain(self) -> np.ndarray | None:
        """Multiplicative shadow on the echo (not on the noise), or None without one."""
        acq = self.acq
        if acq.shadow_strength <= 0.0:
            return None
        off = (np.degrees(self.angle) - acq.shadow_angle_deg) / max(acq.shadow_width_deg, 1e-3)
        # A rib shadow starts at the rib, 1-2 cm below the skin, and runs to the bottom.
        start = np.clip((self.depth_px / self.px_per_cm - 1.0) / 1.0, 0.0, 1.0)
        return (1.0 - acq.shadow_strength * np.exp(-0.5 * off**2) * start).astype(np.float32)

    def floor_gain(self) -> float:
        return float(self.acq.noise_floor)

    # -- point-spread blur ---------------------------------------------------------------------

    def _polar_maps(self, p: VideoParams) -> tuple[np.ndarray, ...]:
        acq = self.acq
        half = math.radians(p.sector_deg / 2.0 + 4.0)  # a margin of zeros beyond the edges
        r_max = p.radius + 4.0
        dr, dt = r_max / (self._RADII - 1), 2.0 * half / (self._ANGLES - 1)
        theta, r = np.meshgrid(-half + np.arange(self._ANGLES) * dt, np.arange(self._RADII) * dr)
        to_x = (p.vertex[0] + r * np.sin(theta)).astype(np.float32)
        to_y = (p.vertex[1] + r * np.cos(theta)).astype(np.float32)
        back_x = ((self.angle + half) / dt).astype(np.float32)
        back_y = (self.depth_px / dr).astype(np.float32)
        k_lat = _gaussian_kernel(math.radians(acq.lateral_blur_deg) / dt)
        k_ax = _gaussian_kernel(acq.axial_blur_mm / 10.0 * self.px_per_cm / dr)
        return to_x, to_y, back_x, back_y, k_lat, k_ax

    def blur(self, frame: np.ndarray) -> np.ndarray:
        """The frame seen through the wider point-spread function (in place where possible)."""
        if self._polar is None:
            return frame
        import cv2

        to_x, to_y, back_x, back_y, k_lat, k_ax = self._polar
        polar = cv2.remap(frame, to_x, to_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        polar = cv2.sepFilter2D(polar, -1, k_lat, k_ax, borderType=cv2.BORDER_REFLECT)
        out = cv2.remap(polar, back_x, back_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return out * self.mask

    # -- display: gain, TGC, dynamic range -----------------------------------------------------

    def display(self) -> tuple[np.float32, np.ndarray] | None:
        """(scale, offset map): displayed grey = scale * grey + offset; None when neutral."""
        acq = self.acq
        if (acq.gain_db == NEUTRAL.gain_db and acq.tgc_db_per_cm == NEUTRAL.tgc_db_per_cm
                and acq.dynamic_range_db == NEUTRAL.dynamic_range_db):
            return None
        dr0, dr = NEUTRAL.dynamic_range_db, acq.dynamic_range_db
        level = acq.gain_db + acq.tgc_db_per_cm * self.depth_px / self.px_per_cm
        offset = 255.0 * (1.0 - dr0 / dr) + 255.0 * level / dr
        return np.float32(dr0 / dr), (offset * self.mask).astype(np.float32)


__all__ = ["ProbeDisplay", "acquired_params", "fit_to_heart", "lateral_dropout", "speckle_power", "zoom"]
