"""Echo-E3Net: LHU-Net-style encoder -> E2CBD (ED/ES landmarks) -> E2FA (EF, EDV, ESV).

`EchoE3Net.forward(x)` takes x of shape (B, C, T, H, W), float32, normalised as the model's
ClipSpec says, and returns the fixed tuple

    OUTPUT_NAMES = ("ef", "edv", "esv", "ed_landmarks", "es_landmarks")

ef (B,) in %, edv and esv (B,) in mL, landmarks (B, 42, 2) in [0, 1] as (x/W, y/H) in the
canonical order of `echoedge.data.landmarks`. Shapes are static and forward has no data-dependent
control flow; input checking is `check_input`, called by callers (not inside forward, so the
exported graph stays free of it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from echoedge.errors import ShapeError
from echoedge.model.config import E3NetConfig, get_config
from echoedge.model.e2cbd import E2CBD
from echoedge.model.e2fa import E2FA
from echoedge.model.lhunet import LHUNetEncoder

OUTPUT_NAMES = ("ef", "edv", "esv", "ed_landmarks", "es_landmarks")


class EchoE3Net(nn.Module):
    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = LHUNetEncoder(cfg)
        self.cbd = E2CBD(cfg)
        self.fa = E2FA(cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        feats = self.encoder(x)
        ed_xy, es_xy, ed_emb, es_emb = self.cbd(feats)
        ef, edv, esv = self.fa(feats[-1], ed_emb, es_emb)
        return ef, edv, esv, ed_xy, es_xy


def build_model(cfg_or_name: E3NetConfig | str) -> EchoE3Net:
    cfg = get_config(cfg_or_name) if isinstance(cfg_or_name, str) else cfg_or_name
    return EchoE3Net(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_input(x: object, cfg: E3NetConfig) -> None:
    """Raise ShapeError unless x is a float32 (B, C, T, H, W) tensor matching the config."""
    want = f"(B, {cfg.channels}, {cfg.frames}, {cfg.height}, {cfg.width}) float32"
    if not isinstance(x, Tensor):
        raise ShapeError(f"model '{cfg.name}' expects a tensor {want}, got {type(x).__name__}")
    ok = (
        x.dim() == 5
        and x.shape[0] >= 1
        and tuple(x.shape[1:]) == (cfg.channels, cfg.frames, cfg.height, cfg.width)
        and x.dtype == torch.float32
    )
    if not ok:
        raise ShapeError(f"model '{cfg.name}' expects input {want}, got "
                         f"{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}")
