"""Normalisation ops: layer_norm, batch_norm, instance_norm, l2_norm."""

from __future__ import annotations

from typing import Any

from echoedge.mil.ops.registry import _Op, _axes, _op


@_op("layer_norm")
def _layer_norm(o: _Op) -> Any:
    x = o.t("x")
    axes = _axes(o.p("axes"), x.dim())
    eps = o.p("epsilon", 1e-5)
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / o.torch.sqrt(var + eps)
    # gamma/beta have the shape of x over `axes`: broadcast them back in place.
    bshape = [x.shape[d] if d in axes else 1 for d in range(x.dim())]
    if o.has("gamma"):
        y = y * o.t("gamma").reshape(bshape)
    if o.has("beta"):
        y = y + o.t("beta").reshape(bshape)
    return y


def _channel_shape(x: Any) -> list[int]:
    return [1, x.shape[1]] + [1] * (x.dim() - 2)


@_op("batch_norm")
def _batch_norm(o: _Op) -> Any:
    x = o.t("x")
    cs = _channel_shape(x)
    y = (x - o.t("mean").reshape(cs)) / o.torch.sqrt(o.t("variance").reshape(cs) + o.p("epsilon", 1e-5))
    if o.has("gamma"):
        y = y * o.t("gamma").reshape(cs)
    if o.has("beta"):
        y = y + o.t("beta").reshape(cs)
    return y


@_op("instance_norm")
def _instance_norm(o: _Op) -> Any:
    x = o.t("x")
    axes = list(range(2, x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / o.torch.sqrt(var + o.p("epsilon", 1e-5))
    cs = _channel_shape(x)
    if o.has("gamma"):
        y = y * o.t("gamma").reshape(cs)
    if o.has("beta"):
        y = y + o.t("beta").reshape(cs)
    return y


@_op("l2_norm")
def _l2_norm(o: _Op) -> Any:
    # Normalises over the last 3 dims (or all but batch for rank < 3), per the iOS15 definition.
    x = o.t("x")
    axes = list(range(max(1, x.dim() - 3), x.dim()))
    return x / o.torch.sqrt((x * x).sum(dim=axes, keepdim=True) + o.p("epsilon", 1e-6))
