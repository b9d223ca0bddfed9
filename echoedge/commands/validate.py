"""`echo-edge validate`: validate artefacts against the fp32 reference; report and gate.

Also holds the options `validate` and `run` share (which videos, how to time, how to gate).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import (
    artefacts_model, data_arg, model_arg, resolve_checkpoint, resolve_data, show_progress,
)
from echoedge.errors import EchoEdgeError


def add_validate_options(p: argparse.ArgumentParser, videos_default: int | None,
                         clips_default: int) -> None:
    """Options shared by `validate` and `run`: which videos, how to time, how to gate."""
    p.add_argument("--split", default="TEST", type=str.upper, choices=["TRAIN", "VAL", "TEST"],
                   help="held-out split to validate on (default TEST; the only split the dataset "
                   "needs; a FileList.csv without a Split column is all TEST)")
    p.add_argument("--videos", type=int, default=videos_default,
                   help="only the first N videos of the split (default: %s)" % (videos_default or "all"))
    p.add_argument("--clips", type=int, default=clips_default,
                   help=f"clips per video, evenly spaced as in `evaluate` (0 = every start; default {clips_default})")
    p.add_argument("--threads", type=int, default=2, help="runtime threads for every runner (default 2)")
    p.add_argument("--runs", type=int, default=20,
                   help="minimum timed batch-1 calls per artefact (>= 20 recommended): the accuracy "
                   "calls after the warm-up are timed, and topped up with calls on one clip if fewer")
    p.add_argument("--warmup", type=int, default=3, help="first calls of each runner left out of the latency figures")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for Bland-Altman CIs")
    p.add_argument("--worst", type=int, default=5, help="videos with the largest |ΔEF| to name")
    p.add_argument("--gates", type=Path, default=None,
                   help="YAML of thresholds overriding the shipped echoedge/validate/gates.yaml")
    p.add_argument("--strict", action="store_true", help="treat SKIPPED_PLATFORM as a failure (exit 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-frame cache folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-memory", action="store_true",
                   help="skip measuring each artefact's working memory (a fresh process per artefact, "
                   "seconds each; the planned figure is still read from the file)")


def validate_options(args: argparse.Namespace):
    from echoedge.validate.validate import ValidateOptions

    if args.runs < 1 or args.videos is not None and args.videos < 1 or args.clips < 0 or args.threads < 1:
        raise EchoEdgeError("--runs, --videos and --threads must be >= 1 and --clips >= 0")
    return ValidateOptions(split=args.split, videos=args.videos, clips_per_video=args.clips or None,
                           threads=args.threads, latency_runs=args.runs, warmup=args.warmup,
                           bootstrap=args.bootstrap, seed=args.seed, worst_n=args.worst,
                           cache_dir=args.cache_dir, progress=show_progress(args.no_progress),
                           require_tracings=args.require_tracings, memory=not args.no_memory)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="validate artefacts against the fp32 reference; report and gate",
        description="Run the checkpoint's fp32 eager reference once and every artefact folder at or "
        "below ARTEFACTS in its own runtime on held-out videos (same multi-clip protocol as "
        "`evaluate`): EF vs truth and vs the reference (|ΔEF|, Bland-Altman with bootstrap CIs, EF "
        "band agreement), EDV/ESV and landmark errors (n/a on videos without tracings), the "
        "always-mean EF baseline (the checkpoint's training EF mean, else the dataset's TRAIN mean, "
        "else n/a; the report says which), load time and p50/p90 latency, size and op coverage. "
        "Writes report.json (the single source), report.md, report.html and junit.xml to --out. "
        "Status per artefact: PASS, FAIL_ACCURACY, FAIL_RUNTIME, SKIPPED_PLATFORM. Exit code 0 "
        "when all pass, 1 when a gate fails (or a skip under --strict), 2 on an error. With "
        "--from-report, applies the gates to a stored report.json again without running anything.",
    )
    p.add_argument("artefacts", type=Path, nargs="*", help="artefact folders or folders holding them")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the fp32 reference the artefacts were converted from (default: the shipped checkpoint)")
    model_arg(p, from_artefacts=True)
    data_arg(p)
    p.add_argument("--out", type=Path, default=Path("runs/validate"), help="report folder")
    p.add_argument("--from-report", type=Path, default=None, metavar="REPORT_JSON",
                   help="re-gate and re-render this report.json instead of running artefacts")
    add_validate_options(p, videos_default=None, clips_default=4)
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from echoedge.validate.validate import regate, validate

    if args.from_report is not None:
        if args.artefacts:
            raise EchoEdgeError("give either ARTEFACTS or --from-report, not both")
        res = regate(args.from_report, args.out, gates=args.gates, strict=args.strict)
    else:
        if not args.artefacts:
            raise EchoEdgeError("no ARTEFACTS given (artefact folders, or a folder holding them)")
        model = artefacts_model(args.artefacts, args.model)
        res = validate(args.artefacts, resolve_data(args.data),
                       resolve_checkpoint(args.checkpoint, model), args.out, gates=args.gates,
                       strict=args.strict, options=validate_options(args), model=model)
    return print_result(res)


def print_result(res) -> int:  # res: echoedge.validate.validate.ValidateResult
    """The status table, the reference's figures and where the reports went; the exit code.
    `validate` and `stress` end the same way."""
    from echoedge.validate.report_md import host_line, summary_table, truth_lines

    print()
    print(summary_table(res.report))
    for line in truth_lines(res.report):
        print(line)
    print(host_line(res.report))
    s = res.report["summary"]
    print(("all artefacts passed" if s["passed"] else "a gate failed") +
          f"; wrote {', '.join(str(p) for p in res.files.values())}")
    return res.exit_code
