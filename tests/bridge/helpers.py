"""Helpers for the bridge tests: the JDK and its compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

STUBS = Path(__file__).resolve().parent / "stubs"


def need_jdk() -> None:
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (make setup installs default-jdk-headless)")


def javac(sources: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(out), *map(str, sources)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
