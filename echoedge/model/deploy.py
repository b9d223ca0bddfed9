"""The deploy form: the same function as a 3D reference model, written only with 2D ops.

Why (reference/toolchain.md, measured here): XNNPACK has no 3D convolution, so a Conv3d in an
ExecuTorch program fails at run time; TFLite never runs CONV_3D in int8 and XNNPACK does not take
it. Every backend runs Conv2d (grouped and depthwise too), element-wise ops, static
reshape/permute, concat and step-1 slices. `to_deploy_form` therefore deep-copies a model and swaps
its 3D modules for exact 2D rewrites; the reference is never touched. It is generic: any module
built from the ops below converts, not only Echo-E3Net.

Rewrites (x is (B, C, T, H, W); "frames" is its (B, T, C, H, W) view, folded to (B*T, C, H, W)):

- Conv3d, temporal kernel 1: frames folded into the batch, one Conv2d with the (kh, kw) kernel.
- Conv3d, temporal kernel kt > 1, temporal stride 1: zero frames are concatenated before and after
  on a (B, T, C*H*W) view (toolchain.md: `F.pad` on the frame axis broke ExecuTorch int8 at load,
  and zeros made as `x*0` broke litert-torch int8; a zeros tensor plus concat worked everywhere),
  then the kt time-shifted windows -- step-1 slices at offsets i*dilation_t -- are concatenated on
  channels and fed to one Conv2d whose weight is the 3D weight with its taps moved next to the
  input channels (tap-major, matching the concat order). Grouped and depthwise convs become the sum
  of kt grouped Conv2d, one per tap: stacking taps on channels would interleave the groups, and
  the per-tap sum is the form measured equal on every backend (toolchain.md: <= 2e-6 per conv).
  When the deploy form is built with an example (every converter does), each such conv is then
  specialised to its input frame count: output frames are split into runs that read the same
  real frames, each run convolves only the taps it reads, and the runs are concatenated in time,
  so no zero frames exist (they cost a portable `full` kernel outside XNNPACK on ExecuTorch and
  embedded constants in the fp32 TFLite/Core ML files). A stacked conv's boundary runs need their
  own weight slices, so where those would outweigh the zero frames (deep stages: few frames, many
  channels; e.g. +3.1 MB on the paper config's fp32 .pte) the zero-padded form is kept.
- Conv3d, temporal stride == temporal kernel (non-overlapping windows): the frames are reshaped to
  (B, T/s, s*C*H*W) -- each block of s frames already *is* the stacked window, so there is no
  slicing at all (strided slicing, step 2, falls off XNNPACK on ExecuTorch and TFLite). With a
  temporal kernel of 1 and a stride s, the same block view keeps frame 0 of each block with a
  step-1 slice. Any other temporal stride raises DeployError: this module does not emit one.
- BatchNorm3d fed only by a Conv3d (found on the torch.fx graph, or inside an nn.Sequential when
  the model does not trace) is folded into that conv's weight and bias with its running
  statistics; element-wise activations fed only by such a conv are applied inside the rewrite.
  Any other BatchNorm3d becomes a BatchNorm2d on the folded frames -- the same per-channel
  statistics over the same (B, T, H, W) elements.
- MaxPool3d / AvgPool3d with temporal kernel == temporal stride (or kernel 1): the time group is
  reduced with `maximum` / `add` of step-1 slices of the block view (toolchain.md: reductions such
  as amax/mean are not delegated on ExecuTorch; element-wise ops are), then MaxPool2d / AvgPool2d
  does the spatial window. Temporal padding, dilation, ceil_mode growth or return_indices raise.
- Any other 3D-specific module (ConvTranspose3d, adaptive or LP pooling, InstanceNorm3d, 3D
  padding, Conv3d subclasses whose forward is unknown) raises DeployError naming the module path
  and op. Functional calls (`F.conv3d` inside a forward) cannot be swapped module-wise, so when an
  example is given the deploy form is exported with `torch.export` and its graph scanned; a 3D op
  left there raises DeployError naming the node's module.

Layout: each rewrite returns its output as a permuted *view* (logical (B, C, T, H, W), memory
(B, T, C, H, W)), so the next rewrite's permute and fold are free in eager mode and the exported
graph holds back-to-back permute pairs that the backends' transpose passes cancel. Code that calls
`.view` on such an output would fail; `to_deploy_form` then (with an example) falls back to
contiguous outputs.

Equality: `check_deploy_equal` / `assert_deploy_equal` compare the two forms on clips; EF must
agree within 1e-3 points, every other output within float rounding (`RTOL` times the output's
scale, the scale being max(1, max |reference value|)).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echoedge.errors import EchoEdgeError
from echoedge.model.network import OUTPUT_NAMES

EF_TOLERANCE = 1e-3  # EF points
RTOL = 1e-4  # other outputs: relative to max(1, max |reference|)

# Element-wise activations that may run inside a conv rewrite (on the folded 4D layout).
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU,
                nn.Sigmoid, nn.Tanh, nn.ELU, nn.Identity)
# 3D modules that are the identity in eval mode.
_PASSTHROUGH_3D = (nn.Dropout3d,)


class DeployError(EchoEdgeError):
    """The model holds an op the deploy form cannot rewrite into 2D ops, or the two forms differ."""


def is_plain_conv3d(m: nn.Module) -> bool:
    """nn.Conv3d, or a subclass that keeps its forward (e.g. torchvision's Conv3DSimple)."""
    cls = type(m)
    return (isinstance(m, nn.Conv3d) and cls.forward is nn.Conv3d.forward
            and cls._conv_forward is nn.Conv3d._conv_forward)


def is_plain_bn3d(m: nn.Module) -> bool:
    return isinstance(m, nn.BatchNorm3d) and type(m).forward is nn.BatchNorm3d.forward


# ---------------------------------------------------------------------------- temporal windows
@dataclass(frozen=True)
class TimeWindow:
    """The temporal part of a 3D window: which input frames each output frame reads."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    pad_after: int = 0

    def out_frames(self, t: int) -> int:
        span = self.dilation * (self.kernel - 1) + 1
        return (t + self.pad_before + self.pad_after - span) // self.stride + 1

    def offsets(self) -> list[int]:
        return [i * self.dilation for i in range(self.kernel)]

    @property
    def blocks_are_windows(self) -> bool:
        """Each block of `stride` frames is exactly one window (no slicing needed)."""
        return self.stride == self.kernel and self.dilation == 1


def check_time_window(win: TimeWindow, where: str) -> None:
    if win.stride == 1 or win.kernel == 1 or win.stride == win.kernel:
        return
    raise DeployError(
        f"{where}: temporal stride {win.stride} with temporal kernel {win.kernel} is neither 1 "
        f"nor the kernel; overlapping strided windows would need strided slicing, which "
        f"XNNPACK does not run (use kernel == stride in time, or stride 1)")


def pad_frames(x3: Tensor, before: int, after: int) -> Tensor:
    """Zero frames on a (B, T, F) view by concat: the temporal padding every backend runs."""
    if before == 0 and after == 0:
        return x3
    b, _, f = x3.shape
    zeros_before = x3.new_zeros((b, before, f)) if before else None
    # One zeros tensor serves both ends when they match: each is a graph constant (ExecuTorch
    # leaves it to a portable `full` kernel).
    if after == before:
        zeros_after = zeros_before
    else:
        zeros_after = x3.new_zeros((b, after, f)) if after else None
    parts = [z for z in (zeros_before, x3, zeros_after) if z is not None]
    return torch.cat(parts, dim=1)


def block_view(x3: Tensor, win: TimeWindow, t_out: int) -> Tensor:
    """(B, T, F) -> (B, blocks, stride*F): frame j*stride + r sits in block j at slot r, so every
    tap of every window is a step-1 slice (block q..q+t_out, slot r), whatever the stride."""
    b, _, f = x3.shape
    x3 = pad_frames(x3, win.pad_before, win.pad_after)
    if win.stride == 1:
        return x3
    blocks = t_out + (win.dilation * (win.kernel - 1)) // win.stride
    need, have = blocks * win.stride, x3.shape[1]
    if have > need:
        x3 = x3[:, :need]
    elif have < need:  # trailing frames no window reads; only the block shape needs them
        x3 = pad_frames(x3, 0, need - have)
    return x3.reshape(b, blocks, win.stride * f)


def tap(xb: Tensor, win: TimeWindow, offset: int, t_out: int, f: int) -> Tensor:
    """Frames offset, offset + stride, ... of the block view: (B, t_out, F)."""
    q, r = divmod(offset, win.stride)
    y = xb if (q == 0 and xb.shape[1] == t_out) else xb[:, q:q + t_out]
    return y if (r == 0 and y.shape[2] == f) else y[:, :, r * f:(r + 1) * f]


def stacked_taps(x3: Tensor, win: TimeWindow, t_out: int) -> Tensor:
    """(B, T, F) -> (B, t_out, kernel*F): the kernel taps of each window, tap-major."""
    f = x3.shape[2]
    xb = block_view(x3, win, t_out)
    if win.blocks_are_windows:
        return xb
    taps = [tap(xb, win, o, t_out, f) for o in win.offsets()]
    return taps[0] if len(taps) == 1 else torch.cat(taps, dim=2)


def split_taps(x3: Tensor, win: TimeWindow, t_out: int) -> list[Tensor]:
    f = x3.shape[2]
    xb = block_view(x3, win, t_out)
    return [tap(xb, win, o, t_out, f) for o in win.offsets()]


def to_frames(x: Tensor) -> tuple[Tensor, tuple[int, int, int, int, int]]:
    """(B, C, T, H, W) -> its (B, T, C*H*W) view, and the 5D shape."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w), (b, c, t, h, w)


def from_frames(y: Tensor, b: int, t: int, contiguous: bool) -> Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W) as a permuted view (or a contiguous copy)."""
    _, c, h, w = y.shape
    out = y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    return out.contiguous() if contiguous else out


class _Batched5D(nn.Module):
    """Accepts unbatched (C, T, H, W) input as the 3D modules do."""

    contiguous_out: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self.forward5d(x.unsqueeze(0)).squeeze(0)
        return self.forward5d(x)

    def forward5d(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------- conv
def _padding_pairs(conv: nn.Conv3d) -> list[tuple[int, int]]:
    """(before, after) per axis T, H, W, for int, tuple or 'same'/'valid' padding."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [(0, 0)] * 3
        pairs = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            pairs.append((total // 2, total - total // 2))  # torch puts the odd one after
        return pairs
    return [(p, p) for p in conv.padding]


def fold_batchnorm(weight: Tensor, bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm
                   ) -> tuple[Tensor, Tensor]:
    """Conv weight/bias with an eval-mode BatchNorm after it folded in (in float64, then back)."""
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    w = weight.detach().double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias.detach().double() * scale + shift
    return w.to(weight.dtype), b.to(weight.dtype)


def _conv2d(cin: int, cout: int, weight: Tensor, bias: Tensor | None, conv: nn.Conv3d,
            groups: int) -> nn.Conv2d:
    padding: Any = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding[1:])
    m = nn.Conv2d(cin, cout, tuple(weight.shape[2:]), stride=tuple(conv.stride[1:]),
                  padding=padding, dilation=tuple(conv.dilation[1:]), groups=groups,
                  bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        m.weight.copy_(weight)
        if bias is not None:
            m.bias.copy_(bias)
    return m


class Conv3dAs2d(_Batched5D):
    """An exact Conv3d made of Conv2d on frames (see the module docstring)."""

    def __init__(self, window: TimeWindow, convs: Sequence[nn.Conv2d], stacked: bool,
                 post: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.window = window
        self.convs = nn.ModuleList(convs)
        self.stacked = stacked  # one conv on the taps stacked on channels, else a sum over taps
        self.post = nn.Sequential(*post)
        # Set by specialise(): runs of output frames (t0, t1, first tap, last tap).
        self.frames: int | None = None
        self.runs: list[tuple[int, int, int, int]] | None = None
        self.run_convs = nn.ModuleDict()
        self.run_bias: nn.Parameter | None = None

    @classmethod
    def from_conv3d(cls, conv: nn.Conv3d, bn: nn.Module | None = None,
                    post: Sequence[nn.Module] = (), where: str = "") -> "Conv3dAs2d":
        _check_conv3d(conv, where)
        pads = _padding_pairs(conv)
        win = TimeWindow(conv.kernel_size[0], conv.stride[0], conv.dilation[0], *pads[0])
        weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        if bn is not None:
            weight, bias = fold_batchnorm(weight, bias, bn)
        cout, cin_g, kt = weight.shape[:3]
        cin = cin_g * conv.groups
        if kt == 1 or conv.groups == 1:
            # (O, I, kt, kh, kw) -> (O, kt*I, kh, kw): tap-major, as stacked_taps concatenates.
            w2 = weight.permute(0, 2, 1, 3, 4).reshape(cout, kt * cin_g, *weight.shape[3:])
            convs = [_conv2d(kt * cin, cout, w2, bias, conv, conv.groups)]
            return cls(win, convs, stacked=True, post=post)
        convs = [_conv2d(cin, cout, weight[:, :, i], bias if i == 0 else None, conv, conv.groups)
                 for i in range(kt)]
        return cls(win, convs, stacked=False, post=post)

    # ------------------------------------------------------------ padding-free form
    def specialise(self, frames: int, where: str = "", frame_numel: int | None = None) -> None:
        """Fix the input to `frames` frames and drop the zero frames of temporal padding.

        Output frames are grouped into runs that read the same taps of real frames (the first
        and last `pad` frames lose the taps that would read padding, the interior keeps all);
        each run is one conv on its taps alone (a stacked conv gets the matching slice of the
        weight, a per-tap sum just skips taps), and the runs are concatenated in time. Same
        numbers, and no zeros tensor: ExecuTorch computes those with a portable `full` kernel
        outside XNNPACK (splitting the delegate), and the fp32 TFLite/Core ML files embed them.
        """
        win = self.window
        if win.stride != 1 or (win.pad_before == 0 and win.pad_after == 0):
            return  # no zeros are made: nothing to specialise
        runs = _tap_runs(win, frames)
        if runs is None:  # an output frame would read padding only: keep the zero-padded form
            return
        if self.stacked and frame_numel is not None:
            # Boundary runs of a stacked conv carry their own slice of the weight. Where those
            # copies outweigh the zero frames they replace (deep stages: few frames, many
            # channels), the zero-padded form is the smaller program: keep it.
            full = self.convs[0]
            per_tap = full.weight.numel() // win.kernel
            extra = sum((b - a + 1) * per_tap for a, b in {(a, b) for *_, a, b in runs}
                        if (a, b) != (0, win.kernel - 1))
            if extra > (win.pad_before + win.pad_after) * frame_numel:
                return
        self.frames = frames
        self.runs = runs
        if self.stacked:
            full = self.convs[0]
            cin = full.in_channels // win.kernel
            self.run_convs = nn.ModuleDict()
            for _, _, a, b in runs:
                key = f"{a}_{b}"
                if (a, b) == (0, win.kernel - 1) or key in self.run_convs:
                    continue
                w = full.weight.detach()[:, a * cin:(b + 1) * cin]
                self.run_convs[key] = _like_conv2d(full, w, full.bias)
        else:
            # The bias rides on a tap every run reads (the centre tap of 'same' padding), or is
            # added once after the runs are joined when no tap is read by all.
            bias = next((c.bias for c in self.convs if c.bias is not None), None)
            if bias is not None:
                common = set(range(win.kernel))
                for _, _, a, b in runs:
                    common &= set(range(a, b + 1))
                keep = min(common) if common else None
                convs = [_like_conv2d(c, c.weight.detach(), bias if i == keep else None)
                         for i, c in enumerate(self.convs)]
                self.convs = nn.ModuleList(convs)
                if keep is None:
                    self.run_bias = nn.Parameter(bias.detach().clone().reshape(1, -1, 1, 1),
                                                 requires_grad=False)

    def _forward_runs(self, x3: Tensor, b: int, c: int, h: int, w: int) -> Tensor:
        win = self.window
        parts = []
        for t0, t1, a, z in self.runs:
            n = t1 - t0
            start = [t0 - win.pad_before + i * win.dilation for i in range(a, z + 1)]
            taps = [x3[:, s:s + n] for s in start]
            if self.stacked:
                conv = self.convs[0] if (a, z) == (0, win.kernel - 1) else self.run_convs[f"{a}_{z}"]
                xs = taps[0] if len(taps) == 1 else torch.cat(taps, dim=2)
                y = conv(xs.reshape(b * n, len(taps) * c, h, w))
            else:
                y = None
                for i, xi in zip(range(a, z + 1), taps):
                    yi = self.convs[i](xi.reshape(b * n, c, h, w))
                    y = yi if y is None else y + yi
            parts.append(y)
        if len(parts) == 1:
            y = parts[0]
        elif b == 1:  # the exported programs' case: the folded batch is time itself
            y = torch.cat(parts, dim=0)
        else:
            y = torch.cat([p.reshape(b, -1, *p.shape[1:]) for p in parts], dim=1)
            y = y.reshape(-1, *y.shape[2:])
        if self.run_bias is not None:
            y = y + self.run_bias
        return y

    def forward5d(self, x: Tensor) -> Tensor:
        x3, (b, c, t, h, w) = to_frames(x)
        t_out = self.window.out_frames(t)
        if self.runs is not None:
            if t != self.frames:
                raise DeployError(f"this deploy form was specialised to {self.frames} input frames "
                                  f"at this conv, got {t}; rebuild it with an example of the "
                                  f"input size")
            y = self._forward_runs(x3, b, c, h, w)
            return from_frames(self.post(y), b, t_out, self.contiguous_out)
        if self.stacked:
            stacked = stacked_taps(x3, self.window, t_out)
            y = self.convs[0](stacked.reshape(b * t_out, self.window.kernel * c, h, w))
        else:
            taps = split_taps(x3, self.window, t_out)
            y = self.convs[0](taps[0].reshape(b * t_out, c, h, w))
            for conv, xi in zip(self.convs[1:], taps[1:]):
                y = y + conv(xi.reshape(b * t_out, c, h, w))
        return from_frames(self.post(y), b, t_out, self.contiguous_out)


def _tap_runs(win: TimeWindow, frames: int) -> list[tuple[int, int, int, int]] | None:
    """Runs (t0, t1, a, b) of output frames of a stride-1 window whose real-frame taps are a..b.

    Taps of a window are evenly spaced, so the ones inside [0, frames) are always a contiguous
    range; None when some output frame has none.
    """
    runs: list[tuple[int, int, int, int]] = []
    for t in range(win.out_frames(frames)):
        idx = [t - win.pad_before + i * win.dilation for i in range(win.kernel)]
        valid = [i for i, j in enumerate(idx) if 0 <= j < frames]
        if not valid:
            return None
        a, b = valid[0], valid[-1]
        if runs and runs[-1][2:] == (a, b) and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + 1, a, b)
        else:
            runs.append((t, t + 1, a, b))
    return runs


def _like_conv2d(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """A Conv2d with `conv`'s geometry and the given weight (its input channels may differ)."""
    m = nn.Conv2d(weight.shape[1] * conv.groups, conv.out_channels, conv.kernel_size,
                  stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                  groups=conv.groups, bias=bias is not None, device=weight.device,
                  dtype=weight.dtype)
    with torch.no_grad():
        m.weight.copy_(weight)
        if bias is not None:
            m.bias.copy_(bias.detach())
    return m


def _check_conv3d(conv: nn.Conv3d, where: str) -> None:
    if conv.padding_mode != "zeros":
        raise DeployError(f"{where}: Conv3d with padding_mode={conv.padding_mode!r} has no 2D "
                          f"rewrite here (only zero padding)")
    pads = _padding_pairs(conv)
    check_time_window(TimeWindow(conv.kernel_size[0], conv.stride[0], conv.dilation[0],
                                 *pads[0]), f"{where} (Conv3d)")


# ---------------------------------------------------------------------------- batch norm
class BatchNorm3dAs2d(_Batched5D):
    """BatchNorm3d as BatchNorm2d on the folded frames: the same per-channel statistics."""

    def __init__(self, bn3: nn.BatchNorm3d) -> None:
        super().__init__()
        like = bn3.weight if bn3.affine else bn3.running_mean
        where = {} if like is None else {"device": like.device, "dtype": like.dtype}
        self.bn = nn.BatchNorm2d(bn3.num_features, bn3.eps, bn3.momentum, bn3.affine,
                                 bn3.track_running_stats, **where)
        self.bn.load_state_dict(bn3.state_dict())
        self.bn.eval()

    def forward5d(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.bn(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return from_frames(y, b, t, self.contiguous_out)


# ---------------------------------------------------------------------------- pooling
class Pool3dAs2d(_Batched5D):
    """MaxPool3d / AvgPool3d: time group reduced with maximum/add of step-1 slices, then 2D pool."""

    def __init__(self, pool: nn.MaxPool3d | nn.AvgPool3d, where: str) -> None:
        super().__init__()
        k, s, p = (_triple(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size,
                                         pool.padding))
        self.where = where
        self.is_max = isinstance(pool, nn.MaxPool3d)
        d = _triple(pool.dilation) if self.is_max else (1, 1, 1)
        _check_pool3d(pool, k, s, p, d, where)
        self.window = TimeWindow(k[0], s[0], d[0] if k[0] > 1 else 1)
        self.ceil_mode = pool.ceil_mode
        self.divisor = getattr(pool, "divisor_override", None)
        if k[1:] == (1, 1) and s[1:] == (1, 1) and p[1:] == (0, 0) and self.divisor is None:
            self.spatial: nn.Module = nn.Identity()
        elif self.is_max:
            self.spatial = nn.MaxPool2d(k[1:], s[1:], p[1:], d[1:], ceil_mode=pool.ceil_mode)
        else:
            # The time sum is divided here, so the 2D pool divides by the spatial window only;
            # with divisor_override it divides by the override alone, as AvgPool3d does.
            self.spatial = nn.AvgPool2d(k[1:], s[1:], p[1:], ceil_mode=pool.ceil_mode,
                                        count_include_pad=pool.count_include_pad,
                                        divisor_override=self.divisor)

    def forward5d(self, x: Tensor) -> Tensor:
        x3, (b, c, t, h, w) = to_frames(x)
        t_out = self.window.out_frames(t)
        if self.ceil_mode and (t - self.window.kernel) % self.window.stride:
            raise DeployError(f"{self.where}: ceil_mode pooling over {t} frames with temporal "
                              f"kernel {self.window.kernel} adds a partial window; no rewrite")
        taps = split_taps(x3, self.window, t_out)
        y = taps[0]
        for xi in taps[1:]:
            y = torch.maximum(y, xi) if self.is_max else y + xi
        if not self.is_max and len(taps) > 1 and self.divisor is None:
            y = y * (1.0 / len(taps))
        y = self.spatial(y.reshape(b * t_out, c, h, w))
        return from_frames(y, b, t_out, self.contiguous_out)


def _triple(v: Any) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _check_pool3d(pool: nn.Module, k: tuple[int, ...], s: tuple[int, ...], p: tuple[int, ...],
                  d: tuple[int, ...], where: str) -> None:
    op = type(pool).__name__
    if getattr(pool, "return_indices", False):
        raise DeployError(f"{where} ({op}): return_indices has no 2D rewrite")
    if p[0]:
        raise DeployError(f"{where} ({op}): temporal padding {p[0]} has no 2D rewrite")
    if k[0] > 1 and d[0] > 1:
        raise DeployError(f"{where} ({op}): temporal dilation {d[0]} has no 2D rewrite")
    if not (k[0] == 1 or s[0] == k[0]):
        raise DeployError(f"{where} ({op}): temporal kernel {k[0]} with temporal stride {s[0]}; "
                          f"only kernel == stride (or kernel 1) avoids strided slicing")


# ---------------------------------------------------------------------------- graph analysis
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


# ---------------------------------------------------------------------------- the rewrite
def _is_3d_specific(m: nn.Module) -> bool:
    """A torch.nn 3D op, or any conv with a 3D kernel (user code is caught by the graph scan)."""
    cls = type(m)
    from_torch = cls.__module__.startswith("torch.")
    return ((from_torch and cls.__name__.endswith(("3d", "3D")))
            or (isinstance(m, nn.modules.conv._ConvNd) and len(m.kernel_size) == 3))


def unsupported_modules(model: nn.Module) -> list[str]:
    """'path (Op): why' for every module the deploy form cannot rewrite."""
    bad = []
    for path, m in model.named_modules():
        where = path or "<root>"
        if is_plain_conv3d(m):
            try:
                _check_conv3d(m, where)
            except DeployError as e:
                bad.append(str(e))
        elif type(m) in (nn.MaxPool3d, nn.AvgPool3d):
            try:
                Pool3dAs2d(m, where)
            except DeployError as e:
                bad.append(str(e))
        elif is_plain_bn3d(m) or isinstance(m, _PASSTHROUGH_3D):
            continue
        elif _is_3d_specific(m):
            bad.append(f"{where} ({type(m).__name__}): a 3D op with no 2D rewrite in the deploy "
                       f"form")
    return bad


def rewrite_modules(model: nn.Module) -> nn.Module:
    """Swap the 3D modules of `model` in place (it must be a private copy); return the result,
    which is a new module only when the root itself is a 3D module."""
    bad = unsupported_modules(model)
    if bad:
        raise DeployError("cannot build the deploy form: " + "; ".join(bad))
    mods = dict(model.named_modules())
    for path, chain in find_conv_chains(model).items():
        bn = mods[chain.bn] if chain.bn else None
        post = [copy.deepcopy(mods[p]) for p in chain.post]
        model.set_submodule(path, Conv3dAs2d.from_conv3d(mods[path], bn, post, path))
        for p in ([chain.bn] if chain.bn else []) + chain.post:
            model.set_submodule(p, nn.Identity())
    root = model
    for path, m in list(model.named_modules()):
        new = _rewrite_one(m, path or "<root>")
        if new is None:
            continue
        if path:
            model.set_submodule(path, new)
        else:
            root = new
    return root


def _rewrite_one(m: nn.Module, where: str) -> nn.Module | None:
    """The 2D rewrite of one 3D module left after chain fusion, or None for other modules."""
    if is_plain_conv3d(m):  # shared, called twice, or the root: rewritten without fusion
        return Conv3dAs2d.from_conv3d(m, where=where)
    if is_plain_bn3d(m):
        return BatchNorm3dAs2d(m)
    if type(m) in (nn.MaxPool3d, nn.AvgPool3d):
        return Pool3dAs2d(m, where)
    return None


def _set_contiguous_outputs(model: nn.Module, value: bool) -> None:
    for m in model.modules():
        if isinstance(m, _Batched5D):
            m.contiguous_out = value


def specialise_frames(deploy: nn.Module, example: Tensor) -> None:
    """Record each conv rewrite's input frame count on `example` and drop its zero padding
    (Conv3dAs2d.specialise) where that does not grow the program. The deploy form is static-shape anyway (every converter exports it
    for one clip size), so nothing is lost."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for path, m in deploy.named_modules():
        if isinstance(m, Conv3dAs2d):
            def hook(mod: nn.Module, args: tuple[Any, ...], path: str = path) -> None:
                x = args[0]  # (B, C, T, H, W) or unbatched (C, T, H, W)
                c, t, h, w = x.shape[-4:]
                seen[path] = (int(t), int(c * h * w))
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        _run_eval(deploy, example)
    finally:
        for h in hooks:
            h.remove()
    mods = dict(deploy.named_modules())
    for path, (frames, frame_numel) in seen.items():
        mods[path].specialise(frames, path, frame_numel)


def to_deploy_form(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A new module computing the same function as `model` with 2D ops only (eval mode).

    Raises DeployError (naming module path and op) for a 3D op it cannot rewrite. With
    `example` (a clip batch) it is specialised to the example's frame count, which removes the
    zero frames of temporal padding (`specialise_frames`), checked equal to the reference on it
    (`assert_deploy_equal`),
    exports the deploy form with torch.export on example[:1] and scans that graph for 3D ops left
    by functional calls; the DeployCheck is attached as `.deploy_check`.
    """
    # eval before the rewrite: the fx trace must follow the eval-mode branches of forward.
    deploy = rewrite_modules(copy.deepcopy(model).eval())
    if example is None:
        return deploy
    try:
        specialise_frames(deploy, example[:1])
    except RuntimeError as e:
        if "view size is not compatible" not in str(e):
            raise
        # Some forward calls .view on a rewritten module's output: give it contiguous tensors.
        _set_contiguous_outputs(deploy, True)
        specialise_frames(deploy, example[:1])
    check = assert_deploy_equal(model, deploy, example, _names_for(model))
    verify_2d_only(deploy, example[:1])
    deploy.deploy_check = check
    return deploy


def _names_for(reference: nn.Module) -> tuple[str, ...]:
    from echoedge.model.network import EchoE3Net

    # Other models get out0, out1, ... from check_deploy_equal (no EF semantics assumed).
    return OUTPUT_NAMES if isinstance(reference, EchoE3Net) else ()


# ---------------------------------------------------------------------------- graph scan
_CONV_OPS = ("convolution", "conv3d", "_convolution", "conv_transpose3d", "cudnn_convolution",
             "mkldnn_convolution")
_NORM_OPS = ("batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training",
             "_native_batch_norm_legit", "instance_norm")


def _node_rank(arg: Any) -> int:
    val = getattr(arg, "meta", {}).get("val") if isinstance(arg, torch.fx.Node) else None
    return val.dim() if isinstance(val, Tensor) else -1


def find_3d_ops(model: nn.Module, example: Tensor) -> list[str]:
    """'module path (op)' for every 3D op in the torch.export graph of `model` on `example`."""
    try:
        ep = torch.export.export(model, (example,))
    except Exception as e:  # export raises many kinds; the first line says what it hit
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DeployError(f"torch.export failed on the deploy form ({first[:200]}); the "
                          f"backends need a static, exportable graph") from e
    found = []
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        op = getattr(n.target, "__name__", str(n.target))
        base = op.split(".")[0]
        is_3d = "3d" in base
        if base in _CONV_OPS and len(n.args) > 1 and _node_rank(n.args[1]) == 5:
            is_3d = True
        if base in _NORM_OPS and n.args and _node_rank(n.args[0]) == 5:
            is_3d = True
        if is_3d:
            found.append(f"{_node_module(n)} ({op})")
    return found


def _node_module(n: torch.fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return "<root>"
    path, kind = list(stack.values())[-1]
    kind_name = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return f"{path or '<root>'} [{kind_name}]"


def verify_2d_only(model: nn.Module, example: Tensor) -> None:
    left = find_3d_ops(model, example)
    if left:
        raise DeployError("the deploy form still runs 3D ops (functional calls cannot be swapped "
                          "module-wise): " + "; ".join(left))


# ---------------------------------------------------------------------------- equality
@dataclass(frozen=True)
class DeployCheck:
    """Max |reference - deploy| per output on some clips, against the tolerances used."""

    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    max_abs_ef_diff: float
    passed: bool
    clips: int = 0

    def summary(self) -> str:
        parts = [f"{k} {v:.2e} (tol {self.tolerance[k]:.1e})" for k, v in self.max_abs_diff.items()]
        return f"max |diff| over {self.clips} clip(s): " + ", ".join(parts)


def _as_tuple(out: Any) -> tuple[Tensor, ...]:
    if isinstance(out, Tensor):
        return (out,)
    if isinstance(out, dict):
        return tuple(out.values())
    return tuple(out)


def _run_eval(model: nn.Module, clips: Tensor) -> tuple[Tensor, ...]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return _as_tuple(model(clips))
    finally:
        for m, training in modes.items():
            m.training = training


def check_deploy_equal(reference: nn.Module, deploy: nn.Module, clips: Tensor,
                       output_names: Sequence[str] = OUTPUT_NAMES) -> DeployCheck:
    """Compare both forms (eval mode, no grad) on `clips`.

    Output 0 is EF when `output_names[0] == "ef"` and must agree within EF_TOLERANCE points; every
    other output within RTOL * max(1, max |reference|). Names that do not match the number of
    outputs are replaced by out0, out1, ...
    """
    ref, dep = _run_eval(reference, clips), _run_eval(deploy, clips)
    if len(ref) != len(dep):
        raise DeployError(f"deploy form returns {len(dep)} outputs, the reference {len(ref)}")
    names = tuple(output_names)
    if len(names) != len(ref):
        names = tuple(f"out{i}" for i in range(len(ref)))
    diffs, tols = {}, {}
    for name, r, d in zip(names, ref, dep):
        if r.shape != d.shape:
            raise DeployError(f"output {name}: deploy shape {tuple(d.shape)} != reference "
                              f"{tuple(r.shape)}")
        diffs[name] = (r.double() - d.double()).abs().max().item() if r.numel() else 0.0
        scale = max(1.0, r.abs().max().item()) if r.numel() else 1.0
        tols[name] = EF_TOLERANCE if name == "ef" else RTOL * scale
    passed = all(math.isfinite(diffs[k]) and diffs[k] <= tols[k] for k in names)
    return DeployCheck(diffs, tols, diffs[names[0]], passed, int(clips.shape[0]))


def assert_deploy_equal(reference: nn.Module, deploy: nn.Module, clips: Tensor,
                        output_names: Sequence[str] = OUTPUT_NAMES) -> DeployCheck:
    check = check_deploy_equal(reference, deploy, clips, output_names)
    if not check.passed:
        raise DeployError(f"deploy form differs from the reference: {check.summary()}")
    return check


__all__ = [
    "BatchNorm3dAs2d", "Conv3dAs2d", "DeployCheck", "DeployError", "Pool3dAs2d", "TimeWindow",
    "assert_deploy_equal", "check_deploy_equal", "find_3d_ops", "find_conv_chains",
    "fold_batchnorm", "rewrite_modules", "to_deploy_form", "unsupported_modules",
    "verify_2d_only",
]
