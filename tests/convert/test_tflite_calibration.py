"""Activation ranges measured in the interpreter (echoedge.convert.tflite_calibration).

GELU's shape, tanh(x) then + 1 then * x: the ADD and the MUL may write over their input, which is
where TensorFlow's calibrator records a wrong range (tensorflow/tensorflow#127842). Every range the
calibration writes must be the tensor's own running min/max, checked against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from echoedge.convert.tflite_calibration import calibrate  # noqa: E402
from echoedge.errors import EchoEdgeError  # noqa: E402


@pytest.fixture(scope="module")
def first_clip_calibrated() -> tuple[bytes, list[np.ndarray]]:
    """A float .tflite as TensorFlow's calibrator leaves it after one input, and three inputs."""
    from tensorflow.lite.python.optimize import calibrator

    class Gelu(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
        def __call__(self, x):
            return (tf.tanh(x) + 1.0) * x + 1.0

    m = Gelu()
    data = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m).convert()
    rng = np.random.default_rng(0)
    xs = [rng.normal(0, 2, (1, 256)).astype(np.float32) for _ in range(3)]
    return bytes(calibrator.Calibrator(data).calibrate(lambda: iter([[xs[0]]]))), xs


def _ranges(data: bytes) -> dict[str, tuple[float, float]]:
    from tensorflow.lite.tools import flatbuffer_utils

    sg = flatbuffer_utils.convert_bytearray_to_object(bytearray(data)).subgraphs[0]
    return {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0]))
            for t in sg.tensors if t.quantization is not None and t.quantization.min is not None
            and len(t.quantization.min)}


def test_every_range_is_the_tensors_own_min_max_over_all_inputs(first_clip_calibrated):
    calibrated, xs = first_clip_calibrated
    out = calibrate(calibrated, [[x] for x in xs], threads=1)
    got = _ranges(out.data)
    assert set(got) == set(_ranges(calibrated))  # TensorFlow's choice of tensors is kept
    assert (out.tensors, out.clips) == (5, 3)
    x = np.concatenate(xs)
    values = {"serving_default_x:0": x, "Tanh": np.tanh(x), "add": np.tanh(x) + 1,
              "mul": (np.tanh(x) + 1) * x, "PartitionedCall:0": (np.tanh(x) + 1) * x + 1}
    assert set(got) == set(values)
    for name, v in values.items():  # to the builtin tanh kernel's rounding
        np.testing.assert_allclose(got[name], (v.min(), v.max()), rtol=1e-5, atol=1e-6, err_msg=name)


def test_no_inputs_a_wrong_arity_and_a_nan_are_one_line_errors(first_clip_calibrated):
    calibrated, xs = first_clip_calibrated
    with pytest.raises(EchoEdgeError, match="no calibration clips"):
        calibrate(calibrated, [])
    with pytest.raises(EchoEdgeError, match="2 inputs given, the graph takes 1"):
        calibrate(calibrated, [[xs[0], xs[1]]])
    with pytest.raises(EchoEdgeError, match="NaN or an infinity"):
        calibrate(calibrated, [[np.full_like(xs[0], np.nan)]])
