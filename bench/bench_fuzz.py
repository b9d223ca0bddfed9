"""Fuzzed inputs at scale: the properties of tests/test_fuzz_inputs.py with many more cases.

    python bench/bench_fuzz.py                  # 500 cases per reader, derandomized (~1-2 min on 2 cores)
    python bench/bench_fuzz.py --cases 2000 --seed 7

Each reader (FileList.csv, VolumeTracings.csv, the AVI reader, an artefact's manifest.json,
report.json, a calibration set) gets --cases generated inputs; a case either parses to the value
the file states or raises a one-line EchoEdgeError naming the file. Prints the count per reader
and "N cases tried, 0 tracebacks"; exits 1 with the failing input when a property breaks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's echoedge and tests/


def main(argv: list[str] | None = None) -> int:
    from hypothesis import HealthCheck, given, seed, settings

    from tests import fuzzing as fz
    from tests import fuzzing_manifests as fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=500, help="generated inputs per reader (default %(default)s)")
    ap.add_argument("--seed", type=int, default=None,
                    help="draw with this seed instead of hypothesis' derandomized stream")
    args = ap.parse_args(argv)
    props = {
        "FileList.csv": (fz.filelist_cases(), fz.check_filelist),
        "VolumeTracings.csv": (fz.tracings_cases(), fz.check_tracings),
        "video": (fz.video_cases(), fz.check_video),
        "manifest.json": (fm.artefact_cases(), fm.check_artefact),
        "report.json": (fm.tampered_json(fm.report_doc(), fm.REPORT_HOT), fm.check_report_file),
        "calibration manifest": (fm.calibration_cases(), fm.check_calibration),
    }
    t0 = time.perf_counter()
    for name, (strategy, check) in props.items():
        run = settings(max_examples=args.cases, derandomize=args.seed is None, deadline=None,
                       database=None, suppress_health_check=list(HealthCheck))(given(strategy)(check))
        if args.seed is not None:
            run = seed(args.seed)(run)
        try:
            run()
        except Exception as e:  # hypothesis has printed the falsifying input
            print(f"{name}: property broken after {fz.CASES[name]} cases: {type(e).__name__}: {e}")
            return 1
        print(f"{name}: {fz.CASES[name]} cases ({fz.OUTCOMES[(name, 'parsed')]} reads parsed, "
              f"{fz.OUTCOMES[(name, 'refused')]} refused with one line)", flush=True)
    print(f"{sum(fz.CASES.values())} cases tried, 0 tracebacks ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
