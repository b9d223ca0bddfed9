"""Element-wise MIL ops: binary arithmetic/comparison/logic, unary math, select, cast."""

from __future__ import annotations

from typing import Any, Callable

from echoedge.mil.ops.registry import _OPS, UnsupportedOpError, _Op, _op


_BINARY = {
    "add": lambda T, x, y: x + y,
    "sub": lambda T, x, y: x - y,
    "mul": lambda T, x, y: x * y,
    "real_div": lambda T, x, y: x / y,
    "floor_div": lambda T, x, y: T.floor_divide(x, y),
    "mod": lambda T, x, y: T.remainder(x, y),
    "pow": lambda T, x, y: T.pow(x, y),
    "maximum": lambda T, x, y: T.maximum(x, y),
    "minimum": lambda T, x, y: T.minimum(x, y),
    "equal": lambda T, x, y: x == y,
    "not_equal": lambda T, x, y: x != y,
    "greater": lambda T, x, y: x > y,
    "greater_equal": lambda T, x, y: x >= y,
    "less": lambda T, x, y: x < y,
    "less_equal": lambda T, x, y: x <= y,
    "logical_and": lambda T, x, y: T.logical_and(x, y),
    "logical_or": lambda T, x, y: T.logical_or(x, y),
}


def _binary(name: str) -> Callable[[_Op], Any]:
    f = _BINARY[name]
    return lambda o: f(o.torch, o.t("x"), o.t("y"))


for _n in _BINARY:
    _OPS[_n] = _binary(_n)

_UNARY = {
    "relu": lambda T, x: T.relu(x),
    "sigmoid": lambda T, x: T.sigmoid(x),
    "tanh": lambda T, x: T.tanh(x),
    "sqrt": lambda T, x: T.sqrt(x),
    "exp": lambda T, x: T.exp(x),
    "abs": lambda T, x: T.abs(x),
    "square": lambda T, x: x * x,
    "erf": lambda T, x: T.erf(x),
    "sign": lambda T, x: T.sign(x),
    "floor": lambda T, x: T.floor(x),
    "ceil": lambda T, x: T.ceil(x),
    "round": lambda T, x: T.round(x),
    "sin": lambda T, x: T.sin(x),
    "cos": lambda T, x: T.cos(x),
    "relu6": lambda T, x: T.clamp(x, 0.0, 6.0),
    "silu": lambda T, x: x * T.sigmoid(x),
    "softsign": lambda T, x: x / (1 + T.abs(x)),
    "logical_not": lambda T, x: T.logical_not(x),
    "identity": lambda T, x: x,
}


def _unary(name: str) -> Callable[[_Op], Any]:
    f = _UNARY[name]
    return lambda o: f(o.torch, o.t("x"))


for _n in _UNARY:
    _OPS[_n] = _unary(_n)


@_op("rsqrt")
def _rsqrt(o: _Op) -> Any:  # 1 / sqrt(x + epsilon), epsilon defaults to 1e-12
    return o.torch.rsqrt(o.t("x") + o.p("epsilon", 1e-12))


@_op("inverse")
def _inverse(o: _Op) -> Any:  # 1 / (x + epsilon)
    return 1.0 / (o.t("x") + o.p("epsilon", 1e-4))


@_op("log")
def _log(o: _Op) -> Any:  # log(x + epsilon)
    return o.torch.log(o.t("x") + o.p("epsilon", 1e-45))


@_op("select")
def _select(o: _Op) -> Any:
    return o.torch.where(o.t("cond").bool(), o.t("a"), o.t("b"))


@_op("cast")
def _cast(o: _Op) -> Any:
    return _to_dtype(o.torch, o.t("x"), o.p("dtype"))


def _to_dtype(T: Any, x: Any, name: str) -> Any:
    # Floats live as float32 tensors (fp16 ones rounded to float16 values, see Interpreter);
    # integers and bools keep their own dtypes. Float -> int casts truncate toward zero.
    if name in ("fp16", "fp32", "fp64"):
        return x.float()
    ints = {"int32": T.int32, "int16": T.int16, "int8": T.int8, "uint8": T.uint8,
            "uint16": T.int32, "int64": T.int64, "bool": T.bool}
    if name not in ints:
        raise UnsupportedOpError(f"cast to {name!r} is not implemented")
    return x.to(ints[name])
