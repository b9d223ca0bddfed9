"""Which modules fuse into a Conv3d rewrite: Conv3d -> [BatchNorm3d] -> [activations] chains.

Found on the torch.fx graph (data flow), or from adjacent children of an nn.Sequential when the
model does not trace; a chain's members must feed only the next one and be used once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Element-wise activations that may run inside a conv rewrite (on the folded 4D layout).
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU,
                nn.Sigmoid, nn.Tanh, nn.ELU, nn.Identity)


def is_plain_conv3d(m: nn.Module) -> bool:
    """nn.Conv3d, or a subclass that keeps its forward (e.g. torchvision's Conv3DSimple)."""
    cls = type(m)
    return (isinstance(m, nn.Conv3d) and cls.forward is nn.Conv3d.forward
            and cls._conv_forward is nn.Conv3d._conv_forward)


def is_plain_bn3d(m: nn.Module) -> bool:
    return isinstance(m, nn.BatchNorm3d) and type(m).forward is nn.BatchNorm3d.forward


@dataclass
class ConvChain:
    """A Conv3d and what may be fused into its rewrite: a BatchNorm3d, element-wise modules."""

    conv: str
    bn: str | None = None
    post: list[str] = field(default_factory=list)


def _module_use_counts(model: nn.Module) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    return counts


def _foldable_bn(m: nn.Module) -> bool:
    return is_plain_bn3d(m) and m.track_running_stats and m.running_mean is not None


class _LeafTracer(torch.fx.Tracer):
    """Keeps plain 3D modules as call_module nodes even when defined outside torch.nn."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_plain_conv3d(m) or is_plain_bn3d(m) or super().is_leaf_module(m, qualname)


def find_conv_chains(model: nn.Module) -> dict[str, ConvChain]:
    """Conv3d -> [BatchNorm3d] -> [activations] runs where each output feeds only the next module.

    Read from the torch.fx graph (data flow, whatever the container); a model that does not trace
    falls back to adjacent children of nn.Sequential, where the data flow is the order itself.
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # untraceable Python in forward: any exception type is possible
        return _sequential_chains(model)
    mods = dict(model.named_modules())
    owners = _module_use_counts(model)
    calls: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1

    def single(n: torch.fx.Node) -> bool:
        return calls.get(n.target) == 1 and owners[id(mods[n.target])] == 1

    def sole_consumer(n: torch.fx.Node) -> torch.fx.Node | None:
        if len(n.users) != 1:
            return None
        u = next(iter(n.users))
        ok = u.op == "call_module" and single(u) and tuple(u.args) == (n,) and not u.kwargs
        return u if ok else None

    chains: dict[str, ConvChain] = {}
    for n in graph.nodes:
        if n.op != "call_module" or not is_plain_conv3d(mods[n.target]) or not single(n):
            continue
        chain, cur = ConvChain(n.target), n
        u = sole_consumer(cur)
        if u is not None and _foldable_bn(mods[u.target]):
            chain.bn, cur = u.target, u
        while (u := sole_consumer(cur)) is not None and type(mods[u.target]) in _ELEMENTWISE:
            chain.post.append(u.target)
            cur = u
        chains[n.target] = chain
    return chains


def _sequential_chains(model: nn.Module) -> dict[str, ConvChain]:
    owners = _module_use_counts(model)
    chains: dict[str, ConvChain] = {}
    for path, seq in model.named_modules():
        if type(seq) is not nn.Sequential:
            continue
        items = list(seq.named_children())
        for i, (name, m) in enumerate(items):
            if not is_plain_conv3d(m) or owners[id(m)] != 1:
                continue
            chain = ConvChain(_join(path, name))
            j = i + 1
            if j < len(items) and _foldable_bn(items[j][1]) and owners[id(items[j][1])] == 1:
                chain.bn = _join(path, items[j][0])
                j += 1
            while (j < len(items) and type(items[j][1]) in _ELEMENTWISE
                   and owners[id(items[j][1])] == 1):
                chain.post.append(_join(path, items[j][0]))
                j += 1
            chains[chain.conv] = chain
    return chains


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


__all__ = ["ConvChain", "find_conv_chains", "is_plain_bn3d", "is_plain_conv3d"]
