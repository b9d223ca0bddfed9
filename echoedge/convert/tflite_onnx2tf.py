"""The TFLite front end: deploy form -> ONNX (onnx_export) -> onnx2tf 1.28.8 -> a TensorFlow SavedModel.

onnx2tf writes dozens of files and much console output: it runs in a temp folder with its output
captured (`captured_output`; shown only on failure, first line in the error, `log_reason`). Within
one process the SavedModel is built once per model and input shape and shared by the precisions
(the CLI exports all four from one deploy form); the temp folders go at exit.

onnx2tf (fp32 files) was measured unreliable on channel layouts without its slow "strict mode", so
correctness is not assumed: the converter's fp32 check against eager is what makes a file pass.

onnx2tf / tensorflow are imported inside the functions.
"""

from __future__ import annotations

import atexit
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.convert.artefact import INPUT_NAME
from echoedge.convert.tflite_interpreter import SIGNATURE_KEY, input_layout
from echoedge.console import captured_output
from echoedge.errors import EchoEdgeError, first_line


def log_reason(log: Path, e: BaseException) -> str:
    """The most telling line: the exception's, else the last error-looking line of the log."""
    import re

    text = log.read_text(errors="replace") if log.is_file() else ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # onnx2tf colours its messages
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if any(k in l for k in ("Error", "error", "ERROR", "failed"))]
    msg = first_line(e)
    if msg in ("", "SystemExit", "1") or isinstance(e, SystemExit):
        msg = errors[-1] if errors else (lines[-1] if lines else type(e).__name__)
    return msg[:300]


# ----------------------------------------------------------------------------- ONNX + onnx2tf
@dataclass
class FrontEnd:
    """ONNX + onnx2tf SavedModel of one model, shared by its precisions within a process."""

    folder: Path  # temp folder holding model.onnx and saved_model/
    saved_model: Path
    onnx: Any  # onnx_export.OnnxExport
    onnx2tf_s: float


_FRONT_ENDS: dict[str, tuple[FrontEnd, tempfile.TemporaryDirectory]] = {}


def _cleanup_front_ends() -> None:
    for _, tmp in _FRONT_ENDS.values():
        tmp.cleanup()
    _FRONT_ENDS.clear()


atexit.register(_cleanup_front_ends)


def _fingerprint(model: Any, example: np.ndarray) -> str:
    import torch

    h = hashlib.sha256(type(model).__qualname__.encode())
    h.update(str(example.shape).encode())
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def front_end(model: Any, example: np.ndarray, say: Callable[..., None]) -> FrontEnd:
    """The ONNX file and onnx2tf SavedModel of `model` on a (1, C, T, H, W) example (cached)."""
    key = _fingerprint(model, example)
    if key in _FRONT_ENDS:
        return _FRONT_ENDS[key][0]
    from echoedge.convert.onnx_export import export_onnx

    tmp = tempfile.TemporaryDirectory(prefix="echoedge-tflite-")
    try:
        folder = Path(tmp.name)
        say(f"TFLite: exporting ONNX (opset 17, onnxsim) {tuple(example.shape)}")
        ox = export_onnx(model, example, folder / "model.onnx")
        say(f"TFLite: onnx2tf -> SavedModel ({len(ox.substitutions)} module substitutions, "
            "output captured)")
        t0 = time.perf_counter()
        saved = folder / "saved_model"
        _run_onnx2tf(folder / "model.onnx", saved)
        fe = FrontEnd(folder, saved, ox, time.perf_counter() - t0)
    except BaseException:
        tmp.cleanup()
        raise
    _FRONT_ENDS[key] = (fe, tmp)
    return fe


def _run_onnx2tf(onnx_path: Path, saved: Path) -> None:
    try:
        import onnx2tf
    except Exception as e:  # onnx2tf imports undeclared helpers (onnx_graphsurgeon, sng4onnx, ...)
        raise EchoEdgeError(f"onnx2tf cannot be imported ({first_line(e)}); the TFLite export needs "
                            "onnx2tf 1.28.8 and its helpers (see requirements.txt)") from None
    log = saved.parent / "onnx2tf.log"
    try:
        with captured_output(log):
            # Keras names every layer from process-wide counters (model_201/tf.reshape_68/...), and
            # the names land in the .tflite: reset them, so the same model gives the same bytes
            # whatever was converted before in this process.
            import tf_keras

            tf_keras.backend.clear_session()
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(saved),
                # Keep the clip NCTHW: the runner feeds what the manifest says, and onnx2tf's
                # channels-last guess for a rank-5 input was not needed by any kernel here.
                keep_ncw_or_nchw_or_ncdhw_input_names=[INPUT_NAME],
                # Strict mode re-checks every op by trying transpositions: >10 min and >11 GB on
                # the tiny config. The converter's fp32 check against eager catches layout errors.
                disable_strict_mode=True,
                not_use_onnxsim=True,  # already simplified; onnx2tf's own pass would redo it
                output_signaturedefs=True,  # the serving signature names the outputs
                non_verbose=True,
                verbosity="error",
            )
    except (Exception, SystemExit) as e:  # onnx2tf calls sys.exit(1) on some errors
        raise EchoEdgeError(f"{onnx_path.name}: onnx2tf failed ({log_reason(log, e)})") from None
    if not (saved / "saved_model.pb").is_file():
        raise EchoEdgeError(f"{onnx_path.name}: onnx2tf wrote no SavedModel ({log_reason(log, RuntimeError(''))})")


def saved_model_layout(saved: Path, clip_shape: Sequence[int]) -> str:
    """The SavedModel's input layout, read back from its serving signature (never assumed)."""
    import tensorflow as tf

    with captured_output(saved.parent / "load.log"):
        sig = tf.saved_model.load(str(saved)).signatures[SIGNATURE_KEY]
    specs = list(sig.structured_input_signature[1].values())
    if len(specs) != 1:
        raise EchoEdgeError(f"{saved}: SavedModel has {len(specs)} inputs, expected 1")
    return input_layout(specs[0].shape.as_list(), clip_shape)


__all__: Sequence[str] = ("FrontEnd", "front_end", "log_reason", "saved_model_layout")
