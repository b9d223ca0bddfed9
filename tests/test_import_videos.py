"""`echo-edge data import` on plain videos: sector finding, masking, de-identified output, skips.

The sources are drawn here: the project's synthetic heart (a 90 degree fan, depth 95 of 112 px so
its arc leaves the square's bottom corners empty) scaled 1.5x into a 240 x 320 screen, with
burned-in white text in the square's top-left corner, a colour block in its top-right corner, a
green ECG trace sweeping along its bottom, a patient line and a frame counter -- written as MPEG-4
(.mp4) and MJPG (.avi) at two frame rates.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from echoedge.data.ingest.cine import UnusableInput
from echoedge.data.ingest.importer import LOG_NAME, import_dataset
from echoedge.errors import DataError

SCALE = 1.5
CANVAS = (240, 320)  # H, W
FRAMES = 70


@dataclasses.dataclass
class Source:
    path: Path
    clean: np.ndarray  # (T, H, W) grey canvas before the codec
    sector: np.ndarray  # (H, W) true sector mask on the canvas
    overlay: np.ndarray  # (H, W) every pixel text, bars or ECG touch in any frame
    square: tuple[int, int, int]  # the true sector's depth square (x0, y0, side) on the canvas
    fps: float


def _write(path: Path, frames_bgr: list[np.ndarray], fps: float) -> None:
    import cv2

    fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
    h, w = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames_bgr:
        writer.write(f)
    writer.release()


def make_source(path: Path, seed: int, at: tuple[int, int], fps: float, frames: int = FRAMES) -> Source:
    import cv2

    from echoedge.data.ingest.sector import square_box
    from echoedge.data.synthetic_heart import draw_params_from, video_rng
    from echoedge.data.synthetic_render import render_video, sector_mask

    rng = video_rng(seed, 0)
    p = draw_params_from(rng, 0)
    systole = min(p.systole_frames, frames // 3)
    p = dataclasses.replace(p, frames=frames, radius=95.0, systole_frames=systole,
                            ed_frame=min(p.ed_frame, frames - systole - 1))
    video = render_video(p, rng)
    side = int(round(112 * SCALE))
    h, w = CANVAS
    x, y = at
    small = cv2.resize(sector_mask(p).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
    sector = np.zeros(CANVAS, bool)
    sector[y:y + side, x:x + side] = small
    sq = square_box(sector)
    sx, sy, ss = sq
    out, clean, overlay = [], [], np.zeros(CANVAS, bool)
    for k, f in enumerate(video):
        rgb = np.zeros((h, w, 3), np.uint8)
        big = cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC)
        rgb[y:y + side, x:x + side][small] = big[small][:, None]
        drawn = np.zeros((h, w, 3), np.uint8)
        cv2.putText(drawn, "TIS0.4", (sx + 2, sy + 14), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        cv2.putText(drawn, "DOE^JOHN 1957", (2, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        cv2.putText(drawn, f"{k:03d}", (2, h - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        for i in range(18):  # a colour scale: blue to red, top to bottom
            drawn[sy + 2 + i, sx + ss - 16:sx + ss - 4] = (int(255 * i / 17), 60, 255 - int(255 * i / 17))
        xs = np.arange(0, max(1, (k + 1) * w // frames))  # the sweep reaches the right edge at the end
        beat = np.where((xs % 80) < 12, -10 * np.sin(np.pi * (xs % 80) / 12), 0).astype(int)
        ys = sy + ss - 8 + beat
        drawn[ys, xs] = (0, 255, 0)
        drawn[ys + 1, xs] = (0, 255, 0)
        touched = drawn.any(axis=2)
        overlay |= touched
        rgb[touched] = drawn[touched]
        clean.append((rgb.astype(np.uint16).sum(axis=2) / 3 + 0.5).astype(np.uint8))
        out.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    _write(path, out, fps)
    return Source(path, np.stack(clean), sector, overlay, sq, fps)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("import_src")
    data = root / "cines"
    (data / "p1").mkdir(parents=True)
    a = make_source(data / "p1" / "a4c.mp4", seed=1, at=(100, 30), fps=30.0)
    b = make_source(data / "b.avi", seed=2, at=(40, 50), fps=25.0)
    make_source(data / "clip7.avi", seed=3, at=(80, 40), fps=30.0, frames=40)
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (data / "unlabelled.avi").write_bytes(b.path.read_bytes())
    (data / "notes.txt").write_text("not an input\n")
    labels = root / "labels.csv"
    labels.write_text("FileName,EF,ESV,EDV,Split\n"
                      "p1/a4c.mp4,61.5,40,103.9,train\n"
                      "b,35.25,,,\n"
                      "clip7.avi,50,,,VAL\n"
                      "broken.mp4,45,,,TEST\n"
                      "gone.mp4,70,,,TEST\n")
    return {"root": root, "data": data, "labels": labels, "a": a, "b": b}


def _run(sources: dict, out: Path, **kw) -> tuple[object, list[str]]:
    lines: list[str] = []
    summary = import_dataset([sources["data"]], sources["labels"], out, progress=False,
                             say=lines.append, **kw)
    return summary, lines


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def imported(sources: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("import_out") / "mine"
    summary, lines = _run(sources, out)
    mapping = {r["Source"]: r for r in _csv(summary.mapping)}
    return {"out": out, "summary": summary, "lines": lines, "mapping": mapping,
            "log": {r["FileName"]: r for r in _csv(out / LOG_NAME)},
            "filelist": {r["FileName"]: r for r in _csv(out / "FileList.csv")}}


def _name(imported: dict, rel: str) -> str:
    return imported["mapping"][rel]["FileName"]


def test_sector_found_where_it_was_placed(sources: dict, imported: dict) -> None:
    for key, rel in (("a", "p1/a4c.mp4"), ("b", "b.avi")):
        src = sources[key]
        entry = imported["log"][_name(imported, rel)]
        assert entry["Status"] == "used", entry
        x0, y0, side = map(int, entry["CropBox"].split())
        tx, ty, tside = src.square
        tol = 0.05 * tside  # codec ringing widens the sector by a pixel or two, a dark tip narrows it
        assert abs(x0 - tx) <= tol and abs(y0 - ty) <= tol and abs(side - tside) <= tol, (entry, src.square)
        assert abs(float(entry["SectorFraction"]) - src.sector.mean()) < 0.1 * src.sector.mean()
        assert int(entry["FramesKept"]) == FRAMES


def _out_space(mask: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """A canvas mask seen in the 112 x 112 output: the share of each output pixel it covers."""
    import cv2

    from echoedge.data.ingest.sector import _crop

    return cv2.resize(_crop(mask.astype(np.float32), box), (112, 112), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("key", ["a", "b"])
def test_nothing_outside_the_sector_survives(sources: dict, key: str) -> None:
    import cv2

    from echoedge.data.ingest.sector import crop_sector
    from echoedge.data.ingest.videos import read_video_cine

    src = sources[key]
    frames, crop = crop_sector(read_video_cine(src.path))
    far = ~cv2.dilate(src.sector.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    text_out = (_out_space(src.overlay & far, crop.box) > 0.2) & (_out_space(far, crop.box) > 0.99)
    assert text_out.sum() > 100  # the overlays do fall inside the crop square, beside the sector
    assert src.clean[:, src.overlay & far].max() == 255  # ...and are bright where they fall
    assert frames[:, text_out].max() == 0
    # inside the sector, the output is the source's sector after the same crop and resize
    expected = np.stack([cv2.resize(_crop_grey(f, crop.box), (112, 112), interpolation=cv2.INTER_CUBIC)
                         for f in src.clean])
    inner = _out_space(src.sector, crop.box) > 0.99
    inner = cv2.erode(inner.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    err = np.abs(frames[:, inner].astype(float) - expected[:, inner])
    assert err.mean() < 6.0, err.mean()  # MPEG-4 / MJPG at default quality


def _crop_grey(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    from echoedge.data.ingest.sector import _crop

    return _crop(frame, box)


def test_written_dataset_reads_and_carries_labels(sources: dict, imported: dict) -> None:
    from echoedge.data.echonet import EchoNet
    from echoedge.data.ingest.sector import crop_sector
    from echoedge.data.ingest.videos import read_video_cine
    from echoedge.data.video import read_video

    out = imported["out"]
    fl = imported["filelist"]
    a, b = _name(imported, "p1/a4c.mp4"), _name(imported, "b.avi")
    assert set(fl) == {a, b}
    assert (fl[a]["EF"], fl[a]["ESV"], fl[a]["EDV"], fl[a]["FPS"], fl[a]["Split"]) == \
        ("61.5", "40", "103.9", "30", "TRAIN")
    assert (fl[b]["EF"], fl[b]["ESV"], fl[b]["EDV"], fl[b]["FPS"], fl[b]["Split"]) == \
        ("35.25", "", "", "25", "TEST")
    assert list(fl[a]) == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                           "NumberOfFrames", "Split"]
    assert not (out / "VolumeTracings.csv").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no VolumeTracings.csv, empty ESV/EDV: expected here
        ds = EchoNet(out)
    recs = {r.file_name: r for r in ds.records()}
    assert recs[a].ef == 61.5 and recs[b].ef == 35.25 and recs[a].fps == 30
    frames = read_video(out / "Videos" / f"{a}.avi")
    assert frames.shape == (FRAMES, 112, 112)
    ref, _ = crop_sector(read_video_cine(sources["a"].path))
    assert np.abs(frames.astype(float) - ref).mean() < 3.0  # only the MJPG write between them


def test_names_are_hashes_and_the_mapping_stays_outside(sources: dict, imported: dict) -> None:
    out, summary = imported["out"], imported["summary"]
    names = sorted(p.stem for p in (out / "Videos").iterdir())
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", n) for n in names)
    assert summary.mapping == out.parent / "mine.mapping.csv" and summary.mapping.is_file()
    assert (summary.mapping.stat().st_mode & 0o077) == 0  # private: it undoes the hashes
    text = "".join(p.read_text() for p in (out / "FileList.csv", out / LOG_NAME))
    for word in ("a4c", "p1", "unlabelled", "broken", "clip7", "cines", "b.avi"):
        assert word not in text
    assert sorted(p.name for p in out.iterdir()) == ["FileList.csv", "Videos", LOG_NAME]
    assert set(imported["mapping"]) == {"p1/a4c.mp4", "b.avi", "clip7.avi", "broken.mp4",
                                        "unlabelled.avi"}


def test_each_unusable_input_gets_one_line(imported: dict) -> None:
    lines, log = imported["lines"], imported["log"]
    expect = {"clip7.avi": "40 frames, shorter than one clip", "broken.mp4": "cannot open",
              "unlabelled.avi": "no row in the labels file"}
    for rel, why in expect.items():
        mine = [ln for ln in lines if rel in ln]
        assert len(mine) == 1 and why in mine[0] and "\n" not in mine[0], (rel, lines)
        entry = log[_name(imported, rel)]
        assert entry["Status"] == "skipped" and why in entry["Reason"]
    warn = [ln for ln in lines if ln.startswith("warning")]
    assert len(warn) == 1 and "line 6 (gone.mp4)" in warn[0]
    assert len(lines) == 4
    assert imported["summary"].imported == 2 and imported["summary"].skipped == 3
    assert log[_name(imported, "clip7.avi")]["SourceFrames"] == "40"


def test_reimport_gives_the_same_names_and_force_is_needed(sources: dict, imported: dict) -> None:
    out = imported["out"]
    with pytest.raises(DataError, match="not empty; use --force"):
        _run(sources, out)
    before = sorted(p.name for p in (out / "Videos").iterdir())
    _run(sources, out, force=True, fps=24.0)
    assert sorted(p.name for p in (out / "Videos").iterdir()) == before
    fl = _csv(out / "FileList.csv")
    assert {r["FPS"] for r in fl} == {"24"}
    assert {r["FPSSource"] for r in _csv(out / LOG_NAME) if r["Status"] == "used"} == {"--fps"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("content, message", [
    ("file,ESV\na.mp4,3\n", "line 1: no EF column"),
    ("name,EF\na.mp4,3\n", "line 1: no a file column"),
    ("filename,ef\nx.avi,50\nb.avi,abc\n", "line 3: EF 'abc' is not a number"),
    ("FILE;EF;SPLIT\nb.avi;50;holdout\n", "line 2: unknown Split 'holdout'"),
    ("file,EF\nb.avi,150\n", "line 2: EF '150' is outside 0-100"),
    ("file,EF\nb.avi,50\nb.avi,40\n", "line 3: b.avi is listed again"),
    ("", "empty file"),
])
def test_bad_labels_give_one_line_and_write_nothing(sources: dict, tmp_path: Path, content: str,
                                                    message: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        import_dataset([sources["data"]], labels, out, progress=False, say=lambda s: None)
    assert message in str(e.value) and str(labels) in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_nothing_importable_is_an_error_and_writes_nothing(sources: dict, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,EF\nclip7,50\n")
    with pytest.raises(DataError, match="none of the 1 input"):
        import_dataset([sources["data"] / "clip7.avi"], labels, tmp_path / "out", progress=False,
                       say=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_refusals(sources: dict, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.txt").write_text("x")
    with pytest.raises(DataError, match="not an earlier import"):
        _run(sources, tmp_path / "taken", force=True)
    with pytest.raises(DataError, match="must lie outside"):
        _run(sources, tmp_path / "o", mapping=tmp_path / "o" / "m.csv")
    with pytest.raises(DataError, match="input not found"):
        import_dataset([tmp_path / "nope"], sources["labels"], tmp_path / "o2", progress=False)


def test_still_frames_and_nonsense_rates_are_unusable(tmp_path: Path) -> None:
    from echoedge.data.ingest.cine import Cine
    from echoedge.data.ingest.sector import find_sector
    from echoedge.data.ingest.videos import container_fps

    assert container_fps(float("nan")) is None and container_fps(0.0) is None
    assert container_fps(1e6) is None and container_fps(29.97) == 29.97
    still = np.zeros((70, 120, 160, 3), np.uint8)
    still[:, 20:100, 30:130] = 128  # a grey picture that never changes: a screenshot, no sector
    with pytest.raises(UnusableInput, match="no ultrasound sector found"):
        find_sector(Cine(tmp_path / "x.avi", still, 30.0, "container"))


def test_region_limits_the_search(sources: dict) -> None:
    from echoedge.data.ingest.sector import find_sector
    from echoedge.data.ingest.videos import read_video_cine

    src = sources["b"]
    cine = read_video_cine(src.path)
    ys, xs = np.nonzero(src.sector)
    cine.region = (int(xs.min()), int(ys.min()), int(xs.min()) + 60, int(ys.max()) + 1)
    mask = find_sector(cine)
    assert not mask[:, cine.region[2]:].any() and mask.any()


def test_cli_import_help_and_bad_labels(sources: dict, tmp_path: Path, capsys) -> None:
    from echoedge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["data", "import", "--help"])
    assert e.value.code == 0
    assert "--mapping" in capsys.readouterr().out
    labels = tmp_path / "l.csv"
    labels.write_text("file\nb.avi\n")
    code = main(["data", "import", str(sources["data"]), "--labels", str(labels),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no EF column" in err
