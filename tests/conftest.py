"""Shared fixtures: one tiny synthetic dataset per test session (generated once, a few seconds),
and one `echo-edge run` on the tiny Echo-E3Net (its ExecuTorch and Core ML fp32 artefacts serve the
validation and bridge tests: each tiny ExecuTorch lowering costs about a minute on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every cache the tests touch inside pytest's temporary tree, never in the user's home.
TINY_VIDEOS = 16
TINY_SEED = 5  # gives 10 TRAIN, 3 VAL, 3 TEST videos out of 16


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echoedge.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "echonet"
    generate_dataset(root, videos=TINY_VIDEOS, seed=TINY_SEED, workers=2, progress=False)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "echoedge-cache"
    monkeypatch.setenv("ECHOEDGE_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synth_root: Path):
    """`echo-edge run` end to end on the tiny config (tests/tiny_e3net.py): ExecuTorch and Core ML
    fp32, 2 TEST videos. Also the end-to-end test of `run` (tests/validate/test_validate_cli.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("executorch")
    from tests.tiny_e3net import run_tiny

    return run_tiny(tmp_path_factory.mktemp("tinyrun"), synth_root)
