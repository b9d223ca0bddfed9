"""Tensor shape and layout ops: reshape, transpose, concat, split, stack, slices, squeeze,
expand_dims, tile, pad, shape, gather.
"""

from __future__ import annotations

from typing import Any

from echoedge.mil.ops.registry import UnsupportedOpError, _Op, _flat_pads, _op


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
