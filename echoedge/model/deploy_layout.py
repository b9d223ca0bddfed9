"""Frames stay 4D between the deploy form's 2D ops: a pass over its exported ATen graph.

Why: every rewrite of the deploy form (echoedge.model.deploy) takes and returns logical
(B, C, T, H, W) tensors, so between two convs the exported graph goes 4D -> view 5D -> permute ->
(residual add, activation) -> permute -> view (1, T, C*H*W) -> time slices -> concat -> view 4D.
XNNPACK runs convs channels-last and must turn a tensor back to NCHW before every view, so an
ExecuTorch int8 program spent more time in data movement than in its convs: ETDump of the
whole-recipe .pte (shipped checkpoint, an AVX-512 host), its first delegate 47 ms, of which convs
21 ms, 49 int8 transposes 10 ms, slices 3.7 ms, copies 2.5 ms.

With batch 1 (every exported program's case) the folded batch *is* time, so those round trips are
pure bookkeeping. `frames_stay_4d` rewrites them away, exactly (only data movement changes):

- permute(permute(x, p), q) -> permute(x, p then q), dropped when that is the identity;
- view(view(x)) -> one view, dropped when it gives x's own shape;
- an element-wise op on 5D tensors that are all the same view/permute of same-shape 4D frames
  runs on the frames, and the view/permute moves after it (toward the next rewrite, which undoes
  it);
- a slice of view(x) on an axis that is a whole axis of x slices x there, then views;
- a concat of views along an axis whose outer size is that of an axis of the sources
  concatenates the sources there, then views.

Measured on that .pte after the pass: the first delegate 41.8 ms, 24 transposes 0.6 ms; its
tap concats now interleave channels in NHWC (copies 2.5 -> 6.7 ms), so the net gain is smaller
than the transposes' 10 ms. bench_int8, side by side in one run: p50 53.0 -> 45.7 ms, EF identical.

What is left 5D is where the model itself needs it (the hybrid stages' tokens, E2FA's
statistics, the pools' time windows). Other models' graphs go through the same rules; a graph
with nothing to rewrite comes back unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import fx

aten = torch.ops.aten
_PERMUTES = (aten.permute.default,)
_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)
# Element-wise ops that may run on any layout of the same elements (no broadcasting checked
# below: every tensor input must have the output's shape).
_ELEMENTWISE = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.maximum.default, aten.minimum.default,
    aten.leaky_relu.default, aten.relu.default, aten.gelu.default, aten.sigmoid.default,
    aten.tanh.default, aten.hardtanh.default, aten.silu.default, aten.elu.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.clamp.default,
}
_SLICE = aten.slice.Tensor
_CAT = aten.cat.default
_ZEROS = (aten.new_zeros.default,)


def _shape(n: Any) -> tuple[int, ...] | None:
    v = n.meta.get("val") if isinstance(n, fx.Node) else None
    return tuple(int(s) for s in v.shape) if isinstance(v, torch.Tensor) else None


def _is(n: Any, targets: Sequence[Any] | set[Any]) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target in targets


def _new(graph: fx.Graph, before: fx.Node, target: Any, args: tuple[Any, ...], like: torch.Tensor,
         fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> fx.Node:
    """A call_function node before `before`, its meta['val'] computed from `like` by `fn`."""
    with graph.inserting_before(before):
        n = graph.call_function(target, args)
    n.meta["val"] = fn(like) if fn else like
    return n


def _fake(n: fx.Node) -> torch.Tensor:
    return n.meta["val"]


class _Rewriter:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.g = gm.graph
        self.changed = 0
        self.zeros: dict[tuple[fx.Node, tuple[int, ...]], fx.Node] = {}

    def replace(self, old: fx.Node, new: fx.Node) -> None:
        new.meta.setdefault("stack_trace", old.meta.get("stack_trace"))
        if "nn_module_stack" in old.meta:
            new.meta.setdefault("nn_module_stack", old.meta["nn_module_stack"])
        old.replace_all_uses_with(new)
        self.changed += 1

    def view(self, before: fx.Node, x: fx.Node, shape: Sequence[int]) -> fx.Node:
        # reshape, not view: a merged view's source may be a permuted (non-contiguous) tensor,
        # where aten.view fails at run time; export lowers reshape to a view where it is one.
        shape = [int(s) for s in shape]
        return _new(self.g, before, aten.reshape.default, (x, shape), _fake(x),
                    lambda t: t.reshape(shape))

    def permute(self, before: fx.Node, x: fx.Node, perm: Sequence[int]) -> fx.Node:
        perm = [int(p) for p in perm]
        return _new(self.g, before, aten.permute.default, (x, perm), _fake(x),
                    lambda t: t.permute(perm))

    # ------------------------------------------------------------------ rules
    def permute_pair(self, n: fx.Node) -> bool:
        m = n.args[0]
        if not _is(m, _PERMUTES):
            return False
        p, q = list(m.args[1]), list(n.args[1])
        rank = len(p)
        p = [d % rank for d in p]
        q = [d % rank for d in q]
        composed = [p[i] for i in q]
        x = m.args[0]
        self.replace(n, x if composed == list(range(rank)) else self.permute(n, x, composed))
        return True

    def view_pair(self, n: fx.Node) -> bool:
        x = n.args[0]
        out = _shape(n)
        if out is None:
            return False
        if _shape(x) == out:
            self.replace(n, x)
            return True
        if _is(x, _VIEWS):
            base = x.args[0]
            self.replace(n, base if _shape(base) == out else self.view(n, base, out))
            return True
        return False

    @staticmethod
    def _wrapping(t: Any) -> tuple[fx.Node, tuple[Any, ...]] | None:
        """(base, chain) for t = permute(view(base)) / view(base) / permute(base)."""
        chain = []
        cur = t
        for _ in range(2):
            if _is(cur, _PERMUTES):
                chain.append(("permute", tuple(int(d) for d in cur.args[1])))
            elif _is(cur, _VIEWS):
                chain.append(("view", _shape(cur)))
            else:
                break
            cur = cur.args[0]
        return (cur, tuple(chain)) if chain and isinstance(cur, fx.Node) else None

    def sink_elementwise(self, n: fx.Node) -> bool:
        out = _shape(n)
        tensors = [a for a in n.args if isinstance(a, fx.Node)]
        if out is None or not tensors or any(_shape(a) != out for a in tensors) or n.kwargs:
            return False
        wrapped = [self._wrapping(a) for a in tensors]
        if any(w is None for w in wrapped):
            return False
        bases = [w[0] for w in wrapped]  # type: ignore[index]
        chains = {w[1] for w in wrapped}  # type: ignore[index]
        base_shapes = {_shape(b) for b in bases}
        if len(chains) != 1 or len(base_shapes) != 1 or None in base_shapes:
            return False
        if len(out) != 5 or len(next(iter(base_shapes))) != 4:  # type: ignore[arg-type]
            return False  # only the frames pattern: a 5D view of 4D frames, as the rewrites return
        swap = dict(zip(tensors, bases))
        args = tuple(swap.get(a, a) if isinstance(a, fx.Node) else a for a in n.args)
        with self.g.inserting_before(n):
            inner = self.g.call_function(n.target, args)
        inner.meta = {k: v for k, v in n.meta.items() if k != "val"}
        inner.meta["val"] = n.target(*[_fake(a) if isinstance(a, fx.Node) else a for a in args])
        cur = inner
        for kind, how in reversed(next(iter(chains))):
            cur = self.permute(n, cur, how) if kind == "permute" else self.view(n, cur, how)
        self.replace(n, cur)
        return True

    @staticmethod
    def _axis_for(src: tuple[int, ...], outer: int, size: int | None) -> int | None:
        """The axis e of `src` with prod(src[:e]) == outer (and src[e] == size when given)."""
        for e in range(len(src)):
            if math.prod(src[:e]) == outer and (size is None or src[e] == size):
                return e
        return None

    def slice_of_view(self, n: fx.Node) -> bool:
        v = n.args[0]
        if not _is(v, _VIEWS):
            return False
        base = v.args[0]
        vs, bs, out = _shape(v), _shape(base), _shape(n)
        if vs is None or bs is None or out is None:
            return False
        dim = int(n.args[1]) % len(vs) if len(n.args) > 1 else 0
        step = int(n.args[4]) if len(n.args) > 4 else 1
        if step != 1:
            return False
        e = self._axis_for(bs, math.prod(vs[:dim]), vs[dim])
        if e is None or math.prod(bs[e + 1:]) != math.prod(vs[dim + 1:]):
            return False
        start = int(n.args[2]) if len(n.args) > 2 and n.args[2] is not None else 0
        end = int(n.args[3]) if len(n.args) > 3 and n.args[3] is not None else vs[dim]
        start, end = max(0, min(start, vs[dim])), max(0, min(end, vs[dim]))
        s = _new(self.g, n, _SLICE, (base, e, start, end), _fake(base),
                 lambda t: t.narrow(e, start, end - start))
        self.replace(n, self.view(n, s, out))
        return True

    def cat_of_views(self, n: fx.Node) -> bool:
        """cat of views (and of zero frames, `new_zeros`: the temporal padding the deploy form
        keeps where its specialised form would be larger) -> view of a cat of the sources."""
        parts = list(n.args[0])
        out = _shape(n)
        if out is None or len(parts) < 2 or not all(_is(p, _VIEWS) or _is(p, _ZEROS) for p in parts):
            return False
        views = [p for p in parts if _is(p, _VIEWS)]
        if not views:
            return False
        dim = int(n.args[1]) % len(out) if len(n.args) > 1 else 0
        outer = math.prod(out[:dim])
        bshapes = [_shape(p.args[0]) for p in views]
        if any(s is None for s in bshapes) or len({len(s) for s in bshapes}) != 1:  # type: ignore[arg-type]
            return False
        axes = {self._axis_for(s, outer, None) for s in bshapes}  # type: ignore[arg-type]
        if len(axes) != 1 or None in axes:
            return False
        e = axes.pop()
        ref = bshapes[0]
        if any(s[:e] != ref[:e] or s[e + 1:] != ref[e + 1:] for s in bshapes):  # type: ignore[index]
            return False
        inner = math.prod(ref[e + 1:])  # type: ignore[index]
        sources = []
        for p in parts:
            if _is(p, _VIEWS):
                sources.append(p.args[0])
                continue
            size = math.prod(_shape(p)[dim:])  # type: ignore[index]
            if size % inner:
                return False
            zshape = list(ref[:e]) + [size // inner] + list(ref[e + 1:])  # type: ignore[index]
            key = (views[0].args[0], tuple(zshape))
            if key not in self.zeros:  # one zeros tensor per shape, as the deploy form has
                self.zeros[key] = _new(self.g, n, aten.new_zeros.default, (key[0], zshape),
                                       _fake(key[0]), lambda t, z=zshape: t.new_zeros(z))
            sources.append(self.zeros[key])
        with self.g.inserting_before(n):
            c = self.g.call_function(_CAT, (sources, e))
        c.meta["val"] = torch.cat([_fake(b) for b in sources], e)
        self.replace(n, self.view(n, c, out))
        return True

    def run(self) -> int:
        rules = ((_PERMUTES, self.permute_pair), (_VIEWS, self.view_pair),
                 (_ELEMENTWISE, self.sink_elementwise), ((_SLICE,), self.slice_of_view),
                 ((_CAT,), self.cat_of_views))
        while True:
            before = self.changed
            for n in list(self.g.nodes):
                if n.op != "call_function" or not n.users:
                    continue
                for targets, rule in rules:
                    if n.target in targets and rule(n):
                        break
            self.g.eliminate_dead_code()
            if self.changed == before:
                break
        self.gm.recompile()
        return self.changed


def frames_stay_4d(gm: fx.GraphModule) -> int:
    """Rewrite, in place, the 5D round trips between the 2D ops of `gm` (a deploy form's
    `torch.export` graph, e.g. `ExportedProgram.module()`; module docstring); returns how many
    rewrites were made (0: the graph is unchanged). Export `gm` again to lower it."""
    return _Rewriter(gm).run()


__all__ = ["frames_stay_4d"]
