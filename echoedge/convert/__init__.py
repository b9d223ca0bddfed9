"""Converters: one module per target format, each writing an artefact folder (see artefact.py).

Importing this package is cheap: every converter imports its toolchain inside its functions.
"""

from echoedge.convert.artefact import (
    FORMATS, MANIFEST_NAME, ArtefactManifest, TensorSpec, find_artefacts, read_manifest,
    verify_artefact, write_artefact,
)
from echoedge.convert.executorch import export_executorch

__all__ = [
    "FORMATS", "MANIFEST_NAME", "ArtefactManifest", "TensorSpec", "export_executorch",
    "find_artefacts", "read_manifest", "verify_artefact", "write_artefact",
]
