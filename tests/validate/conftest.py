"""Session fixtures for validation tests around the suite's one `echo-edge run` on a tiny
checkpoint (`tiny_run`, tests/conftest.py; the bridge tests bundle its artefact too).

ExecuTorch lowering of even the tiny Echo-E3Net deploy form takes a minute or more on 2 cores,
so validation converts exactly twice: the fp32 artefact built by `echo-edge run` (which is also
the end-to-end test of `run`) and one artefact made worse on purpose.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tiny_e3net import TinyRun, tiny_checkpoint


def _need_executorch() -> None:
    # Inside the fixtures, not at import: this conftest also governs the tests here that need
    # no ExecuTorch.
    pytest.importorskip("torch")
    pytest.importorskip("executorch")


@pytest.fixture(scope="session")
def worse_artefact(tiny_run: TinyRun) -> Path:
    """A valid ExecuTorch fp32 artefact of the same checkpoint whose EF is off by +0.8 points.

    Built by the real converter from the deploy form with an offset on the EF output, so the
    manifest, hashes and runtime are all genuine; only the numbers are worse, as a broken
    conversion would make them.
    """
    _need_executorch()
    import torch
    from torch import nn

    from echoedge.convert.executorch import export_executorch
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.deploy import to_deploy_form

    class EFOffset(nn.Module):
        def __init__(self, inner: nn.Module, offset: float) -> None:
            super().__init__()
            self.inner, self.offset = inner, offset

        def forward(self, x):
            ef, edv, esv, ed, es = self.inner(x)
            return ef + self.offset, edv, esv, ed, es

    ck = load_checkpoint(tiny_run.checkpoint)
    example = torch.randn(ck.spec.input_shape(2), generator=torch.Generator().manual_seed(0))
    deploy = to_deploy_form(ck.model, example=example)
    folder = tiny_run.root / "worse" / "executorch-fp32"
    export_executorch(EFOffset(deploy, 0.8).eval(), ck.spec, folder, "fp32", None, ck.sha256, progress=False)
    return folder


def copy_with_manifest(src: Path, dst: Path, **fields: str) -> Path:
    """A copy of an artefact folder whose manifest claims other fields (format, precision...);
    the model file is untouched."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.update(fields)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def copy_as_format(src: Path, dst: Path, fmt: str) -> Path:
    return copy_with_manifest(src, dst, format=fmt)


@pytest.fixture(scope="session")
def helpers():
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    return {"tiny_checkpoint": tiny_checkpoint, "copy_as_format": copy_as_format,
            "copy_with_manifest": copy_with_manifest}
