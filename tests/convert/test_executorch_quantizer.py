"""The XNNPACK quantizer echo-edge uses skips its conv + BatchNorm patterns on graphs without
BatchNorm (they trace 12 pattern graphs per pass to match nothing): the prepared graph must be
the stock quantizer's, node for node, for a network with and without a BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _prepared(model: nn.Module, x: torch.Tensor, fast: bool) -> list[tuple[str, str, str]]:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from echoedge.convert.executorch_quantizer import xnnpack_quantizer

    q = (xnnpack_quantizer() if fast else XNNPACKQuantizer()).set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    gm = torch.export.export(model.eval(), (x,), strict=False).module()
    p = prepare_pt2e(gm, q)
    return [(n.name, str(n.target), str([str(a) for a in n.args])) for n in p.graph.nodes]


class _Net(nn.Module):
    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.conv2(x)) + 1.0
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("bn", [False, True], ids=["no-batchnorm", "batchnorm"])
def test_fast_quantizer_prepares_the_stock_graph(bn: bool, monkeypatch):
    import executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils as utils

    traced = []
    for name in ("conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"):
        annotate = utils.OP_TO_ANNOTATOR[name]
        monkeypatch.setitem(utils.OP_TO_ANNOTATOR, name,
                            lambda *a, _f=annotate, **k: traced.append(1) or _f(*a, **k))
    torch.manual_seed(0)
    net, x = _Net(bn), torch.randn(1, 3, 8, 8)
    fast = _prepared(net, x, fast=True)
    # prepare_pt2e folds BatchNorm into the convs before annotating, so the conv + BatchNorm
    # annotators, which the stock quantizer runs, never run here: and the graph is the same.
    assert not traced
    assert fast == _prepared(net, x, fast=False)
    assert traced
    # Observers were inserted: the quantizer annotated the convs, not nothing.
    assert sum("activation_post_process" in name for name, _, _ in fast) >= 3
