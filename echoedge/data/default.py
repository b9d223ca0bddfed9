"""The built-in default dataset: a synthetic EchoNet-format set, generated once and cached.

With the same seed, a smaller synthetic set is a prefix of a larger one, so the default set's
TEST videos are TEST videos of the set the shipped checkpoint was trained on: held out from it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_VIDEOS = 300
DEFAULT_SEED = 0


def cache_root() -> Path:
    return Path(os.environ.get("ECHOEDGE_CACHE", Path.home() / ".cache" / "echo-edge"))


def default_dataset(videos: int = DEFAULT_VIDEOS, seed: int = DEFAULT_SEED, progress: bool = True) -> Path:
    """Path of the cached synthetic dataset, generating it first if it is not there."""
    from echoedge.data.synthetic import generate_dataset

    root = cache_root() / f"synthetic-seed{seed}-n{videos}"
    if not (root / "FileList.csv").is_file():
        generate_dataset(root, videos=videos, seed=seed, progress=progress)
    return root
