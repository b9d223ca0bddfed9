"""The `echo-edge` command. Thin: parse, call the packages, print.

Expected failures (EchoEdgeError) become one line on stderr and a non-zero exit; only bugs show
a traceback. Every import of a heavy package happens inside the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from echoedge.errors import EchoEdgeError

DEFAULT_CONFIG = "paper"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic EchoNet-Dynamic-format dataset",
        description=(
            "Generate apical-4-chamber-like echo videos with traced ED/ES frames, written in "
            "exactly EchoNet-Dynamic's layout (FileList.csv, VolumeTracings.csv, Videos/*.avi). "
            "The same seed gives the same bytes; a dataset of N videos is a prefix of one of "
            "M > N videos with the same seed."
        ),
    )
    p.add_argument("out", type=Path, help="output folder (created; must be empty or absent)")
    p.add_argument("--videos", type=int, default=300, help="number of videos (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from echoedge.data.synthetic import generate_dataset

    summary = generate_dataset(args.out, videos=args.videos, seed=args.seed, workers=args.workers)
    print(summary.describe())
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect an EchoNet-Dynamic-format dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{check,show,summary}")
    c = dsub.add_parser(
        "check",
        help="validate a dataset folder, one line per problem",
        description="Check FileList.csv, VolumeTracings.csv and every video. Prints one line per "
        "problem; exits 1 if any problem is fatal (the reader would refuse or drop data).",
    )
    c.add_argument("root", type=Path)
    c.add_argument("--no-videos", action="store_true", help="skip decoding every video (faster)")
    c.set_defaults(func=_cmd_data_check)
    s = dsub.add_parser(
        "show",
        help="montage of frames with the ED/ES tracings and landmarks drawn on",
    )
    s.add_argument("root", type=Path)
    s.add_argument("filename", help="FileName as in FileList.csv (with or without .avi)")
    s.add_argument("-o", "--out", type=Path, required=True, help="output PNG")
    s.set_defaults(func=_cmd_data_show)
    m = dsub.add_parser("summary", help="counts, splits and EF distribution of a dataset")
    m.add_argument("root", type=Path)
    m.set_defaults(func=_cmd_data_summary)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from echoedge.data.check import check_dataset

    problems = check_dataset(args.root, decode_videos=not args.no_videos)
    for pr in problems:
        print(pr.line())
    fatal = sum(pr.fatal for pr in problems)
    print(f"{args.root}: {len(problems)} problem(s), {fatal} fatal")
    return 1 if fatal else 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from echoedge.data.show import render_montage

    out = render_montage(args.root, args.filename, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from echoedge.data.echonet import EchoNet

    print(EchoNet(args.root).summary())
    return 0


def _data_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data", type=Path, required=required, default=None,
        help="EchoNet-Dynamic-format folder (default: the built-in synthetic dataset, generated "
        "and cached on first use)",
    )


def _resolve_data(path: Path | None) -> Path:
    if path is not None:
        return path
    from echoedge.data.default import default_dataset

    return default_dataset()


def _resolve_checkpoint(path: Path | None) -> Path:
    if path is not None:
        return path
    from echoedge.errors import CheckpointError
    from echoedge.model.checkpoint import SHIPPED

    if not SHIPPED.is_file():
        raise CheckpointError(f"{SHIPPED}: the shipped checkpoint is missing from this install")
    return SHIPPED


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="parameters, FLOPs and a per-stage table of an Echo-E3Net config",
        description="Counts parameters and FLOPs (torch.utils.flop_counter, batch 1). The paper's "
        "'8.05 GFLOPs' counts one multiply-add as one FLOP; both conventions are printed.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help="preset name (default: paper)")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from echoedge.model.config import get_config
    from echoedge.model.info import format_info, model_info

    print(format_info(model_info(get_config(args.config))))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train Echo-E3Net on an EchoNet-Dynamic-format dataset",
        description="AdamW + warm-up + cosine, shift augmentation, per-epoch VAL MAE, best.pt and "
        "last.pt in --out, log.csv/log.json/curves.png. Uses CUDA (bf16 autocast) when present; "
        "for several GPUs or processes launch with `torchrun --nproc_per_node N -m echoedge.cli train ...`.",
    )
    p.add_argument("--data", type=Path, required=True, help="EchoNet-Dynamic-format folder")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="model preset (default: paper)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=1, help="clips per TRAIN video per epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-clips", type=int, default=2, help="clips per VAL video for the epoch MAE")
    p.add_argument("--val-videos", type=int, default=None, help="limit VAL videos (faster epochs)")
    p.add_argument("--max-train-videos", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="fit the cosine schedule so that training ends within this wall time")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-frame cache folder")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from echoedge.model.train import TrainConfig, train

    tc = TrainConfig(
        data=str(args.data), out=str(args.out), config=args.config, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        repeats=args.repeats, workers=args.workers, seed=args.seed, val_clips=args.val_clips,
        val_videos=args.val_videos, max_train_videos=args.max_train_videos,
        time_budget_s=args.time_budget, device=args.device, amp=not args.no_amp,
        cache_dir=str(args.cache_dir) if args.cache_dir else None, resume=args.resume,
        progress=not args.no_progress,
    )
    res = train(tc)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(f"best VAL MAE {res.best_val_mae:.2f} after {res.epochs} epochs in {res.wall_s / 60:.1f} min; "
              f"checkpoints: {res.best}, {res.last}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="per-video EF metrics of a checkpoint on one split",
        description="Per-video EF = mean over N evenly spaced clips. Prints MAE, RMSE, R2, bias, "
        "the EF-band confusion and the MAE of always predicting the TRAIN mean; writes "
        "results.json and scatter.png to --out.",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    _data_arg(p)
    p.add_argument("--split", default="TEST", type=str.upper, choices=["TRAIN", "VAL", "TEST"])
    p.add_argument("--clips", type=int, default=4, help="clips per video (0 = every start)")
    p.add_argument("--videos", type=int, default=None, help="only the first N videos of the split")
    p.add_argument("--config", default=None, help="fail unless the checkpoint is of this preset")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from echoedge.model.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(
        _resolve_checkpoint(args.checkpoint), _resolve_data(args.data), split=args.split,
        clips_per_video=args.clips or None, videos=args.videos, out=args.out,
        cache_dir=args.cache_dir, expect_config=args.config,
    )
    print(res.describe())
    print(f"wrote {args.out / 'results.json'} and {args.out / 'scatter.png'}")
    return 0


def _validate_options_args(p: argparse.ArgumentParser, videos_default: int | None,
                           clips_default: int) -> None:
    """Options shared by `validate` and `run`: which videos, how to time, how to gate."""
    p.add_argument("--split", default="TEST", type=str.upper, choices=["TRAIN", "VAL", "TEST"],
                   help="held-out split to validate on (default TEST)")
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


def _validate_options(args: argparse.Namespace):
    from echoedge.validate.validate import ValidateOptions

    if args.runs < 1 or args.videos is not None and args.videos < 1 or args.clips < 0 or args.threads < 1:
        raise EchoEdgeError("--runs, --videos and --threads must be >= 1 and --clips >= 0")
    return ValidateOptions(split=args.split, videos=args.videos, clips_per_video=args.clips or None,
                           threads=args.threads, latency_runs=args.runs, warmup=args.warmup,
                           bootstrap=args.bootstrap, seed=args.seed, worst_n=args.worst,
                           cache_dir=args.cache_dir, progress=not args.no_progress)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the main job, end to end, on the built-in default",
        description="Calibrate -> export every available format (ExecuTorch, TFLite, Core ML) in fp32 "
        "and int8 -> validate each artefact against the fp32 reference on held-out videos -> write "
        "report.json/.md/.html and junit.xml -> print the status of every artefact. Defaults: the "
        "built-in synthetic EchoNet-format dataset (generated and cached on first use) and the "
        "shipped checkpoint; --data/--checkpoint switch to your EchoNet-Dynamic copy and model. "
        "Exit code 0 when every artefact passes its gates, 1 when one fails, 2 on an error.",
    )
    _data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    p.add_argument("--format", default="all", help="executorch | tflite | coreml (comma list or 'all'; "
                   "formats not in this install are named in the report and skipped)")
    # Literal (= echoedge.validate.pipeline.DEFAULT_PRECISIONS) so that --help imports nothing heavy.
    p.add_argument("--precision", default="fp32,int8,w8",
                   help="comma list; each format builds those it offers (default %(default)s: fp32 "
                   "everywhere, int8 for ExecuTorch/TFLite, w8 (int8 weights) for Core ML; add w8a8 "
                   "for Core ML int8 activations, ranges from the MIL interpreter; ~1 EF point of drift "
                   "on the shipped checkpoint)")
    p.add_argument("--calibration", default="ef-stratified:32",
                   help="STRATEGY[:N] drawn from TRAIN for the int8 artefacts (default %(default)s: "
                   "as accurate as 64 on the shipped checkpoint, and TFLite's calibrator takes ~1.7 s "
                   "per clip)")
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
    _validate_options_args(p, videos_default=24, clips_default=2)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from echoedge.convert.export import CONVERTERS, PRECISIONS, parse_list
    from echoedge.validate.pipeline import run_job
    from echoedge.validate.report_md import summary_table

    formats = parse_list(args.format, tuple(CONVERTERS), "format")
    precisions = parse_list(args.precision, PRECISIONS, "precision")
    if args.jobs is not None and args.jobs < 1:
        raise EchoEdgeError("--jobs must be >= 1")
    jobs = args.jobs or min(os.cpu_count() or 1, len(formats))
    job = run_job(args.out, data=args.data, checkpoint=args.checkpoint, formats=formats,
                  precisions=precisions, calibration=args.calibration,
                  calibration_set=args.calibration_set, options=_validate_options(args),
                  gates=args.gates, strict=args.strict, reuse=args.reuse, seed=args.seed,
                  jobs=jobs)
    report = job.validation.report
    print()
    print(summary_table(report))
    for note in report.get("notes") or []:
        print(f"note: {note}")
    print("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in job.timings_s.items()))
    verdict = "all artefacts passed" if report["summary"]["passed"] else "a gate failed"
    print(f"{verdict}; report: {job.validation.files['html']}")
    return job.exit_code


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="draw an echo calibration set for int8 quantization",
        description="Draw N clips from TRAIN (or VAL; never TEST) with a strategy: random, "
        "ef-stratified (equal share per EF band <40, 40-49, 50-59, >=60, so low-EF hearts are "
        "represented) or phase-aware (clips holding the traced ED and ES frames). Clips use the "
        "checkpoint's ClipSpec and normalisation. Writes calibration.npz and manifest.json "
        "(strategy, N, seed, video ids, starts, sha256 per clip, dataset fingerprint).",
    )
    _data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    p.add_argument("--strategy", default="ef-stratified", help="random | ef-stratified | phase-aware")
    p.add_argument("--size", type=int, default=128, help="number of clips (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="TRAIN", type=str.upper, help="TRAIN or VAL")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from echoedge.calibration import calibrate, describe

    cs = calibrate(_resolve_data(args.data), _resolve_checkpoint(args.checkpoint), args.out,
                   calibration=f"{args.strategy}:{args.size}", seed=args.seed, split=args.split,
                   cache_dir=args.cache_dir)
    print(describe(cs))
    print(f"wrote {args.out}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="convert a checkpoint into on-device artefacts",
        description="Rewrite the model into its deploy form (2D ops only, checked equal to the "
        "reference), draw one echo calibration set, and convert to each format and precision. "
        "Each artefact is a folder ARTEFACTS/<format>-<precision>/ with the model file and "
        "manifest.json; writes are atomic (a failed conversion leaves no folder).",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    _data_arg(p)
    p.add_argument("--format", default="executorch",
                   help="executorch | tflite | coreml (comma list or 'all'; default executorch)")
    p.add_argument("--precision", default="fp32,int8",
                   help="comma list of fp32, fp16 (tflite, coreml), int8 (executorch, tflite: "
                   "convs/FC int8, fragile ops float), int8-full (tflite: all-integer, int8 I/O), "
                   "w8 / w8a8 (coreml: int8 weights / weights and activations); each format builds "
                   "the ones it offers (default fp32,int8)")
    p.add_argument("--calibration", default="ef-stratified:128",
                   help="STRATEGY[:N] drawn from TRAIN (random | ef-stratified | phase-aware)")
    p.add_argument("--calibration-set", type=Path, default=None,
                   help="reuse a set written by `echo-edge calibrate` instead of drawing one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("artefacts"), help="artefacts folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing artefact folders")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from echoedge.convert.export import CONVERTERS, PRECISIONS, export, parse_list

    formats = parse_list(args.format, tuple(CONVERTERS), "format")
    precisions = parse_list(args.precision, PRECISIONS, "precision")
    res = export(_resolve_checkpoint(args.checkpoint), _resolve_data(args.data), args.out, formats,
                 precisions, calibration=args.calibration, calibration_set=args.calibration_set,
                 seed=args.seed, overwrite=args.overwrite, cache_dir=args.cache_dir)
    for path in res.artefacts:
        print(f"wrote {path}")
    return 0


def _add_bridge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bridge", help="bundle artefacts for an Android or iOS app (glue code + golden vectors)",
        description="Bundle the artefacts a device engineer needs: the model files and manifests, "
        "source code that feeds the model from probe frames and turns its outputs into EF (a Gradle "
        "module with a pure-Java core for Android, a Swift package for iOS), and golden vectors "
        "computed by the validation runners. Written all-or-nothing.",
    )
    bsub = p.add_subparsers(dest="platform", required=True, metavar="{android,ios}")
    for name, formats in (("android", ".pte and .tflite"), ("ios", ".mlpackage and .pte")):
        b = bsub.add_parser(name, help=f"{name} bundle from the {formats} artefacts")
        b.add_argument("artefacts", type=Path, help="artefacts folder (ARTEFACTS/<format>-<precision>/)")
        b.add_argument("--out", type=Path, required=True, help="bundle folder to write")
        b.add_argument("--report", type=Path, default=None,
                       help="validation report.json to copy EF errors from (default: ARTEFACTS/../report.json "
                       "when present; otherwise the bundle says 'not validated')")
        b.add_argument("--threads", type=int, default=2, help="runtime threads for the golden outputs")
        b.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
        b.set_defaults(func=_cmd_bridge)


def _cmd_bridge(args: argparse.Namespace) -> int:
    if args.platform == "android":
        from echoedge.android_bridge import build_android_bundle as build
    else:
        from echoedge.ios_bridge import build_ios_bundle as build
    summary = build(args.artefacts, args.out, report=args.report, overwrite=args.overwrite,
                    threads=args.threads, progress=sys.stderr.isatty())
    print(summary.describe())
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="validate artefacts against the fp32 reference; report and gate",
        description="Run the checkpoint's fp32 eager reference once and every artefact folder at or "
        "below ARTEFACTS in its own runtime on held-out videos (same multi-clip protocol as "
        "`evaluate`): EF vs truth and vs the reference (|ΔEF|, Bland-Altman with bootstrap CIs, EF "
        "band agreement), EDV/ESV and landmark errors, load time and p50/p90 latency, size and op "
        "coverage. Writes report.json (the single source), report.md, report.html and junit.xml to "
        "--out. Status per artefact: PASS, FAIL_ACCURACY, FAIL_RUNTIME, SKIPPED_PLATFORM. Exit code "
        "0 when all pass, 1 when a gate fails (or a skip under --strict), 2 on an error. With "
        "--from-report, applies the gates to a stored report.json again without running anything.",
    )
    p.add_argument("artefacts", type=Path, nargs="*", help="artefact folders or folders holding them")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the fp32 reference the artefacts were converted from (default: the shipped checkpoint)")
    _data_arg(p)
    p.add_argument("--out", type=Path, default=Path("runs/validate"), help="report folder")
    p.add_argument("--from-report", type=Path, default=None, metavar="REPORT_JSON",
                   help="re-gate and re-render this report.json instead of running artefacts")
    _validate_options_args(p, videos_default=None, clips_default=4)
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from echoedge.validate.report_md import summary_table
    from echoedge.validate.validate import regate, validate

    if args.from_report is not None:
        if args.artefacts:
            raise EchoEdgeError("give either ARTEFACTS or --from-report, not both")
        res = regate(args.from_report, args.out, gates=args.gates, strict=args.strict)
    else:
        if not args.artefacts:
            raise EchoEdgeError("no ARTEFACTS given (artefact folders, or a folder holding them)")
        res = validate(args.artefacts, _resolve_data(args.data), _resolve_checkpoint(args.checkpoint),
                       args.out, gates=args.gates, strict=args.strict, options=_validate_options(args))
    print()
    print(summary_table(res.report))
    s = res.report["summary"]
    print(("all artefacts passed" if s["passed"] else "a gate failed") +
          f"; wrote {', '.join(str(p) for p in res.files.values())}")
    return res.exit_code


def _add_debug_quant(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "debug-quant", help="where the int8 EF error comes from, and how to remove it",
        description="For artefacts converted from one checkpoint, on held-out videos against the fp32 "
        "deploy form: (attribution) each artefact's |ΔEF| split into quantization (the same scheme "
        "simulated in PyTorch) and conversion/runtime; (sensitivity) one layer at a time kept float in "
        "the simulation, ranked; (budget) the most sensitive layers kept float until the simulated mean "
        "|ΔEF| meets --budget, the mixed artefact emitted per format and measured for real (EF, latency, "
        "size; Pareto front); (calibration) disjoint calibration draws x sizes x strategies: spread, "
        "size curve, low-EF hearts apart, recommended N. Writes OUT/debug_quant.json, debug_quant.md, "
        "PNG plots and OUT/artefacts/*-mixed; with --report adds a 'Quantization debugging' section to "
        "that report. Slow on a CPU (each simulated evaluation costs seconds per clip): size it with "
        "--videos, --clips, --calibration-clips, --sizes and --draws. Exit 0, 1 when a budget cannot "
        "be met, 2 on an error.",
    )
    p.add_argument("artefacts", type=Path, nargs="*",
                   help="artefact folders or folders holding them (not needed for --parts calibration)")
    _data_arg(p)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the checkpoint the artefacts were converted from (default: the shipped checkpoint)")
    p.add_argument("--out", type=Path, default=Path("runs/debug-quant"), help="output folder")
    p.add_argument("--parts", default="all",
                   help="comma list of attribution, sensitivity, budget, calibration (default all; "
                   "budget runs the sensitivity sweep it needs)")
    p.add_argument("--budget", type=float, default=0.25, help="EF budget: mean |ΔEF| vs fp32 (default 0.25)")
    p.add_argument("--split", default="VAL", type=str.upper, choices=["TRAIN", "VAL", "TEST"],
                   help="videos every part is measured on (default VAL; validate uses TEST)")
    p.add_argument("--videos", type=int, default=8, help="first N videos of the split (default 8)")
    p.add_argument("--clips", type=int, default=1, help="clips per video (default 1)")
    p.add_argument("--calibration-clips", type=int, default=32,
                   help="clips of each artefact's calibration set the sweeps calibrate on (default 32)")
    p.add_argument("--mode", default="all-but", choices=["all-but", "only"],
                   help="sensitivity: keep one layer float (all-but, default) or quantize only it (only)")
    p.add_argument("--units", default=None, help="comma list of layers to sweep (default: all the recipe quantizes)")
    p.add_argument("--max-float", type=int, default=None, help="at most this many layers float in the budget search")
    p.add_argument("--keep-float", default=None, metavar="UNITS",
                   help="comma list of layers: skip the search and emit exactly this mix (checked against "
                        "--budget in simulation, then measured); no sensitivity sweep needed")
    p.add_argument("--no-emit", action="store_true", help="search the budget in simulation only; emit nothing")
    p.add_argument("--strategies", default="random,ef-stratified,phase-aware",
                   help="calibration strategies to compare (default all three)")
    p.add_argument("--sizes", default="8,16,32", help="calibration sizes N for the size curve (default 8,16,32)")
    p.add_argument("--draws", type=int, default=3, help="disjoint calibration draws per N (default 3)")
    p.add_argument("--calibration-split", default="TRAIN", type=str.upper, help="TRAIN or VAL (never TEST)")
    p.add_argument("--report", type=Path, default=None, metavar="REPORT_JSON",
                   help="a validation report.json to add the section to (report.md/.html are re-rendered)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("--runs", type=int, default=20, help="timed latency runs per candidate artefact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-frame cache folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_debug_quant)


def _cmd_debug_quant(args: argparse.Namespace) -> int:
    from echoedge.quantdebug.job import DebugQuantOptions, debug_quant, parse_parts, parse_sizes

    opt = DebugQuantOptions(
        parts=parse_parts(args.parts), split=args.split, videos=args.videos, clips_per_video=args.clips,
        calibration_clips=args.calibration_clips, budget=args.budget, mode=args.mode,
        units=tuple(u.strip() for u in args.units.split(",") if u.strip()) if args.units else None,
        max_float=args.max_float, emit=not args.no_emit,
        keep_float=tuple(u.strip() for u in args.keep_float.split(",") if u.strip())
        if args.keep_float is not None else None,
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        sizes=parse_sizes(args.sizes), draws=args.draws, calibration_split=args.calibration_split,
        threads=args.threads, latency_runs=args.runs, seed=args.seed, cache_dir=args.cache_dir,
        progress=not args.no_progress)
    res = debug_quant(args.artefacts, _resolve_data(args.data), _resolve_checkpoint(args.checkpoint),
                      args.out, opt, report=args.report)
    for b in res.data.get("budget") or []:
        if not b["met"]:
            print(f"budget {b['budget']:g} not met for {b['format']} {b['precision']}: {b['reason']}")
    for g in res.data.get("goal") or []:
        print(f"goal ({g['budget']:g} EF points, {g['speedup_goal']:g}x eager) {g['format']}: {g['status']}"
              + (f" by {g['candidate']}" if g["status"] == "met" else f" ({g['reason']})"))
    print("wrote " + ", ".join(str(p) for p in res.files.values()))
    return res.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echo-edge",
        description=(
            "Echo-E3Net ejection-fraction models, from training to validated on-device "
            "artefacts. Start with `echo-edge run` (the whole job on a built-in synthetic "
            "dataset and the shipped checkpoint)."
        ),
    )
    from echoedge import __version__

    parser.add_argument("--version", action="version", version=f"echo-edge {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_synth(sub)
    _add_data(sub)
    _add_info(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_calibrate(sub)
    _add_export(sub)
    _add_validate(sub)
    _add_bridge(sub)
    _add_debug_quant(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EchoEdgeError as e:
        print(f"echo-edge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("echo-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
