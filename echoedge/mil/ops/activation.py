"""Activations beyond the unary table: leaky_relu, elu, clip, gelu (three modes), softmax, softplus.

The parameter-free ones (relu, sigmoid, tanh, silu, ...) are unary element-wise ops.
"""

from __future__ import annotations

import math
from typing import Any

from echoedge.mil.ops.registry import UnsupportedOpError, _Op, _op


@_op("leaky_relu")
def _leaky_relu(o: _Op) -> Any:
    # One pass (torch.where over a mask and a product took three): x for x >= 0, alpha * x below.
    return o.torch.nn.functional.leaky_relu(o.t("x"), float(o.p("alpha", 0.01)))


@_op("elu")
def _elu(o: _Op) -> Any:
    x = o.t("x")
    return o.torch.where(x > 0, x, o.p("alpha", 1.0) * (o.torch.exp(x) - 1))


@_op("clip")
def _clip(o: _Op) -> Any:
    return o.torch.clamp(o.t("x"), o.p("alpha"), o.p("beta"))


@_op("gelu")
def _gelu(o: _Op) -> Any:
    # Modes per the MIL definition: EXACT (erf), TANH_APPROXIMATION, SIGMOID_APPROXIMATION.
    T, x, mode = o.torch, o.t("x"), o.p("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + T.erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + T.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * T.sigmoid(1.702 * x)
    raise UnsupportedOpError(f"gelu mode {mode!r} is not implemented")


@_op("softmax")
def _softmax(o: _Op) -> Any:
    return o.torch.softmax(o.t("x"), dim=o.p("axis", -1))


@_op("softplus")
def _softplus(o: _Op) -> Any:
    return o.torch.nn.functional.softplus(o.t("x"))
