"""Selective int8 for TFLite: which ops stay float, and how tf.lite is told.

Static int8 calibrated on the echo calibration set, with the numerically fragile ops (layer-norm
pieces, softmax, attention matmuls, ...; FLOAT_OPS_IN_INT8) denylisted through tf.lite's
QuantizationDebugger so they stay float (`selective_int8`). For Echo-E3Net the recipe is also
scoped, as ExecuTorch's (int8_recipe.int8_scope): only the CNN stages (95 % of the MACs) are int8,
every op outside them is a denylisted node and stays float (`int8_scope_plan` maps the module scope
onto the TFLite graph). Other models: CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED all int8.
`full_int8` is the all-integer scheme (int8 I/O). Both take their activation ranges from
tflite_calibration, not from TensorFlow's calibrator.

tensorflow / onnx are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from echoedge.convert.tflite_calibration import Ranges
from echoedge.convert.tflite_ops import GraphOp, tflite_graph
from echoedge.errors import EchoEdgeError

# Ops kept float in the selective int8 file (tf.lite op names). Measured on this machine
# (toolchain.md): quantizing layer norm, softmax, tanh and the attention matmuls made XNNPACK split
# the graph into ~25 pieces, and the file slower and less accurate than leaving them float.
FLOAT_OPS_IN_INT8 = ("RSQRT", "SQUARED_DIFFERENCE", "SOFTMAX", "MEAN", "SUB", "TANH",
                     "BATCH_MATMUL", "LOGISTIC", "REDUCE_MAX", "SQRT", "DIV", "SUM", "MAXIMUM",
                     "POW")
# Also float in the "whole" recipe's file of a model with float glue (int8_recipe.WHOLE_FLOAT_GLUE):
# every MUL. In Echo-E3Net none carries a weight: they are the layer norms' scales, the GELU and
# attention gates and E2FA's output scaling, each int8 MUL a second per-tensor rounding of an
# activation. Shipped checkpoint, run's protocol (24 TEST videos x 2 clips, 32 ef-stratified
# clips), mean / p95 |dEF| vs fp32: whole 0.475 / 0.793; with the vector glue float (below) 0.449 /
# 0.834; and every MUL 0.344 / 0.657 (MULs of two activations only: 0.370 / 0.780; every ADD too:
# 0.283 / 0.689 but the file grows to 2.47 MB, its bias constants float). p50 in the same
# round-robin run: 179 ms -> 174 ms (an AVX2 host), no slower.
# Those figures were taken on TensorFlow's calibrator's ranges; on echo-edge's (tflite_calibration),
# the whole file with every MUL int8 gave 0.298 / 0.610 against 0.213 / 0.465 with them float,
# p50 70.0 vs 68.4 ms: they stay float.
WHOLE_FLOAT_OPS = ("MUL",)


# ----------------------------------------------------------------------------- int8 scope
def int8_scope(model: Any) -> tuple[str, ...] | None:
    """Module-path prefixes whose convs the int8 file quantizes (None: the whole graph).

    The ExecuTorch recipe's scope (echoedge.convert.int8_recipe.int8_scope, measured there): for
    Echo-E3Net the CNN stages, 95 % of the multiply-adds; the stem (12 weights, the most
    EF-sensitive layer), the hybrid stages, E2CBD and E2FA stay float.
    """
    from echoedge.convert.int8_recipe import int8_scope as recipe_scope

    return recipe_scope(model)


@dataclass
class Int8ScopePlan:
    """A module scope mapped onto one (calibrated, float) TFLite graph.

    onnx2tf does not keep the ONNX node names (its ops are named `tf.nn.convolution_5` and the
    like), so the scope is located by weights: an ONNX Conv inside the scope (its node name starts
    with the module path, e.g. /encoder/cnn.0/...) is the TFLite CONV_2D / DEPTHWISE_CONV_2D whose
    filter holds the same numbers. The int8 part is those convs and every op they depend on; every
    other op is a denylisted node (QuantizationDebugOptions.denylisted_nodes, matched on op
    output-tensor names) and stays float.
    """

    modules: tuple[str, ...]
    onnx_convs: int  # Conv nodes of the ONNX graph inside the scope
    heavy_nodes: list[str]  # output names of the in-scope convs in the TFLite graph
    int8_part_ops: int  # ops in the int8 part (in-scope convs and their ancestors)
    denylisted_nodes: list[str]  # output names of every other op
    kept_float_nodes: list[str] = field(default_factory=list)  # in-scope convs kept float (mixed)
    kept_float: tuple[str, ...] = ()  # the module paths they belong to

    def to_dict(self) -> dict[str, Any]:
        located = ("in-scope ONNX Conv weights matched to TFLite conv filters; their ancestors are "
                   "the int8 part, every other op a denylisted node" if self.modules else
                   "no scope (every conv int8): the kept-float convs, matched to TFLite conv filters "
                   "by weight, are the only denylisted nodes")
        return {"int8_modules": list(self.modules) or "all", "onnx_convs_in_scope": self.onnx_convs,
                "int8_convs": len(self.heavy_nodes), "int8_part_ops": self.int8_part_ops,
                "denylisted_nodes": len(self.denylisted_nodes), "located_by": located,
                **({"kept_float": list(self.kept_float), "kept_float_convs": len(self.kept_float_nodes),
                    "kept_float_nodes": list(self.kept_float_nodes)} if self.kept_float else {})}


def _onnx_scope_weights(onnx_path: Path, modules: Sequence[str]) -> list[np.ndarray]:
    """Weights of the ONNX Conv nodes inside `modules`, each in the layouts a TFLite filter can
    take: CONV_2D (O, kh, kw, I) and, for a depthwise conv, DEPTHWISE_CONV_2D (1, kh, kw, O)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:  # constants onnxsim left as Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    # ONNX names nodes after module paths with '/' between attributes (/encoder/cnn.0/block/...).
    prefixes = tuple("/" + m.replace(".", "/") for m in modules)
    weights = []
    for n in graph.node:
        if n.op_type != "Conv" or not n.name.startswith(prefixes):
            continue
        w = inits.get(n.input[1])
        if w is None or w.ndim != 4:
            raise EchoEdgeError(f"{onnx_path.name}: in-scope conv {n.name} has no constant 4-D weight")
        weights.append(w.astype(np.float32))
    return weights


def int8_scope_plan(tflite: bytes, onnx_path: Path, modules: Sequence[str],
                    float_weights: Sequence[np.ndarray] = (),
                    keep_float: Sequence[str] = ()) -> Int8ScopePlan:
    """Map a module scope onto a float (calibrated) TFLite graph converted from `onnx_path`.

    `float_weights` (torch layout (O, I, kh, kw)) are the convs of the `keep_float` modules: their
    TFLite convs are denylisted (float) even inside the scope, and so are not part of the int8
    part unless an int8 conv depends on them (then only they are denylisted).
    """
    weights = _onnx_scope_weights(onnx_path, modules)
    if not weights:
        raise EchoEdgeError(f"{onnx_path.name}: no Conv node is named under the int8 scope "
                            f"({', '.join(modules)}); cannot scope the int8 file")
    ops, names, const = tflite_graph(tflite)
    by_shape: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for k, w in enumerate(weights):
        by_shape.setdefault(w.transpose(0, 2, 3, 1).shape, []).append((k, w.transpose(0, 2, 3, 1)))
        if w.shape[1] == 1:
            by_shape.setdefault(w.transpose(1, 2, 3, 0).shape, []).append((k, w.transpose(1, 2, 3, 0)))
    found: set[int] = set()
    heavy: list[int] = []
    for i, o in enumerate(ops):
        if o.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(o.inputs) < 2:
            continue
        f = const(o.inputs[1])
        if f is None:
            continue
        hits = [k for k, w in by_shape.get(f.shape, []) if np.array_equal(f, w)]
        if hits:
            found.update(hits)
            heavy.append(i)
    if len(found) != len(weights):
        raise EchoEdgeError(f"{onnx_path.name}: {len(weights) - len(found)} of the {len(weights)} "
                            f"in-scope convs ({', '.join(modules)}) were not found in the TFLite "
                            "graph (onnx2tf changed their weights); cannot scope the int8 file")
    kept = _locate_convs(ops, const, float_weights) if len(float_weights) else set()
    if len(float_weights) and len(kept) < len(float_weights):
        raise EchoEdgeError(f"{onnx_path.name}: only {len(kept)} of the {len(float_weights)} convs kept "
                            f"float ({', '.join(keep_float)}) were found in the TFLite graph")
    heavy = [i for i in heavy if i not in kept]
    producer = {t: i for i, o in enumerate(ops) for t in o.outputs}
    part: set[int] = set()
    todo = list(heavy)
    while todo:  # the in-scope convs and everything they depend on
        i = todo.pop()
        if i in part:
            continue
        part.add(i)
        todo.extend(producer[t] for t in ops[i].inputs if t in producer)
    part -= kept  # a kept-float conv stays float even when an int8 conv depends on it
    deny = [names[t] for i, o in enumerate(ops) if i not in part for t in o.outputs]
    return Int8ScopePlan(tuple(modules), len(weights), [names[ops[i].outputs[0]] for i in heavy],
                         len(part), deny, [names[ops[i].outputs[0]] for i in sorted(kept)],
                         tuple(keep_float))


def vector_glue_nodes(tflite: bytes) -> list[str]:
    """Output names of the ops on (batch, features) vectors, FULLY_CONNECTED and (de)quantize
    aside: for Echo-E3Net, E2FA's statistics row, its concatenation and output scaling, and the
    heads' 2-D bookkeeping -- the ops ExecuTorch's whole recipe keeps float as E2FA's glue.
    onnx2tf keeps no module names, so the glue is found by rank: every output 2-D or less."""
    from ai_edge_litert import schema_py_generated as schema

    ops, names, _ = tflite_graph(tflite)
    sg = schema.Model.GetRootAs(tflite, 0).Subgraphs(0)
    rank = [sg.Tensors(i).ShapeLength() for i in range(sg.TensorsLength())]
    return [names[t] for o in ops if o.op not in ("FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE")
            and o.outputs and all(rank[t] <= 2 for t in o.outputs) for t in o.outputs]


def keep_float_plan(tflite: bytes, float_weights: Sequence[np.ndarray],
                    keep_float: Sequence[str]) -> Int8ScopePlan:
    """Mixed precision without a scope (a model whose recipe quantizes every conv, e.g. a video
    ResNet): the convs of `keep_float` (torch-layout `float_weights`), located by weight in the
    calibrated graph, are the only denylisted nodes; every other conv is int8."""
    ops, names, const = tflite_graph(tflite)
    kept = _locate_convs(ops, const, float_weights)
    if len(kept) < len(float_weights):
        raise EchoEdgeError(f"only {len(kept)} of the {len(float_weights)} convs kept float "
                            f"({', '.join(keep_float)}) were found in the TFLite graph")
    heavy = [i for i, o in enumerate(ops) if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and i not in kept]
    float_nodes = [names[ops[i].outputs[0]] for i in sorted(kept)]
    return Int8ScopePlan((), 0, [names[ops[i].outputs[0]] for i in heavy], len(ops) - len(kept),
                         float_nodes, float_nodes, tuple(keep_float))


def _locate_convs(ops: list[GraphOp], const: Callable[[int], np.ndarray | None],
                  weights: Sequence[np.ndarray]) -> set[int]:
    """Indices of the CONV_2D / DEPTHWISE_CONV_2D ops whose filter equals one of `weights`
    (torch layout), in either TFLite filter layout."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for w in weights:
        by_shape.setdefault(w.transpose(0, 2, 3, 1).shape, []).append(w.transpose(0, 2, 3, 1))
        if w.shape[1] == 1:
            by_shape.setdefault(w.transpose(1, 2, 3, 0).shape, []).append(w.transpose(1, 2, 3, 0))
    hits = set()
    for i, o in enumerate(ops):
        if o.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(o.inputs) < 2:
            continue
        f = const(o.inputs[1])
        if f is not None and any(np.array_equal(f, w) for w in by_shape.get(f.shape, [])):
            hits.add(i)
    return hits


# ----------------------------------------------------------------------------- QuantizationDebugger
def _calibrated(converter: Any, representative: Callable[[], Iterator[list[np.ndarray]]],
                options: Any) -> tuple[Any, Ranges]:
    """A QuantizationDebugger on `converter` whose calibrated model holds echo-edge's ranges over
    every clip of `representative` (tflite_calibration says why not TensorFlow's)."""
    import itertools

    import tensorflow as tf

    from echoedge.convert.tflite_calibration import calibrate

    def first() -> Iterator[list[np.ndarray]]:
        # TensorFlow's calibrator sees one clip: it gives the float graph and which tensors take a
        # range; calibrate() measures the ranges on every clip.
        return itertools.islice(representative(), 1)

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = first
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=first,
                                                         debug_options=options)
    ranges = calibrate(bytes(debugger.calibrated_model), representative())
    # Every quantization after this (get_nondebug_quantized_model, the options setter) reads it.
    debugger.calibrated_model = ranges.data
    return debugger, ranges


def full_int8(converter: Any, representative: Callable[[], Iterator[list[np.ndarray]]]) -> tuple[bytes, Ranges]:
    """Full-integer int8 .tflite bytes with int8 input and output (TFLITE_BUILTINS_INT8), and how
    the activation ranges were measured. Runs inside the caller's output capture."""
    import tensorflow as tf
    # TFLiteConverter's own quantizer call; the QuantizationDebugger's passes no I/O types.
    from tensorflow.lite.python.convert import mlir_quantize

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    _, ranges = _calibrated(converter, representative, tf.lite.experimental.QuantizationDebugOptions())
    data = mlir_quantize(ranges.data, disable_per_channel=converter._experimental_disable_per_channel,
                         input_data_type=tf.int8, output_data_type=tf.int8)
    return bytes(data), ranges


def selective_int8(converter: Any, representative: Callable[[], Iterator[list[np.ndarray]]],
                   scope: Sequence[str] | None = None, onnx_path: Path | None = None,
                   float_weights: Sequence[np.ndarray] = (),
                   keep_float: Sequence[str] = (),
                   float_glue: bool = False) -> tuple[bytes, Int8ScopePlan | None, Ranges]:
    """The selective int8 .tflite bytes of a TFLiteConverter (SavedModel, TFLITE_BUILTINS), the
    scope plan when `scope` (with the ONNX file the SavedModel came from) limits int8 to the convs
    of those modules, and how the activation ranges were measured. `float_glue` (the whole recipe,
    unscoped): WHOLE_FLOAT_OPS and the vector glue (vector_glue_nodes) stay float too. Runs inside
    the caller's output capture."""
    if float_glue and (scope or len(float_weights)):
        raise EchoEdgeError("the float glue is the unscoped whole recipe's; it does not combine "
                            "with an int8 scope or kept-float convs")
    import tensorflow as tf

    float_ops = list(FLOAT_OPS_IN_INT8) + (list(WHOLE_FLOAT_OPS) if float_glue else [])
    debugger, ranges = _calibrated(converter, representative,
                                   tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops))
    if float_glue:
        # The glue's names exist only in the calibrated graph: read them, then quantize again.
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=float_ops, denylisted_nodes=vector_glue_nodes(ranges.data))
    if not scope and not len(float_weights):
        return bytes(debugger.get_nondebug_quantized_model()), None, ranges
    if scope and onnx_path is None:
        raise EchoEdgeError("a scoped int8 conversion needs the ONNX file of the SavedModel")
    # Node names exist only once the calibrated graph does: read them from it, then
    # quantize again with the out-of-scope (or kept-float) nodes denylisted (the options setter does).
    plan = (int8_scope_plan(ranges.data, onnx_path, scope, float_weights, keep_float) if scope
            else keep_float_plan(ranges.data, float_weights, keep_float))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(FLOAT_OPS_IN_INT8), denylisted_nodes=plan.denylisted_nodes)
    return bytes(debugger.get_nondebug_quantized_model()), plan, ranges


__all__: Sequence[str] = ("FLOAT_OPS_IN_INT8", "WHOLE_FLOAT_OPS", "Int8ScopePlan", "int8_scope", "int8_scope_plan",
                          "keep_float_plan", "full_int8", "selective_int8", "vector_glue_nodes")
