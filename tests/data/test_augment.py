"""Training augmentation recipes: deterministic for a seed, the paper recipe untouched, the
acquisition recipe changes what it says and masks the targets geometry moves."""

from __future__ import annotations

import numpy as np
import pytest

from echoedge.data.augment import RANGES, RECIPES, augment_clip_frames
from echoedge.data.clipspec import ClipSpec
from echoedge.data.dataset import EchoClipDataset
from echoedge.data.echonet import EchoNet
from echoedge.errors import EchoEdgeError
from tests.data.fixtures import standard_videos, write_dataset

SPEC = ClipSpec(frames=8, period=2, height=56, width=56, mean=90.0, std=60.0)


def _frames(seed: int = 0) -> np.ndarray:
    """A fan-shaped sector of speckle with a bright ring, 10 frames of 56 x 56."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:56, 0:56]
    fan = (ys > 2) & (np.abs(xs - 28) < ys * 0.9)
    ring = np.abs(np.hypot(xs - 28, ys - 30) - 12) < 3
    base = np.where(ring, 200, 60) * fan
    return np.stack([np.clip(base + rng.normal(0, 15, base.shape) * fan, 0, 255) for _ in range(10)]).astype(np.uint8)


def test_paper_recipe_returns_the_frames_untouched():
    f = _frames()
    a = augment_clip_frames(f, "paper", np.random.default_rng(0))
    assert a.frames is f and a.applied == {} and a.landmarks_valid and a.volumes_valid


def test_acquisition_recipe_is_deterministic_for_a_seed_and_varies_across_seeds():
    f = _frames()
    a = augment_clip_frames(f, "acquisition", np.random.default_rng(3))
    b = augment_clip_frames(f, "acquisition", np.random.default_rng(3))
    assert a.applied == b.applied and np.array_equal(a.frames, b.frames)
    seen: set[str] = set()
    for s in range(60):
        out = augment_clip_frames(f, "acquisition", np.random.default_rng(s))
        seen |= set(out.applied)
        for name, v in out.applied.items():
            lo, hi = RANGES[name]
            assert lo <= v <= hi
        assert out.frames.shape == f.shape and out.frames.dtype == np.uint8
        assert out.landmarks_valid == (not ({"rotation", "zoom"} & set(out.applied)))
        assert out.volumes_valid == ("zoom" not in out.applied)
        # outside the sector stays black (JPEG rings a little at the edge, as a compressed stream does)
        assert out.frames[:, 0, :8].max() <= 8
    assert seen == set(RANGES)  # every augmentation is drawn at some seed


def test_blur_augmentation_lowers_high_frequency_energy():
    f = _frames()
    for s in range(200):
        out = augment_clip_frames(f, "acquisition", np.random.default_rng(s))
        if set(out.applied) == {"blur"} and out.applied["blur"] > 1.0:
            hf = lambda x: np.abs(np.diff(x.astype(float), axis=2)).mean()  # noqa: E731
            assert hf(out.frames) < 0.8 * hf(f)
            return
    pytest.fail("no seed drew blur alone")


def test_unknown_recipe_is_one_line():
    with pytest.raises(EchoEdgeError, match="unknown training recipe 'heavy'.*paper, acquisition"):
        augment_clip_frames(_frames(), "heavy", np.random.default_rng(0))
    assert RECIPES == ("paper", "acquisition")


def test_dataset_applies_the_recipe_and_masks_moved_targets(tmp_path):
    reader = EchoNet(write_dataset(tmp_path / "ds", standard_videos()))
    recs = reader.records("TRAIN")
    from echoedge.data.cache import FrameCache

    cache = FrameCache(reader, tmp_path / "cache")
    paper = EchoClipDataset(recs, cache, SPEC, mode="train", shift_pad=0, seed=1)
    acq = EchoClipDataset(recs, cache, SPEC, mode="train", shift_pad=0, seed=1, recipe="acquisition")
    changed, masked = 0, 0
    for epoch in range(8):
        paper.set_epoch(epoch)
        acq.set_epoch(epoch)
        for i in range(len(recs)):
            a, b = paper[i], acq[i]
            assert int(a["start"]) == int(b["start"])  # same clip, only its look differs
            changed += not np.array_equal(a["clip"].numpy(), b["clip"].numpy())
            masked += float(b["ed_mask"]) < float(a["ed_mask"])
    assert changed > 0 and masked > 0
    with pytest.raises(EchoEdgeError, match="unknown training recipe"):
        EchoClipDataset(recs, cache, SPEC, recipe="nope")
