"""Fuzzed inputs: hypothesis strategies and the properties every reader must keep (issue 16).

The property, for each reader: a damaged or odd input either parses to the value the file states
(and a value a heart can have: EF in 0-100, finite volumes, frames of one size) or raises
EchoEdgeError whose message is one line naming the file. Never another exception, never a silently
wrong number.

Shared by tests/test_fuzz_inputs.py (a bounded, derandomized count for CI) and
bench/bench_fuzz.py (the same properties, many more cases). `CASES` counts what each ran.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from echoedge.data.echonet_csv import FILELIST_OPTIONAL, FILELIST_REQUIRED, TRACINGS_REQUIRED, strip_avi
from echoedge.errors import EchoEdgeError

CASES: Counter = Counter()  # target -> cases (generated inputs) tried, this process
OUTCOMES: Counter = Counter()  # (target, "parsed" | "refused") -> reads (a case may read twice)


def expect_clean(target: str, names: str | tuple[str, ...], call: Callable[[], Any]) -> Any:
    """call(): its value, or None after checking the EchoEdgeError is one line naming `names`
    (any of them). Any other exception propagates: hypothesis reports it as the failure."""
    names = (names,) if isinstance(names, str) else names
    try:
        value = call()
    except EchoEdgeError as e:
        msg = str(e)
        assert msg and len(msg.splitlines()) == 1 and "\n" not in msg and "\r" not in msg, repr(msg)
        assert any(n in msg for n in names), f"{msg!r} names none of {names}"
        OUTCOMES[(target, "refused")] += 1
        return None
    OUTCOMES[(target, "parsed")] += 1
    return value


class Workdir:
    """A fresh folder per example (hypothesis reruns a test body many times in one test)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="echoedge-fuzz-"))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Byte-level damage, shared by every file kind


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` unchanged, truncated, with bit flips, with bytes overwritten or with junk inserted."""
    kind = draw(st.sampled_from(["none", "truncate", "flip", "overwrite", "insert"]))
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: draw(st.integers(0, max(len(b) - 1, 0)))])
    if kind == "flip" and b:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
    if kind == "overwrite" and b:
        i = draw(st.integers(0, len(b) - 1))
        junk = draw(st.binary(min_size=1, max_size=16))
        b[i:i + len(junk)] = junk
    if kind == "insert":
        i = draw(st.integers(0, len(b)))
        b[i:i] = draw(st.sampled_from([b"\xff\xfe", b"\x00", b"\xc3\x28", b"\"", b"\n", b"\r\n,,"]))
    return bytes(b)


# ---------------------------------------------------------------------------------------------
# FileList.csv and VolumeTracings.csv

NUMBER_EDGES = ["nan", "NaN", " -nan ", "inf", "-inf", "Infinity", "1e400", "-5", "150", "-0.0001",
                "100.0001", "0", "100", "", " ", "abc", "1,5", "0x10", "55.5.5", "\u00e9"]
names = st.sampled_from(["0X01", "0X02", "0X03", "0X01.avi", " 0X02 ", "", "a\nb", "0X\u00e9"])


def number_cells(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.one_of(st.floats(lo, hi).map(lambda v: f"{v:.4f}"), st.sampled_from(NUMBER_EDGES),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.text(max_size=4))


FILELIST_CELLS: dict[str, st.SearchStrategy[str]] = {
    "FileName": names,
    "EF": number_cells(0, 100), "ESV": number_cells(0, 200), "EDV": number_cells(0, 300),
    "FPS": st.one_of(st.sampled_from(["50", "30.0", "0", "-1"]), number_cells(1, 120)),
    "NumberOfFrames": st.one_of(st.sampled_from(["30", "72", "0", "2.5", "1e9"]), number_cells(1, 200)),
    "Split": st.sampled_from(["TRAIN", "VAL", "TEST", " train ", "Test", "X", ""]),
    "FrameHeight": st.sampled_from(["112", "", "768", "abc"]),
    "FrameWidth": st.sampled_from(["112", "", "1024", "-1"]),
}


@st.composite
def columns(draw: st.DrawFn, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    """The header: some columns dropped, duplicated or added, in any order."""
    cols = list(required) + draw(st.lists(st.sampled_from(optional), unique=True)) if optional \
        else list(required)
    if draw(st.integers(0, 4)) == 0:
        cols.remove(draw(st.sampled_from(cols)))
    if draw(st.integers(0, 4)) == 0:
        cols.append(draw(st.sampled_from(cols)))  # duplicated: the first one is the column
    if draw(st.integers(0, 4)) == 0:
        cols.append(draw(st.sampled_from(["Extra", "Notes", ""])))
    return draw(st.permutations(cols))


def encode(draw: st.DrawFn, text: str) -> bytes:
    enc = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(enc, errors="replace")


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@st.composite
def filelist_cases(draw: st.DrawFn) -> tuple[bytes, list[dict[str, str]], bool]:
    """(file bytes, the rows as written, whether the bytes are exactly that UTF-8 text)."""
    header = draw(columns(FILELIST_REQUIRED, FILELIST_OPTIONAL))
    rows = [{c: draw(FILELIST_CELLS.get(c, st.text(max_size=3))) for c in dict.fromkeys(header)}
            for _ in range(draw(st.integers(0, 5)))]
    if rows and draw(st.booleans()):
        rows.append(dict(draw(st.sampled_from(rows))))  # a duplicated row
    body = [[r[c] for c in header] for r in rows]
    short = None
    if body and draw(st.integers(0, 3)) == 0:  # a row with fewer or more cells than the header
        i = draw(st.integers(0, len(body) - 1))
        n = draw(st.integers(0, len(header) + 2))
        body[i] = (body[i] + ["x", "y"])[:n]
        short = i if n < len(header) else None  # a longer row keeps its named cells
    text = csv_text(header, body)
    data = draw(damaged(encode(draw, text)))
    return data, [r for i, r in enumerate(rows) if i != short], data == text.encode("utf-8")


def dataset_root(root: Path, filelist: bytes, tracings: bytes | None, video_names: list[str]) -> Path:
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    (root / "FileList.csv").write_bytes(filelist)
    if tracings is not None:
        (root / "VolumeTracings.csv").write_bytes(tracings)
    for n in video_names:
        n = strip_avi(n)
        if n and "/" not in n and "\x00" not in n and n not in (".", ".."):
            (root / "Videos" / f"{n}.avi").write_bytes(b"")  # scan only lists Videos/
    return root


def _expected(cell: str) -> float:
    return math.nan if not cell.strip() else float(cell)


def check_filelist(case: tuple[bytes, list[dict[str, str]], bool]) -> None:
    """scan() never raises; every row it accepts states exactly what the file says, a heart's
    values; EchoNet() opens or refuses with one line."""
    from echoedge.data.echonet import EchoNet
    from echoedge.data.echonet_scan import scan

    data, rows, exact = case
    with Workdir() as tmp:
        root = dataset_root(tmp / "set", data, None, [r.get("FileName", "") for r in rows])
        CASES["FileList.csv"] += 1
        s = expect_clean("FileList.csv", "FileList.csv", lambda: scan(root))
        assert s is not None  # scan reports, never raises
        for issue in s.issues:
            assert len(issue.message.splitlines()) == 1, issue
        first = {}
        for r in rows:
            first.setdefault(strip_avi(r.get("FileName", "")), r)
        for row in s.rows:
            assert math.isnan(row.ef) or 0 <= row.ef <= 100, row
            for v in (row.esv, row.edv):
                assert math.isnan(v) or (math.isfinite(v) and v >= 0), row
            assert math.isfinite(row.fps) and row.fps > 0 and row.num_frames >= 1, row
            if exact and row.name in first:
                want = first[row.name]
                assert _same(row.ef, _expected(want["EF"])) and _same(row.edv, _expected(want["EDV"]))
                assert row.num_frames == int(float(want["NumberOfFrames"])), row
        ds = expect_clean("FileList.csv", ("FileList.csv", "VolumeTracings.csv", "Videos"),
                          lambda: EchoNet(root))
        for rec in ds._records if ds is not None else []:
            assert 0 <= rec.ef <= 100 and math.isfinite(rec.ef), rec


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@st.composite
def tracings_cases(draw: st.DrawFn) -> bytes:
    """VolumeTracings.csv for FileList 0X01/0X02 (30 frames each): real ellipse tracings, then
    cells, rows and columns damaged."""
    from tests.data.fixtures import ellipse_rows

    header = draw(columns(TRACINGS_REQUIRED))
    rows: list[dict[str, str]] = []
    for name in ("0X01", "0X02"):
        for frame, scale in ((draw(st.integers(0, 40)), 1.0), (draw(st.integers(0, 40)), 0.8)):
            for x1, y1, x2, y2 in ellipse_rows(30 * scale, 14 * scale):
                rows.append({"FileName": f"{name}.avi", "X1": f"{x1:.3f}", "Y1": f"{y1:.3f}",
                             "X2": f"{x2:.3f}", "Y2": f"{y2:.3f}", "Frame": str(frame)})
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(rows) - 1))
        what = draw(st.sampled_from(["cell", "drop", "dup"]))
        if what == "cell":
            col = draw(st.sampled_from(TRACINGS_REQUIRED))
            cell = names if col == "FileName" else number_cells(-5, 120)
            rows[i] = {**rows[i], col: draw(cell)}
        elif what == "drop":
            del rows[i]
        else:
            rows.insert(i, dict(rows[i]))
    text = csv_text(header, [[r.get(c, "") for c in header] for r in rows])
    return draw(damaged(encode(draw, text)))


TRACED_FILELIST = ("FileName,EF,ESV,EDV,FPS,NumberOfFrames,Split\n"
                   "0X01,60,40,100,50,30,TRAIN\n0X02,55,45,100,50,30,TEST\n").encode()


def check_tracings(data: bytes) -> None:
    from echoedge.data.echonet import EchoNet
    from echoedge.data.echonet_scan import scan

    with Workdir() as tmp:
        root = dataset_root(tmp / "set", TRACED_FILELIST, data, ["0X01", "0X02"])
        CASES["VolumeTracings.csv"] += 1
        s = expect_clean("VolumeTracings.csv", "VolumeTracings.csv", lambda: scan(root))
        assert s is not None
        for issue in s.issues:
            assert len(issue.message.splitlines()) == 1, issue
        for rec in s.records:
            if rec.has_tracings:
                assert rec.ed_tracing.shape == (21, 4) and np.isfinite(rec.ed_tracing).all()
                assert rec.es_tracing.shape == (21, 4) and np.isfinite(rec.es_tracing).all()
                assert 0 <= rec.ed_frame < rec.num_frames and 0 <= rec.es_frame < rec.num_frames
                assert rec.ed_volume_px >= rec.es_volume_px
        expect_clean("VolumeTracings.csv", ("FileList.csv", "VolumeTracings.csv", "Videos"),
                     lambda: EchoNet(root))


# ---------------------------------------------------------------------------------------------
# The video reader

_AVI: dict[str, Any] = {}


def tiny_avi() -> tuple[bytes, np.ndarray]:
    """A real 6-frame 24x32 MJPG AVI written by the test helpers, and its decoded frames."""
    if not _AVI:
        from echoedge.data.video import read_video, write_video
        from tests.data.fixtures import FixtureVideo, video_frames

        v = FixtureVideo(name="0XF", size=(24, 32), num_frames=6, ed_frame=1, es_frame=4)
        with Workdir() as tmp:
            write_video(tmp / "v.avi", video_frames(v), 50.0)
            _AVI["bytes"] = (tmp / "v.avi").read_bytes()
            _AVI["frames"] = read_video(tmp / "v.avi")
            write_video(tmp / "e.avi", np.zeros((1, 24, 32), np.uint8), 50.0)
            _AVI["one"] = (tmp / "e.avi").read_bytes()
    return _AVI["bytes"], _AVI["frames"]


def _header_edit(raw: bytes, where: str, value: int) -> bytes:
    """Overwrite a declared size or count: avih width/height/frames, strf width/height, or the
    JPEG SOF0 height/width of one frame or of all."""
    import struct

    b = bytearray(raw)
    if where.startswith("avih"):
        i = raw.find(b"avih") + 8
        off = {"avih-frames": 16, "avih-size": 32}[where]
        b[i + off:i + off + (4 if where == "avih-frames" else 8)] = (
            struct.pack("<I", value) if where == "avih-frames" else struct.pack("<II", value, value))
    elif where == "strf-size":
        i = raw.find(b"strf") + 12
        b[i:i + 8] = struct.pack("<ii", value, value)
    else:
        sofs = [k for k in range(len(raw) - 1) if raw[k:k + 2] == b"\xff\xc0"]
        for k in (sofs if where == "sof-all" else sofs[1:2]):
            b[k + 5:k + 9] = struct.pack(">HH", value & 0xFFFF, value & 0xFFFF)
    return bytes(b)


@st.composite
def video_cases(draw: st.DrawFn) -> bytes:
    raw, _ = tiny_avi()
    kind = draw(st.sampled_from(["bytes", "header", "zero-frames", "not-video"]))
    if kind == "header":
        where = draw(st.sampled_from(["avih-frames", "avih-size", "strf-size", "sof-one", "sof-all"]))
        value = draw(st.sampled_from([0, 1, 7, 48, 4096, 65535, 2**31 - 1, 2**32 - 1]))
        if where == "strf-size":
            value = min(value, 2**31 - 1)
        return _header_edit(raw, where, value)
    if kind == "zero-frames":
        # A header with its frame data cut off: the movi list of the one-frame file emptied.
        one = _AVI["one"]
        return one[: one.find(b"movi") + 4 + draw(st.integers(0, 8))]
    if kind == "not-video":
        return draw(st.sampled_from([b"", b"RIFF", b"RIFF\x00\x00\x00\x00AVI LIST", b"FileName,EF\n"]))
    return draw(damaged(raw))


def check_video(data: bytes) -> None:
    """read_video returns uint8 (F, H, W), every frame one size, the original frames when the
    bytes are the original's, or a one-line DataError naming the file."""
    from echoedge.data.echonet_scan import probe_frame_size
    from echoedge.data.video import read_video, video_fps

    raw, frames = tiny_avi()
    with Workdir() as tmp:
        path = tmp / "0XF.avi"
        path.write_bytes(data)
        CASES["video"] += 1
        out = expect_clean("video", "0XF.avi", lambda: read_video(path))
        if out is not None:
            assert out.dtype == np.uint8 and out.ndim == 3 and min(out.shape) >= 1, out.shape
            if data == raw:
                assert np.array_equal(out, frames)
        fps = expect_clean("video", "0XF.avi", lambda: video_fps(path))
        assert fps is None or (math.isfinite(fps) and fps > 0)
        size = probe_frame_size(path)  # never raises: None when unreadable
        assert size is None or (size[0] > 0 and size[1] > 0)
