"""The tiny Echo-E3Net checkpoint and the one `echo-edge run` on it that the suite shares.

Fixtures live in conftest.py files; this is the plain code behind them, importable from any of
them (`from tests.tiny_e3net import ...`: conftest modules themselves are not importable under
--import-mode=importlib).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


def run_tiny(root: Path, data: Path) -> TinyRun:
    """`echo-edge run` end to end on the tiny config: ExecuTorch and Core ML fp32, 2 TEST videos."""
    import contextlib
    import io

    from echoedge.cli import main as cli_main

    ck = tiny_checkpoint(root / "tiny.pt")
    out = root / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # Two formats in two worker processes: the parallel export path, end to end.
        rc = cli_main(["run", "--checkpoint", str(ck), "--data", str(data), "--format",
                       "executorch,coreml", "--jobs", "2", "--precision", "fp32", "--videos", "2", "--clips", "2", "--runs", "3",
                       "--warmup", "1", "--bootstrap", "200", "--out", str(out),
                       "--cache-dir", str(root / "frames"), "--no-progress"])
    return TinyRun(root, ck, data, root / "frames", out, rc, buf.getvalue())
