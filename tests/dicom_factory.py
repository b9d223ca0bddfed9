"""Synthetic probe exports: multi-frame ultrasound DICOMs built from the project's synthetic echoes.

Each file looks like what a cart or a handheld probe writes: the 112x112 synthetic sector upscaled
into a larger screen, the patient's name and ID burned into the pixels above and beside the sector,
a green ECG trace below it, the patient/study/institution tags filled in, and (optionally) a
Sequence of Ultrasound Regions. `write_echo_dicom` returns what it wrote, so a test can compare
pixels, timing and geometry with what a reader gives back.

Variants: pixel encoding ("rgb" uncompressed, "jpeg" JPEG Baseline YBR_FULL_422, "mono"
MONOCHROME2), the timing tag, the regions ("tissue", "doppler" only, or none), and the unusable
inputs (single frame, CT modality, a transfer syntax declared that no installed plugin decodes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echoedge.data.synthetic_heart import draw_params_from, video_rng
from echoedge.data.synthetic_render import render_video, sector_mask

CANVAS = (200, 260)  # rows, columns of the probe's screen
SECTOR_SIZE = 160  # the 112-pixel synthetic frame, upscaled
SECTOR_AT = (56, 18)  # its top-left corner (x, y) on the screen
FRAMES = 70  # just over one 32x2 clip (63 source frames)

# Identifying values: none of them may survive an import (tests grep for them).
PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID4711XY",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "StudyDate": "20240517",
    "StudyTime": "101530",
    "AccessionNumber": "ACC99812",
    "InstitutionName": "St Elsewhere Cardiology",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Sono^Grapher",
}
BURNED_NAME = "DOE JANE PID4711XY"  # drawn above the sector
BURNED_SIDE = "4711"  # drawn left of the sector
# drawn inside the sector's bounding box, in its top-left corner beside the fan's apex: the crop
# keeps that corner, so only the sector mask can remove it
BURNED_CORNER = "DOE"

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
TIMINGS = ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate")
_TIMING_TAGS = {"FrameTime": 0x00181063, "FrameTimeVector": 0x00181065, "CineRate": 0x00180040,
                "RecommendedDisplayFrameRate": 0x00082144}


@dataclass
class EchoDicom:
    """What was written: the screen frames, where the sector and the burned-in text are."""

    path: Path
    frames: np.ndarray  # (T, H, W, 3) RGB or (T, H, W) grey: what a viewer shows, before compression
    sector: np.ndarray  # (T, 112, 112) the synthetic frames before upscaling
    screen_grey: np.ndarray  # (T, H, W) the upscaled sector alone on the screen: no text, no ECG
    fan: np.ndarray  # (H, W) bool, the fan on the screen (the synthetic sector mask, upscaled)
    sector_box: tuple[int, int, int, int]  # (x0, y0, x1, y1) exclusive, on the screen
    text_boxes: list[tuple[int, int, int, int]]  # where burned-in patient text was drawn
    ecg_box: tuple[int, int, int, int]
    fps: float
    ef: float


def synthetic_sector(seed: int = 3, index: int = 0, frames: int = FRAMES
                     ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(frames (T, 112, 112) uint8, fan mask (112, 112), fps, EF) of one synthetic video, cut to
    `frames` frames.

    The video's parameters are drawn as for `echo-edge data synth`; only its length changes (the
    traced ED frame is moved into the shorter video so the renderer's exact ED/ES frames exist).
    """
    rng = video_rng(seed, index)
    p = draw_params_from(rng, index)
    ed = min(p.ed_frame, frames - p.systole_frames - 1)
    p = dataclasses.replace(p, frames=frames, ed_frame=max(0, ed))
    return render_video(p, rng), sector_mask(p), float(p.fps), float(p.ef)


def on_screen(sector: np.ndarray) -> np.ndarray:
    """(..., 112, 112) -> (..., H, W): upscaled into the screen at SECTOR_AT, zeros around."""
    import cv2

    x0, y0 = SECTOR_AT
    out = np.zeros(sector.shape[:-2] + CANVAS, sector.dtype)
    flat_in, flat_out = sector.reshape(-1, *sector.shape[-2:]), out.reshape(-1, *CANVAS)
    interp = cv2.INTER_NEAREST if sector.dtype == bool else cv2.INTER_LINEAR
    for k, f in enumerate(flat_in):
        big = cv2.resize(f.astype(np.uint8), (SECTOR_SIZE, SECTOR_SIZE), interpolation=interp)
        flat_out[k, y0:y0 + SECTOR_SIZE, x0:x0 + SECTOR_SIZE] = big
    return out


def compose_screen(sector: np.ndarray, colour: bool = True) -> tuple[np.ndarray, list, tuple]:
    """The probe's screen for each frame: upscaled sector, burned-in text, ECG trace.

    Returns (frames, text boxes, ECG box); text and ECG lie outside the fan (one text inside
    the fan's bounding box, in a corner the fan leaves empty).
    """
    import cv2

    t = sector.shape[0]
    h, w = CANVAS
    x0, y0 = SECTOR_AT
    screen = np.repeat(on_screen(sector)[..., None], 3, axis=3)
    font = cv2.FONT_HERSHEY_SIMPLEX
    texts = [(BURNED_NAME, (4, 13)), (BURNED_SIDE, (4, 100)), (BURNED_CORNER, (x0 + 2, y0 + 12))]
    boxes = []
    for text, (tx, ty) in texts:
        (tw, th), base = cv2.getTextSize(text, font, 0.4, 1)
        boxes.append((tx, ty - th - 1, tx + tw + 1, ty + base + 1))
        for k in range(t):
            cv2.putText(screen[k], text, (tx, ty), font, 0.4, (255, 255, 255), 1, cv2.LINE_8)
    # ECG: a sweeping trace, one spike per ~35 frames of x, green like every scanner's.
    ecg_y0, ecg_y1 = y0 + SECTOR_SIZE + 3, h - 2
    xs = np.arange(8, w - 8)
    base_y = (ecg_y0 + ecg_y1) / 2
    spikes = np.exp(-0.5 * (((xs - 8) % 80 - 40) / 2.0) ** 2)
    ys = (base_y - 7 * spikes + 1.5 * np.sin(xs / 9.0)).round().astype(np.int32)
    points = np.stack([xs, ys], axis=1).reshape(-1, 1, 2)
    for k in range(t):
        cv2.polylines(screen[k], [points], False, (0, 220, 0), 1, cv2.LINE_8)
    ecg_box = (int(xs[0]), ecg_y0, int(xs[-1]) + 1, ecg_y1)
    if not colour:
        screen = screen.max(axis=3)  # a grey screen keeps text and ECG bright
    return screen, boxes, ecg_box


def _region(fmt: int, dtype: int, box: tuple[int, int, int, int]):
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = fmt, dtype, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = box[0], box[1]
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box[2] - 1, box[3] - 1  # inclusive in DICOM
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3  # cm
    r.PhysicalDeltaX = r.PhysicalDeltaY = 0.126 * 112 / SECTOR_SIZE
    return r


def _palette_lut() -> np.ndarray:
    """(256, 3) a sepia-like palette as 16-bit entries, as scanners write them."""
    g = np.arange(256)
    return np.stack([g, g, g // 2], axis=1) * 257


def _palette(ds) -> None:
    lut = _palette_lut().astype("<u2")
    for i, c in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", lut[:, i].tobytes())


def _apply_palette(grey: np.ndarray) -> np.ndarray:
    """The RGB a viewer shows for palette indices `grey`, at 8 bits."""
    return (_palette_lut()[grey] >> 8).astype(np.uint8)


def _jpeg_fragments(frames: np.ndarray) -> list[bytes]:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 95,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), params)
        assert ok
        out.append(buf.tobytes())
    return out


def write_echo_dicom(
    path: Path,
    *,
    seed: int = 3,
    index: int = 0,
    frames: int = FRAMES,
    encoding: str = "rgb",
    timing: str | None = "FrameTime",
    regions: str | None = "tissue",
    modality: str = "US",
    transfer_syntax: str | None = None,
    model_name: str = "SynthProbe 7",
    single_frame: bool = False,
) -> EchoDicom:
    """Write one synthetic probe cine to `path` and say what is in it.

    encoding: "rgb" (Explicit VR Little Endian, RGB), "jpeg" (JPEG Baseline, YBR_FULL_422),
    "mono" (MONOCHROME2), "ybr_full" (uncompressed YBR_FULL) or "palette" (PALETTE COLOR; the
    returned frames are then the RGB the palette gives). timing: one of TIMINGS, or None for no
    timing tag. regions: "tissue" (2-D tissue region + ECG waveform region), "doppler" (a
    spectral Doppler region + ECG, no 2-D tissue region) or None (no Sequence of Ultrasound
    Regions). modality "CT" writes a CT Image Storage object. transfer_syntax overrides the
    declared syntax (the JPEG fragments stay: the reader must refuse before decoding).
    single_frame keeps only the first frame (Number of Frames 1).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    sector, fan, fps, ef = synthetic_sector(seed, index, frames)
    screen, text_boxes, ecg_box = compose_screen(sector, colour=encoding not in ("mono", "palette"))
    if single_frame:  # a still: the probe's freeze-frame export
        sector, screen = sector[:1], screen[:1]
    x0, y0 = SECTOR_AT
    sector_box = (x0, y0, x0 + SECTOR_SIZE, y0 + SECTOR_SIZE)
    entropy = [str(seed), str(index), str(path.name)]
    sop_class = US_MULTIFRAME if modality == "US" else CT_IMAGE

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=entropy + ["sop"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=entropy + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=entropy + ["series"])
    ds.Modality = modality
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.Manufacturer, ds.ManufacturerModelName = "EchoEdge Tests", model_name
    ds.BurnedInAnnotation = "YES"

    ds.Rows, ds.Columns = screen.shape[1], screen.shape[2]
    ds.NumberOfFrames = screen.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    stored = screen
    if encoding in ("mono", "palette"):
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2" if encoding == "mono" else "PALETTE COLOR"
        if encoding == "palette":
            _palette(ds)
            screen = _apply_palette(screen)
    elif encoding == "ybr_full":  # uncompressed YBR: the reader converts it to RGB
        from pydicom.pixels import convert_color_space

        ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "YBR_FULL"
        stored = convert_color_space(screen, "RGB", "YBR_FULL")
    else:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.PhotometricInterpretation = "YBR_FULL_422" if encoding == "jpeg" else "RGB"

    if timing == "FrameTime":
        ds.FrameTime = f"{1000.0 / fps:.4f}"
    elif timing == "FrameTimeVector":
        # A probe's real intervals jitter; their mean is still the frame period.
        step = 1000.0 / fps
        jitter = np.tile([-0.4, 0.4], frames)[: len(screen) - 1]
        ds.FrameTimeVector = ["0"] + [f"{step + j:.4f}" for j in jitter]
    elif timing == "CineRate":
        ds.CineRate = int(round(fps))
    elif timing == "RecommendedDisplayFrameRate":
        ds.RecommendedDisplayFrameRate = int(round(fps))
    if timing:
        ds.FrameIncrementPointer = _TIMING_TAGS[timing]

    if regions == "tissue":
        ds.SequenceOfUltrasoundRegions = [_region(1, 1, sector_box), _region(4, 10, ecg_box)]
    elif regions == "doppler":
        spectral = (0, y0, CANVAS[1], y0 + SECTOR_SIZE)
        ds.SequenceOfUltrasoundRegions = [_region(3, 3, spectral), _region(4, 10, ecg_box)]

    if encoding == "jpeg":
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate(_jpeg_fragments(screen))
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OB"
    if transfer_syntax:
        assert encoding == "jpeg", "a declared compressed syntax needs encapsulated fragments"
        meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    return EchoDicom(path=Path(path), frames=screen, sector=sector, screen_grey=on_screen(sector),
                     fan=on_screen(fan).astype(bool), sector_box=sector_box,
                     text_boxes=text_boxes, ecg_box=ecg_box, fps=fps, ef=ef)
