"""The frames layout of a video ResNet's deploy form, for onnx2tf (EchoNet-Dynamic's models).

onnx2tf cannot take the video ResNets' deploy form as it stands: every rewrite there reads its
input as a (B, T, C*H*W) view and hands back a permuted 5D view, and onnx2tf, guessing a layout
for each of those rank-3/5 tensors, grew past 23 GB of memory on a 4-wide R(2+1)D-18 at 8 x 32 x 32
and was killed. As for Echo-E3Net (echoedge.convert.onnx2tf_substitutions), the network is instead
run on one rank-4 frames tensor (T, C, H, W), batch 1, from the stem to the global pool:

- a Conv3d rewrite's temporal taps are slices on axis 0 of the frames, zero frames joined by
  concat for the padding; with a temporal stride s a tap is every s-th frame (a strided slice,
  which TFLite runs; why not the deploy form's block view: FramesVideoConv._taps);
- torchvision's residual blocks run unchanged (their `+=` and in-place ReLU act on 4D tensors);
- the global pool is the sum of the T frames times 1/T, then a 2D global pool: (1, C, 1, 1).

`onnx_export` checks the swapped module equal to the deploy form before exporting it.
"""

from __future__ import annotations

from typing import Any

from echoedge.errors import EchoEdgeError


def has_video_resnet(model: Any) -> bool:
    from echoedge.model.video_resnet import VideoResNet

    return any(isinstance(m, VideoResNet) for m in model.modules())


def video_frames_layout(model: Any) -> tuple[Any, list[str]]:
    """A copy of `model` (a deploy form holding a VideoResNet) running on frames; the swaps."""
    import copy

    from echoedge.model.deploy_bn_pool import BatchNorm3dAs2d, GlobalPool3dAs2d
    from echoedge.model.deploy_conv import Conv3dAs2d
    from echoedge.model.video_resnet import VideoResNet

    kinds = _make_frames_video()
    sub = copy.deepcopy(model).eval()
    table = [
        (VideoResNet, kinds["net"], "input permuted once to frames (T, C, H, W)"),
        (Conv3dAs2d, kinds["conv"], "conv on frames: taps are step-1 slices of frame blocks"),
        (BatchNorm3dAs2d, kinds["bn"], "batch norm on frames"),
        (GlobalPool3dAs2d, kinds["global_pool"], "global pool: frames summed, then 2D"),
    ]
    counts: dict[str, int] = {}
    for kind, make, what in table:  # outer modules first: a swap keeps the children it holds
        for name, m in list(sub.named_modules()):
            if type(m) is kind:
                new = make(m)
                if name:
                    sub.set_submodule(name, new)
                else:
                    sub = new
                key = f"{kind.__name__}: {what}"
                counts[key] = counts.get(key, 0) + 1
    return sub, [f"{k} (x{n})" for k, n in counts.items()]


def _make_frames_video() -> dict[str, type]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FramesVideoResNet(nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.stem, self.avgpool, self.fc = net.stem, net.avgpool, net.fc
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                net.layer1, net.layer2, net.layer3, net.layer4)

        def forward(self, x: Any) -> Any:
            if x.shape[0] != 1:
                raise EchoEdgeError("the frames-layout export form runs batch 1 only")
            f = x[0].transpose(0, 1)  # (C, T, H, W) -> (T, C, H, W)
            f = self.stem(f)
            f = self.layer4(self.layer3(self.layer2(self.layer1(f))))
            return self.fc(torch.flatten(self.avgpool(f), 1))

    class FramesVideoConv(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.window, self.convs, self.stacked, self.post = m.window, m.convs, m.stacked, m.post
            # specialise() may have moved the bias of a per-tap sum onto the joined runs.
            self.run_bias = getattr(m, "run_bias", None)

        def _taps(self, f: Any, t_out: int) -> list[Any]:
            win = self.window
            before, after = win.pad_before, win.pad_after
            parts = ([f.new_zeros((before, *f.shape[1:]))] if before else []) + [f] + (
                [f.new_zeros((after, *f.shape[1:]))] if after else [])
            f = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            if win.stride == 1:
                return [f if (o == 0 and f.shape[0] == t_out) else f[o:o + t_out]
                        for o in win.offsets()]
            # Every stride-th frame from the tap's offset: a strided slice on the frame axis,
            # which TFLite runs (STRIDED_SLICE). The deploy form's block view, (T/s, s*C, H, W)
            # with step-1 slices, is what ExecuTorch needs, but onnx2tf mis-converts its reshape
            # of a channels-last tensor (fp32 file 3.6e-2 off eager on a 4-wide R(2+1)D-18).
            return [f[o::win.stride][:t_out] for o in win.offsets()]

        def forward(self, f: Any) -> Any:
            t_out = self.window.out_frames(int(f.shape[0]))
            taps = self._taps(f, t_out)
            if self.stacked:
                y = self.convs[0](taps[0] if len(taps) == 1 else torch.cat(taps, dim=1))
            else:
                y = self.convs[0](taps[0])
                for conv, xi in zip(self.convs[1:], taps[1:]):
                    y = y + conv(xi)
            if self.run_bias is not None:
                y = y + self.run_bias
            return self.post(y)

    class FramesGlobalPool(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.is_max = m.is_max

        def forward(self, f: Any) -> Any:
            t, h, w = int(f.shape[0]), int(f.shape[2]), int(f.shape[3])
            y = f[0:1]
            for i in range(1, t):
                y = torch.maximum(y, f[i:i + 1]) if self.is_max else y + f[i:i + 1]
            if not self.is_max and t > 1:
                y = y * (1.0 / t)
            return F.max_pool2d(y, (h, w)) if self.is_max else F.avg_pool2d(y, (h, w))

    from echoedge.convert.onnx2tf_substitutions import _make_frames_substitutes

    # A BatchNorm on frames is the same module as Echo-E3Net's frames layout uses.
    return {"net": FramesVideoResNet, "conv": FramesVideoConv, "bn": _make_frames_substitutes()["bn"],
            "global_pool": FramesGlobalPool}


__all__ = ["has_video_resnet", "video_frames_layout"]
