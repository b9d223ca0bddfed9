"""The `echo-edge` command. Thin: parse, call the packages, print.

Each command group lives in its own module under `echoedge.commands` (its parser and handler);
this module assembles them, in the order `--help` lists them, and runs the chosen one.
Expected failures (EchoEdgeError) become one line on stderr and a non-zero exit; only bugs show
a traceback. Every import of a heavy package happens inside the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import sys

from echoedge.commands import (
    bridge, calibrate, data, debug_quant, evaluate, explore, export, info, run, stream, stress, synth, train,
    validate, verify,
)
from echoedge.atomic import DiskFullError, disk_full, is_disk_full
from echoedge.errors import EchoEdgeError

# The order `echo-edge --help` lists the commands in.
COMMANDS = (run, synth, data, info, train, evaluate, calibrate, export, validate, verify, stress, stream,
            bridge, debug_quant, explore)


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
    for command in COMMANDS:
        command.register(sub)
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
    except OSError as e:
        if not is_disk_full(e):
            raise
        # A write that no echoedge.atomic writer wrapped (a log, a cache): still one line.
        line = str(disk_full(e.filename)) if e.filename else "no space left on device writing the output"
        print(f"echo-edge: error: {line}", file=sys.stderr)
        return DiskFullError.exit_code


if __name__ == "__main__":
    sys.exit(main())
