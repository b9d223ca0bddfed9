"""Working memory per artefact (issue 22): fp32 against int8 side by side, per format.

For every artefact folder of a run (default runs/run/artefacts):

- **planned** activation memory, read from the file (echoedge.convert.memory_plan; the manifest's
  figure where it has one): ExecuTorch's memory-planned buffers, TFLite's interpreter arena, Core
  ML's liveness estimate (marked ~); beside it the graph's liveness peak (an estimate that ignores
  delegation, the same definition for every format);
- **measured** working memory: a fresh process per artefact (echoedge.validate.memory): RSS added by
  the load, by 5 calls at batch 1, and the peak above the runtime's import; and where that RSS lies
  by memory mapping: the largest block (the runtime's activation arena), other anonymous memory,
  the heap (small allocations: XNNPACK's IGEMM indirection buffers, planned buffers) and
  file-backed pages (the model file, the runtime's code), with the fixed part (all but the
  largest block) that int8 activations do not shrink;

then per format the int8 (or other quantized precision) / fp32 ratio of each figure, the goal
(int8 working memory <= 1/4 of fp32's), and for the quantized artefact the largest activation
tensors that stay float. The Core ML reference interpreter is not measured (its memory is PyTorch's,
not Core ML's) unless --measure-interpreter.

    python bench/bench_memory.py                   # runs/run/artefacts
    python bench/bench_memory.py runs/other --json /tmp/mem.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from echoedge.convert.artefact import find_artefacts, read_manifest
from echoedge.errors import EchoEdgeError
from echoedge.validate import memory as mem

GOAL_RATIO = 0.25  # int8 working memory <= 1/4 of fp32's, per format


def collect(root: Path, threads: int, measure_interpreter: bool) -> list[dict[str, Any]]:
    folders = find_artefacts(root)
    if not folders:
        raise EchoEdgeError(f"{root}: no artefact folders (with manifest.json) found")
    rows = []
    for folder in folders:
        m = read_manifest(folder)
        plan = mem.planned(folder)
        runtime = "reference-interpreter" if m.format == "coreml" and not measure_interpreter else m.runtime
        entry = mem.memory_entry(folder, {"run_status": "ok", "runtime": runtime}, threads)
        rows.append({"name": folder.name, "format": m.format, "precision": m.precision,
                     "planned": plan if plan and "error" not in plan else None,
                     "measured": entry["measured"], "note": entry["measured_note"]})
        print(f"  {folder.name}: measured" if entry["measured"] else f"  {folder.name}: {entry['measured_note']}",
              flush=True)
    return rows


# The measured RSS added by load + calls, by memory mapping (echoedge.validate.memory.by_mapping).
BREAKDOWN = (("largest block (activation arena)", "largest_block_bytes"),
             ("other anonymous", "other_anonymous_bytes"), ("heap (small allocations)", "heap_bytes"),
             ("file-backed pages (model, code)", "file_bytes"))


def _part(key: str) -> Any:
    return lambda r: ((r["measured"] or {}).get("breakdown") or {}).get(key)


def _fixed(r: dict[str, Any] | None) -> int | None:
    """What does not scale with the activations' dtype: all but the largest block."""
    b = ((r or {}).get("measured") or {}).get("breakdown")
    return None if not b else sum(v for k, v in b.items() if k != "largest_block_bytes")


def _mb(n: int | None, est: bool = False) -> str:
    return "–" if n is None else f"{'~' if est else ''}{n / 1e6:.1f}"


def _ratio(a: int | None, b: int | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    cols = ("format", "figure", "fp32 MB", "quantized", "MB", "ratio")
    out = []
    for fmt in sorted({r["format"] for r in rows}):
        base = next((r for r in rows if r["format"] == fmt and r["precision"] == "fp32"), None)
        for q in (r for r in rows if r["format"] == fmt and r["precision"] != "fp32"):
            figures = [
                ("planned", lambda r: (r["planned"] or {}).get("planned_bytes"),
                 lambda r: bool((r["planned"] or {}).get("estimate"))),
                ("graph liveness peak (est.)", lambda r: (r["planned"] or {}).get("graph_peak_bytes"), lambda r: True),
                ("RSS added by load", lambda r: (r["measured"] or {}).get("load_added_bytes"), lambda r: False),
                ("RSS added by 5 calls", lambda r: (r["measured"] or {}).get("calls_added_bytes"), lambda r: False),
                ("working (peak - baseline)", lambda r: (r["measured"] or {}).get("working_bytes"), lambda r: False),
                ("peak RSS of the process", lambda r: (r["measured"] or {}).get("peak_rss_bytes"), lambda r: False),
            ] + [(f"  added: {label}", _part(key), lambda r: False) for label, key in BREAKDOWN]
            for label, get, est in figures:
                a = get(base) if base else None
                b = get(q)
                out.append((fmt, label, _mb(a, base is not None and est(base)), q["precision"], _mb(b, est(q)),
                            _ratio(b, a)))
            work_a = (base or {}).get("measured") and base["measured"]["working_bytes"]
            work_b = q["measured"] and q["measured"]["working_bytes"]
            goal = ("unmeasured" if not work_a or not work_b else
                    "met" if work_b <= GOAL_RATIO * work_a else "not met")
            out.append((fmt, f"goal: {q['precision']} working <= 1/4 fp32", "", "", goal, ""))
            fixed_a, fixed_b = _fixed(base), _fixed(q)
            if fixed_a is not None and fixed_b is not None:
                # What the goal asks of the rest: int8 working <= 1/4 fp32 working needs the int8
                # arena <= (fp32 working)/4 minus int8's own fixed part.
                out.append((fmt, "  fixed part (heap + file pages + other)", _mb(fixed_a), q["precision"],
                            _mb(fixed_b), _ratio(fixed_b, fixed_a)))
                if work_a:
                    left = GOAL_RATIO * work_a - fixed_b
                    arena_a = _part("largest_block_bytes")(base)
                    out.append((fmt, "  largest block the goal leaves int8", "", q["precision"], _mb(max(0, int(left))),
                                _ratio(max(1, int(left)), arena_a)))
    widths = [max(len(c), *(len(str(r[i])) for r in out)) if out else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in out]
    return "\n".join(lines)


def float_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        p = r["planned"]
        if r["precision"] == "fp32" or not p:
            continue
        out.append(f"{r['name']}: float activations {p['float_bytes'] / 1e6:.1f} MB of "
                   f"{sum(p['bytes_by_dtype'].values()) / 1e6:.1f} MB (summed over the graph); largest:")
        out += [f"    {t['name']}  {t['dtype']}  {'x'.join(map(str, t['shape']))}  {t['bytes'] / 1e6:.2f} MB"
                for t in p["float_tensors"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", type=Path, default=Path("runs/run/artefacts"),
                    help="a run folder or artefacts folder (default runs/run/artefacts)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--measure-interpreter", action="store_true",
                    help="also measure Core ML artefacts on the reference interpreter (PyTorch's memory)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    a = ap.parse_args(argv)
    try:
        rows = collect(a.root, a.threads, a.measure_interpreter)
    except EchoEdgeError as e:
        print(f"error: {e}")
        return 2
    print()
    print(table(rows))
    print()
    print("\n".join(float_lines(rows)))
    print(f"\n{mem.METHOD.format(calls=mem.CALLS, threads=a.threads)}; ~ = estimate")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
