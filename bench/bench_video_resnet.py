"""EchoNet-Dynamic's R(2+1)D-18 (or R3D-18 / MC3-18) through the whole pipeline (issue 19).

Runs the real `echo-edge run --model ARCH` in a subprocess — every format in fp32 and int8 (and
Core ML W8), converted from one checkpoint and validated in one run, latency taken round-robin
across the eager reference and every artefact — then prints, side by side, per artefact: file
size, p50 latency, speed-up vs eager fp32, |ΔEF| against the reference (mean, p95) and the gate.
The reference's own EF error against the labels is printed beside the always-mean baseline, so a
reader can tell whether the checkpoint's EF follows the input at all.

Without --checkpoint it benches a seeded random-weight network of the full architecture
(torchvision's width, EchoNet-Dynamic's 32 x 112 x 112 clip), saved the way EchoNet-Dynamic saves
its files (`state_dict` with DataParallel's `module.` prefix): BatchNorm statistics re-estimated
on 16 TRAIN clips so activations have a trained network's scale, and the EF head scaled so EF
spreads about 10 points across clips. Size, latency and conversion fidelity (|ΔEF| against the
same network in eager fp32) are the architecture's; EF against the labels means nothing for it.
No trained R(2+1)D-18 ships (see the README), so pass EchoNet-Dynamic's best.pt for trained figures.

    python bench/bench_video_resnet.py --out /tmp/b19                  # random weights, as above
    python bench/bench_video_resnet.py --checkpoint best.pt            # an EchoNet-Dynamic checkpoint
    python bench/bench_video_resnet.py --out /tmp/b19 --reuse -- --videos 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def random_weights_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """The seeded stand-in described in the module docstring, written to `path`."""
    import numpy as np
    import torch

    from echoedge.data.clipspec import ECHONET_DYNAMIC_SPEC
    from echoedge.data.clips import eval_starts, extract_clip
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.video_resnet import build_video_resnet

    torch.manual_seed(seed)
    net = build_video_resnet(arch)
    reader = EchoNet(default_dataset(progress=False))
    spec = ECHONET_DYNAMIC_SPEC
    clips = []
    for rec in reader.records("TRAIN")[:16]:
        frames = reader.load_frames(rec)
        clips.append(extract_clip(frames, eval_starts(len(frames), spec, 1)[0], spec))
    x = torch.from_numpy(np.stack(clips))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
    net.train()
    feats = []
    with torch.no_grad():
        for i in range(0, len(x), 4):
            feats.append(torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(
                net.stem(x[i:i + 4])))))), 1))
        f = torch.cat(feats)
        w = torch.randn(1, f.shape[1], generator=torch.Generator().manual_seed(seed))
        spread = (f @ w.T).std()
        net.fc.weight.copy_(w * (10.0 / float(spread)))
        net.fc.bias.fill_(55.6 - float((f @ net.fc.weight.T).mean()))
    net.eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
                "frames": spec.frames, "period": spec.period}, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="r2plus1d_18", choices=("r2plus1d_18", "r3d_18", "mc3_18"))
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="default: the cached stand-in trained on the synthetic set")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="keep the artefacts already in --out")
    ap.add_argument("run_args", nargs="*", help="extra flags for `echo-edge run` (after --)")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-video-resnet-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        args.checkpoint = out / f"{args.model}_random_seed0.pt"
        if not args.checkpoint.is_file():
            random_weights_checkpoint(args.model, args.checkpoint)
        print(f"checkpoint: {args.checkpoint} (random weights, seed 0: figures of the "
              "architecture, not of a trained model)")
    exe = Path(sys.executable).with_name("echo-edge")
    cmd = [str(exe) if exe.exists() else "echo-edge", "run", "--model", args.model, "--out",
           str(out / "run"), "--no-progress", "--checkpoint", str(args.checkpoint),
           *(["--reuse"] if args.reuse else []), *args.run_args]
    print("$ " + " ".join(cmd), flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    reports = sorted(out.rglob("report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        print(f"no report.json under {out} (exit {rc})", file=sys.stderr)
        return 1
    r = json.loads(reports[-1].read_text())
    ref = r["reference"]
    print(f"run: exit {rc}, {wall:.0f} s wall, load {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"{r['data']['n_videos']} {r['data']['split']} videos x {r['data']['clips_per_video']} clips, "
          f"{r['settings']['threads']} threads, host {r['host']['cpu_model']}")
    vt = ref["vs_truth"]
    print(f"reference {ref['name']} ({ref['runtime']}), checkpoint {ref['checkpoint']}: EF MAE "
          f"{vt['mae']:.2f} vs truth (R2 {_fmt(vt['r2'], '.3f')}); always-mean baseline MAE "
          f"{_fmt(r.get('baseline', {}).get('mae') if isinstance(r.get('baseline'), dict) else None, '.2f')}")
    lat = ref.get("latency") or {}
    print(f"\n| artefact | size MB | p50 ms | speed-up vs eager | mean |ΔEF| | p95 |ΔEF| | status |")
    print("|---|---|---|---|---|---|---|")
    print(f"| eager fp32 (reference) | – | {_fmt(lat.get('p50_ms'), '.1f')} | 1.00× | 0 | 0 | – |")
    for a in r["artefacts"]:
        size = a["facts"].get("model_bytes")
        p50 = (a.get("latency") or {}).get("p50_ms")
        vs = (a.get("vs_reference") or {}).get("ef") or {}
        sp = a.get("speedup_vs_reference")
        print(f"| {a['name']} | {_fmt(size / 1e6 if size else None, '.2f')} | {_fmt(p50, '.1f')} | "
              f"{_fmt(sp, '.2f')}{'×' if sp else ''} | {_fmt(vs.get('mean_abs'), '.3f')} | "
              f"{_fmt(vs.get('p95_abs'), '.3f')} | {a['status']} |")
    print(f"\nreport: {reports[-1]}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
