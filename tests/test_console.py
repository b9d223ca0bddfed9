"""Toolchain chatter to a log file: what the C++ libraries write to fd 2 and Python's stderr."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from echoedge.console import stderr_to


def test_stderr_to_takes_fd2_and_python_stderr_but_leaves_stdout(tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "logs" / "export.log"
    with stderr_to(log):
        os.write(2, b"[cpuinfo_utils.cpp:87] Failed to open midr file\n")  # as a C++ library does
        print("W1206 pytree warning", file=sys.stderr)
        print("status line")
    os.write(2, b"after the block\n")
    got = capfd.readouterr()
    assert "status line" in got.out
    assert "midr" not in got.err and "pytree" not in got.err and "after the block" in got.err
    text = log.read_text()
    assert "Failed to open midr file" in text and "W1206 pytree warning" in text


def test_stderr_to_restores_stderr_when_the_block_raises(tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError):
        with stderr_to(tmp_path / "x.log"):
            raise RuntimeError("conversion failed")
    os.write(2, b"one-line error\n")
    assert "one-line error" in capfd.readouterr().err


@pytest.mark.parametrize("block", ["captured_output", "stderr_to"])
def test_a_logging_handler_set_up_inside_the_block_does_not_outlive_its_log(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], block: str) -> None:
    """onnx2tf calls logging.basicConfig while stderr is the log: once the block closes the log,
    that handler must be gone, or every later record prints a "--- Logging error ---" traceback."""
    import logging

    from echoedge import console

    root = logging.getLogger()
    before = list(root.handlers)
    root.handlers = []  # basicConfig only acts on a root logger without handlers
    try:
        with getattr(console, block)(tmp_path / "x.log"):
            logging.basicConfig(level=logging.WARNING)
            logging.warning("inside the block")
        assert root.handlers == []
        logging.warning("after the block")
        err = capfd.readouterr().err
        assert "Logging error" not in err
    finally:
        root.handlers = before
    assert "inside the block" in (tmp_path / "x.log").read_text()
