"""The Simpson-inspired multi-component loss of Echo-E3Net.

Terms (each an unweighted mean; `LossWeights` weights them into the total):

- ef           Huber((EF_pred - EF) / ef_scale), every sample.
- edv, esv     Huber on standardised volumes, masked by `volume_mask`; `volume` pools both.
- landmark_*   L1 between predicted and traced normalised landmarks (mean over the 42 points and
               both coordinates), per phase, masked by `ed_mask` / `es_mask`; `landmark` pools the
               two phases (one masked mean over every unmasked (sample, phase) pair, so a batch
               with only ED tracings is not halved).
- geometry_*   Simpson geometry per phase from landmarks scaled to pixels by `spec_hw`: L1 of the
               long-axis length, of the 20 disk diameters (mean) and of the disk-volume proxy
               V = pi/4 * (L/20) * sum(d_i^2), averaged; each quantity is divided by a fixed scale
               derived from the frame size S = sqrt(H*W) (length S/2, diameter S/4, volume
               pi/4 * (S/2) * (S/4)^2, i.e. a typical apical-4-chamber LV) so the terms are O(1).
               Masked per phase, pooled like `landmark`.
- consistency  Huber((EF_pred - EF_geom) / ef_scale) with EF_geom = 100 (V_ed - V_es) / V_ed from
               the *predicted* ED/ES landmarks. By default it applies only where both phases are
               traced (ed_mask * es_mask): there the landmark heads are anchored to real borders in
               the same clip, so the implied EF is meaningful; `consistency_always=True` applies it
               to every sample (self-supervision for clips without tracings). Gradients reach both
               the EF head and the landmark head. This term is what ties the independent EF head
               of E2FA to the geometry (see e2fa.py).

Masking: masked-out targets are replaced by the (detached) prediction before any arithmetic and the
masked mean divides by max(sum(mask), 1), so a masked-out sample contributes exactly zero, targets
may hold anything (NaN included) where masked, and an all-zero mask gives a zero term with finite
(zero) gradients. Lengths use sqrt(dx^2 + dy^2 + eps) and V_ed is clamped away from zero so no
gradient is NaN even for coincident predicted points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from echoedge.data.landmarks import NUM_CHORDS
from echoedge.errors import EchoEdgeError
from echoedge.model.network import OUTPUT_NAMES

_LENGTH_EPS = 1e-6  # px^2 under the square root of every length


@dataclass
class LossWeights:
    ef: float = 1.0
    volume: float = 0.5
    landmark: float = 5.0  # normalised-coordinate L1 is ~0.01-0.1: weighted up to matter
    geometry: float = 1.0
    consistency: float = 0.5
    huber_delta: float = 1.0  # in standardised units (1 = one ef_scale / volume scale)
    consistency_always: bool = False
    # Standardisation of the regression targets; the same constants as E3NetConfig's defaults.
    ef_scale: float = 12.0
    edv_scale: float = 35.0
    esv_scale: float = 25.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossWeights":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise EchoEdgeError(f"LossWeights: unknown keys {', '.join(sorted(unknown))}")
        return cls(**dict(d))


# ---------------------------------------------------------------------------- geometry
def _length(a: Tensor, b: Tensor) -> Tensor:
    d = a - b
    return torch.sqrt((d * d).sum(dim=-1) + _LENGTH_EPS)


def simpson_geometry(landmarks_px: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(..., 42, 2) landmarks in pixels -> long-axis length (...), disk diameters (..., 20) and
    the single-plane Simpson volume proxy (...) in px^3 (the torch twin of
    `echoedge.data.landmarks.simpson_volume`)."""
    length = _length(landmarks_px[..., 1, :], landmarks_px[..., 0, :])
    diam = _length(landmarks_px[..., 2::2, :], landmarks_px[..., 3::2, :])
    volume = (math.pi / 4.0) * (length / NUM_CHORDS) * (diam * diam).sum(dim=-1)
    return length, diam, volume


def to_pixels(landmarks: Tensor, spec_hw: tuple[int, int]) -> Tensor:
    h, w = spec_hw
    return landmarks * landmarks.new_tensor([float(w), float(h)])


def geometry_scales(spec_hw: tuple[int, int]) -> tuple[float, float, float]:
    s = math.sqrt(spec_hw[0] * spec_hw[1])
    return s / 2.0, s / 4.0, (math.pi / 4.0) * (s / 2.0) * (s / 4.0) ** 2


def implied_ef(ed_landmarks: Tensor, es_landmarks: Tensor,
               spec_hw: tuple[int, int] = (112, 112)) -> Tensor:
    """EF (%) implied by ED/ES landmarks (normalised) through Simpson volumes."""
    _, _, v_ed = simpson_geometry(to_pixels(ed_landmarks, spec_hw))
    _, _, v_es = simpson_geometry(to_pixels(es_landmarks, spec_hw))
    v_floor = 1e-3 * geometry_scales(spec_hw)[2]
    return 100.0 * (v_ed - v_es) / v_ed.clamp_min(v_floor)


# ---------------------------------------------------------------------------- masked means
def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-sample values over mask == 1; exactly 0 (finite gradients) for an empty mask."""
    keep = mask > 0
    picked = torch.where(keep, values, torch.zeros_like(values))
    return picked.sum() / keep.to(values.dtype).sum().clamp_min(1.0)


def _safe_target(target: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
    """Masked-out targets become the detached prediction: no NaN/garbage enters any arithmetic."""
    keep = (mask > 0).reshape(mask.shape + (1,) * (target.dim() - mask.dim()))
    return torch.where(keep, target, pred.detach())


def _huber(pred: Tensor, target: Tensor, scale: float, delta: float) -> Tensor:
    return F.huber_loss(pred / scale, target / scale, reduction="none", delta=delta)


def _as_dict(outputs: Sequence[Tensor] | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(outputs, Mapping):
        return {k: outputs[k] for k in OUTPUT_NAMES}
    if len(outputs) != len(OUTPUT_NAMES):
        raise EchoEdgeError(f"model outputs must be {OUTPUT_NAMES}, got {len(outputs)} tensors")
    return dict(zip(OUTPUT_NAMES, outputs))


# ---------------------------------------------------------------------------- the loss
def e3net_loss(outputs: Sequence[Tensor] | Mapping[str, Tensor], batch: Mapping[str, Tensor],
               weights: LossWeights | None = None,
               spec_hw: tuple[int, int] = (112, 112)) -> tuple[Tensor, dict[str, float]]:
    """Total loss (scalar tensor) and every unweighted term as a float (plus "total")."""
    w = weights or LossWeights()
    out = _as_dict(outputs)
    dtype = out["ef"].dtype
    ones = torch.ones_like(out["ef"])
    vmask = batch["volume_mask"].to(dtype)
    masks = {"ed": batch["ed_mask"].to(dtype), "es": batch["es_mask"].to(dtype)}

    terms: dict[str, Tensor] = {}
    terms["ef"] = _huber(out["ef"], batch["ef"].to(dtype), w.ef_scale, w.huber_delta).mean()

    per_vol = {}
    for k, scale in (("edv", w.edv_scale), ("esv", w.esv_scale)):
        target = _safe_target(batch[k].to(dtype), out[k], vmask)
        per_vol[k] = _huber(out[k], target, scale, w.huber_delta)
        terms[k] = _masked_mean(per_vol[k], vmask)
    terms["volume"] = _masked_mean(torch.cat([per_vol["edv"], per_vol["esv"]]),
                                   torch.cat([vmask, vmask]))

    len_s, diam_s, vol_s = geometry_scales(spec_hw)
    per_lm, per_geo = {}, {}
    for phase, mask in masks.items():
        pred = out[f"{phase}_landmarks"]
        target = _safe_target(batch[f"{phase}_landmarks"].to(dtype), pred, mask)
        per_lm[phase] = (pred - target).abs().mean(dim=(1, 2))
        lp, dp, vp = simpson_geometry(to_pixels(pred, spec_hw))
        lt, dt, vt = simpson_geometry(to_pixels(target, spec_hw))
        per_geo[phase] = ((lp - lt).abs() / len_s
                          + (dp - dt).abs().mean(dim=-1) / diam_s
                          + (vp - vt).abs() / vol_s) / 3.0
        terms[f"landmark_{phase}"] = _masked_mean(per_lm[phase], mask)
        terms[f"geometry_{phase}"] = _masked_mean(per_geo[phase], mask)
    both = torch.cat([masks["ed"], masks["es"]])
    terms["landmark"] = _masked_mean(torch.cat([per_lm["ed"], per_lm["es"]]), both)
    terms["geometry"] = _masked_mean(torch.cat([per_geo["ed"], per_geo["es"]]), both)

    ef_geom = implied_ef(out["ed_landmarks"], out["es_landmarks"], spec_hw)
    cmask = ones if w.consistency_always else masks["ed"] * masks["es"]
    terms["consistency"] = _masked_mean(
        _huber(out["ef"], ef_geom, w.ef_scale, w.huber_delta), cmask)

    total = (w.ef * terms["ef"] + w.volume * terms["volume"] + w.landmark * terms["landmark"]
             + w.geometry * terms["geometry"] + w.consistency * terms["consistency"])
    report = {k: float(v.detach()) for k, v in terms.items()}
    report["total"] = float(total.detach())
    return total, report
