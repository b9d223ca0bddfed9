"""Faults mid-write: kill -9 at seeded moments and a full disk leave nothing a later run trusts.

The kill loop over the real `echo-edge export` and `run` is bench/bench_faults.py (minutes); here
a small seeded version kills `echo-edge calibrate` and a process inside write_artefact, and a
real tmpfs (mounted in a private user+mount namespace, so no root is needed) fills up under
`echo-edge export` and `echo-edge run`.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from echoedge import atomic
from echoedge.convert.artefact import ArtefactManifest, find_artefacts, verify_artefact, write_artefact
from echoedge.errors import EchoEdgeError
from tests.tiny_e3net import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _build(size: int = 4096, delay: float = 0.0):
    def build(tmp: Path) -> ArtefactManifest:
        with open(tmp / "model.bin", "wb") as f:
            for _ in range(8):
                f.write(b"\x01" * (size // 8))
                f.flush()
                time.sleep(delay)
        return ArtefactManifest("raw", "fp32", "test", "model.bin", {}, [_spec()], [_spec()], "0" * 64)
    return build


def _spec():
    from echoedge.convert.artefact import TensorSpec

    return TensorSpec("clip", [1, 1], "float32", "NC")


def test_a_dead_writers_leftovers_are_never_listed_and_the_next_write_sweeps_them(tmp_path: Path) -> None:
    dead, target = _dead_pid(), tmp_path / "executorch-fp32"
    leftover = tmp_path / f".executorch-fp32.tmp-{dead}-0badc0de"
    leftover.mkdir()
    (leftover / "model.bin").write_bytes(b"half")
    (leftover / "manifest.json").write_text('{"format": "executorch", "model_file": "model.bin"}')
    live = tmp_path / f".executorch-fp32.tmp-{os.getpid()}-0000cafe"  # a live writer's: kept
    live.mkdir()
    assert find_artefacts(tmp_path) == []
    write_artefact(target, _build())
    assert not leftover.exists() and live.exists()
    assert find_artefacts(tmp_path) == [target]
    verify_artefact(target)


def test_a_kill_between_the_two_renames_puts_the_old_artefact_back(tmp_path: Path) -> None:
    target = write_artefact(tmp_path / "a", _build())
    backup = tmp_path / f".a.old-{_dead_pid()}-12345678"
    os.rename(target, backup)  # where a kill -9 between _move_into_place's renames leaves it
    assert atomic.sweep_leftovers(target) == [backup]
    verify_artefact(target)
    with pytest.raises(EchoEdgeError, match="already exists"):
        write_artefact(target, _build())
    write_artefact(target, _build(size=8192), overwrite=True)
    assert verify_artefact(target).model_bytes == 8192


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_atomic import _build
    from echoedge.convert.artefact import write_artefact
    print("building", flush=True)
    write_artefact({target!r}, _build(size=1 << 20, delay=0.05), overwrite=True)
    print("done", flush=True)
    time.sleep(30)
""")


def _kill_at(cmd: list[str], t: float) -> tuple[int | None, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        proc.wait(timeout=t)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, proc.stdout.read()


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_inside_write_artefact_leaves_old_or_new_never_half(tmp_path: Path, seed: int) -> None:
    target = tmp_path / "tflite-int8"
    write_artefact(target, _build(size=1000))  # a complete old artefact being replaced
    code = KILLED_WRITER.format(root=str(ROOT), tests=str(ROOT / "tests"), target=str(target))
    rc, log = _kill_at([sys.executable, "-c", code], random.Random(seed).uniform(0.5, 3.0))
    assert rc == -signal.SIGKILL, log
    assert find_artefacts(tmp_path) in ([], [target])
    if target.exists():  # old or new, but whole
        assert verify_artefact(target).model_bytes in (1000, 1 << 20)
    write_artefact(target, _build(size=2000), overwrite=True)  # the next run completes
    assert verify_artefact(target).model_bytes == 2000
    assert [p.name for p in tmp_path.iterdir()] == ["tflite-int8"]  # the leftovers were swept


def test_kill_9_of_echo_edge_calibrate_at_seeded_moments(tmp_path: Path, synth_root: Path) -> None:
    from echoedge.calibration import load_calibration_set

    out = tmp_path / "calib"
    cmd = [sys.executable, "-m", "echoedge.cli", "calibrate", "--data", str(synth_root), "--strategy",
           "random", "--size", "8", "--out", str(out), "--cache-dir", str(tmp_path / "frames")]
    t0 = time.perf_counter()
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    whole = time.perf_counter() - t0
    rng = random.Random(7)
    for t in sorted(rng.uniform(0.3, 1.0) * whole for _ in range(2)):
        _kill_at(cmd, t)
        if out.exists():
            assert len(load_calibration_set(out)) == 8  # a set that loads is whole
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- a full disk ---------------------------------------------------------------------------------


def test_enospc_inside_a_build_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    def build(tmp: Path) -> ArtefactManifest:
        (tmp / "model.bin").write_bytes(b"x" * 100)
        raise RuntimeError("writer failed") from OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(atomic.DiskFullError, match=r"no space left on device writing the coreml-fp32 artefact"):
        write_artefact(tmp_path / "coreml-fp32", build)
    assert list(tmp_path.iterdir()) == []


def test_enospc_in_an_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic.write_text(tmp_path / "report.json", '{"old": true}\n')
    real = Path.write_text

    def full(self: Path, text: str, *a, **k) -> int:
        real(self, text[: len(text) // 2], *a, **k)  # half of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(atomic.DiskFullError, match=r": no space left on device writing report.json"):
        atomic.write_text(target, '{"new": true}\n')
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


TMPFS = pytest.mark.skipif(sys.platform != "linux" or not _tmpfs_available(),
                           reason="needs unshare and a mountable tmpfs in a user namespace")


def _in_small_tmpfs(tmp_path: Path, size: str, cmd: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `cmd` with tmp_path/disk a tmpfs of `size`, private to it; the files it left, listed
    before the namespace (and the tmpfs) goes away."""
    disk, listing = tmp_path / "disk", tmp_path / "left.txt"
    disk.mkdir()
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; d="$2"; l="$3"; shift 3; '
              '"$@"; rc=$?; (cd "$d" && find . -mindepth 1 | sort) > "$l"; exit $rc')
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", size, str(disk), str(listing), *cmd],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 99, res.stderr
    return res, listing.read_text().split()


@TMPFS
@pytest.mark.parametrize("command", ["export", "run"])
def test_a_full_disk_under_export_and_run_is_one_line(tmp_path: Path, synth_root: Path, command: str) -> None:
    ck = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "disk" / "out"
    cmd = [sys.executable, "-m", "echoedge.cli", command, "--checkpoint", str(ck), "--data", str(synth_root),
           "--format", "executorch", "--precision", "int8", "--calibration", "random:8", "--out", str(out),
           "--cache-dir", str(tmp_path / "frames")]
    # 1 MiB: the logs fit, the 8 calibration clips (2 MiB) do not.
    res, left = _in_small_tmpfs(tmp_path, "1m", cmd)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(err) == 1, res.stderr
    assert err[0].startswith("echo-edge: error: ") and "no space left on device writing the calibration set" in err[0]
    assert not [p for p in left if "calibration" in p or ".tmp-" in p], left  # nothing half-written


@TMPFS
def test_a_full_disk_inside_write_artefact_leaves_nothing(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_atomic import _build
        from echoedge.convert.artefact import write_artefact
        from echoedge.errors import EchoEdgeError
        try:
            write_artefact({str(tmp_path / 'disk' / 'executorch-int8')!r}, _build(size=4 << 20))
        except EchoEdgeError as e:
            print(e); sys.exit(2)
    """)
    res, left = _in_small_tmpfs(tmp_path, "1m", [sys.executable, "-c", code])
    assert res.returncode == 2, res.stderr
    assert "no space left on device writing the executorch-int8 artefact" in res.stdout
    assert left == []
