"""A reference interpreter of Core ML ML programs, so Core ML artefacts get real numbers on Linux.

Core ML executes a model only on macOS (coremltools' `predict` needs `libcoremlpython`), yet the
program inside a `.mlpackage` is plain data: coremltools loads it on any OS into its MIL Python
representation (`milproto.load.load(spec, version, weights_dir)`). This module walks that program
op by op and executes each op with PyTorch CPU kernels, following the op definitions in
coremltools' MIL reference (coremltools/converters/mil/mil/ops/defs/iOS15..iOS18):

- every op the toolkit's artefacts contain (see `SUPPORTED_OPS`); anything else is refused when
  the program is loaded, with an error naming the op, so an unknown op never runs as a guess;
- `constexpr_*` dequantization (W8 weights) is evaluated once at load, `quantize`/`dequantize`
  (W8A8 activations) at run time: round half to even, clip to the integer range;
- **compute precision**: an fp16 program declares fp16 tensors; after every op the interpreter
  rounds each output that the program types fp16 to float16 (storage precision), while the op
  itself accumulates in float32. Apple's CPU/GPU/ANE kernels store fp16 between ops too, but may
  accumulate differently, so fp16 numbers from here are close to, not identical with, a device's.
  `Interpreter.precision` says which precision a program used ("fp32" or "fp16").

The numbers are real outputs of the artefact's own program and weights; the speed is not Core
ML's speed, so runners built on this never report latency (RunnerBase.measures_latency = False).
coremltools and torch are imported inside functions: `import echoedge` stays cheap.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from echoedge.errors import EchoEdgeError, first_line

RUNTIME = "reference-interpreter"
WEIGHTS_SUBDIR = os.path.join("Data", "com.apple.CoreML", "weights")


class UnsupportedOpError(EchoEdgeError):
    """The program holds an op this interpreter does not implement (named in the message)."""


@dataclass
class ProgramInfo:
    """What a loaded ML program declares: I/O names, shapes and the op histogram."""

    inputs: dict[str, list[int]]
    outputs: list[str]
    op_histogram: dict[str, int]
    precision: str  # "fp16" when any op output is fp16, else "fp32"
    spec_version: int
    quantization_ops: dict[str, int] = field(default_factory=dict)


QUANTIZATION_OPS = ("quantize", "dequantize", "constexpr_affine_dequantize",
                    "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_cast")


def load_mil_program(package: str | Path) -> tuple[Any, Any]:
    """(pymil Program, model spec) of a saved `.mlpackage`, without Core ML's runtime."""
    package = Path(package)
    if not package.is_dir():
        raise EchoEdgeError(f"{package}: Core ML package not found (an .mlpackage is a folder)")
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load
    except ImportError as e:
        raise EchoEdgeError(f"{package}: coremltools is not installed ({first_line(e)})") from None
    try:
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    except Exception as e:
        raise EchoEdgeError(f"{package}: not a readable Core ML package ({first_line(e)})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise EchoEdgeError(f"{package}: holds a '{spec.WhichOneof('Type')}' model; the interpreter "
                            "runs ML programs only")
    try:
        prog = load(spec, spec.specificationVersion, str(package / WEIGHTS_SUBDIR))
    except Exception as e:
        raise EchoEdgeError(f"{package}: coremltools could not load the ML program "
                            f"({first_line(e)})") from None
    return prog, spec


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    dt = var.dtype
    return types.builtin_to_string(dt) if dt is not None else "?"


def program_info(prog: Any, spec: Any | None = None) -> ProgramInfo:
    fn = prog.functions["main"]
    hist: dict[str, int] = {}
    fp16 = False
    for op in fn.operations:
        hist[op.op_type] = hist.get(op.op_type, 0) + 1
        if op.op_type != "const" and any(_dtype_name(o) == "fp16" for o in op.outputs):
            fp16 = True
    return ProgramInfo(
        inputs={k: [int(s) for s in v.shape] for k, v in fn.inputs.items()},
        outputs=[v.name for v in fn.outputs],
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        precision="fp16" if fp16 else "fp32",
        spec_version=int(spec.specificationVersion) if spec is not None else 0,
        quantization_ops={k: v for k, v in sorted(hist.items()) if k in QUANTIZATION_OPS},
    )


# --------------------------------------------------------------------------------------------
# Op implementations. Each gets an _Op view (tensor inputs via .t(name), compile-time params via
# .p(name, default)) and returns one tensor or a tuple/list of tensors, in the op's output order.
# --------------------------------------------------------------------------------------------

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


# --- element-wise ---------------------------------------------------------------------------

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


@_op("leaky_relu")
def _leaky_relu(o: _Op) -> Any:
    x = o.t("x")
    return o.torch.where(x >= 0, x, x * o.p("alpha", 0.01))


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


# --- normalisation --------------------------------------------------------------------------

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


# --- reductions -----------------------------------------------------------------------------

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


# --- linear algebra and convolution ---------------------------------------------------------

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
    if any(b or a for b, a in pads):
        x = F.pad(x, _flat_pads(pads))
    b = o.t("bias") if o.has("bias") else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(n)
    if conv is None:
        raise UnsupportedOpError(f"conv with {n} spatial dims is not implemented")
    return conv(x, w, b, stride=strides, dilation=dil, groups=groups)


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


# --- tensor shape and layout ----------------------------------------------------------------

@_op("reshape")
def _reshape(o: _Op) -> Any:
    x = o.t("x")
    shape = [int(s) for s in o.p("shape")]
    # iOS17: 0 copies the input's dimension at that position, -1 is inferred.
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@_op("transpose")
def _transpose(o: _Op) -> Any:
    return o.t("x").permute(*[int(p) for p in o.p("perm")])


@_op("concat")
def _concat(o: _Op) -> Any:
    T = o.torch
    vals = o.ts("values")
    axis = int(o.p("axis")) % vals[0].dim()
    if o.p("interleave", False):
        # Interleave: slice i of every input along `axis`, in turn (equal-sized inputs).
        stacked = T.stack(vals, dim=axis + 1)
        shape = list(vals[0].shape)
        shape[axis] *= len(vals)
        return stacked.reshape(shape)
    return T.cat(vals, dim=axis)


@_op("split")
def _split(o: _Op) -> Any:
    x = o.t("x")
    axis = int(o.p("axis")) % x.dim()
    sizes = o.p("split_sizes")
    if sizes is None:
        n = int(o.p("num_splits"))
        sizes = [x.shape[axis] // n] * n
    return tuple(o.torch.split(x, [int(s) for s in sizes], dim=axis))


@_op("stack")
def _stack(o: _Op) -> Any:
    return o.torch.stack(o.ts("values"), dim=int(o.p("axis")))


@_op("slice_by_index")
def _slice_by_index(o: _Op) -> Any:
    x = o.t("x")
    r = x.dim()
    begin = list(o.p("begin"))
    end = list(o.p("end"))
    stride = list(o.p("stride", [1] * r))
    bmask = list(o.p("begin_mask", [False] * r))
    emask = list(o.p("end_mask", [False] * r))
    smask = list(o.p("squeeze_mask", [False] * r))
    out = x
    squeeze = []
    for d in range(r):
        n = x.shape[d]
        if smask[d]:
            i = begin[d] % n if n else 0
            out = out.narrow(d, i, 1)
            squeeze.append(d)
            continue
        sl = slice(None if bmask[d] else int(begin[d]), None if emask[d] else int(end[d]), int(stride[d]))
        start, stop, step = sl.indices(n)
        if step == 1:
            out = out.narrow(d, start, max(0, stop - start))
        else:
            idx = o.torch.arange(start, stop, step, dtype=o.torch.long)
            out = out.index_select(d, idx)
    return out.squeeze(squeeze) if squeeze else out


@_op("slice_by_size")
def _slice_by_size(o: _Op) -> Any:
    x = o.t("x")
    out = x
    for d, (b, s) in enumerate(zip(o.p("begin"), o.p("size"))):
        b = int(b) % x.shape[d] if x.shape[d] else 0
        s = x.shape[d] - b if int(s) == -1 else int(s)
        out = out.narrow(d, b, s)
    return out


@_op("squeeze")
def _squeeze(o: _Op) -> Any:
    x = o.t("x")
    axes = o.p("axes")
    if axes is None:
        return x.squeeze()
    return x.squeeze([a % x.dim() for a in axes]) if axes else x


@_op("expand_dims")
def _expand_dims(o: _Op) -> Any:
    x = o.t("x")
    axes = list(o.p("axes"))
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return x.reshape(shape)


@_op("tile")
def _tile(o: _Op) -> Any:
    return o.t("x").repeat(*[int(r) for r in o.p("reps")])


@_op("pad")
def _pad(o: _Op) -> Any:
    F = o.torch.nn.functional
    x = o.t("x")
    pad = [int(p) for p in o.p("pad")]
    n = len(pad) // 2  # pads the last n dims: pad[2i], pad[2i+1] = before, after of dim r-n+i
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = o.p("mode", "constant")
    if mode == "constant":
        return F.pad(x, _flat_pads(pairs), value=float(o.p("constant_val", 0.0)))
    if mode in ("reflect", "replicate"):
        return F.pad(x, _flat_pads(pairs), mode=mode)
    raise UnsupportedOpError(f"pad mode {mode!r} is not implemented")


@_op("shape")
def _shape(o: _Op) -> Any:
    return o.torch.tensor(list(o.t("x").shape), dtype=o.torch.int32)


@_op("gather")
def _gather(o: _Op) -> Any:
    x, idx = o.t("x"), o.t("indices").long()
    axis = int(o.p("axis", 0)) % x.dim()
    idx = o.torch.where(idx < 0, idx + x.shape[axis], idx)
    return o.torch.index_select(x, axis, idx.reshape(-1)).reshape(
        list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


# --- quantization ---------------------------------------------------------------------------

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
    q = T.clamp(T.round(x / scale) + zp, lo, hi)
    return q.to(T.int32)


@_op("dequantize")
def _dequantize(o: _Op) -> Any:
    T = o.torch
    q = o.t("input").float()
    axis = o.p("axis")
    scale = _per_axis(T, o.t("scale"), q.dim(), axis)
    zp = _per_axis(T, o.t("zero_point").float(), q.dim(), axis) if o.has("zero_point") else 0.0
    return (q - zp) * scale


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


SUPPORTED_OPS = frozenset(_OPS) | {"const"}
# Ops whose output depends only on constants: evaluated once when the program loads.
_CONSTEXPR = {n for n in _OPS if n.startswith("constexpr_")}


# --------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------

def _as_tensor(T: Any, val: Any) -> Any:
    """A const's value as a tensor (floats as float32; strings stay Python strings)."""
    if isinstance(val, str) or val is None:
        return val
    arr = np.asarray(val)
    if arr.dtype.kind == "U" or arr.dtype == object:
        return val
    if arr.dtype.kind == "f":
        return T.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if arr.dtype.kind == "b":
        return T.from_numpy(np.ascontiguousarray(arr))
    if arr.dtype == np.uint8:
        return T.from_numpy(np.ascontiguousarray(arr)).to(T.int32)
    return T.from_numpy(np.ascontiguousarray(arr))


class Interpreter:
    """Executes the `main` function of a Core ML ML program with PyTorch CPU ops.

    `Interpreter(package)` loads a saved `.mlpackage`; `Interpreter.from_program(prog)` takes a
    pymil Program (e.g. coremltools' MIL builder output). Call `run({input_name: array})` for a
    dict of output name -> float32 array. `observe(name, tensor)`, when given to `run`, sees
    every non-const op output (used to gather activation ranges for W8A8 calibration).
    """

    def __init__(self, package: str | Path, threads: int | None = None) -> None:
        prog, spec = load_mil_program(package)
        self._init(prog, spec, str(package), threads)

    @classmethod
    def from_program(cls, prog: Any, where: str = "MIL program", threads: int | None = None) -> "Interpreter":
        self = cls.__new__(cls)
        self._init(prog, None, where, threads)
        return self

    def _init(self, prog: Any, spec: Any, where: str, threads: int | None) -> None:
        import torch

        self._torch = torch
        self.where = where
        self.threads = threads
        fn = prog.functions.get("main")
        if fn is None:
            raise EchoEdgeError(f"{where}: the ML program has no 'main' function")
        self.info = program_info(prog, spec)
        self.precision = self.info.precision
        unknown = sorted({op.op_type for op in fn.operations} - SUPPORTED_OPS)
        if unknown:
            raise UnsupportedOpError(f"{where}: the reference interpreter does not implement MIL "
                                     f"op{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        self.input_names = list(fn.inputs)
        self.input_shapes = {k: tuple(int(s) for s in v.shape) for k, v in fn.inputs.items()}
        self.input_fp16 = {k: _dtype_name(v) == "fp16" for k, v in fn.inputs.items()}
        self.output_names = [v.name for v in fn.outputs]
        self._consts: dict[str, Any] = {}
        self._plan: list[tuple[Any, Callable[[_Op], Any], list[tuple[str, bool]]]] = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for op in fn.operations:
                outs = [(v.name, _dtype_name(v) == "fp16") for v in op.outputs]
                if op.op_type == "const":
                    v = op.outputs[0]
                    self._consts[v.name] = _as_tensor(torch, v.val)
                elif op.op_type in _CONSTEXPR:
                    self._store(self._consts, outs, self._exec(op, _OPS[op.op_type], self._consts))
                else:
                    self._plan.append((op, _OPS[op.op_type], outs))
        self.load_s = time.perf_counter() - t0

    def _exec(self, op: Any, fn: Callable[[_Op], Any], env: dict[str, Any]) -> Any:
        try:
            return fn(_Op(op, env, self._torch))
        except UnsupportedOpError as e:
            raise UnsupportedOpError(f"{self.where}: op {op.op_type} '{op.name}': {e}") from None
        except Exception as e:
            raise EchoEdgeError(f"{self.where}: op {op.op_type} '{op.name}' failed in the reference "
                                f"interpreter ({type(e).__name__}: {first_line(e)})") from None

    def _store(self, env: dict[str, Any], outs: list[tuple[str, bool]], result: Any) -> None:
        results = result if isinstance(result, (tuple, list)) else (result,)
        for (name, fp16), value in zip(outs, results):
            if fp16 and value.is_floating_point():
                # fp16 compute precision: the op's output is stored as float16.
                value = value.to(self._torch.float16).float()
            env[name] = value

    def run(self, inputs: dict[str, np.ndarray],
            observe: Callable[[str, Any], None] | None = None) -> dict[str, np.ndarray]:
        T = self._torch
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EchoEdgeError(f"{self.where}: missing input(s) {', '.join(missing)}")
        env: dict[str, Any] = dict(self._consts)
        for name in self.input_names:
            arr = np.asarray(inputs[name], dtype=np.float32)
            if tuple(arr.shape) != self.input_shapes[name]:
                raise EchoEdgeError(f"{self.where}: input '{name}' must have shape "
                                    f"{self.input_shapes[name]}, got {arr.shape}")
            x = T.from_numpy(np.ascontiguousarray(arr))
            env[name] = x.to(T.float16).float() if self.input_fp16[name] else x
        old_threads = T.get_num_threads()
        if self.threads and old_threads != self.threads:
            T.set_num_threads(self.threads)
        try:
            with T.no_grad():
                for op, fn, outs in self._plan:
                    self._store(env, outs, self._exec(op, fn, env))
                    if observe is not None:
                        for name, _ in outs:
                            observe(name, env[name])
        finally:
            if self.threads and old_threads != self.threads:
                T.set_num_threads(old_threads)
        return {n: env[n].float().numpy().copy() for n in self.output_names}


def activation_ranges(interp: Interpreter, input_name: str, clips: Iterable[np.ndarray],
                      progress: bool = False, total: int | None = None) -> dict[str, dict[str, float]]:
    """min/max of the input and of every non-const op output over `clips` (one run per clip).

    The same statistics coremltools' `linear_quantize_activations` gathers by running the model
    through Core ML (macOS only), here gathered through the interpreter.
    """
    import sys

    from rich.console import Console
    from rich.progress import Progress

    stats: dict[str, dict[str, float]] = {}

    def update(name: str, t: Any) -> None:
        if not t.is_floating_point() or t.numel() == 0:
            return
        lo, hi = float(t.min()), float(t.max())
        s = stats.get(name)
        if s is None:
            stats[name] = {"rmin": lo, "rmax": hi}
        else:
            s["rmin"], s["rmax"] = min(s["rmin"], lo), max(s["rmax"], hi)

    # The real stderr: converters capture coremltools' chatter by redirecting sys.stderr.
    with Progress(disable=not progress, transient=True, console=Console(file=sys.__stderr__)) as bar:
        task = bar.add_task("W8A8 activation ranges (reference interpreter)", total=total)
        for clip in clips:
            x = np.asarray(clip, dtype=np.float32)
            if x.ndim == len(interp.input_shapes[input_name]) - 1:  # one clip without its batch axis
                x = x[None]
            update(input_name, interp._torch.from_numpy(np.ascontiguousarray(x)))
            interp.run({input_name: x}, observe=update)
            bar.advance(task)
    return stats


__all__ = ("Interpreter", "ProgramInfo", "UnsupportedOpError", "SUPPORTED_OPS", "RUNTIME",
           "load_mil_program", "program_info", "activation_ranges")
