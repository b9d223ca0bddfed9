"""Carry-over: the parts of an earlier `echo-edge debug-quant` run in the same OUT that this run
does not redo.

The sweeps take tens of minutes on a CPU: re-running the budget must not throw away a calibration
curve. An earlier debug_quant.json is kept only when it is of the same checkpoint, and its parts
only when measured on this run's videos (the calibration part brings its own videos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from echoedge.errors import EchoEdgeError, first_line
from echoedge.quantdebug.output import JSON_FILE, PART_FIGURES, PART_KEYS, PARTS, load_debug_quant


def previous_run(out: Path, checkpoint_sha256: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """An earlier debug_quant.json in OUT for the same checkpoint, whose other parts this run keeps."""
    path = out / JSON_FILE
    if not path.exists():
        return None
    try:
        prev = load_debug_quant(path)
    except EchoEdgeError as e:
        log(f"debug-quant: {first_line(e)}; replacing it")
        return None
    if prev.get("checkpoint_sha256") != checkpoint_sha256:
        log(f"debug-quant: {path} is of another checkpoint; replacing it")
        return None
    return prev


def carry_over(prev: dict[str, Any], dq: dict[str, Any], redo: set[str],
               log: Callable[[str], None]) -> None:
    """Keep the parts of an earlier run in the same OUT that this run does not redo.

    The sweeps take tens of minutes on a CPU: re-running the budget must not throw away a
    calibration curve. Parts measured on other videos than this run's are not kept (their
    figures would not be comparable); the calibration part brings its own videos.
    """
    same_videos = prev.get("videos", {}).get("names") == dq["videos"]["names"] and \
        prev.get("videos", {}).get("clips_per_video") == dq["videos"]["clips_per_video"] and \
        (prev.get("videos", {}).get("shift"), prev.get("videos", {}).get("shift_level")) == \
        (dq["videos"].get("shift"), dq["videos"].get("shift_level"))
    kept = []
    for part in PARTS:
        if part in redo or not prev.get(PART_KEYS[part][0]):
            continue
        if part != "calibration" and not same_videos:
            log(f"debug-quant: the earlier {part} part was measured on other videos; not kept")
            continue
        for key in PART_KEYS[part]:
            dq[key] = prev.get(key)
        for name, rel in (prev.get("figures") or {}).items():
            if name.startswith(PART_FIGURES.get(part, "\0")):
                dq["figures"][name] = rel
        if part in (prev.get("timings_s") or {}):
            dq["timings_s"][part] = prev["timings_s"][part]
        kept.append(part)
    if kept:
        dq["parts"] = [p for p in PARTS if p in dq["parts"] or p in kept]
        dq["carried_over"] = {"parts": kept, "from": prev.get("created_at")}
        dq["notes"].append(f"{', '.join(kept)}: kept from the earlier run in this folder "
                           f"({prev.get('created_at')}); the other parts are from this run")
        log(f"debug-quant: kept {', '.join(kept)} from the earlier run in {JSON_FILE}")



__all__ = ["carry_over", "previous_run"]
