"""`echo-edge export`: convert a checkpoint into on-device artefacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import (
    calibration_data_arg, data_arg, model_arg, resolve_checkpoint, resolve_data,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="convert a checkpoint into on-device artefacts",
        description="Rewrite the model into its deploy form (2D ops only, checked equal to the "
        "reference), draw one echo calibration set, and convert to each format and precision. "
        "Each artefact is a folder ARTEFACTS/<format>-<precision>/ with the model file and "
        "manifest.json; writes are atomic (a failed conversion leaves no folder).",
    )
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="default: the shipped checkpoint (Echo-E3Net)")
    model_arg(p)
    data_arg(p)
    p.add_argument("--format", default="executorch",
                   help="executorch | tflite | coreml | tflite-litert (comma list or 'all'; default "
                   "executorch). tflite converts through onnx2tf; tflite-litert through litert-torch "
                   "(fp32, int8), run in its own environment that `make litert` creates, and is "
                   "built only when named ('all' leaves it out)")
    p.add_argument("--precision", default="fp32,int8",
                   help="comma list of fp32, fp16 (tflite, coreml), int8 (executorch, tflite: "
                   "convs/FC int8, fragile ops float), int8-full (tflite: all-integer, int8 I/O), "
                   "w8 / w8a8 (coreml: int8 weights / weights and activations); each format builds "
                   "the ones it offers (default fp32,int8)")
    p.add_argument("--calibration", default="ef-stratified:128",
                   help="STRATEGY[:N] drawn from TRAIN (random | ef-stratified | phase-aware | "
                   "acquisition-diverse; see "
                   "--calibration-data for a dataset without TRAIN)")
    calibration_data_arg(p)
    p.add_argument("--calibration-set", type=Path, default=None,
                   help="reuse a set written by `echo-edge calibrate` instead of drawing one")
    p.add_argument("--int8-recipe", default="conv-stages", choices=("conv-stages", "whole"),
                   help="what int8 quantizes (executorch, tflite, tflite-litert): conv-stages (default) = "
                   "Echo-E3Net's CNN stages, the rest float (a video ResNet: every conv, its fc float); whole = every conv and linear weight "
                   "int8 (about a quarter of the fp32 file; ExecuTorch's Linear layers with "
                   "dynamically quantized activations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("artefacts"), help="artefacts folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing artefact folders")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from echoedge.console import stderr_to
    from echoedge.convert.export import CONVERTERS, DEFAULT_FORMATS, PRECISIONS, export, parse_list

    formats = parse_list(args.format, tuple(CONVERTERS), "format", DEFAULT_FORMATS)
    precisions = parse_list(args.precision, PRECISIONS, "precision")
    checkpoint, data = resolve_checkpoint(args.checkpoint, args.model), resolve_data(args.data)
    chatter = args.out / "logs" / "export.log"
    print(f"toolchain messages -> {chatter}")
    with stderr_to(chatter):  # torchao, TensorFlow, coremltools: off the console
        res = export(checkpoint, data, args.out, formats,
                     precisions, calibration=args.calibration, calibration_set=args.calibration_set,
                     seed=args.seed, overwrite=args.overwrite, cache_dir=args.cache_dir,
                     int8_recipe=args.int8_recipe, calibration_data=args.calibration_data,
                     require_tracings=args.require_tracings, model=args.model)
    for path in res.artefacts:
        print(f"wrote {path}")
    return 0
