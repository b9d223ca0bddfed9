"""The XNNPACK quantizer of each int8 recipe (PT2E), shared by the ExecuTorch converter and the
PyTorch simulation of its numbers (echoedge.quantdebug).

Which modules a recipe quantizes, and how: static int8 convs, dynamically quantized Linear
layers. torch / torchao / executorch are imported inside the functions.
"""

from __future__ import annotations

from typing import Any, Sequence

from echoedge.convert.int8_recipe import (
    DEFAULT_RECIPE, WHOLE_FLOAT_GLUE, WHOLE_KEEP_FLOAT, int8_scope, present_modules,
)
from echoedge.convert.xnnpack_int8_ops import annotate_int8_glue


def _in_scope(scope: tuple[str, ...] | None, keep_float: Sequence[str] = (),
              linear: bool = False, float_glue: Sequence[str] = ()) -> Any:
    keep = tuple(keep_float)
    glue = set(float_glue)

    def quantize(node: Any) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        entries = list(stack.values())
        if not entries:  # parameters and constants: the op that consumes them decides
            return True
        if str(entries[-1][0]) in glue:  # written in that module's own forward, not in a child
            return False
        kind = entries[-1][1]
        name = kind.__name__ if isinstance(kind, type) else str(kind)
        if name.endswith("Linear") and not linear:  # attention projections on few tokens: cheap in float
            return False
        paths = [str(path) for path, _ in entries]
        if keep and any(_under(p, k) for p in paths for k in keep):
            return False
        return scope is None or any(p.startswith(scope) for p in paths)
    return quantize


def xnnpack_quantizer() -> Any:
    """An XNNPACKQuantizer that skips its conv + BatchNorm patterns on a graph with no BatchNorm,
    and runs LeakyReLU and maximum int8 (xnnpack_int8_ops.py says why).

    Each of those four patterns traces its pattern graphs with torch.export on every annotation
    pass (12 traces, about 8 s of a 10 s `prepare_pt2e` on the tiny Echo-E3Net, more for a
    recipe with per-module configs), and a pattern with a BatchNorm cannot match a graph without
    one. prepare_pt2e folds BatchNorm into the convs before it annotates (and the deploy form has
    none), so the annotations are the same, found in a tenth of the time (0.8 s against 10.3 s
    on the tiny Echo-E3Net; tests/convert/test_executorch_quantizer.py compares the graphs).
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import get_output_act_qspec

    class _Quantizer(XNNPACKQuantizer):
        def annotate(self, model: Any) -> Any:
            # aten.batch_norm and _native_batch_norm_legit*: every BatchNorm overload
            has_bn = any(n.op == "call_function" and "batch_norm" in str(n.target)
                         for n in model.graph.nodes)
            if not has_bn:
                self.SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS
                                           if "_bn" not in p.name]
                # What the skipped annotator does to the graph before matching: the prepared
                # graph must be the one the stock quantizer gives, node for node.
                model.graph.eliminate_dead_code()
                model.recompile()
            try:
                model = super().annotate(model)
            finally:
                self.__dict__.pop("SUPPORTED_PATTERNS", None)
            if self.global_config is not None:
                annotate_int8_glue(model, get_output_act_qspec(self.global_config), self.filter_fn)
            return model

    return _Quantizer()


def _under(path: str, prefix: str) -> bool:
    """Module `path` is `prefix` or inside it (so "cnn.1" does not match "cnn.10")."""
    return path == prefix or path.startswith(prefix + ".")


def quantizer_for(model: Any, keep_float: Sequence[str] = (), recipe: str = DEFAULT_RECIPE,
                  example: Any = None) -> tuple[Any, dict[str, Any]]:
    """The XNNPACK quantizer of an int8 recipe, and its description for the manifest.

    Symmetric per-channel int8 weights, per-tensor int8 activations with min/max observers:
    XNNPACK's default histogram observers cost ~3 s per calibration clip here and were not more
    accurate for this network, and clipping ranges costs EF (whole recipe, PT2E simulation, 24
    TEST videos x 2 clips, mean |dEF| vs fp32: min/max 0.336; 99.99th percentile per clip, max over
    clips 0.532; per-clip min/max averaged 1.84; every non-depthwise conv quantized dynamically per
    call, XNNPACK qd8, 0.429). `keep_float` names module paths (and everything under them) kept
    float on top of the recipe: the mixed-precision artefacts of `echo-edge debug-quant`.
    The "whole" recipe quantizes every module (its convs static int8; WHOLE_KEEP_FLOAT, now
    empty, would name modules kept float), and gives the
    Linear layers int8 weights with dynamically quantized activations (static where XNNPACK takes
    only static); the ops written in WHOLE_FLOAT_GLUE modules' own forward stay float.
    """
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config,
    )
    from torch import nn
    from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)
    observer = MinMaxObserver.with_args(eps=2**-12)
    config = dataclasses.replace(
        config,
        input_activation=dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer),
        output_activation=dataclasses.replace(config.output_activation, observer_or_fake_quant_ctr=observer),
    )
    if recipe == "whole":
        keep = tuple(dict.fromkeys([*present_modules(model, WHOLE_KEEP_FLOAT), *keep_float]))
        glue = present_modules(model, WHOLE_FLOAT_GLUE)
        quantizer = xnnpack_quantizer().set_global(config).set_filter_function(
            _in_scope(None, keep, True, glue))
        quantizer.set_module_type(nn.Linear, get_symmetric_quantization_config(is_per_channel=True,
                                                                               is_dynamic=True))
        # A Linear on a 2-D input exports as addmm, which XNNPACK takes static but not dynamic:
        # dynamic, it stayed float on portable kernels. Those get static int8 like the convs.
        # On Echo-E3Net that is E2FA's MLP; E2FA's own glue (its statistics row and output scaling)
        # stays float (int8_recipe.WHOLE_FLOAT_GLUE says why and what it measured).
        static_linears = [n for n in _linears_on_2d_inputs(model, example) if not _kept(n, keep)]
        for name in static_linears:
            quantizer.set_module_name(name, config)
        recipe_d = {
            "name": "whole",
            "weights": "int8 symmetric per-channel, every conv and linear layer",
            "activations": "convs: int8 per-tensor affine, min/max over the calibration clips; "
                           "Linear: int8, quantized dynamically per call (XNNPACK qd8); " + _GLUE_INT8,
            "int8_modules": "all",
            "float": ", ".join(keep) if keep else "none",
        }
        if glue:
            recipe_d["float_glue"] = list(glue)
        if static_linears:
            recipe_d["static_int8_linears"] = static_linears
        if keep_float:
            recipe_d["kept_float"] = list(keep_float)
        return quantizer, recipe_d
    scope = int8_scope(model)
    quantizer = xnnpack_quantizer().set_global(config).set_filter_function(_in_scope(scope, keep_float))
    recipe_d = {
        "name": "conv-stages",
        "weights": "int8 symmetric per-channel",
        "activations": "int8 per-tensor affine, min/max over the calibration clips; " + _GLUE_INT8,
        "int8_modules": list(scope) if scope else "all",
        "float": "Linear layers" + ("" if scope is None else " and every module outside int8_modules"),
    }
    if keep_float:
        recipe_d["kept_float"] = list(keep_float)
    return quantizer, recipe_d


_GLUE_INT8 = ("LeakyReLU int8 where every reader of its output is int8, and the pools' time max "
              "int8 on int8 inputs (xnnpack_int8_ops)")


def _kept(name: str, keep: Sequence[str]) -> bool:
    return any(_under(name, k) for k in keep)


def _linears_on_2d_inputs(model: Any, example: Any) -> list[str]:
    """Names of the Linear modules that see a 2-D input when `model` runs `example` (none without)."""
    if example is None:
        return []
    import torch
    from torch import nn

    found: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: found.append(name)
                                     if args and args[0].dim() == 2 else None)
             for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(found))
