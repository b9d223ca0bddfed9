"""Calibration stability: disjoint draws, exact per-clip ranges, the size curve and its recommendation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.quantdebug.draws import disjoint_plans, partition_videos  # noqa: E402
from echoedge.quantdebug.observers import RangeCache, prepare_recipe  # noqa: E402
from echoedge.quantdebug.size_curve import SizePoint, recommend  # noqa: E402
from echoedge.quantdebug.stability import (  # noqa: E402
    calibration_stability, evaluation_videos, plot_stability, stability_table,
)


@pytest.fixture(scope="module")
def tiny(synth_root: Path):
    """Tiny Echo-E3Net (seeded random weights), its deploy form and ClipSpec."""
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model

    torch.manual_seed(0)
    model = build_model(get_config("tiny")).eval()
    spec = clip_spec_for(model.cfg, mean=35.0, std=48.0)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *spec.input_shape(1)[1:]))
                         .astype(np.float32))
    return to_deploy_form(model, example=x).eval(), spec


def _train(synth_root: Path):
    from echoedge.data.echonet import EchoNet

    return EchoNet(synth_root).records("TRAIN")


def test_partition_and_draws_share_no_video(synth_root: Path, tiny):
    _, spec = tiny
    records = _train(synth_root)
    groups = partition_videos(records, 3, seed=0, spec=spec)
    names = [{r.file_name for r in g} for g in groups]
    assert sum(len(g) for g in names) == len(records)  # every video in exactly one group
    assert all(not (a & b) for i, a in enumerate(names) for b in names[i + 1:])
    assert max(map(len, names)) - min(map(len, names)) <= 1
    # Input order does not change the partition; the seed does (for some seed).
    assert partition_videos(records[::-1], 3, 0, spec) == groups
    for strategy in ("random", "ef-stratified"):
        plans = disjoint_plans(strategy, records, spec, size=8, draws=3, seed=0, groups=groups)
        used = [{d.record.file_name for d in p.draws} for p in plans]
        assert all(len(p.draws) == 8 for p in plans)
        assert all(not (a & b) for i, a in enumerate(used) for b in used[i + 1:]), used
        assert all(u <= g for u, g in zip(used, names))
        again = disjoint_plans(strategy, records, spec, size=8, draws=3, seed=0)
        assert [[(d.record.file_name, d.start) for d in p.draws] for p in again] == \
               [[(d.record.file_name, d.start) for d in p.draws] for p in plans]


def test_too_many_draws_is_one_clear_error(synth_root: Path, tiny):
    _, spec = tiny
    records = _train(synth_root)
    with pytest.raises(EchoEdgeError, match="use fewer draws"):
        disjoint_plans("random", records, spec, size=8, draws=len(records), seed=0)


def test_range_cache_equals_calibrating_directly(tiny):
    """The size curve's shortcut is exact: union of per-clip min/max == calibrating on the set."""
    from echoedge.quantdebug.simulate import simulate_int8

    deploy, spec = tiny
    rng = np.random.default_rng(3)
    clips = (rng.standard_normal((5, *spec.input_shape(1)[1:])) * rng.uniform(0.5, 2, (5, 1, 1, 1, 1))
             ).astype(np.float32)
    cache = RangeCache(prepare_recipe(deploy, clips[:1]))
    assert cache.exact and cache.observers
    for i, c in enumerate(clips):
        cache.add(("v", i), c)
    x = torch.from_numpy(clips[[0, 4]])
    for subset in ([1, 3], [0, 2, 4], [4]):
        via_cache = cache.convert([("v", i) for i in subset])
        direct = simulate_int8(deploy, clips[subset])
        with torch.no_grad():
            for a, b in zip(via_cache(x[:1]), direct(x[:1])):
                assert torch.equal(a, b), subset
    # A different set gives a different model (the test can fail).
    with torch.no_grad():
        a = cache.convert([("v", 0)])(x[1:])[0]
        b = cache.convert([("v", i) for i in range(5)])(x[1:])[0]
    assert not torch.equal(a, b)


def _pt(size: int, mean: float, sd: float | None, s: str = "random") -> SizePoint:
    return SizePoint(s, size, 3, mean, sd, mean - 0.1, mean + 0.1, None, None, None, None)


def test_recommendation_rule():
    pts = [_pt(8, 0.80, 0.20), _pt(16, 0.53, 0.09), _pt(32, 0.52, 0.03), _pt(64, 0.50, 0.02),
           _pt(128, 0.60, 0.01)]
    r = recommend(pts, tolerance=0.05, max_sd=0.05)
    assert (r.size, r.rule_met) == (32, True)  # 16 is close enough but too unstable
    assert recommend(pts, tolerance=0.01, max_sd=0.05).size == 64
    # Nothing stable enough: the smallest mean + sd, flagged.
    r = recommend(pts, tolerance=0.05, max_sd=0.001)
    assert (r.size, r.rule_met) == (64, False) and "sd over draws" in r.reason
    # Order of the input does not matter.
    assert recommend(pts[::-1]).size == recommend(pts).size
    with pytest.raises(ValueError):
        recommend([_pt(8, 0.5, 0.1), _pt(16, 0.5, 0.1, s="phase-aware")])


def test_stability_study_on_tiny(synth_root: Path, tiny, tmp_path: Path):
    deploy, spec = tiny
    videos = evaluation_videos(synth_root, spec, "TEST", videos=2, clips_per_video=1, add_low_ef=True,
                               cache_dir=tmp_path / "frames")
    res = calibration_stability(deploy, synth_root, spec, videos, strategies=("random", "ef-stratified"),
                                sizes=(12, 8, 8, 64), draws=2, seed=0, max_clips_per_video=3,
                                low_ef=55.0, low_ef_by="truth", cache_dir=tmp_path / "frames",
                                progress=False, log=lambda *_: None)
    # 10 TRAIN videos in 2 groups of 5, 3 clips per video: N <= 15, so 64 is skipped, said so; the
    # curve lists N in increasing order whatever order the sizes came in.
    for s in ("random", "ef-stratified"):
        assert [p.size for p in res.points if p.strategy == s] == [8, 12]
    assert any("64" in n and "skipped" in n for n in res.notes)
    assert res.settings["sizes"] == [8, 12, 64]  # sorted, deduplicated
    for d in res.draws:
        delta = np.array(d.delta_ef)
        assert d.mean_abs == pytest.approx(np.abs(delta).mean())
        low = np.array(res.videos["low_ef"])
        if low.any():
            assert d.low_ef_mean_abs == pytest.approx(np.abs(delta[low]).mean())
        if (~low).any():
            assert d.rest_mean_abs == pytest.approx(np.abs(delta[~low]).mean())
    # Draws of one (strategy, N) calibrate on disjoint videos.
    for s in ("random", "ef-stratified"):
        for n in (8, 12):
            used = [{c[0] for c in d.clips} for d in res.draws if d.strategy == s and d.size == n]
            assert len(used) == 2 and not (used[0] & used[1])
    p = res.point("random", 8)
    means = [d.mean_abs for d in res.draws if d.strategy == "random" and d.size == 8]
    assert p.mean == pytest.approx(np.mean(means)) and p.sd == pytest.approx(np.std(means, ddof=1))
    assert res.cost["clips_calibrated"] <= res.cost["clips_requested"]
    assert set(res.recommendations) == {"random", "ef-stratified"} and res.overall is not None
    png = plot_stability(res, tmp_path / "stab.png")
    assert png.stat().st_size > 5000
    assert "| random | 8" in stability_table(res)
    # 2 strategies x 2 sizes x 2 draws, each calibrated and evaluated once.
    assert res.cost["models"] == 8


def test_bad_arguments_fail_before_any_compute(synth_root: Path, tiny):
    deploy, spec = tiny
    with pytest.raises(EchoEdgeError, match="TEST"):
        calibration_stability(deploy, synth_root, spec, None, split="TEST", progress=False)
    with pytest.raises(EchoEdgeError, match="strategy"):
        calibration_stability(deploy, synth_root, spec, None, strategies=("best",), progress=False)
    with pytest.raises(EchoEdgeError, match="no calibration size fits"):
        calibration_stability(deploy, synth_root, spec, None, strategies=("random",), sizes=(500,),
                              draws=2, progress=False)
