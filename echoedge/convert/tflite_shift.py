"""Take a measured output shift out of a .tflite file (convert/output_shift.py says why).

onnx2tf folds E2FA's ``* out_scale + out_mean`` into the last FULLY_CONNECTED: the output offset
lives in that op's bias (int32 in an int8 file, scale = input scale x weight scale per output
channel), and each regression output is one channel of it, picked by a GATHER. The shift is
found by walking back from each graph output through its bookkeeping (tflite_ops.output_source)
to one FULLY_CONNECTED, and subtracted from its bias in the bias's own units. Any other structure is
refused: the caller then keeps the file as converted and says so.

tensorflow is imported inside the function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from echoedge.convert.tflite_ops import output_source, tflite_graph
from echoedge.errors import EchoEdgeError

_INT_TYPES = {2: np.int32, 4: np.int64}  # TensorType INT32, INT64


def take_out_shift(data: bytes, output_tensors: Sequence[int], shift: Sequence[float]) -> tuple[bytes, str]:
    """`data` with `shift[i]` subtracted from the bias channel that output tensor
    `output_tensors[i]` reads, and a description of where. EchoEdgeError when the outputs do not
    come from the channels of one FULLY_CONNECTED with a bias of its own."""
    from tensorflow.lite.tools import flatbuffer_utils

    ops, _, _ = tflite_graph(data)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    sg = model.subgraphs[0]

    def const_int(t: int) -> int | None:
        ten = sg.tensors[t]
        raw = model.buffers[ten.buffer].data
        if raw is None or ten.type not in _INT_TYPES:
            return None
        v = np.frombuffer(bytes(raw), _INT_TYPES[ten.type])
        return int(v[0]) if v.size == 1 else None

    fc, channels = None, []
    for t in output_tensors:
        i, gathers = output_source(ops, t)
        if i is None or ops[i].op != "FULLY_CONNECTED" or len(ops[i].inputs) < 3 or ops[i].inputs[2] < 0:
            raise EchoEdgeError(f"output tensor {t} comes from {'no op' if i is None else ops[i].op}, "
                                "not from a FULLY_CONNECTED with a bias")
        picks = [const_int(ops[g].inputs[1]) for g in gathers]
        if len(picks) > 1 or None in picks:
            raise EchoEdgeError(f"output tensor {t} picks its column in a way this does not follow")
        if fc not in (None, i):
            raise EchoEdgeError("the outputs come from more than one FULLY_CONNECTED")
        fc = i
        channels.append(picks[0] if picks else 0)
    if len(set(channels)) != len(channels):
        raise EchoEdgeError(f"the outputs share bias channels {channels}")
    assert fc is not None
    bias_t = ops[fc].inputs[2]
    bias = sg.tensors[bias_t]
    if sum(1 for ten in sg.tensors if ten.buffer == bias.buffer) != 1:
        raise EchoEdgeError("the output bias shares its buffer with another tensor")
    raw = model.buffers[bias.buffer].data
    if raw is None:
        raise EchoEdgeError("the output bias is not a constant")
    s = np.asarray(shift, dtype=np.float64)
    if bias.type == 0:  # FLOAT32
        b = np.frombuffer(bytes(raw), np.float32).copy()
        b[channels] -= s.astype(np.float32)
        units = "float32"
    elif bias.type == 2 and bias.quantization is not None and bias.quantization.scale is not None:
        b = np.frombuffer(bytes(raw), np.int32).copy()
        scale = np.asarray(bias.quantization.scale, dtype=np.float64)
        scale = scale[channels] if scale.size > 1 else np.full(len(channels), float(scale[0]))
        b[channels] -= np.round(s / scale).astype(np.int32)
        units = "int32, in the bias's own scale"
    else:
        raise EchoEdgeError(f"the output bias has tensor type {bias.type}, not float32 or quantized int32")
    model.buffers[bias.buffer].data = np.frombuffer(b.tobytes(), np.uint8)
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return out, f"the bias of the last FULLY_CONNECTED (op {fc}, channels {channels}, {units})"


__all__: Sequence[str] = ("take_out_shift",)
