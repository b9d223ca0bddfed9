"""torch Dataset of normalised clips with EF, volume and landmark targets and their masks."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from echoedge.data.clips import (
    clip_contains,
    draw_shift,
    eval_starts,
    extract_clip,
    last_start,
    random_start,
    shift_clip,
)
from echoedge.data.augment import augment_clip_frames, check_recipe
from echoedge.data.clipspec import ClipSpec
from echoedge.data.echonet import VideoRecord
from echoedge.data.landmarks import NUM_LANDMARKS
from echoedge.errors import DataError

MODES = ("train", "eval")


class EchoClipDataset(Dataset):
    """Clips of EchoNet records.

    mode="train": one item per record, a random start (with probability `traced_fraction` one
    whose clip contains both traced frames, when such a start exists), a random shift, and the
    `recipe`'s augmentations (`echoedge.data.augment`; "paper" is the shift alone).
    Randomness comes from default_rng([seed, epoch, index]), so an item does not depend on which
    DataLoader worker draws it. mode="eval": one item per (record, start) over
    eval_starts(num_frames, spec, clips_per_video), no augmentation.

    The epoch lives in shared memory, so `set_epoch` reaches persistent DataLoader workers too.
    """

    def __init__(self, records: list[VideoRecord], frames_source: Callable[[VideoRecord], np.ndarray],
                 spec: ClipSpec, mode: str = "train", clips_per_video: int | None = 4,
                 shift_pad: int = 12, traced_fraction: float = 0.5, seed: int = 0,
                 recipe: str = "paper") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        bad = [r.file_name for r in records if not math.isfinite(r.ef)]
        if bad:
            raise DataError(f"{bad[0]}: no EF label; a clip dataset needs one for every video")
        self.records = list(records)
        self.frames_source = frames_source
        self.spec = spec
        self.mode = mode
        self.clips_per_video = clips_per_video
        self.shift_pad = int(shift_pad)
        self.traced_fraction = float(traced_fraction)
        self.seed = int(seed)
        self.recipe = check_recipe(recipe)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # Eval starts come from FileList's NumberOfFrames, so the index is known without decoding;
        # a video that decodes a frame short is padded like any short video.
        self.items: list[tuple[int, int]] = (
            [(i, s) for i, r in enumerate(self.records)
             for s in eval_starts(r.num_frames, spec, clips_per_video)]
            if mode == "eval" else [(i, -1) for i in range(len(self.records))]
        )

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        vi, start = self.items[index]
        rec = self.records[vi]
        frames = self.frames_source(rec)
        num_frames = int(frames.shape[0])
        # The frames in hand say the real size; landmarks are normalised by it.
        rec.frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        dy = dx = 0
        source, source_start, valid = frames, start, (True, True)
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, self.epoch, index])
            start = self._train_start(rec, num_frames, rng)
            dy, dx = draw_shift(self.shift_pad, rng)
            source_start = start
            if self.recipe != "paper":  # only the frames the clip reads are augmented
                aug = augment_clip_frames(np.asarray(frames[start:start + self.spec.span]), self.recipe, rng)
                source, source_start = aug.frames, 0
                valid = (aug.landmarks_valid, aug.volumes_valid)
        clip = shift_clip(extract_clip(source, source_start, self.spec), dy, dx)
        return self._item(rec, vi, start, num_frames, clip, dy, dx, *valid)

    def _train_start(self, rec: VideoRecord, num_frames: int, rng: np.random.Generator) -> int:
        if rec.has_tracings and rng.random() < self.traced_fraction:
            lo_frame, hi_frame = sorted((rec.ed_frame, rec.es_frame))
            lo = max(0, hi_frame - self.spec.span + 1)
            hi = min(lo_frame, last_start(num_frames, self.spec))
            if lo <= hi:
                return int(rng.integers(lo, hi + 1))
        return random_start(num_frames, self.spec, rng)

    def _item(self, rec: VideoRecord, vi: int, start: int, num_frames: int, clip: np.ndarray,
              dy: int, dx: int, landmarks_valid: bool = True, volumes_valid: bool = True
              ) -> dict[str, torch.Tensor]:
        f32 = torch.float32
        volume_ok = math.isfinite(rec.edv) and math.isfinite(rec.esv) and volumes_valid
        # The shift moved the image by (dx, dy) clip pixels; move the targets with it.
        offset = np.array([dx / self.spec.width, dy / self.spec.height])
        out = {
            "clip": torch.from_numpy(clip),
            "ef": torch.tensor(rec.ef, dtype=f32),
            "edv": torch.tensor(rec.edv if volume_ok else 0.0, dtype=f32),
            "esv": torch.tensor(rec.esv if volume_ok else 0.0, dtype=f32),
            "volume_mask": torch.tensor(1.0 if volume_ok else 0.0, dtype=f32),
            "video_index": torch.tensor(vi, dtype=torch.int64),
            "start": torch.tensor(start, dtype=torch.int64),
        }
        for phase, frame, lm in (("ed", rec.ed_frame, rec.ed_landmarks),
                                 ("es", rec.es_frame, rec.es_landmarks)):
            seen = (landmarks_valid and lm is not None and frame is not None and frame < num_frames
                    and clip_contains(start, frame, self.spec))
            target = lm + offset if lm is not None else np.zeros((NUM_LANDMARKS, 2))
            out[f"{phase}_landmarks"] = torch.from_numpy(target.astype(np.float32))
            out[f"{phase}_mask"] = torch.tensor(1.0 if seen else 0.0, dtype=f32)
        return out
