"""Working memory of an artefact: planned (from the file) and measured (RSS of a fresh process).

Measured as a new user meets it: a fresh Python process per artefact (`python -m
echoedge.validate.memory FOLDER`) imports the runtime the artefact's runner uses, reads VmRSS from
/proc/self/status (the baseline: the runtime's own import is not the model's), loads the artefact
through `open_runner`, reads again, makes `CALLS` calls at batch 1 with the run's thread count,
and reads again. VmHWM is reset at the baseline (writing 5 to /proc/self/clear_refs), so the peak
is that of the load and the calls alone. A fresh process, because RSS in the validating process
carries every runtime, model and clip validation has touched.

- `load_added_bytes`: VmRSS after the load minus the baseline;
- `calls_added_bytes`: VmRSS after the calls minus VmRSS after the load;
- `working_bytes`: the headline, VmHWM minus the baseline (the most the load and the calls took
  the process above the runtime's import); RSS after the calls minus the baseline where VmHWM
  could not be reset;
- `peak_rss_bytes`, `baseline_rss_bytes`: the process's own figures;
- `breakdown`: where the RSS added by the load and the calls lies, by memory mapping
  (/proc/self/smaps before the load and after the calls; `by_mapping`).

The breakdown is what tells the int8 activations from what does not shrink with them. The runtimes
allocate their activation arena as one block (ExecuTorch: XNNPACK's workspace; TFLite: the
interpreter's arena), which the C library maps on its own: the largest anonymous mapping that grew
(with whatever else the kernel merged into that mapping: the shipped checkpoint's ExecuTorch fp32
block measured 177.5 MB here, its XNNPACK workspace alone 173.4 MB in a bare load of the program).
The heap holds small allocations (XNNPACK's IGEMM indirection buffers, one pointer per output pixel
and kernel tap of every conv, the same in fp32 and int8; ExecuTorch's planned buffers), file-backed
pages are the model file and the runtime's code touched by the calls.

/proc is Linux's: elsewhere `measured` is None with the reason. Planned figures come from the
manifest's `details.memory` (echoedge.convert.memory_plan, written at convert time), or are read
from the model file here for an artefact written before the manifest carried them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from echoedge.errors import EchoEdgeError, first_line
from echoedge.validate.coreml_runner import INTERPRETER_RUNTIME

CALLS = 5
PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
TIMEOUT_S = 600
METHOD = ("fresh process per artefact: VmRSS/VmHWM from /proc/self/status after importing the runtime "
          "(baseline), after loading the artefact and after {calls} calls at batch 1 on {threads} "
          "thread(s); working = peak RSS during load and calls minus the baseline; the RSS added is "
          "split by memory mapping (/proc/self/smaps)")


def read_status(path: Path | None = None) -> dict[str, int] | None:
    """VmRSS and VmHWM in bytes, or None where the file does not exist (not Linux)."""
    path = path or PROC_STATUS
    try:
        text = path.read_text()
    except OSError:
        return None
    out = {}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
        if m is None:
            return None
        out[key] = int(m.group(1)) * 1024
    return out


SMAPS = Path("/proc/self/smaps")
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def read_mappings(path: Path | None = None) -> list[tuple[int, int, str, int]] | None:
    """(start, end, path or [heap]/[stack]/'' for anonymous, RSS bytes) per mapping, or None where
    /proc/self/smaps cannot be read."""
    out: list[tuple[int, int, str, int]] = []
    try:
        # Line by line: the whole text of a process with TensorFlow loaded is megabytes, which the
        # snapshot after the calls would count as the runtime's.
        with open(path or SMAPS) as f:
            for line in f:
                m = _MAPPING.match(line)
                if m:
                    out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip(), 0))
                elif out and line.startswith("Rss:"):
                    start, end, name, _ = out[-1]
                    out[-1] = (start, end, name, int(line.split()[1]) * 1024)
    except OSError:
        return None
    return out


def by_mapping(before: list[tuple[int, int, str, int]], after: list[tuple[int, int, str, int]]
               ) -> dict[str, int]:
    """Where RSS grew between two read_mappings snapshots, in bytes (net per kind; the kinds sum to
    the RSS added):

    - `largest_block_bytes`: the anonymous mapping that grew most, against whatever lay in its
      address range before (the C library merges and moves mappings): the runtime's activation
      arena (see the module docstring);
    - `other_anonymous_bytes`: the rest of the anonymous memory (large allocations mapped on their
      own: packed weights, planned buffers, thread stacks);
    - `heap_bytes`: the [heap] (small allocations);
    - `file_bytes`: file-backed pages (the model file, the runtime's code and data);
    - `other_bytes`: the rest ([stack] and the kernel's named mappings).
    """
    def kind(name: str) -> str:
        return ("anonymous" if not name else "heap" if name == "[heap]" else
                "file" if name.startswith("/") else "other")

    def total(maps: list[tuple[int, int, str, int]], k: str) -> int:
        return sum(rss for _, _, name, rss in maps if kind(name) == k)

    def grew(start: int, end: int, rss: int) -> int:
        return rss - sum(r for s, e, name, r in before if not name and s < end and e > start)

    anon = total(after, "anonymous") - total(before, "anonymous")
    largest = max((grew(s, e, r) for s, e, name, r in after if not name), default=0)
    largest = max(0, min(largest, anon)) if anon > 0 else 0
    return {"largest_block_bytes": largest, "other_anonymous_bytes": anon - largest,
            "heap_bytes": total(after, "heap") - total(before, "heap"),
            "file_bytes": total(after, "file") - total(before, "file"),
            "other_bytes": total(after, "other") - total(before, "other")}


def _import_runtime(fmt: str) -> None:
    """Import what the format's runner imports, so the baseline holds the runtime, not the model.

    Both precisions import the same set (ExecuTorch's quantized kernels too), so an fp32 and an int8
    artefact are measured against the same baseline.
    """
    import numpy  # noqa: F401

    if fmt == "executorch":
        import executorch.kernels.quantized  # noqa: F401
        import torch  # noqa: F401
        from executorch.extension.pybindings import portable_lib  # noqa: F401
        from executorch.runtime import Runtime

        Runtime.get()
    elif fmt == "tflite":
        from echoedge.convert.tflite_interpreter import DEFAULT_INTERPRETER

        if DEFAULT_INTERPRETER == "litert":
            import ai_edge_litert.interpreter  # noqa: F401
        else:
            import tensorflow  # noqa: F401
    elif fmt == "coreml":
        import torch  # noqa: F401

        from echoedge.convert.coreml_mlprogram import _import_coremltools
        from echoedge.mil import interpreter  # noqa: F401

        _import_coremltools()
    from echoedge.validate import runner  # noqa: F401


def probe(folder: str | Path, threads: int = 2, calls: int = CALLS) -> dict[str, Any]:
    """Measure in this process (meant to be a fresh one; see the module docstring)."""
    import numpy as np

    from echoedge.convert.artefact import read_manifest
    from echoedge.validate.runner import open_runner

    if read_status() is None:
        return {"error": f"no {PROC_STATUS} on this host (Linux only)"}
    manifest = read_manifest(folder)
    _import_runtime(manifest.format)
    clip = np.random.default_rng(0).standard_normal((1, *manifest.input_shape[1:])).astype(np.float32)
    maps_before = read_mappings()
    base = read_status()
    try:
        CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    runner = open_runner(folder, threads=threads)
    loaded = read_status()
    for _ in range(calls):
        runner(clip)
    done = read_status()
    wall = time.perf_counter() - t0
    maps_after = read_mappings()
    if not (base and loaded and done):
        return {"error": f"{PROC_STATUS} became unreadable while measuring"}
    working = (done["VmHWM"] if reset else done["VmRSS"]) - base["VmRSS"]
    return {"baseline_rss_bytes": base["VmRSS"], "load_added_bytes": loaded["VmRSS"] - base["VmRSS"],
            "calls_added_bytes": done["VmRSS"] - loaded["VmRSS"], "working_bytes": working,
            "peak_rss_bytes": done["VmHWM"], "peak_reset": reset, "calls": calls, "batch": 1,
            "threads": threads, "runtime": getattr(runner, "runtime", None), "wall_s": round(wall, 2),
            "breakdown": (by_mapping(maps_before, maps_after) if maps_before is not None
                          and maps_after is not None else None)}


def measure(folder: str | Path, threads: int = 2, calls: int = CALLS, log: Path | None = None,
            timeout_s: float = TIMEOUT_S) -> tuple[dict[str, Any] | None, str | None]:
    """(measured fields, None) from a fresh process, or (None, why not)."""
    if read_status() is None:
        return None, f"not measured: no {PROC_STATUS} on this host (Linux only)"
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="echoedge-mem-") as d:
        out = Path(d) / "memory.json"
        cmd = [sys.executable, "-m", "echoedge.validate.memory", str(folder), "--threads", str(threads),
               "--calls", str(calls), "--json", str(out)]
        # The runtime's console chatter goes to the run's log, never between the status lines.
        sink = open(log, "a") if log else subprocess.DEVNULL
        try:
            proc = subprocess.run(cmd, stdout=sink, stderr=sink, timeout=timeout_s,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired:
            return None, f"not measured: the probe process ran over {timeout_s:.0f} s"
        finally:
            if log:
                sink.close()
        if not out.is_file():
            return None, f"not measured: the probe process exited with {proc.returncode}" + (
                f" (see {log})" if log else "")
        result = json.loads(out.read_text())
    if "error" in result:
        return None, f"not measured: {result['error']}"
    return result, None


def planned(folder: str | Path) -> dict[str, Any] | None:
    """The manifest's planned activation memory, else read from the model file now; None when the
    folder has no readable manifest."""
    from echoedge.convert.artefact import read_manifest, read_memory

    try:
        m = read_manifest(folder)
    except EchoEdgeError:
        return None
    p = m.details.get("memory") if isinstance(m.details, dict) else None
    if isinstance(p, dict) and "planned_bytes" in p:
        return {**p, "source": "manifest"}
    if not (Path(folder) / m.model_file).exists():
        return None
    p = read_memory(Path(folder) / m.model_file, m.format)
    return {**p, "source": "read from the model file at validation (the manifest predates it)"}


def memory_entry(folder: str | Path, entry: dict[str, Any], threads: int, measure_it: bool = True,
                 log: Path | None = None) -> dict[str, Any]:
    """The report's `memory` object of one artefact entry (planned, measured, how)."""
    plan = planned(folder)
    out: dict[str, Any] = {"planned": plan if plan and "error" not in plan else None,
                           "planned_note": plan.get("error") if plan else None,
                           "measured": None, "measured_note": None,
                           "method": METHOD.format(calls=CALLS, threads=threads)}
    if not measure_it:
        out["measured_note"] = "not measured (--no-memory)"
    elif entry.get("run_status") != "ok":
        out["measured_note"] = f"not measured: the artefact did not run ({entry.get('status')})"
    elif entry.get("runtime") == INTERPRETER_RUNTIME:
        # Like its latency: the interpreter's memory is PyTorch's, not the device runtime's.
        out["measured_note"] = ("not measured: the runtime is a reference interpreter, not the device "
                                "runtime; its memory is not the artefact's")
    else:
        t0 = time.perf_counter()
        try:
            out["measured"], out["measured_note"] = measure(folder, threads, CALLS, log)
        except (OSError, ValueError) as e:
            out["measured_note"] = f"not measured: {first_line(e)}"
        if out["measured"] is not None:
            out["measured"]["probe_s"] = round(time.perf_counter() - t0, 2)
    return out


def memory_entries(items: Sequence[tuple[Path, dict[str, Any]]], threads: int, measure_it: bool = True,
                   log: Path | None = None, workers: int = 2) -> list[dict[str, Any]]:
    """memory_entry of each (folder, entry), `workers` probes at a time.

    Each probe is a fresh process that spends most of its seconds importing its runtime on one
    core; RSS is per process, so two side by side measure what each measures alone. Called when
    nothing timed runs beside them (after validation's latency series)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="memory-probe") as pool:
        return list(pool.map(lambda fe: memory_entry(fe[0], fe[1], threads, measure_it, log), items))


def breakdown_text(b: dict[str, int] | None) -> str | None:
    """One line of where a measured working memory lies (by_mapping), in MB."""
    if not b:
        return None
    return (f"largest block {b['largest_block_bytes'] / 1e6:.1f} (the activation arena), heap "
            f"{b['heap_bytes'] / 1e6:.1f}, file-backed {b['file_bytes'] / 1e6:.1f}, other "
            f"{(b['other_anonymous_bytes'] + b['other_bytes']) / 1e6:.1f} MB")


def memory_cell(mem: dict[str, Any] | None) -> str:
    """"planned / measured" in MB for the status table; '~' marks an estimate."""
    if not mem:
        return "–"
    p, m = mem.get("planned"), mem.get("measured")
    left = "–" if not p else f"{'~' if p.get('estimate') else ''}{p['planned_bytes'] / 1e6:.1f}"
    right = "–" if not m else f"{m['working_bytes'] / 1e6:.1f}"
    return f"{left} / {right}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m echoedge.validate.memory",
                                 description="Measure one artefact's working memory in this (fresh) process.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=CALLS)
    ap.add_argument("--json", type=Path, default=None, help="write the result here (default: stdout)")
    a = ap.parse_args(argv)
    try:
        result = probe(a.folder, a.threads, a.calls)
    except EchoEdgeError as e:
        result = {"error": str(e)}
    text = json.dumps(result)
    if a.json:
        tmp = a.json.with_name(a.json.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, a.json)
    else:
        print(text)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
