"""Quantization: quantize/dequantize (W8A8 activations, at run time) and the constexpr_*
weight dequantizations (W8 weights, evaluated once when the program loads).

quantize rounds half to even and clips to the integer range of its output dtype.
"""

from __future__ import annotations

from typing import Any

from echoedge.mil.ops.registry import _Op, _op


def _per_axis(T: Any, v: Any, ref_rank: int, axis: int | None) -> Any:
    """A scale/zero-point vector reshaped to broadcast along `axis` of a rank-`ref_rank` tensor."""
    if v is None or v.dim() == 0 or axis is None:
        return v
    shape = [1] * ref_rank
    shape[axis % ref_rank] = v.numel()
    return v.reshape(shape)


_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
              "uint16": (0, 65535), "int4": (-8, 7), "uint4": (0, 15)}


@_op("quantize")
def _quantize(o: _Op) -> Any:
    # quantized = clip(round(x / scale) + zero_point): round half to even (numpy/torch round).
    T = o.torch
    x = o.t("input")
    axis = o.p("axis")
    scale = _per_axis(T, o.t("scale"), x.dim(), axis)
    zp = _per_axis(T, o.t("zero_point").float(), x.dim(), axis) if o.has("zero_point") else 0.0
    lo, hi = _INT_RANGE[o.p("output_dtype")]
    # In place on one new tensor: W8A8 quantizes ~300 activations per clip, some of 6 M elements,
    # and a temporary per step made quantize/dequantize half of the interpreter's time. The
    # integers stay in float32 (exact up to 2**24), which dequantize reads as they are.
    q = x / scale
    q.round_()
    if o.has("zero_point"):
        q.add_(zp)
    return q.clamp_(lo, hi)


@_op("dequantize")
def _dequantize(o: _Op) -> Any:
    T = o.torch
    q = o.t("input")
    axis = o.p("axis")
    scale = _per_axis(T, o.t("scale"), q.dim(), axis)
    if not o.has("zero_point"):
        return q.float() * scale
    zp = _per_axis(T, o.t("zero_point").float(), q.dim(), axis)
    return (q.float() - zp).mul_(scale)


@_op("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(o: _Op) -> Any:
    T = o.torch
    q = o.t("quantized_data").float()
    axis = int(o.p("axis", 0))
    scale = _per_axis(T, o.t("scale"), q.dim(), axis)
    zp = _per_axis(T, o.t("zero_point").float(), q.dim(), axis)
    return (q - zp) * scale


@_op("constexpr_blockwise_shift_scale")
def _constexpr_blockwise_shift_scale(o: _Op) -> Any:
    # iOS18: out = scale * (data - offset), scale/offset repeated over blocks of each dim.
    q = o.t("data").float()
    scale = o.t("scale")
    offset = o.t("offset").float() if o.has("offset") else None
    for d in range(q.dim()):
        rep = q.shape[d] // scale.shape[d]
        if rep > 1:
            scale = scale.repeat_interleave(rep, dim=d)
            if offset is not None:
                offset = offset.repeat_interleave(rep, dim=d)
    return scale * (q - offset if offset is not None else q)


@_op("constexpr_cast")
def _constexpr_cast(o: _Op) -> Any:
    return o.t("source_val").float()
