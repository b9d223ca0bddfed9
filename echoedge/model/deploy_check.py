"""Checks on a deploy form: equal to its reference on clips, and no 3D op left in its graph.

`check_deploy_equal` / `assert_deploy_equal`: EF within EF_TOLERANCE points, every other output
within RTOL times its scale. `find_3d_ops` / `verify_2d_only` scan the torch.export graph for 3D
ops that functional calls left behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from echoedge.model.deploy_frames import DeployError
from echoedge.model.network import OUTPUT_NAMES

EF_TOLERANCE = 1e-3  # EF points
RTOL = 1e-4  # other outputs: relative to max(1, max |reference|)


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


def run_eval(model: nn.Module, clips: Tensor) -> tuple[Tensor, ...]:
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
    ref, dep = run_eval(reference, clips), run_eval(deploy, clips)
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
    "DeployCheck", "EF_TOLERANCE", "RTOL", "assert_deploy_equal", "check_deploy_equal",
    "find_3d_ops", "run_eval", "verify_2d_only",
]
