"""Artefact folder contract: manifest round trip, all-or-nothing writes, discovery, runner dispatch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from echoedge.convert.artefact import (
    MANIFEST_NAME, OUTPUT_NAMES, ArtefactManifest, echo_tensor_specs, find_artefacts,
    read_manifest, tool_versions, verify_artefact, write_artefact,
)
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, ShapeError
from echoedge.validate.runner import EagerRunner, Runner, open_runner


def _manifest(fmt: str = "executorch", model_file: str = "model.bin") -> ArtefactManifest:
    spec = ClipSpec(frames=4, height=16, width=16)
    inputs, outputs = echo_tensor_specs(spec.input_shape(1), [(1,), (1,), (1,), (1, 42, 2), (1, 42, 2)])
    return ArtefactManifest(format=fmt, precision="int8", runtime="test-runtime", model_file=model_file,
                            clip_spec=spec.to_dict(), inputs=inputs, outputs=outputs,
                            source_checkpoint_sha256="c" * 64, calibration_id="calib-1",
                            tool_versions=tool_versions(), details={"delegation": {"n": 3}})


def _build_ok(tmp: Path) -> ArtefactManifest:
    (tmp / "model.bin").write_bytes(b"weights")
    return _manifest()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_manifest_round_trip_keeps_every_field(tmp_path):
    out = write_artefact(tmp_path / "a", _build_ok)
    m = read_manifest(out)
    assert m.to_dict() == json.loads((out / MANIFEST_NAME).read_text())
    assert m.format == "executorch" and m.precision == "int8" and m.calibration_id == "calib-1"
    assert [t.name for t in m.outputs] == list(OUTPUT_NAMES)
    assert m.inputs[0].shape == [1, 1, 4, 16, 16] and m.inputs[0].layout == "NCTHW"
    assert m.outputs[3].layout == "NK2" and m.outputs[0].scale is None  # float I/O
    assert ClipSpec.from_dict(m.clip_spec) == ClipSpec(frames=4, height=16, width=16)
    import hashlib
    assert m.model_sha256 == hashlib.sha256(b"weights").hexdigest() and m.model_bytes == 7
    assert m.created_at and m.tool_versions["torch"] and m.details["delegation"] == {"n": 3}
    # The weight breakdown is read from the file itself: these 7 bytes are no program, and the
    # manifest says so by file name instead of inventing figures.
    assert m.details["weights"] == {"error": "model.bin: not an ExecuTorch program (no ET file identifier)"}


def test_manifest_missing_field_is_named(tmp_path):
    out = write_artefact(tmp_path / "a", _build_ok)
    d = json.loads((out / MANIFEST_NAME).read_text())
    del d["clip_spec"]
    (out / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(EchoEdgeError, match="lacks clip_spec"):
        read_manifest(out)


@pytest.mark.parametrize("content,match", [("{not json", "unreadable manifest"),
                                           ("[1, 2]", "not a JSON object"),
                                           (None, "not found")])
def test_read_manifest_corrupt_or_missing_is_clear(tmp_path, content, match):
    folder = tmp_path / "art"
    folder.mkdir()
    if content is not None:
        (folder / MANIFEST_NAME).write_text(content)
    with pytest.raises(EchoEdgeError, match=match) as e:
        read_manifest(folder)
    assert str(folder) in str(e.value)
    with pytest.raises(EchoEdgeError, match="artefact folder not found"):
        read_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_build_leaves_no_folder_and_no_temp(tmp_path, exc):
    def build(tmp: Path) -> ArtefactManifest:
        (tmp / "model.bin").write_bytes(b"half")
        raise exc

    with pytest.raises(type(exc)):
        write_artefact(tmp_path / "a", build)
    assert list(tmp_path.iterdir()) == []


def test_build_without_its_model_file_fails_cleanly(tmp_path):
    with pytest.raises(EchoEdgeError, match="did not write its model file"):
        write_artefact(tmp_path / "a", lambda tmp: _manifest())
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = write_artefact(tmp_path / "a", _build_ok)
    before = read_manifest(out).created_at
    with pytest.raises(EchoEdgeError, match="already exists"):
        write_artefact(out, _build_ok)
    assert read_manifest(out).created_at == before

    def build_v2(tmp: Path) -> ArtefactManifest:
        (tmp / "model.bin").write_bytes(b"weights v2")
        return _manifest()

    write_artefact(out, build_v2, overwrite=True)
    assert (out / "model.bin").read_bytes() == b"weights v2"
    assert _siblings(out) == ["a"]  # no backup or temp left behind

    def fail(tmp: Path) -> ArtefactManifest:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_artefact(out, fail, overwrite=True)
    assert (out / "model.bin").read_bytes() == b"weights v2" and _siblings(out) == ["a"]


def test_overwrite_never_replaces_a_non_artefact_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(EchoEdgeError, match="not an artefact folder"):
        write_artefact(precious, _build_ok, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert _siblings(precious) == ["home"]


def test_find_artefacts_skips_hidden_and_nested(tmp_path):
    a = write_artefact(tmp_path / "x" / "fp32", _build_ok)
    b = write_artefact(tmp_path / "y", _build_ok)
    (tmp_path / ".x.tmp-123").mkdir()
    (tmp_path / ".x.tmp-123" / MANIFEST_NAME).write_text("{}")
    (tmp_path / "z").mkdir()
    assert find_artefacts(tmp_path) == [a, b]
    assert find_artefacts(a) == [a]
    assert find_artefacts(tmp_path / "missing") == []


def test_verify_artefact_detects_a_changed_model_file(tmp_path):
    out = write_artefact(tmp_path / "a", _build_ok)
    assert verify_artefact(out).model_file == "model.bin"
    (out / "model.bin").write_bytes(b"tampered")
    with pytest.raises(EchoEdgeError, match="sha256 does not match"):
        verify_artefact(out)


def test_open_runner_unknown_format_is_clear(tmp_path):
    def build(tmp: Path) -> ArtefactManifest:
        (tmp / "model.bin").write_bytes(b"x")
        return _manifest(fmt="onnx-magic")

    out = write_artefact(tmp_path / "weird", build)
    with pytest.raises(EchoEdgeError, match="unknown artefact format 'onnx-magic'") as e:
        open_runner(out)
    assert str(out) in str(e.value)


def test_open_runner_known_format_without_runner_is_clear(tmp_path, monkeypatch):
    from echoedge.validate import runner as runner_mod

    monkeypatch.delitem(runner_mod.RUNNERS, "coreml", raising=False)

    def build(tmp: Path) -> ArtefactManifest:
        (tmp / "model.bin").write_bytes(b"x")
        return _manifest(fmt="coreml")

    out = write_artefact(tmp_path / "cm", build)
    with pytest.raises(EchoEdgeError, match="no runner for format 'coreml'"):
        open_runner(out)


def test_eager_runner_returns_the_five_outputs_and_checks_input():
    torch = pytest.importorskip("torch")
    from torch import nn

    class Tiny(nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3, 4))
            lm = torch.sigmoid(x[:, 0, 0, :42, :2])
            return m + 55, m + 90, m + 40, lm, lm

    r = EagerRunner(Tiny(), threads=1, clip_shape=(1, 4, 64, 64))
    assert isinstance(r, Runner) and r.runtime == "pytorch-eager" and r.format == "pytorch"
    out = r(np.zeros((3, 1, 4, 64, 64), np.float32))
    assert [o.shape for o in out] == [(3,), (3,), (3,), (3, 42, 2), (3, 42, 2)]
    with pytest.raises(ShapeError, match="expects input"):
        r(np.zeros((3, 1, 4, 32, 32), np.float32))
    with pytest.raises(ShapeError, match="float32"):
        r(np.zeros((3, 1, 4, 64, 64), np.float64))


def test_importing_convert_and_validate_stays_light():
    code = ("import sys, echoedge.convert, echoedge.validate; "
            "heavy = [m for m in ('executorch', 'torchao', 'torch') if m in sys.modules]; "
            "print(','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def test_folder_models_are_hashed_and_verified_and_calibration_folders_are_not_artefacts(tmp_path):
    import json

    from echoedge.convert.artefact import find_artefacts, model_sha256, verify_artefact, write_artefact

    def build(tmp):
        pkg = tmp / "model.mlpackage"
        (pkg / "Data").mkdir(parents=True)
        (pkg / "Data" / "weights.bin").write_bytes(b"\x01\x02")
        (pkg / "Manifest.json").write_text("{}")
        return _manifest(fmt="coreml", model_file="model.mlpackage")

    out = write_artefact(tmp_path / "coreml-fp16", build)
    m = verify_artefact(out)
    assert m.model_sha256 == model_sha256(out / "model.mlpackage") and m.model_bytes == 4
    (out / "model.mlpackage" / "Data" / "weights.bin").write_bytes(b"\x01\x03")
    with pytest.raises(EchoEdgeError, match="sha256 does not match"):
        verify_artefact(out)
    calib = tmp_path / "calibration"
    calib.mkdir()
    (calib / "manifest.json").write_text(json.dumps({"strategy": "random", "size": 8}))
    assert find_artefacts(tmp_path) == [out]
    assert find_artefacts(calib) == []
