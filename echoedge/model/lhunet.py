"""The LHU-Net-style encoder of Echo-E3Net, written with 3D ops (the reference form).

Layout (Sadegheih et al. 2024, xmindflow/LHUNet, encoder half only):

    stem      1x1x1 conv -> BN -> act
    CNN i     residual block (conv-BN-act-conv-BN + skip, act) at the input resolution,
              then MaxPool3d with kernel == stride
    hybrid i  down: conv-BN-act, temporal kernel == temporal stride (never overlapping in time)
              x = x + g1 * LKA(x) + g2 * TokenAttention(x)     (g1, g2: per-channel layer scales)
              x = residual block(x)

Choices where LHU-Net or the paper are silent, or where LHU-Net cannot be followed:

- LKA = 1x1 -> GELU(tanh) -> gate u * 1x1(conv3x3x3(dilated dw(dw(u)))) -> 1x1, as LHU-Net's
  `DLKA3D_Block_onTensor` but with the CUDA-only deformable 3x3x3 conv replaced by a plain one, and
  without the block's own shortcut (the stage adds the residual once, for both branches).
- The attention branches are added to x (LHU-Net's "parallel" block multiplies, x * (1 + ...));
  the additive form with layer scales starting at `layer_scale_init` keeps the stage an identity
  plus small corrections at initialisation.
- Spatial (Linformer-like) attention: keys and values share one learned N -> P projection (LHU-Net's
  E = F), logits scaled by 1/sqrt(d) (LHU-Net normalises the query over tokens instead; the plain
  scaling is the form every backend runs without an extra norm). N is fixed by the static input
  shape, so these weights belong to one input size.
- Channel (cross-covariance) attention: queries and keys L2-normalised over tokens with an explicit
  rsqrt, a learned per-head temperature, softmax over channels (XCiT / LHU-Net).
- Both token attentions: learned (N, C) position embedding, pre-LayerNorm, LayerNorm on the
  attention output (LHU-Net `use_norm=True`), output Linear, dropout.
- Attention is always softmax(Q K^T) V on per-head 3D tensors (B*heads, N, d); no
  scaled_dot_product_attention (decomposes into undelegated ops on ExecuTorch; 4D head tensors
  break onnx2tf).

The shared attention helpers (`make_activation`, `split_heads`, `merge_heads`, `attend`) live here
and are reused by E2CBD.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from echoedge.model.config import E3NetConfig


# ---------------------------------------------------------------------------- shared helpers
def make_activation(name: str, leaky_slope: float = 0.01) -> nn.Module:
    """Only activations every mobile backend runs; GELU is always the tanh form (erf GELU becomes a
    TensorFlow Flex op through onnx2tf)."""
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    if name == "hardswish":
        return nn.Hardswish()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unsupported activation {name!r}")


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, C) -> (B*heads, N, C/heads): rank-3 tensors for every attention matmul."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3).reshape(b * heads, n, c // heads)


def merge_heads(x: Tensor, heads: int) -> Tensor:
    """(B*heads, N, d) -> (B, N, heads*d)."""
    bh, n, d = x.shape
    b = bh // heads
    return x.reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, heads * d)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout: nn.Module) -> Tensor:
    """softmax(q k^T * scale) v on (B*heads, Nq, d), (B*heads, Nk, d), (B*heads, Nk, d)."""
    attn = torch.softmax(torch.bmm(q * scale, k.transpose(1, 2)), dim=-1)
    return torch.bmm(dropout(attn), v)


def tokens_of(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B, T*H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def init_linear_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------- conv blocks
class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel, stride, padding, act: nn.Module) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm3d(cout),
            act,
        )


class ResidualBlock(nn.Module):
    """conv-BN-act-conv-BN plus a (1x1x1 conv-BN when widths differ) skip, then act (MONAI's
    UnetResBlock, as LHU-Net uses). Stride 1, odd kernel, 'same' zero padding."""

    def __init__(self, cin: int, cout: int, kernel: int, cfg: E3NetConfig) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv3d(cin, cout, kernel, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.act1 = make_activation(cfg.activation, cfg.leaky_slope)
        self.conv2 = nn.Conv3d(cout, cout, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.skip = (
            nn.Identity() if cin == cout
            else nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout))
        )
        self.act2 = make_activation(cfg.activation, cfg.leaky_slope)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + self.skip(x))


def down_kernel_padding(stride: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Kernel and padding of a downsampling conv: time uses kernel == stride (no temporal padding,
    non-overlapping windows; a stride-1 time axis gets 3 with 'same' padding); space uses 3 with
    padding 1 (odd, sizes divide exactly) for strides 1 and 2, kernel == stride otherwise."""
    st, sh, sw = stride
    kt, pt = (3, 1) if st == 1 else (st, 0)
    ks = [(3, 1) if s in (1, 2) else (s, 0) for s in (sh, sw)]
    return (kt, ks[0][0], ks[1][0]), (pt, ks[0][1], ks[1][1])


# ---------------------------------------------------------------------------- attention parts
class LargeKernelAttention(nn.Module):
    """1x1 -> act -> u * 1x1(conv3(dw_dilated(dw(u)))) -> 1x1; no internal shortcut."""

    def __init__(self, dim: int, kernel: int, dilated_kernel: int, dilation: int,
                 cfg: E3NetConfig) -> None:
        super().__init__()
        self.proj_in = nn.Conv3d(dim, dim, 1)
        self.act = make_activation(cfg.attn_activation, cfg.leaky_slope)
        self.dw = nn.Conv3d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.dw_dilated = nn.Conv3d(dim, dim, dilated_kernel,
                                    padding=dilation * (dilated_kernel // 2),
                                    dilation=dilation, groups=dim)
        # Plain 3x3x3 conv in place of LHU-Net's deformable conv (CUDA-only, no mobile kernel).
        self.conv3 = nn.Conv3d(dim, dim, 3, padding=1)
        self.conv1 = nn.Conv3d(dim, dim, 1)
        self.proj_out = nn.Conv3d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        u = self.act(self.proj_in(x))
        gate = self.conv1(self.conv3(self.dw_dilated(self.dw(u))))
        return self.proj_out(u * gate)


class SpatialTokenAttention(nn.Module):
    """Linformer-like: keys/values projected from N tokens to P tokens by a shared learned map."""

    def __init__(self, dim: int, heads: int, n_tokens: int, proj: int, cfg: E3NetConfig) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.kv_proj = nn.Linear(n_tokens, proj)  # E = F in LHU-Net
        self.attn_drop = nn.Dropout(cfg.attn_dropout)

    def forward(self, t: Tensor) -> Tensor:
        dim = t.shape[-1]
        qkv = self.qkv(t)
        q = split_heads(qkv[..., :dim], self.heads)
        k = split_heads(qkv[..., dim:2 * dim], self.heads)
        v = split_heads(qkv[..., 2 * dim:], self.heads)
        k = self.kv_proj(k.transpose(1, 2)).transpose(1, 2)  # (B*h, P, d)
        v = self.kv_proj(v.transpose(1, 2)).transpose(1, 2)
        return merge_heads(attend(q, k, v, self.scale, self.attn_drop), self.heads)


class ChannelTokenAttention(nn.Module):
    """Cross-covariance attention: a (d x d) attention map per head over channels."""

    def __init__(self, dim: int, heads: int, cfg: E3NetConfig) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads))
        self.attn_drop = nn.Dropout(cfg.attn_dropout)

    @staticmethod
    def _l2_over_tokens(x: Tensor) -> Tensor:
        # Written out (sum of squares, rsqrt) rather than F.normalize: the explicit form maps to
        # ops every backend delegates.
        return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)

    def forward(self, t: Tensor) -> Tensor:
        dim = t.shape[-1]
        d = dim // self.heads
        qkv = self.qkv(t)
        q = self._l2_over_tokens(qkv[..., :dim])
        k = self._l2_over_tokens(qkv[..., dim:2 * dim])
        v = qkv[..., 2 * dim:]
        temp = self.temperature.reshape(self.heads, 1).expand(self.heads, d).reshape(1, 1, dim)
        q = q * temp
        # Heads as (B*h, d, N): channels attend to channels.
        qh = split_heads(q, self.heads).transpose(1, 2)
        kh = split_heads(k, self.heads).transpose(1, 2)
        vh = split_heads(v, self.heads).transpose(1, 2)
        out = attend(qh, kh, vh, 1.0, self.attn_drop)  # (B*h, d, N)
        return merge_heads(out.transpose(1, 2), self.heads)


class TokenAttention(nn.Module):
    """pos-embed -> LayerNorm -> spatial|channel attention -> LayerNorm -> Linear -> dropout."""

    def __init__(self, kind: str, dim: int, heads: int, n_tokens: int, proj: int,
                 cfg: E3NetConfig) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, dim)) if cfg.token_pos_embed else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.norm_in = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = (SpatialTokenAttention(dim, heads, n_tokens, proj, cfg) if kind == "spatial"
                     else ChannelTokenAttention(dim, heads, cfg))
        self.norm_out = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(cfg.dropout)
        init_linear_(self)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        tok = tokens_of(x)
        if self.pos is not None:
            tok = tok + self.pos
        y = self.drop(self.out(self.norm_out(self.attn(self.norm_in(tok)))))
        return y.transpose(1, 2).reshape(b, c, t, h, w)


# ---------------------------------------------------------------------------- stages
class Stem(ConvBNAct):
    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__(cfg.channels, cfg.stem_width, 1, 1, 0,
                         make_activation(cfg.activation, cfg.leaky_slope))


class CNNStage(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], cfg: E3NetConfig) -> None:
        super().__init__()
        self.block = ResidualBlock(cin, cout, cfg.cnn_kernel, cfg)
        self.pool = nn.MaxPool3d(stride, stride) if max(stride) > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.block(x))


class HybridStage(nn.Module):
    def __init__(self, index: int, cin: int, out_shape: tuple[int, int, int],
                 cfg: E3NetConfig) -> None:
        super().__init__()
        cout = cfg.hybrid_widths[index]
        stride = cfg.hybrid_strides[index]
        kernel, padding = down_kernel_padding(stride)
        self.down = ConvBNAct(cin, cout, kernel, stride, padding,
                              make_activation(cfg.activation, cfg.leaky_slope))
        self.lka = LargeKernelAttention(cout, cfg.lka_kernels[index],
                                        cfg.lka_dilated_kernels[index], cfg.lka_dilations[index],
                                        cfg)
        self.tokens = TokenAttention(cfg.hybrid_attention[index], cout, cfg.hybrid_heads[index],
                                     math.prod(out_shape), cfg.linformer_proj[index], cfg)
        self.gamma_lka = nn.Parameter(torch.full((cout, 1, 1, 1), cfg.layer_scale_init))
        self.gamma_tokens = nn.Parameter(torch.full((cout, 1, 1, 1), cfg.layer_scale_init))
        self.block = ResidualBlock(cout, cout, 3, cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        x = x + self.gamma_lka * self.lka(x) + self.gamma_tokens * self.tokens(x)
        return self.block(x)


class LHUNetEncoder(nn.Module):
    """Returns the output of every stage, shallow to deep: [CNN..., hybrid...]."""

    def __init__(self, cfg: E3NetConfig) -> None:
        super().__init__()
        self.stem = Stem(cfg)
        shapes = cfg.stage_shapes()
        cin = cfg.stem_width
        self.cnn = nn.ModuleList()
        for w, s in zip(cfg.cnn_widths, cfg.cnn_strides):
            self.cnn.append(CNNStage(cin, w, s, cfg))
            cin = w
        self.hybrid = nn.ModuleList()
        for i in range(len(cfg.hybrid_widths)):
            self.hybrid.append(HybridStage(i, cin, shapes[len(cfg.cnn_widths) + i], cfg))
            cin = cfg.hybrid_widths[i]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.cnn:
            x = stage(x)
            feats.append(x)
        for stage in self.hybrid:
            x = stage(x)
            feats.append(x)
        return feats
