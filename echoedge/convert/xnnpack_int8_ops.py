"""Int8 LeakyReLU and element-wise maximum for ExecuTorch's XNNPACK route (PT2E annotation and
partitioning), which the stock quantizer and partitioner leave float.

XNNPACK runs both on int8 tensors (qs8 leaky ReLU; maximum of two tensors with one scale), but
executorch 1.x's XNNPACKQuantizer annotates neither and its partitioner configs take them float
only. Every LeakyReLU of Echo-E3Net's CNN stages then dequantized a conv's int8 output, and the
reshapes, transposes and time slices of the next Conv3dAs2d ran float until its per-slice
quantize: 141 float-to-int8 conversions, and 960 of the 1271 MB of activations summed over the
whole-recipe .pte's graph were float. With both ops int8 (shipped checkpoint, Intel AVX-512 VNNI,
2 threads, bench_int8 and bench_memory): the whole recipe's .pte 89.4 -> 46-51 ms p50 (TFLite's
whole file: 58-62 ms in the same runs), float activations 76 of 543 MB, working memory 130 -> 65
MB, mean / p95 |dEF| vs fp32 on run's protocol 0.218 / 0.425 -> 0.210 / 0.422; the conv-stages
.pte 89.4 -> 48-52 ms.

The annotation rules, applied after the stock quantizer's and repeated until nothing changes:

- a LeakyReLU whose output reaches only int8 inputs (through reshapes, transposes, slices, maxima)
  has its output quantized where it is made, with its own observer, not per slice downstream:
  the same values and ranges, quantized once. It runs int8 when its input is an int8 output (a
  conv's); the float stem's LeakyReLU runs float and writes int8;
- a maximum of two int8 tensors shares their qparams (exact: max commutes with a monotonic map);
- reshapes, transposes and slices after any of them share its qparams (the stock propagation).

torch / torchao / executorch are imported inside the functions.
"""

from __future__ import annotations

from typing import Any, Callable


def annotate_int8_glue(model: Any, output_qspec: Any, in_scope: Callable[[Any], bool] | None) -> None:
    """Annotate `model` (a graph the XNNPACK quantizer has annotated) by the rules above.
    `output_qspec` is the activation spec of a new int8 output; `in_scope` is the quantizer's
    filter (None: every node)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    leaky, maximum = torch.ops.aten.leaky_relu.default, torch.ops.aten.maximum.default
    for _ in range(len(model.graph.nodes)):  # each pass reaches at least one node further
        changed = 0
        for node in model.graph.nodes:
            if node.op != "call_function" or _annotated(node) or node.target not in (leaky, maximum):
                continue
            if node.target is maximum:
                a, b = node.args[0], node.args[1]
                if _int8_output(a) and _int8_output(b):
                    shared = SharedQuantizationSpec(a)
                    node.meta[_KEY] = QuantizationAnnotation(input_qspec_map={a: shared, b: shared},
                                                             output_qspec=shared, _annotated=True)
                    changed += 1
                continue
            # An int8 output that a float op reads would add a rounding the float route does
            # not have (the last CNN stage's LeakyReLU of the conv-stages recipe, read by float
            # attention): such a LeakyReLU stays float.
            if not _feeds_only_int8(node):
                continue
            src = node.args[0]
            if _int8_output(src) and (in_scope is None or in_scope(node)):
                inputs = {src: SharedQuantizationSpec(src)}
            else:  # float input (the stem's): its output is quantized where it is made
                inputs = {}
            node.meta[_KEY] = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=output_qspec,
                                                     _annotated=True)
            changed += 1
        propagate_annotation(model)
        if not changed:
            break


def partitioner() -> Any:
    """An XnnpackPartitioner whose LeakyReLU and maximum configs also take static int8 nodes."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (
        LeakyReLUConfig, MaximumConfig,
    )
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    def int8_too(config: type) -> type:
        def supported_precision_types(self: Any) -> list[Any]:
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]
        return type(f"Int8{config.__name__}", (config,),
                    {"supported_precision_types": supported_precision_types})

    widened = {LeakyReLUConfig: int8_too(LeakyReLUConfig), MaximumConfig: int8_too(MaximumConfig)}
    return XnnpackPartitioner(configs=[widened.get(c, c) for c in ALL_PARTITIONER_CONFIGS])


_KEY = "quantization_annotation"  # torchao's Q_ANNOTATION_KEY


def _annotated(node: Any) -> bool:
    a = node.meta.get(_KEY)
    return a is not None and a._annotated


def _int8_output(node: Any) -> bool:
    return _annotated(node) and node.meta[_KEY].output_qspec is not None


def _feeds_only_int8(node: Any) -> bool:
    """Every use of `node`'s output, through unannotated reshapes / transposes / slices and
    maxima, is an int8 input of an annotated op (or new_zeros, which reads no values)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import _is_share_obs_or_fq_op

    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if not n.users:
            return False  # a graph output: its consumer is float
        for user in n.users:
            if _annotated(user) and n in user.meta[_KEY].input_qspec_map:
                continue
            if user.target == torch.ops.aten.new_zeros.default:
                continue  # reads the dtype and device only (Conv3dAs2d's zero-padded frames)
            if user.op == "call_function" and not _annotated(user) and (
                    _is_share_obs_or_fq_op(user.target) or user.target == torch.ops.aten.maximum.default):
                todo.append(user)  # a maximum turns int8 with its inputs (annotate_int8_glue)
                continue
            return False
    return True
