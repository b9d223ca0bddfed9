"""`echo-edge verify`: is an artefact folder still what its converter wrote, and does it still run?

Two checks per folder:

1. hashes: the model file (or .mlpackage folder) and the golden-vector file against the sha256s the
   manifest recorded at export;
2. golden vectors: the inputs kept in the folder are run again through the artefact's runtime and
   compared with the outputs kept beside them, element-wise |got - want| <= atol + rtol * |want|
   with the tolerance the manifest recorded. ExecuTorch keeps its cases in model.bpte (a
   BundledProgram, whose embedded program must be model.pte's bytes); TFLite and Core ML in
   golden.npz (echoedge.convert.golden_vectors). Core ML cannot run off macOS: there the package's
   ML program runs in echoedge.mil's interpreter, and the result says so.

A folder that is not there or holds no manifest is an error (EchoEdgeError); anything wrong with an
artefact that is there is a failed verification, named by file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.convert.artefact import MANIFEST_NAME, ArtefactManifest, model_sha256, read_manifest
from echoedge.convert.golden_vectors import GoldenVectors, golden_errors, read_golden_vectors
from echoedge.errors import EchoEdgeError, first_line


@dataclass
class Verification:
    """The outcome for one folder: `checked` lists what passed, `problem` the first failure."""

    folder: Path
    checked: list[str]
    problem: str | None = None
    note: str | None = None  # e.g. which runtime stood in for Core ML

    @property
    def passed(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        parts = [*self.checked, *([self.problem] if self.problem else [])]
        text = f"{'PASS' if self.passed else 'FAIL'} {self.folder}: " + "; ".join(parts)
        return text + (f" ({self.note})" if self.note else "")


def verify_folder(folder: str | Path, threads: int = 2) -> Verification:
    """Verify one artefact folder; EchoEdgeError only where it is not an artefact folder at all."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EchoEdgeError(f"{folder}: artefact folder not found")
    if not (folder / MANIFEST_NAME).is_file():
        raise EchoEdgeError(f"{folder / MANIFEST_NAME}: not found; {folder} is not an echo-edge artefact")
    result = Verification(folder, [])
    try:
        m = read_manifest(folder)
        _check_model_hash(folder, m, result)
        golden = _golden(folder, m, result)
        _rerun(folder, m, golden, result, threads)
    except EchoEdgeError as e:
        result.problem = str(e)
    return result


def _check_model_hash(folder: Path, m: ArtefactManifest, result: Verification) -> None:
    model = folder / m.model_file
    if not model.exists():
        raise EchoEdgeError(f"{model}: model file named in the manifest is missing")
    if not m.model_sha256:
        raise EchoEdgeError(f"{folder / MANIFEST_NAME}: records no model_sha256 to check {m.model_file} against")
    if model_sha256(model) != m.model_sha256:
        raise EchoEdgeError(f"{model}: sha256 does not match the manifest (file changed or corrupt)")
    result.checked.append(f"{m.model_file} sha256 matches")


def _golden(folder: Path, m: ArtefactManifest, result: Verification) -> GoldenVectors:
    if m.format == "executorch":
        golden = _bundled_cases(folder, m)
        hashed = bool(m.details["bundled_program"].get("sha256"))
    else:
        golden, hashed = read_golden_vectors(folder, m.details.get("golden")), True
    name = Path(golden.source).name
    result.checked.append(f"{name} sha256 matches" if hashed else f"{name}: no sha256 recorded")
    return golden


def _bundled_cases(folder: Path, m: ArtefactManifest) -> GoldenVectors:
    """model.bpte's test cases as golden vectors, after checking that it bundles model.pte."""
    entry: Any = m.details.get("bundled_program")
    if not isinstance(entry, dict) or not entry.get("file"):
        why = entry.get("error") if isinstance(entry, dict) else None
        raise EchoEdgeError(f"{folder / MANIFEST_NAME}: no BundledProgram recorded"
                            + (f" (export said: {why})" if why else ""))
    path = folder / Path(entry["file"]).name
    if not path.is_file():
        raise EchoEdgeError(f"{path}: BundledProgram named in the manifest is missing")
    data = path.read_bytes()
    # Manifests written before the bundle's hash was recorded have none: the re-run still checks it.
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise EchoEdgeError(f"{path}: sha256 does not match the manifest (golden cases changed or corrupt)")
    try:
        from executorch.devtools.bundled_program.serialize import (
            deserialize_from_flatbuffer_to_bundled_program,
        )

        bundle = deserialize_from_flatbuffer_to_bundled_program(data)
        suite = next(s for s in bundle.method_test_suites if s.method_name == entry.get("method", "forward"))
        inputs = np.concatenate([_tensor(c.inputs[0]) for c in suite.test_cases])
        outputs = [np.concatenate([_tensor(c.expected_outputs[k]) for c in suite.test_cases])
                   for k in range(len(suite.test_cases[0].expected_outputs))]
    except Exception as e:  # a damaged flatbuffer fails anywhere inside the deserializer
        raise EchoEdgeError(f"{path}: not a readable BundledProgram ({type(e).__name__}: {first_line(e)})") from None
    if bytes(bundle.program) != (folder / m.model_file).read_bytes():
        raise EchoEdgeError(f"{path}: bundles another program than {m.model_file}")
    tol = entry.get("suggested_tolerance")
    if not isinstance(tol, dict) or not {"rtol", "atol"} <= set(tol):
        raise EchoEdgeError(f"{folder / MANIFEST_NAME}: bundled_program.suggested_tolerance missing or malformed")
    return GoldenVectors(inputs, outputs, {"rtol": float(tol["rtol"]), "atol": float(tol["atol"])}, str(path))


def _tensor(value: Any) -> np.ndarray:
    """A float32 tensor of the BundledProgram schema (the only kind echo-edge bundles) as numpy."""
    t = value.val
    if str(getattr(t.scalar_type, "name", t.scalar_type)) != "FLOAT":
        raise ValueError(f"a {t.scalar_type} tensor; echo-edge bundles float32 only")
    return np.frombuffer(bytes(t.data), dtype="<f4").reshape([int(s) for s in t.sizes]).copy()


def _rerun(folder: Path, m: ArtefactManifest, golden: GoldenVectors, result: Verification,
           threads: int) -> None:
    runner = _open(folder, m, threads)
    try:
        got = runner(np.ascontiguousarray(golden.inputs, np.float32))
    finally:
        runner.close()
    if m.format == "coreml" and getattr(runner, "runtime", "") != "coreml":
        result.note = getattr(runner, "platform_note", None) or "Core ML cannot run on this host"
        result.note += "; golden vectors run in echoedge.mil's interpreter instead"
    max_abs, worst = golden_errors(got, golden.outputs, golden.tolerance)
    tol = f"atol {golden.tolerance['atol']:g} + rtol {golden.tolerance['rtol']:g}"
    what = f"{len(golden.inputs)} golden cases in {runner.runtime}: max |err| {max_abs:.3g} ({tol})"
    if not worst <= 1.0:
        raise EchoEdgeError(f"{golden.source}: {what}, {worst:.3g}x the tolerance: the outputs kept "
                            f"there are not what {m.model_file} returns")
    result.checked.append(what)


def _open(folder: Path, m: ArtefactManifest, threads: int) -> Any:
    """The runner that produced the golden outputs: LiteRT for .tflite (the converter's interpreter)."""
    if m.format == "tflite":
        from echoedge.validate.tflite_runner import TFLiteRunner

        return TFLiteRunner(folder, threads=threads, interpreter="litert")
    from echoedge.validate.runner import open_runner

    return open_runner(folder, threads=threads)
