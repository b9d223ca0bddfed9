"""Deploy form -> ExecuTorch `.pte` (XNNPACK delegate), fp32 or int8, as an artefact folder.

    torch.export (static 1xCxTxHxW input)
      -> model.deploy_layout.frames_stay_4d: the 5D round trips between the deploy form's 2D ops
         rewritten away (exact), so XNNPACK does not transpose around each of them; exported again
      -> int8 only: PT2E static quantization, XNNPACK quantizer (symmetric, per-channel weights,
         min/max activation ranges), calibrated on every clip of a calibration set, one clip at
         a time; the recipe (`quantizer_for`) keeps the convs where the multiply-adds are int8
         and the attention, Linear layers and heads float
      -> to_edge_transform_and_lower(partitioner=[XnnpackPartitioner with int8 LeakyReLU and
         maximum (xnnpack_int8_ops)]) -> to_executorch()
      -> model.pte, plus model.bpte: a BundledProgram holding golden inputs and the outputs this
         very program gave for them on the host, so a device can check its own runtime.

The folder's manifest records the delegation (ops inside XNNPACK, ops left on portable kernels),
the host-side error of the program against the eager deploy form, and the calibration id.
The XNNPACK quantizer quantizes inside the graph, so the program's I/O stays float32.

executorch/torchao are imported inside the functions: `import echoedge.convert` must stay cheap.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from echoedge.convert.artefact import (
    OUTPUT_NAMES, ArtefactManifest, echo_tensor_specs, output_errors, tool_versions,
    write_artefact,
)
from echoedge.convert.golden_vectors import calibration_and_golden
from echoedge.convert.executorch_quantizer import quantizer_for
from echoedge.convert.output_shift import OutputShift, shift_line, take_out_graph_shift
from echoedge.convert.int8_recipe import DEFAULT_RECIPE, RECIPES, check_recipe
from echoedge.convert.xnnpack_int8_ops import partitioner
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, first_line

PRECISIONS = ("fp32", "int8")
RUNTIME = "executorch-xnnpack"
MODEL_FILE = "model.pte"
BUNDLE_FILE = "model.bpte"
# Tolerances a device should verify model.bpte with. The expected outputs come from XNNPACK on
# the host; another CPU's kernels round differently (fp32: summation order; int8: requantization
# of intermediate activations can move by one step), so these are loose on purpose.
BUNDLE_TOLERANCE = {"fp32": {"rtol": 1e-3, "atol": 1e-3}, "int8": {"rtol": 2e-2, "atol": 2e-2}}
_NOT_KERNELS = {"getitem"}  # bookkeeping of the graph, not kernels: getitem unpacks delegate outputs


class CalibrationData(Protocol):
    """What the converter needs of an echoedge.calibration.CalibrationSet."""

    clips: np.ndarray  # float32 (N, C, T, H, W), normalised as the ClipSpec says
    id: str


@dataclass
class Delegation:
    subgraphs: int
    delegated_nodes: int
    portable_nodes: int
    by_op: dict[str, dict[str, int]]  # op -> {"xnnpack": n, "portable": m}

    def to_dict(self) -> dict[str, Any]:
        return {"xnnpack_subgraphs": self.subgraphs, "xnnpack_nodes": self.delegated_nodes,
                "portable_nodes": self.portable_nodes, "by_op": self.by_op}


def export_executorch(
    model: Any,
    spec: ClipSpec,
    out_dir: str | Path,
    precision: str,
    calibration: CalibrationData | None,
    source_checkpoint_sha256: str,
    golden_inputs: np.ndarray | None = None,
    progress: bool = True,
    overwrite: bool = False,
    keep_float: Sequence[str] = (),
    recipe: str = DEFAULT_RECIPE,
) -> Path:
    """Convert a deploy-form module to an ExecuTorch artefact folder at `out_dir`; return it.

    `golden_inputs` (float32 (G, C, T, H, W)) go into model.bpte; without them the first clips of
    the calibration set are used, or seeded random clips when there is none. `keep_float` (int8
    only) names module paths kept float on top of the recipe (mixed precision, `quantizer_for`);
    the manifest's recipe lists them.
    """
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise EchoEdgeError(f"ExecuTorch precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise EchoEdgeError(f"{out_dir}: int8 needs a calibration set (static quantization "
                            "takes its activation ranges from real clips)")
    keep_float = tuple(keep_float)
    check_recipe(recipe)
    if keep_float:
        if precision != "int8":
            raise EchoEdgeError(f"{out_dir}: keep_float applies to int8 only (got {precision})")
        names = dict(model.named_modules())
        unknown = [k for k in keep_float if k not in names]
        if unknown:
            raise EchoEdgeError(f"{out_dir}: keep_float names modules the model does not have: "
                                f"{', '.join(unknown)}")
    clip_shape = tuple(spec.input_shape(1))
    clips, golden = calibration_and_golden(calibration, golden_inputs, clip_shape)
    _refuse_3d_ops(model)

    def build(tmp: Path) -> ArtefactManifest:
        return _build(model, spec, tmp, precision, clips, calibration, golden,
                      source_checkpoint_sha256, progress, keep_float, recipe)

    return write_artefact(out_dir, build, overwrite=overwrite)


def _refuse_3d_ops(model: Any) -> None:
    # A Conv3d exports and lowers without complaint and then fails inside the runtime
    # (reference/toolchain.md), so catch the mistake of passing the reference model here.
    from torch import nn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d)):
            raise EchoEdgeError(f"model has a 3D op at '{name}' ({type(m).__name__}), which ExecuTorch "
                                "cannot run; convert its deploy form (echoedge.model.deploy.to_deploy_form)")


def _build(model: Any, spec: ClipSpec, tmp: Path, precision: str, clips: np.ndarray | None,
           calibration: CalibrationData | None, golden: np.ndarray, checkpoint_sha: str,
           progress: bool, keep_float: Sequence[str] = (), recipe: str = DEFAULT_RECIPE
           ) -> ArtefactManifest:
    import torch

    from echoedge.model.deploy_layout import frames_stay_4d
    from echoedge.model.registry import name_of

    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    model = model.eval()
    example = (torch.from_numpy(np.ascontiguousarray(golden[:1])),)

    t0 = time.perf_counter()
    say(f"ExecuTorch {precision}: exporting {tuple(example[0].shape)}")
    recipe_d = None  # the int8 recipe's description, from the quantizer that built the program
    shift = None
    with torch.no_grad():
        ep = torch.export.export(model, example)
        gm = ep.module()
        if frames_stay_4d(gm):  # batch 1: no 5D round trips between the 2D ops (deploy_layout)
            ep = torch.export.export(gm, example)
        if precision == "int8":
            ep, recipe_d, shift = _quantize(model, ep, example, clips, progress, keep_float, recipe)
            if shift is not None:
                say(f"ExecuTorch int8: output shift taken out ({shift_line(shift.outputs, shift.shift)})")
    timings["export_quantize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("ExecuTorch: lowering to XNNPACK")
    program, delegation = _lower(ep)
    timings["lower"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_path = tmp / MODEL_FILE
    model_path.write_bytes(program.buffer)
    # Golden outputs from the written file through the runtime (what a user will run), and the
    # host-side error of the program against the eager deploy form on the same inputs.
    try:
        outs = run_program(model_path, golden, quantized=precision != "fp32")
    except Exception as e:  # e.g. a kernel that exists at export time but rejects its input
        raise EchoEdgeError(f"the converted {precision} program fails in the ExecuTorch runtime "
                            f"({first_line(e)}); no artefact written") from None
    with torch.inference_mode():
        ref = [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(golden)))]
    vs_eager = {name: output_errors(o, r) for name, o, r in zip(OUTPUT_NAMES, outs, ref)}
    timings["run_check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bundle = _write_bundle(program, tmp / BUNDLE_FILE, golden, outs, precision)
    timings["bundle"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    if progress:
        print(delegation_table(delegation.to_dict()))
        if bundle.get("error"):
            print(f"warning: no {BUNDLE_FILE}: {bundle['error']}")
    inputs, outputs = echo_tensor_specs(example[0].shape, [(1, *o.shape[1:]) for o in outs])
    calib = None
    if precision == "int8" and calibration is not None:
        calib = {"id": calibration.id, "clips": int(len(clips))}
        meta = getattr(calibration, "manifest", None) or {}
        for key in ("strategy", "split", "seed"):  # echoedge.calibration's manifest, when present
            if key in meta:
                calib[key] = meta[key]
    return ArtefactManifest(
        format="executorch",
        precision=precision,
        runtime=RUNTIME,
        model_file=MODEL_FILE,
        clip_spec=spec.to_dict(),
        inputs=inputs,
        outputs=outputs,
        source_checkpoint_sha256=checkpoint_sha,
        model=name_of(model),
        calibration_id=calib["id"] if calib else None,
        tool_versions=tool_versions("executorch", "torchao"),
        details={
            "delegation": delegation.to_dict(),
            "quantization": {**_quant_details(precision, calib, keep_float, recipe_d),
                             **({"output_shift": shift.to_dict()} if shift else {})},
            "golden_vs_eager": {"reference": "the eager module that was converted (deploy form)",
                                "cases": int(len(golden)), "errors": vs_eager},
            "bundled_program": bundle,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        },
    )


def _quantize(model: Any, ep: Any, example: tuple[Any, ...], clips: np.ndarray | None,
              progress: bool, keep_float: Sequence[str] = (), recipe: str = DEFAULT_RECIPE
              ) -> tuple[Any, dict[str, Any], OutputShift | None]:
    """The calibrated, converted program, the recipe's description (for the manifest) and the
    output shift taken out of it (the whole recipe, on a model that states its output offset)."""
    import torch
    from rich.progress import Progress
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    assert clips is not None
    quantizer, recipe_d = quantizer_for(model, keep_float=keep_float, recipe=recipe, example=example)
    prepared = prepare_pt2e(ep.module(), quantizer)
    # Batch 1, as the program will run: observers then see the per-clip ranges the device sees.
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("calibrating", total=len(clips))
        for clip in clips:
            prepared(torch.from_numpy(np.ascontiguousarray(clip[None])))
            bar.advance(task)
    converted = convert_pt2e(prepared)
    shift = take_out_graph_shift(converted, model, clips) if recipe == "whole" else None
    return torch.export.export(converted, example), recipe_d, shift


def _lower(ep: Any) -> tuple[Any, Delegation]:
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    # A dynamically quantized linear that XNNPACK does not take keeps its choose_qparams /
    # dequantize on portable kernels; to_executorch needs their out-variants registered.
    import executorch.kernels.quantized  # noqa: F401

    edge = to_edge_transform_and_lower(ep, partitioner=[partitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    by_op: dict[str, dict[str, int]] = {}
    portable = 0
    for op, b in sorted(info.delegation_by_operator.items()):
        if op in _NOT_KERNELS:
            continue
        by_op[op] = {"xnnpack": int(b.delegated), "portable": int(b.non_delegated)}
        portable += int(b.non_delegated)
    delegation = Delegation(int(info.num_delegated_subgraphs), int(info.num_delegated_nodes),
                            portable, by_op)
    return edge.to_executorch(), delegation


def run_program(path: Path, clips: np.ndarray, quantized: bool) -> list[np.ndarray]:
    """Run a batch-1 .pte on each clip; outputs concatenated over the clips."""
    import torch
    from executorch.runtime import Runtime

    if quantized:
        import executorch.kernels.quantized  # noqa: F401  registers the quantized out-variants

    method = Runtime.get().load_program(path).load_method("forward")
    per_clip = [method.execute([torch.from_numpy(np.ascontiguousarray(c[None]))]) for c in clips]
    return [np.concatenate([o[k].numpy() for o in per_clip]) for k in range(len(per_clip[0]))]


def _quant_details(precision: str, calib: dict[str, Any] | None, keep_float: Sequence[str] = (),
                   recipe_d: dict[str, Any] | None = None) -> dict[str, Any]:
    if precision == "fp32":
        return {"scheme": None}
    return {
        "scheme": "pt2e static, XNNPACKQuantizer" + (" (mixed: kept_float modules float)" if keep_float else ""),
        "recipe": recipe_d,
        "io": "float32 (quantize/dequantize inside the program)",
        "calibration": calib,
    }


def _write_bundle(program: Any, path: Path, golden: np.ndarray, outs: list[np.ndarray],
                  precision: str) -> dict[str, Any]:
    """Write model.bpte and check it on the host; on failure say why instead of writing it."""
    import torch

    tol = BUNDLE_TOLERANCE[precision]
    try:
        from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
        from executorch.devtools.bundled_program.core import BundledProgram
        from executorch.devtools.bundled_program.serialize import (
            serialize_from_bundled_program_to_flatbuffer,
        )
        from executorch.extension.pybindings import portable_lib

        cases = [
            MethodTestCase(inputs=[torch.from_numpy(np.ascontiguousarray(golden[i : i + 1]))],
                           expected_outputs=[torch.from_numpy(np.ascontiguousarray(o[i : i + 1]))
                                             for o in outs])
            for i in range(len(golden))
        ]
        bundled = BundledProgram(program, [MethodTestSuite(method_name="forward", test_cases=cases)])
        buf = serialize_from_bundled_program_to_flatbuffer(bundled)
        # Verify before calling it a self-check: load the bytes as a device would and run every case.
        loaded = portable_lib._load_bundled_program_from_buffer(buf)
        for i in range(len(cases)):
            loaded.verify_result_with_bundled_expected_output("forward", i, tol["rtol"], tol["atol"])
    except Exception as e:  # any failure of an experimental API: record it, ship the .pte anyway
        return {"file": None, "error": f"{type(e).__name__}: {first_line(e)}"}
    path.write_bytes(buf)
    return {"file": path.name, "sha256": hashlib.sha256(buf).hexdigest(), "method": "forward",
            "cases": len(cases), "verified_on_host": True, "suggested_tolerance": tol,
            "expected_outputs": "this program's own outputs on the host (XNNPACK, x86-64)"}


def delegation_table(delegation: dict[str, Any]) -> str:
    """A short text table of a manifest's details['delegation']."""
    rows = sorted(delegation["by_op"].items(), key=lambda kv: (-kv[1]["portable"], kv[0]))
    width = max([len(op) for op, _ in rows] + [2])
    lines = [f"{'op':<{width}}  xnnpack  portable"]
    lines += [f"{op:<{width}}  {c['xnnpack']:>7}  {c['portable']:>8}" for op, c in rows]
    lines.append(f"{'total':<{width}}  {delegation['xnnpack_nodes']:>7}  {delegation['portable_nodes']:>8}"
                 f"   ({delegation['xnnpack_subgraphs']} XNNPACK subgraphs)")
    return "\n".join(lines)


def portable_ops(delegation: dict[str, Any]) -> dict[str, int]:
    """Ops left on portable kernels, with counts (empty when everything is delegated)."""
    return {op: c["portable"] for op, c in delegation["by_op"].items() if c["portable"]}


__all__: Sequence[str] = ("export_executorch", "delegation_table", "portable_ops", "run_program",
                          "PRECISIONS", "RUNTIME", "RECIPES", "DEFAULT_RECIPE")
