"""How a synthetic video was acquired: the probe's settings and the view, drawn per video.

Real point-of-care clips differ in gain, time-gain compensation, dynamic range, speckle
processing, resolution, depth, sector width, probe position and artefacts; a model tested only on
one look hides how fragile it is. `AcquisitionSettings` holds one video's values; `NEUTRAL` is the
look the generator always had (it renders byte-identical frames); `draw_acquisition` draws the
"varied" settings from ranges that real scanners produce (docs/acquisition.md gives each range and
why). The settings are written beside the EchoNet files as `Acquisition.csv`, one row per video
keyed by FileName, and read back by `read_acquisition` (None for a folder without one, such as a
real EchoNet-Dynamic download).

The renderer applies them (echoedge.data.synthetic_probe); this module only holds, draws and
stores them, so readers need neither OpenCV nor the generator.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from echoedge.errors import DataError

ACQUISITION_CSV = "Acquisition.csv"
MODES = ("fixed", "varied")
VIEWS = ("apical-4-chamber", "foreshortened", "off-axis")

# The neutral display depth: EchoNet's 112-pixel frame at the generator's 0.126 cm per pixel
# (synthetic_heart.PIXEL_SPACING_CM; a literal here so it round-trips through the CSV exactly and
# readers need not import the generator).
NEUTRAL_DEPTH_CM = 14.112

_DECIMALS = 3  # every drawn value is rounded to what Acquisition.csv stores, so it round-trips


@dataclass(frozen=True)
class AcquisitionSettings:
    """One video's acquisition. The defaults are the neutral (fixed) look.

    Units are the scanner's: dB for gain and dynamic range, cm for depth, degrees for angles.
    """

    view: str = "apical-4-chamber"  # one of VIEWS
    view_severity: float = 0.0  # 0 for apical-4-chamber; 0.5-1 how far a bad view is off
    gain_db: float = 0.0  # overall receive gain, added to every echo level
    tgc_db_per_cm: float = 0.0  # time-gain compensation slope: extra gain per cm of depth
    dynamic_range_db: float = 55.0  # log-compression window shown as black..white
    speckle: float = 1.0  # speckle contrast exponent: < 1 smoothed (speckle reduction), > 1 harsher
    lateral_blur_deg: float = 0.0  # extra beam width (Gaussian sigma, degrees): blur grows with depth
    axial_blur_mm: float = 0.0  # extra pulse length (Gaussian sigma along the beam, mm)
    depth_cm: float = NEUTRAL_DEPTH_CM  # display depth: the frame's height in cm (zoom)
    sector_deg: float = 90.0  # sector opening angle
    rotation_deg: float = 0.0  # probe rocked in the scan plane: the heart swings about the vertex
    tilt_deg: float = 0.0  # probe tilted out of the plane: the LV's long axis shows shorter
    noise_floor: float = 1.0  # electronic noise and haze, times the neutral level
    dropout: float = 0.0  # 0-1 echo loss on the mid lateral wall (wall parallel to the beam)
    shadow_strength: float = 0.0  # 0-1 echo loss in a rib/lung shadow running from the probe
    shadow_angle_deg: float = 0.0  # the shadow's centre, degrees from the sector's centre line
    shadow_width_deg: float = 0.0  # the shadow's angular half-width (Gaussian sigma)

    def is_neutral(self) -> bool:
        return self == NEUTRAL

    @property
    def pixel_spacing_cm(self) -> float:
        """Centimetres per pixel of a 112-pixel frame at this depth."""
        return self.depth_cm / 112.0


NEUTRAL = AcquisitionSettings()

# Column order of Acquisition.csv after FileName: the dataclass's fields, view first.
SETTING_NAMES = tuple(f.name for f in fields(AcquisitionSettings))
NUMERIC_NAMES = tuple(n for n in SETTING_NAMES if n != "view")
CSV_COLUMNS = ("FileName",) + SETTING_NAMES

# Hard limits a readable file must respect (what the renderer can apply), wider than the drawn
# ranges: a user may write their own settings. (low, high), both inclusive.
LIMITS: dict[str, tuple[float, float]] = {
    "view_severity": (0.0, 1.0), "gain_db": (-40.0, 40.0), "tgc_db_per_cm": (-5.0, 5.0),
    "dynamic_range_db": (10.0, 120.0), "speckle": (0.0, 3.0), "lateral_blur_deg": (0.0, 10.0),
    "axial_blur_mm": (0.0, 20.0), "depth_cm": (4.0, 40.0), "sector_deg": (10.0, 120.0),
    "rotation_deg": (-45.0, 45.0), "tilt_deg": (0.0, 60.0), "noise_floor": (0.0, 10.0),
    "dropout": (0.0, 1.0), "shadow_strength": (0.0, 1.0), "shadow_angle_deg": (-60.0, 60.0),
    "shadow_width_deg": (0.0, 60.0),
}

# View probabilities of the varied mode: about 5% bad views (judgement; docs/acquisition.md).
VIEW_PROBS = (0.95, 0.03, 0.02)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def acquisition_rng(seed: int, index: int) -> np.random.Generator:
    """The acquisition stream of video `index`: separate from the heart's (synthetic_heart.video_rng),
    so a varied set shows the same hearts, textures and labels as the fixed set with that seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, 0xAC9]))


def _r(x: float) -> float:
    return round(float(x), _DECIMALS)


def draw_acquisition(seed: int, index: int) -> AcquisitionSettings:
    """The varied-mode settings of video `index` of the dataset with `seed` (deterministic)."""
    rng = acquisition_rng(seed, index)
    # The draw order is part of the on-disk format: changing it changes every varied dataset.
    u = rng.random()
    view = VIEWS[0] if u < VIEW_PROBS[0] else VIEWS[1] if u < VIEW_PROBS[0] + VIEW_PROBS[1] else VIEWS[2]
    severity = float(rng.uniform(0.5, 1.0))
    gain = float(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0))
    tgc = float(np.clip(rng.normal(0.0, 0.2), -0.4, 0.4))
    dyn = float(np.clip(rng.normal(55.0, 5.0), 45.0, 65.0))
    speckle = float(rng.uniform(0.7, 1.3))
    lateral = float(rng.uniform(0.0, 0.8))
    axial = float(rng.uniform(0.0, 0.8))
    depth = float(rng.uniform(13.0, 19.0))
    sector = 90.0 if rng.random() < 0.6 else float(rng.uniform(66.0, 90.0))
    rotation = float(np.clip(rng.normal(0.0, 3.5), -7.0, 7.0))
    tilt = float(min(abs(rng.normal(0.0, 7.0)), 20.0))
    noise = float(np.clip(np.exp(rng.normal(0.0, 0.3)), 0.5, 2.0))
    dropout = float(rng.uniform(0.3, 0.8)) if rng.random() < 0.3 else 0.0
    has_shadow = rng.random() < 0.25
    shadow = float(rng.uniform(0.3, 0.8))
    # The shadow stays inside the sector, its edge at least 6 degrees from the sector's edge.
    shadow_angle = float(rng.uniform(-1.0, 1.0)) * (sector / 2.0 - 6.0)
    shadow_width = float(rng.uniform(3.0, 8.0))
    return AcquisitionSettings(
        view=view, view_severity=_r(severity if view != VIEWS[0] else 0.0), gain_db=_r(gain),
        tgc_db_per_cm=_r(tgc), dynamic_range_db=_r(dyn), speckle=_r(speckle),
        lateral_blur_deg=_r(lateral), axial_blur_mm=_r(axial), depth_cm=_r(depth),
        sector_deg=_r(sector), rotation_deg=_r(rotation), tilt_deg=_r(tilt), noise_floor=_r(noise),
        dropout=_r(dropout), shadow_strength=_r(shadow if has_shadow else 0.0),
        shadow_angle_deg=_r(shadow_angle if has_shadow else 0.0),
        shadow_width_deg=_r(shadow_width if has_shadow else 0.0),
    )


def settings_for(mode: str, seed: int, index: int) -> AcquisitionSettings:
    """Video `index`'s settings in `mode` ('fixed': NEUTRAL; 'varied': draw_acquisition)."""
    if mode == "fixed":
        return NEUTRAL
    if mode == "varied":
        return draw_acquisition(seed, index)
    raise ValueError(f"acquisition mode must be one of {', '.join(MODES)}, got {mode!r}")


# --------------------------------------------------------------------------------------------
# Acquisition.csv
# --------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    return value if isinstance(value, str) else f"{float(value):.{_DECIMALS}f}"


def write_acquisition_csv(path: Path, rows: list[tuple[str, AcquisitionSettings]]) -> None:
    """Write Acquisition.csv (FileName without .avi, then one column per setting), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(CSV_COLUMNS)
            for name, s in rows:
                w.writerow([name, *(_cell(v) for v in asdict(s).values())])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parse_row(path: Path, line: int, row: dict[str, str]) -> tuple[str, AcquisitionSettings]:
    name = (row.get("FileName") or "").strip()
    if not name:
        raise DataError(f"{path}: line {line}: empty FileName")
    if name.lower().endswith(".avi"):
        name = name[:-4]
    view = (row.get("view") or "").strip()
    if view not in VIEWS:
        raise DataError(f"{path}: line {line}: view {view!r} is not one of {', '.join(VIEWS)}")
    values: dict[str, float] = {}
    for key in NUMERIC_NAMES:
        text = (row.get(key) or "").strip()
        try:
            x = float(text)
        except ValueError:
            raise DataError(f"{path}: line {line}: {key} {text!r} is not a number") from None
        low, high = LIMITS[key]
        if not math.isfinite(x) or not low <= x <= high:
            raise DataError(f"{path}: line {line}: {key} {text} is outside {low:g}..{high:g}")
        values[key] = x
    return name, AcquisitionSettings(view=view, **values)


def read_acquisition(root: Path) -> dict[str, AcquisitionSettings] | None:
    """{FileName (no .avi): settings} from ROOT/Acquisition.csv; None when the file is absent.

    A malformed file raises DataError naming the file and line.
    """
    path = Path(root) / ACQUISITION_CSV
    if not path.is_file():
        return None
    out: dict[str, AcquisitionSettings] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a spreadsheet's BOM
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{path}: line {line}: expected {len(header)} cells")
                name, settings = _parse_row(path, line, row)
                if name in out:
                    raise DataError(f"{path}: line {line}: FileName {name} appears twice")
                out[name] = settings
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    return out


__all__ = [
    "ACQUISITION_CSV", "AcquisitionSettings", "CSV_COLUMNS", "LIMITS", "MODES", "NEUTRAL",
    "NEUTRAL_DEPTH_CM", "SETTING_NAMES", "VIEWS", "acquisition_rng", "draw_acquisition",
    "read_acquisition", "settings_for", "write_acquisition_csv",
]
