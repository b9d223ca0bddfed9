"""`echo-edge explore`: an artefact's graph with per-node data, as Model Explorer overlays.

Writes, for one artefact folder, Model Explorer node-data files (the documented custom node data
format, `model_explorer.node_data_builder`: `{graph id: {"name", "results": {node id: {"value",
"bgColor"?}}, "gradient"?}}`), one file per figure because one file carries one value per node:

    dtype.json        every node: the element type it computes in (int8, float32, ...)
    sensitivity.json  with --debug-quant: every conv node of a swept layer: the |dEF| (EF points)
                      that keeping the layer float wins back (debug-quant's sensitivity `effect`)
    latency.json      .pte: mean ms per run from an ETDump (explore_latency); .tflite: not
                      available, explore.json says why

plus explore.json: what was mapped, what was not, the artefact's attribution figures and notes.

Layer -> node: debug-quant names layers by deploy-form module path; a model file keeps no module
names (onnx2tf renames ops, XNNPACK keeps only debug handles). So the deploy form of the checkpoint
is run once with hooks on its Conv2d modules, giving the convs in call order with their filter
shapes; each conv node of the file (in execution order) takes the first unused call with the same
(out, in/groups, kh, kw), and among several, the one whose weights its (dequantized) filter is
closest to where the file stores them readably (TFLite). A conv left unmatched is counted, never
guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echoedge.errors import DataError, EchoEdgeError

# dtype -> node colour (Model Explorer takes any CSS colour for a result's bgColor)
DTYPE_COLOURS = {"int8": "#8fd19e", "uint8": "#8fd19e", "int32": "#c7e9c0", "float32": "#f4a582",
                 "float16": "#fddbc7", "bfloat16": "#fddbc7"}
GRADIENT = [{"stop": 0, "bgColor": "#f7fcf5"}, {"stop": 1, "bgColor": "#d7301f"}]
FILES = {"dtype": "dtype.json", "sensitivity": "sensitivity.json", "latency": "latency.json"}
SUMMARY = "explore.json"


@dataclass
class ExploreResult:
    out: Path
    files: dict[str, Path]  # overlay name -> node-data file (and "summary")
    summary: dict[str, Any]
    model_path: Path
    notes: list[str] = field(default_factory=list)


def conv_calls(deploy: Any, input_shape: list[int]) -> list[tuple[str, tuple[int, int, int, int], np.ndarray]]:
    """(module path, (out, in/groups, kh, kw), weight) of every Conv2d call of one forward, in order."""
    import torch
    from torch import nn

    calls: list[tuple[str, tuple[int, int, int, int], np.ndarray]] = []
    hooks = []
    for name, m in deploy.named_modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach().float().numpy()
            hooks.append(m.register_forward_hook(
                lambda _m, _i, _o, name=name, w=w: calls.append((name, tuple(w.shape), w))))
    try:
        with torch.no_grad():
            deploy.eval()(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
    return calls


def map_convs(graph: Any, calls: list[tuple[str, tuple[int, int, int, int], np.ndarray]]
              ) -> tuple[dict[tuple[str, str], str], int]:
    """(graph id, node id) -> module path for the file's conv nodes; and the unmatched node count."""
    free = list(range(len(calls)))
    mapping: dict[tuple[str, str], str] = {}
    unmatched = 0
    for n in graph.convs():
        cands = [k for k in free if calls[k][1] == n.conv_key]
        if not cands:
            unmatched += 1
            continue
        pick = cands[0]
        if n.filter is not None and len(cands) > 1:
            f = np.asarray(n.filter)
            pick = min(cands, key=lambda k: float(np.abs(calls[k][2] - f).max()))
        free.remove(pick)
        mapping[(n.graph, n.id)] = calls[pick][0]
    return mapping, unmatched


def node_data(name: str, results: dict[tuple[str, str], Any], gradient: bool) -> dict[str, Any]:
    """A ModelNodeData dict: graph id -> GraphNodeData (name, results, optional gradient)."""
    out: dict[str, Any] = {}
    for (g, nid), res in results.items():
        gd = out.setdefault(g, {"name": name, "results": {}})
        gd["results"][nid] = res
    if gradient:
        for gd in out.values():
            gd["gradient"] = GRADIENT
    return out


def dtype_overlay(graph: Any) -> dict[str, Any]:
    res = {}
    for n in graph.nodes:
        r: dict[str, Any] = {"value": n.dtype}
        if n.dtype in DTYPE_COLOURS:
            r["bgColor"] = DTYPE_COLOURS[n.dtype]
        res[(n.graph, n.id)] = r
    return node_data("dtype", res, gradient=False)


def _check_same_model(dq: dict[str, Any], manifest: Any, dq_dir: Path, artefact: Path) -> None:
    a, b = dq.get("checkpoint_sha256"), manifest.source_checkpoint_sha256
    if a and b and a != b:
        raise DataError(f"{dq_dir}: debug-quant of checkpoint sha256 {a[:12]}, but {artefact} was built "
                        f"from {b[:12]}; pass the debug-quant folder of this artefact's model")


def sensitivity_overlay(dq: dict[str, Any], manifest: Any, graph: Any, deploy: Any,
                        spec_shape: list[int]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The sensitivity node data of the artefact's quantization family, and what was mapped."""
    from echoedge.quantdebug.parts import family

    fam = family(manifest.format, manifest.precision)
    rows = [r for r in dq.get("sensitivity") or [] if r.get("family") == fam]
    info: dict[str, Any] = {"family": fam}
    if not rows:
        info["note"] = (f"debug-quant has no sensitivity sweep for {manifest.format} {manifest.precision}"
                        + (f" (family {fam})" if fam else " (no quantized simulation)"))
        return None, info
    row = rows[0]
    mapping, unmatched = map_convs(graph, conv_calls(deploy, spec_shape))
    by_layer: dict[str, list[tuple[str, str]]] = {}
    for key, path in mapping.items():
        by_layer.setdefault(path, []).append(key)
    results: dict[tuple[str, str], Any] = {}
    units_mapped, units_missing = [], []
    for u in row["units"]:
        keys = [k for layer in u["layers"] for k in by_layer.get(layer, [])]
        (units_mapped if keys else units_missing).append(u["unit"])
        for k in keys:
            results[k] = {"value": float(u["effect"])}
    info.update({"mode": row.get("mode"), "baseline": row.get("baseline"), "units_mapped": units_mapped,
                 "units_not_found": units_missing, "conv_nodes": len(graph.convs()),
                 "conv_nodes_unmatched": unmatched, "nodes": len(results)})
    if not results:
        raise DataError(f"none of the {len(row['units'])} swept layers of the debug-quant result "
                        f"maps onto {graph.model_file}'s conv nodes; is it the debug-quant of this model?")
    name = f"sensitivity: |dEF| won back keeping the layer float ({row.get('mode')})"
    return node_data(name, results, gradient=True), info


def latency_overlay(path: Path, graph: Any, manifest: Any, runs: int, seed: int, threads: int
                    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    from echoedge.quantdebug.explore_latency import TFLITE_NOTE, pte_latency

    if manifest.format != "executorch":
        return None, {"note": TFLITE_NOTE}
    shape = list(manifest.inputs[0].shape)
    lat = pte_latency(path, graph, shape, runs=runs, seed=seed, threads=threads)
    results = {k: {"value": round(v, 6)} for k, v in lat.ms.items()}
    info = {"runs": lat.runs, "nodes": len(results), "source": "ETDump (ExecuTorch Inspector)",
            "notes": lat.notes}
    return node_data(f"latency: mean ms per run ({lat.runs} runs)", results, gradient=True), info


def explore(artefact: str | Path, debug_quant: str | Path | None = None, out: str | Path | None = None,
            checkpoint: str | Path | None = None, latency: bool = True, runs: int = 10, seed: int = 0,
            threads: int = 2, log: Callable[[str], None] = print, deploy: Any = None) -> ExploreResult:
    """Write the node-data overlays and explore.json for one artefact folder into `out`.

    `deploy` (the converted module itself) replaces loading the checkpoint to name the layers.
    """
    from echoedge.atomic import write_text
    from echoedge.convert.artefact import read_manifest
    from echoedge.quantdebug.explore_nodes import read_graph

    artefact = Path(artefact)
    try:
        manifest = read_manifest(artefact)
    except EchoEdgeError as e:
        raise DataError(str(e)) from None
    model_path = artefact / manifest.model_file
    if not model_path.is_file():
        raise DataError(f"{model_path}: the manifest's model file is missing")
    graph = read_graph(model_path, manifest.format)
    dq, dq_dir = None, None
    if debug_quant is not None:  # read before any work: a wrong folder fails in a second
        from echoedge.quantdebug.output import load_debug_quant

        dq_dir = Path(debug_quant)
        dq = load_debug_quant(dq_dir)
        _check_same_model(dq, manifest, dq_dir, artefact)
    out = Path(out) if out is not None else Path("runs/explore") / artefact.name
    overlays: dict[str, dict[str, Any]] = {"dtype": dtype_overlay(graph)}
    summary: dict[str, Any] = {
        "schema": "echo-edge/explore", "schema_version": 1, "artefact": str(artefact),
        "format": manifest.format, "precision": manifest.precision, "model_file": str(model_path),
        "graphs": graph.graphs, "nodes": len(graph.nodes), "overlays": {}, "notes": []}
    if dq is not None:
        summary["debug_quant"] = str(dq_dir)
        att = [a for a in dq.get("attribution") or [] if Path(a.get("folder", "")).name == artefact.name]
        if att:
            summary["attribution"] = {k: att[0][k] for k in ("total", "quantization", "conversion",
                                                             "bias_total", "simulation") if k in att[0]}
        shape = list(manifest.inputs[0].shape)
        if deploy is None:
            deploy = _deploy_form(dq, manifest, checkpoint, shape)
        sens, info = sensitivity_overlay(dq, manifest, graph, deploy, shape)
        summary["sensitivity"] = info
        if sens is None:
            summary["notes"].append(info["note"])
        else:
            overlays["sensitivity"] = sens
    if latency:
        try:
            lat, info = latency_overlay(model_path, graph, manifest, runs, seed, threads)
        except EchoEdgeError as e:  # the overlay the runtime cannot give is a note, not a failure
            lat, info = None, {"note": f"per-op latency: {e}"}
        summary["latency"] = info
        if lat is None:
            summary["notes"].append(info["note"])
        else:
            overlays["latency"] = lat
            summary["notes"] += info["notes"]
    files: dict[str, Path] = {}
    for key, data in overlays.items():
        files[key] = write_text(out / FILES[key], json.dumps(data, indent=1) + "\n")
        summary["overlays"][key] = {"file": FILES[key], "name": next(iter(data.values()))["name"],
                                    "nodes": sum(len(g["results"]) for g in data.values())}
    files["summary"] = write_text(out / SUMMARY, json.dumps(summary, indent=1) + "\n")
    for n in summary["notes"]:
        log(f"note: {n}")
    return ExploreResult(out, files, summary, model_path, summary["notes"])


def _deploy_form(dq: dict[str, Any], manifest: Any, checkpoint: str | Path | None, shape: list[int]) -> Any:
    """The checkpoint's deploy form, to name the file's convs by module path."""
    import torch

    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.registry import DEFAULT_MODEL, load

    path = Path(checkpoint) if checkpoint is not None else Path(dq.get("checkpoint") or "")
    if not path.is_file():
        raise DataError(f"{path}: the checkpoint debug-quant ran on is not there; pass --checkpoint")
    # The units are module paths of the model as debug-quant ran it (a video ResNet's under `net.`).
    ck = load(dq.get("model") or manifest.model or DEFAULT_MODEL, path)
    want = manifest.source_checkpoint_sha256 or dq.get("checkpoint_sha256")
    if want and ck.sha256 != want:
        raise DataError(f"{path}: checkpoint sha256 {ck.sha256[:12]}, but the artefact was built from "
                        f"{want[:12]}; pass the checkpoint it was converted from")
    return to_deploy_form(ck.runnable, example=torch.zeros(shape)).eval()


def view_config(result: ExploreResult) -> Any:
    """Model Explorer's config: the model file and every overlay file (the view's URL comes from it)."""
    try:
        import model_explorer
    except ImportError:
        raise EchoEdgeError("--serve needs Model Explorer: pip install 'echo-edge[explore]' "
                            "(ai-edge-model-explorer, executorch-extension-model-explorer)") from None
    cfg = model_explorer.config().add_model_from_path(str(result.model_path))
    for key, path in result.files.items():
        if key != "summary":
            cfg.add_node_data_from_path(str(path))
    return cfg


def serve(result: ExploreResult, host: str = "localhost", port: int = 8080, open_browser: bool = True) -> None:
    """Start Model Explorer on the model file with the overlays loaded (blocks until Ctrl+C)."""
    import model_explorer

    cfg = view_config(result)
    # The .pte adapter is an extension module; .tflite's adapter is built in.
    ext = ["pte_adapter_model_explorer"] if result.model_path.suffix == ".pte" else []
    model_explorer.visualize_from_config(config=cfg, host=host, port=port, extensions=ext,
                                         no_open_in_browser=not open_browser)


__all__ = ["ExploreResult", "conv_calls", "dtype_overlay", "explore", "map_convs", "node_data", "serve", "view_config"]
