"""Linear algebra and convolution: linear, matmul, conv (1D/2D/3D)."""

from __future__ import annotations

from typing import Any

from echoedge.mil.ops.registry import UnsupportedOpError, _Op, _explicit_pads, _flat_pads, _op


@_op("linear")
def _linear(o: _Op) -> Any:
    b = o.t("bias") if o.has("bias") else None
    return o.torch.nn.functional.linear(o.t("x"), o.t("weight"), b)


@_op("matmul")
def _matmul(o: _Op) -> Any:
    x, y = o.t("x"), o.t("y")
    if o.p("transpose_x", False) and x.dim() >= 2:
        x = x.transpose(-1, -2)
    if o.p("transpose_y", False) and y.dim() >= 2:
        y = y.transpose(-1, -2)
    return o.torch.matmul(x, y)


@_op("conv")
def _conv(o: _Op) -> Any:
    F = o.torch.nn.functional
    x, w = o.t("x"), o.t("weight")
    n = x.dim() - 2
    strides = list(o.p("strides", [1] * n))
    dil = list(o.p("dilations", [1] * n))
    groups = int(o.p("groups", 1))
    pads = _explicit_pads(o.p("pad_type", "valid"), o.p("pad"), list(x.shape[2:]), list(w.shape[2:]),
                          strides, dil)
    padding: list[int] | int = 0
    if all(b == a for b, a in pads):
        # Symmetric zero padding inside the conv: a padded copy of a 32-frame 112x112 input is
        # as slow as the conv itself on one thread.
        padding = [b for b, _ in pads]
    else:
        x = F.pad(x, _flat_pads(pads))
    b = o.t("bias") if o.has("bias") else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(n)
    if conv is None:
        raise UnsupportedOpError(f"conv with {n} spatial dims is not implemented")
    return conv(x, w, b, stride=strides, padding=padding, dilation=dil, groups=groups)
