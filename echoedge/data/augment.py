"""Training-time augmentation recipes: what the model sees change while it learns.

"paper": EchoNet-Dynamic's and the Echo-E3Net paper's recipe, the random shift (pad 12 and crop)
alone (`clips.draw_shift`, applied by the dataset for every recipe).

"acquisition": the paper's shift plus the acquisition changes a point-of-care probe meets from one
exam to the next, the augmentations the echo literature trains with (intensity / gain / gamma,
time-gain compensation, blur for resolution, multiplicative speckle, additive noise, compression,
small rotations and depth changes about the probe's vertex). Each is applied with probability
`P_APPLY`, at a strength drawn uniformly between none and a little past the stress suite's
moderate level (`echoedge.data.shifts`), so the stress suite measures the range trained on, not
beyond it. The transforms are the stress suite's own (`shifts.transform`): one definition of what
"blur 1.5 px" means.

Geometry: a rotation or depth change moves the landmarks; rather than warp the targets, the clip's
landmark terms are masked (`geometric`), and a depth change also masks the volumes (mL do not
change with the display depth; the pixels do). EF, a ratio, is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECIPES = ("paper", "acquisition")
P_APPLY = 0.3

# name -> (low, high) strength range drawn uniformly; a range that includes the neutral value.
# Ranges reach about 1.2x the stress suite's moderate level (gain 0.6/1.6, gamma 0.6, speckle 0.5,
# blur 1.5 px, zoom 0.85/1.15, rotation 10 deg, noise sd 12, JPEG q 20, TGC 9 dB).
RANGES: dict[str, tuple[float, float]] = {
    "gain": (0.55, 1.75),
    "gamma": (0.55, 1.5),
    "tgc": (-11.0, 11.0),
    "blur": (0.0, 1.8),
    "speckle": (0.0, 0.6),
    "noise": (0.0, 14.0),
    "jpeg": (15.0, 60.0),
    "rotation": (-12.0, 12.0),
    "zoom": (0.82, 1.18),
}
# The stress suite's name for each augmentation's transform.
_SHIFT = {"gain": "gain-up", "gamma": "gamma", "tgc": "tgc", "blur": "blur", "speckle": "speckle",
          "noise": "noise", "jpeg": "jpeg", "rotation": "rotation", "zoom": "zoom-in"}
GEOMETRIC = ("rotation", "zoom")
# Intensity first, then what the scanner's optics and speckle do, then the display: the order a
# probe's chain applies them.
ORDER = ("zoom", "rotation", "blur", "speckle", "tgc", "gain", "gamma", "noise", "jpeg")


@dataclass
class Augmented:
    frames: np.ndarray  # uint8 (T, H, W)
    applied: dict[str, float]  # augmentation -> strength drawn
    landmarks_valid: bool  # False when the geometry moved
    volumes_valid: bool  # False when the depth changed


def check_recipe(recipe: str) -> str:
    from echoedge.errors import EchoEdgeError

    if recipe not in RECIPES:
        raise EchoEdgeError(f"unknown training recipe '{recipe}' (recipes: {', '.join(RECIPES)})")
    return recipe


def augment_clip_frames(frames: np.ndarray, recipe: str, rng: np.random.Generator) -> Augmented:
    """Apply `recipe` to a clip's uint8 (T, H, W) source frames (the same change to every frame)."""
    check_recipe(recipe)
    applied: dict[str, float] = {}
    if recipe == "paper":
        return Augmented(frames, applied, True, True)
    from echoedge.data.shifts import transform

    out = frames
    for name in ORDER:
        draw = rng.random()  # drawn for every augmentation, so one choice never shifts the others
        lo, hi = RANGES[name]
        value = float(lo + (hi - lo) * rng.random())
        if draw >= P_APPLY:
            continue
        out = transform(out, _SHIFT[name], value, rng)
        applied[name] = value
    return Augmented(out, applied, landmarks_valid=not any(g in applied for g in GEOMETRIC),
                     volumes_valid="zoom" not in applied)


__all__ = ["Augmented", "GEOMETRIC", "RANGES", "RECIPES", "augment_clip_frames", "check_recipe"]
