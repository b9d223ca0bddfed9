"""The frame layout every 2D rewrite of the deploy form works on, and the deploy form's error.

A (B, C, T, H, W) tensor is read as frames, (B, T, C*H*W); a `TimeWindow` says which input frames
each output frame reads, and its taps are step-1 slices of that view or of its block view. Rewrites
hand their output back as a permuted view (`from_frames`). Why this layout: echoedge.model.deploy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from echoedge.errors import EchoEdgeError


class DeployError(EchoEdgeError):
    """The model holds an op the deploy form cannot rewrite into 2D ops, or the two forms differ."""


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

    def zero_frames(self, t: int) -> int:
        """How many zero frames `block_view` concatenates for t input frames: the padding, and
        for a stride > 1 the extension to whole blocks."""
        padded = t + self.pad_before + self.pad_after
        if self.stride == 1:
            return padded - t
        blocks = self.out_frames(t) + (self.dilation * (self.kernel - 1)) // self.stride
        return padded - t + max(0, blocks * self.stride - padded)

    @property
    def blocks_are_windows(self) -> bool:
        """Each block of `stride` frames is exactly one window (no slicing needed)."""
        return self.stride == self.kernel and self.dilation == 1


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
    tap of every window is a step-1 slice (block q..q+t_out, slot r), whatever the stride,
    kernel and dilation: tap offset o of output frame t reads padded frame t*stride + o, which is
    block t + o // stride, slot o % stride. Frames past the last block no window reads are cut
    off (a step-1 slice); when the frames run out before the last block (T + padding not a
    multiple of the stride), the block view is zero-extended by concat."""
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


def block_slot(first: int, n: int, stride: int, frames: int) -> int | None:
    """A slot r such that frames first, first + stride, ... (n of them) are slot r of the n
    blocks of frames [first - r, first - r + n*stride), all inside [0, frames); None if none."""
    lo, hi = max(0, first + n * stride - frames), min(first, stride - 1)
    return lo if lo <= hi else None


def frames_every(x3: Tensor, first: int, n: int, stride: int) -> Tensor:
    """Frames first, first + stride, ... (n of them) of a (B, T, F) view, by step-1 slices only:
    a run of n*stride real frames viewed as n blocks, one slot of each (no zero frames)."""
    if stride == 1:
        return x3[:, first:first + n]
    if n == 1:
        return x3[:, first:first + 1]
    b, t, f = x3.shape
    r = block_slot(first, n, stride, t)
    if r is None:  # Conv3dAs2d.specialise checks every run first
        raise DeployError(f"frames {first}, +{stride}, ... ({n}) do not fit {t} frames as blocks")
    xb = x3[:, first - r:first - r + n * stride].reshape(b, n, stride * f)
    return xb[:, :, r * f:(r + 1) * f]


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


class Batched5D(nn.Module):
    """Accepts unbatched (C, T, H, W) input as the 3D modules do."""

    contiguous_out: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self.forward5d(x.unsqueeze(0)).squeeze(0)
        return self.forward5d(x)

    def forward5d(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = [
    "Batched5D", "DeployError", "TimeWindow", "block_slot", "block_view", "frames_every", "from_frames",
    "pad_frames", "split_taps", "stacked_taps", "tap", "to_frames",
]
