"""Golden vectors kept in an artefact folder, so `echo-edge verify` can re-run them later.

ExecuTorch folders carry theirs in model.bpte (a BundledProgram). TFLite and Core ML have no such
container, so their converters write `golden.npz`: the clips the converter checked the written file
on and the outputs the file itself returned (LiteRT for .tflite, the MIL interpreter for
.mlpackage), recorded in the manifest (details["golden"]) with the file's sha256 and the tolerance
a re-run is held to.

The .npz is written by hand rather than with np.savez: a zip entry carries the time it was
written, and the folder must be byte-identical when rebuilt from the same inputs.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

GOLDEN_FILE = "golden.npz"
GOLDEN_CASES = 3  # clips every converter checks its written file on (and keeps for verify)
# A fixed entry time (the zip epoch) so that the same arrays always give the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# Device runtime vs the validation runtime on the same file. fp32 and int8 are ExecuTorch's
# BUNDLE_TOLERANCE (different kernels, same arithmetic); fp16 files may run in half precision on
# a device GPU/ANE; quantized files may requantize with other rounding. |got - want| <= atol +
# rtol * |want| element-wise; EF is in %, volumes in mL, landmarks in [0, 1].
_FP16 = {"rtol": 1e-2, "atol": 1e-2}
_INT8 = {"rtol": 2e-2, "atol": 2e-2}
GOLDEN_TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"rtol": 1e-3, "atol": 1e-3}, "fp16": _FP16, "int8": _INT8, "int8-full": _INT8,
    "w8": _FP16, "w8a8": _INT8,
}
# Core ML may run any file on the GPU or Neural Engine in half precision, whatever it stores.
COREML_MIN_TOLERANCE = _FP16


def tolerance_for(fmt: str, precision: str) -> dict[str, float]:
    """The golden-vector tolerance of one artefact (ExecuTorch's BUNDLE_TOLERANCE where it has one)."""
    from echoedge.convert.executorch import BUNDLE_TOLERANCE

    tol = dict(BUNDLE_TOLERANCE.get(precision) or GOLDEN_TOLERANCE.get(precision) or _INT8)
    if fmt == "coreml":
        tol = {k: max(tol[k], COREML_MIN_TOLERANCE[k]) for k in tol}
    return tol


@dataclass
class GoldenVectors:
    """Golden inputs (G, C, T, H, W) and the artefact's outputs on them, in OUTPUT_NAMES order."""

    inputs: np.ndarray
    outputs: list[np.ndarray]
    tolerance: dict[str, float]
    source: str  # where they were read from, for messages


def write_golden_vectors(folder: Path, inputs: np.ndarray, outputs: Sequence[np.ndarray],
                         fmt: str, precision: str, produced_by: str) -> dict[str, Any]:
    """Write GOLDEN_FILE into `folder` (a build folder); its manifest entry."""
    arrays = {"inputs": np.ascontiguousarray(inputs, np.float32),
              **{f"output_{i}": np.ascontiguousarray(o) for i, o in enumerate(outputs)}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, arr in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            z.writestr(info, entry.getvalue())
    data = buf.getvalue()
    (folder / GOLDEN_FILE).write_bytes(data)
    return {"file": GOLDEN_FILE, "sha256": hashlib.sha256(data).hexdigest(), "cases": int(len(inputs)),
            "outputs": len(outputs), "produced_by": produced_by, "tolerance": tolerance_for(fmt, precision)}


def read_golden_vectors(folder: Path, entry: Any) -> GoldenVectors:
    """The golden vectors the manifest's details["golden"] names; EchoEdgeError naming the file
    when it is missing, altered (sha256) or malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise EchoEdgeError(f"{folder / 'manifest.json'}: no golden vectors recorded (details.golden); "
                            "re-export the artefact with this version of echo-edge")
    path = folder / Path(entry["file"]).name
    if not path.is_file():
        raise EchoEdgeError(f"{path}: golden vectors named in the manifest are missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise EchoEdgeError(f"{path}: sha256 does not match the manifest (golden vectors changed or corrupt)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            inputs = z["inputs"]
            outputs = [z[f"output_{i}"] for i in range(int(entry["outputs"]))]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise EchoEdgeError(f"{path}: malformed golden vectors ({e})") from None
    tol = entry.get("tolerance")
    if not isinstance(tol, dict) or not {"rtol", "atol"} <= set(tol):
        raise EchoEdgeError(f"{folder / 'manifest.json'}: golden tolerance missing or malformed")
    return GoldenVectors(inputs, outputs, {"rtol": float(tol["rtol"]), "atol": float(tol["atol"])}, str(path))


def golden_errors(got: Sequence[np.ndarray], want: Sequence[np.ndarray],
                  tol: dict[str, float]) -> tuple[float, float]:
    """(max |got - want|, worst |got - want| / (atol + rtol * |want|)) over every output element;
    the second is <= 1 exactly when every element is within tolerance. A shape mismatch or a NaN
    counts as infinitely far."""
    max_abs, worst = 0.0, 0.0
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            return float("inf"), float("inf")
        diff = np.abs(g - w)
        if not np.all(np.isfinite(diff)):
            return float("inf"), float("inf")
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        worst = max(worst, float((diff / (tol["atol"] + tol["rtol"] * np.abs(w))).max(initial=0.0)))
    return max_abs, worst


def calibration_and_golden(calibration: Any | None, golden_inputs: np.ndarray | None,
                           clip_shape: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray]:
    """(calibration clips checked against `clip_shape` or None, the golden clips) for a converter.

    The golden clips are `golden_inputs` when given, else the first calibration clips (real echo
    frames), else seeded noise: the same choice in every converter, so a rebuild checks the same.
    """
    from echoedge.convert.artefact import check_clips

    clips = check_clips(calibration.clips, clip_shape, "calibration set") if calibration is not None else None
    if golden_inputs is not None:
        golden = check_clips(golden_inputs, clip_shape, "golden inputs")
    elif clips is not None:
        golden = clips[:GOLDEN_CASES]
    else:
        golden = np.random.default_rng(0).standard_normal((GOLDEN_CASES, *clip_shape[1:])).astype(np.float32)
    return clips, golden
