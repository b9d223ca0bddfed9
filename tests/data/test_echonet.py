"""EchoNet reader: every quirk of reference/echonet-format.md, on hand-written fixtures."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from echoedge.data.echonet import EchoNet, VideoRecord
from echoedge.data.landmarks import canonical_landmarks, simpson_volume, simpson_volume_rows
from echoedge.errors import DataError
from tests.data.fixtures import (
    edit_line,
    ellipse_rows,
    find_line,
    read_lines,
    standard_videos,
    write_dataset,
    write_lines,
    write_standard,
)


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    return write_standard(tmp_path_factory.mktemp("std"))


def _quiet_reader(root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset must not warn
        return EchoNet(root)


# --- geometry: Simpson and the landmark convention ------------------------------------------

def test_simpson_volume_matches_prolate_ellipsoid():
    a, b = 30.0, 12.0
    rows = ellipse_rows(a, b, angle_deg=17.0)
    expected = 4.0 / 3.0 * math.pi * a * b * b
    assert simpson_volume_rows(rows) == pytest.approx(expected, rel=0.01)
    assert simpson_volume(canonical_landmarks(rows)) == pytest.approx(simpson_volume_rows(rows))


def test_canonical_landmarks_invariant_to_endpoint_order():
    rows = ellipse_rows(28.0, 11.0, angle_deg=-12.0)
    ref = canonical_landmarks(rows)
    flipped_axis = rows.copy()
    flipped_axis[0] = rows[0, [2, 3, 0, 1]]
    flipped_chords = rows.copy()
    flipped_chords[1::3] = rows[1::3][:, [2, 3, 0, 1]]
    np.testing.assert_allclose(canonical_landmarks(flipped_axis), ref)
    np.testing.assert_allclose(canonical_landmarks(flipped_chords), ref)
    assert ref[0, 1] < ref[1, 1]  # apex (top of the image) before base


# --- a clean dataset ------------------------------------------------------------------------

def test_reader_loads_clean_dataset(standard):
    reader = _quiet_reader(standard)
    assert [len(reader.records(s)) for s in ("TRAIN", "VAL", "TEST")] == [4, 2, 2]
    assert reader.excluded == []
    rec = reader.records("VAL")[0]
    assert rec.file_name == "0X0004" and rec.split == "VAL" and rec.path.is_file()
    assert rec.has_tracings and (rec.ed_frame, rec.es_frame) == (10, 26)
    assert rec.ed_tracing.shape == (21, 4) and rec.ed_landmarks.shape == (42, 2)
    assert 0.0 <= rec.ed_landmarks.min() and rec.ed_landmarks.max() <= 1.0
    assert rec.ed_volume_px > rec.es_volume_px > 0
    assert rec.ef == pytest.approx(100 * (rec.edv - rec.esv) / rec.edv, abs=1e-3)


def test_records_split_argument_is_normalised(standard):
    reader = _quiet_reader(standard)
    assert [r.file_name for r in reader.records(" val ")] == ["0X0004", "0X0005"]
    assert len(reader.records()) == 8
    with pytest.raises(DataError, match="unknown split"):
        reader.records("HOLDOUT")


def test_load_frames_shape_and_frame_size(standard):
    reader = _quiet_reader(standard)
    rec = reader.records("TEST")[0]
    frames = reader.load_frames(rec)
    assert frames.dtype == np.uint8 and frames.shape == (72, 112, 112)
    assert rec.frame_size == (112, 112)


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    root = write_standard(tmp_path / "d")
    fp = EchoNet(root).fingerprint()
    assert fp == EchoNet(root).fingerprint() and len(fp) == 16
    edit_line(root / "FileList.csv", 2, read_lines(root / "FileList.csv")[1].replace("TRAIN", "TEST"))
    assert EchoNet(root).fingerprint() != fp


def test_summary_reports_counts_and_ef(standard):
    text = _quiet_reader(standard).summary()
    assert "8 usable" in text and "TRAIN 4, VAL 2, TEST 2" in text
    assert "EF (%): mean" in text and "% < 50" in text and "% < 35" in text
    assert "FPS: 50-50" in text and "frames: 72-72" in text


# --- quirks that the reader absorbs ---------------------------------------------------------

def test_filelist_names_with_and_without_avi(tmp_path):
    vids = standard_videos()
    vids[1].listed_with_avi = True
    reader = EchoNet(write_dataset(tmp_path, vids))
    names = [r.file_name for r in reader.records()]
    assert names[1] == "0X0001" and reader.records()[1].has_tracings
    assert reader.record("0X0001.avi") is reader.record("0X0001")


def test_ed_chosen_by_volume_not_row_order(tmp_path):
    vids = standard_videos()
    vids[0].es_first = True  # ES rows come first in VolumeTracings.csv
    vids[0].ed_frame, vids[0].es_frame = 40, 12  # and ED after ES in time
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0000")
    assert (rec.ed_frame, rec.es_frame) == (40, 12)
    assert rec.ed_volume_px > rec.es_volume_px
    np.testing.assert_allclose(rec.ed_tracing, vids[0].tracing("ED"), atol=1e-3)


def test_stale_frame_size_columns_are_ignored(tmp_path):
    vids = standard_videos()
    vids[2].listed_size = (768, 1024)
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0002")
    assert rec.size() == (112, 112)
    lm = rec.ed_landmarks
    assert 0 <= lm.min() and lm.max() <= 1
    np.testing.assert_allclose(lm * 112, canonical_landmarks(rec.ed_tracing))


def test_landmarks_normalised_by_real_video_size(tmp_path):
    vids = standard_videos()
    vids[0].size = (80, 96)  # height, width; FileList repeats it, but the video decides anyway
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0000")
    assert rec.frame_size is None  # not probed until needed
    px = canonical_landmarks(rec.ed_tracing)
    np.testing.assert_allclose(rec.ed_landmarks, px / np.array([96, 80]))
    assert rec.frame_size == (80, 96)


def test_split_names_strip_and_upper(tmp_path):
    vids = standard_videos()
    vids[0].split, vids[4].split = " train ", "val "
    reader = EchoNet(write_dataset(tmp_path, vids))
    assert reader.record("0X0000").split == "TRAIN"
    assert reader.record("0X0004").split == "VAL"
    assert len(reader.records("VAL")) == 2


def test_frame_with_20_rows_excludes_video(tmp_path):
    root = write_standard(tmp_path)
    line = find_line(root / "VolumeTracings.csv", "0X0003.avi")
    edit_line(root / "VolumeTracings.csv", line + 3, None)
    reader = EchoNet(root)
    assert "0X0003" not in [r.file_name for r in reader.records()]
    (name, reason), = reader.excluded
    assert name == "0X0003" and "has 20 rows (expected 21)" in reason
    assert "fewer than two usable traced frames" in reason


def test_single_traced_frame_excludes_video(tmp_path):
    vids = standard_videos()
    vids[5].traced = ("ED",)
    reader = EchoNet(write_dataset(tmp_path, vids))
    assert dict(reader.excluded) == {"0X0005": "fewer than two usable traced frames: only frame 11 is traced"}
    assert len(reader.records("VAL")) == 1
    with pytest.raises(DataError, match="excluded"):
        reader.record("0X0005")


def test_three_traced_frames_keep_largest_and_smallest(tmp_path):
    vids = standard_videos()
    root = write_dataset(tmp_path, vids)
    mid = ellipse_rows(25.0, 12.0, centre=(56.0, 50.4))  # between the ED and ES shapes
    extra = [f"0X0000.avi,{x1},{y1},{x2},{y2},16" for x1, y1, x2, y2 in mid]
    write_lines(root / "VolumeTracings.csv", read_lines(root / "VolumeTracings.csv") + extra)
    reader = EchoNet(root)
    rec = reader.record("0X0000")
    assert (rec.ed_frame, rec.es_frame) == (6, 22)
    assert any("3 traced frames" in i.message for i in reader.issues)


def test_traced_frame_beyond_video_excludes(tmp_path):
    vids = standard_videos()
    vids[0].es_frame = 90  # the video has 72 frames
    reader = EchoNet(write_dataset(tmp_path, vids))
    assert "beyond the video's 72 frames" in dict(reader.excluded)["0X0000"]


def test_short_video_is_kept(tmp_path):
    vids = standard_videos()
    vids[0].num_frames, vids[0].ed_frame, vids[0].es_frame = 40, 3, 15
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0000")
    assert rec.num_frames == 40 and reader.load_frames(rec).shape[0] == 40


def test_missing_avi_is_excluded(tmp_path):
    vids = standard_videos()
    vids[6].avi = "missing"
    reader = EchoNet(write_dataset(tmp_path, vids))
    assert dict(reader.excluded)["0X0006"] == "video file missing: Videos/0X0006.avi"
    assert "1 x video file missing" in reader.summary()


def test_corrupt_avi_raises_naming_file(tmp_path):
    vids = standard_videos()
    vids[7].avi = "corrupt"
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0007")
    with pytest.raises(DataError, match=r"0X0007\.avi"):
        reader.load_frames(rec)


def test_no_volume_tracings_is_one_issue_not_a_python_warning(tmp_path):
    root = write_dataset(tmp_path, standard_videos(), tracings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # EF-only data is normal: no warning on every read
        reader = EchoNet(root)
    recs = reader.records()
    assert len(recs) == 8 and not any(r.has_tracings for r in recs)
    assert recs[0].ed_landmarks is None and recs[0].ed_frame is None
    notes = [i for i in reader.issues if i.file == "VolumeTracings.csv"]
    assert [(i.kind, i.message) for i in notes] == [
        ("warning", "file not found; 8 of 8 videos have no tracings: EF validation only, landmark "
                    "metrics n/a")]
    assert "tracings: none" in reader.summary()


def test_untraced_videos_are_kept_with_their_labels(tmp_path):
    vids = standard_videos()
    vids[1].traced = vids[6].traced = ()  # listed in FileList, no row in VolumeTracings.csv
    vids[5].traced = ("ED",)  # a broken tracing still excludes, as before
    reader = EchoNet(write_dataset(tmp_path, vids))
    rec = reader.record("0X0001")
    assert not rec.has_tracings and rec.ef == pytest.approx(100 * (95 - 33) / 95, abs=1e-3)
    assert rec.edv == 95.0 and rec.esv == 33.0 and rec.ed_landmarks is None
    assert dict(reader.excluded) == {"0X0005": "fewer than two usable traced frames: only frame 11 is traced"}
    assert [i.message for i in reader.issues if i.line is None and i.file == "VolumeTracings.csv"] == [
        "2 of 7 videos have no tracings: EF validation only, landmark metrics n/a"]
    assert "tracings: 5 of 7 videos; the others: EF only" in reader.summary()


def test_require_tracings_is_echonet_dynamics_rule(tmp_path):
    vids = standard_videos()
    vids[1].traced = ()
    root = write_dataset(tmp_path / "a", vids)
    reader = EchoNet(root, require_tracings=True)
    assert dict(reader.excluded) == {
        "0X0001": "fewer than two usable traced frames: no rows in VolumeTracings.csv"}
    assert not any("have no tracings" in i.message for i in reader.issues)
    assert "untraced videos excluded (--require-tracings)" in reader.summary()
    bare = write_dataset(tmp_path / "b", standard_videos(), tracings=False)
    with pytest.raises(DataError, match=r"VolumeTracings.csv: file not found \(required"):
        EchoNet(bare, require_tracings=True)
    from echoedge.data.check import check_dataset

    (only,) = [p for p in check_dataset(bare, decode_videos=False, require_tracings=True)
               if p.file == "VolumeTracings.csv"]
    assert only.fatal and "required" in only.message


def test_filelist_without_split_column_is_all_test(tmp_path):
    root = write_standard(tmp_path)
    lines = read_lines(root / "FileList.csv")
    write_lines(root / "FileList.csv", [ln.rsplit(",", 1)[0] for ln in lines])
    reader = EchoNet(root)
    assert reader.split_counts() == {"TRAIN": 0, "VAL": 0, "TEST": 8}
    assert len(reader.records("TEST")) == 8
    (w,) = [i for i in reader.issues if i.file == "FileList.csv"]
    assert (w.kind, w.line, w.message) == ("warning", 1, "no Split column: every video counts as TEST")
    with pytest.raises(DataError, match="split TRAIN has no usable videos"):
        reader.records("TRAIN")


def test_empty_volume_cells_become_nan(tmp_path):
    root = write_standard(tmp_path)
    lines = read_lines(root / "FileList.csv")
    cells = lines[1].split(",")
    cells[2] = cells[3] = ""
    edit_line(root / "FileList.csv", 2, ",".join(cells))
    reader = EchoNet(root)
    rec = reader.record("0X0000")
    assert math.isnan(rec.esv) and math.isnan(rec.edv) and rec.ef > 0
    assert any(i.kind == "warning" and "1 of " in i.message and "empty ESV or EDV" in i.message
               and "0X0000 (line 2)" in i.message for i in reader.issues)


# --- bad input: one-line DataError naming the file and the line -----------------------------

def _error(root) -> str:
    with pytest.raises(DataError) as info:
        EchoNet(root)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_root_folder_and_files(tmp_path):
    assert "dataset folder not found" in _error(tmp_path / "nope")
    (tmp_path / "Videos").mkdir()
    assert f"{tmp_path / 'FileList.csv'}: file not found" == _error(tmp_path)
    root = write_standard(tmp_path / "d")
    for p in (root / "Videos").iterdir():
        p.unlink()
    (root / "Videos").rmdir()
    assert _error(root).startswith(f"{root / 'Videos'}: folder not found")


def test_missing_column_is_named(tmp_path):
    root = write_standard(tmp_path)
    edit_line(root / "FileList.csv", 1, "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,Fps,NumberOfFrames,Split")
    msg = _error(root)
    assert msg.startswith(f"{root / 'FileList.csv'} line 1: missing column(s) FPS")


def test_renamed_tracing_columns_are_named(tmp_path):
    root = write_standard(tmp_path)
    edit_line(root / "VolumeTracings.csv", 1, "FileName,x1,y1,X2,Y2,Frame")
    assert "VolumeTracings.csv line 1: missing column(s) X1, Y1" in _error(root)


def test_non_numeric_ef_names_line(tmp_path):
    vids = standard_videos()
    vids[2].ef_cell = "sixty"
    msg = _error(write_dataset(tmp_path, vids))
    assert "FileList.csv line 4: 0X0002: EF 'sixty' is not a number" in msg


def test_nan_coordinate_names_line(tmp_path):
    root = write_standard(tmp_path)
    line = find_line(root / "VolumeTracings.csv", "0X0001.avi") + 5
    cells = read_lines(root / "VolumeTracings.csv")[line - 1].split(",")
    cells[1] = "NaN"
    edit_line(root / "VolumeTracings.csv", line, ",".join(cells))
    msg = _error(root)
    assert f"VolumeTracings.csv line {line}: 0X0001: NaN coordinate in X1" in msg


def test_several_errors_reported_as_one_line(tmp_path):
    vids = standard_videos()
    vids[1].ef_cell, vids[3].ef_cell = "x", "y"
    msg = _error(write_dataset(tmp_path, vids))
    assert "line 3" in msg and "(+1 more; run `echo-edge data check" in msg


def test_empty_split_raises(tmp_path):
    vids = [v for v in standard_videos() if v.split != "VAL"]
    reader = EchoNet(write_dataset(tmp_path, vids))
    with pytest.raises(DataError, match="split VAL has no usable videos") as info:
        reader.records("VAL")
    assert "FileList.csv" in str(info.value)


def test_video_record_is_plain_data():
    rec = VideoRecord(file_name="0XAB", path=None, ef=55.0, esv=1.0, edv=2.0, fps=50.0,
                      num_frames=100, split="TEST")
    assert not rec.has_tracings and rec.ed_landmarks is None and rec.es_landmarks is None
