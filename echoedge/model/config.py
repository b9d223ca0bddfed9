"""E3NetConfig: every architectural choice of Echo-E3Net as a named, serialisable field.

The paper (Heidari et al., arXiv 2503.17543) publishes the parts and the totals (1.54 M parameters,
8.05 GFLOPs) but not the widths, depths or head sizes, so every number below is a project choice,
tuned so that the `paper` preset lands on the published totals at 1x32x112x112:

- Stages (LHU-Net layout): a 1x1x1 stem, `len(cnn_widths)` CNN stages and `len(hybrid_widths)`
  hybrid stages. A CNN stage runs a residual block at its input resolution and then max-pools with
  kernel == stride (LHU-Net's `cnn_maxpools` option); putting the CNN blocks at full resolution is
  where the multiply-adds go, as in LHU-Net. A hybrid stage downsamples with a conv-BN-act block
  whose temporal kernel equals its temporal stride (non-overlapping in time, so the deploy form
  needs neither temporal padding nor strided slicing) and whose spatial kernel is 3 with padding 1
  when the spatial stride is 2.
- Strides: 112 = 16*7 allows four spatial halvings, 32 = 2**5 five temporal ones. `paper` halves
  space in the first four stages and time in the last four: (32,112,112) -> CNN1 (32,56,56) ->
  CNN2 (16,28,28) -> H1 (8,14,14) -> H2 (4,7,7) -> H3 (2,7,7).
- Large-kernel attention kernels per hybrid stage follow LHU-Net's width rule (depthwise 5 and
  dilated depthwise 7/3 for narrow stages, 3 and 3/2 for the deepest); the deformable 3x3x3 conv
  becomes a plain 3x3x3 conv.
- Token attention per hybrid stage: "spatial" (Linformer-like: keys/values projected from N tokens
  to `linformer_proj` tokens by a learned N->P map, so its weights are tied to the static input
  shape) or "channel" (cross-covariance, XCiT-style).
- Output scaling: the heads regress standardised values; EF = ef_mean + ef_scale * z, likewise
  EDV/ESV. The constants are EchoNet-Dynamic-like (EF 55 +- 12 %, EDV 90 +- 35 mL,
  ESV 40 +- 25 mL) and live here so a checkpoint carries them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError

Stride3 = tuple[int, int, int]

ACTIVATIONS = ("gelu_tanh", "relu", "leaky_relu", "hardswish", "silu")
TOKEN_ATTENTIONS = ("spatial", "channel")


@dataclass(frozen=True)
class E3NetConfig:
    name: str = "paper"
    # --- input (must match the ClipSpec the data pipeline produces) ---
    frames: int = 32
    height: int = 112
    width: int = 112
    channels: int = 1
    # --- encoder: stem + CNN stages ---
    stem_width: int = 12
    cnn_widths: tuple[int, ...] = (16, 24)
    cnn_strides: tuple[Stride3, ...] = ((1, 2, 2), (2, 2, 2))
    cnn_kernel: int = 3
    # --- encoder: hybrid stages ---
    hybrid_widths: tuple[int, ...] = (32, 64, 80)
    hybrid_strides: tuple[Stride3, ...] = ((2, 2, 2), (2, 2, 2), (2, 1, 1))
    hybrid_attention: tuple[str, ...] = ("spatial", "spatial", "channel")
    hybrid_heads: tuple[int, ...] = (2, 4, 4)
    linformer_proj: tuple[int, ...] = (48, 48, 0)  # P per stage; ignored for "channel" stages
    lka_kernels: tuple[int, ...] = (5, 5, 3)  # depthwise kernel
    lka_dilated_kernels: tuple[int, ...] = (7, 5, 3)  # dilated depthwise kernel
    lka_dilations: tuple[int, ...] = (3, 3, 2)
    token_pos_embed: bool = True  # learned (N, C) position embedding before token attention
    layer_scale_init: float = 0.1  # initial per-channel scale of each attention branch
    # --- E2CBD ---
    num_landmarks: int = 42
    cbd_scales: tuple[int, ...] = (1, 2, 3, 4)  # encoder stage outputs used (0 = CNN1 ... 4 = H3)
    cbd_token_grid: Stride3 = (8, 7, 7)  # each scale is avg-pooled (kernel == stride) down to this
    cbd_dim: int = 64
    cbd_heads: int = 4
    cbd_layers: int = 1
    cbd_mlp_ratio: int = 2
    # --- E2FA ---
    fa_hidden: int = 96
    # --- common ---
    activation: str = "leaky_relu"  # conv blocks (LHU-Net: LeakyReLU 0.01)
    attn_activation: str = "gelu_tanh"  # LKA and MLPs (LHU-Net: GELU, here its tanh form)
    leaky_slope: float = 0.01
    dropout: float = 0.1  # E2FA head and attention outputs
    attn_dropout: float = 0.0  # attention probabilities
    norm_eps: float = 1e-5
    # --- output scaling: heads regress (value - mean) / scale ---
    ef_mean: float = 55.0
    ef_scale: float = 12.0
    edv_mean: float = 90.0
    edv_scale: float = 35.0
    esv_mean: float = 40.0
    esv_scale: float = 25.0

    def __post_init__(self) -> None:
        # JSON and YAML give lists; normalise to tuples so equality and hashing work.
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, _to_tuple(v))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def fail(msg: str) -> None:
            raise EchoEdgeError(f"E3NetConfig '{self.name}': {msg}")

        for n in ("frames", "height", "width", "stem_width", "cnn_kernel", "num_landmarks",
                  "cbd_dim", "cbd_heads", "cbd_layers", "cbd_mlp_ratio", "fa_hidden"):
            if int(getattr(self, n)) < 1:
                fail(f"{n} must be >= 1, got {getattr(self, n)}")
        if self.channels not in (1, 3):
            fail(f"channels must be 1 or 3, got {self.channels}")
        if self.cnn_kernel % 2 != 1:
            fail(f"cnn_kernel must be odd ('same' padding), got {self.cnn_kernel}")
        if len(self.cnn_widths) != len(self.cnn_strides) or not self.cnn_widths:
            fail("cnn_widths and cnn_strides need the same, non-zero length")
        nh = len(self.hybrid_widths)
        if nh == 0:
            fail("at least one hybrid stage is needed")
        for n in ("hybrid_strides", "hybrid_attention", "hybrid_heads", "linformer_proj",
                  "lka_kernels", "lka_dilated_kernels", "lka_dilations"):
            if len(getattr(self, n)) != nh:
                fail(f"{n} has {len(getattr(self, n))} entries, hybrid_widths has {nh}")
        for i, (w, h, a, p) in enumerate(zip(self.hybrid_widths, self.hybrid_heads,
                                              self.hybrid_attention, self.linformer_proj)):
            if a not in TOKEN_ATTENTIONS:
                fail(f"hybrid_attention[{i}] = {a!r}, choose from {TOKEN_ATTENTIONS}")
            if h < 1 or w % h:
                fail(f"hybrid_heads[{i}] = {h} must divide hybrid_widths[{i}] = {w}")
            if a == "spatial" and p < 1:
                fail(f"linformer_proj[{i}] must be >= 1 for a spatial-attention stage")
        for i, (k, kd, d) in enumerate(zip(self.lka_kernels, self.lka_dilated_kernels,
                                           self.lka_dilations)):
            if k % 2 != 1 or kd % 2 != 1 or d < 1:
                fail(f"LKA kernels must be odd and dilation >= 1 (stage {i}: {k}, {kd}, {d})")
        if self.cbd_dim % self.cbd_heads:
            fail(f"cbd_heads = {self.cbd_heads} must divide cbd_dim = {self.cbd_dim}")
        for s in self.stage_strides():
            if len(s) != 3 or min(s) < 1:
                fail(f"stride {s} must be three positive integers (t, h, w)")
        n_stages = len(self.stage_strides())
        if not self.cbd_scales or any(not 0 <= i < n_stages for i in self.cbd_scales):
            fail(f"cbd_scales {self.cbd_scales} must index encoder stages 0..{n_stages - 1}")
        for n in ("activation", "attn_activation"):
            if getattr(self, n) not in ACTIVATIONS:
                fail(f"{n} = {getattr(self, n)!r}, choose from {ACTIVATIONS}")
        for n in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, n) < 1.0:
                fail(f"{n} must be in [0, 1), got {getattr(self, n)}")
        for n in ("ef_scale", "edv_scale", "esv_scale", "layer_scale_init", "norm_eps"):
            if not getattr(self, n) > 0:
                fail(f"{n} must be > 0, got {getattr(self, n)}")
        # Every stride divides the running size exactly: no ceil/floor bookkeeping anywhere.
        size = (self.frames, self.height, self.width)
        for i, s in enumerate(self.stage_strides()):
            for axis, (n, st) in enumerate(zip(size, s)):
                if n % st:
                    fail(f"stage {i} stride {s} does not divide its input size {size} "
                         f"on axis {'THW'[axis]}")
            size = tuple(n // st for n, st in zip(size, s))
        for i in self.cbd_scales:
            shape = self.stage_shapes()[i]
            for n, g in zip(shape, self.cbd_token_grid):
                if n > g and n % g:
                    fail(f"E2CBD scale {i} of shape {shape} cannot be pooled to "
                         f"cbd_token_grid {self.cbd_token_grid} with kernel == stride")

    # ------------------------------------------------------------------ derived shapes
    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int, int]:
        return (batch, self.channels, self.frames, self.height, self.width)

    def stage_strides(self) -> tuple[Stride3, ...]:
        return tuple(self.cnn_strides) + tuple(self.hybrid_strides)

    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.cnn_widths) + tuple(self.hybrid_widths)

    def stage_shapes(self) -> tuple[Stride3, ...]:
        """(T, H, W) of each encoder stage's output (CNN stages after their pooling)."""
        size = (self.frames, self.height, self.width)
        out = []
        for s in self.stage_strides():
            size = tuple(n // st for n, st in zip(size, s))
            out.append(size)
        return tuple(out)

    def cbd_pool(self, scale: int) -> Stride3:
        """Pooling kernel (== stride) that brings encoder stage `scale` down to the token grid."""
        shape = self.stage_shapes()[scale]
        return tuple(n // g if n > g else 1 for n, g in zip(shape, self.cbd_token_grid))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return _to_lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "E3NetConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        missing = names - set(d)
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown keys: {', '.join(sorted(unknown))}")
            if missing:
                parts.append(f"missing keys: {', '.join(sorted(missing))}")
            raise EchoEdgeError(f"E3NetConfig.from_dict: {'; '.join(parts)}")
        return cls(**{k: _to_tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes: Any) -> "E3NetConfig":
        return replace(self, **changes)


def _to_tuple(v: Any) -> Any:
    return tuple(_to_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _to_lists(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_lists(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_lists(x) for x in v]
    return v


PAPER = E3NetConfig()

# Same structure at 16x64x64 and a few tens of thousands of parameters: for tests and smoke runs.
# (16,64,64) -> CNN1 (16,32,32) -> CNN2 (8,16,16) -> H1 (4,8,8) -> H2 (2,4,4) -> H3 (1,4,4).
TINY = E3NetConfig(
    name="tiny",
    frames=16,
    height=64,
    width=64,
    stem_width=4,
    cnn_widths=(6, 8),
    hybrid_widths=(8, 12, 16),
    hybrid_heads=(2, 2, 2),
    linformer_proj=(16, 8, 0),
    lka_kernels=(3, 3, 3),
    lka_dilated_kernels=(3, 3, 3),
    lka_dilations=(2, 2, 1),
    cbd_token_grid=(4, 4, 4),
    cbd_dim=12,
    cbd_heads=2,
    fa_hidden=24,
)

PRESETS: dict[str, E3NetConfig] = {"paper": PAPER, "tiny": TINY}


def get_config(name: str) -> E3NetConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise EchoEdgeError(
            f"unknown model config {name!r}; presets: {', '.join(sorted(PRESETS))}"
        ) from None


def clip_spec_for(cfg: E3NetConfig, mean: float = 32.5, std: float = 50.0,
                  period: int = 2) -> ClipSpec:
    """The ClipSpec a model of this config eats (normalisation comes from the training split)."""
    return ClipSpec(frames=cfg.frames, period=period, height=cfg.height, width=cfg.width,
                    channels=cfg.channels, mean=mean, std=std)


def check_clip_spec(cfg: E3NetConfig, spec: ClipSpec) -> None:
    """Raise EchoEdgeError naming every field where the ClipSpec and the model config disagree."""
    bad = [f"{n}: model {getattr(cfg, n)} vs clip {getattr(spec, n)}"
           for n in ("frames", "height", "width", "channels")
           if getattr(cfg, n) != getattr(spec, n)]
    if bad:
        raise EchoEdgeError(f"ClipSpec does not match model config '{cfg.name}': "
                            + "; ".join(bad))
