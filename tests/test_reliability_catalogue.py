"""docs/reliability.md, kept true: every row of its table is a scenario run here.

Each row names a scenario id; `SCENARIOS` maps the id to a function that produces the input or
fault (cheaply: in-process through echoedge.cli.main where the command is cheap, else the reader
the command calls, worded as the CLI words an EchoEdgeError) and returns (exit code, the line the
user sees). The test checks both against the row: the line must start with the row's text, where
`<...>` stands for a path, a number or a name that varies. A row without a scenario, or a
scenario without a row, fails the test too, so the page cannot drift from the code.

To add a row: write the row in docs/reliability.md and a `@scenario("its-id")` function here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from echoedge.cli import main
from echoedge.errors import EchoEdgeError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
SCENARIOS: dict[str, Callable[[Path, pytest.CaptureFixture], tuple[int, str]]] = {}


def scenario(sid: str):
    def register(fn):
        assert sid not in SCENARIOS, sid
        SCENARIOS[sid] = fn
        return fn
    return register


def as_cli(call: Callable[[], object]) -> tuple[int, str]:
    """What the CLI prints and returns when `call` (a reader a command calls) raises."""
    try:
        call()
    except EchoEdgeError as e:
        return e.exit_code, f"echo-edge: error: {e}"
    return 0, ""


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    cap = capsys.readouterr()
    lines = [ln for ln in (cap.err + cap.out).splitlines() if ln.strip()]
    return code, lines[0] if lines else ""


def rows() -> list[dict[str, str]]:
    """The table's rows: id, input, sees, exit, lost."""
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`id`":
            sid, what, sees, code, lost = cells
            out.append({"id": sid.strip("`"), "input": what, "sees": sees, "exit": code, "lost": lost})
    return out


def pattern(sees: str) -> re.Pattern:
    """The row's line as a regex: the text in backticks, `<...>` a wildcard, `(empty)` nothing."""
    m = re.search(r"`([^`]*)`", sees)
    if m is None:
        assert sees.startswith("(nothing"), sees
        return re.compile(r"\Z")
    text = m.group(1)
    parts = re.split(r"<[^>]*>", text)
    return re.compile(".+?".join(re.escape(p) for p in parts))


# ---------------------------------------------------------------------------------------------
# Dataset files

FILELIST = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"


def dataset(tmp: Path, filelist: str | bytes) -> Path:
    root = tmp / "set"
    (root / "Videos").mkdir(parents=True)
    data = filelist.encode() if isinstance(filelist, str) else filelist
    (root / "FileList.csv").write_bytes(data)
    (root / "Videos" / "0X01.avi").write_bytes(b"")
    return root


def open_set(root: Path) -> tuple[int, str]:
    from echoedge.data.echonet import EchoNet

    return as_cli(lambda: EchoNet(root))


@scenario("missing-folder")
def _(tmp, capsys):
    return run_cli(["data", "check", str(tmp / "nowhere")], capsys)


@scenario("filelist-without-ef")
def _(tmp, capsys):
    return open_set(dataset(tmp, "FileName,ESV,EDV,FPS,NumberOfFrames,Split\n0X01,40,100,50,30,TRAIN\n"))


@scenario("nan-ef")
def _(tmp, capsys):
    return open_set(dataset(tmp, FILELIST + "0X01,nan,40,100,112,112,50,30,TRAIN\n"))


@scenario("ef-out-of-range")
def _(tmp, capsys):
    return open_set(dataset(tmp, FILELIST + "0X01,150,40,100,112,112,50,30,TRAIN\n"))


@scenario("filelist-not-utf8")
def _(tmp, capsys):
    return open_set(dataset(tmp, FILELIST.encode("utf-16")))


@scenario("line-break-in-cell")
def _(tmp, capsys):
    return open_set(dataset(tmp, FILELIST + '"0X\n01",nan,40,100,112,112,50,30,TRAIN\n'))


def avi(tmp: Path, edit: Callable[[bytes], bytes]) -> Path:
    from tests.fuzzing import tiny_avi

    path = tmp / "0X01.avi"
    path.write_bytes(edit(tiny_avi()[0]))
    return path


@scenario("truncated-avi")
def _(tmp, capsys):
    from echoedge.data.video import read_video

    path = avi(tmp, lambda b: b[: int(len(b) * 0.8)])
    return as_cli(lambda: read_video(path))


@scenario("avi-not-a-video")
def _(tmp, capsys):
    from echoedge.data.video import read_video

    path = avi(tmp, lambda b: b"FileName,EF\n")
    return as_cli(lambda: read_video(path))


# ---------------------------------------------------------------------------------------------
# Manifests and reports


def artefact(tmp: Path, edit: Callable[[dict], None], model: bytes | None = None) -> Path:
    from tests.fuzzing_manifests import MODEL_BYTES, artefact_manifest

    folder = tmp / "executorch-int8"
    folder.mkdir()
    m = artefact_manifest()
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    (folder / "model.pte").write_bytes(MODEL_BYTES if model is None else model)
    return folder


def verify(folder: Path) -> tuple[int, str]:
    from echoedge.convert.artefact import verify_artefact

    return as_cli(lambda: verify_artefact(folder))


@scenario("artefact-wrong-sha256")
def _(tmp, capsys):
    return verify(artefact(tmp, lambda m: None, model=b"changed"))


@scenario("artefact-future-schema")
def _(tmp, capsys):
    return verify(artefact(tmp, lambda m: m.update(schema_version=2)))


@scenario("artefact-missing-key")
def _(tmp, capsys):
    return verify(artefact(tmp, lambda m: m.pop("inputs")))


@scenario("artefact-nan-scale")
def _(tmp, capsys):
    return verify(artefact(tmp, lambda m: m["inputs"][0].update(scale=float("nan"))))


@scenario("report-nan")
def _(tmp, capsys):
    from echoedge.validate.report_json import read_report
    from tests.fuzzing_manifests import report_doc

    doc = report_doc()
    doc["reference"]["vs_truth"]["mae"] = float("nan")
    (tmp / "report.json").write_text(json.dumps(doc))
    return as_cli(lambda: read_report(tmp))


@scenario("report-future-schema")
def _(tmp, capsys):
    from echoedge.validate.report_json import read_report
    from tests.fuzzing_manifests import report_doc

    (tmp / "report.json").write_text(json.dumps({**report_doc(), "schema_version": 2}))
    return as_cli(lambda: read_report(tmp))


def calibration(tmp: Path, edit: Callable[[dict], None]) -> Path:
    from tests.fuzzing_manifests import _CLIPS, _npz_bytes, calibration_manifest

    folder = tmp / "calibration"
    folder.mkdir()
    m = calibration_manifest()
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    (folder / "calibration.npz").write_bytes(_npz_bytes(_CLIPS))
    return folder


def load_calibration(folder: Path) -> tuple[int, str]:
    from echoedge.calibration.calibset import load_calibration_set

    return as_cli(lambda: load_calibration_set(folder))


@scenario("calibration-wrong-sha256")
def _(tmp, capsys):
    return load_calibration(calibration(tmp, lambda m: m["clips"][0].update(sha256="0" * 64)))


@scenario("calibration-clip-changed")
def _(tmp, capsys):
    from tests.fuzzing_manifests import _CLIPS, _npz_bytes

    folder = calibration(tmp, lambda m: None)
    clips = _CLIPS.copy()
    clips[1, 0, 0, 0, 0] += 1.0
    (folder / "calibration.npz").write_bytes(_npz_bytes(clips))
    return load_calibration(folder)


@scenario("calibration-future-schema")
def _(tmp, capsys):
    return load_calibration(calibration(tmp, lambda m: m.update(schema_version=2)))


@scenario("calibration-size-0")
def _(tmp, capsys):
    from echoedge.calibration.calibset import parse_calibration_arg

    return as_cli(lambda: parse_calibration_arg("ef-stratified:0"))


@scenario("unknown-strategy")
def _(tmp, capsys):
    from echoedge.calibration.calibset import parse_calibration_arg

    return as_cli(lambda: parse_calibration_arg("nope:8"))


@scenario("unknown-format")
def _(tmp, capsys):
    return run_cli(["run", "--format", "foo", "--out", str(tmp / "out")], capsys)


# ---------------------------------------------------------------------------------------------
# Concurrency


@scenario("out-in-use")
def _(tmp, capsys):
    out = tmp / "out"
    hold = ("import sys\nfrom echoedge.outlock import folder_lock\n"
            "with folder_lock(sys.argv[1], 'echo-edge run'):\n"
            "    print('held', flush=True); sys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, "-c", hold, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        return run_cli(["run", "--format", "tflite", "--precision", "fp32", "--out", str(out)], capsys)
    finally:
        p.communicate("\n", timeout=30)


@scenario("default-cache-race")
def _(tmp, capsys):
    """The loser of two processes generating the default set at once: its rename finds the
    winner's whole folder in place, and it carries on with that one, silently."""
    import echoedge.data.synthetic as synthetic
    from echoedge.data.default import default_dataset

    def loser(out, **kw):  # the winner renamed its set into place first
        Path(out).mkdir(parents=True)
        (Path(out) / "FileList.csv").write_text(FILELIST)
        tmp_set = Path(out).parent / ".partial"
        tmp_set.mkdir()
        synthetic._move_into_place(tmp_set, Path(out))

    real = synthetic.generate_dataset
    synthetic.generate_dataset = loser
    try:
        code, line = as_cli(lambda: default_dataset(videos=2, seed=3, progress=False))
    finally:
        synthetic.generate_dataset = real
    return code, line


# ---------------------------------------------------------------------------------------------
# Checkpoints and a full disk


def load_checkpoint_file(path: Path) -> tuple[int, str]:
    from echoedge.model.checkpoint import load_checkpoint

    return as_cli(lambda: load_checkpoint(path))


@scenario("checkpoint-truncated")
def _(tmp, capsys):
    from echoedge.model.checkpoint import SHIPPED

    cut = tmp / "cut.pt"
    cut.write_bytes(SHIPPED.read_bytes()[:1000])
    return load_checkpoint_file(cut)


@scenario("checkpoint-not-a-checkpoint")
def _(tmp, capsys):
    junk = tmp / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 8)
    return load_checkpoint_file(junk)


@scenario("video-resnet-without-checkpoint")
def _(tmp, capsys):
    return run_cli(["run", "--model", "r2plus1d_18", "--out", str(tmp / "run")], capsys)


@scenario("checkpoint-of-another-model")
def _(tmp, capsys):
    from echoedge.model.checkpoint import SHIPPED
    from echoedge.model.registry import open_model

    return as_cli(lambda: open_model("r2plus1d_18", SHIPPED))


@scenario("disk-full-report")
def _(tmp, capsys):
    import errno

    from echoedge import atomic

    target = atomic.write_text(tmp / "report.json", "{}\n")
    real = Path.write_text

    def full(self: Path, text: str, *a, **k) -> int:
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    Path.write_text = full  # type: ignore[method-assign]
    try:
        code, line = as_cli(lambda: atomic.write_text(target, '{"new": true}\n'))
    finally:
        Path.write_text = real  # type: ignore[method-assign]
    assert target.read_text() == "{}\n" and [p.name for p in tmp.iterdir()] == ["report.json"]
    return code, line


@scenario("disk-full-artefact")
def _(tmp, capsys):
    import errno

    from echoedge.convert.artefact import write_artefact

    def build(t: Path):
        (t / "model.bin").write_bytes(b"x" * 100)
        raise RuntimeError("writer failed") from OSError(errno.ENOSPC, "No space left on device")

    code, line = as_cli(lambda: write_artefact(tmp / "coreml-fp32", build))
    assert list(tmp.iterdir()) == []  # no folder, no hidden temporary
    return code, line


# ---------------------------------------------------------------------------------------------


def test_every_row_has_a_scenario_and_every_scenario_a_row():
    ids = [r["id"] for r in rows()]
    assert len(ids) == len(set(ids)), "duplicate ids in docs/reliability.md"
    assert set(ids) == set(SCENARIOS), (f"rows without a scenario: {sorted(set(ids) - set(SCENARIOS))}; "
                                        f"scenarios without a row: {sorted(set(SCENARIOS) - set(ids))}")
    for r in rows():
        assert r["lost"] and r["input"], r


@pytest.mark.parametrize("row", rows(), ids=lambda r: r["id"])
def test_row_matches_what_the_user_sees(row, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ECHOEDGE_CACHE", str(tmp_path / "cache"))
    code, line = SCENARIOS[row["id"]](tmp_path, capsys)
    assert "\n" not in line and "Traceback" not in line
    assert code == int(row["exit"]), (row["id"], code, line)
    assert pattern(row["sees"]).match(line), f"{row['id']}: the user sees\n  {line}\nthe page says\n  {row['sees']}"
