"""One tiny ExecuTorch fp32 artefact and one Android and one iOS bundle of it, built once per session.

The artefact is the tiny Echo-E3Net's (random weights, seed 0) ExecuTorch fp32 folder that the
session's `echo-edge run` (`tiny_run`, tests/conftest.py) converted with the real converter --
copied, not converted again (a tiny lowering costs about a minute on 2 cores); the bundles are
built through the real CLI, so every bridge test reads what a user gets.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_artefacts(tmp_path_factory: pytest.TempPathFactory, tiny_run) -> Path:
    """An artefacts folder holding only the tiny run's executorch-fp32."""
    assert tiny_run.rc == 0 and tiny_run.fp32.is_dir(), tiny_run.stdout[-2000:]
    root = tmp_path_factory.mktemp("bridge") / "artefacts"
    shutil.copytree(tiny_run.fp32, root / "executorch-fp32")
    return root


def _bundle(platform: str, artefacts: Path, out: Path) -> Path:
    from echoedge.cli import main

    rc = main(["bridge", platform, str(artefacts), "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def android_bundle(tiny_artefacts: Path) -> Path:
    return _bundle("android", tiny_artefacts, tiny_artefacts.parent / "android")


@pytest.fixture(scope="session")
def ios_bundle(tiny_artefacts: Path) -> Path:
    return _bundle("ios", tiny_artefacts, tiny_artefacts.parent / "ios")
