"""Files that are whole or absent: temporary siblings renamed into place, leftovers of killed
processes swept, and a full disk turned into one line.

Every writer of a file (or folder) that a later run trusts goes through here. The temporary
sibling is hidden and carries the writer's pid (`.NAME.tmp-PID-RANDOM`), so:

- a reader that skips hidden entries (find_artefacts, globbing users) never sees a build in
  progress, and a kill -9 between writing and renaming leaves only a hidden leftover;
- the next writer of NAME removes leftovers whose pid is no longer running, and only those: a
  live process writing the same folder at the same moment keeps its own temporary.

Backups made while replacing a folder (`.NAME.old-PID-RANDOM`) are put back when the kill fell
between the two renames (NAME missing), so an old complete artefact is not lost either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from echoedge.errors import EchoEdgeError

# A full disk and an exhausted quota look the same to the user: nothing more can be written.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


class DiskFullError(EchoEdgeError):
    """The file system ran out of space (or quota) while echo-edge was writing."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS


def disk_full(path: str | Path, what: str | None = None) -> DiskFullError:
    path = Path(path)
    return DiskFullError(f"{path.parent}: no space left on device writing {what or path.name}; "
                         "nothing half-written was kept (free space, then run again)")


def is_leftover(name: str) -> bool:
    """`name` is a writer's hidden temporary or backup (`.NAME.tmp-PID-RAND`, `.NAME.old-PID-RAND`)."""
    return _LEFTOVER.match(name) is not None


def temp_sibling(path: str | Path, kind: str = "tmp") -> Path:
    """A hidden, unused name beside `path` on the same file system (so a rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


def sweep_leftovers(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` left by processes that are gone; put a backup of it back
    when `path` itself is missing. Returns what was removed or restored."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return []
    done = []
    for entry in sorted(folder.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m or m["name"] != path.name or pid_running(int(m["pid"])):
            continue
        if m["kind"] == "old" and not path.exists() and not path.is_symlink():
            with contextlib.suppress(OSError):
                os.rename(entry, path)
                done.append(entry)
                continue
        _remove(entry)
        done.append(entry)
    return done


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


@contextlib.contextmanager
def replacing(path: str | Path, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of the file `path` to write; on success it replaces `path` in
    one rename, on any failure it is removed. A full disk becomes DiskFullError naming `what`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:  # KeyboardInterrupt too: no temporary is left behind
        _remove(tmp)
        if is_disk_full(e):
            raise disk_full(path, what) from None
        raise


def write_text(path: str | Path, text: str, what: str | None = None, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` all-or-nothing."""
    with replacing(path, what) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, what: str | None = None) -> Path:
    """Write `data` to `path` all-or-nothing."""
    with replacing(path, what) as tmp:
        tmp.write_bytes(data)
    return Path(path)
