"""The built-in default dataset: a synthetic EchoNet-format set, generated once and cached.

With the same seed, a smaller synthetic set is a prefix of a larger one, so the default set's
TEST videos are TEST videos of the set the shipped checkpoint was trained on: held out from it.

The cache folder's name carries everything that decides the files: seed, size, acquisition mode
and the generator's format version (synthetic.SYNTH_FORMAT), so a cache written by an older
generator is never reused and a varied set can sit beside the fixed one.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_VIDEOS = 300
DEFAULT_SEED = 0
# Varied: the look the shipped checkpoint (e3net_paper_acquisition.pt) was fine-tuned on, and the
# one real probes give (issue 21); `synth --acquisition fixed` keeps the neutral look.
DEFAULT_ACQUISITION = "varied"


def cache_root() -> Path:
    return Path(os.environ.get("ECHOEDGE_CACHE", Path.home() / ".cache" / "echo-edge"))


def default_dataset_root(videos: int = DEFAULT_VIDEOS, seed: int = DEFAULT_SEED,
                         acquisition: str = DEFAULT_ACQUISITION) -> Path:
    """Where the cached synthetic dataset with these settings lives (it may not exist yet)."""
    from echoedge.data.synthetic import SYNTH_FORMAT

    return cache_root() / f"synthetic-seed{seed}-n{videos}-{acquisition}-v{SYNTH_FORMAT}"


def default_dataset(videos: int = DEFAULT_VIDEOS, seed: int = DEFAULT_SEED, progress: bool = True,
                    acquisition: str = DEFAULT_ACQUISITION) -> Path:
    """Path of the cached synthetic dataset, generating it first if it is not there."""
    from echoedge.data.synthetic import OutputTaken, generate_dataset

    root = default_dataset_root(videos, seed, acquisition)
    if not (root / "FileList.csv").is_file():
        try:
            generate_dataset(root, videos=videos, seed=seed, progress=progress, acquisition=acquisition)
        except OutputTaken:
            # Another process generated the same set at the same time and renamed it into place
            # first (generate_dataset renames a finished temporary folder, so what is there is
            # whole, and the name fixes its content): use it.
            if not (root / "FileList.csv").is_file():
                raise
    return root
