"""Pooling: max_pool and avg_pool (1D/2D/3D), with MIL's pad types and ceil mode."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from echoedge.mil.ops.registry import _OPS, UnsupportedOpError, _Op, _explicit_pads, _flat_pads


def _pool(kind: str) -> Callable[[_Op], Any]:
    def run(o: _Op) -> Any:
        T = o.torch
        F = T.nn.functional
        x = o.t("x")
        n = x.dim() - 2
        k = list(o.p("kernel_sizes"))
        s = list(o.p("strides", [1] * n))
        ceil = bool(o.p("ceil_mode", False))
        pads = _explicit_pads(o.p("pad_type", "valid"), o.p("pad"), list(x.shape[2:]), k, s, [1] * n)
        padded = any(b or a for b, a in pads)
        fn = {"max": {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d},
              "avg": {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}}[kind].get(n)
        if fn is None:
            raise UnsupportedOpError(f"{kind}_pool with {n} spatial dims is not implemented")
        if kind == "max":
            xp = F.pad(x, _flat_pads(pads), value=-math.inf) if padded else x
            return fn(xp, k, s, ceil_mode=ceil)
        xp = F.pad(x, _flat_pads(pads)) if padded else x
        summed = fn(xp, k, s, ceil_mode=ceil, count_include_pad=True) * float(np.prod(k))
        if padded and o.p("exclude_padding_from_average", False):
            ones = F.pad(T.ones_like(x[:1, :1]), _flat_pads(pads))
            count = fn(ones, k, s, ceil_mode=ceil, count_include_pad=True) * float(np.prod(k))
            return summed / count
        if ceil:  # windows cut by the ceil border average over what they cover
            ones = T.ones_like(xp[:1, :1])
            count = fn(ones, k, s, ceil_mode=True, count_include_pad=True) * float(np.prod(k))
            return summed / count
        return summed / float(np.prod(k))
    return run


_OPS["max_pool"] = _pool("max")
_OPS["avg_pool"] = _pool("avg")
