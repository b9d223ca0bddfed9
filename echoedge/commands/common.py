"""What several `echo-edge` commands share: the --data option, the default dataset and checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = "paper"


def data_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data", type=Path, required=required, default=None,
        help="EchoNet-Dynamic-format folder (default: the built-in synthetic dataset, generated "
        "and cached on first use)",
    )


def resolve_data(path: Path | None) -> Path:
    if path is not None:
        return path
    from echoedge.data.default import default_dataset

    return default_dataset()


def resolve_checkpoint(path: Path | None) -> Path:
    if path is not None:
        return path
    from echoedge.errors import CheckpointError
    from echoedge.model.checkpoint import SHIPPED

    if not SHIPPED.is_file():
        raise CheckpointError(f"{SHIPPED}: the shipped checkpoint is missing from this install")
    return SHIPPED
