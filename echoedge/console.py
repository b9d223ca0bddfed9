"""Keeping toolchain chatter (TensorFlow, XNNPACK's cpuinfo, torchao, coremltools, absl) off
the console: it goes to a log file, so the status lines stay readable.

Both context managers redirect the file descriptors as well as Python's streams, because the
C++ libraries write to fd 1/2 directly and Python-level redirection alone does not catch them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def captured_output(log: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr -- Python's and the C++ libraries' file
    descriptors alike -- to `log` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(log, "ab", buffering=0) as raw, open(log, "a", buffering=1) as text:
        os.dup2(raw.fileno(), 1)
        os.dup2(raw.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            text.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            _drop_handlers_on(text)


@contextlib.contextmanager
def stderr_to(log: Path) -> Iterator[None]:
    """Send stderr (Python's and fd 2) to `log`, appending, while the block runs; stdout stays,
    so a stage's own status lines still reach the console."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    raw, text = open(log, "ab", buffering=0), open(log, "a", buffering=1)
    os.dup2(raw.fileno(), 2)
    try:
        with contextlib.redirect_stderr(text):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _drop_handlers_on(text)
        _close_quietly(text, raw)


def _drop_handlers_on(stream: Any) -> None:
    """Remove logging handlers that a library set up on `stream` while it stood in for
    sys.stderr (onnx2tf's logging.basicConfig does): once the block closes the log they would
    print "--- Logging error ---" tracebacks on every later log record."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in list(getattr(logger, "handlers", [])):
            if getattr(h, "stream", None) is stream:
                logger.removeHandler(h)


def _close_quietly(*files: Any) -> None:
    # On a full disk the log's last flush fails; that must not hide the error the block raised.
    for f in files:
        with contextlib.suppress(OSError):
            f.close()
