"""E2FA: the endocardial feature aggregator (EF, EDV, ESV regression).

Global statistics of the deepest encoder map -- per-channel mean, max and variance over all
(T, H, W) positions -- are fused with the ED and ES landmark embeddings of E2CBD and regressed to
three standardised values z, returned in physical units: EF = ef_mean + ef_scale * z_ef (%), and
likewise EDV, ESV (mL).

Choices where the paper is silent:

- The variance is written out as mean((x - mean)^2) (no torch.var: backends run the explicit form).
- Landmark embeddings enter as their mean over the K landmarks of each phase, (B, D) per phase,
  so the head does not depend on K and keeps phase identity (ED and ES occupy separate slots).
- Fusion: concat [mean, max, var, ED embedding, ES embedding] -> LayerNorm (the statistics differ
  in scale by orders of magnitude) -> Linear -> activation -> dropout -> Linear(3).
- EF is an independent output, not computed from the predicted EDV/ESV: EDV/ESV labels exist only
  for some clips and a ratio of two regressed volumes amplifies their errors. The loss ties EF to
  the geometry instead (`loss.py`: consistency of EF with 100 (V_ed - V_es) / V_ed computed from the
  predicted ED/ES landmarks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from echoedge.model.config import E3NetConfig
from echoedge.model.lhunet import init_linear_, make_activation


def global_stats(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B, 3C): per-channel mean, max and variance over all positions."""
    flat = x.flatten(2)
    mean = flat.mean(dim=2)
    centred = flat - mean.unsqueeze(2)
    var = (centred * centred).mean(dim=2)
    return torch.cat([mean, flat.amax(dim=2), var], dim=1)


class E2FA(nn.Module):
    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        n_in = 3 * cfg.hybrid_widths[-1] + 2 * cfg.cbd_dim
        self.norm = nn.LayerNorm(n_in, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.fa_hidden),
            make_activation(cfg.attn_activation, cfg.leaky_slope),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fa_hidden, 3),
        )
        init_linear_(self)
        self.register_buffer("out_mean", torch.tensor([cfg.ef_mean, cfg.edv_mean, cfg.esv_mean]),
                             persistent=False)
        self.register_buffer("out_scale",
                             torch.tensor([cfg.ef_scale, cfg.edv_scale, cfg.esv_scale]),
                             persistent=False)

    def forward(self, deepest: Tensor, ed_embed: Tensor, es_embed: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        fused = torch.cat([global_stats(deepest), ed_embed.mean(dim=1), es_embed.mean(dim=1)],
                          dim=1)
        out = self.mlp(self.norm(fused)) * self.out_scale + self.out_mean  # (B, 3)
        return out[:, 0], out[:, 1], out[:, 2]
