"""Drop the names of a .tflite file's intermediate tensors: the whole recipe's last bytes.

onnx2tf names every tensor after its Keras layer path ("model_46/tf.strided_slice_28/
StridedSlice1"): in the shipped checkpoint's whole-recipe int8 file, 1228 names take 48 kB of its
2.03 MB. No runtime reads them. TFLite's own `strip_strings` tool drops them too, but with the
signature defs, which the interpreter's signature runner (and so every echo-edge runner and
bridge) needs; this keeps the signature, the graph's input and output names and the subgraph name,
and drops the rest. A file's ops, weights and quantization are untouched: the golden check that
follows runs the stripped file.

tensorflow is imported inside the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Stripped:
    data: bytes
    names_dropped: int
    bytes_saved: int

    def to_dict(self) -> dict[str, Any]:
        return {"intermediate_tensor_names": "dropped (signature, graph inputs and outputs kept)",
                "names_dropped": self.names_dropped, "bytes_saved": self.bytes_saved}


def strip_tensor_names(data: bytes) -> Stripped:
    """`data` with the names of every tensor but the graphs' inputs and outputs dropped."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    dropped = 0
    for sg in model.subgraphs:
        keep = {int(t) for t in list(sg.inputs) + list(sg.outputs)}
        for i, t in enumerate(sg.tensors):
            if i not in keep and t.name:
                t.name = None
                dropped += 1
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return Stripped(out, dropped, len(data) - len(out))
