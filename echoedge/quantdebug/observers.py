"""The int8 recipe's observer ranges: computed in one place, reused wherever a simulation calibrates.

`prepare_recipe` is the PT2E flow of the ExecuTorch converter up to calibration (torch.export at
batch 1 -> the recipe's XNNPACK quantizer, optionally with units kept float -> prepare_pt2e);
`calibrate` feeds it clips one at a time, as the program will run. An observer's statistics are
its (min_val, max_val), keyed by the name of the graph node it observes (`observers`): the
exported graph's node names are the same for every export of one module, and a configuration
with units kept float observes a subset of these tensors.

Two shortcuts rest on that, both exact, both tested against calibrating directly:

- **Once per sweep** (`observer_stats`, `load_observer_stats`). Observers see float activations
  during calibration, so the ranges of a unit do not depend on which other units are quantized:
  the whole recipe is calibrated once and every keep-float configuration's observers are filled
  from it (`simulate.simulate_int8(stats=...)`, the sensitivity sweep and the budget search).
- **Once per clip** (`RangeCache`). The recipe's observers are min/max (MinMaxObserver, per
  tensor; weights PerChannelMinMaxObserver), and during calibration an observer only records, so
  the ranges after calibrating on a set S are exactly the element-wise min/max over S of each
  clip's own ranges (`merge_stats`). The cache runs each distinct clip through one prepared model
  once and builds the converted model of any set from those: calibration costs one forward per
  distinct clip however many sets share it (the calibration-stability study). With any other
  observer kind the cache declines (`exact` False) and the caller calibrates every set from scratch.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Hashable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

Stats = dict[str, dict[str, Any]]  # observed node name -> {"min_val": tensor, "max_val": tensor}


def prepare_recipe(deploy: Any, example: np.ndarray, keep_float: Sequence[str] = (),
                   recipe: str | None = None) -> Any:
    """The deploy form exported at batch 1 with the recipe's observers inserted (uncalibrated).

    `example` is any clip batch (its first clip is the export example); `keep_float` names module
    paths kept float on top of the recipe (`echoedge.convert.executorch_quantizer.quantizer_for`);
    `recipe` is the int8 recipe's name (None: the converters' default).
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from echoedge.convert.executorch_quantizer import quantizer_for
    from echoedge.convert.int8_recipe import DEFAULT_RECIPE

    x = (torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)),)
    deploy.eval()
    with torch.no_grad():
        ep = torch.export.export(deploy, x)
        quantizer, _ = quantizer_for(deploy, keep_float=keep_float, recipe=recipe or DEFAULT_RECIPE)
        return prepare_pt2e(ep.module(), quantizer)


def calibrate(prepared: Any, clips: np.ndarray, progress: bool = False,
              description: str = "calibrating (simulation)") -> None:
    """Run the calibration clips (N, C, T, H, W) through a prepared graph, one clip at a time."""
    import torch
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(clips))
        for clip in clips:
            prepared(torch.from_numpy(np.ascontiguousarray(clip[None], dtype=np.float32)))
            bar.advance(task)


def observers(prepared: Any) -> dict[str, Any]:
    """observed node name -> observer module of a PT2E-prepared graph."""
    out = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.args and hasattr(node.args[0], "name"):
            mod = prepared.get_submodule(node.target)
            if hasattr(mod, "min_val") and hasattr(mod, "max_val"):
                out[node.args[0].name] = mod
    return out


def read_stats(obs: dict[str, Any]) -> Stats:
    """A copy of the current (min_val, max_val) of each observer of `observers(prepared)`."""
    return {name: {"min_val": o.min_val.detach().clone(), "max_val": o.max_val.detach().clone()}
            for name, o in obs.items()}


def observer_stats(deploy: Any, clips: np.ndarray, progress: bool = False) -> Stats:
    """Calibrate the whole int8 recipe once; the min/max of every observer, by observed node name."""
    import torch

    clips = np.asarray(clips)
    prepared = prepare_recipe(deploy, clips)
    with torch.no_grad():
        calibrate(prepared, clips, progress)
    return read_stats(observers(prepared))


def load_observer_stats(prepared: Any, stats: Stats) -> bool:
    """Fill a prepared graph's observers from `observer_stats`; False (nothing changed) when one
    of them has no recorded statistics (the caller then calibrates)."""
    obs = observers(prepared)
    if any(name not in stats for name in obs):
        return False
    for name, o in obs.items():
        o.min_val = stats[name]["min_val"].clone()
        o.max_val = stats[name]["max_val"].clone()
    return True


def merge_stats(parts: Sequence[Stats]) -> Stats:
    """The statistics min/max observers would hold after seeing every part's data: element-wise
    min of the minima and max of the maxima, observer by observer."""
    import torch

    return {name: {"min_val": torch.stack([p[name]["min_val"] for p in parts]).amin(dim=0),
                   "max_val": torch.stack([p[name]["max_val"] for p in parts]).amax(dim=0)}
            for name in parts[0]}


class RangeCache:
    """Per-clip observer ranges of one prepared PT2E model; converts any clip set from them.

    Exact for min/max observers only (see the module docstring): `exact` is False otherwise and
    `convert` then refuses, so the caller calibrates from scratch instead.
    """

    def __init__(self, prepared: Any) -> None:
        from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver

        self.prepared = prepared
        self.observers = observers(prepared)
        self.exact = True
        self.inexact_kind: str | None = None
        for _, m in prepared.named_modules():
            # Exact types: a subclass (e.g. a moving average) may update differently.
            if hasattr(m, "calculate_qparams") and type(m) not in (MinMaxObserver, PerChannelMinMaxObserver):
                self.exact, self.inexact_kind = False, type(m).__name__
        self.ranges: dict[Hashable, Stats] = {}
        self.forward_s = 0.0

    def __contains__(self, key: Hashable) -> bool:
        return key in self.ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def add(self, key: Hashable, clip: np.ndarray) -> None:
        """Run one clip (C, T, H, W) through the prepared model; keep every observer's range."""
        import torch

        if key in self.ranges or not self.exact:
            return
        for m in self.observers.values():
            m.reset_min_max_vals()
        t0 = time.perf_counter()
        with torch.no_grad():
            self.prepared(torch.from_numpy(np.ascontiguousarray(clip[None], dtype=np.float32)))
        self.forward_s += time.perf_counter() - t0
        self.ranges[key] = read_stats(self.observers)

    def convert(self, keys: Sequence[Hashable]) -> Any:
        """The converted (q/dq) model calibrated on exactly these clips."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        if not self.exact:
            raise EchoEdgeError(f"per-clip ranges are not exact for {self.inexact_kind} observers")
        missing = [k for k in keys if k not in self.ranges]
        if missing or not keys:
            raise EchoEdgeError(f"range cache: {len(missing)} of {len(keys)} clips not observed")
        model = copy.deepcopy(self.prepared)
        load_observer_stats(model, merge_stats([self.ranges[k] for k in keys]))
        return convert_pt2e(model)


__all__ = ["RangeCache", "Stats", "calibrate", "load_observer_stats", "merge_stats", "observer_stats",
           "observers", "prepare_recipe", "read_stats"]
