"""`echo-edge info`: parameters, FLOPs and a per-stage table of an Echo-E3Net config."""

from __future__ import annotations

import argparse

from echoedge.commands.common import DEFAULT_CONFIG


def register(sub: argparse._SubParsersAction) -> None:
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
