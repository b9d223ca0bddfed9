"""The int8 recipes every converter shares: which modules are int8, and which stay float.

"conv-stages" (the default) quantizes Echo-E3Net's CNN stages only, 95 % of its multiply-adds;
"whole" stores every conv and linear weight as int8 (issue 15): a quarter of the fp32 file; its
.pte also has its mean output shift taken out (output_shift.py). Each converter turns the
recipe into its own mechanism (ExecuTorch: the XNNPACK quantizer's filter;
TFLite: denylisted nodes; Core ML: its weight threshold).
"""

from __future__ import annotations

from typing import Any, Sequence

RECIPES = ("conv-stages", "whole")
DEFAULT_RECIPE = "conv-stages"
# Kept float by the "whole" recipe: nothing. The 1x1x1 stem (12 weights) was kept float while
# it looked the most EF-sensitive layer (0.272 -> 0.501 mean |dEF| in simulation when quantized
# on top of the conv-stages scope). With the output shift taken out, LeakyReLU int8 and frames
# kept 4D, the whole .pte with the stem int8 measured the same or better (shipped checkpoint,
# bench_int8's protocols, mean / p95 |dEF| and band agreement vs fp32): run's protocol 0.210 /
# 0.422, 100 % -> 0.213 / 0.422, 100 %; 100 TEST videos 0.211 / 0.500, 99 % -> 0.212 / 0.460,
# 100 %; p50 unchanged. Its per-channel weights are exact (one input channel: each output channel
# holds one weight, its own scale). Kept as a mechanism for a model that needs it.
WHOLE_KEEP_FLOAT: tuple[str, ...] = ()
# Modules whose own element-wise glue stays float in the "whole" recipe (their child layers stay
# int8): E2FA's statistics row -- per-channel mean, max and variance of the deepest map and the
# landmark embeddings, concatenated -- and its de-standardised outputs. One per-tensor int8 scale
# over that row crushes the small statistics; the MLP behind its LayerNorm takes int8 well. PT2E
# simulation, shipped checkpoint, 24 TEST videos x 2 clips, mean |dEF| vs fp32: 0.845 with all of
# E2FA int8, 0.336 with this glue float (0.332 with all of E2FA float), 0.832 with E2FA's Linears
# quantized dynamically, unchanged with SmoothQuant-style scaling of the MLP input.
WHOLE_FLOAT_GLUE = ("fa",)


def check_recipe(recipe: str) -> str:
    """`recipe` if it is a known int8 recipe, else EchoEdgeError naming the choices."""
    from echoedge.errors import EchoEdgeError

    if recipe not in RECIPES:
        raise EchoEdgeError(f"unknown int8 recipe {recipe!r} (expected one of: {', '.join(RECIPES)})")
    return recipe


def int8_scope(model: Any) -> tuple[str, ...] | None:
    """Module-path prefixes whose convs the default int8 recipe quantizes (None: every module).

    For Echo-E3Net: the CNN stages, which hold 95 % of the multiply-adds (7.58 of 7.96 GMACs,
    `echo-edge info`). Float: the stem (a 1x1x1 conv from the grey clip to 12 channels: 12
    weights, 0.06 % of the multiply-adds, yet the most EF-sensitive layer -- keeping it float
    won back 0.21 of 0.48 EF points in `echo-edge debug-quant`'s sweep), the hybrid stages
    (attention, large-kernel attention), E2CBD and E2FA. Measured on the shipped checkpoint
    (PT2E simulation, 24 TEST videos x 2 clips, 32 ef-stratified calibration clips), mean |dEF|
    against the fp32 reference: 0.272 with this scope, 0.501 with the stem int8 too;
    earlier (12 VAL videos): 0.52 with every encoder conv int8, 0.62 with everything int8, 3.7 with
    everything int8 and XNNPACK's default histogram observers.
    """
    from echoedge.model.network import EchoE3Net

    return ("encoder.cnn",) if isinstance(model, EchoE3Net) else None


def present_modules(model: Any, paths: Sequence[str]) -> list[str]:
    """The module paths of `paths` that `model` has (the recipe's names are Echo-E3Net's)."""
    names = {n for n, _ in model.named_modules()}
    return [p for p in paths if p in names]


def recipe_of(details: dict[str, Any]) -> str | None:
    """The int8 recipe an artefact was built with, from its manifest's details (None: not int8,
    or a manifest written before converters recorded it)."""
    recipe = (details.get("quantization") or {}).get("recipe")
    if isinstance(recipe, dict):
        return recipe.get("name")
    return recipe if isinstance(recipe, str) else None
