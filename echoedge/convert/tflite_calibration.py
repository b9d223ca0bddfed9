"""Activation ranges for TFLite's int8 quantizer, read from an interpreter that keeps every tensor.

TensorFlow's own calibrator (the CalibrationWrapper behind TFLiteConverter and the
QuantizationDebugger) records each tensor's running min/max as it runs the float graph. It is
replaced here, for two measured reasons:

- **Wrong ranges.** It logs every op's inputs a second time after the op ran. Where the memory
  planner let an op write its output over an input (ADD, MUL, TANH, ... in place), that input gets
  the output's range: tensorflow/tensorflow#127842, open in TF 2.21. On the shipped checkpoint's
  float graph, 133 of the 722 ranges differed from the tensors' own values that way: GELU's TANH
  read [-1.0, 2.0] (the ADD after it writes tanh + 1 in place), a MUL [-61.3, 192.5] where its
  values lie in [0, 33.3].
- **Time.** It runs on one thread with its logging around every op: 2.9 s per 32 x 112 x 112 clip,
  against 0.58 s here (the same builtin kernels on 2 threads, with every tensor kept). It was 90 s
  of a profiled 144 s TFLite int8 conversion; `run`'s TFLite export went from 153 to 78 s.

What stays TensorFlow's: the float graph (the converter's calibrate-only output on one clip) and
which tensors get a range (those its calibrator gave one). The statistic is the same, a running
min/max over the calibration clips; the quantizer (mlir_quantize, through the QuantizationDebugger)
reads it from the same fields of the flatbuffer.

tensorflow is imported inside the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

# Fixed, not the process's thread budget: the float kernels split their sums by thread, and the
# ranges on 1 and on 2 threads differ in the last bits (measured on the shipped checkpoint). The same
# conversion must write the same file in run's one-thread worker and in `echo-edge export`.
THREADS = 2


@dataclass
class Ranges:
    data: bytes  # the calibrated float .tflite: its tensors' quantization min/max set
    tensors: int  # tensors with a range
    clips: int

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": "running min/max of every calibrated tensor, read in the TFLite "
                          "interpreter with all tensors kept (tflite_calibration.py)",
                "tensors": self.tensors}  # the clips are the calibration set's, stated beside it


def _ranged(tensor: Any) -> bool:
    q = tensor.quantization
    return q is not None and q.min is not None and len(q.min) > 0


def calibrate(calibrated: bytes, inputs: Iterable[Sequence[np.ndarray]], threads: int = THREADS) -> Ranges:
    """`calibrated` (a float .tflite whose tensors TensorFlow's calibrator gave a min/max) with
    those ranges replaced by each tensor's running min/max over `inputs` (one list of input arrays
    per call, in the graph's input order)."""
    import warnings

    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    if len(model.subgraphs) != 1:
        raise EchoEdgeError(f"calibration: the float graph has {len(model.subgraphs)} subgraphs; "
                            "only single-graph models are calibrated here")
    sg = model.subgraphs[0]
    ranged = [i for i, t in enumerate(sg.tensors) if _ranged(t)]
    if not ranged:
        raise EchoEdgeError("calibration: TensorFlow's calibrator gave no tensor a range")
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated"
        warnings.simplefilter("ignore")
        # preserve_all_tensors: no arena reuse and no op writes over its input, so each tensor
        # still holds its own values after the call. No delegate: the builtin kernels, as
        # TensorFlow's calibrator runs them.
        it = tf.lite.Interpreter(
            model_content=calibrated, num_threads=int(threads), experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    slots = [d["index"] for d in it.get_input_details()]
    lo = np.full(len(ranged), np.inf)
    hi = np.full(len(ranged), -np.inf)
    n = 0
    for arrays in inputs:
        if len(arrays) != len(slots):
            raise EchoEdgeError(f"calibration: {len(arrays)} inputs given, the graph takes {len(slots)}")
        for slot, a in zip(slots, arrays):
            it.set_tensor(slot, np.asarray(a, dtype=np.float32))
        it.invoke()
        for k, i in enumerate(ranged):
            view = it.tensor(i)()  # no copy; released before the next invoke
            a_lo, a_hi = float(view.min()), float(view.max())
            del view
            if not (np.isfinite(a_lo) and np.isfinite(a_hi)):
                raise EchoEdgeError(f"calibration clip {n}: tensor {sg.tensors[i].name!r} holds "
                                    "a NaN or an infinity; its int8 range is undefined")
            lo[k], hi[k] = min(lo[k], a_lo), max(hi[k], a_hi)
        n += 1
    if n == 0:
        raise EchoEdgeError("calibration: no calibration clips were given")
    for k, i in enumerate(ranged):
        q = sg.tensors[i].quantization
        q.min = np.array([lo[k]], dtype=np.float32)
        q.max = np.array([hi[k]], dtype=np.float32)
    return Ranges(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), len(ranged), n)


__all__: Sequence[str] = ("THREADS", "Ranges", "calibrate")
