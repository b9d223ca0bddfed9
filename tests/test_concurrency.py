"""Concurrent use (issue 16): one `echo-edge run` per --out (a lock that names its holder), and
two processes filling the default dataset cache at once leave one whole set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from echoedge.cli import main
from echoedge.outlock import LOCK_NAME, FolderInUseError, folder_lock

ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent("""
    import sys, time
    from echoedge.outlock import folder_lock
    with folder_lock(sys.argv[1], "echo-edge run"):
        print("held", flush=True)
        sys.stdin.readline()  # until the test lets go
""")


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding OUT's lock, as a running `echo-edge run` does."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_into_the_same_out_refuses_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "runs" / "run"
    holder = _holder(out)
    try:
        code = main(["run", "--out", str(out), "--format", "tflite", "--precision", "fp32"])
        err = capsys.readouterr().err.strip()
    finally:
        holder.communicate("\n", timeout=30)
    assert code == 2
    assert err.startswith(f"echo-edge: error: {out} is in use by echo-edge run (pid {holder.pid}, started ")
    assert err.endswith("; wait for it or choose another --out") and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the holder's touched


def test_a_dead_holders_lock_does_not_block(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out)
    holder.kill()  # kill -9: no cleanup ran, the lock file keeps its pid
    holder.wait(timeout=30)
    assert "pid" in (out / LOCK_NAME).read_text()
    with folder_lock(out, "echo-edge run") as lock:
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert (out / LOCK_NAME).read_text() == ""  # released: it names nobody


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    out = tmp_path / "out"
    with folder_lock(out, "echo-edge run"):
        with folder_lock(out, "echo-edge validate"):  # a stage of the same job
            pass
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from echoedge.outlock import folder_lock\n"
             "with folder_lock(sys.argv[1], 'x'): pass", str(out)],
            cwd=ROOT, capture_output=True, text=True)
        assert probe.returncode != 0 and "FolderInUseError" in probe.stderr
    with folder_lock(out, "echo-edge run"):  # free again after the outer block
        pass
    assert issubclass(FolderInUseError, Exception)


RACE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import echoedge.data.synthetic as synthetic
    from echoedge.data.default import default_dataset

    real, outcome = synthetic.generate_dataset, []
    def spy(*a, **k):
        try:
            out = real(*a, **k)
        except synthetic.OutputTaken:
            outcome.append("lost")
            raise
        outcome.append("won")
        return out
    synthetic.generate_dataset = spy
    go = Path(sys.argv[1])
    while not go.exists():  # both start generating together
        time.sleep(0.01)
    root = default_dataset(videos=3, seed=11, progress=False)
    print(root, outcome[0] if outcome else "cached")
""")


def test_two_processes_filling_the_default_cache_leave_one_whole_set(tmp_path):
    from echoedge.data.echonet import EchoNet

    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "ECHOEDGE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(go)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    roots = {r[0].split()[0] for r in results}
    outcomes = sorted(r[0].split()[1] for r in results)
    assert len(roots) == 1 and outcomes in (["lost", "won"], ["cached", "won"]), outcomes
    root = Path(roots.pop())
    assert [p.name for p in cache.iterdir()] == [root.name]  # no partial folder left behind
    ds = EchoNet(root)
    assert len(ds.records()) == 3
    for rec in ds.records():
        assert ds.load_frames(rec).shape[0] == rec.num_frames


@pytest.mark.parametrize("filled", [True])
def test_generating_into_a_filled_folder_says_so(tmp_path, filled):
    from echoedge.data.synthetic import OutputTaken, generate_dataset

    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "FileList.csv").write_text("x\n")
    with pytest.raises(OutputTaken, match="folder exists and is not empty"):
        generate_dataset(tmp_path / "set", videos=1, seed=0, progress=False)
