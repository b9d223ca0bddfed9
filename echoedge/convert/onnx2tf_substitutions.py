"""Module swaps before the ONNX export, so that onnx2tf converts the deploy form right.

onnx2tf 1.28.8 guesses for every rank-3/4/5 tensor whether it is channels-first or channels-last,
and on the deploy form it guessed wrong -- "Dimensions must be equal, but are 4 and 12" at a layer
scale times a 5D view, "42 and 6" at the learned E2CBD queries folded into a rank-3 constant. The
swaps (`substitute_for_onnx2tf`) remove those patterns exactly (layer scales folded into the
preceding linear map, constant queries as a per-head Linear on the tokens) and run the encoder on
one rank-4 frames tensor (T, C, H, W), which onnx2tf keeps channels-last from the first conv to the
last instead of transposing every activation around each conv (tiny config: TRANSPOSE ops 121 ->
35, and the fp32 file 40x closer to eager). onnx_export checks each swapped module equal to the
deploy form at batch 1 before export (`OnnxExport.substitution_check`).

torch is imported inside the functions.
"""

from __future__ import annotations

from typing import Any, Sequence

from echoedge.errors import EchoEdgeError


def substitute_for_onnx2tf(model: Any, frames_layout: bool = True) -> tuple[Any, list[str]]:
    """The module onnx2tf should see (a copy when anything is swapped), and the swaps made.

    onnx2tf guesses for every rank-5 tensor whether it is channels-first or channels-last and
    transposes broadcast constants to match; on the deploy form it guessed wrong for the layer
    scales (`gamma * branch(x)`, a (C,1,1,1) constant times a permuted 5D view: "Dimensions must
    be equal, but are 4 and 12"). The swaps remove the rank-5 broadcast constants, exactly:

    - HybridStage: each per-channel layer scale is folded into the last linear map of its branch
      (LKA's 1x1 `proj_out` conv, the token attention's output Linear): gamma * (W x + b) =
      (gamma W) x + gamma b.
    - ScaleTokens (E2CBD): the factorised position embeddings (time + row + column + scale) are
      summed once into a (N, D) table added in token layout, after flattening.
    - PhaseDecoder (E2CBD): the first layer's cross-attention queries do not depend on the input
      (learned queries -> LayerNorm -> Linear), so ONNX folds them into a rank-3 constant, which
      onnx2tf transposed inside the MatMul ("Dimensions must be equal, but are 42 and 6"). Per
      head, the logits k_h q_h^T are instead one Linear on the tokens (weight q_h W_k,h, bias
      q_h b_k,h, computed in float64), transposed, softmaxed and multiplied with v_h.

    4D multi-head attention (nn.MultiheadAttention) is refused: onnx2tf mis-converts 4D head
    tensors (toolchain.md); Echo-E3Net writes attention per head in 3D.

    With `frames_layout` (the default, batch 1 only) the encoder additionally runs on one rank-4
    tensor (T, C, H, W) from its first op to its last -- the frames are the batch axis of every
    Conv2d -- instead of the deploy form's 5D views: temporal taps are slices on axis 0
    concatenated on channels, temporal pooling is a maximum of slices, tokens are a permute +
    reshape. onnx2tf keeps such a graph channels-last end to end; the deploy form's
    (B, T, C*H*W) views instead made it transpose every full-resolution activation back and forth
    around each conv (121 TRANSPOSE ops on the tiny config).
    """
    from torch import nn

    from echoedge.model.e2cbd import PhaseDecoder, ScaleTokens
    from echoedge.model.lhunet import HybridStage

    bad = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if bad:
        raise EchoEdgeError("onnx2tf mis-converts nn.MultiheadAttention (4D head tensors) at "
                            + ", ".join(bad) + "; write attention with per-head 3D tensors "
                            "(see echoedge.model.lhunet.attend)")
    from echoedge.model.lhunet import LHUNetEncoder

    kinds = (HybridStage, ScaleTokens, PhaseDecoder)
    # The frames layout enters at Echo-E3Net's encoder, or at a video ResNet (onnx2tf_video).
    if frames_layout and any(isinstance(m, LHUNetEncoder) for m in model.modules()):
        return _frames_layout(model)
    from echoedge.convert.onnx2tf_video import has_video_resnet, video_frames_layout

    if has_video_resnet(model):
        return video_frames_layout(model)
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if not targets:
        return model, []
    import copy

    sub = copy.deepcopy(model).eval()
    swaps = []
    for name, m in list(sub.named_modules()):
        if isinstance(m, HybridStage):
            sub.set_submodule(name, _FoldedHybridStage(m))
            swaps.append(f"{name}: layer scales folded into lka.proj_out and tokens.out")
        elif isinstance(m, ScaleTokens):
            sub.set_submodule(name, _TokenLayoutScaleTokens(m))
            swaps.append(f"{name}: position embedding added in token layout")
        elif isinstance(m, PhaseDecoder):
            sub.set_submodule(name, _make_substitutes()[2](m))
            swaps.append(f"{name}: constant-query cross-attention as per-head Linear on the tokens")
    return sub, swaps


def _frames_layout(model: Any) -> tuple[Any, list[str]]:
    import copy

    from echoedge.model.deploy_bn_pool import BatchNorm3dAs2d, Pool3dAs2d
    from echoedge.model.deploy_conv import Conv3dAs2d
    from echoedge.model.e2cbd import PhaseDecoder, ScaleTokens
    from echoedge.model.e2fa import E2FA
    from echoedge.model.lhunet import HybridStage, LHUNetEncoder, TokenAttention

    F = _make_frames_substitutes()
    sub = copy.deepcopy(model).eval()
    swaps: list[str] = []
    table = [
        (LHUNetEncoder, F["encoder"], "input permuted once to frames (T, C, H, W)"),
        (HybridStage, _make_substitutes()[0], "layer scales folded into lka.proj_out and tokens.out"),
        (ScaleTokens, F["scale_tokens"], "frames -> tokens, position embedding in token layout"),
        (PhaseDecoder, _make_substitutes()[2], "constant-query cross-attention as per-head Linear"),
        (TokenAttention, F["token_attention"], "frames <-> tokens by permute + reshape"),
        (E2FA, F["e2fa"], "global statistics reduced over the frame axes"),
        (Conv3dAs2d, F["conv"], "conv on frames: taps are axis-0 slices"),
        (BatchNorm3dAs2d, F["bn"], "batch norm on frames"),
        (Pool3dAs2d, F["pool"], "pool on frames: time by maximum/sum of axis-0 slices"),
    ]
    counts: dict[str, int] = {}
    # Outer modules first: a swap keeps (and later swaps replace) the children it holds.
    for kind, make, what in table:
        for name, m in list(sub.named_modules()):
            if type(m) is kind:
                new = make(m)
                if name:
                    sub.set_submodule(name, new)
                else:
                    sub = new
                counts[f"{kind.__name__}: {what}"] = counts.get(f"{kind.__name__}: {what}", 0) + 1
    swaps = [f"{k} (x{n})" for k, n in counts.items()]
    return sub, swaps


def _make_frames_substitutes() -> dict[str, type]:
    """Modules that compute the deploy form's function on frames (T, C, H, W), batch 1."""
    import torch
    from torch import nn

    def to_tokens(f: Any) -> Any:  # (T, C, H, W) -> (1, T*H*W, C), the order of tokens_of
        t, c, h, w = f.shape
        return f.permute(0, 2, 3, 1).reshape(1, t * h * w, c)

    class FramesEncoder(nn.Module):
        def __init__(self, enc: Any) -> None:
            super().__init__()
            self.stem, self.cnn, self.hybrid = enc.stem, enc.cnn, enc.hybrid

        def forward(self, x: Any) -> Any:
            if x.shape[0] != 1:
                raise ValueError("the frames-layout export form runs batch 1 only")
            f = x[0].transpose(0, 1)  # (C, T, H, W) -> (T, C, H, W)
            f = self.stem(f)
            feats = []
            for stage in self.cnn:
                f = stage(f)
                feats.append(f)
            for stage in self.hybrid:
                f = stage(f)
                feats.append(f)
            return feats

    class FramesConv(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.window, self.convs, self.stacked, self.post = m.window, m.convs, m.stacked, m.post
            # Set by deploy.Conv3dAs2d.specialise (padding-free runs of output frames), if any.
            self.runs = getattr(m, "runs", None)
            self.run_convs = getattr(m, "run_convs", None)
            self.run_bias = getattr(m, "run_bias", None)

        def _taps(self, f: Any, t_out: int) -> list[Any]:
            """The kernel taps of every output frame: tap i is (t_out, C, H, W)."""
            win = self.window
            if win.pad_before or win.pad_after:
                parts = []
                if win.pad_before:
                    parts.append(f.new_zeros((win.pad_before, *f.shape[1:])))
                parts.append(f)
                if win.pad_after:
                    parts.append(f.new_zeros((win.pad_after, *f.shape[1:])))
                f = torch.cat(parts, dim=0)
            taps = []
            for i in range(win.kernel):
                start = i * win.dilation
                if win.stride == 1:
                    taps.append(f if (start == 0 and f.shape[0] == t_out) else f[start:start + t_out])
                else:  # kernel == stride (or kernel 1): every stride-th frame from the tap's offset
                    taps.append(f[start::win.stride][:t_out])
            return taps

        def forward(self, f: Any) -> Any:
            t = f.shape[0]
            win = self.window
            t_out = win.out_frames(t)
            if self.runs is not None:
                y = self._runs(f)
            else:
                taps = self._taps(f, t_out)
                if self.stacked:
                    y = self.convs[0](taps[0] if len(taps) == 1 else torch.cat(taps, dim=1))
                else:
                    y = self.convs[0](taps[0])
                    for conv, xi in zip(self.convs[1:], taps[1:]):
                        y = y + conv(xi)
            return self.post(y)

        def _tap_outputs(self, f: Any) -> dict[int, tuple[int, Any]]:
            """Each tap's conv once over the output frames that read it, as the deploy form does
            (Conv3dAs2d._tap_outputs): one call site per conv, so every one is quantized."""
            from echoedge.model.deploy_conv import tap_spans

            win = self.window
            return {i: (lo, self.convs[i](f[lo - win.pad_before + i * win.dilation:
                                           hi - win.pad_before + i * win.dilation]))
                    for i, (lo, hi) in sorted(tap_spans(self.runs).items())}

        def _runs(self, f: Any) -> Any:
            win = self.window
            parts = []
            per_tap = None if self.stacked else self._tap_outputs(f)
            for t0, t1, a, z in self.runs:
                n = t1 - t0
                if self.stacked:
                    starts = [t0 - win.pad_before + i * win.dilation for i in range(a, z + 1)]
                    taps = [f[s:s + n] for s in starts]
                    conv = (self.convs[0] if (a, z) == (0, win.kernel - 1)
                            else self.run_convs[f"{a}_{z}"])
                    y = conv(taps[0] if len(taps) == 1 else torch.cat(taps, dim=1))
                else:
                    y = None
                    for i in range(a, z + 1):
                        first, yi = per_tap[i]
                        yi = yi[t0 - first:t1 - first]
                        y = yi if y is None else y + yi
                parts.append(y)
            y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            if self.run_bias is not None:
                y = y + self.run_bias
            return y

    class FramesBatchNorm(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.bn = m.bn

        def forward(self, f: Any) -> Any:
            return self.bn(f)

    class FramesPool(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.window, self.is_max, self.spatial, self.divisor = m.window, m.is_max, m.spatial, m.divisor

        def forward(self, f: Any) -> Any:
            win = self.window
            t_out = win.out_frames(f.shape[0])
            if win.kernel == 1:
                taps = [f if win.stride == 1 else f[::win.stride][:t_out]]
            else:  # kernel == stride (Pool3dAs2d refuses anything else)
                taps = [f[r::win.stride][:t_out] for r in range(win.kernel)]
            y = taps[0]
            for xi in taps[1:]:
                y = torch.maximum(y, xi) if self.is_max else y + xi
            if not self.is_max and len(taps) > 1 and self.divisor is None:
                y = y * (1.0 / len(taps))
            return self.spatial(y)

    class FramesTokenAttention(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.pos, self.norm_in, self.attn = m.pos, m.norm_in, m.attn
            self.norm_out, self.out, self.drop = m.norm_out, m.out, m.drop

        def forward(self, f: Any) -> Any:
            t, c, h, w = f.shape
            tok = to_tokens(f)
            if self.pos is not None:
                tok = tok + self.pos
            y = self.drop(self.out(self.norm_out(self.attn(self.norm_in(tok)))))
            return y.reshape(t, h, w, c).permute(0, 3, 1, 2)

    class FramesScaleTokens(nn.Module):
        def __init__(self, st: Any) -> None:
            super().__init__()
            self.pool, self.proj = st.pool, st.proj
            with torch.no_grad():
                pos = st.pos_t + st.pos_h + st.pos_w + st.pos_scale  # (1, D, t, h, w)
                self.pos = nn.Parameter(pos.flatten(2).transpose(1, 2).contiguous(),
                                        requires_grad=False)  # (1, N, D)

        def forward(self, f: Any) -> Any:
            return to_tokens(self.proj(self.pool(f))) + self.pos

    class FramesE2FA(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.norm, self.mlp = m.norm, m.mlp
            self.register_buffer("out_mean", m.out_mean.clone(), persistent=False)
            self.register_buffer("out_scale", m.out_scale.clone(), persistent=False)

        def forward(self, f: Any, ed_embed: Any, es_embed: Any) -> Any:
            c = f.shape[1]
            mean = f.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
            centred = f - mean
            var = (centred * centred).mean(dim=(0, 2, 3))
            stats = torch.cat([mean.reshape(1, c), f.amax(dim=(0, 2, 3)).reshape(1, c),
                               var.reshape(1, c)], dim=1)
            fused = torch.cat([stats, ed_embed.mean(dim=1), es_embed.mean(dim=1)], dim=1)
            out = self.mlp(self.norm(fused)) * self.out_scale + self.out_mean
            return out[:, 0], out[:, 1], out[:, 2]

    return {"encoder": FramesEncoder, "conv": FramesConv, "bn": FramesBatchNorm,
            "pool": FramesPool, "token_attention": FramesTokenAttention,
            "scale_tokens": FramesScaleTokens, "e2fa": FramesE2FA}


def _fold_scale_into_last_linear(module: Any, gamma: Any) -> None:
    """Multiply the output channels of a 1x1 conv rewrite or a Linear by gamma (C,), in place."""
    import torch
    from torch import nn

    g = gamma.detach().reshape(-1)
    if isinstance(module, nn.Linear):
        layers = [module]
    else:  # a deploy-form Conv3dAs2d with a 1x1x1 kernel: its Conv2d(s) carry the weight
        layers = [c for c in module.modules() if isinstance(c, nn.Conv2d)]
        if not layers or any(len(p) for p in getattr(module, "post", [])):
            raise EchoEdgeError("cannot fold a layer scale into a conv with a fused activation")
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(g.reshape(-1, *([1] * (layer.weight.dim() - 1))))
            if layer.bias is not None:
                layer.bias.mul_(g)


def _make_substitutes() -> tuple[type, type]:
    import torch
    from torch import nn

    class FoldedHybridStage(nn.Module):
        """x = down(x); x = x + lka'(x) + tokens'(x); block(x), with gamma inside lka'/tokens'."""

        def __init__(self, stage: Any) -> None:
            super().__init__()
            self.down, self.lka, self.tokens, self.block = stage.down, stage.lka, stage.tokens, stage.block
            _fold_scale_into_last_linear(self.lka.proj_out, stage.gamma_lka)
            _fold_scale_into_last_linear(self.tokens.out, stage.gamma_tokens)

        def forward(self, x: Any) -> Any:
            x = self.down(x)
            return self.block(x + self.lka(x) + self.tokens(x))

    class TokenLayoutScaleTokens(nn.Module):
        def __init__(self, st: Any) -> None:
            super().__init__()
            self.pool, self.proj = st.pool, st.proj
            with torch.no_grad():
                pos = st.pos_t + st.pos_h + st.pos_w + st.pos_scale  # (1, D, t, h, w)
                self.pos = nn.Parameter(pos.flatten(2).transpose(1, 2).contiguous(),
                                        requires_grad=False)  # (1, N, D)

        def forward(self, x: Any) -> Any:
            return self.proj(self.pool(x)).flatten(2).transpose(1, 2) + self.pos

    class ConstantQueryCross(nn.Module):
        """Cross-attention whose queries are a learned constant: per head, logits = Linear(tokens)."""

        def __init__(self, cross: Any, queries: Any) -> None:
            super().__init__()
            self.heads = cross.heads
            dim = queries.shape[-1]
            d = dim // self.heads
            with torch.no_grad():
                q = (cross.q(queries[0]) * cross.scale).double()  # (K, D), scale folded in
                wk, bk = cross.k.weight.double(), cross.k.bias.double()
                self.logits = nn.ModuleList()
                for h in range(self.heads):
                    qh = q[:, h * d:(h + 1) * d]  # (K, d)
                    lin = nn.Linear(dim, q.shape[0])
                    lin.weight.copy_((qh @ wk[h * d:(h + 1) * d]).float())
                    lin.bias.copy_((qh @ bk[h * d:(h + 1) * d]).float())
                    self.logits.append(lin)
            self.v, self.out, self.d = cross.v, cross.out, d

        def forward(self, tokens: Any) -> Any:
            v = self.v(tokens)
            heads = []
            for h, lin in enumerate(self.logits):
                attn = torch.softmax(lin(tokens).transpose(1, 2), dim=-1)  # (B, K, N)
                heads.append(torch.bmm(attn, v[..., h * self.d:(h + 1) * self.d]))
            return self.out(torch.cat(heads, dim=-1))

    class ConstantQueryPhaseDecoder(nn.Module):
        def __init__(self, dec: Any) -> None:
            super().__init__()
            first = dec.layers[0]
            with torch.no_grad():
                normed = first.norm_cross(dec.queries)
            self.queries = nn.Parameter(dec.queries.detach().clone(), requires_grad=False)
            self.cross = ConstantQueryCross(first.cross, normed)
            self.first = first  # its self-attention and MLP run as before
            self.rest = nn.ModuleList(list(dec.layers)[1:])
            self.norm, self.coords = dec.norm, dec.coords

        def forward(self, tokens: Any) -> Any:
            f = self.first
            q = self.queries + f.drop(self.cross(tokens))
            h = f.norm_self(q)
            q = q + f.drop(f.self_attn(h, h))
            q = q + f.drop(f.mlp(f.norm_mlp(q)))
            for layer in self.rest:
                q = layer(q, tokens)
            emb = self.norm(q)
            return torch.sigmoid(self.coords(emb)), emb

    return FoldedHybridStage, TokenLayoutScaleTokens, ConstantQueryPhaseDecoder


def _FoldedHybridStage(stage: Any) -> Any:
    return _make_substitutes()[0](stage)


def _TokenLayoutScaleTokens(st: Any) -> Any:
    return _make_substitutes()[1](st)


__all__: Sequence[str] = ("substitute_for_onnx2tf",)
