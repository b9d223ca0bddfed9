"""What `echo-edge debug-quant` writes: debug_quant.json (schema, parts, the keys and figures each
part owns), reading and writing it, and its section in a validation report.json.

With `--report`, the section goes into report.json under the key `debug_quant` (without the
per-draw clip lists) and report.md/report.html are rendered again: the report shows a
"Quantization debugging" section whenever its dict has that key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEMA = "echo-edge/debug-quant"
SCHEMA_VERSION = 1
JSON_FILE = "debug_quant.json"
MD_FILE = "debug_quant.md"
PARTS = ("attribution", "sensitivity", "budget", "calibration")
REPORT_KEY = "debug_quant"
# What each part writes into debug_quant.json, and the figure names it owns (by prefix).
PART_KEYS = {"attribution": ("attribution", "attribution_skipped"), "sensitivity": ("sensitivity",),
             "budget": ("budget", "candidates", "goal"), "calibration": ("calibration",)}
PART_FIGURES = {"sensitivity": "sensitivity_", "budget": "pareto", "calibration": "calibration_size"}


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write debug_quant.json atomically (a temporary file renamed over it)."""
    from echoedge.validate.report_json import to_json_safe

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_json_safe(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def report_section(dq: dict[str, Any]) -> dict[str, Any]:
    """debug_quant.json as it goes into report.json: the per-draw clip lists left out."""
    section = json.loads(json.dumps(dq))
    cal = section.get("calibration")
    if cal:
        for d in cal.get("draws") or []:
            d.pop("clips", None)
    return section


def attach_to_report(dq: dict[str, Any], report: str | Path) -> dict[str, Path]:
    """Put the section into report.json under `debug_quant` and render report.md/.html again."""
    from echoedge.validate.report_json import read_report
    from echoedge.validate.validate import write_outputs

    path = Path(report)
    rep = read_report(path)
    rep[REPORT_KEY] = report_section(dq)
    return write_outputs(rep, path if path.is_dir() else path.parent)


def load_debug_quant(path: str | Path) -> dict[str, Any]:
    """A debug_quant.json (or its folder), checked for schema and version."""
    from echoedge.validate.report_json import read_versioned_json

    return read_versioned_json(path, JSON_FILE, SCHEMA, SCHEMA_VERSION, "debug-quant result")[1]



__all__ = ["JSON_FILE", "MD_FILE", "PARTS", "PART_FIGURES", "PART_KEYS", "REPORT_KEY", "SCHEMA",
           "SCHEMA_VERSION", "attach_to_report", "load_debug_quant", "report_section", "write_json"]
