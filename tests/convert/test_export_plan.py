import pytest

from echoedge.convert.export import CALIBRATED, plan_exports
from echoedge.errors import EchoEdgeError


def test_each_format_builds_the_precisions_it_offers():
    plan = plan_exports(["executorch", "tflite", "coreml"], ["fp16", "int8", "w8a8"])
    assert plan == [("executorch", "int8"), ("tflite", "fp16"), ("tflite", "int8"),
                    ("coreml", "fp16"), ("coreml", "w8a8")]
    assert {"int8", "w8a8"} <= set(CALIBRATED)


def test_a_precision_no_requested_format_offers_is_refused():
    with pytest.raises(EchoEdgeError, match="precision 'fp16' is not offered by executorch"):
        plan_exports(["executorch"], ["fp32", "fp16"])
    with pytest.raises(EchoEdgeError, match="format 'onnx' is not available"):
        plan_exports(["onnx"], ["fp32"])
