"""report.json: the single source of every validation number, with a versioned schema.

report.md, report.html, junit.xml and the gates all render or read this file only. `SCHEMA` is a
small JSON-Schema-like description (types, required keys, enums, nested objects and lists) that
`check_report` enforces; it runs before every write and on every read, so a renderer or a CI job
never sees a report of the wrong shape. Bump SCHEMA_VERSION on any incompatible change.

Optional sections (`optional` in the schema) are checked when present and may be absent, so adding
one is a compatible change: reports written before it stay readable. `stress` (the stress suite,
echoedge.validate.stress) is one, with its own `schema_version` (STRESS_SCHEMA_VERSION), checked
on read like the report's; an artefact's `memory` (echoedge.validate.memory) is another.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from echoedge import atomic
from echoedge.errors import EchoEdgeError

SCHEMA_ID = "echo-edge/validation-report"
SCHEMA_VERSION = 1
REPORT_FILE = "report.json"

NUM = ("number",)
NUM_OR_NULL = ("number", "null")
STR_OR_NULL = ("string", "null")

_EF_VS_TRUTH = {"type": "object", "required": {
    "n": ("integer",), "mae": NUM, "rmse": NUM, "r2": NUM_OR_NULL, "bias": NUM,
    "band_agreement": NUM, "band_confusion": {"type": "array", "items": {"type": "array"}},
    "edv_mae": NUM_OR_NULL, "esv_mae": NUM_OR_NULL, "landmark_error_px": NUM_OR_NULL}}
_INTERVAL = {"type": "object", "required": {"low": NUM, "high": NUM}}
_LATENCY = {"type": ("object", "null"), "required": {
    "load_s": NUM, "p50_ms": NUM, "p90_ms": NUM, "mean_ms": NUM, "clips_per_s": NUM,
    "runs": ("integer",), "warmup": ("integer",), "threads": ("integer",)}}
_PREDICTIONS = {"type": "array", "items": {"type": "object", "required": {
    "file_name": ("string",), "ef": NUM}}}

STRESS_SCHEMA_VERSION = 1
_SHIFT_ROW = {"shift": ("string",), "level": {"enum": ("mild", "moderate", "severe")}, "value": NUM}
_STRESS = {"type": "object", "required": {
    "schema_version": {"enum": (STRESS_SCHEMA_VERSION,)},
    "shifts": {"type": "array", "items": {"type": "object", "required": {
        "name": ("string",), "description": ("string",), "unit": ("string",), "levels": ("object",)}}},
    "levels": {"type": "array"}, "seed": ("integer",), "n_videos": ("integer",),
    "clips_per_video": ("integer", "null"),
    "reference": {"type": "object", "required": {"conditions": {"type": "array", "items": {
        "type": "object", "required": {**_SHIFT_ROW, "vs_truth": {"type": "object", "required": {
            "mae": NUM, "rmse": NUM, "bias": NUM, "band_agreement": NUM}}}}}}},
    "artefacts": {"type": "array", "items": {"type": "object", "required": {
        "name": ("string",), "format": ("string",), "precision": ("string",), "status": ("string",),
        "reason": STR_OR_NULL, "conditions": {"type": "array", "items": {"type": "object", "required": {
            **_SHIFT_ROW,
            "vs_reference": {"type": "object", "required": {
                "ef": {"type": "object", "required": {"mean_abs": NUM, "p95_abs": NUM, "max_abs": NUM}},
                "bias": NUM, "band_agreement": NUM}},
            "vs_truth": {"type": "object", "required": {"mae": NUM}}}}}}}},
    "timings_s": ("object",)}}

# An artefact's working memory (echoedge.validate.memory): optional, so older reports stay valid.
_PLANNED = {"type": ("object", "null"), "required": {
    "planned_bytes": ("integer",), "how": ("string",), "estimate": ("boolean",),
    "graph_peak_bytes": ("integer",), "bytes_by_dtype": ("object",), "float_tensors": ("array",)}}
_MEASURED = {"type": ("object", "null"), "required": {
    "baseline_rss_bytes": ("integer",), "load_added_bytes": ("integer",), "calls_added_bytes": ("integer",),
    "working_bytes": ("integer",), "peak_rss_bytes": ("integer",), "calls": ("integer",),
    "threads": ("integer",)}}
_MEMORY = {"type": "object", "required": {"planned": _PLANNED, "planned_note": STR_OR_NULL,
                                          "measured": _MEASURED, "measured_note": STR_OR_NULL,
                                          "method": ("string",)}}

SCHEMA: dict[str, Any] = {"type": "object", "optional": {"stress": _STRESS}, "required": {
    "schema": ("string",),
    "schema_version": ("integer",),
    "created_at": ("string",),
    "echo_edge_version": ("string",),
    "data": {"type": "object", "required": {
        "root": ("string",), "fingerprint": ("string",), "split": ("string",),
        "n_videos": ("integer",), "clips_per_video": ("integer", "null")}},
    "settings": {"type": "object", "required": {
        "threads": ("integer",), "latency_runs": ("integer",), "warmup": ("integer",),
        "bootstrap": ("integer",), "seed": ("integer",), "worst_n": ("integer",)}},
    # cpu_id, simd and load_while_timing: optional, so reports written before them stay valid.
    "host": {"type": "object", "optional": {
        "cpu_id": ("object",), "simd": ("array",), "load_while_timing": {"type": "object", "required": {
            "other_processes_cores": NUM, "steal_share": NUM, "window_s": NUM}}}, "required": {
        "id": ("string",), "cpu_model": ("string",), "logical_cores": ("integer",),
        "threads": ("integer",), "runtime_versions": ("object",)}},
    "reference": {"type": "object", "required": {
        "name": ("string",), "runtime": ("string",), "checkpoint": ("string",),
        "checkpoint_sha256": ("string",), "vs_truth": _EF_VS_TRUTH, "latency": _LATENCY,
        "predictions": {"type": "array", "items": {"type": "object", "required": {
            "file_name": ("string",), "ef_true": NUM, "ef": NUM}}}}},
    "artefacts": {"type": "array", "items": {"type": "object", "optional": {"memory": _MEMORY}, "required": {
        "name": ("string",), "folder": ("string",), "format": ("string",),
        "precision": ("string",), "runtime": STR_OR_NULL,
        "status": {"enum": ("PASS", "FAIL_ACCURACY", "FAIL_RUNTIME", "SKIPPED_PLATFORM")},
        "run_status": {"enum": ("ok", "FAIL_RUNTIME", "SKIPPED_PLATFORM")},
        "stage": STR_OR_NULL, "reason": STR_OR_NULL,
        "facts": {"type": "object", "required": {
            "model_bytes": ("integer", "null"), "model_sha256": STR_OR_NULL,
            "calibration_id": STR_OR_NULL, "int8_op_fraction": NUM_OR_NULL,
            "delegated_ops": ("integer", "null"), "fallback_ops": ("integer", "null")}},
        "vs_truth": {"type": ("object", "null"), "required": _EF_VS_TRUTH["required"]},
        "vs_reference": {"type": ("object", "null"), "required": {
            "ef": {"type": "object", "required": {"mean_abs": NUM, "p95_abs": NUM, "max_abs": NUM}},
            "bland_altman": {"type": "object", "required": {
                "n": ("integer",), "bias": NUM, "sd": NUM, "loa_low": NUM, "loa_high": NUM,
                "bias_ci": _INTERVAL, "loa_low_ci": _INTERVAL, "loa_high_ci": _INTERVAL}},
            "band_agreement": NUM,
            "band_confusion": {"type": "array", "items": {"type": "array"}},
            # null: not produced by the model (EchoNet-Dynamic's EF-only video ResNets)
            "edv_mean_abs": NUM_OR_NULL, "esv_mean_abs": NUM_OR_NULL, "landmark_delta_px": NUM_OR_NULL,
            "worst": {"type": "array", "items": {"type": "object", "required": {
                "file_name": ("string",), "ef_true": NUM, "ef_reference": NUM, "ef": NUM,
                "delta_ef": NUM}}}}},
        "latency": _LATENCY,
        "latency_note": STR_OR_NULL,
        "speedup_vs_reference": NUM_OR_NULL,
        "predictions": {"type": ("array", "null"), "items": _PREDICTIONS["items"]},
        "gates": {"type": "array", "items": {"type": "object", "required": {
            "name": ("string",), "op": {"enum": ("<=", ">=")}, "threshold": NUM,
            "value": NUM_OR_NULL, "unit": ("string",), "passed": ("boolean",)}}}}}},
    "gates": {"type": "object", "required": {"source": ("string",), "version": ("integer",)}},
    "summary": {"type": "object", "required": {
        "counts": ("object",), "strict": ("boolean",), "passed": ("boolean",),
        "exit_code": ("integer",)}},
}}

_PY_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        # NaN/inf are written as null (strict JSON has neither), so a number must be finite;
        # Python's json still reads a hand-edited NaN, Infinity or 1e999, and a gate comparing
        # NaN <= threshold would quietly say False.
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, _PY_TYPES[kind])


def check_report(obj: Any, schema: Any = None, where: str = "report") -> list[str]:
    """Every way `obj` departs from the schema, as 'path: problem' lines (empty when valid)."""
    schema = SCHEMA if schema is None else schema
    problems: list[str] = []
    if isinstance(schema, tuple):  # a bare type list
        schema = {"type": schema}
    if "enum" in schema:
        if obj not in schema["enum"]:
            problems.append(f"{where}: {obj!r} is not one of {', '.join(map(str, schema['enum']))}")
        return problems
    kinds = schema.get("type", "object")
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if not any(_is(obj, k) for k in kinds):
        if isinstance(obj, float) and not math.isfinite(obj) and "number" in kinds:
            problems.append(f"{where}: {obj!r} is not a finite number")
        else:
            problems.append(f"{where}: expected {' or '.join(kinds)}, got {type(obj).__name__}")
        return problems
    if isinstance(obj, dict) and "required" in schema:
        for key, sub in schema["required"].items():
            if key not in obj:
                problems.append(f"{where}: missing '{key}'")
            else:
                problems.extend(check_report(obj[key], sub, f"{where}.{key}"))
    if isinstance(obj, dict) and "optional" in schema:
        for key, sub in schema["optional"].items():
            if obj.get(key) is not None:
                problems.extend(check_report(obj[key], sub, f"{where}.{key}"))
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            problems.extend(check_report(item, schema["items"], f"{where}[{i}]"))
    return problems


def to_json_safe(obj: Any) -> Any:
    """NaN and infinities become null: strict JSON has no spelling for them."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return to_json_safe(obj.item())
    return obj


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Check, then write atomically (a reader never sees half a report)."""
    path = Path(path)
    report = to_json_safe(report)
    problems = check_report(report)
    if problems:  # a bug in the producer, not bad input: say exactly where
        raise ValueError("report does not match its schema: " + "; ".join(problems[:5]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def read_versioned_json(path: str | Path, file_name: str, schema: str, version: int,
                        what: str) -> tuple[Path, dict[str, Any]]:
    """(path, dict) of a versioned JSON document (`path` or `path/file_name`); EchoEdgeError naming
    the file when it is missing, unreadable, another document, or another schema version.
    Shared by report.json and debug_quant.json."""
    path = Path(path)
    if path.is_dir():
        path = path / file_name
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EchoEdgeError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EchoEdgeError(f"{path}: unreadable {what} ({e})") from None
    except RecursionError:  # thousands of nested brackets
        raise EchoEdgeError(f"{path}: unreadable {what} (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise EchoEdgeError(f"{path}: not an echo-edge {what}")
    if data.get("schema_version") != version:
        raise EchoEdgeError(f"{path}: {what} schema version {data.get('schema_version')!r}; this "
                            f"echo-edge reads version {version}")
    return path, data


def read_report(path: str | Path) -> dict[str, Any]:
    """A report.json, checked against the schema; EchoEdgeError naming the file otherwise."""
    path, data = read_versioned_json(path, REPORT_FILE, SCHEMA_ID, SCHEMA_VERSION, "validation report")
    problems = check_report(data)
    if problems:
        raise EchoEdgeError(f"{path}: malformed report ({problems[0]}"
                            f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''})")
    return data
