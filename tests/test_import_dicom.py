"""`import_dataset` on probe DICOMs: the sector's frames, FPS and EF come through; nothing of the
patient does (tags, burned-in text, file names); each unusable DICOM is one line and the rest import."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from echoedge.data.ingest.importer import LOG_NAME, ImportSummary, import_dataset
from echoedge.data.video import read_video
from tests.dicom_factory import PATIENT, EchoDicom, write_echo_dicom

pytest.importorskip("pydicom")

SIZE = 112
# The usable inputs: relative path -> how the factory writes it. The first name is what a
# careless export looks like: the patient in the file name. Every stem is long and distinctive,
# so that finding one in an output file means it leaked, not that MJPG bytes matched by chance.
USABLE = {
    "Doe_Jane_PID4711XY.dcm": dict(index=0, encoding="rgb", timing="FrameTime"),
    "study/IMG0002": dict(index=1, encoding="jpeg", regions=None, timing="CineRate"),
    "study/grey_0007.dcm": dict(index=2, encoding="mono", timing="FrameTimeVector"),
    "study/jpeg_regions_0008.dcm": dict(index=4, encoding="jpeg", timing="RecommendedDisplayFrameRate"),
}
UNUSABLE = {
    "bad/still_frame_0001.dcm": (dict(encoding="mono", single_frame=True), "single frame"),
    "bad/ct_scan_0002.dcm": (dict(encoding="mono", modality="CT"), "not ultrasound"),
    "bad/doppler_0003.dcm": (dict(encoding="mono", regions="doppler"), "Doppler/M-mode only"),
    "bad/h264_export_0004.dcm": (dict(encoding="jpeg", transfer_syntax="1.2.840.10008.1.2.4.102"),
                     "no decoder for transfer syntax MPEG-4 AVC/H.264"),
    "bad/untimed_0005.dcm": (dict(encoding="mono", timing=None), "no frame timing"),
}
# Identifying strings long enough that MJPG bytes cannot hold them by chance.
SECRETS = [v for v in PATIENT.values() if len(v) >= 6] + ["Doe_Jane", "DOE JANE", "PID4711XY"]


@dataclass
class Imported:
    inputs: Path
    out: Path
    summary: ImportSummary
    said: list[str]
    written: dict[str, EchoDicom]  # relative path -> what the factory wrote
    names: dict[str, str]  # relative path -> hashed name (from the mapping file)
    log: dict[str, dict[str, str]]  # hashed name -> import_log row
    filelist: dict[str, dict[str, str]]  # hashed name -> FileList row


def _write_labels(path: Path, rows: list[tuple[str, float, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "EF", "Split"])
        w.writerows((rel, f"{ef:.3f}", split) for rel, ef, split in rows)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    root = tmp_path_factory.mktemp("import_dicom")
    inputs = root / "probe"
    written: dict[str, EchoDicom] = {}
    for rel, kw in {**USABLE, **{k: v[0] for k, v in UNUSABLE.items()}}.items():
        (inputs / rel).parent.mkdir(parents=True, exist_ok=True)
        written[rel] = write_echo_dicom(inputs / rel, **kw)
    splits = ("TRAIN", "VAL", "TEST")
    _write_labels(root / "labels.csv",
                  [(rel, w.ef, splits[i % 3]) for i, (rel, w) in enumerate(written.items())])
    said: list[str] = []
    out = root / "dataset"
    summary = import_dataset([inputs], root / "labels.csv", out, progress=False, say=said.append)
    names = {r["Source"]: r["FileName"] for r in _rows(summary.mapping)}
    return Imported(inputs=inputs, out=out, summary=summary, said=said, written=written, names=names,
                    log={r["FileName"]: r for r in _rows(out / LOG_NAME)},
                    filelist={r["FileName"]: r for r in _rows(out / "FileList.csv")})


# --------------------------------------------------------------------------------------------
# What comes through
# --------------------------------------------------------------------------------------------


def test_usable_dicoms_import_with_their_labels_and_frame_rates(imported: Imported) -> None:
    assert (imported.summary.imported, imported.summary.skipped) == (len(USABLE), len(UNUSABLE))
    labels = {r["file"]: r for r in _rows(imported.inputs.parent / "labels.csv")}
    for rel in USABLE:
        row = imported.filelist[imported.names[rel]]
        assert float(row["EF"]) == pytest.approx(float(labels[rel]["EF"]), abs=1e-9)
        assert row["Split"] == labels[rel]["Split"]
        assert float(row["FPS"]) == pytest.approx(imported.written[rel].fps, rel=2e-3)
        assert int(row["NumberOfFrames"]) == imported.written[rel].frames.shape[0]
        assert (row["FrameHeight"], row["FrameWidth"]) == (str(SIZE), str(SIZE))
        assert imported.log[imported.names[rel]]["FPSSource"] == USABLE[rel]["timing"]


def _crop_resize(img: np.ndarray, box: tuple[int, int, int], interpolation: int) -> np.ndarray:
    """The importer's framing applied to a reference image: img[y0:y0+side, x0:x0+side] (zero
    padded) resized to SIZE. Written again here so the test does not lean on sector.py."""
    import cv2

    x0, y0, side = box
    out = np.zeros((side, side), img.dtype)
    h, w = img.shape
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (SIZE, SIZE), interpolation=interpolation)


@pytest.mark.parametrize("rel", sorted(USABLE))
def test_output_is_the_source_sector(imported: Imported, rel: str) -> None:
    import cv2

    src = imported.written[rel]
    name = imported.names[rel]
    log = imported.log[name]
    # The sector the importer found is the fan that was drawn (to a few source pixels).
    ys, xs = np.nonzero(src.fan)
    fan_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    found = [int(v) for v in log["SectorBox"].split()]
    assert np.abs(np.subtract(found, fan_box)).max() <= 6, (found, fan_box)

    box = tuple(int(v) for v in log["CropBox"].split())
    out = read_video(imported.out / "Videos" / f"{name}.avi")
    expected = np.stack([_crop_resize(f, box, cv2.INTER_CUBIC) for f in src.screen_grey])
    fan = _crop_resize(src.fan.astype(np.float32), box, cv2.INTER_AREA)
    inside = cv2.erode((fan >= 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert out.shape == expected.shape
    # Up to the source codec and the output's MJPG: the same pixels, frame by frame...
    diff = np.abs(out.astype(int) - expected.astype(int))[:, inside]
    assert diff.mean() < 3.5 and np.percentile(diff, 99) < 16, (diff.mean(), np.percentile(diff, 99))
    # ...in the same order: the cavity's beat (mean grey inside the fan) follows the source's.
    beat_out, beat_src = out[:, inside].mean(axis=1), expected[:, inside].mean(axis=1)
    assert np.corrcoef(beat_out, beat_src)[0, 1] > 0.95


# --------------------------------------------------------------------------------------------
# What must not come through
# --------------------------------------------------------------------------------------------


def test_no_patient_value_or_source_name_in_any_output_byte(imported: Imported) -> None:
    needles = [s.lower().encode() for s in SECRETS]
    needles += [Path(rel).stem.lower().encode() for rel in imported.written]
    # the same search does find them where they are: the DICOMs and the private mapping file
    source = imported.written["Doe_Jane_PID4711XY.dcm"].path.read_bytes().lower()
    assert b"doe^jane" in source and b"pid4711xy" in source
    assert b"doe_jane" in imported.summary.mapping.read_bytes().lower()
    assert imported.out not in imported.summary.mapping.parents
    files = [p for p in imported.out.rglob("*") if p.is_file()]
    assert len(files) == 2 + len(USABLE)  # FileList, import log, one AVI per usable input
    for path in files:
        data = path.read_bytes().lower()
        for needle in needles:
            assert needle not in data, (needle, path.name)


def test_output_names_are_hashes(imported: Imported) -> None:
    pattern = re.compile(r"0X[0-9A-F]{16}")
    videos = sorted(p.name for p in (imported.out / "Videos").iterdir())
    assert all(pattern.fullmatch(Path(v).stem) and v.endswith(".avi") for v in videos)
    assert sorted(f"{n}.avi" for n in imported.filelist) == videos
    assert all(pattern.fullmatch(n) for n in imported.log)


@pytest.mark.parametrize("rel", sorted(USABLE))
def test_burned_in_text_and_ecg_are_masked_out(imported: Imported, rel: str) -> None:
    import cv2

    src = imported.written[rel]
    name = imported.names[rel]
    x0, y0, side = (int(v) for v in imported.log[name]["CropBox"].split())
    out = read_video(imported.out / "Videos" / f"{name}.avi")
    scale = SIZE / side
    kept = 0
    for tx0, ty0, tx1, ty1 in src.text_boxes:
        # the text's box in output pixels, one pixel wider for the resize kernel
        ox0, oy0 = int(np.floor((tx0 - x0) * scale)) - 1, int(np.floor((ty0 - y0) * scale)) - 1
        ox1, oy1 = int(np.ceil((tx1 - x0) * scale)) + 1, int(np.ceil((ty1 - y0) * scale)) + 1
        ox0, oy0, ox1, oy1 = max(ox0, 0), max(oy0, 0), min(ox1, SIZE), min(oy1, SIZE)
        if ox1 <= ox0 or oy1 <= oy0:
            continue  # cropped away entirely
        kept += 1
        assert out[:, oy0:oy1, ox0:ox1].max() == 0, (rel, (tx0, ty0, tx1, ty1))
    assert kept >= 1  # the corner text lies inside the crop: only the mask can have removed it
    # Nowhere outside the fan is there anything brighter than MJPG ringing off the fan's edge.
    fan = _crop_resize(src.fan.astype(np.float32), (x0, y0, side), cv2.INTER_AREA) > 0
    near = cv2.dilate(fan.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert out[:, ~near].max() <= 16


# --------------------------------------------------------------------------------------------
# Unusable inputs
# --------------------------------------------------------------------------------------------


def test_each_unusable_dicom_gets_one_line_and_the_rest_import(imported: Imported) -> None:
    skipped = [line for line in imported.said if line.startswith("skipped ")]
    assert len(skipped) == len(UNUSABLE)
    for rel, (_kw, reason) in UNUSABLE.items():
        path = imported.inputs / rel
        lines = [line for line in skipped if line.startswith(f"skipped {path}: ")]
        assert len(lines) == 1 and reason in lines[0] and "\n" not in lines[0], (rel, lines)
        entry = imported.log[imported.names[rel]]
        assert entry["Status"] == "skipped" and reason in entry["Reason"]
        assert imported.names[rel] not in imported.filelist
    assert all(imported.log[imported.names[rel]]["Status"] == "used" for rel in USABLE)


def test_fps_option_rescues_a_dicom_without_timing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    written = {rel: write_echo_dicom(tmp_path / "in" / rel, index=i, encoding="mono", timing=t)
               for i, (rel, t) in enumerate((("timed.dcm", "CineRate"), ("untimed.dcm", None)))}
    _write_labels(tmp_path / "labels.csv", [(rel, w.ef, "TRAIN") for rel, w in written.items()])
    said: list[str] = []
    summary = import_dataset([tmp_path / "in"], tmp_path / "labels.csv", tmp_path / "out", fps=30.0,
                             progress=False, say=said.append)
    assert (summary.imported, summary.skipped) == (2, 0), said
    rows = _rows(tmp_path / "out" / "FileList.csv")
    assert [float(r["FPS"]) for r in rows] == [30.0, 30.0]
    assert {r["FPSSource"] for r in _rows(tmp_path / "out" / LOG_NAME)} == {"--fps"}
