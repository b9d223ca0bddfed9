"""Conv3d as Conv2d on frames (`Conv3dAs2d`), a following BatchNorm3d folded into its weights.

The rewrites are described in echoedge.model.deploy's docstring; `Conv3dAs2d.specialise` drops
the zero frames of temporal padding once the input frame count is known.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from echoedge.model.deploy_frames import (
    Batched5D, DeployError, TimeWindow, block_slot, frames_every, from_frames, split_taps,
    stacked_taps, to_frames,
)


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


class Conv3dAs2d(Batched5D):
    """An exact Conv3d made of Conv2d on frames (see echoedge.model.deploy's docstring)."""

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
        check_conv3d(conv, where)
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

        Overlapping strided windows (stride > 1, kernel != stride) are specialised the same way,
        which also drops the zero frames that extend the block view to whole blocks: a tap's
        frames over a run (every stride-th frame) are one slot of a block view of that run's
        own real frames (`frames_every`). The kernel == stride and kernel-1 paths stay as they
        are (measured on every backend).
        """
        win = self.window
        general = win.stride > 1 and win.kernel > 1 and not win.blocks_are_windows
        if (win.stride != 1 and not general) or win.zero_frames(frames) == 0:
            return  # no zeros are made, or a path kept as measured: nothing to specialise
        runs = _tap_runs(win, frames)
        if runs is None:  # an output frame would read padding only: keep the zero-padded form
            return
        if general and not self._runs_fit_blocks(runs, frames):
            return  # a tap's frames do not fit one block view of real frames: keep the zeros
        if self.stacked and frame_numel is not None:
            # Boundary runs of a stacked conv carry their own slice of the weight. Where those
            # copies outweigh the zero frames they replace (deep stages: few frames, many
            # channels), the zero-padded form is the smaller program: keep it.
            full = self.convs[0]
            per_tap = full.weight.numel() // win.kernel
            extra = sum((b - a + 1) * per_tap for a, b in {(a, b) for *_, a, b in runs}
                        if (a, b) != (0, win.kernel - 1))
            if extra > win.zero_frames(frames) * frame_numel:
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

    def _first(self, t: int, i: int) -> int:
        """The input frame that tap i of output frame t reads (negative: padding)."""
        win = self.window
        return t * win.stride - win.pad_before + i * win.dilation

    def _runs_fit_blocks(self, runs: list[tuple[int, int, int, int]], frames: int) -> bool:
        """Every tap's frames over its run (stacked) or span (per tap) are one block slot."""
        spans = ([(t0, t1, i) for t0, t1, a, z in runs for i in range(a, z + 1)] if self.stacked
                 else [(lo, hi, i) for i, (lo, hi) in tap_spans(runs).items()])
        return all(block_slot(self._first(lo, i), hi - lo, self.window.stride, frames) is not None
                   for lo, hi, i in spans)

    def _forward_runs(self, x3: Tensor, b: int, c: int, h: int, w: int) -> Tensor:
        win = self.window
        parts = []
        per_tap = None if self.stacked else self._tap_outputs(x3, b, c, h, w)
        for t0, t1, a, z in self.runs:
            n = t1 - t0
            if self.stacked:
                taps = [frames_every(x3, self._first(t0, i), n, win.stride)
                        for i in range(a, z + 1)]
                conv = self.convs[0] if (a, z) == (0, win.kernel - 1) else self.run_convs[f"{a}_{z}"]
                xs = taps[0] if len(taps) == 1 else torch.cat(taps, dim=2)
                y = conv(xs.reshape(b * n, len(taps) * c, h, w))
            else:
                y = None
                for i in range(a, z + 1):
                    first, yi = per_tap[i]
                    yi = yi[:, t0 - first:t1 - first]
                    yi = yi.reshape(b * n, *yi.shape[2:])
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

    def _tap_outputs(self, x3: Tensor, b: int, c: int, h: int, w: int) -> dict[int, tuple[int, Tensor]]:
        """Per tap: (first output frame, the tap's conv over every output frame that reads it).

        Each tap's conv runs once, over the contiguous range of output frames whose window reads
        a real frame through that tap, and the runs slice what they need (step-1 slices of the
        output). Calling one conv module once per run instead would share its weight between
        call sites, and PT2E quantizers annotate only the first site: the others stayed float
        in the int8 programs (and XNNPACK rejected an int8 conv whose shared bias stayed float).
        """
        win = self.window
        out = {}
        for i, (lo, hi) in sorted(tap_spans(self.runs).items()):
            n = hi - lo
            xi = frames_every(x3, self._first(lo, i), n, win.stride)
            y = self.convs[i](xi.reshape(b * n, c, h, w))
            out[i] = (lo, y.reshape(b, n, *y.shape[1:]))
        return out

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


def tap_spans(runs: Sequence[tuple[int, int, int, int]]) -> dict[int, tuple[int, int]]:
    """Per tap: the output frames [lo, hi) of the runs that read it (contiguous: see _tap_runs)."""
    span: dict[int, tuple[int, int]] = {}
    for t0, t1, a, z in runs:
        for i in range(a, z + 1):
            lo, hi = span.get(i, (t0, t1))
            span[i] = (min(lo, t0), max(hi, t1))
    return span


def _tap_runs(win: TimeWindow, frames: int) -> list[tuple[int, int, int, int]] | None:
    """Runs (t0, t1, a, b) of output frames whose real-frame taps are a..b.

    Taps of a window are evenly spaced, so the ones inside [0, frames) are always a contiguous
    range; None when some output frame has none.
    """
    runs: list[tuple[int, int, int, int]] = []
    for t in range(win.out_frames(frames)):
        idx = [t * win.stride - win.pad_before + i * win.dilation for i in range(win.kernel)]
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


def check_conv3d(conv: nn.Conv3d, where: str) -> None:
    if conv.padding_mode != "zeros":
        raise DeployError(f"{where}: Conv3d with padding_mode={conv.padding_mode!r} has no 2D "
                          f"rewrite here (only zero padding)")
    # Any temporal kernel, stride, dilation and zero padding has a rewrite (deploy_frames).


__all__ = ["Conv3dAs2d", "check_conv3d", "fold_batchnorm"]
