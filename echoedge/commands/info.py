"""`echo-edge info`: parameters and FLOPs of an Echo-E3Net config, or what an artefact holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoedge.commands.common import DEFAULT_CONFIG


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="parameters, FLOPs and a per-stage table of an Echo-E3Net config; or, given "
        "an artefact folder, its weight bytes and ops by dtype",
        description="Without ARTEFACT: counts parameters and FLOPs (torch.utils.flop_counter, "
        "batch 1). The paper's '8.05 GFLOPs' counts one multiply-add as one FLOP; both conventions "
        "are printed. With ARTEFACT (a folder written by `echo-edge export` or `run`): reads its "
        "model file itself (.pte program and XNNPACK graphs, .tflite flatbuffer, Core ML MIL "
        "program) and prints the weight bytes by dtype, the share stored as int8, and the ops by "
        "the dtype they compute in, and its planned activation memory (echoedge.convert.memory_plan).",
    )
    p.add_argument("artefact", nargs="?", type=Path, default=None,
                   help="an artefact folder (with manifest.json); omit for the config table")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="preset name (default: paper)")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    if args.artefact is not None:
        return _artefact_info(args.artefact)
    from echoedge.model.config import get_config
    from echoedge.model.info import format_info, model_info

    print(format_info(model_info(get_config(args.config))))
    return 0


def _artefact_info(folder: Path) -> int:
    from echoedge.convert.artefact import read_manifest, read_memory
    from echoedge.convert.memory_plan import plan_lines
    from echoedge.convert.output_shift import shift_line
    from echoedge.convert.weights import breakdown_table, weight_breakdown

    from echoedge.console import captured_output
    from echoedge.data.default import cache_root

    m = read_manifest(folder)
    # executorch, torchao and coremltools print warnings on import: to a log, not between lines.
    log = cache_root() / "logs" / "info.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with captured_output(log):
        b = weight_breakdown(folder / m.model_file, m.format)
        memory = read_memory(folder / m.model_file, m.format)
    print(f"{folder}: {m.format} {m.precision} ({m.runtime}), {m.model_file} "
          f"{(m.model_bytes or 0) / 1e6:.2f} MB")
    print(breakdown_table(b.to_dict()))
    shift = (m.details.get("quantization") or {}).get("output_shift")
    if shift and "not_applied" in shift:
        print(f"output shift: not taken out ({shift['not_applied']})")
    elif shift:  # the whole recipe's bias correction (echoedge.convert.output_shift)
        print(f"output shift taken out: {shift_line(shift['outputs'], shift['shift'])} "
              f"(mean int8 - fp32 on {shift['clips']} calibration clips; {shift['applied_to']})")
    print("\n".join(plan_lines(memory)))
    return 0
