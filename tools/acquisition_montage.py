"""Montage of fixed vs varied acquisitions of the same synthetic hearts (docs/acquisition_montage.png).

Generates two sets with `echo-edge synth` (the same seed, --acquisition fixed and varied), so
each column shows one heart at its traced ED frame: top row the fixed look, bottom row the varied
acquisition with its main settings written under it and the ED tracing (as VolumeTracings.csv
holds it) outlined.

    python tools/acquisition_montage.py --videos 75 --columns 8 --pick 0,2,3,9,13,38,63,72 \
        --out docs/acquisition_montage.png    # the figure in docs/acquisition.md

Run it from the repository root with the package importable (an installed checkout, or
PYTHONPATH=.). --data keeps the two generated sets for a rerun.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def _synth(out: Path, videos: int, seed: int, mode: str) -> None:
    if (out / "FileList.csv").is_file():
        return
    subprocess.run([sys.executable, "-m", "echoedge.cli", "synth", str(out), "--videos", str(videos),
                    "--seed", str(seed), "--acquisition", mode], check=True)


def _label(s) -> str:
    view = "" if s.view == "apical-4-chamber" else f"{s.view}\n"
    lines = [
        f"gain {s.gain_db:+.1f} dB  TGC {s.tgc_db_per_cm:+.2f} dB/cm",
        f"DR {s.dynamic_range_db:.0f} dB  depth {s.depth_cm:.1f} cm",
        f"sector {s.sector_deg:.0f}°  rot {s.rotation_deg:+.1f}°  tilt {s.tilt_deg:.0f}°",
        f"blur {s.lateral_blur_deg:.1f}°/{s.axial_blur_mm:.1f} mm  speckle {s.speckle:.2f}",
        f"noise x{s.noise_floor:.1f}" + (f"  dropout {s.dropout:.1f}" if s.dropout else "")
        + (f"  shadow {s.shadow_strength:.1f}" if s.shadow_strength else ""),
    ]
    return view + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/acquisition_montage.png"))
    ap.add_argument("--data", type=Path, default=None, help="folder for the two sets (default: a temp folder)")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--columns", type=int, default=6)
    ap.add_argument("--dpi", type=int, default=110)
    ap.add_argument("--pick", default="", help="comma-separated video indices to show (default: the first)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from echoedge.data.acquisition import read_acquisition
    from echoedge.data.echonet import EchoNet
    from echoedge.data.video import read_video

    with tempfile.TemporaryDirectory() as tmp:
        base = args.data or Path(tmp)
        sets = {m: base / f"synth-{m}-seed{args.seed}-n{args.videos}" for m in ("fixed", "varied")}
        for mode, root in sets.items():
            _synth(root, args.videos, args.seed, mode)
        acq = read_acquisition(sets["varied"])
        data = {m: EchoNet(root) for m, root in sets.items()}
        names = [r.file_name for r in data["varied"].records()]
        picks = [int(i) for i in args.pick.split(",")] if args.pick else list(range(args.columns))
        names = [names[i] for i in picks][: args.columns]
        fig, axes = plt.subplots(2, len(names), figsize=(2.3 * len(names), 5.6))
        for col, name in enumerate(names):
            for row, mode in enumerate(("fixed", "varied")):
                rec = data[mode].record(name)
                frame = read_video(sets[mode] / "Videos" / f"{name}.avi")[rec.ed_frame]
                ax = axes[row, col]
                ax.imshow(frame, cmap="gray", vmin=0, vmax=255)
                poly = [*rec.ed_tracing[1:, 0:2], *rec.ed_tracing[1:, 2:4][::-1]]
                ax.add_patch(Polygon(poly, closed=True, fill=False, edgecolor="tab:red", linewidth=0.6))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{name[:10]}…  EF {rec.ef:.0f}", fontsize=7)
                else:
                    ax.set_xlabel(_label(acq[name]), fontsize=5.5, loc="left")
            axes[0, 0].set_ylabel("fixed", fontsize=8)
            axes[1, 0].set_ylabel("varied", fontsize=8)
        fig.suptitle(f"echo-edge synth --seed {args.seed}: fixed (top) vs --acquisition varied (bottom), "
                     "ED frame, ED tracing in red", fontsize=8)
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=args.dpi)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
