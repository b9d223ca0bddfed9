"""The deploy form's 4D frames pass (echoedge.model.deploy_layout): exact, and it removes the 5D
round trips between 2D ops that made XNNPACK transpose around every view."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from echoedge.model.deploy import to_deploy_form  # noqa: E402
from echoedge.model.deploy_layout import frames_stay_4d  # noqa: E402


def _five_d(gm: torch.fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"
            and isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dim() == 5]


def _exported(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    deploy = to_deploy_form(model.eval(), x)
    return torch.export.export(deploy, (x[:1],)).module()


def test_convs_with_activations_between_them_keep_frames_4d() -> None:
    """Conv3d -> LeakyReLU -> Conv3d (temporal taps, padding) plus a residual add: after the pass
    only the input's and output's own layout changes are 5D, and the numbers are identical."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv3d(2, 4, 3, padding=1)
            self.act = nn.LeakyReLU(0.1)
            self.b = nn.Conv3d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.a(x))
            return self.act(self.b(y) + y)

    torch.manual_seed(0)
    x = torch.randn(2, 2, 6, 8, 8)
    gm = _exported(Net(), x)
    before = _five_d(gm)
    want = gm(x[:1])
    assert frames_stay_4d(gm) > 0
    after = _five_d(gm)
    assert torch.equal(gm(x[:1]), want)
    assert len(after) <= 4 < len(before), (before, after)  # in: permute + view; out: view + permute
    assert not any("leaky_relu" in t or "add" in t for t in after), after
    convs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default
             or n.target == torch.ops.aten.convolution.default]
    assert len(convs) >= 2
    for c in convs[1:]:  # the second conv's taps: slices and a concat of 4D frames, no view
        assert c.args[0].target in (torch.ops.aten.cat.default, torch.ops.aten.slice.Tensor), c.args[0].target


def test_a_graph_with_nothing_to_rewrite_is_left_as_it_is() -> None:
    class Flat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x.reshape(2, -1)) + 1

    gm = torch.export.export(Flat(), (torch.randn(2, 3, 4),)).module()
    code = gm.code
    assert frames_stay_4d(gm) == 0 and gm.code == code


def test_tiny_e3net_is_exactly_the_same_function_with_fewer_layout_changes() -> None:
    from echoedge.model.config import get_config
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(0)
    cfg = get_config("tiny")
    x = torch.randn(2, cfg.channels, cfg.frames, cfg.height, cfg.width)
    gm = _exported(EchoE3Net(cfg), x)
    permutes = sum(n.target == torch.ops.aten.permute.default for n in gm.graph.nodes)
    want = gm(x[:1])
    assert frames_stay_4d(gm) > 0
    for got, ref in zip(gm(x[:1]), want):
        assert torch.equal(got, ref)
    assert sum(n.target == torch.ops.aten.permute.default for n in gm.graph.nodes) < 0.7 * permutes
    torch.export.export(gm, (x[:1],))  # what the converter lowers: it exports again


def test_merged_views_of_a_permuted_tensor_still_run() -> None:
    """view(reshape(permuted x)) merges into one reshape of the permuted tensor: it must not
    become an aten.view, which fails on a non-contiguous input."""

    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.permute(0, 2, 1, 3).reshape(2, 12, 5).reshape(2, 60)
            return y * 2

    x = torch.randn(2, 3, 4, 5)
    gm = torch.export.export(Net(), (x,)).module()
    want = gm(x)
    assert frames_stay_4d(gm) > 0
    assert torch.equal(gm(x), want)
