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
  step-1 slice.
- Conv3d, any other temporal stride s (overlapping strided windows, e.g. R(2+1)D's kernel 3,
  stride 2, padding 1 in time): the same block view, zero-extended by concat when T plus padding
  is not whole blocks; tap offset o of output frame t is frame t*s + o, i.e. block t + o // s,
  slot o % s, so each tap is a step-1 slice (block offset, in-block position) and the taps are
  stacked (or summed) as for stride 1 -- never a strided slice, never `F.pad`. Specialised to an
  example, each tap's frames over a run of output frames are one slot of a block view of that
  run's own real frames, so the zero frames go as they do for stride 1 (same size rule).
- BatchNorm3d fed only by a Conv3d (found on the torch.fx graph, or inside an nn.Sequential when
  the model does not trace) is folded into that conv's weight and bias with its running
  statistics; element-wise activations fed only by such a conv are applied inside the rewrite.
  Any other BatchNorm3d becomes a BatchNorm2d on the folded frames -- the same per-channel
  statistics over the same (B, T, H, W) elements.
- MaxPool3d / AvgPool3d with temporal kernel == temporal stride (or kernel 1): the time group is
  reduced with `maximum` / `add` of step-1 slices of the block view (toolchain.md: reductions such
  as amax/mean are not delegated on ExecuTorch; element-wise ops are), then MaxPool2d / AvgPool2d
  does the spatial window. Temporal padding, dilation, ceil_mode growth or return_indices raise.
- AdaptiveAvgPool3d / AdaptiveMaxPool3d to (1, 1, 1) (video classifiers' global pool): all T
  frames as one window of the block view, joined with `add` / `maximum` (and a 1/T scale), then
  a 2D average / max pool whose kernel is the whole frame.
- torchvision's residual blocks (Conv -> BN -> in-place ReLU chains, `out += identity`, a 1x1x1
  stride-2 Conv3d + BatchNorm3d shortcut) need nothing of their own: the chains fuse, the
  in-place add and ReLU act on the rewrites' outputs, which are the model's own tensors.
- Any other 3D-specific module (ConvTranspose3d, other adaptive or LP pooling, InstanceNorm3d, 3D
  padding, Conv3d subclasses whose forward is unknown) raises DeployError naming the module path
  and op. Functional calls (`F.conv3d` inside a forward) cannot be swapped module-wise, so when an
  example is given the deploy form is exported with `torch.export` and its graph scanned; a 3D op
  left there raises DeployError naming the node's module.

Layout: each rewrite returns its output as a permuted *view* (logical (B, C, T, H, W), memory
(B, T, C, H, W)), so the next rewrite's permute and fold are free in eager mode and the exported
graph holds back-to-back permute pairs. XNNPACK cancels neither those nor the views around them
(it transposes to NCHW before every view), so the ExecuTorch converter runs
`deploy_layout.frames_stay_4d` on the exported graph first: frames then stay 4D from conv to
conv, time slices and tap concats included. Code that calls
`.view` on such an output would fail; `to_deploy_form` then (with an example) falls back to
contiguous outputs.

Equality: `check_deploy_equal` / `assert_deploy_equal` compare the two forms on clips; EF must
agree within 1e-3 points, every other output within float rounding (`RTOL` times the output's
scale, the scale being max(1, max |reference value|)).

Modules: this one builds the deploy form (`to_deploy_form`: rewrite, specialise, check);
`deploy_frames` holds the frame layout and temporal windows, `deploy_conv` the Conv3d rewrite,
`deploy_bn_pool` the BatchNorm3d and pooling rewrites (global pools included), `deploy_chains` what fuses into a conv,
`deploy_check` the equality check and the graph scan, `deploy_layout` the 4D frames pass over
the exported graph.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from echoedge.model.deploy_bn_pool import (
    BatchNorm3dAs2d, GlobalPool3dAs2d, Pool3dAs2d, check_global_pool3d,
)
from echoedge.model.deploy_chains import find_conv_chains, is_plain_bn3d, is_plain_conv3d
from echoedge.model.deploy_check import assert_deploy_equal, run_eval, verify_2d_only
from echoedge.model.deploy_conv import Conv3dAs2d, check_conv3d
from echoedge.model.deploy_frames import Batched5D, DeployError
from echoedge.model.network import OUTPUT_NAMES

# 3D modules that are the identity in eval mode.
_PASSTHROUGH_3D = (nn.Dropout3d,)
# Rewritten when they pool to (1, 1, 1): the global pool of video classifiers' heads.
_GLOBAL_POOLS = (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)


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
                check_conv3d(m, where)
            except DeployError as e:
                bad.append(str(e))
        elif type(m) in (nn.MaxPool3d, nn.AvgPool3d):
            try:
                Pool3dAs2d(m, where)
            except DeployError as e:
                bad.append(str(e))
        elif type(m) in _GLOBAL_POOLS:
            try:
                check_global_pool3d(m, where)
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
    if type(m) in _GLOBAL_POOLS:
        return GlobalPool3dAs2d(m, where)
    return None


def _set_contiguous_outputs(model: nn.Module, value: bool) -> None:
    for m in model.modules():
        if isinstance(m, Batched5D):
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
        run_eval(deploy, example)
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


__all__ = [
    "DeployError", "rewrite_modules", "specialise_frames", "to_deploy_form", "unsupported_modules",
]
