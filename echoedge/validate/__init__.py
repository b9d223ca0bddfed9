"""Validation: run every artefact in its own runtime through one Runner interface.

Importing this package is cheap; a runner imports its runtime when it is opened.
"""

from typing import Any

from echoedge.validate.runner import RUNNERS, EagerRunner, Runner, RunnerBase, open_runner

__all__ = ["RUNNERS", "EagerRunner", "Runner", "RunnerBase", "open_runner",
           "ValidateOptions", "regate", "run_job", "load_gates", "apply_gates", "read_report"]

# Validation, gates and the job load on first use (YAML, matplotlib and the data layer are not
# needed to open a runner). The orchestration function is echoedge.validate.validate.validate: the
# package attribute `validate` is that submodule, so it is deliberately not re-exported here.
_LAZY = {
    "ValidateOptions": "echoedge.validate.validate",
    "regate": "echoedge.validate.validate", "run_job": "echoedge.validate.pipeline",
    "load_gates": "echoedge.validate.gates", "apply_gates": "echoedge.validate.gates",
    "read_report": "echoedge.validate.report_json",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'echoedge.validate' has no attribute {name!r}")
