"""The video ResNets of EchoNet-Dynamic: R(2+1)D-18, R3D-18 and MC3-18 with a one-output head.

EchoNet-Dynamic (Ouyang et al., Nature 2020) predicts EF with torchvision's `r2plus1d_18` whose
`fc` is replaced by a Linear with one output; its released checkpoints are that model's state
dict. These builders give the same modules under the same names and shapes (`stem.0.weight`,
`layer1.0.conv1.0.0.weight`, ..., `fc.bias`), so such a checkpoint loads as is, without importing
torchvision (it does not import beside the torch this project pins).

Written here, not imported, and therefore small: torchvision's `VideoResNet` is three building
blocks and a layer loop. The module tree mirrors torchvision's because parameter names are paths
in it: a block's `conv1` is Sequential(conv_builder, BatchNorm3d, ReLU), `conv2` is
Sequential(conv_builder, BatchNorm3d), the (2+1)D builder is itself a Sequential(spatial Conv3d,
BatchNorm3d, ReLU, temporal Conv3d) whose middle width follows torchvision's `midplanes` formula
(the parameter count of a full 3x3x3 conv, kept).

`base_width` scales every width (64 in torchvision; tests build 8 or 16 to stay fast). The stem's
45-channel R(2+1)D middle scales with it. `forward` returns (B, outputs), as torchvision's does;
EchoNet-Dynamic's EF is output 0 in %.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

ARCHITECTURES = ("r2plus1d_18", "r3d_18", "mc3_18")
BLOCKS_PER_LAYER = (2, 2, 2, 2)  # the "18"
# EchoNet-Dynamic starts the EF head's bias at the training set's mean EF (echonet/utils/video.py).
EF_BIAS_INIT = 55.6


class Conv3DSimple(nn.Conv3d):
    """A full 3x3x3 conv (R3D, and MC3's first layer)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride,
                         padding=padding, bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """A 1x3x3 conv: MC3's layers 2-4 mix no time, so their shortcut keeps the frame count."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, padding, padding), bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """A 3x3x3 conv factored into a 1x3x3 spatial and a 3x1x1 temporal conv (R(2+1)D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(padding, 0, 0), bias=False),
        )

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


ConvBuilder = Callable[..., nn.Module]


def midplanes(inplanes: int, planes: int) -> int:
    """torchvision's (2+1)D middle width: as many weights as one full 3x3x3 conv."""
    return (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)


class BasicBlock(nn.Module):
    """Two convs and a shortcut; `out += identity` and in-place ReLU as in torchvision."""

    def __init__(self, inplanes: int, planes: int, conv_builder: ConvBuilder, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        mid = midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(conv_builder(inplanes, planes, mid, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        out += identity
        return self.relu(out)


def basic_stem(in_channels: int, width: int) -> nn.Sequential:
    """R3D / MC3 stem: one 3x7x7 conv, spatial stride 2."""
    return nn.Sequential(
        nn.Conv3d(in_channels, width, kernel_size=(3, 7, 7), stride=(1, 2, 2),
                  padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True))


def r2plus1d_stem(in_channels: int, width: int, mid: int) -> nn.Sequential:
    """R(2+1)D stem: a 1x7x7 spatial conv to `mid` channels, then a 3x1x1 temporal conv."""
    return nn.Sequential(
        nn.Conv3d(in_channels, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                  bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0),
                  bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class VideoResNet(nn.Module):
    """stem -> layer1..4 (BasicBlocks, strides 1, 2, 2, 2) -> global average pool -> fc."""

    def __init__(self, arch: str, stem: nn.Module, conv_makers: list[ConvBuilder],
                 base_width: int = 64, outputs: int = 1) -> None:
        super().__init__()
        self.arch = arch
        self.base_width = base_width
        self.inplanes = base_width
        self.stem = stem
        widths = [base_width * m for m in (1, 2, 4, 8)]
        for i, (maker, planes, blocks) in enumerate(zip(conv_makers, widths, BLOCKS_PER_LAYER)):
            self.add_module(f"layer{i + 1}", self._make_layer(maker, planes, blocks,
                                                              stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(widths[-1], outputs)
        self._initialise(outputs)

    def _make_layer(self, conv_builder: ConvBuilder, planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, kernel_size=1,
                          stride=conv_builder.downsample_stride(stride), bias=False),
                nn.BatchNorm3d(planes))
        layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _initialise(self, outputs: int) -> None:
        # torchvision's initialisation; the EF head's bias as EchoNet-Dynamic sets it.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, EF_BIAS_INIT if outputs == 1 else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def r2plus1d_18(base_width: int = 64, outputs: int = 1, in_channels: int = 3) -> VideoResNet:
    """EchoNet-Dynamic's EF model: torchvision's r2plus1d_18 with an `outputs`-wide fc."""
    mid = 45 if base_width == 64 else max(1, round(45 * base_width / 64))
    return VideoResNet("r2plus1d_18", r2plus1d_stem(in_channels, base_width, mid),
                       [Conv2Plus1D] * 4, base_width, outputs)


def r3d_18(base_width: int = 64, outputs: int = 1, in_channels: int = 3) -> VideoResNet:
    """torchvision's r3d_18 (full 3x3x3 convs throughout) with an `outputs`-wide fc."""
    return VideoResNet("r3d_18", basic_stem(in_channels, base_width), [Conv3DSimple] * 4,
                       base_width, outputs)


def mc3_18(base_width: int = 64, outputs: int = 1, in_channels: int = 3) -> VideoResNet:
    """torchvision's mc3_18 (3D convs in layer1, 2D-in-space convs after) with an fc."""
    return VideoResNet("mc3_18", basic_stem(in_channels, base_width),
                       [Conv3DSimple] + [Conv3DNoTemporal] * 3, base_width, outputs)


class EFOutputs(nn.Module):
    """A one-output video ResNet as the pipeline runs every model: forward returns the tuple of
    its outputs, here (ef,) with ef of shape (B,) in %, the first of Echo-E3Net's five, so that
    runners, converters and reports index outputs alike (EDV, ESV and landmarks: not produced).
    The wrapped network keeps torchvision's names under `net.`; checkpoints hold it unwrapped."""

    def __init__(self, net: VideoResNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.net(x)[:, 0],)


BUILDERS: dict[str, Callable[..., VideoResNet]] = {
    "r2plus1d_18": r2plus1d_18, "r3d_18": r3d_18, "mc3_18": mc3_18,
}


def build_video_resnet(arch: str, base_width: int = 64, outputs: int = 1,
                       in_channels: int = 3) -> VideoResNet:
    """One of ARCHITECTURES by name."""
    try:
        builder = BUILDERS[arch]
    except KeyError:
        from echoedge.errors import EchoEdgeError

        raise EchoEdgeError(f"unknown video ResNet '{arch}' (choose from "
                            f"{', '.join(ARCHITECTURES)})") from None
    return builder(base_width=base_width, outputs=outputs, in_channels=in_channels)


__all__ = [
    "ARCHITECTURES", "BasicBlock", "EFOutputs", "Conv2Plus1D", "Conv3DNoTemporal", "Conv3DSimple",
    "EF_BIAS_INIT", "VideoResNet", "build_video_resnet", "mc3_18", "midplanes", "r2plus1d_18",
    "r3d_18",
]
