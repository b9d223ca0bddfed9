"""Output-shift correction of a Core ML W8A8 package: the mean shift int8 activations put on the
regression outputs, measured through the reference interpreter on the calibration clips and taken
out of the ML program's output-offset const.

Why: on the shipped checkpoint the W8A8 program's EF error against fp32 is mostly one shared shift,
as with the .pte and the .tflite (output_shift.py). 24 TEST videos x 2 clips through the reference
interpreter: signed mean -0.556, mean |dEF| 0.558; the shift measured on the 32 calibration clips
(TRAIN) was -0.599, and taking it out gave mean |dEF| 0.249, p95 0.469.

Where it goes: E2FA returns ``out_mean + out_scale * z``; coremltools keeps ``out_mean`` as one
small const (named after the buffer, ``b_fa_out_mean`` + ``_to_fp16`` in an fp16 program) that a
float `add` after the last dequantize reads. Its value sits inline in the package's protobuf
(immediateValue), so the correction is an edit of that one tensor in model.mlmodel; the fp16
const's own grid (1/32 EF point near 55) is what is left, and the record says how much.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.output_shift import OutputShift, measure_shift, reference_outputs
from echoedge.mil.program import SPEC_FILE

def _offset_const(blk: Any, buffer_path: str) -> Any | str:
    """The proto op of the const holding `buffer_path` (e.g. "fa.out_mean"), or why there is none."""
    base = "b_" + buffer_path.replace(".", "_")
    names = (base + "_to_fp16", base)
    hits = [op for op in blk.operations if op.type == "const" and op.outputs[0].name in names]
    if not hits:
        return f"no ML program const named {' or '.join(names)}"
    op = hits[0]
    readers = [u.type for u in blk.operations for a in u.inputs.values()
               for b in a.arguments if b.name == op.outputs[0].name]
    if readers != ["add"]:
        return f"{op.outputs[0].name} is read by {', '.join(readers) or 'nothing'}, not by one add"
    # W8A8 is always an fp16 program: its small consts are inline float16 bytes.
    if op.attributes["val"].immediateValue.tensor.WhichOneof("value") != "bytes":
        return f"{op.outputs[0].name} is not stored inline as float16"
    return op


def take_out_shift(pkg: Path, eager: Any, clips: np.ndarray, names: Sequence[str], buffer_path: str,
                   threads: int) -> OutputShift | str:
    """Run the package `pkg` on `clips` in the reference interpreter, measure its shift on `names`
    (the model's first outputs) against the eager deploy form, and subtract it from the offset
    const in place. Returns the shift, or a line saying why the file was left as it is."""
    from coremltools.proto import Model_pb2

    from echoedge.mil.interpreter import Interpreter

    path = pkg / SPEC_FILE
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    fn = spec.mlProgram.functions["main"]
    op = _offset_const(fn.block_specializations[fn.opset], buffer_path)
    if isinstance(op, str):
        return op
    tensor = op.attributes["val"].immediateValue.tensor
    offset = np.frombuffer(tensor.bytes.values, dtype="<f2")  # float16, raw little-endian
    if offset.shape != (len(names),):
        return f"{op.outputs[0].name} holds {offset.size} values for {len(names)} outputs"
    interp = Interpreter(pkg, threads=threads)
    runs = [interp.run({interp.input_names[0]: c[None]}) for c in clips]
    quantized = [np.concatenate([r[n] for r in runs]) for n in names]
    shift = measure_shift(quantized, reference_outputs(eager, clips), names,
                          "this package in the reference interpreter on the calibration clips, "
                          "against the eager deploy form")
    wanted = offset.astype(np.float64) - np.asarray(shift.shift)
    stored = wanted.astype("<f2")
    tensor.bytes.values = stored.tobytes()
    left = float(np.abs(stored.astype(np.float64) - wanted).max())
    path.write_bytes(spec.SerializeToString(deterministic=True))
    shift.applied_to = (f"the ML program's const {op.outputs[0].name} (its float16 grid leaves "
                        f"<= {left:.1e})")
    return shift


__all__: Sequence[str] = ("take_out_shift",)
