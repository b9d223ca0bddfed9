"""The Simpson-inspired loss: zero when perfect, masking, per-term response, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echoedge.data.landmarks import simpson_volume
from echoedge.model.loss import LossWeights, e3net_loss, implied_ef, simpson_geometry, to_pixels
from echoedge.model.network import build_model

HW = (112, 112)


def lv_landmarks(batch: int, squeeze: float, seed: int = 0) -> torch.Tensor:
    """Plausible normalised LV borders in the canonical 42-point order: apex, base, 20 chords."""
    g = torch.Generator().manual_seed(seed)
    apex = torch.tensor([0.5, 0.2]) + 0.02 * torch.randn(batch, 2, generator=g)
    base = torch.tensor([0.5, 0.8]) + 0.02 * torch.randn(batch, 2, generator=g)
    axis = base - apex
    normal = torch.stack([-axis[:, 1], axis[:, 0]], dim=1)
    normal = normal / normal.norm(dim=1, keepdim=True)
    s = (torch.arange(20) + 0.5) / 20
    half = squeeze * 0.18 * torch.sin(math.pi * (0.15 + 0.8 * s)) ** 0.7  # wider near the base
    mid = apex[:, None] + s[None, :, None] * axis[:, None]
    a = mid - half[None, :, None] * normal[:, None]
    b = mid + half[None, :, None] * normal[:, None]
    lm = torch.empty(batch, 42, 2)
    lm[:, 0], lm[:, 1] = apex, base
    lm[:, 2::2], lm[:, 3::2] = a, b
    return lm


def make_batch(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    ed = lv_landmarks(batch, 1.0, seed)
    es = lv_landmarks(batch, 0.7, seed + 1)
    ones = torch.ones(batch)
    return {
        "ef": implied_ef(ed, es, HW),
        "edv": torch.tensor([120.0, 80.0, 95.0])[:batch],
        "esv": torch.tensor([55.0, 30.0, 41.0])[:batch],
        "ed_landmarks": ed, "es_landmarks": es,
        "ed_mask": ones.clone(), "es_mask": ones.clone(), "volume_mask": ones.clone(),
    }


def perfect_outputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(batch[k].clone().requires_grad_(True)
                 for k in ("ef", "edv", "esv", "ed_landmarks", "es_landmarks"))


TERMS = ("ef", "edv", "esv", "volume", "landmark", "geometry", "consistency")


def test_simpson_geometry_matches_the_numpy_reference():
    lm = to_pixels(lv_landmarks(2, 1.0), HW).double()
    _, _, vol = simpson_geometry(lm)
    np.testing.assert_allclose(vol.numpy(), simpson_volume(lm.numpy()), rtol=1e-6)


def test_loss_is_zero_at_a_perfect_prediction():
    batch = make_batch()
    assert (batch["ef"] > 20).all() and (batch["ef"] < 80).all()  # the fixture is plausible
    total, terms = e3net_loss(perfect_outputs(batch), batch, LossWeights(), HW)
    assert total.item() == 0.0
    assert all(terms[k] == 0.0 for k in TERMS), terms
    total.backward()


def test_loss_accepts_a_dict_of_outputs():
    batch = make_batch()
    outs = dict(zip(("ef", "edv", "esv", "ed_landmarks", "es_landmarks"), perfect_outputs(batch)))
    outs["ef"] = outs["ef"] + 6.0
    t1, _ = e3net_loss(outs, batch)
    t2, _ = e3net_loss(tuple(outs.values()), batch)
    assert t1.item() == t2.item() > 0


def test_all_zero_masks_give_zero_terms_and_finite_gradients():
    batch = make_batch()
    for k in ("ed_mask", "es_mask", "volume_mask"):
        batch[k] = torch.zeros(3)
    for k in ("edv", "esv", "ed_landmarks", "es_landmarks"):
        batch[k] = torch.full_like(batch[k], float("nan"))
    outs = perfect_outputs(make_batch(seed=5))
    total, terms = e3net_loss(outs, batch)
    for k in ("edv", "esv", "volume", "landmark", "geometry", "consistency"):
        assert terms[k] == 0.0, k
    assert math.isfinite(total.item())
    total.backward()
    for o in outs:
        assert torch.isfinite(o.grad).all()
    for o in outs[1:]:
        assert (o.grad == 0).all()


def test_changing_masked_out_targets_does_not_change_the_loss():
    batch = make_batch()
    outs = perfect_outputs(make_batch(seed=7))
    batch["ed_mask"][1] = 0.0
    batch["volume_mask"][2] = 0.0
    t1, terms1 = e3net_loss(outs, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["ed_landmarks"][1] = torch.rand(42, 2)
    changed["edv"][2] = 1e6
    changed["esv"][2] = float("nan")
    t2, terms2 = e3net_loss(outs, changed)
    assert t1.item() == t2.item()
    assert terms1 == terms2


def test_each_term_responds_to_its_own_error():
    base = make_batch()
    outs = perfect_outputs(base)

    def terms_with(**changes):
        batch = {**base, **changes}
        return e3net_loss(outs, batch)[1]

    t = terms_with(ef=base["ef"] + 6.0)
    assert t["ef"] > 0 and all(t[k] == 0 for k in TERMS if k != "ef")
    t = terms_with(edv=base["edv"] + 10.0)
    assert t["edv"] > 0 and t["volume"] > 0 and t["esv"] == 0 and t["ef"] == 0
    t = terms_with(esv=base["esv"] - 10.0)
    assert t["esv"] > 0 and t["edv"] == 0
    # A shifted border: the landmark term sees it, the (translation-invariant) geometry does not.
    t = terms_with(ed_landmarks=base["ed_landmarks"] + 0.03)
    assert t["landmark"] > 0 and t["landmark_ed"] > 0 and t["landmark_es"] == 0
    assert t["geometry"] < 1e-5
    # A scaled border changes geometry too.
    es = base["es_landmarks"]
    centre = es.mean(dim=1, keepdim=True)
    t = terms_with(es_landmarks=centre + 1.2 * (es - centre))
    assert t["geometry_es"] > 0.01 and t["geometry_ed"] == 0
    # EF pushed away from the geometry, label moved with it: only consistency sees it.
    moved = (base["ef"] + 9.0).requires_grad_(True)
    total, t = e3net_loss((moved,) + outs[1:], {**base, "ef": base["ef"] + 9.0})
    assert t["consistency"] > 0 and t["ef"] == 0 and t["landmark"] == 0


def test_consistency_masking_and_always_flag():
    batch = make_batch()
    batch["es_mask"] = torch.zeros(3)
    outs = perfect_outputs(batch)
    outs = (outs[0] + 12.0,) + outs[1:]
    assert e3net_loss(outs, batch)[1]["consistency"] == 0.0
    t = e3net_loss(outs, batch, LossWeights(consistency_always=True))[1]
    assert t["consistency"] > 0


def test_weights_scale_their_terms():
    batch = make_batch()
    outs = perfect_outputs(batch)
    outs = (outs[0] + 6.0,) + outs[1:]
    t1, terms = e3net_loss(outs, batch, LossWeights(ef=1.0, consistency=0.0))
    t2, _ = e3net_loss(outs, batch, LossWeights(ef=3.0, consistency=0.0))
    assert t2.item() == pytest.approx(3 * t1.item()) and t1.item() == pytest.approx(terms["ef"])
    assert LossWeights.from_dict(LossWeights(landmark=2.0).to_dict()).landmark == 2.0


def test_finite_gradients_through_the_tiny_model():
    torch.manual_seed(0)
    model = build_model("tiny").train()
    x = torch.randn(model.cfg.input_shape(2))
    batch = make_batch(batch=2)
    batch["es_mask"][0] = 0.0
    batch["volume_mask"][1] = 0.0
    total, terms = e3net_loss(model(x), batch, LossWeights(), (model.cfg.height, model.cfg.width))
    assert math.isfinite(total.item()) and total.item() > 0
    assert set(terms) >= set(TERMS) | {"total"}
    total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
