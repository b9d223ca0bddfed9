"""`echo-edge run`: the main job, end to end (calibrate, export, validate, report)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from echoedge.commands.common import calibration_data_arg, data_arg, model_arg, resolve_checkpoint
from echoedge.commands.stress import add_stress_options, stress_options
from echoedge.commands.validate import add_validate_options, validate_options
from echoedge.errors import EchoEdgeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the main job, end to end, on the built-in default",
        description="Calibrate -> export every available format (ExecuTorch, TFLite, Core ML) in fp32 "
        "and int8 -> validate each artefact against the fp32 reference on held-out videos -> write "
        "report.json/.md/.html and junit.xml -> print the status of every artefact. Defaults: the "
        "built-in synthetic EchoNet-format dataset (generated and cached on first use) and the "
        "shipped checkpoint; --data/--checkpoint switch to your EchoNet-Dynamic copy and model "
        "(or your own test set: only the validated split is needed, tracings are optional). "
        "Exit code 0 when every artefact passes its gates, 1 when one fails, 2 on an error.",
    )
    data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="default: the shipped checkpoint (Echo-E3Net)")
    model_arg(p)
    p.add_argument("--format", default="all", help="executorch | tflite | coreml | tflite-litert (comma list or 'all'; "
                   "formats not in this install are named in the report and skipped; 'all' leaves "
                   "out tflite-litert, the litert-torch TFLite route: name it to build it)")
    # Literal (= echoedge.validate.pipeline.DEFAULT_PRECISIONS) so that --help imports nothing heavy.
    p.add_argument("--precision", default="fp32,int8,w8a8",
                   help="comma list; each format builds those it offers (default %(default)s: fp32 "
                   "everywhere, int8 for ExecuTorch/TFLite, w8a8 for Core ML: int8 weights and "
                   "activations, ranges and output shift measured in the MIL interpreter on the "
                   "calibration set; add w8 for Core ML's int8 weights with fp16 activations)")
    # Literal (= echoedge.convert.int8_recipe.RECIPES) so that --help imports nothing heavy.
    p.add_argument("--int8-recipe", default=None, choices=("conv-stages", "whole"),
                   help="what ExecuTorch's and TFLite's int8 artefacts quantize: conv-stages (the "
                   "default: the CNN stages int8, the rest float; 6.3-6.6 MB) or whole (every conv "
                   "and linear weight int8: about a quarter of fp32's size; on the shipped "
                   "checkpoint less EF drift than conv-stages, bench/bench_int8.py measures both)")
    p.add_argument("--calibration", default="ef-stratified:32",
                   help="STRATEGY[:N] drawn from TRAIN (see --calibration-data) for the int8 "
                   "artefacts (default %(default)s: as accurate as 64 on the shipped checkpoint, and "
                   "each clip costs every int8 conversion a calibration pass, about 2 s in all)")
    calibration_data_arg(p)
    p.add_argument("--calibration-set", type=Path, default=None,
                   help="reuse a set written by `echo-edge calibrate` instead of drawing one")
    p.add_argument("--reuse", action="store_true",
                   help="keep artefacts in OUT/artefacts built earlier from the same checkpoint and "
                   "calibration set instead of converting again")
    p.add_argument("--jobs", type=int, default=None,
                   help="formats converted at once, each in its own process (default: one per CPU "
                   "core, at most one per format; 1 converts one after another)")
    p.add_argument("--out", type=Path, default=Path("runs/run"),
                   help="output folder: artefacts/, report.json, report.md, report.html, junit.xml, run.json")
    add_validate_options(p, videos_default=24, clips_default=2)
    p.add_argument("--stress", action="store_true",
                   help="also run the stress suite (`echo-edge stress`): every int8 artefact and the "
                   "fp32 reference on the validated videos under each acquisition shift; report "
                   "section, heat map and stress gates (int8 must meet its clean gates under every "
                   "mild and moderate shift). Costs minutes: see the README")
    add_stress_options(p, prefix="stress-")
    p.add_argument("--stress-precisions", default="int8,int8-full", metavar="LIST",
                   help="precisions stressed by --stress (default %(default)s; add w8a8 for Core "
                   "ML's, which off macOS runs in the MIL interpreter at ~0.5 s per clip, about "
                   "25 s more per shifted condition; 'all' adds fp32 and w8 too)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from echoedge.convert.export import CONVERTERS, DEFAULT_FORMATS, PRECISIONS, parse_list
    from echoedge.validate.pipeline import run_job
    from echoedge.validate.report_md import host_line, summary_table, truth_lines

    formats = parse_list(args.format, tuple(CONVERTERS), "format", DEFAULT_FORMATS)
    precisions = parse_list(args.precision, PRECISIONS, "precision")
    if args.jobs is not None and args.jobs < 1:
        raise EchoEdgeError("--jobs must be >= 1")
    jobs = args.jobs or min(os.cpu_count() or 1, len(formats))
    opt = validate_options(args)
    opt.realtime = True  # the report's "smallest real-time hop" table (echoedge.validate.realtime)
    if args.stress:
        opt.stress = stress_options(args.stress_shifts, args.stress_levels, args.stress_precisions)
    # Before minutes of data generation: a video ResNet without --checkpoint is one line now.
    checkpoint = resolve_checkpoint(args.checkpoint, args.model)
    job = run_job(args.out, data=args.data, checkpoint=checkpoint, formats=formats,
                  precisions=precisions, calibration=args.calibration,
                  calibration_set=args.calibration_set, options=opt,
                  gates=args.gates, strict=args.strict, reuse=args.reuse, seed=args.seed,
                  jobs=jobs, calibration_data=args.calibration_data, int8_recipe=args.int8_recipe,
                  model=args.model)
    report = job.validation.report
    print()
    print(summary_table(report))
    for line in truth_lines(report):
        print(line)
    print(host_line(report))
    for note in report.get("notes") or []:
        print(f"note: {note}")
    print("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in job.timings_s.items()))
    verdict = "all artefacts passed" if report["summary"]["passed"] else "a gate failed"
    print(f"{verdict}; report: {job.validation.files['html']}")
    return job.exit_code
