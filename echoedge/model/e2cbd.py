"""E2CBD: the dual-phase endocardial border detector.

Learned landmark queries for end-diastole and end-systole cross-attend to a multi-scale token set
built from the encoder's skip features; each phase returns K = 42 landmark coordinates in [0, 1]
(x/W, y/H, the convention of `echoedge.data.landmarks`) and K phase-aware landmark embeddings.

Choices where the paper is silent (all in E3NetConfig):

- Token set: encoder stages `cbd_scales` are average-pooled with kernel == stride down to at most
  `cbd_token_grid` (T, H, W), projected by a 1x1x1 conv to `cbd_dim` (pool first: the two commute
  and pooling first is cheaper), given a factorised learned position embedding (time + row +
  column, one set per scale, plus a per-scale embedding), flattened and concatenated. `paper`:
  stages CNN2, H1, H2, H3 -> 392 + 392 + 196 + 98 = 1078 tokens of width 64.
- Per phase, `cbd_layers` pre-norm decoder layers: cross-attention to the tokens, self-attention
  among that phase's queries (a shape prior: the 42 points of one border see each other), MLP.
  "Phase-specific" means ED and ES have separate queries, attention weights and coordinate heads;
  they share only the token set.
- Coordinates: Linear(cbd_dim, 2) -> sigmoid on the final normed query; the embeddings passed to
  E2FA are those normed queries.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from echoedge.model.config import E3NetConfig
from echoedge.model.lhunet import attend, init_linear_, make_activation, merge_heads, split_heads


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with per-head rank-3 tensors; queries and keys from any source."""

    def __init__(self, dim: int, heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_dropout)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q = split_heads(self.q(x), self.heads)
        k = split_heads(self.k(context), self.heads)
        v = split_heads(self.v(context), self.heads)
        return self.out(merge_heads(attend(q, k, v, self.scale, self.attn_drop), self.heads))


class QueryDecoderLayer(nn.Module):
    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        d = cfg.cbd_dim
        self.norm_cross = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.cross = MultiHeadAttention(d, cfg.cbd_heads, cfg.attn_dropout)
        self.norm_self = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.self_attn = MultiHeadAttention(d, cfg.cbd_heads, cfg.attn_dropout)
        self.norm_mlp = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.cbd_mlp_ratio * d),
            make_activation(cfg.attn_activation, cfg.leaky_slope),
            nn.Linear(cfg.cbd_mlp_ratio * d, d),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, q: Tensor, tokens: Tensor) -> Tensor:
        q = q + self.drop(self.cross(self.norm_cross(q), tokens))
        h = self.norm_self(q)
        q = q + self.drop(self.self_attn(h, h))
        return q + self.drop(self.mlp(self.norm_mlp(q)))


class PhaseDecoder(nn.Module):
    """One cardiac phase: K learned queries -> (coordinates (B,K,2), embeddings (B,K,D))."""

    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.empty(1, cfg.num_landmarks, cfg.cbd_dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.layers = nn.ModuleList(QueryDecoderLayer(cfg) for _ in range(cfg.cbd_layers))
        self.norm = nn.LayerNorm(cfg.cbd_dim, eps=cfg.norm_eps)
        self.coords = nn.Linear(cfg.cbd_dim, 2)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        q = self.queries.expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, tokens)
        emb = self.norm(q)
        return torch.sigmoid(self.coords(emb)), emb


class ScaleTokens(nn.Module):
    """One encoder scale -> (B, N_s, D): pool (kernel == stride), 1x1x1 projection, position."""

    def __init__(self, cfg: E3NetConfig, scale: int) -> None:
        super().__init__()
        d = cfg.cbd_dim
        pool = cfg.cbd_pool(scale)
        shape = cfg.stage_shapes()[scale]
        t, h, w = (n // p for n, p in zip(shape, pool))
        self.pool = nn.AvgPool3d(pool, pool) if max(pool) > 1 else nn.Identity()
        self.proj = nn.Conv3d(cfg.stage_widths()[scale], d, 1)
        # Factorised position (time + row + column) plus a per-scale offset: a few hundred
        # parameters instead of one vector per token.
        self.pos_t = nn.Parameter(torch.zeros(1, d, t, 1, 1))
        self.pos_h = nn.Parameter(torch.zeros(1, d, 1, h, 1))
        self.pos_w = nn.Parameter(torch.zeros(1, d, 1, 1, w))
        self.pos_scale = nn.Parameter(torch.zeros(1, d, 1, 1, 1))
        for p in (self.pos_t, self.pos_h, self.pos_w, self.pos_scale):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(self.pool(x)) + self.pos_t + self.pos_h + self.pos_w + self.pos_scale
        return y.flatten(2).transpose(1, 2)


class E2CBD(nn.Module):
    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        self.scales = tuple(cfg.cbd_scales)
        self.scale_tokens = nn.ModuleList(ScaleTokens(cfg, s) for s in self.scales)
        self.token_norm = nn.LayerNorm(cfg.cbd_dim, eps=cfg.norm_eps)
        self.ed = PhaseDecoder(cfg)
        self.es = PhaseDecoder(cfg)
        init_linear_(self)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> ed_landmarks, es_landmarks (B,K,2) in [0,1]; ed_embed, es_embed (B,K,D)."""
        tokens = torch.cat([m(feats[s]) for m, s in zip(self.scale_tokens, self.scales)], dim=1)
        tokens = self.token_norm(tokens)
        ed_xy, ed_emb = self.ed(tokens)
        es_xy, es_emb = self.es(tokens)
        return ed_xy, es_xy, ed_emb, es_emb
