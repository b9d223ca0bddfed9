"""`data check` finds each planted problem; `data show` writes a readable montage."""

from __future__ import annotations

import warnings

import pytest

from echoedge.cli import main
from echoedge.data.check import Problem, check_dataset
from echoedge.data.show import montage_frames, render_montage
from echoedge.errors import DataError
from tests.data.fixtures import (
    FixtureVideo,
    edit_line,
    find_line,
    read_lines,
    standard_videos,
    write_dataset,
    write_lines,
    write_standard,
)


def _find(problems: list[Problem], *needles: str) -> Problem:
    hits = [p for p in problems if all(n in p.line() for n in needles)]
    assert hits, f"no problem with {needles} in:\n" + "\n".join(p.line() for p in problems)
    return hits[0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """One dataset with a problem planted in almost every video."""
    vids = standard_videos()
    vids[0].ef_cell = "70.0"  # EDV 90, ESV 30 -> 66.7
    vids[1].listed_size = (768, 1024)
    vids[2].traced = ("ED",)
    vids[3].avi = "missing"
    vids[5].avi = "corrupt"
    vids[6].num_frames, vids[6].ed_frame, vids[6].es_frame = 40, 3, 15
    vids[7].es_frame = 80  # beyond 72 frames
    vids.append(FixtureVideo(name="0XEXTRA", split="TEST"))
    root = write_dataset(tmp_path_factory.mktemp("planted"), vids)
    (root / "Videos" / "0XEXTRA.avi").rename(root / "Videos" / "0XORPHAN.avi")  # missing + unlisted
    line = find_line(root / "VolumeTracings.csv", "0X0004.avi")
    edit_line(root / "VolumeTracings.csv", line + 7, None)  # 20 rows in 0X0004's first frame
    return root


@pytest.fixture(scope="module")
def planted_problems(planted):
    return check_dataset(planted)


def test_problem_line_format():
    assert Problem("VolumeTracings.csv", 123, "NaN coordinate in X1", True).line() == \
        "VolumeTracings.csv:123: NaN coordinate in X1 (fatal)"
    assert Problem("Videos", None, "folder not found", False).line() == "Videos: folder not found (warning)"


def test_check_clean_dataset_has_no_fatal(tmp_path):
    problems = check_dataset(write_standard(tmp_path))
    assert [p for p in problems if p.fatal] == []
    assert all("shorter than" in p.message or "split" in p.message for p in problems), problems


def test_check_missing_root_is_one_fatal_problem(tmp_path):
    problems = check_dataset(tmp_path / "nowhere")
    assert len(problems) == 1 and problems[0].fatal and "not found" in problems[0].message


def test_check_missing_files_and_folders(tmp_path):
    (tmp_path / "a").mkdir()
    assert _find(check_dataset(tmp_path / "a"), "FileList.csv", "file not found").fatal
    root = write_dataset(tmp_path / "b", standard_videos()[:2], tracings=False)
    problems = check_dataset(root)
    assert not _find(problems, "VolumeTracings.csv", "not found").fatal


def test_check_ef_inconsistent_is_warning(planted_problems):
    p = _find(planted_problems, "FileList.csv:2:", "0X0000", "EF 70 disagrees")
    assert not p.fatal


def test_check_stale_frame_size_is_warning(planted_problems):
    p = _find(planted_problems, "0X0001", "768x1024 is stale")
    assert not p.fatal and p.row == 3


def test_check_tracing_problems(planted, planted_problems):
    one = _find(planted_problems, "0X0002", "only frame 8 is traced")
    assert one.fatal and one.file == "VolumeTracings.csv"
    rows20 = _find(planted_problems, "0X0004", "has 20 rows (expected 21)")
    assert rows20.fatal and rows20.row == find_line(planted / "VolumeTracings.csv", "0X0004.avi")
    beyond = _find(planted_problems, "0X0007", "traced frame 80 is beyond")
    assert beyond.fatal


def test_check_missing_unlisted_unreadable_short_videos(planted_problems):
    assert _find(planted_problems, "0X0003", "video file missing").fatal
    assert _find(planted_problems, "0XEXTRA", "video file missing").fatal
    assert not _find(planted_problems, "Videos/0XORPHAN.avi", "not listed").fatal
    bad = _find(planted_problems, "Videos/0X0005.avi:", "OpenCV")
    assert bad.fatal and bad.row is None
    assert not _find(planted_problems, "0X0006", "40 frames, shorter than", "padded").fatal


def test_check_bad_cells(tmp_path):
    vids = standard_videos()
    vids[1].ef_cell = "abc"
    root = write_dataset(tmp_path, vids)
    line = find_line(root / "VolumeTracings.csv", "0X0002.avi") + 2
    cells = read_lines(root / "VolumeTracings.csv")[line - 1].split(",")
    cells[4] = "nan"
    edit_line(root / "VolumeTracings.csv", line, ",".join(cells))
    problems = check_dataset(root, decode_videos=False)
    assert _find(problems, "FileList.csv:3:", "EF 'abc' is not a number").fatal
    assert _find(problems, f"VolumeTracings.csv:{line}:", "NaN coordinate in Y2").fatal


def test_check_bad_header(tmp_path):
    root = write_standard(tmp_path)
    edit_line(root / "FileList.csv", 1, "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,Frames,Split")
    p = _find(check_dataset(root, decode_videos=False), "FileList.csv:1:", "NumberOfFrames")
    assert p.fatal


def test_check_empty_split(tmp_path):
    root = write_dataset(tmp_path, [v for v in standard_videos() if v.split != "TEST"])
    assert not _find(check_dataset(root, decode_videos=False), "split TEST is empty").fatal


def test_cli_data_check_exit_codes(planted, tmp_path, capsys):
    assert main(["data", "check", str(planted), "--no-videos"]) == 1
    out = capsys.readouterr().out
    assert "(fatal)" in out and "fatal" in out.splitlines()[-1]
    clean = write_standard(tmp_path)
    assert main(["data", "check", str(clean)]) == 0


def test_check_ef_only_folder_is_one_warning_with_the_count(tmp_path, capsys):
    root = write_dataset(tmp_path / "bare", standard_videos(), tracings=False)
    problems = check_dataset(root, decode_videos=False)
    assert [p.line() for p in problems if p.file == "VolumeTracings.csv"] == [
        "VolumeTracings.csv: file not found; 8 of 8 videos have no tracings: EF validation only, "
        "landmark metrics n/a (warning)"]
    assert not any(p.fatal for p in problems)
    assert main(["data", "check", str(root), "--no-videos"]) == 0
    capsys.readouterr()
    vids = standard_videos()
    for v in vids[2:8]:
        v.traced = ()
    partial = write_dataset(tmp_path / "partial", vids)
    assert main(["data", "check", str(partial)]) == 0
    out = capsys.readouterr().out
    untraced = [ln for ln in out.splitlines() if "no tracings" in ln]
    assert untraced == ["VolumeTracings.csv: 6 of 8 videos have no tracings: EF validation only, "
                        "landmark metrics n/a (warning)"]
    assert "0 fatal" in out.splitlines()[-1]


def test_check_require_tracings_excludes_untraced_videos(tmp_path, capsys):
    vids = standard_videos()
    vids[3].traced = vids[7].traced = ()
    root = write_dataset(tmp_path, vids)
    problems = check_dataset(root, decode_videos=False, require_tracings=True)
    for name in ("0X0003", "0X0007"):
        p = _find(problems, name, "no rows in VolumeTracings.csv", "video excluded")
        assert p.fatal and p.file == "VolumeTracings.csv"
    assert not any("have no tracings" in p.message for p in problems)
    assert main(["data", "check", str(root), "--no-videos", "--require-tracings"]) == 1
    assert "2 fatal" in capsys.readouterr().out.splitlines()[-1]
    assert main(["data", "summary", str(root), "--require-tracings"]) == 0
    assert "6 usable" in capsys.readouterr().out


def test_check_filelist_without_split_column(tmp_path):
    root = write_standard(tmp_path)
    write_lines(root / "FileList.csv", [ln.rsplit(",", 1)[0] for ln in read_lines(root / "FileList.csv")])
    problems = check_dataset(root, decode_videos=False)
    p = _find(problems, "FileList.csv:1:", "no Split column: every video counts as TEST")
    assert not p.fatal and not any(p.fatal for p in problems)


def test_cli_data_summary(tmp_path, capsys):
    assert main(["data", "summary", str(write_standard(tmp_path))]) == 0
    assert "8 usable" in capsys.readouterr().out


def test_montage_frames_include_traced():
    picks = montage_frames(72, 8, [13, 29])
    assert len(picks) == 8 and 13 in picks and 29 in picks and picks[0] == 0 and picks[-1] == 71
    assert montage_frames(5, 8, []) == [0, 1, 2, 3, 4]


def test_render_montage_writes_png(tmp_path):
    root = write_standard(tmp_path / "d")
    out = render_montage(root, "0X0002.avi", tmp_path / "out" / "m.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert not [p for p in out.parent.iterdir() if p.name != "m.png"]  # no temp leftovers
    assert main(["data", "show", str(root), "0X0003", "-o", str(tmp_path / "cli.png")]) == 0


def test_render_montage_without_tracings(tmp_path):
    root = write_dataset(tmp_path / "d", standard_videos()[:1], tracings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = render_montage(root, "0X0000", tmp_path / "m.png", n_frames=4)
    assert out.is_file()


def test_render_montage_unknown_name(tmp_path):
    root = write_standard(tmp_path / "d")
    with pytest.raises(DataError, match="no video named 0XNOPE"):
        render_montage(root, "0XNOPE", tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
