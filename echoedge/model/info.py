"""Parameter and compute accounting of an Echo-E3Net config, stage by stage.

Counting convention: `torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per multiply-add of
convolutions and matrix products (conv, mm, addmm, bmm); element-wise ops, norms, pooling and
softmax are not counted. The paper's "8.05 GFLOPs" almost certainly follows the thop/fvcore
convention of one FLOP per multiply-add, so the paper-comparable figure is the MAC count:
`ModelInfo.macs` ("GFLOPs (1 MAC = 1 FLOP)"), with `ModelInfo.flops` = 2 * MACs beside it.

The count runs on the meta device (no memory, no arithmetic) for one clip at batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from echoedge.model.config import E3NetConfig, get_config
from echoedge.model.network import EchoE3Net, count_parameters

CONVENTION = ("MACs = multiply-adds of conv/matmul ops (FlopCounterMode FLOPs / 2); "
              "the paper's GFLOPs count 1 MAC as 1 FLOP")

PAPER_PARAMS = 1.54e6
PAPER_GFLOPS = 8.05


@dataclass
class StageRow:
    name: str
    output_shape: str
    params: int
    macs: int


@dataclass
class ModelInfo:
    config: str
    input_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int  # 2 FLOPs per multiply-add (FlopCounterMode's own figure)
    convention: str = CONVENTION
    rows: list[StageRow] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def _stages(model: EchoE3Net) -> list[tuple[str, str, nn.Module]]:
    """(display name, module path, module) of each stage, in forward order."""
    out = [("stem", "encoder.stem", model.encoder.stem)]
    out += [(f"cnn{i + 1}", f"encoder.cnn.{i}", m) for i, m in enumerate(model.encoder.cnn)]
    out += [(f"hybrid{i + 1}", f"encoder.hybrid.{i}", m)
            for i, m in enumerate(model.encoder.hybrid)]
    out += [("e2cbd", "cbd", model.cbd), ("e2fa", "fa", model.fa)]
    return out


def _shape_str(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return str(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return " ".join(_shape_str(o) for o in out)
    return type(out).__name__


def model_info(cfg: E3NetConfig | str) -> ModelInfo:
    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        model = EchoE3Net(cfg).eval()
        x = torch.empty(cfg.input_shape(1))
    stages = _stages(model)
    shapes: dict[str, str] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: shapes.__setitem__(n, _shape_str(o)))
             for name, _, m in stages]
    # Not under no_grad: FlopCounterMode's module tracker asserts on grad-less parameter views.
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    rows = [StageRow(name, shapes.get(name, "?"), count_parameters(m),
                     int(sum(counts.get(f"{prefix}.{path}", {}).values())) // 2)
            for name, path, m in stages]
    flops = int(counter.get_total_flops())
    return ModelInfo(config=cfg.name, input_shape=tuple(cfg.input_shape(1)),
                     params=count_parameters(model), macs=flops // 2, flops=flops, rows=rows)


def format_info(info: ModelInfo) -> str:
    """A plain-text table of the stages and totals."""
    w_shape = max([len("output")] + [len(r.output_shape) for r in info.rows])
    lines = [f"Echo-E3Net '{info.config}'  input {info.input_shape}",
             f"{'stage':<9} {'output':<{w_shape}} {'params':>11} {'GMACs':>8}"]
    for r in info.rows:
        lines.append(f"{r.name:<9} {r.output_shape:<{w_shape}} {r.params:>11,} "
                     f"{r.macs / 1e9:>8.3f}")
    lines.append(f"{'total':<9} {'':<{w_shape}} {info.params:>11,} {info.macs / 1e9:>8.3f}")
    lines.append(f"GFLOPs (1 MAC = 1 FLOP, paper-comparable): {info.macs / 1e9:.3f}   "
                 f"GFLOPs (2 FLOPs per MAC): {info.flops / 1e9:.3f}")
    lines.append(f"published Echo-E3Net: {PAPER_PARAMS / 1e6:.2f} M parameters, "
                 f"{PAPER_GFLOPS} GFLOPs")
    lines.append(f"convention: {info.convention}; norms, activations, pooling and softmax "
                 "are not counted")
    return "\n".join(lines)
