"""EchoClipDataset items, masks and reproducibility; FrameCache."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from echoedge.data.cache import FrameCache, default_cache_dir
from echoedge.data.clips import clip_contains
from echoedge.data.clipspec import ClipSpec
from echoedge.data.dataset import EchoClipDataset
from echoedge.data.echonet import EchoNet
from echoedge.errors import DataError
from tests.data.fixtures import edit_line, read_lines, standard_videos, write_dataset

SPEC = ClipSpec(frames=8, period=2, height=56, width=56, mean=90.0, std=60.0)
KEYS = {"clip", "ef", "edv", "esv", "volume_mask", "ed_landmarks", "es_landmarks", "ed_mask",
        "es_mask", "video_index", "start"}


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    vids = standard_videos()
    vids[3].num_frames, vids[3].ed_frame, vids[3].es_frame = 12, 2, 9  # shorter than a clip (15)
    return EchoNet(write_dataset(tmp_path_factory.mktemp("ds"), vids))


@pytest.fixture(scope="module")
def cache(reader, tmp_path_factory):
    c = FrameCache(reader, tmp_path_factory.mktemp("cache"))
    c.build(reader.records(), progress=False)
    return c


def test_train_item_keys_shapes_and_dtypes(reader, cache):
    ds = EchoClipDataset(reader.records("TRAIN"), cache, SPEC, mode="train")
    assert len(ds) == 4
    item = ds[0]
    assert set(item) == KEYS
    assert item["clip"].shape == (1, 8, 56, 56) and item["clip"].dtype == torch.float32
    for k in ("ef", "edv", "esv", "volume_mask", "ed_mask", "es_mask"):
        assert item[k].shape == () and item[k].dtype == torch.float32
    assert item["ed_landmarks"].shape == (42, 2) and item["es_landmarks"].dtype == torch.float32
    assert item["video_index"].dtype == torch.int64 and item["start"].dtype == torch.int64
    assert item["ef"].item() == pytest.approx(reader.records("TRAIN")[0].ef, rel=1e-6)
    assert item["volume_mask"].item() == 1.0


def test_train_traced_fraction_one_contains_both_frames(reader, cache):
    recs = reader.records("TRAIN")
    ds = EchoClipDataset(recs, cache, SPEC, mode="train", traced_fraction=1.0, shift_pad=0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i, rec in enumerate(recs):
            if abs(rec.es_frame - rec.ed_frame) >= SPEC.span:
                continue
            item = ds[i]
            start = int(item["start"])
            assert clip_contains(start, rec.ed_frame, SPEC) and clip_contains(start, rec.es_frame, SPEC)
            assert item["ed_mask"] == 1.0 and item["es_mask"] == 1.0
            np.testing.assert_allclose(item["ed_landmarks"].numpy(), rec.ed_landmarks, atol=1e-6)


def test_train_items_reproducible_per_epoch(reader, cache):
    ds = EchoClipDataset(reader.records("TRAIN"), cache, SPEC, seed=5)
    a = [ds[i]["start"].item() for i in range(4)]
    b = [ds[i]["start"].item() for i in range(4)]
    assert a == b
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        starts.add(ds[0]["start"].item())
    assert len(starts) > 1  # a new epoch draws new clips


def test_shift_moves_landmark_targets_with_the_image(reader, cache):
    recs = reader.records("TRAIN")
    plain = EchoClipDataset(recs, cache, SPEC, shift_pad=0, traced_fraction=1.0, seed=3)
    moved = EchoClipDataset(recs, cache, SPEC, shift_pad=6, traced_fraction=1.0, seed=3)
    from echoedge.data.clips import shift_clip

    nonzero = 0
    for i in range(len(recs)):
        p, m = plain[i], moved[i]
        assert p["start"] == m["start"]  # the shift is drawn after the start
        off = (m["ed_landmarks"] - p["ed_landmarks"]).numpy()
        assert np.allclose(off, off[0], atol=1e-6)
        dx, dy = np.round(off[0] * [SPEC.width, SPEC.height]).astype(int)
        np.testing.assert_array_equal(m["clip"].numpy(), shift_clip(p["clip"].numpy(), dy, dx))
        np.testing.assert_allclose((m["es_landmarks"] - p["es_landmarks"]).numpy(), off, atol=1e-6)
        nonzero += (dx, dy) != (0, 0)
    assert nonzero > 0


def test_eval_items_cover_eval_starts(reader, cache):
    recs = reader.records("TRAIN")
    ds = EchoClipDataset(recs, cache, SPEC, mode="eval", clips_per_video=3)
    # 72-frame videos: starts 0, 28 (28.5 rounds half to even), 57; the 12-frame video: [0]
    assert len(ds) == 3 * 3 + 1
    items = [ds[i] for i in range(len(ds))]
    assert [(int(it["video_index"]), int(it["start"])) for it in items[:3]] == [(0, 0), (0, 28), (0, 57)]
    rec0 = recs[0]  # ED 6, ES 22: only the first clip (frames 0..14) holds ED, none holds ES
    assert [float(it["ed_mask"]) for it in items[:3]] == [1.0, 0.0, 0.0]
    assert all(float(it["es_mask"]) == 0.0 for it in items[:3])
    np.testing.assert_allclose(items[0]["ed_landmarks"].numpy(), rec0.ed_landmarks, atol=1e-6)
    again = ds[1]
    assert torch.equal(again["clip"], items[1]["clip"])  # no augmentation in eval


def test_short_video_item_is_padded(reader, cache):
    short = reader.record("0X0003")
    ds = EchoClipDataset([short], cache, SPEC, mode="eval", clips_per_video=4)
    assert len(ds) == 1
    item = ds[0]
    clip = item["clip"].numpy()
    assert np.all(clip[0, 6:] == 0.0) and np.any(clip[0, :6] != 0.0)  # frames 0..10 real, 12, 14 padded
    assert item["ed_mask"] == 1.0 and item["es_mask"] == 1.0


def test_dataloader_workers_match_single_process(reader, cache):
    ds = EchoClipDataset(reader.records("TRAIN") * 2, cache, SPEC, seed=11)

    def batches(workers: int, epoch: int, persistent: bool = False):
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers,
                            persistent_workers=persistent)
        out = []
        for e in range(epoch + 1):
            ds.set_epoch(e)
            out.append([b for b in loader])
        return out

    single = batches(0, 1)
    multi = batches(2, 1, persistent=True)  # set_epoch must reach persistent workers
    for e in range(2):
        for b0, b2 in zip(single[e], multi[e]):
            assert set(b0) == KEYS
            for k in KEYS:
                assert torch.equal(b0[k], b2[k]), (e, k)
    assert not torch.equal(single[0][0]["start"], single[1][0]["start"])


def test_no_tracings_masks_and_zero_landmarks(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = EchoNet(write_dataset(tmp_path, standard_videos()[:2], tracings=False))
    ds = EchoClipDataset(reader.records(), reader.load_frames, SPEC, traced_fraction=1.0)
    item = ds[1]
    assert item["ed_mask"] == 0.0 and item["es_mask"] == 0.0
    assert torch.count_nonzero(item["ed_landmarks"]) == 0 and item["es_landmarks"].shape == (42, 2)
    assert item["volume_mask"] == 1.0


def test_missing_volumes_are_masked(tmp_path):
    root = write_dataset(tmp_path, standard_videos()[:2])
    cells = read_lines(root / "FileList.csv")[1].split(",")
    cells[3] = ""  # EDV
    edit_line(root / "FileList.csv", 2, ",".join(cells))
    reader = EchoNet(root)
    item = EchoClipDataset(reader.records(), reader.load_frames, SPEC)[0]
    assert item["volume_mask"] == 0.0 and item["edv"] == 0.0 and item["esv"] == 0.0
    assert not torch.isnan(item["edv"]) and item["ef"] > 0


def test_dataset_rejects_bad_mode_and_missing_ef(reader, cache):
    with pytest.raises(ValueError):
        EchoClipDataset(reader.records(), cache, SPEC, mode="test")
    rec = reader.records()[0]
    broken = type(rec)(**{**rec.__dict__, "ef": float("nan")})
    with pytest.raises(DataError, match="no EF"):
        EchoClipDataset([broken], cache, SPEC)


# --- FrameCache ------------------------------------------------------------------------------

def test_frame_cache_files_match_decoded_video(reader, cache):
    rec = reader.records("VAL")[0]
    path = cache.path(rec)
    assert path.parent.name == reader.fingerprint() and path.is_file()
    frames = cache(rec)
    assert isinstance(frames, np.memmap) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, reader.load_frames(rec))
    assert not list(path.parent.glob(".*tmp"))  # no temporary leftovers


def test_frame_cache_miss_decodes_and_writes(reader, tmp_path):
    c = FrameCache(reader, tmp_path)
    rec = reader.records("TEST")[1]
    assert not c.path(rec).exists()
    first = c(rec)
    assert c.path(rec).is_file() and first.shape == (72, 112, 112)
    np.testing.assert_array_equal(c(rec), first)
    c.path(rec).write_bytes(b"truncated")  # a damaged file is decoded again, not trusted
    np.testing.assert_array_equal(c(rec), first)


def test_frame_cache_build_with_workers_and_pickle(reader, tmp_path):
    c = FrameCache(reader, tmp_path)
    recs = reader.records()
    assert c.build(recs, workers=2, progress=False) == len(recs)
    assert c.build(recs, workers=2, progress=False) == 0  # already cached
    clone = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(clone(recs[0]), reader.load_frames(recs[0]))


def test_frame_cache_build_reports_undecodable_video(tmp_path):
    vids = standard_videos()[:3]
    vids[1].avi = "corrupt"
    reader = EchoNet(write_dataset(tmp_path / "d", vids))
    c = FrameCache(reader, tmp_path / "c")
    with pytest.raises(DataError, match=r"0X0001\.avi"):
        c.build(reader.records(), progress=False)
    assert c.path(reader.records()[0]).is_file() and c.path(reader.records()[2]).is_file()


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ECHOEDGE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "frames"
    monkeypatch.delenv("ECHOEDGE_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "echo-edge", "frames")
