"""One tiny ExecuTorch fp32 artefact and one Android and one iOS bundle of it, built once per session.

The artefact is the tiny Echo-E3Net's deploy form (random weights, seed 0) converted with the real
converter; the bundles are built through the real CLI, so every bridge test reads what a user gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("executorch")
    import torch

    from echoedge.convert.executorch import export_executorch
    from echoedge.model.config import clip_spec_for, get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import EchoE3Net

    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = EchoE3Net(cfg).eval()
    spec = clip_spec_for(cfg, mean=35.0, std=48.0)
    deploy = to_deploy_form(model, example=torch.randn(*spec.input_shape(1)))
    root = tmp_path_factory.mktemp("bridge") / "artefacts"
    export_executorch(deploy, spec, root / "executorch-fp32", "fp32", None, "ab" * 32, progress=False)
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
