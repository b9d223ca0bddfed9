"""What several `echo-edge` commands share: the --data and --require-tracings options, the
default dataset and checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_CONFIG = "paper"


def data_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--data, and --require-tracings with it: every command that reads a dataset takes both."""
    p.add_argument(
        "--data", type=Path, required=required, default=None,
        help="EchoNet-Dynamic-format folder (VolumeTracings.csv and the Split column optional)"
        + ("" if required else " (default: the built-in synthetic dataset, generated and cached "
           "on first use)"),
    )
    tracings_arg(p)


def show_progress(no_progress: bool) -> bool:
    """Progress bars only on a terminal: rich's transient bar leaves an empty line in a log or a
    CI console, between the status lines."""
    return not no_progress and sys.stdout.isatty()


def tracings_arg(p: argparse.ArgumentParser) -> None:
    """The one definition of --require-tracings (`args.require_tracings`)."""
    p.add_argument(
        "--require-tracings", action="store_true",
        help="EchoNet-Dynamic's rule: drop every video without two traced frames in "
        "VolumeTracings.csv (and refuse a dataset without that file), to reproduce published "
        "EchoNet numbers. Default: untraced videos are kept with their EF/EDV/ESV labels; landmark "
        "metrics are n/a for them and training masks their landmark terms",
    )


def resolve_data(path: Path | None) -> Path:
    if path is not None:
        return path
    from echoedge.data.default import default_dataset

    return default_dataset()


def resolve_checkpoint(path: Path | None, model: str = "e3net") -> Path:
    """--checkpoint, else the shipped Echo-E3Net checkpoint (a video ResNet needs one)."""
    if path is not None:
        return path
    from echoedge.model.registry import default_checkpoint

    return default_checkpoint(model)


# Literal (= echoedge.model.registry.MODEL_NAMES, checked by tests) so --help imports nothing.
MODEL_CHOICES = ("e3net", "r2plus1d_18", "r3d_18", "mc3_18")


def model_arg(p: argparse.ArgumentParser, from_artefacts: bool = False) -> None:
    """--model: which network the checkpoint holds (echoedge.model.registry). `from_artefacts`:
    the command reads artefacts, whose manifests name their model: left out, --model is theirs."""
    p.add_argument(
        "--model", default=None if from_artefacts else "e3net", choices=MODEL_CHOICES,
        help=("the network --checkpoint holds. Default: the model the artefacts' manifests record, "
              "else e3net (a --model they contradict is an error). e3net: this project's Echo-E3Net"
              if from_artefacts else "the network --checkpoint holds (default %(default)s, this "
              "project's Echo-E3Net") + ", with the shipped checkpoint when --checkpoint is left out"
        + ("." if from_artefacts else ").") + " r2plus1d_18 | r3d_18 | mc3_18: EchoNet-Dynamic's "
        "video ResNets (torchvision's layout, fc with 1 output), read from its checkpoint.pt / "
        "best.pt or any state dict of that layout (a DataParallel 'module.' prefix and a "
        "'state_dict' wrapper are fine); they need --checkpoint (none ships) and eat "
        "EchoNet-Dynamic's clips (3 channels: the grey video repeated, 32 "
        "frames every 2nd, 112 x 112) and produce EF only: EDV, ESV and landmarks read '–' in the "
        "reports",
    )


def artefacts_model(artefacts: Sequence[Path], model: str | None) -> str:
    """--model for the artefact folders at or below `artefacts`: the one given, checked against
    what their manifests record, else theirs, else e3net (one line on a conflict)."""
    from echoedge.convert.artefact import artefacts_model as recorded, find_artefacts
    from echoedge.model.registry import DEFAULT_MODEL

    folders = [f for root in artefacts for f in find_artefacts(Path(root))]
    return recorded(folders, model) or DEFAULT_MODEL


def calibration_data_arg(p: argparse.ArgumentParser) -> None:
    """--calibration-data, shared by the commands that draw int8 calibration clips themselves."""
    p.add_argument(
        "--calibration-data", type=Path, default=None, metavar="ROOT",
        help="EchoNet-format folder to draw the int8 calibration clips from (its TRAIN, else VAL). "
        "Default: TRAIN of --data, else its VAL; a test-only --data (no TRAIN or VAL) calibrates "
        "on the built-in synthetic set's TRAIN, never on the TEST videos it is validated on; the "
        "console (and run's report) says so",
    )
