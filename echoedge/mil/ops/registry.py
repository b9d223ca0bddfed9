"""The op registry and what every op kernel shares.

Each kernel gets an `_Op` view (tensor inputs via .t(name), compile-time params via
.p(name, default)) and returns one tensor or a tuple/list of tensors, in the op's output order.
`@_op(name, ...)` registers a kernel in `_OPS` under its MIL op name(s). The family modules
beside this one register their kernels when imported (importing `echoedge.mil.ops` imports all).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from echoedge.errors import EchoEdgeError
from echoedge.mil.program import _dtype_name


class UnsupportedOpError(EchoEdgeError):
    """The program holds an op this interpreter does not implement (named in the message)."""


_OPS: dict[str, Callable[["_Op"], Any]] = {}


def _op(*names: str) -> Callable[[Callable[["_Op"], Any]], Callable[["_Op"], Any]]:
    def reg(fn: Callable[["_Op"], Any]) -> Callable[["_Op"], Any]:
        for n in names:
            _OPS[n] = fn
        return fn
    return reg


class _Op:
    __slots__ = ("op", "env", "torch")

    def __init__(self, op: Any, env: dict[str, Any], torch: Any) -> None:
        self.op, self.env, self.torch = op, env, torch

    def has(self, name: str) -> bool:
        return self.op.inputs.get(name) is not None

    def t(self, name: str) -> Any:
        v = self.op.inputs[name]
        return self.env[v.name]

    def ts(self, name: str) -> list[Any]:
        return [self.env[v.name] for v in self.op.inputs[name]]

    def p(self, name: str, default: Any = None) -> Any:
        v = self.op.inputs.get(name)
        if v is None:
            return default
        if v.val is not None:
            val = v.val
        else:  # a param fed by a non-const op (not seen in practice): take the computed value
            val = self.env[v.name].numpy()
        return val.tolist() if isinstance(val, np.ndarray) else (val.item() if isinstance(val, np.generic) else val)

    @property
    def out_dtype(self) -> str:
        return _dtype_name(self.op.outputs[0])


def _axes(axes: Any, rank: int) -> list[int]:
    if axes is None:
        return list(range(rank))
    axes = [axes] if isinstance(axes, int) else list(axes)
    return [a % rank for a in axes]


# --- shared by conv, pooling and pad --------------------------------------------------------

def _explicit_pads(pad_type: str, pad: list[int] | None, spatial: list[int], kernel: list[int],
                   strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, following the MIL pad_type definitions."""
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = list(pad or [0] * (2 * n))
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for i, k, s, d in zip(spatial, kernel, strides, dilations):
            ek = (k - 1) * d + 1
            total = max(0, s * math.ceil(i / s) - i + ek - s)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise UnsupportedOpError(f"pad_type {pad_type!r} is not implemented")


def _flat_pads(pairs: list[tuple[int, int]]) -> list[int]:
    # torch.nn.functional.pad wants the last dim first.
    flat: list[int] = []
    for b, a in reversed(pairs):
        flat += [b, a]
    return flat
