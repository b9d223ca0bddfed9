"""One writer per output folder: an advisory lock on OUT/.echo-edge.lock.

Two `echo-edge run` into the same --out would overwrite each other's artefacts and reports half
way through. The second one refuses instead, with one line naming who holds the folder.

fcntl.flock, not a pid file: the kernel drops the lock when its holder exits, however it exits
(kill -9 included), so a stale lock file never blocks the next run, and there is no pid to
re-check (pids are reused). The file stays in place between runs; only its content (pid, host,
command, start time) changes, and it is read only to word the refusal. Deleting it on exit would
let a third process lock a fresh file while a second still holds the old, unlinked one.

Re-entrant within a process: a job that locks OUT and then calls a stage that locks the same
folder shares the one lock (a second flock on a new descriptor would refuse its own process).
Without fcntl (Windows) the lock is a no-op: nothing guards the folder there.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from echoedge.errors import EchoEdgeError

LOCK_NAME = ".echo-edge.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth), this process's locks


class FolderInUseError(EchoEdgeError):
    """Another live echo-edge process writes into the folder."""

    exit_code = 2


@contextmanager
def folder_lock(folder: str | Path, command: str, option: str = "--out") -> Iterator[Path]:
    """Hold the lock on `folder` (created if absent) for the `with` block; yields the lock file.

    Raises FolderInUseError at once (no waiting) when another process holds it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EchoEdgeError(f"{folder}: cannot create the output folder ({e.strerror or e})") from None
    key = str(folder.resolve())
    path = folder / LOCK_NAME
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise EchoEdgeError(f"{path}: cannot open the folder's lock file ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FolderInUseError(f"{folder} is in use by {_holder(fd)}; wait for it or choose "
                                   f"another {option}") from None
        _write_holder(fd, command)
        _held[key] = (fd, 1)
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # released: nobody to name any more
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _write_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _holder(fd: int) -> str:
    """'echo-edge run (pid 1234, started 15:02:11)' from the lock file, as far as it says."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        # Locked but not yet described (the holder is between flock and write): still taken.
        return "another echo-edge process"
    parts = [f"pid {info.get('pid')}"]
    host = info.get("host")
    if host and host != socket.gethostname():
        parts[0] += f" on {host}"
    started = info.get("started")
    if isinstance(started, (int, float)):
        fmt = "%H:%M:%S" if time.time() - started < 86400 else "%Y-%m-%d %H:%M:%S"
        parts.append(f"started {time.strftime(fmt, time.localtime(started))}")
    return f"{info.get('command') or 'echo-edge'} ({', '.join(parts)})"


__all__ = ["LOCK_NAME", "FolderInUseError", "folder_lock"]
