"""`echo-edge verify`: re-hash artefact folders against their manifests and re-run their golden
vectors in their runtimes (echoedge.validate.verify); one PASS/FAIL line per folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from echoedge.errors import EchoEdgeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check artefact folders: hashes against the manifest, golden vectors re-run",
        description="For each ARTEFACT_DIR (a folder written by `echo-edge export` or `run`): "
        "checks the model file's sha256 (for a .mlpackage, over its files) and the golden-vector "
        "file's sha256 against manifest.json, then runs the golden inputs kept in the folder "
        "through the artefact's runtime and compares the outputs with the ones kept beside them "
        "(|got - want| <= atol + rtol * |want|, the tolerance the manifest records). ExecuTorch: "
        "the test cases of model.bpte (a BundledProgram, which must bundle model.pte itself) run "
        "on model.pte; TFLite: golden.npz in the LiteRT interpreter; Core ML: golden.npz in Core ML "
        "on macOS, elsewhere in echo-edge's MIL interpreter (the line says so). Prints one line per "
        "folder, PASS or FAIL with what was checked. Exit 0 when every folder passes, 1 when one "
        "fails, 2 when a folder is not there or is not an artefact (the other folders are still "
        "checked).",
    )
    p.add_argument("artefacts", nargs="+", type=Path, metavar="ARTEFACT_DIR",
                   help="artefact folders (each with manifest.json)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for the runtimes (default 2); results do not depend on it")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from echoedge.console import captured_output
    from echoedge.data.default import cache_root
    from echoedge.validate.verify import verify_folder

    # executorch, tensorflow and coremltools print on import and load: to a log, not between lines.
    log = cache_root() / "logs" / "verify.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    failed = errors = False
    for folder in args.artefacts:
        try:
            with captured_output(log):
                result = verify_folder(folder, threads=args.threads)
        except EchoEdgeError as e:  # not an artefact folder: say so and go on with the others
            print(f"echo-edge: error: {e}", file=sys.stderr, flush=True)
            errors = True
            continue
        print(result.line(), flush=True)
        failed = failed or not result.passed
    return 2 if errors else 1 if failed else 0
