"""`echo-edge verify` on the session's tiny run artefacts (ExecuTorch and Core ML fp32): PASS as
built; FAIL (exit 1, one line naming the file) after one flipped byte of the model or an edited
golden output; exit 2 for a folder that is not there. TFLite's is in tests/convert/test_tflite.py."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from echoedge.cli import main as cli_main

pytest.importorskip("executorch")


def _verify(capsys, *folders: Path) -> tuple[int, list[str], list[str]]:
    rc = cli_main(["verify", *map(str, folders)])
    cap = capsys.readouterr()
    return rc, cap.out.strip().splitlines(), cap.err.strip().splitlines()


def _coreml(tiny_run) -> Path:
    return tiny_run.out / "artefacts" / "coreml-fp32"


def test_verify_passes_on_the_artefacts_run_built(tiny_run, capsys):
    rc, out, err = _verify(capsys, tiny_run.fp32, _coreml(tiny_run))
    assert rc == 0 and err == [] and len(out) == 2, (out, err)
    et, cml = out
    assert et.startswith(f"PASS {tiny_run.fp32}: model.pte sha256 matches; model.bpte sha256 matches; "
                         "3 golden cases in executorch-xnnpack: max |err| ")
    assert cml.startswith(f"PASS {_coreml(tiny_run)}: model.mlpackage sha256 matches; golden.npz sha256 "
                          "matches; 3 golden cases in reference-interpreter")
    assert "golden vectors run in echoedge.mil's interpreter instead" in cml


def test_one_flipped_byte_of_the_model_fails_naming_the_file(tiny_run, tmp_path: Path, capsys):
    bad = tmp_path / "executorch-fp32"
    shutil.copytree(tiny_run.fp32, bad)
    data = bytearray((bad / "model.pte").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.pte").write_bytes(bytes(data))
    rc, out, err = _verify(capsys, tiny_run.fp32, bad)
    assert rc == 1 and err == [] and out[0].startswith("PASS")
    assert out[1] == (f"FAIL {bad}: {bad / 'model.pte'}: sha256 does not match the manifest "
                      "(file changed or corrupt)")


def _expected_ef_offset(bpte: bytes, manifest: dict, golden_ef: float) -> int:
    """Where model.bpte stores the first test case's expected EF (float32): found by value."""
    where = bpte.find(np.float32(golden_ef).tobytes())
    assert where > 0 and manifest["details"]["bundled_program"]["cases"] == 3
    return where


def test_an_edited_golden_output_fails_even_with_its_hash_updated(tiny_run, tmp_path: Path, capsys):
    from echoedge.convert.artefact import read_manifest
    from echoedge.validate.runner import open_runner
    from echoedge.validate.verify import _bundled_cases

    bad = tmp_path / "executorch-fp32"
    shutil.copytree(tiny_run.fp32, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    cases = _bundled_cases(bad, read_manifest(bad))
    with open_runner(bad) as r:  # what the program returns on the first case
        assert float(r(cases.inputs[:1])[0][0]) == pytest.approx(float(cases.outputs[0][0]), abs=1e-3)
    bpte = bytearray((bad / "model.bpte").read_bytes())
    at = _expected_ef_offset(bytes(bpte), manifest, float(cases.outputs[0][0]))
    bpte[at : at + 4] = np.float32(cases.outputs[0][0] + 5.0).tobytes()  # EF off by 5 points
    (bad / "model.bpte").write_bytes(bytes(bpte))
    rc, out, _ = _verify(capsys, bad)
    assert rc == 1 and out == [f"FAIL {bad}: model.pte sha256 matches; {bad / 'model.bpte'}: sha256 does "
                                "not match the manifest (golden cases changed or corrupt)"]
    # A forger who also updates the manifest's hash is caught by the re-run itself.
    manifest["details"]["bundled_program"]["sha256"] = hashlib.sha256(bpte).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc, out, _ = _verify(capsys, bad)
    assert rc == 1 and len(out) == 1
    assert out[0].startswith(f"FAIL {bad}: model.pte sha256 matches; model.bpte sha256 matches; "
                             f"{bad / 'model.bpte'}: 3 golden cases in executorch-xnnpack: max |err| 5 ")
    assert out[0].endswith("the outputs kept there are not what model.pte returns")


def test_an_edited_core_ml_golden_output_fails(tiny_run, tmp_path: Path, capsys):
    import io

    bad = tmp_path / "coreml-fp32"
    shutil.copytree(_coreml(tiny_run), bad)
    with np.load(bad / "golden.npz") as z:
        arrays = dict(z)
    arrays["output_0"] = arrays["output_0"] + np.float32(2.0)  # EF 2 points off (tolerance ~0.56)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (bad / "golden.npz").write_bytes(buf.getvalue())
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["details"]["golden"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc, out, _ = _verify(capsys, bad)
    assert rc == 1 and len(out) == 1 and out[0].startswith(f"FAIL {bad}: ")
    assert f"{bad / 'golden.npz'}: 3 golden cases in reference-interpreter: max |err| 2 " in out[0]


def test_a_missing_folder_is_one_line_and_exit_2(tiny_run, tmp_path: Path, capsys):
    rc, out, err = _verify(capsys, tmp_path / "nowhere", tiny_run.fp32)
    assert rc == 2 and err == [f"echo-edge: error: {tmp_path / 'nowhere'}: artefact folder not found"]
    assert len(out) == 1 and out[0].startswith("PASS")  # the other folder is still checked
