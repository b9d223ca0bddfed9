"""Validation: run every artefact in its own runtime through one Runner interface.

Importing this package is cheap; a runner imports its runtime when it is opened.
"""

from echoedge.validate.runner import RUNNERS, EagerRunner, Runner, RunnerBase, open_runner

__all__ = ["RUNNERS", "EagerRunner", "Runner", "RunnerBase", "open_runner"]
