"""torch.export -> an in-memory Core ML ML program (coremltools.convert), and coremltools' quiet side.

The torch.export graph is fixed up for coremltools 9's torch frontend first: no-op `alias` nodes
are dropped, and a tanh GELU keeps its tanh (coremltools would silently emit the exact GELU;
DESIGN.md: export never approximates silently). coremltools' console chatter is captured
(`quiet_coremltools`), shown by the caller only on failure. coremltools is imported inside the
functions.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterator, Sequence

from echoedge.convert.artefact import INPUT_NAME, OUTPUT_NAMES
from echoedge.errors import EchoEdgeError, first_line

DEPLOYMENT_TARGET = "iOS17"  # first target with quantize/dequantize ops (W8A8)


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[io.StringIO]:
    """Capture coremltools' chatter (progress bars, version warnings) into a buffer.

    The caller shows the buffer only when something fails; a normal export prints one line per
    step. Python-level streams only: C++ logging of the libraries it imports still reaches fd 2.
    """
    import logging
    import warnings

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lvl in zip(loggers, old_levels):
            lg.removeHandler(handler)
            lg.setLevel(lvl)


def _import_coremltools() -> Any:
    try:
        with quiet_coremltools():
            import coremltools as ct
    except ImportError as e:
        raise EchoEdgeError(f"coremltools is not installed ({first_line(e)}); "
                            "install the pinned version from requirements.txt") from None
    return ct


def convert_to_mlmodel(model: Any, example: Any, compute_precision: str) -> Any:
    """torch.export + coremltools.convert: an in-memory MLModel (not loadable for prediction
    off macOS), input named 'clip', outputs named by OUTPUT_NAMES (its first n: an EF-only model's is 'ef')."""
    import torch

    ct = _import_coremltools()
    with torch.no_grad():
        ep = torch.export.export(model.eval(), (example,)).run_decompositions({})
    _drop_aliases(ep)
    _positional_gelu_approximation(ep)
    n_out = len([s for s in ep.graph_signature.output_specs])
    # Echo-E3Net's five, or the EF of an EF-only model: a prefix of OUTPUT_NAMES (artefact.py).
    outputs = [ct.TensorType(name=n) for n in OUTPUT_NAMES[:n_out]] if n_out <= len(OUTPUT_NAMES) else None
    prec = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}[compute_precision]
    return ct.convert(
        ep,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))],
        outputs=outputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
        compute_precision=prec,
        skip_model_load=True,
    )


def _drop_aliases(ep: Any) -> None:
    """Replace `aten.alias` nodes (a no-op view, e.g. a full-range slice) by their input.

    coremltools 9's torch frontend has no `alias` op ("Unsupported fx node alias"); the value is
    the input itself, so the graph computes the same function without it.
    """
    import torch

    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (torch.ops.aten.alias.default,
                                                          torch.ops.aten.alias_copy.default):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            changed = True
    if changed:
        graph.lint()
        ep.graph_module.recompile()


def _positional_gelu_approximation(ep: Any) -> None:
    """Pass gelu's `approximate="tanh"` positionally, so coremltools sees it.

    coremltools 9 reads only gelu's positional inputs; torch.export keeps `approximate` as a
    keyword, so a tanh GELU silently became the exact (erf) GELU in the program (~1e-4 relative on
    EF for the shipped checkpoint). DESIGN.md: export never approximates silently. With the
    positional argument, coremltools' own gelu conversion fails on the plain string, hence the
    replacement registered by _register_gelu_with_approximation.
    """
    import torch

    _register_gelu_with_approximation()
    changed = False
    for node in ep.graph_module.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.gelu.default and "approximate" in node.kwargs:
            kwargs = dict(node.kwargs)
            node.args = (*node.args, kwargs.pop("approximate"))
            node.kwargs = kwargs
            changed = True
    if changed:
        ep.graph_module.recompile()


_GELU_REGISTERED = False


def _register_gelu_with_approximation() -> None:
    """Replace coremltools' torch `gelu` conversion with one that reads a positional
    `approximate` given as a plain string (its own expects a Var and fails on "tanh")."""
    global _GELU_REGISTERED
    if _GELU_REGISTERED:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def gelu(context: Any, node: Any) -> None:
        inputs = _get_inputs(context, node)
        approximate = "none"
        if len(inputs) > 1:
            a = inputs[1]
            approximate = a if isinstance(a, str) else a.val
        mode = {"tanh": "TANH_APPROXIMATION", "none": "EXACT"}.get(approximate)
        if mode is None:
            raise ValueError(f"gelu approximate={approximate!r} has no Core ML mode")
        context.add(mb.gelu(x=inputs[0], mode=mode, name=node.name))

    register_torch_op(gelu, override=True)
    _GELU_REGISTERED = True


def load_program_quietly(pkg: Path) -> tuple[Any, Any]:
    """The MIL program and model spec of a saved package, coremltools' output captured."""
    from echoedge.mil.program import load_mil_program

    with quiet_coremltools():
        return load_mil_program(pkg)


__all__: Sequence[str] = ("DEPLOYMENT_TARGET", "convert_to_mlmodel", "load_program_quietly",
                          "quiet_coremltools")
