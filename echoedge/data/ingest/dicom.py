"""A probe's DICOM cine -> Cine: frames, frame rate and the 2-D B-mode region, nothing identifying.

Accepted: multi-frame ultrasound (US Multi-frame Image Storage, or any SOP class with Modality US)
whose Photometric Interpretation is MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 or PALETTE COLOR,
in any transfer syntax an installed pydicom decoder handles (python-gdcm and Pillow cover JPEG
Baseline/Extended/Lossless, JPEG-LS, JPEG 2000 and RLE). Everything else is an `UnusableInput`
with one line saying why, so the importer can skip the file and go on.

Nothing from the patient, study or institution modules is read into the Cine: only pixels,
timing, the region geometry and a few equipment facts (transfer syntax, photometric
interpretation, model name) that the import log records.

pydicom is imported inside the functions: this module sits on the CLI's import path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.data.ingest.cine import Cine, UnusableInput
from echoedge.errors import EchoEdgeError, first_line

_US_MULTIFRAME = ("1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.3")  # current, retired
_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"  # Enhanced US Volume: 3-D, its frames are slices

# Frame rate tags in the order they are trusted: (keyword, name and tag as a message prints them).
_TIMING = (
    ("FrameTime", "Frame Time (0018,1063)"),
    ("FrameTimeVector", "Frame Time Vector (0018,1065)"),
    ("CineRate", "Cine Rate (0018,0040)"),
    ("RecommendedDisplayFrameRate", "Recommended Display Frame Rate (0008,2144)"),
)
_MAX_FPS = 1000.0  # above any echo frame rate: a larger value is a broken tag, not a fast probe

# PS3.3 C.8.5.5.1.1 Region Spatial Format and C.8.5.5.1.2 Region Data Type.
_SPATIAL = {0: "none", 1: "2-D", 2: "M-mode", 3: "spectral Doppler", 4: "waveform", 5: "graphics"}
_DATA_TYPE = {0: "none", 1: "tissue", 2: "color flow", 3: "PW Doppler", 4: "CW Doppler",
              5: "Doppler mean trace", 6: "Doppler mode trace", 7: "Doppler max trace",
              8: "volume trace", 9: "d(volume)/dt trace", 10: "ECG trace", 11: "pulse trace",
              12: "phonocardiogram trace", 13: "gray bar", 14: "color bar",
              15: "integrated backscatter", 16: "area trace", 17: "d(area)/dt trace",
              18: "other physiological trace"}
_FORMAT_2D, _TYPE_TISSUE = 1, 1
_FORMATS_NOT_BMODE = (2, 3)  # M-mode, spectral Doppler
_TYPES_DOPPLER = (3, 4)  # PW, CW spectral Doppler


def is_dicom(path: str | Path) -> bool:
    """True when the file carries DICOM's Part 10 marker ('DICM' at byte 128); names don't matter,
    probes often write files without an extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: str | Path, fps_override: float | None = None) -> Cine:
    """Decode one multi-frame ultrasound DICOM into a Cine at its stored size.

    fps_override (the importer's --fps) wins over the file's timing tags, and makes a file that
    has none usable. Raises UnusableInput (one line: the file and the reason) for anything that is not
    a 2-D ultrasound cine this machine can decode.
    """
    path = Path(path)
    ds = _open(path)
    _check_ultrasound(path, ds)
    num_frames = _check_frames(path, ds)
    fps, fps_source, file_timing = _frame_rate(path, ds, fps_override)
    region_box, region_source = _region(path, ds)
    frames, photometric = _decode(path, ds, num_frames)
    region, region_source = _clip_region(region_box, region_source, frames.shape[2], frames.shape[1])

    notes = {
        "transfer_syntax": _uid_name(ds.file_meta.get("TransferSyntaxUID")),
        "photometric_interpretation": photometric,
        "manufacturer_model": str(ds.get("ManufacturerModelName", "") or "unknown"),
        "region_source": region_source,
    }
    if fps_source == "--fps" and file_timing:
        notes["file_timing"] = file_timing  # what the file said, for the log next to --fps
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        notes["burned_in_annotation"] = "YES"
    return Cine(source=path, frames=frames, fps=fps, fps_source=fps_source, region=region, notes=notes)


# --------------------------------------------------------------------------------------------
# Header checks (cheap: before any pixel is decoded)
# --------------------------------------------------------------------------------------------


def _open(path: Path) -> Any:
    import warnings

    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # the environment, not this file: stop the import, don't skip the file
        raise EchoEdgeError(f"{path}: reading DICOM needs pydicom; "
                            "pip install pydicom==3.0.2 python-gdcm==3.2.6") from None

    if not path.is_file():
        raise UnusableInput(path, "file not found")
    # pydicom warns about every odd value; those lines would clutter the import's console and may
    # quote tag values (a patient's name), so they are caught here and only EOF is acted on.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            raise UnusableInput(path, "not a DICOM file (no 'DICM' marker at byte 128)") from None
        except Exception as e:  # corrupt: pydicom raises many kinds (EOF, struct, value)
            raise UnusableInput(path, f"unreadable DICOM ({_first_line(e)})") from None
    if any("End of file" in str(w.message) for w in caught):
        raise UnusableInput(path, "truncated DICOM (the file ends inside an element)")
    return ds


def _uid_name(uid: Any) -> str:
    if not uid:
        return "unknown"
    from pydicom.uid import UID

    u = UID(str(uid))
    return u.name if u.name != str(u) else str(u)


def _check_ultrasound(path: Path, ds: Any) -> None:
    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    modality = str(ds.get("Modality", "") or "")
    if sop == _US_VOLUME:
        raise UnusableInput(path, "3-D ultrasound volume (Enhanced US Volume), not a 2-D cine")
    if sop in _US_MULTIFRAME or modality.upper() == "US":
        return
    raise UnusableInput(
        path, f"not ultrasound (Modality {modality or 'missing'}, SOP Class {_uid_name(sop)})")


def _check_frames(path: Path, ds: Any) -> int:
    if "PixelData" not in ds:
        raise UnusableInput(path, "no pixel data (not an image, or the file is truncated)")
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise UnusableInput(
            path, f"Number of Frames (0028,0008) is not a number: {ds.NumberOfFrames!r}") from None
    if n < 2:
        raise UnusableInput(path, f"single frame (Number of Frames {n}): a still image, not a cine")
    return n


def _positive(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def _fps_from(ds: Any, keyword: str) -> float | None:
    """The frame rate one timing tag states, or None when it is absent or unusable."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if keyword == "FrameTime":  # ms between frames
        ms = _positive(value)
        return 1000.0 / ms if ms else None
    if keyword == "FrameTimeVector":  # ms from the previous frame; the first entry is 0 by definition
        values = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        steps = [s for s in (_positive(v) for v in values[1:]) if s]
        return 1000.0 / float(np.mean(steps)) if steps else None
    return _positive(value)  # CineRate, RecommendedDisplayFrameRate: frames per second


def _frame_rate(path: Path, ds: Any, fps_override: float | None) -> tuple[float, str, str]:
    """(fps, where it came from, what the file's own timing said)."""
    found = None
    for keyword, _tag in _TIMING:
        fps = _fps_from(ds, keyword)
        if fps is not None and fps <= _MAX_FPS:
            found = (fps, keyword)
            break
    file_timing = f"{found[0]:.3f} fps from {found[1]}" if found else ""
    if fps_override is not None:
        if not (_positive(fps_override) and fps_override <= _MAX_FPS):
            # the command line's fault, not this file's: stop rather than skip every file
            raise EchoEdgeError(f"--fps must be in (0, {_MAX_FPS:g}], got {fps_override}")
        return float(fps_override), "--fps", file_timing
    if found is None:
        tags = ", ".join(name for _k, name in _TIMING)
        raise UnusableInput(path, f"no frame timing: none of {tags} holds a usable value; give --fps")
    return found[0], found[1], file_timing


def _region(path: Path, ds: Any) -> tuple[tuple[int, int, int, int] | None, str]:
    """The 2-D tissue region's box (exclusive ends, not yet clipped to the image) and its source.

    Several 2-D tissue regions (a side-by-side dual display) -> the largest. No 2-D tissue region
    but Doppler or M-mode ones -> unusable. Only regions of other kinds (colour-flow box, ECG
    trace, graphics) -> None: the importer finds the sector in the pixels.
    """
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None, "pixels (no Sequence of Ultrasound Regions)"
    tissue, kinds = [], []
    for item in regions:
        fmt = int(item.get("RegionSpatialFormat", 0) or 0)
        dtype = int(item.get("RegionDataType", 0) or 0)
        kinds.append((fmt, dtype))
        if fmt == _FORMAT_2D and dtype == _TYPE_TISSUE:
            try:
                x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
                x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
            except (AttributeError, TypeError, ValueError):
                continue  # a region without its location cannot place the image
            tissue.append((x0, y0, x1 + 1, y1 + 1))  # DICOM's max corner is inclusive
    if tissue:
        box = max(tissue, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        more = f", largest of {len(tissue)}" if len(tissue) > 1 else ""
        return box, f"Sequence of Ultrasound Regions (2-D tissue region{more})"
    if any(f in _FORMATS_NOT_BMODE or t in _TYPES_DOPPLER for f, t in kinds):
        found = ", ".join(sorted({f"{_SPATIAL.get(f, f'format {f}')} ({_DATA_TYPE.get(t, f'type {t}')})"
                                  for f, t in kinds}))
        raise UnusableInput(path, f"Doppler/M-mode only: no 2-D B-mode region (regions: {found})")
    return None, "pixels (no 2-D tissue region in the Sequence of Ultrasound Regions)"


def _clip_region(box: tuple[int, int, int, int] | None, source: str, width: int,
                 height: int) -> tuple[tuple[int, int, int, int] | None, str]:
    if box is None:
        return None, source
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[2]), min(height, box[3])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None, f"pixels (the 2-D tissue region {box} lies outside the {width}x{height} image)"
    return (x0, y0, x1, y1), source


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------


def _decoder(path: Path, ds: Any) -> Any:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.get("TransferSyntaxUID")
    if not uid:
        raise UnusableInput(path, "no Transfer Syntax UID (0002,0010) in the file meta information")
    name = f"{_uid_name(uid)} ({uid})"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        # pydicom decodes no video syntax (MPEG-2, H.264, HEVC); the scanner can export JPEG.
        raise UnusableInput(path, f"no decoder for transfer syntax {name}: pydicom cannot decode it; "
                                  "export the cine uncompressed or as JPEG from the scanner") from None
    if not decoder.is_available:
        # pydicom words each missing plugin as "name - requires pkg>=x and pkg>=y"
        need = " or ".join(m.partition(" - requires ")[2] or m for m in decoder.missing_dependencies)
        need = need or "a pydicom decoding plugin"
        raise UnusableInput(path, f"no decoder for transfer syntax {name}: install {need}")
    return decoder


def _decode(path: Path, ds: Any, num_frames: int) -> tuple[np.ndarray, str]:
    """(frames uint8 (T, H, W) or (T, H, W, 3) RGB, photometric interpretation as stored)."""
    stored = str(ds.get("PhotometricInterpretation", "") or "")
    if stored not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"):
        raise UnusableInput(path, f"unsupported Photometric Interpretation {stored or 'missing'}")
    decoder = _decoder(path, ds)
    _check_native_length(path, ds, num_frames)
    import warnings

    with warnings.catch_warnings(), _codec_stderr() as chatter:  # see _open and _codec_stderr
        warnings.simplefilter("ignore")
        try:
            # as_rgb: YBR becomes RGB whether the codec already converted (JPEG via Pillow or
            # GDCM does) or not; `meta` says what the array now is, so nothing converts twice.
            arr, meta = decoder.as_array(ds, as_rgb=True)
            photometric = str(meta.get("photometric_interpretation", stored))
            if photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                arr = apply_color_lut(arr, ds)
        except Exception as e:  # corrupt fragments, wrong lengths: the codecs' own words
            error = e
        else:
            error = None
    if error is not None:
        said = "; ".join(x for x in (_codec_errors(error), chatter.first_line()) if x)
        raise UnusableInput(path, f"pixel data cannot be decoded ({said[:240]})")
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3) or arr.shape[0] != num_frames:
        raise UnusableInput(path, f"decoded pixels have shape {arr.shape}, expected {num_frames} frames "
                                  "of grey or RGB")
    arr = _to_uint8(arr, ds, photometric)
    if photometric == "MONOCHROME1":  # 0 is white: invert so tissue is bright like everywhere else
        arr = 255 - arr
    return np.ascontiguousarray(arr), stored


def _check_native_length(path: Path, ds: Any, num_frames: int) -> None:
    """Uncompressed pixel data shorter than its header says: a cut-off copy (say it plainly)."""
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                    * num_frames * (int(ds.BitsAllocated) // 8 or 1))
    except (AttributeError, TypeError, ValueError):
        return  # the decoder names the missing Image Pixel element
    got = len(ds.PixelData)
    if got < expected:
        raise UnusableInput(path, f"pixel data truncated: {got} of {expected} bytes")


def _codec_errors(e: BaseException) -> str:
    """pydicom's "all plugins failed" error in one line: each plugin's reason, no object ids."""
    import re

    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", "; ".join(lines)) or type(e).__name__


class _CapturedStderr:
    def __init__(self) -> None:
        import tempfile

        self.file = tempfile.TemporaryFile()

    def first_line(self) -> str:
        self.file.seek(0)
        text = self.file.read(4096).decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else ""


@contextmanager
def _codec_stderr() -> Iterator[_CapturedStderr]:
    """Catch what C codecs print straight to file descriptor 2 while pixels decode.

    GDCM's libjpeg writes "Corrupt JPEG data: ..." to stderr itself, past Python's sys.stderr:
    the import's console must stay clean, and that line is the best reason a broken file gives.
    """
    import os
    import sys

    captured = _CapturedStderr()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.file.fileno(), 2)
    try:
        yield captured
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _to_uint8(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """Ultrasound is 8-bit almost always; deeper data keeps its top 8 significant bits."""
    if arr.dtype == np.uint8:
        return arr
    if photometric == "PALETTE COLOR":  # LUT entries are 8 or 16 bits wide
        bits = 16 if int(arr.max(initial=0)) > 255 else 8
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    arr = np.clip(arr.astype(np.int64), 0, None)  # signed grey is not an ultrasound picture
    return (arr >> max(0, bits - 8)).clip(0, 255).astype(np.uint8)


def _first_line(e: BaseException) -> str:
    return first_line(e, 160)
