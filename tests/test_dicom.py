"""read_dicom on synthetic probe exports: pixels, timing, region, each unusable case, no patient data."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from echoedge.data.ingest.cine import Cine, UnusableInput
from echoedge.data.ingest.dicom import is_dicom, read_dicom
from echoedge.errors import DataError, EchoEdgeError
from tests.dicom_factory import PATIENT, TIMINGS, EchoDicom, write_echo_dicom

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory):
    """write_echo_dicom with a per-module cache: each variant is rendered once."""
    root = tmp_path_factory.mktemp("dicom")
    cache: dict[str, EchoDicom] = {}

    def _make(name: str, **kw) -> EchoDicom:
        if name not in cache:
            cache[name] = write_echo_dicom(root / name, **kw)
        return cache[name]

    return _make


def _edit(src: Path, dst: Path, edit) -> Path:
    ds = pydicom.dcmread(src)
    edit(ds)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _identifying_values() -> list[str]:
    values = [v for v in PATIENT.values() if len(v) > 2]
    return values + [v.replace("^", " ") for v in values if "^" in v] + ["Doe", "Jane"]


def _assert_no_patient_data(cine: Cine) -> None:
    texts = [str(cine.source), *cine.notes.keys(), *cine.notes.values()]
    texts += [str(getattr(cine, f.name)) for f in fields(cine) if f.name != "frames"]
    for value in _identifying_values():
        for text in texts:
            assert value.lower() not in text.lower(), (value, text)


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------


def test_is_dicom_reads_the_marker_not_the_name(make, tmp_path: Path) -> None:
    info = make("rgb.dcm", encoding="rgb")
    bare = tmp_path / "IMG0001"  # probes often write no extension
    bare.write_bytes(info.path.read_bytes())
    assert is_dicom(info.path) and is_dicom(bare)
    (tmp_path / "notes.dcm").write_text("not a dicom at all")
    (tmp_path / "short").write_bytes(b"DICM")
    assert not is_dicom(tmp_path / "notes.dcm")
    assert not is_dicom(tmp_path / "short")
    assert not is_dicom(tmp_path / "missing.dcm")


@pytest.mark.parametrize("encoding", ["rgb", "mono", "palette", "ybr_full"])
def test_uncompressed_frames_come_back_as_written(make, encoding: str) -> None:
    info = make(f"{encoding}.dcm", encoding=encoding)
    cine = read_dicom(info.path)
    assert cine.frames.dtype == np.uint8
    assert cine.frames.shape == info.frames.shape
    diff = np.abs(cine.frames.astype(int) - info.frames.astype(int))
    # YBR_FULL <-> RGB is a float transform rounded both ways: off by one at most
    assert diff.max() <= (1 if encoding == "ybr_full" else 0)
    assert cine.num_frames == info.frames.shape[0]
    assert cine.notes["photometric_interpretation"] == {
        "rgb": "RGB", "mono": "MONOCHROME2", "palette": "PALETTE COLOR", "ybr_full": "YBR_FULL"}[encoding]
    assert cine.notes["transfer_syntax"] == "Explicit VR Little Endian"
    assert cine.notes["manufacturer_model"] == "SynthProbe 7"


def test_jpeg_baseline_is_rgb_within_compression_error(make) -> None:
    info = make("jpeg.dcm", encoding="jpeg")
    cine = read_dicom(info.path)
    assert cine.frames.shape == info.frames.shape
    diff = np.abs(cine.frames.astype(float) - info.frames.astype(float))
    assert diff.mean() < 3.0
    # Converted to RGB once, not zero or two times: the ECG trace is still green.
    x0, y0, x1, y1 = info.ecg_box
    trace = info.frames[0, y0:y1, x0:x1, 1] > 150
    got = cine.frames[0, y0:y1, x0:x1][trace].astype(float).mean(axis=0)
    assert got[1] > 150 and got[0] < 90 and got[2] < 90, got
    assert cine.notes["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert cine.notes["photometric_interpretation"] == "YBR_FULL_422"


def test_monochrome1_is_inverted(make, tmp_path: Path) -> None:
    info = make("mono.dcm", encoding="mono")

    def to_mono1(ds):
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (255 - info.frames).tobytes()

    cine = read_dicom(_edit(info.path, tmp_path / "mono1.dcm", to_mono1))
    np.testing.assert_array_equal(cine.frames, info.frames)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timing", TIMINGS)
def test_each_timing_tag_gives_the_frame_rate(make, timing: str) -> None:
    info = make(f"t_{timing}.dcm", encoding="mono", timing=timing)
    cine = read_dicom(info.path)
    assert cine.fps_source == timing
    if timing == "FrameTimeVector":
        # the first entry is the offset of frame 0 (0 ms), not an interval
        steps = [float(v) for v in pydicom.dcmread(info.path).FrameTimeVector[1:]]
        assert cine.fps == pytest.approx(1000.0 / np.mean(steps), rel=1e-9)
    assert cine.fps == pytest.approx(info.fps, rel=2e-3)


def test_timing_tags_are_trusted_in_order(make, tmp_path: Path) -> None:
    info = make("t_FrameTime.dcm", encoding="mono", timing="FrameTime")

    def add_others(ds):
        ds.CineRate, ds.RecommendedDisplayFrameRate = 30, 25

    both = _edit(info.path, tmp_path / "both.dcm", add_others)
    assert (read_dicom(both).fps, read_dicom(both).fps_source) == (pytest.approx(info.fps), "FrameTime")

    def broken_frame_time(ds):
        ds.FrameTime = "0"  # unusable: the next tag decides

    rest = _edit(both, tmp_path / "rest.dcm", broken_frame_time)
    assert (read_dicom(rest).fps, read_dicom(rest).fps_source) == (30.0, "CineRate")


def test_fps_override_wins_and_rescues_a_file_without_timing(make) -> None:
    untimed = make("t_none.dcm", encoding="mono", timing=None)
    cine = read_dicom(untimed.path, fps_override=24.0)
    assert (cine.fps, cine.fps_source) == (24.0, "--fps")
    timed = make("t_CineRate.dcm", encoding="mono", timing="CineRate")
    cine = read_dicom(timed.path, fps_override=24.0)
    assert (cine.fps, cine.fps_source) == (24.0, "--fps")
    assert "CineRate" in cine.notes["file_timing"]
    with pytest.raises(EchoEdgeError, match="--fps must be") as e:
        read_dicom(timed.path, fps_override=-1.0)
    assert not isinstance(e.value, UnusableInput)  # a bad option stops the import


# --------------------------------------------------------------------------------------------
# Region
# --------------------------------------------------------------------------------------------


def test_region_comes_from_the_2d_tissue_region(make) -> None:
    info = make("mono.dcm", encoding="mono")
    cine = read_dicom(info.path)
    assert cine.region == info.sector_box  # DICOM's inclusive max corner made exclusive
    assert "Sequence of Ultrasound Regions" in cine.notes["region_source"]


def test_no_regions_means_find_the_sector_in_the_pixels(make) -> None:
    cine = read_dicom(make("noregions.dcm", encoding="mono", regions=None).path)
    assert cine.region is None
    assert cine.notes["region_source"].startswith("pixels")


def test_largest_tissue_region_wins_and_boxes_are_clipped(make, tmp_path: Path) -> None:
    info = make("mono.dcm", encoding="mono")

    def dual(ds):
        small = pydicom.Dataset()
        small.update(ds.SequenceOfUltrasoundRegions[0])
        small.RegionLocationMinX0, small.RegionLocationMaxX1 = 0, 40
        big = ds.SequenceOfUltrasoundRegions[0]
        big.RegionLocationMaxY1 = 10_000  # past the image: clipped to its rows
        ds.SequenceOfUltrasoundRegions.append(small)

    cine = read_dicom(_edit(info.path, tmp_path / "dual.dcm", dual))
    x0, y0, x1, _ = info.sector_box
    assert cine.region == (x0, y0, x1, info.frames.shape[1])
    assert "largest of 2" in cine.notes["region_source"]

    def colour_only(ds):  # a colour-flow box alone does not bound the B-mode image
        ds.SequenceOfUltrasoundRegions[0].RegionDataType = 2

    cine = read_dicom(_edit(info.path, tmp_path / "colour.dcm", colour_only))
    assert cine.region is None


# --------------------------------------------------------------------------------------------
# Unusable inputs: one line naming the file and the reason
# --------------------------------------------------------------------------------------------

UNUSABLE = {
    "single.dcm": (dict(encoding="mono", single_frame=True), "single frame"),
    "ct.dcm": (dict(encoding="mono", modality="CT"), "not ultrasound (Modality CT"),
    "doppler.dcm": (dict(encoding="mono", regions="doppler"), "Doppler/M-mode only: no 2-D B-mode region"),
    "untimed.dcm": (dict(encoding="mono", timing=None), "no frame timing"),
    "h264.dcm": (dict(encoding="jpeg", transfer_syntax="1.2.840.10008.1.2.4.102"),
                 "no decoder for transfer syntax MPEG-4 AVC/H.264"),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_unusable_dicoms_get_one_line(make, name: str) -> None:
    kw, reason = UNUSABLE[name]
    info = make(name, **kw)
    with pytest.raises(UnusableInput) as e:
        read_dicom(info.path)
    message = str(e.value)
    assert isinstance(e.value, DataError)
    assert message.startswith(str(info.path)) and reason in message and "\n" not in message
    assert e.value.path == info.path


def test_missing_decoder_names_what_to_install(make) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import HTJ2K

    if get_decoder(HTJ2K).is_available:
        pytest.skip("an installed plugin decodes HTJ2K: no undecodable syntax to declare")
    info = make("htj2k.dcm", encoding="jpeg", transfer_syntax=HTJ2K)
    with pytest.raises(UnusableInput, match=r"High-Throughput JPEG 2000.*install .*pylibjpeg-openjpeg"):
        read_dicom(info.path)


def test_not_dicom_truncated_and_corrupt_files(make, tmp_path: Path, capfd) -> None:
    text = tmp_path / "report.dcm"
    text.write_text("a PDF report renamed .dcm\n")
    with pytest.raises(UnusableInput, match=r"report\.dcm: not a DICOM file"):
        read_dicom(text)

    mono = make("mono.dcm", encoding="mono").path
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(mono.read_bytes()[:-1000])
    with pytest.raises(UnusableInput, match=r"cut\.dcm: pixel data truncated"):
        read_dicom(cut)

    jpeg = make("jpeg.dcm", encoding="jpeg").path
    cut.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    with pytest.raises(UnusableInput, match=r"cut\.dcm: truncated DICOM"):
        read_dicom(cut)

    def garble(ds):
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8garbage" * 10] * int(ds.NumberOfFrames))

    capfd.readouterr()
    with pytest.raises(UnusableInput, match=r"bad\.dcm: pixel data cannot be decoded") as e:
        read_dicom(_edit(jpeg, tmp_path / "bad.dcm", garble))
    assert not re.search(r" at 0x[0-9a-f]{6,}", str(e.value))  # no object ids: same file, same line
    assert "Corrupt JPEG data" in str(e.value)  # what libjpeg printed is the reason given
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the codecs' own chatter stays off the console


def test_missing_pydicom_stops_with_an_install_line(make, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make("mono.dcm", encoding="mono").path
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)
    with pytest.raises(EchoEdgeError, match="pip install pydicom") as e:
        read_dicom(path)
    assert not isinstance(e.value, UnusableInput)  # the environment, not the file


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb", "jpeg", "mono"])
def test_cine_holds_no_patient_data(make, encoding: str) -> None:
    info = make(f"{encoding}.dcm", encoding=encoding)
    header = pydicom.dcmread(info.path)
    assert str(header.PatientName) == PATIENT["PatientName"]  # the source does carry it
    cine = read_dicom(info.path, fps_override=30.0)
    _assert_no_patient_data(cine)
