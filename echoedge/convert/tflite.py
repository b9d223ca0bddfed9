"""Deploy form -> TFLite (`.tflite`), fp32 / fp16 / int8 / int8-full, as an artefact folder.

    deploy form -> onnx_export (static ONNX, onnxsim, onnx2tf substitutions, checked in ONNX Runtime)
      -> onnx2tf 1.28.8 -> a TensorFlow SavedModel (input kept NCTHW) in a private temp folder
      -> tf.lite.TFLiteConverter.from_saved_model:
           fp32       plain conversion
           fp16       float16 weights (DEQUANTIZE to float32 at load; XNNPACK runs float32)
           int8       selective int8 (the default): static int8 calibrated on the echo calibration
                      set, with the numerically fragile ops (layer-norm pieces, softmax, attention
                      matmuls, ...) denylisted through tf.lite's QuantizationDebugger so they stay
                      float. Float I/O. For Echo-E3Net the recipe is also scoped, as ExecuTorch's
                      (executorch.int8_scope): only the CNN stages (95 % of the MACs) are
                      int8, every op outside them is a denylisted node and stays float
                      (int8_scope_plan maps the module scope onto the TFLite graph). Other models:
                      CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED all int8.
           int8-full  all-integer (TFLITE_BUILTINS_INT8 only) with int8 input and outputs; their
                      scale / zero point are in the manifest's TensorSpecs. For accelerators that
                      need it: on CPU it is slower and less accurate (reference/toolchain.md).
      -> op inspection of the written file (tflite_ops): Flex ops fail every precision, float heavy
         ops fail int8 (scoped int8: float in-scope heavy ops fail it, the out-of-scope ones are
         listed as "float by recipe"); int8 op fraction and the ops left in float go into the manifest
      -> the file runs in the LiteRT interpreter on golden clips and is compared with the eager
         deploy form (fp32 must agree within float rounding, or the export fails).

onnx2tf writes dozens of files and much console output: it runs in a temp folder with its output
captured (shown only on failure, first line in the error); only model.tflite and manifest.json go
into the artefact (write_artefact). Within one process the SavedModel is built once per model and
input shape and shared by the precisions (the CLI exports all four from one deploy form).

onnx2tf (fp32 files) was measured unreliable on channel layouts without its slow "strict mode", so
correctness is not assumed: the fp32 check against eager is what makes a file pass.

tensorflow / onnx2tf / ai_edge_litert are imported inside the functions.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from echoedge.convert.artefact import (
    INPUT_NAME, OUTPUT_NAMES, ArtefactManifest, TensorSpec, check_clips, output_errors, tool_versions,
    write_artefact,
)
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, first_line

PRECISIONS = ("fp32", "fp16", "int8", "int8-full")
MODEL_FILE = "model.tflite"
GOLDEN_CASES = 3
SIGNATURE_KEY = "serving_default"
# Interpreters: "tf" = tf.lite.Interpreter, "litert" = ai_edge_litert's. Both apply XNNPACK by
# default. DEFAULT_INTERPRETER is the faster one in bench/bench_tflite.py (paper config, batch 1,
# 2 threads, this machine); the runner records which one produced each figure.
INTERPRETERS = ("tf", "litert")
DEFAULT_INTERPRETER = "tf"
# Ops kept float in the selective int8 file (tf.lite op names). Measured on this machine
# (toolchain.md): quantizing layer norm, softmax, tanh and the attention matmuls made XNNPACK split
# the graph into ~25 pieces, and the file slower and less accurate than leaving them float.
FLOAT_OPS_IN_INT8 = ("RSQRT", "SQUARED_DIFFERENCE", "SOFTMAX", "MEAN", "SUB", "TANH",
                     "BATCH_MATMUL", "LOGISTIC", "REDUCE_MAX", "SQRT", "DIV", "SUM", "MAXIMUM",
                     "POW")
# fp32 .tflite vs the eager deploy form: relative to max(1, max |eager|). onnx2tf's graph (e.g.
# its layer-norm decomposition) rounds differently from PyTorch; a layout or wiring error is
# orders of magnitude larger.
FP32_RTOL = 2e-3
ROUTES = {
    "fp32": "onnx2tf SavedModel -> TFLiteConverter (float32)",
    "fp16": "onnx2tf SavedModel -> TFLiteConverter (float16 weights)",
    "int8": "onnx2tf SavedModel -> TFLiteConverter + QuantizationDebugger (selective int8: "
            "conv/depthwise/fully-connected int8 in the int8 scope, denylisted ops and nodes float)",
    "int8-full": "onnx2tf SavedModel -> TFLiteConverter (TFLITE_BUILTINS_INT8, int8 I/O)",
}


class CalibrationData(Protocol):
    """What the converter needs of an echoedge.calibration.CalibrationSet."""

    clips: np.ndarray  # float32 (N, C, T, H, W), normalised as the ClipSpec says
    id: str


# ----------------------------------------------------------------------------- public entry
def export_tflite(
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
) -> Path:
    """Convert a deploy-form module to a TFLite artefact folder at `out_dir`; return it.

    `keep_float` (scoped int8 only) names module paths whose convs stay float on top of the
    recipe (mixed precision): their TFLite convs, located by weight, become denylisted nodes.
    """
    out_dir = Path(out_dir)
    if precision not in PRECISIONS:
        raise EchoEdgeError(f"TFLite precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision.startswith("int8") and calibration is None:
        raise EchoEdgeError(f"{out_dir}: {precision} needs a calibration set (static quantization "
                            "takes its activation ranges from real clips)")
    keep_float = tuple(keep_float)
    float_weights: list[np.ndarray] = []
    if keep_float:
        float_weights = _keep_float_weights(model, keep_float, precision, out_dir)
    _require_toolchain()
    clip_shape = tuple(spec.input_shape(1))
    clips = check_clips(calibration.clips, clip_shape, "calibration set") if calibration is not None else None
    if golden_inputs is not None:
        golden = check_clips(golden_inputs, clip_shape, "golden inputs")
    elif clips is not None:
        golden = clips[:GOLDEN_CASES]
    else:
        golden = np.random.default_rng(0).standard_normal((GOLDEN_CASES, *clip_shape[1:])).astype(np.float32)
    _refuse_3d_ops(model)

    def build(tmp: Path) -> ArtefactManifest:
        return _build(model, spec, tmp, precision, clips, calibration, golden,
                      source_checkpoint_sha256, progress, keep_float, float_weights)

    return write_artefact(out_dir, build, overwrite=overwrite)


def _keep_float_weights(model: Any, keep_float: Sequence[str], precision: str,
                        out_dir: Path) -> list[np.ndarray]:
    """The 4-D conv weights (O, I, kh, kw) of the modules under `keep_float`, checked."""
    from torch import nn

    if precision != "int8":
        raise EchoEdgeError(f"{out_dir}: keep_float applies to int8 only (got {precision})")
    if not int8_scope(model):
        raise EchoEdgeError(f"{out_dir}: keep_float needs the scoped int8 recipe (Echo-E3Net)")
    names = dict(model.named_modules())
    unknown = [k for k in keep_float if k not in names]
    if unknown:
        raise EchoEdgeError(f"{out_dir}: keep_float names modules the model does not have: {', '.join(unknown)}")
    out = [m.weight.detach().cpu().numpy().astype(np.float32) for n, m in names.items()
           if isinstance(m, nn.Conv2d) and any(n == k or n.startswith(k + ".") for k in keep_float)]
    if not out:
        raise EchoEdgeError(f"{out_dir}: keep_float ({', '.join(keep_float)}) holds no Conv2d")
    return out


def _require_toolchain() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow", "ai_edge_litert")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EchoEdgeError("the TFLite toolchain is not installed (missing: " + ", ".join(missing)
                            + "); install the pinned versions from requirements.txt")


def _refuse_3d_ops(model: Any) -> None:
    # TFLite never runs CONV_3D in int8 and XNNPACK does not take it (toolchain.md).
    from torch import nn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d)):
            raise EchoEdgeError(f"model has a 3D op at '{name}' ({type(m).__name__}), which TFLite "
                                "cannot run in int8 or on XNNPACK; convert its deploy form "
                                "(echoedge.model.deploy.to_deploy_form)")


# ----------------------------------------------------------------------------- console capture
@contextlib.contextmanager
def captured_output(log: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr -- Python's and the C++ libraries' file
    descriptors alike -- to `log` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(log, "ab", buffering=0) as raw, open(log, "a", buffering=1) as text:
        os.dup2(raw.fileno(), 1)
        os.dup2(raw.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            text.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_reason(log: Path, e: BaseException) -> str:
    """The most telling line: the exception's, else the last error-looking line of the log."""
    import re

    text = log.read_text(errors="replace") if log.is_file() else ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # onnx2tf colours its messages
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if any(k in l for k in ("Error", "error", "ERROR", "failed"))]
    msg = first_line(e)
    if msg in ("", "SystemExit", "1") or isinstance(e, SystemExit):
        msg = errors[-1] if errors else (lines[-1] if lines else type(e).__name__)
    return msg[:300]


# ----------------------------------------------------------------------------- front end
@dataclass
class FrontEnd:
    """ONNX + onnx2tf SavedModel of one model, shared by its precisions within a process."""

    folder: Path  # temp folder holding model.onnx and saved_model/
    saved_model: Path
    onnx: Any  # onnx_export.OnnxExport
    onnx2tf_s: float


_FRONT_ENDS: dict[str, tuple[FrontEnd, tempfile.TemporaryDirectory]] = {}


def _cleanup_front_ends() -> None:
    for _, tmp in _FRONT_ENDS.values():
        tmp.cleanup()
    _FRONT_ENDS.clear()


atexit.register(_cleanup_front_ends)


def _fingerprint(model: Any, example: np.ndarray) -> str:
    import torch

    h = hashlib.sha256(type(model).__qualname__.encode())
    h.update(str(example.shape).encode())
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def front_end(model: Any, example: np.ndarray, say: Callable[..., None]) -> FrontEnd:
    """The ONNX file and onnx2tf SavedModel of `model` on a (1, C, T, H, W) example (cached)."""
    key = _fingerprint(model, example)
    if key in _FRONT_ENDS:
        return _FRONT_ENDS[key][0]
    from echoedge.convert.onnx_export import export_onnx

    tmp = tempfile.TemporaryDirectory(prefix="echoedge-tflite-")
    try:
        folder = Path(tmp.name)
        say(f"TFLite: exporting ONNX (opset 17, onnxsim) {tuple(example.shape)}")
        ox = export_onnx(model, example, folder / "model.onnx")
        say(f"TFLite: onnx2tf -> SavedModel ({len(ox.substitutions)} module substitutions, "
            "output captured)")
        t0 = time.perf_counter()
        saved = folder / "saved_model"
        _run_onnx2tf(folder / "model.onnx", saved)
        fe = FrontEnd(folder, saved, ox, time.perf_counter() - t0)
    except BaseException:
        tmp.cleanup()
        raise
    _FRONT_ENDS[key] = (fe, tmp)
    return fe


def _run_onnx2tf(onnx_path: Path, saved: Path) -> None:
    try:
        import onnx2tf
    except Exception as e:  # onnx2tf imports undeclared helpers (onnx_graphsurgeon, sng4onnx, ...)
        raise EchoEdgeError(f"onnx2tf cannot be imported ({first_line(e)}); the TFLite export needs "
                            "onnx2tf 1.28.8 and its helpers (see requirements.txt)") from None
    log = saved.parent / "onnx2tf.log"
    try:
        with captured_output(log):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(saved),
                # Keep the clip NCTHW: the runner feeds what the manifest says, and onnx2tf's
                # channels-last guess for a rank-5 input was not needed by any kernel here.
                keep_ncw_or_nchw_or_ncdhw_input_names=[INPUT_NAME],
                # Strict mode re-checks every op by trying transpositions: >10 min and >11 GB on
                # the tiny config. The fp32 check against eager (below) catches layout errors.
                disable_strict_mode=True,
                not_use_onnxsim=True,  # already simplified; onnx2tf's own pass would redo it
                output_signaturedefs=True,  # the serving signature names the outputs
                non_verbose=True,
                verbosity="error",
            )
    except (Exception, SystemExit) as e:  # onnx2tf calls sys.exit(1) on some errors
        raise EchoEdgeError(f"{onnx_path.name}: onnx2tf failed ({_log_reason(log, e)})") from None
    if not (saved / "saved_model.pb").is_file():
        raise EchoEdgeError(f"{onnx_path.name}: onnx2tf wrote no SavedModel ({_log_reason(log, RuntimeError(''))})")


# ----------------------------------------------------------------------------- int8 scope
def int8_scope(model: Any) -> tuple[str, ...] | None:
    """Module-path prefixes whose convs the int8 file quantizes (None: the whole graph).

    The ExecuTorch recipe's scope (echoedge.convert.executorch.int8_scope, measured there): for
    Echo-E3Net the CNN stages, 95 % of the multiply-adds; the stem (12 weights, the most
    EF-sensitive layer), the hybrid stages, E2CBD and E2FA stay float.
    """
    from echoedge.convert.executorch import int8_scope as recipe_scope

    return recipe_scope(model)


@dataclass
class Int8ScopePlan:
    """A module scope mapped onto one (calibrated, float) TFLite graph.

    onnx2tf does not keep the ONNX node names (its ops are named `tf.nn.convolution_5` and the
    like), so the scope is located by weights: an ONNX Conv inside the scope (its node name starts
    with the module path, e.g. /encoder/cnn.0/...) is the TFLite CONV_2D / DEPTHWISE_CONV_2D whose
    filter holds the same numbers. The int8 part is those convs and every op they depend on; every
    other op is a denylisted node (QuantizationDebugOptions.denylisted_nodes, matched on op
    output-tensor names) and stays float.
    """

    modules: tuple[str, ...]
    onnx_convs: int  # Conv nodes of the ONNX graph inside the scope
    heavy_nodes: list[str]  # output names of the in-scope convs in the TFLite graph
    int8_part_ops: int  # ops in the int8 part (in-scope convs and their ancestors)
    denylisted_nodes: list[str]  # output names of every other op
    kept_float_nodes: list[str] = field(default_factory=list)  # in-scope convs kept float (mixed)
    kept_float: tuple[str, ...] = ()  # the module paths they belong to

    def to_dict(self) -> dict[str, Any]:
        return {"int8_modules": list(self.modules), "onnx_convs_in_scope": self.onnx_convs,
                "int8_convs": len(self.heavy_nodes), "int8_part_ops": self.int8_part_ops,
                "denylisted_nodes": len(self.denylisted_nodes),
                "located_by": "in-scope ONNX Conv weights matched to TFLite conv filters; their "
                              "ancestors are the int8 part, every other op a denylisted node",
                **({"kept_float": list(self.kept_float), "kept_float_convs": len(self.kept_float_nodes),
                    "kept_float_nodes": list(self.kept_float_nodes)} if self.kept_float else {})}


@dataclass
class _GraphOp:
    op: str
    inputs: list[int]
    outputs: list[int]


def _tflite_graph(buf: bytes) -> tuple[list[_GraphOp], list[str], Callable[[int], np.ndarray | None]]:
    """Ops (subgraph 0), tensor names, and a reader of constant float32 tensors."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(buf, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items()
               if not k.startswith("_") and isinstance(v, int)}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append(builtin.get(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())), "?"))
    sg = model.Subgraphs(0)
    ops = [_GraphOp(codes[o.OpcodeIndex()],
                    [int(t) for t in o.InputsAsNumpy()] if o.InputsLength() else [],
                    [int(t) for t in o.OutputsAsNumpy()] if o.OutputsLength() else [])
           for o in (sg.Operators(i) for i in range(sg.OperatorsLength()))]
    names = [(sg.Tensors(i).Name() or b"").decode("utf-8", "replace") for i in range(sg.TensorsLength())]

    def const(t: int) -> np.ndarray | None:
        if t < 0:
            return None
        ten = sg.Tensors(t)
        if ten.Type() != schema.TensorType.FLOAT32:
            return None
        b = model.Buffers(ten.Buffer())
        if b is None or b.DataLength() == 0:
            return None
        shape = [int(x) for x in ten.ShapeAsNumpy()] if ten.ShapeLength() else []
        return np.frombuffer(b.DataAsNumpy().tobytes(), np.float32).reshape(shape)

    return ops, names, const


def _onnx_scope_weights(onnx_path: Path, modules: Sequence[str]) -> list[np.ndarray]:
    """Weights of the ONNX Conv nodes inside `modules`, each in the layouts a TFLite filter can
    take: CONV_2D (O, kh, kw, I) and, for a depthwise conv, DEPTHWISE_CONV_2D (1, kh, kw, O)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:  # constants onnxsim left as Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    # ONNX names nodes after module paths with '/' between attributes (/encoder/cnn.0/block/...).
    prefixes = tuple("/" + m.replace(".", "/") for m in modules)
    weights = []
    for n in graph.node:
        if n.op_type != "Conv" or not n.name.startswith(prefixes):
            continue
        w = inits.get(n.input[1])
        if w is None or w.ndim != 4:
            raise EchoEdgeError(f"{onnx_path.name}: in-scope conv {n.name} has no constant 4-D weight")
        weights.append(w.astype(np.float32))
    return weights


def int8_scope_plan(tflite: bytes, onnx_path: Path, modules: Sequence[str],
                    float_weights: Sequence[np.ndarray] = (),
                    keep_float: Sequence[str] = ()) -> Int8ScopePlan:
    """Map a module scope onto a float (calibrated) TFLite graph converted from `onnx_path`.

    `float_weights` (torch layout (O, I, kh, kw)) are the convs of the `keep_float` modules: their
    TFLite convs are denylisted (float) even inside the scope, and so are not part of the int8
    part unless an int8 conv depends on them (then only they are denylisted).
    """
    weights = _onnx_scope_weights(onnx_path, modules)
    if not weights:
        raise EchoEdgeError(f"{onnx_path.name}: no Conv node is named under the int8 scope "
                            f"({', '.join(modules)}); cannot scope the int8 file")
    ops, names, const = _tflite_graph(tflite)
    by_shape: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for k, w in enumerate(weights):
        by_shape.setdefault(w.transpose(0, 2, 3, 1).shape, []).append((k, w.transpose(0, 2, 3, 1)))
        if w.shape[1] == 1:
            by_shape.setdefault(w.transpose(1, 2, 3, 0).shape, []).append((k, w.transpose(1, 2, 3, 0)))
    found: set[int] = set()
    heavy: list[int] = []
    for i, o in enumerate(ops):
        if o.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(o.inputs) < 2:
            continue
        f = const(o.inputs[1])
        if f is None:
            continue
        hits = [k for k, w in by_shape.get(f.shape, []) if np.array_equal(f, w)]
        if hits:
            found.update(hits)
            heavy.append(i)
    if len(found) != len(weights):
        raise EchoEdgeError(f"{onnx_path.name}: {len(weights) - len(found)} of the {len(weights)} "
                            f"in-scope convs ({', '.join(modules)}) were not found in the TFLite "
                            "graph (onnx2tf changed their weights); cannot scope the int8 file")
    kept = _locate_convs(ops, const, float_weights) if len(float_weights) else set()
    if len(float_weights) and len(kept) < len(float_weights):
        raise EchoEdgeError(f"{onnx_path.name}: only {len(kept)} of the {len(float_weights)} convs kept "
                            f"float ({', '.join(keep_float)}) were found in the TFLite graph")
    heavy = [i for i in heavy if i not in kept]
    producer = {t: i for i, o in enumerate(ops) for t in o.outputs}
    part: set[int] = set()
    todo = list(heavy)
    while todo:  # the in-scope convs and everything they depend on
        i = todo.pop()
        if i in part:
            continue
        part.add(i)
        todo.extend(producer[t] for t in ops[i].inputs if t in producer)
    part -= kept  # a kept-float conv stays float even when an int8 conv depends on it
    deny = [names[t] for i, o in enumerate(ops) if i not in part for t in o.outputs]
    return Int8ScopePlan(tuple(modules), len(weights), [names[ops[i].outputs[0]] for i in heavy],
                         len(part), deny, [names[ops[i].outputs[0]] for i in sorted(kept)],
                         tuple(keep_float))


def _locate_convs(ops: list[_GraphOp], const: Callable[[int], np.ndarray | None],
                  weights: Sequence[np.ndarray]) -> set[int]:
    """Indices of the CONV_2D / DEPTHWISE_CONV_2D ops whose filter equals one of `weights`
    (torch layout), in either TFLite filter layout."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for w in weights:
        by_shape.setdefault(w.transpose(0, 2, 3, 1).shape, []).append(w.transpose(0, 2, 3, 1))
        if w.shape[1] == 1:
            by_shape.setdefault(w.transpose(1, 2, 3, 0).shape, []).append(w.transpose(1, 2, 3, 0))
    hits = set()
    for i, o in enumerate(ops):
        if o.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(o.inputs) < 2:
            continue
        f = const(o.inputs[1])
        if f is not None and any(np.array_equal(f, w) for w in by_shape.get(f.shape, [])):
            hits.add(i)
    return hits


def check_scoped_int8(path: str | Path, heavy_nodes: Sequence[str]) -> dict[str, Any]:
    """The op check of a scoped int8 file: no Flex op, every in-scope conv (named by its output
    tensor) int8. The float heavy ops outside the scope are returned as 'float by recipe'."""
    from echoedge.convert.tflite_ops import HEAVY_OPS, INTEGER_DTYPES, inspect_tflite

    path = Path(path)
    info = inspect_tflite(path)
    ops, names, _ = _tflite_graph(path.read_bytes())
    wanted = set(heavy_nodes)
    problems = []
    if info.flex_ops:
        problems.append("Flex (select-TF) ops the stock LiteRT interpreter cannot run: "
                        + ", ".join(info.flex_ops))
    seen: set[str] = set()
    float_in, by_recipe = [], []
    for rec, o in zip(info.ops, ops):  # subgraph 0 comes first in both
        if rec.op not in HEAVY_OPS:
            continue
        name = names[o.outputs[0]] if o.outputs else ""
        is_int = rec.compute_dtype in INTEGER_DTYPES
        if name in wanted:
            seen.add(name)
            if not is_int:
                float_in.append(f"{rec.op}#{rec.index} ({rec.compute_dtype})")
        elif not is_int:
            by_recipe.append(f"{rec.op}#{rec.index}")
    if float_in:
        shown = ", ".join(float_in[:8]) + (f" and {len(float_in) - 8} more" if len(float_in) > 8 else "")
        problems.append(f"float heavy ops inside the int8 scope of a file labelled int8: {shown}")
    if len(seen) != len(wanted):
        problems.append(f"{len(wanted) - len(seen)} of the {len(wanted)} in-scope convs are missing")
    if problems:
        raise EchoEdgeError(f"{path}: " + "; ".join(problems))
    counts: dict[str, int] = {}
    for r in by_recipe:
        counts[r.split("#")[0]] = counts.get(r.split("#")[0], 0) + 1
    return {"int8_heavy_ops_in_scope": len(seen), "float_by_recipe": dict(sorted(counts.items())),
            "float_by_recipe_ops": by_recipe}


# ----------------------------------------------------------------------------- TFLite converter
@dataclass
class Converted:
    data: bytes  # the .tflite file
    scope: Int8ScopePlan | None = None  # scoped int8 only


def convert_saved_model(saved: Path, precision: str, clips: np.ndarray | None,
                        layout: str, log: Path, progress: bool = True,
                        scope: Sequence[str] | None = None, onnx_path: Path | None = None,
                        float_weights: Sequence[np.ndarray] = (),
                        keep_float: Sequence[str] = ()) -> Converted:
    """The .tflite bytes of one precision from an onnx2tf SavedModel. `scope` (int8 only, with
    the ONNX file the SavedModel came from) limits int8 to the convs of those modules."""
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        # One clip at a time (batch 1, as the file runs), in the file's input layout.
        assert clips is not None
        for clip in clips:
            yield [to_layout(clip[None], layout)]

    import warnings

    # warnings: the QuantizationDebugger builds tf.lite.Interpreters, which warn of deprecation.
    with captured_output(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_ops=list(FLOAT_OPS_IN_INT8)))
            if not scope:
                return Converted(bytes(debugger.get_nondebug_quantized_model()))
            if onnx_path is None:
                raise EchoEdgeError("a scoped int8 conversion needs the ONNX file of the SavedModel")
            # Node names exist only once the calibrated graph does: read them from it, then
            # quantize again with the out-of-scope nodes denylisted (the options setter does).
            plan = int8_scope_plan(bytes(debugger.calibrated_model), onnx_path, scope,
                                   float_weights, keep_float)
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(FLOAT_OPS_IN_INT8), denylisted_nodes=plan.denylisted_nodes)
            return Converted(bytes(debugger.get_nondebug_quantized_model()), plan)
        elif precision == "int8-full":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return Converted(bytes(converter.convert()))


# ----------------------------------------------------------------------------- interpreter
def make_interpreter(path: str | Path, threads: int = 2, kind: str | None = None) -> Any:
    """A LiteRT interpreter on `path` with the default delegates (XNNPACK) and `threads` threads."""
    kind = kind or DEFAULT_INTERPRETER
    if kind not in INTERPRETERS:
        raise EchoEdgeError(f"unknown TFLite interpreter {kind!r}; choose from {', '.join(INTERPRETERS)}")
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import warnings

        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": measured faster
            warnings.simplefilter("ignore")
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(path), num_threads=int(threads))
    it.allocate_tensors()
    return it


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """(B, C, T, H, W) -> the file's input layout."""
    if layout == "NCTHW":
        return np.ascontiguousarray(batch)
    if layout == "NTHWC":
        return np.ascontiguousarray(batch.transpose(0, 2, 3, 4, 1))
    raise EchoEdgeError(f"unknown input layout {layout!r}")


def input_layout(shape: Sequence[int], clip_shape: Sequence[int]) -> str:
    """The file's input layout, read from its input shape (never assumed)."""
    b, c, t, h, w = clip_shape
    if list(shape) == [b, c, t, h, w]:
        return "NCTHW"
    if list(shape) == [b, t, h, w, c]:
        return "NTHWC"
    raise EchoEdgeError(f"the .tflite input has shape {list(shape)}, which is neither NCTHW "
                        f"{[b, c, t, h, w]} nor NTHWC {[b, t, h, w, c]}")


@dataclass
class TFLiteIO:
    """How to feed one .tflite file: its signature's input and output keys, layout, quantization."""

    layout: str
    input_key: str
    output_keys: list[str]  # in OUTPUT_NAMES order
    input_quant: tuple[float, int] | None
    output_quant: list[tuple[float, int] | None]


def signature_io(it: Any, clip_shape: Sequence[int]) -> TFLiteIO:
    """Read the serving signature: onnx2tf names its outputs output_0..output_4 in the ONNX
    graph's order, which is OUTPUT_NAMES (the export names them so)."""
    sigs = it.get_signature_list()
    if SIGNATURE_KEY not in sigs:
        raise EchoEdgeError(f"the .tflite has no '{SIGNATURE_KEY}' signature (has: {', '.join(sigs) or 'none'})")
    runner = it.get_signature_runner(SIGNATURE_KEY)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if len(ins) != 1:
        raise EchoEdgeError(f"the .tflite has {len(ins)} inputs, expected 1")
    in_key = next(iter(ins))
    keys = sorted(outs, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else 99)
    if len(keys) != len(OUTPUT_NAMES):
        raise EchoEdgeError(f"the .tflite has {len(keys)} outputs, expected {len(OUTPUT_NAMES)}")

    def quant(d: dict[str, Any]) -> tuple[float, int] | None:
        if d["dtype"] not in (np.int8, np.uint8):
            return None
        s, z = d["quantization"]
        return float(s), int(z)

    return TFLiteIO(input_layout(ins[in_key]["shape"].tolist(), clip_shape), in_key, keys,
                    quant(ins[in_key]), [quant(outs[k]) for k in keys])


def run_tflite(it: Any, io_: TFLiteIO, batch: np.ndarray) -> list[np.ndarray]:
    """Run a batch-1 file on each clip of an NCTHW float32 batch; float32 outputs."""
    runner = it.get_signature_runner(SIGNATURE_KEY)
    per = []
    for clip in batch:
        x = to_layout(clip[None], io_.layout)
        if io_.input_quant is not None:
            s, z = io_.input_quant
            x = np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)
        out = runner(**{io_.input_key: x})
        vals = []
        for key, q in zip(io_.output_keys, io_.output_quant):
            v = out[key]
            vals.append(v.astype(np.float32) if q is None else (v.astype(np.float32) - q[1]) * q[0])
        per.append(vals)
    return [np.concatenate([p[k] for p in per]) for k in range(len(per[0]))]


# ----------------------------------------------------------------------------- build
def _build(model: Any, spec: ClipSpec, tmp: Path, precision: str, clips: np.ndarray | None,
           calibration: CalibrationData | None, golden: np.ndarray, checkpoint_sha: str,
           progress: bool, keep_float: Sequence[str] = (),
           float_weights: Sequence[np.ndarray] = ()) -> ArtefactManifest:
    import torch

    from echoedge.convert.tflite_ops import check_ops, inspect_tflite

    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    model = model.eval()
    clip_shape = tuple(spec.input_shape(1))
    fe = front_end(model, np.ascontiguousarray(golden[:1]), say)
    timings["onnx_export"] = fe.onnx.seconds
    timings["onnx2tf"] = fe.onnx2tf_s

    t0 = time.perf_counter()
    say(f"TFLite {precision}: {ROUTES[precision]}"
        + (f", calibrating on {len(clips)} clips" if clips is not None else ""))
    # The SavedModel keeps the clip NCTHW (onnx2tf was told so); read it back, do not assume.
    layout = _saved_model_layout(fe.saved_model, clip_shape)
    log = fe.folder / f"convert-{precision}.log"
    scope = int8_scope(model) if precision == "int8" else None
    try:
        conv = convert_saved_model(fe.saved_model, precision, clips, layout, log, progress,
                                   scope=scope, onnx_path=fe.folder / "model.onnx",
                                   float_weights=float_weights, keep_float=keep_float)
    except EchoEdgeError:
        raise
    except Exception as e:
        raise EchoEdgeError(f"TFLiteConverter failed for {precision} ({_log_reason(log, e)})") from None
    model_path = tmp / MODEL_FILE
    model_path.write_bytes(conv.data)
    timings["tflite_convert"] = time.perf_counter() - t0

    # What is inside the file, not its name. A scoped int8 file has float convs by recipe: its
    # in-scope convs must be int8 (files without a scope keep the strict check).
    ops = inspect_tflite(model_path)
    scope_check = None
    if conv.scope is not None:
        scope_check = check_scoped_int8(model_path, conv.scope.heavy_nodes)
    else:
        check_ops(ops, precision)
    if progress:
        print(ops.table())

    t0 = time.perf_counter()
    try:
        it = make_interpreter(model_path, threads=2, kind="litert")
        io_ = signature_io(it, clip_shape)
        outs = run_tflite(it, io_, golden)
    except EchoEdgeError:
        raise
    except Exception as e:
        raise EchoEdgeError(f"the converted {precision} file fails in the LiteRT interpreter "
                            f"({first_line(e)}); no artefact written") from None
    with torch.inference_mode():
        ref = [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(golden)))]
    vs_eager = {name: output_errors(o, r, scale_floor=1.0) for name, o, r in zip(OUTPUT_NAMES, outs, ref)}
    if precision == "fp32":
        bad = {k: v["max_rel"] for k, v in vs_eager.items() if not v["max_rel"] <= FP32_RTOL}
        if bad:
            raise EchoEdgeError("the fp32 .tflite differs from the eager deploy form ("
                                + ", ".join(f"{k} rel {v:.1e}" for k, v in bad.items())
                                + f" > {FP32_RTOL:g}); onnx2tf mis-converted the graph; no artefact written")
    timings["run_check"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    inputs = [TensorSpec(INPUT_NAME, [int(s) for s in ops.inputs[0].shape] if ops.inputs else list(clip_shape),
                         "int8" if io_.input_quant else "float32", io_.layout,
                         *(io_.input_quant or (None, None)))]
    runner = it.get_signature_runner(SIGNATURE_KEY)
    out_details = runner.get_output_details()
    outputs = []
    for name, key, q in zip(OUTPUT_NAMES, io_.output_keys, io_.output_quant):
        shape = [int(s) for s in out_details[key]["shape"]]
        outputs.append(TensorSpec(name, shape, "int8" if q else "float32",
                                  "N" if len(shape) == 1 else "NK2", *(q or (None, None))))
    calib = None
    if clips is not None and calibration is not None:
        calib = {"id": calibration.id, "clips": int(len(clips))}
        meta = getattr(calibration, "manifest", None) or {}
        for key in ("strategy", "split", "seed"):
            if key in meta:
                calib[key] = meta[key]
    summary = ops.summary()
    return ArtefactManifest(
        format="tflite",
        precision=precision,
        runtime=f"tflite-xnnpack ({DEFAULT_INTERPRETER} interpreter)",
        model_file=MODEL_FILE,
        clip_spec=spec.to_dict(),
        inputs=inputs,
        outputs=outputs,
        source_checkpoint_sha256=checkpoint_sha,
        calibration_id=calib["id"] if calib else None,
        tool_versions=tool_versions("onnx", "onnxsim", "onnxruntime", "onnx2tf", "tensorflow-cpu",
                                    "tf_keras", "ai-edge-litert"),
        details={
            "route": ROUTES[precision],
            "signature": {"key": SIGNATURE_KEY, "input": io_.input_key,
                          "outputs": dict(zip(OUTPUT_NAMES, io_.output_keys))},
            "input_layout": io_.layout,
            "int8_op_fraction": summary["int8_op_fraction"],
            "ops_left_in_float": summary["ops_left_in_float"],
            "flex_ops": summary["flex_ops"],
            "op_histogram": summary["histogram"],
            "quantization": _quant_details(precision, calib, conv.scope, scope_check),
            "onnx": fe.onnx.to_dict(),
            "golden_vs_eager": {"reference": "the eager module that was converted (deploy form)",
                                "interpreter": "litert", "cases": int(len(golden)),
                                "errors": vs_eager},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        },
    )


def _saved_model_layout(saved: Path, clip_shape: Sequence[int]) -> str:
    import tensorflow as tf

    with captured_output(saved.parent / "load.log"):
        sig = tf.saved_model.load(str(saved)).signatures[SIGNATURE_KEY]
    specs = list(sig.structured_input_signature[1].values())
    if len(specs) != 1:
        raise EchoEdgeError(f"{saved}: SavedModel has {len(specs)} inputs, expected 1")
    return input_layout(specs[0].shape.as_list(), clip_shape)


def _quant_details(precision: str, calib: dict[str, Any] | None, scope: Int8ScopePlan | None = None,
                   scope_check: dict[str, Any] | None = None) -> dict[str, Any]:
    if precision == "fp32":
        return {"scheme": None}
    if precision == "fp16":
        return {"scheme": "float16 weights, float32 activations and I/O"}
    if precision == "int8":
        out = {"scheme": "static int8 (per-channel weights, per-tensor activations), selective: "
                         "denylisted ops stay float", "denylisted_ops": list(FLOAT_OPS_IN_INT8),
               "io": "float32 (QUANTIZE/DEQUANTIZE inside the file)", "calibration": calib,
               "int8_modules": list(scope.modules) if scope else "all",
               "float": "denylisted ops" + ("" if scope is None else " and every op outside int8_modules")}
        if scope is not None and scope.kept_float:  # mixed precision (echo-edge debug-quant)
            out["kept_float"] = list(scope.kept_float)
            out["float"] += " and the convs of kept_float"
        if scope is not None:
            # The op check's view: in-scope convs int8, the float heavy ops outside by recipe.
            out["scope"] = {**scope.to_dict(), **(scope_check or {}),
                            "heavy_nodes": list(scope.heavy_nodes)}
        return out
    return {"scheme": "full-integer static int8 (per-channel weights), TFLITE_BUILTINS_INT8",
            "io": "int8; real = scale * (q - zero_point), see inputs/outputs", "calibration": calib}


__all__: Sequence[str] = ("export_tflite", "make_interpreter", "run_tflite", "signature_io",
                          "input_layout", "to_layout", "PRECISIONS", "DEFAULT_INTERPRETER",
                          "INTERPRETERS", "FLOAT_OPS_IN_INT8", "int8_scope", "int8_scope_plan",
                          "check_scoped_int8", "Int8ScopePlan")
