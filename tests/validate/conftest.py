"""Session fixtures for validation tests: one `echo-edge run` on a tiny checkpoint, reused.

ExecuTorch lowering of even the tiny Echo-E3Net deploy form takes a minute or more on 2 cores,
so the suite converts exactly twice: the fp32 artefact built by `echo-edge run` (which is also
the end-to-end test of `run`) and one artefact made worse on purpose.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest


def _need_executorch() -> None:
    # Inside the fixtures, not at import: this conftest also governs the tests here that need
    # no ExecuTorch.
    pytest.importorskip("torch")
    pytest.importorskip("executorch")


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    import torch

    from echoedge.model.checkpoint import save_checkpoint
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(seed)
    cfg = get_config("tiny")
    model = EchoE3Net(cfg).eval()
    return save_checkpoint(path, model, cfg, clip_spec_for(cfg, mean=35.0, std=48.0), "test")


@dataclass
class TinyRun:
    root: Path
    checkpoint: Path
    data: Path
    frames: Path
    out: Path  # the run's output folder
    rc: int
    stdout: str

    @property
    def fp32(self) -> Path:
        return self.out / "artefacts" / "executorch-fp32"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> TinyRun:
    """`echo-edge run` end to end on the tiny config: ExecuTorch and Core ML fp32, 2 TEST videos."""
    import contextlib
    import io

    _need_executorch()
    from echoedge.cli import main as cli_main

    root = tmp_path_factory.mktemp("tinyrun")
    ck = tiny_checkpoint(root / "tiny.pt")
    out = root / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # Two formats in two worker processes: the parallel export path, end to end.
        rc = cli_main(["run", "--checkpoint", str(ck), "--data", str(synth_root), "--format",
                       "executorch,coreml", "--jobs", "2", "--precision", "fp32", "--videos", "2", "--clips", "2", "--runs", "3",
                       "--warmup", "1", "--bootstrap", "200", "--out", str(out),
                       "--cache-dir", str(root / "frames"), "--no-progress"])
    return TinyRun(root, ck, synth_root, root / "frames", out, rc, buf.getvalue())


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
