"""BatchNorm3d and MaxPool3d / AvgPool3d / global adaptive pools as 2D counterparts on frames.

A BatchNorm3d that no Conv3d absorbs becomes a BatchNorm2d on the folded frames; a 3D pool reduces
each time group with `maximum` / `add` of step-1 slices, then pools in 2D; a global pool
(AdaptiveAvgPool3d / AdaptiveMaxPool3d to (1, 1, 1)) is the same with the whole clip as one
window (echoedge.model.deploy).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echoedge.model.deploy_frames import (
    Batched5D, DeployError, TimeWindow, from_frames, split_taps, to_frames,
)


# ---------------------------------------------------------------------------- batch norm
class BatchNorm3dAs2d(Batched5D):
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
class Pool3dAs2d(Batched5D):
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


class GlobalPool3dAs2d(Batched5D):
    """AdaptiveAvgPool3d / AdaptiveMaxPool3d to (1, 1, 1): the mean / max over (T, H, W).

    Time first, as Pool3dAs2d does with a window of all T frames (one block, T step-1 slices
    joined by `add` / `maximum`: reductions such as mean and amax are not delegated on
    ExecuTorch, element-wise ops are), then a 2D pool whose kernel is the whole frame (global
    average / max pooling, which every backend delegates). The kernel is read from the input's
    shape, which the exported, static-shape program fixes.
    """

    def __init__(self, pool: nn.AdaptiveAvgPool3d | nn.AdaptiveMaxPool3d, where: str) -> None:
        super().__init__()
        check_global_pool3d(pool, where)
        self.is_max = isinstance(pool, nn.AdaptiveMaxPool3d)

    def forward5d(self, x: Tensor) -> Tensor:
        x3, (b, c, t, h, w) = to_frames(x)
        # Python ints: the TorchScript tracer (ONNX export) hands sizes over as tensors, and the
        # window and kernel are static facts of the exported shape.
        t, h, w = int(t), int(h), int(w)
        taps = split_taps(x3, TimeWindow(t, t), 1)
        y = taps[0]
        for xi in taps[1:]:
            y = torch.maximum(y, xi) if self.is_max else y + xi
        if not self.is_max and t > 1:
            y = y * (1.0 / t)
        y = y.reshape(b, c, h, w)
        y = F.max_pool2d(y, (h, w)) if self.is_max else F.avg_pool2d(y, (h, w))
        return from_frames(y, b, 1, self.contiguous_out)


def check_global_pool3d(pool: nn.Module, where: str) -> None:
    op = type(pool).__name__
    size = pool.output_size
    sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * 3
    if sizes != (1, 1, 1):
        raise DeployError(f"{where} ({op}): output size {size} has no 2D rewrite here (only the "
                          f"global pool to (1, 1, 1))")
    if getattr(pool, "return_indices", False):
        raise DeployError(f"{where} ({op}): return_indices has no 2D rewrite")


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


__all__ = ["BatchNorm3dAs2d", "GlobalPool3dAs2d", "Pool3dAs2d", "check_global_pool3d"]
