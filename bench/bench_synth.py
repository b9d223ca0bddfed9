"""Throughput of the synthetic EchoNet generator: videos/s, seconds and MB written.

    python bench/bench_synth.py --videos 60 --workers 2 [--acquisition fixed]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from echoedge.data.synthetic import generate_dataset


def _megabytes(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=60, help="videos to generate (default 60)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--acquisition", choices=("fixed", "varied"), default="varied")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        out = Path(tmp) / "echonet"
        s = generate_dataset(out, videos=args.videos, seed=args.seed, workers=args.workers, progress=False,
                               acquisition=args.acquisition)
        mb = _megabytes(out)
    print(f"acquisition {args.acquisition}  videos {s.videos}  workers {args.workers}  seconds {s.seconds:.2f}  "
          f"videos/s {s.videos_per_second:.2f}  MB written {mb:.1f} ({mb / s.videos:.2f} MB/video)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
