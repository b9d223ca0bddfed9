"""Output-shift correction of a whole-recipe int8 .tflite: the mean shift int8 puts on EF, EDV
and ESV, measured by running the file itself on the calibration clips, taken out of the bias of
the fully-connected layer that computes them.

Why: as for the .pte (output_shift.py), the whole recipe's EF error is mostly one shared shift.
Shipped checkpoint, run's protocol (24 TEST videos x 2 clips): mean |dEF| 0.344 with a signed mean
of -0.293. It is not the head's int8 output rounding: the same file with that layer run hybrid
(int8 weights, float output; EF otherwise comes out in steps of 0.62) gave 0.354, signed -0.297.

Where the correction goes: onnx2tf folds E2FA's offset (`out_mean + out_scale * z`) into the last
FULLY_CONNECTED's bias, so each corrected output is one channel of that layer (FC -> DEQUANTIZE ->
GATHER k -> output). The bias is int32 in units of its own quantization scale (input scale times
the channel's weight scale, about 2e-4 EF points here), so subtracting round(shift / scale) is the
shift to within 1e-4. A file whose outputs are not wired that way is left as it is, and the
manifest says why. Weights and activation ranges are untouched; the output's own quantization
grid stays where it is (the shift moves values across its steps, which is what the mean needs).

Measured on the file, not on a simulation: TFLite's converter leaves no eager twin of its int8
graph, and the interpreter is what runs on the device. tensorflow is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from echoedge.convert.output_shift import OutputShift, measure_shift, reference_outputs
from echoedge.convert.tflite_ops import object_op_names

# Ops between the FULLY_CONNECTED and a graph output that keep each value as it is.
_PASS = ("DEQUANTIZE", "RESHAPE", "SQUEEZE")


@dataclass
class BiasSlot:
    """One corrected output: the bias entry of the fully-connected channel that computes it."""

    output: str
    op: int  # index of the FULLY_CONNECTED in subgraph 0
    channel: int


def _const_int(model: Any, sg: Any, t: int) -> int | None:
    """The value of a one-element int32 / int64 constant tensor, or None."""
    from ai_edge_litert import schema_py_generated as schema

    ten = sg.tensors[t]
    data = model.buffers[ten.buffer].data if ten.buffer < len(model.buffers) else None
    if data is None or len(data) == 0:
        return None
    dt = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}.get(ten.type)
    if dt is None:
        return None
    v = np.frombuffer(bytes(data), dt)
    return int(v[0]) if v.size == 1 else None


def bias_slots(model: Any, names: Sequence[str], output_keys: Sequence[str]) -> list[BiasSlot] | str:
    """Where each of `names` (signature output keys `output_keys`) is computed: a channel of a
    FULLY_CONNECTED with a bias, reached through GATHER of one index and value-keeping ops.
    Returns the slots, or a line saying why the file is not wired that way."""
    sg = model.subgraphs[0]
    codes = object_op_names(model)
    producer = {int(t): i for i, o in enumerate(sg.operators) for t in o.outputs}
    sig = {m.name.decode() if isinstance(m.name, bytes) else m.name: int(m.tensorIndex)
           for m in model.signatureDefs[0].outputs} if model.signatureDefs else {}
    slots = []
    for name, key in zip(names, output_keys):
        t = sig.get(key)
        if t is None:
            return f"output {name} ({key}) is not in the file's signature"
        channel = None
        while True:
            i = producer.get(t)
            if i is None:
                return f"output {name} is not computed by a fully-connected layer"
            op, kind = sg.operators[i], codes[sg.operators[i].opcodeIndex]
            if kind == "FULLY_CONNECTED":
                break
            if kind == "GATHER" and channel is None:
                axis = op.builtinOptions.axis if op.builtinOptions is not None else 0
                rank = len(sg.tensors[op.inputs[0]].shape)
                channel = _const_int(model, sg, op.inputs[1])
                if channel is None or axis % rank != rank - 1:
                    return f"output {name}: a GATHER that does not pick one feature"
            elif kind not in _PASS:
                return f"output {name}: {kind} between it and the fully-connected layer"
            t = int(op.inputs[0])
        width = int(sg.tensors[op.outputs[0]].shape[-1])
        if channel is None:
            if width != 1:
                return f"output {name} is a whole {width}-wide fully-connected output"
            channel = 0
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return f"output {name}: its fully-connected layer has no bias"
        slots.append(BiasSlot(name, i, channel % width))
    return slots


def subtract_from_bias(model: Any, slots: Sequence[BiasSlot], shift: Sequence[float]) -> float | None:
    """Subtract each slot's shift from its bias entry, in a new buffer per bias (a constant may be
    shared). Returns the largest rounding left (in output units) by an int32 bias's grid, None
    where every bias is float."""
    from ai_edge_litert import schema_py_generated as schema

    sg = model.subgraphs[0]
    worst = None
    by_op: dict[int, list[tuple[int, float]]] = {}
    for s, v in zip(slots, shift):
        by_op.setdefault(s.op, []).append((s.channel, v))
    for i, entries in by_op.items():
        op = sg.operators[i]
        ten = sg.tensors[op.inputs[2]]
        raw = bytes(model.buffers[ten.buffer].data)
        if ten.type == schema.TensorType.INT32:
            bias = np.frombuffer(raw, np.int32).astype(np.int64)
            scales = np.broadcast_to(np.asarray(ten.quantization.scale, np.float64), bias.shape)
            for c, v in entries:
                step = int(round(v / scales[c]))
                worst = max(worst or 0.0, abs(v - step * scales[c]))
                bias[c] -= step
            new = np.clip(bias, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        elif ten.type == schema.TensorType.FLOAT32:
            new = np.frombuffer(raw, np.float32).copy()
            for c, v in entries:
                new[c] -= np.float32(v)
        else:
            raise ValueError(f"bias of type {ten.type}")
        buf = schema.BufferT()
        buf.data = np.frombuffer(new.tobytes(), np.uint8)
        model.buffers.append(buf)
        ten.buffer = len(model.buffers) - 1
    return worst


def take_out_shift(data: bytes, eager: Any, clips: np.ndarray, clip_shape: Sequence[int],
                   names: Sequence[str], work: Path) -> tuple[bytes, OutputShift | str]:
    """Run the .tflite `data` on `clips` in LiteRT, measure its shift on `names` (the first outputs)
    against the eager deploy form, and take it out of the computing layers' bias. Returns the new
    bytes and the shift, or the unchanged bytes and a line saying why nothing was changed."""
    from tensorflow.lite.tools import flatbuffer_utils

    from echoedge.convert.tflite_interpreter import make_interpreter, run_tflite, signature_io

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    probe = work / "shift-probe.tflite"  # the interpreter reads a file
    probe.write_bytes(data)
    try:
        it = make_interpreter(probe, threads=2, kind="litert")
        io_ = signature_io(it, clip_shape)
        slots = bias_slots(model, names, io_.output_keys[:len(names)])
        if isinstance(slots, str):
            return data, slots
        shift = measure_shift(run_tflite(it, io_, clips), reference_outputs(eager, clips), names,
                              "this file in the LiteRT interpreter on the calibration clips, "
                              "against the eager deploy form")
    finally:
        probe.unlink(missing_ok=True)
    left = subtract_from_bias(model, slots, shift.shift)
    layers = sorted({s.op for s in slots})
    shift.applied_to = (f"the bias of fully-connected op{'s' if len(layers) > 1 else ''} "
                        + ", ".join(map(str, layers))
                        + ("" if left is None else f" (its int32 grid leaves <= {left:.1e})"))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), shift


__all__: Sequence[str] = ("BiasSlot", "bias_slots", "subtract_from_bias", "take_out_shift")
