"""A small 2D network with Echo-E3Net's input/output layout and one layer int8 wrecks on purpose.

conv1 -> ReLU -> conv2 -> ReLU -> conv3, pooled into the EF head. conv1's channel 0 is dead (ReLU
of a hugely negative bias) and conv2 gets huge weights on that channel: the float function and
every activation range are unchanged, but per-channel int8 (step = max|w| / 127) rounds the rest of
conv2's weights to a few steps. Shared by the sensitivity and budget tests.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAGILE_SPEC = dict(frames=4, height=16, width=16)


@pytest.fixture(scope="session")
def fragile_model() -> Callable[[], Any]:
    """A factory: each call returns a fresh, seeded fragile network (eval mode)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Fragile2D(nn.Module):
        def __init__(self, k: int = 42) -> None:
            super().__init__()
            self.k = k
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 3)
            self.lm = nn.Linear(16, 2 * k * 2)

        def forward(self, x):
            b, c, t, h, w = x.shape
            y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(y)))))
            y = y.mean(dim=(2, 3)).reshape(b, t, 16).mean(dim=1)
            z = self.head(y)  # EF/EDV/ESV straight from a (float) Linear: no quantized arithmetic after it
            lm = torch.sigmoid(self.lm(y)).reshape(b, 2, self.k, 2)
            return z[:, 0], z[:, 1], z[:, 2], lm[:, 0], lm[:, 1]

    def make() -> nn.Module:
        torch.manual_seed(0)
        m = Fragile2D().eval()
        with torch.no_grad():
            m.head.weight.mul_(torch.tensor([[12.0], [35.0], [25.0]]))
            m.head.bias.copy_(torch.tensor([55.0, 90.0, 40.0]))
            m.conv1.bias[0] = -1e3
            m.conv2.weight[:, 0] = 150 * m.conv2.weight.abs().max()
        return m

    return make
