"""Reductions: reduce_{sum,mean,max,min,prod,sum_square,l2_norm,l1_norm,log_sum_exp,argmax,argmin}."""

from __future__ import annotations

from typing import Any, Callable

from echoedge.mil.ops.registry import _OPS, _Op, _axes, _op


def _reduce(kind: str) -> Callable[[_Op], Any]:
    def run(o: _Op) -> Any:
        T, x = o.torch, o.t("x")
        axes = _axes(o.p("axes"), x.dim())
        keep = bool(o.p("keep_dims", False))
        if kind == "sum":
            return x.sum(dim=axes, keepdim=keep)
        if kind == "mean":
            return x.mean(dim=axes, keepdim=keep)
        if kind == "max":
            return T.amax(x, dim=axes, keepdim=keep)
        if kind == "min":
            return T.amin(x, dim=axes, keepdim=keep)
        if kind == "prod":
            y = x
            for a in sorted(axes, reverse=True):
                y = y.prod(dim=a, keepdim=keep)
            return y
        if kind == "sum_square":
            return (x * x).sum(dim=axes, keepdim=keep)
        if kind == "l2_norm":
            return T.sqrt((x * x).sum(dim=axes, keepdim=keep))
        if kind == "l1_norm":
            return x.abs().sum(dim=axes, keepdim=keep)
        if kind == "log_sum_exp":
            return T.logsumexp(x, dim=axes, keepdim=keep)
        raise AssertionError(kind)
    return run


for _k in ("sum", "mean", "max", "min", "prod", "sum_square", "l2_norm", "l1_norm", "log_sum_exp"):
    _OPS[f"reduce_{_k}"] = _reduce(_k)


@_op("reduce_argmax", "reduce_argmin")
def _argreduce(o: _Op) -> Any:
    x = o.t("x")
    f = o.torch.argmax if o.op.op_type == "reduce_argmax" else o.torch.argmin
    return f(x, dim=o.p("axis", -1), keepdim=bool(o.p("keep_dims", False))).to(o.torch.int32)
