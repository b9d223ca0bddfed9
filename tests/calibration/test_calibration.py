"""Calibration sets: strategies, determinism, refusals, the manifest, save/load and tampering."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from echoedge.calibration import (
    CLIPS_FILE,
    EF_BANDS,
    MANIFEST_FILE,
    STRATEGIES,
    CalibrationSet,
    build_calibration_set,
    calibrate,
    describe,
    ef_band,
    load_calibration_set,
    parse_calibration_arg,
    save_calibration_set,
    spec_from_checkpoint,
)
from echoedge.calibration.strategies import (
    band_quotas,
    phase_window,
    plan_ef_stratified,
    plan_phase_aware,
    plan_random,
)
from echoedge.data.clips import clip_contains, extract_clip
from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet import EchoNet, VideoRecord
from echoedge.errors import EchoEdgeError

SPEC = ClipSpec(frames=16, period=2, height=64, width=64, mean=40.0, std=45.0)
SIZE = 10
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calib-frames")


@pytest.fixture(scope="module")
def built(synth_root: Path, frames_dir: Path) -> dict[str, CalibrationSet]:
    """One set per strategy, SIZE clips of TRAIN, seed 0 (built once for the module)."""
    return {s: build_calibration_set(synth_root, SPEC, s, size=SIZE, seed=0,
                                     cache_dir=frames_dir, progress=False)
            for s in STRATEGIES}


def _build(root: Path, frames_dir: Path, **kw) -> CalibrationSet:
    args = dict(strategy="random", size=SIZE, seed=0, cache_dir=frames_dir, progress=False)
    args.update(kw)
    return build_calibration_set(root, SPEC, **args)


def _record(name: str, ef: float, num_frames: int = 120, ed: int | None = 10, es: int | None = 24
            ) -> VideoRecord:
    traced = ed is not None and es is not None
    rows = np.zeros((21, 4)) if traced else None
    return VideoRecord(file_name=name, path=Path(f"{name}.avi"), ef=ef, esv=math.nan,
                       edv=math.nan, fps=50.0, num_frames=num_frames, split="TRAIN",
                       ed_frame=ed if traced else None, es_frame=es if traced else None,
                       ed_tracing=rows, es_tracing=rows)


# --- every strategy ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_gives_n_clips_normalised_like_training(built, synth_root, strategy):
    cs = built[strategy]
    assert len(cs) == SIZE and cs.clips.shape == (SIZE, *SPEC.input_shape()[1:])
    assert cs.clips.dtype == np.float32
    m = cs.manifest
    assert m["strategy"] == strategy and m["size"] == SIZE and m["split"] == "TRAIN"
    assert m["clip_spec"] == SPEC.to_dict() and m["id"] == cs.id and len(m["clips"]) == SIZE
    reader = EchoNet(synth_root)
    train = {r.file_name for r in reader.records("TRAIN")}
    assert m["dataset_fingerprint"] == reader.fingerprint()
    for clip, entry in zip(cs.clips, m["clips"]):
        rec = reader.record(entry["video"])
        assert entry["video"] in train and entry["ef"] == rec.ef
        expected = extract_clip(reader.load_frames(rec), entry["start"], SPEC)
        np.testing.assert_array_equal(clip, expected)


def test_manifest_band_counts_add_up(built):
    for cs in built.values():
        bands = cs.manifest["bands"]
        assert sum(bands["clips"].values()) == len(cs)
        assert Counter(e["band"] for e in cs.manifest["clips"]) == \
            Counter({b: n for b, n in bands["clips"].items() if n})
        assert sum(bands["available_videos"].values()) == 10  # the fixture's TRAIN split


def test_same_seed_gives_identical_clips_and_id(built, synth_root, frames_dir):
    again = _build(synth_root, frames_dir, strategy="ef-stratified")
    first = built["ef-stratified"]
    assert again.id == first.id
    assert again.clips.tobytes() == first.clips.tobytes()


def test_other_seed_or_strategy_gives_other_id(built, synth_root, frames_dir):
    other = _build(synth_root, frames_dir, strategy="ef-stratified", seed=1)
    assert other.id != built["ef-stratified"].id
    assert len({cs.id for cs in built.values()}) == len(STRATEGIES)


def test_id_ignores_creation_time_and_location(built):
    cs = built["random"]
    moved = dict(cs.manifest, created_at="1999-01-01T00:00:00+00:00", data_root="/elsewhere")
    assert CalibrationSet(cs.clips, moved).id == cs.id
    assert CalibrationSet(cs.clips, dict(cs.manifest, seed=99)).id != cs.id


# --- random ------------------------------------------------------------------------------------


def test_random_uses_every_video_before_repeating_one():
    recs = [_record(f"V{i}", 60.0) for i in range(5)]
    once = plan_random(recs, SPEC, 5, np.random.default_rng(0))
    assert sorted(d.record.file_name for d in once.draws) == [f"V{i}" for i in range(5)]
    twice = plan_random(recs, SPEC, 12, np.random.default_rng(0))
    per_video = Counter(d.record.file_name for d in twice.draws)
    assert sorted(per_video.values()) == [2, 2, 2, 3, 3]
    for name in per_video:  # repeated clips of one video start at different frames
        starts = [d.start for d in twice.draws if d.record.file_name == name]
        assert len(set(starts)) == len(starts)
    assert any("clips per video" in n for n in twice.notes)


# --- ef-stratified -----------------------------------------------------------------------------


def test_ef_band_edges():
    assert [ef_band(x) for x in (10, 39.99, 40, 49.9, 50, 59.99, 60, 80)] == \
        ["<40", "<40", "40-49", "40-49", "50-59", "50-59", ">=60", ">=60"]


def test_ef_stratified_balances_bands_on_the_fixture(built):
    cs = built["ef-stratified"]
    counts = cs.manifest["bands"]["clips"]
    assert max(counts.values()) - min(counts.values()) <= 1
    # The remainder goes to the lowest-EF bands first.
    assert [counts[b] for b in EF_BANDS] == [3, 3, 2, 2]
    # The fixture's TRAIN split has one video in each of the three lower bands: said so.
    assert any(n.startswith("EF band <40") and "1 TRAIN video" in n for n in cs.manifest["notes"])


def test_ef_stratified_gives_rare_low_ef_an_equal_share():
    efs = [65.0] * 30 + [55.0] * 6 + [45.0] * 3 + [25.0]
    recs = [_record(f"V{i}", ef) for i, ef in enumerate(efs)]
    plan = plan_ef_stratified(recs, SPEC, 16, np.random.default_rng(3))
    counts = Counter(ef_band(d.record.ef) for d in plan.draws)
    assert counts == Counter({b: 4 for b in EF_BANDS})
    # 4 clips from the only <40 video, each at a different start.
    low = [d.start for d in plan.draws if d.record.ef < 40]
    assert len(low) == 4 and len(set(low)) == 4
    assert any("<40" in n and "up to 4 clips per video" in n for n in plan.notes)


def test_ef_stratified_hands_empty_band_share_to_the_others():
    assert band_quotas({"<40": 0, "40-49": 2, "50-59": 5, ">=60": 9}, 10) == \
        {"<40": 0, "40-49": 4, "50-59": 3, ">=60": 3}
    recs = [_record(f"V{i}", ef) for i, ef in enumerate([65.0] * 5 + [52.0] * 5)]
    plan = plan_ef_stratified(recs, SPEC, 9, np.random.default_rng(0))
    assert len(plan.draws) == 9
    assert any("<40: no TRAIN videos" in n for n in plan.notes)
    assert any("40-49: no TRAIN videos" in n for n in plan.notes)


# --- phase-aware -------------------------------------------------------------------------------


def test_phase_aware_clips_contain_both_traced_frames(built, synth_root):
    cs = built["phase-aware"]
    reader = EchoNet(synth_root)
    for entry in cs.manifest["clips"]:
        rec = reader.record(entry["video"])
        assert (entry["ed_frame"], entry["es_frame"]) == (rec.ed_frame, rec.es_frame)
        assert clip_contains(entry["start"], rec.ed_frame, SPEC)
        assert clip_contains(entry["start"], rec.es_frame, SPEC)


def test_phase_aware_skips_untraced_and_too_far_apart_videos():
    recs = [_record("OK1", 60.0, ed=10, es=24), _record("OK2", 50.0, ed=80, es=70),
            _record("UNTRACED", 60.0, ed=None, es=None),
            _record("FAR", 60.0, ed=5, es=5 + SPEC.span)]  # one frame too far for one clip
    assert phase_window(recs[3], SPEC) is None
    assert phase_window(_record("EDGE", 60.0, ed=5, es=4 + SPEC.span), SPEC) == (5, 5)
    plan = plan_phase_aware(recs, SPEC, 12, np.random.default_rng(0))
    assert {d.record.file_name for d in plan.draws} == {"OK1", "OK2"}
    assert plan.skipped == {"no tracings": 1, "ED and ES further apart than one clip": 1}
    for d in plan.draws:
        assert clip_contains(d.start, d.record.ed_frame, SPEC)
        assert clip_contains(d.start, d.record.es_frame, SPEC)
    with pytest.raises(EchoEdgeError, match=r"at least 3 usable TRAIN videos, found 2 of 4.*"
                                            r"1 skipped: no tracings"):
        plan_phase_aware(recs, SPEC, 12, np.random.default_rng(0), min_videos=3)


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["TEST", "test", " Test "])
def test_test_split_is_refused(synth_root, frames_dir, split):
    with pytest.raises(EchoEdgeError, match="calibration must not see TEST videos"):
        _build(synth_root, frames_dir, split=split)


def test_unknown_split_is_refused(synth_root, frames_dir):
    with pytest.raises(EchoEdgeError, match="expected TRAIN or VAL"):
        _build(synth_root, frames_dir, split="HOLDOUT")


@pytest.mark.parametrize("size", [0, -3, 4, 7])
def test_empty_or_too_small_set_is_refused(synth_root, frames_dir, size):
    with pytest.raises(EchoEdgeError, match="too small: at least 8 clips") as e:
        _build(synth_root, frames_dir, size=size)
    assert "\n" not in str(e.value)


def test_too_few_videos_is_refused_with_the_count(synth_root, frames_dir):
    with pytest.raises(EchoEdgeError, match="at least 4 usable VAL videos, found 3"):
        _build(synth_root, frames_dir, split="VAL", min_videos=4)


def test_val_split_is_allowed(synth_root, frames_dir):
    cs = _build(synth_root, frames_dir, split="val", size=8)
    assert cs.manifest["split"] == "VAL" and cs.manifest["videos"] == 3
    assert any("up to 3 clips per video" in n for n in cs.manifest["notes"])


# --- save / load -------------------------------------------------------------------------------


def test_save_load_round_trip(built, tmp_path):
    cs = built["phase-aware"]
    out = save_calibration_set(cs, tmp_path / "calib")
    assert sorted(p.name for p in out.iterdir()) == [CLIPS_FILE, MANIFEST_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["calib"]  # no temporary folder left behind
    for where in (out, out / MANIFEST_FILE, out / CLIPS_FILE):
        back = load_calibration_set(where)
        assert back.id == cs.id and back.manifest == cs.manifest and back.spec == SPEC
        assert back.clips.dtype == np.float32
        assert back.clips.tobytes() == cs.clips.tobytes()


def test_save_replaces_a_previous_set_but_not_a_foreign_folder(built, tmp_path):
    out = save_calibration_set(built["random"], tmp_path / "calib")
    save_calibration_set(built["ef-stratified"], out)
    assert load_calibration_set(out).id == built["ef-stratified"].id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(EchoEdgeError, match="holds other files"):
        save_calibration_set(built["random"], foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_failed_save_leaves_no_folder(built, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_calibration_set(built["random"], tmp_path / "calib")
    assert list(tmp_path.iterdir()) == []


def test_tampered_clip_is_detected(built, tmp_path):
    out = save_calibration_set(built["random"], tmp_path / "calib")
    clips = load_calibration_set(out).clips.copy()
    clips[3, 0, 5, 10, 10] += 0.5
    np.savez(out / CLIPS_FILE, clips=clips)
    with pytest.raises(EchoEdgeError, match=r"calibration\.npz: clip 3 .*sha256"):
        load_calibration_set(out)


def test_corrupt_npz_is_detected(built, tmp_path):
    out = save_calibration_set(built["random"], tmp_path / "calib")
    data = (out / CLIPS_FILE).read_bytes()
    (out / CLIPS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(EchoEdgeError, match=r"calibration\.npz: not a readable calibration set"):
        load_calibration_set(out)


def test_edited_manifest_is_detected(built, tmp_path):
    out = save_calibration_set(built["random"], tmp_path / "calib")
    m = json.loads((out / MANIFEST_FILE).read_text())
    m["clips"][0]["ef"] = 12.0
    (out / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(EchoEdgeError, match=r"manifest\.json: manifest id .* does not match"):
        load_calibration_set(out)


def test_missing_set_is_reported(tmp_path):
    with pytest.raises(EchoEdgeError, match=r"manifest\.json: calibration manifest not found"):
        load_calibration_set(tmp_path)


# --- CLI helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("ef-stratified:128", ("ef-stratified", 128)),
    ("random:64", ("random", 64)),
    ("phase-aware", ("phase-aware", 128)),
    (" EF_Stratified : 32 ", ("ef-stratified", 32)),
])
def test_parse_calibration_arg_accepts(text, expected):
    assert parse_calibration_arg(text) == expected


@pytest.mark.parametrize("text, message", [
    ("kmeans:64", "expected one of: random, ef-stratified, phase-aware"),
    ("random:many", "not an integer"),
    ("random:0", "positive"),
    ("", "unknown calibration strategy"),
])
def test_parse_calibration_arg_rejects(text, message):
    with pytest.raises(EchoEdgeError, match=message):
        parse_calibration_arg(text)


def test_describe_is_one_paragraph_with_the_essentials(built):
    cs = built["ef-stratified"]
    text = describe(cs)
    assert "\n" not in text
    for part in ("ef-stratified", f"{SIZE} clips", "TRAIN", cs.id, "<40: 3", ">=60: 2"):
        assert part in text


def test_calibrate_uses_the_checkpoint_clip_spec(synth_root, tmp_path):
    ckpt = REPO / "echoedge" / "checkpoints" / "e3net_paper_synthetic.pt"
    spec = spec_from_checkpoint(ckpt)
    cs = calibrate(synth_root, ckpt, tmp_path / "calib", calibration="random:8",
                   cache_dir=tmp_path / "frames", progress=False)
    assert cs.spec == spec and cs.clips.shape == (8, *spec.input_shape()[1:])
    assert load_calibration_set(tmp_path / "calib").id == cs.id


# --- where a job's calibration clips come from (a test-only dataset cannot calibrate itself) --


def test_calibration_source_never_draws_from_the_validated_videos(synth_root, tmp_path):
    from echoedge.calibration import calibration_source
    from echoedge.errors import DataError
    from tests.data.fixtures import derive_dataset

    fallback = lambda: synth_root  # noqa: E731 (stands in for the built-in synthetic set)
    src = calibration_source(synth_root, default_root=fallback)
    assert (src.root, src.split, src.note) == (synth_root, "TRAIN", None)
    val_test = derive_dataset(synth_root, tmp_path / "val-test", splits=("VAL", "TEST"))
    src = calibration_source(val_test, default_root=fallback)
    assert (src.root, src.split) == (val_test, "VAL") and "no TRAIN videos" in src.note
    # Validating VAL of that set: its VAL is held out too, so the fallback set's TRAIN is used.
    src = calibration_source(val_test, evaluated_split="VAL", default_root=fallback)
    assert (src.root, src.split) == (synth_root, "TRAIN")
    test_only = derive_dataset(synth_root, tmp_path / "test-only", splits=("TEST",), untraced=None)
    src = calibration_source(test_only, default_root=fallback)
    assert (src.root, src.split) == (synth_root, "TRAIN")
    assert f"{test_only} has no TRAIN or VAL videos" in src.note and "synthetic" in src.note
    assert "--calibration-data" in src.note
    # --calibration-data names the source; one without TRAIN or VAL is refused in one line.
    src = calibration_source(test_only, calibration_data=val_test, default_root=fallback)
    assert (src.root, src.split) == (val_test, "VAL") and "--calibration-data" in src.note
    with pytest.raises(DataError, match="no TRAIN or VAL videos to calibrate on"):
        calibration_source(val_test, calibration_data=test_only)
    cs = build_calibration_set(src.root, SPEC, "random", size=8, split=src.split,
                               cache_dir=tmp_path / "frames", progress=False)
    assert cs.manifest["split"] == "VAL" and cs.manifest["data_root"] == str(val_test.resolve())
