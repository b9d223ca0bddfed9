"""A tiny EchoNet-Dynamic R(2+1)D-18 checkpoint for the end-to-end tests of the commands that take
`--model r2plus1d_18` (debug-quant, stress, stream).

Written as EchoNet-Dynamic writes its own (DataParallel's `module.` prefix under `state_dict`), at
1/8 width and with a small clip (4 frames every 2nd, 16 x 16, 3 channels, recorded in the file as
echo-edge's `clip_spec`), with an EF head that follows its input, so conversions and simulations
take seconds and a wrong frame or channel would move EF. tests/validate/test_run_video_resnet.py
uses it at 1/16 width on 8 frames of 32 x 32.
"""

from __future__ import annotations

from pathlib import Path

ARCH = "r2plus1d_18"
BASE_WIDTH = 8


def tiny_echonet_checkpoint(path: Path, seed: int = 0, base_width: int = BASE_WIDTH,
                            frames: int = 4, size: int = 16) -> Path:
    import torch

    from echoedge.data.clipspec import ClipSpec
    from echoedge.model.video_resnet import build_video_resnet

    torch.manual_seed(seed)
    net = build_video_resnet(ARCH, base_width=base_width)
    with torch.no_grad():
        net.fc.weight.normal_(0.0, 2.0)
    spec = ClipSpec(frames=frames, period=2, height=size, width=size, channels=3, mean=32.5,
                    std=50.0)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
                "clip_spec": spec.to_dict()}, path)
    return path
