"""`echo-edge validate`: every artefact against the fp32 reference and the truth, one report.

The reference (the checkpoint's eager PyTorch model, the 3D network a user would otherwise run) is
run once over the held-out videos with the same multi-clip protocol as `evaluate`; its per-video
predictions are reused for every artefact. Each artefact is then verified (sha256), opened through
the Runner registry (so every format that lands is validated by this same code), run over the
same clips, and timed. What cannot run is reported, never hidden:

- PlatformError at open  -> SKIPPED_PLATFORM with the reason (e.g. Core ML off macOS);
- any other failure (including a runner module that is not installed) -> FAIL_RUNTIME with the
  one-line error and the stage (verify, load, run, latency, or convert when `run` built it).

Only the validated split must have videos (a test-only dataset is enough): the always-mean EF
baseline takes its EF from the checkpoint (`model.baseline`), and the report says where from.
Videos without tracings are validated on EF, EDV and ESV; the landmark figures are then null in
report.json and "n/a (no tracings)" wherever they are shown (`data.n_traced` says why).

With `options.stress` the stress suite (echoedge.validate.stress) runs after the clean validation
on the same records, frames and artefacts, into report.json's `stress` section.

Gates are applied to the report dict alone (echoedge.validate.gates); report.md, report.html and
junit.xml are rendered from report.json as written.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError, PlatformError, first_line
from echoedge.validate.gates import FAIL_RUNTIME, SKIPPED_PLATFORM, apply_gates, load_gates
from echoedge.validate.report_json import REPORT_FILE, SCHEMA_ID, SCHEMA_VERSION, read_report, write_report

REFERENCE_RUNTIME = "pytorch-eager"
LATENCY_NOTE_INTERPRETER = ("no latency: the runtime is a reference interpreter, not the device "
                            "runtime; EF figures are real, its speed is not the artefact's speed")


@dataclass
class ValidateOptions:
    split: str = "TEST"
    videos: int | None = None  # first N videos of the split (None: all)
    clips_per_video: int | None = 4
    threads: int = 2
    latency_runs: int = 20
    warmup: int = 3
    bootstrap: int = 1000
    seed: int = 0
    worst_n: int = 5
    batch_size: int = 8
    cache_dir: Path | None = None
    progress: bool = True
    require_tracings: bool = False  # EchoNet-Dynamic's rule: untraced videos are dropped
    stress: Any = None  # a validate.stress.StressOptions: also run the stress suite (report key `stress`)
    memory: bool = True  # measure working memory in a fresh process per artefact (validate.memory)
    realtime: bool = False  # `run`: the smallest real-time hop per artefact (report key `realtime`)


@dataclass
class ValidationResult:
    report: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return int(self.report["summary"]["exit_code"])


def validate(
    artefacts: str | Path | Sequence[str | Path],
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    gates: str | Path | None = None,
    strict: bool = False,
    options: ValidateOptions | None = None,
    extra_entries: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    log: Callable[[str], None] = print,
    model: str | None = None,
) -> ValidationResult:
    """Validate the artefact folders at or below `artefacts`; write the four report files to `out`.

    `model` names what `checkpoint` (the reference) holds, echoedge.model.registry; None: the
    model the artefacts' manifests record, else Echo-E3Net (`convert.artefact.artefacts_model`).

    `extra_entries` are artefact entries decided before validation (a conversion that failed in
    `echo-edge run`); they appear in the report with their status.
    """
    from echoedge.convert.artefact import artefacts_model, find_artefacts
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.model.baseline import resolve_baseline
    from echoedge.model.registry import DEFAULT_MODEL, load
    from echoedge.validate.latency import LoadWindow, TimedRunner, host_fingerprint
    from echoedge.validate.memory import memory_entries
    from echoedge.validate.runner import EagerRunner

    opt = options or ValidateOptions()
    gate_cfg = load_gates(gates)  # first: a typo in the gates file should not cost a run
    folders = _collect(artefacts, find_artefacts)
    if not folders and not extra_entries:
        raise EchoEdgeError(f"{_show(artefacts)}: no artefact folders (with manifest.json) found")
    ck = load(artefacts_model(folders, model) or DEFAULT_MODEL, Path(checkpoint))
    _check_sources(folders, ck, Path(checkpoint))

    reader = EchoNet(Path(data), require_tracings=opt.require_tracings)
    records = reader.records(opt.split)
    if opt.videos:
        records = records[: opt.videos]
    if not records:
        raise EchoEdgeError(f"{data}: split {opt.split} has no videos to validate on")
    baseline = resolve_baseline(ck, reader)
    n_traced = sum(r.has_tracings for r in records)
    if n_traced < len(records):
        log(f"data: {len(records) - n_traced} of {len(records)} {opt.split} videos have no tracings: "
            "EF validated (EDV and ESV where labelled)" + ("; landmark metrics n/a" if not n_traced else
                                           f"; landmark metrics over the {n_traced} traced"))
    log(f"baseline: {baseline.describe()}")
    frames = FrameCache(reader, Path(opt.cache_dir) if opt.cache_dir else None)
    latency_clip = _latency_clip(records[0], frames, ck.spec)
    timings: dict[str, float] = {}

    window, t0 = LoadWindow(), time.perf_counter()  # the window: other work while we time
    log(f"reference: eager fp32 {Path(checkpoint).name} on {len(records)} {opt.split} videos "
        f"x {opt.clips_per_video or 'all'} clips")
    ref_runner = TimedRunner(EagerRunner(ck.runnable, threads=opt.threads, name="reference",
                                         clip_shape=ck.spec.input_shape()[1:]))
    ref_preds = _predict(ref_runner, records, frames, ck.spec, opt, "reference fp32 (eager)", batch_size=1)
    ref_latency = _latency(ref_runner, latency_clip, opt)
    ref_eval = _summary(ref_preds, records, ck.spec, baseline, opt)
    timings["reference"] = time.perf_counter() - t0

    reference = {
        "name": f"eager:{Path(checkpoint).name}",
        "runtime": REFERENCE_RUNTIME,
        "precision": "fp32",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ck.sha256,
        # Which network, and what it produces: an EF-only model's EDV/ESV/landmarks are null.
        "model": ck.entry.name,
        "outputs": list(ck.entry.outputs),
        "vs_truth": ref_eval,
        "latency": ref_latency,
        "predictions": [{"file_name": p.file_name, "ef_true": p.ef_true, "ef": p.ef,
                         "edv_true": p.edv_true, "edv": p.edv, "esv_true": p.esv_true, "esv": p.esv}
                        for p in ref_preds],
    }

    entries: list[dict[str, Any]] = [dict(e) for e in extra_entries]
    # The runtimes' own console lines (TensorFlow's oneDNN notice, LiteRT's "Created TensorFlow Lite
    # XNNPACK delegate", ExecuTorch's threadpool line) go here, never between the status lines.
    chatter = Path(out) / "logs" / "validate.log"
    chatter.parent.mkdir(parents=True, exist_ok=True)
    validated = []
    for folder in folders:
        t0 = time.perf_counter()
        entry = _validate_one(folder, records, frames, ck.spec, ref_preds, ref_latency, latency_clip,
                              baseline, opt, log, chatter)
        timings[entry["name"]] = time.perf_counter() - t0
        validated.append((folder, entry))
    # After every latency series, two probes at a time (echoedge.validate.memory.memory_entries).
    load_while_timing, t0 = window.stop(), time.perf_counter()
    for (_, entry), mem in zip(validated, memory_entries(validated, opt.threads, opt.memory, chatter)):
        entry["memory"] = mem
        entries.append(entry)
    timings["memory"] = time.perf_counter() - t0
    entries.sort(key=lambda e: (_rank(e["format"], ("executorch", "tflite", "coreml")),
                                _rank(e["precision"], ("fp32", "fp16", "w8", "int8", "w8a8", "int8-full")), e["name"]))
    stress = None
    if opt.stress is not None:  # the same records, frames and runners on shifted frames
        from echoedge.validate.stress import run_stress

        t0 = time.perf_counter()
        stress = run_stress(entries, ck.runnable, records, frames, ck.spec, opt, opt.stress, log, chatter)
        timings["stress"] = time.perf_counter() - t0
    realtime = None
    if opt.realtime:  # echoedge.validate.realtime; measures only the thread count not yet timed
        from echoedge.validate.realtime import realtime_section
        realtime = realtime_section(entries, reference, ck, records, frames, opt, latency_clip, chatter, log)

    report = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "echo_edge_version": _version(),
        "data": {"root": str(Path(data)), "fingerprint": reader.fingerprint(), "split": opt.split,
                 "n_videos": len(records), "clips_per_video": opt.clips_per_video,
                 "n_traced": n_traced, "require_tracings": opt.require_tracings},
        # The always-mean EF and where it came from; `mae` is the same for every entry (truth only).
        "baseline": {**baseline.to_dict(), "description": baseline.describe(),
                     "mae": ref_eval["baseline_mae"]},
        "settings": {"threads": opt.threads, "latency_runs": opt.latency_runs, "warmup": opt.warmup,
                     "bootstrap": opt.bootstrap, "seed": opt.seed, "worst_n": opt.worst_n,
                     "batch_size": opt.batch_size},
        "host": host_fingerprint(opt.threads, load_while_timing),
        "reference": reference,
        "artefacts": entries,
        "notes": list(notes),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        **({"stress": stress} if stress is not None else {}),
        **({"realtime": realtime} if realtime is not None else {}),
    }
    apply_gates(report, gate_cfg, strict=strict)
    t0 = time.perf_counter()
    log(f"report: writing report.json, report.md, report.html, junit.xml -> {out}")
    files = write_outputs(report, Path(out))
    timings["report"] = time.perf_counter() - t0
    return ValidationResult(read_report(files["json"]), Path(out), files, timings)


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json first; the others are rendered from the file as written (the single source)."""
    from echoedge.validate.junit import write_junit
    from echoedge.validate.report_html import write_html
    from echoedge.validate.report_md import write_markdown

    out.mkdir(parents=True, exist_ok=True)
    path = write_report(report, out / REPORT_FILE)
    stored = read_report(path)
    return {"json": path, "md": write_markdown(stored, out / "report.md"),
            "html": write_html(stored, out / "report.html"), "junit": write_junit(stored, out / "junit.xml")}


def regate(report_path: str | Path, out: str | Path | None = None, gates: str | Path | None = None,
           strict: bool = False) -> ValidationResult:
    """Apply (other) gates to a stored report.json and re-render; nothing is run again."""
    report = read_report(report_path)
    apply_gates(report, load_gates(gates), strict=strict)
    src = Path(report_path)
    out = Path(out) if out is not None else (src if src.is_dir() else src.parent)
    files = write_outputs(report, out)
    return ValidationResult(read_report(files["json"]), out, files)


# ---------------------------------------------------------------------------------------------


def _collect(artefacts: Any, find: Callable[[Path], list[Path]]) -> list[Path]:
    roots = [artefacts] if isinstance(artefacts, (str, Path)) else list(artefacts)
    folders: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise EchoEdgeError(f"{root}: artefacts folder not found")
        folders.extend(f for f in find(root) if f not in folders)  # find skips calibration sets
    return folders


def _show(artefacts: Any) -> str:
    return str(artefacts) if isinstance(artefacts, (str, Path)) else ", ".join(map(str, artefacts))


def _check_sources(folders: list[Path], ck: Any, checkpoint: Path) -> None:
    """Comparing an artefact with a reference it was not built from gives meaningless ΔEF."""
    from echoedge.convert.artefact import read_manifest

    for folder in folders:
        try:
            m = read_manifest(folder)
        except EchoEdgeError:
            continue  # reported per artefact as FAIL_RUNTIME (stage verify)
        if m.source_checkpoint_sha256 and m.source_checkpoint_sha256 != ck.sha256:
            raise EchoEdgeError(f"{folder}: built from checkpoint sha256 {m.source_checkpoint_sha256[:12]}…, "
                                f"but the reference {checkpoint} is {ck.sha256[:12]}…; pass the "
                                "checkpoint it was converted from with --checkpoint")


def _latency_clip(record: Any, frames: Any, spec: Any) -> np.ndarray:
    from echoedge.data.clips import eval_starts, extract_clip

    f = frames(record)
    return extract_clip(f, eval_starts(len(f), spec, 1)[0], spec)[None].astype(np.float32)


def _predict(runner: Any, records: list, frames: Any, spec: Any, opt: ValidateOptions, what: str,
             batch_size: int | None = None) -> list:
    from echoedge.model.evaluate import predict_videos

    return predict_videos(runner, records, frames, spec, opt.clips_per_video,
                          batch_size=batch_size or opt.batch_size, progress=opt.progress, description=what)


def _latency(timed: Any, clip: np.ndarray, opt: ValidateOptions) -> dict[str, Any]:
    """Batch-1 latency from the timed accuracy calls (TimedRunner), topped up to opt.latency_runs."""
    return timed.latency(clip, runs=opt.latency_runs, warmup=opt.warmup, threads=opt.threads).to_dict()


def _summary(preds: list, records: list, spec: Any, baseline: Any, opt: ValidateOptions) -> dict[str, Any]:
    from echoedge.model.evaluate import summarise

    r = summarise(preds, records, spec, baseline, opt.split, opt.clips_per_video)
    d = r.metrics.to_dict()
    d.update(edv_mae=r.edv_mae, esv_mae=r.esv_mae, landmark_error_px=r.landmark_error_px,
             baseline_mae=r.baseline_mae)
    return d


def _facts(manifest: Any) -> dict[str, Any]:
    """Size, hashes and op coverage from the manifest (the converter recorded what it knew).

    Converters record op coverage in their own words; the common keys are read where present:
    details.int8_op_fraction, details.delegated_ops / fallback_ops, or ExecuTorch's
    details.delegation (xnnpack_nodes / portable_nodes). Absent figures stay null, never guessed.
    """
    d = manifest.details if isinstance(manifest.details, dict) else {}
    deleg = d.get("delegation") if isinstance(d.get("delegation"), dict) else {}
    ops = d.get("ops") if isinstance(d.get("ops"), dict) else {}

    def pick(*vals: Any) -> Any:
        return next((v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)), None)

    weights = d.get("weights") if isinstance(d.get("weights"), dict) else {}
    frac = pick(d.get("int8_op_fraction"), ops.get("int8_fraction"))
    delegated = pick(d.get("delegated_ops"), ops.get("delegated"), deleg.get("xnnpack_nodes"),
                     deleg.get("delegated_nodes"))
    fallback = pick(d.get("fallback_ops"), ops.get("fallback"), deleg.get("portable_nodes"),
                    deleg.get("fallback_nodes"))
    return {
        "model_file": manifest.model_file,
        "model_bytes": int(manifest.model_bytes) if manifest.model_bytes else None,
        "model_sha256": manifest.model_sha256 or None,
        "source_checkpoint_sha256": manifest.source_checkpoint_sha256,
        "calibration_id": manifest.calibration_id,
        "int8_op_fraction": float(frac) if frac is not None else None,
        # Read from the model file by the converter (echoedge.convert.weights); absent in
        # artefacts written before it existed.
        "int8_weight_share": weights.get("int8_share"),
        "weight_bytes_by_dtype": weights.get("bytes_by_dtype"),
        "delegated_ops": int(delegated) if delegated is not None else None,
        "fallback_ops": int(fallback) if fallback is not None else None,
        "created_at": manifest.created_at,
        "tool_versions": manifest.tool_versions,
    }


def empty_entry(name: str, folder: str, fmt: str, precision: str) -> dict[str, Any]:
    return {"name": name, "folder": folder, "format": fmt, "precision": precision, "runtime": None,
            "status": FAIL_RUNTIME, "run_status": FAIL_RUNTIME, "stage": None, "reason": None,
            "facts": {"model_bytes": None, "model_sha256": None, "calibration_id": None,
                      "int8_op_fraction": None, "delegated_ops": None, "fallback_ops": None},
            "vs_truth": None, "vs_reference": None, "latency": None, "latency_note": None,
            "speedup_vs_reference": None, "predictions": None, "gates": []}


def failed_entry(name: str, folder: str, fmt: str, precision: str, status: str, stage: str,
                 reason: str) -> dict[str, Any]:
    e = empty_entry(name, folder, fmt, precision)
    e.update(status=status, run_status=status, stage=stage, reason=reason)
    return e


def _validate_one(folder: Path, records: list, frames: Any, spec: Any, ref_preds: list,
                  ref_latency: dict[str, Any], latency_clip: np.ndarray, baseline: Any,
                  opt: ValidateOptions, log: Callable[[str], None],
                  chatter: Path | None = None) -> dict[str, Any]:
    from echoedge.convert.artefact import read_manifest, verify_artefact
    from echoedge.console import captured_output
    from echoedge.validate.agreement import agreement, other_output_deltas
    from echoedge.validate.latency import TimedRunner
    from echoedge.validate.runner import open_runner

    entry = empty_entry(folder.name, str(folder), "?", "?")

    def fail(status: str, stage: str, e: BaseException | str) -> dict[str, Any]:
        reason = e if isinstance(e, str) else first_line(e)
        if isinstance(e, ImportError):
            reason = f"runner not available in this install ({reason})"
        entry.update(status=status, run_status=status, stage=stage, reason=reason)
        log(f"{entry['name']}: {status} at {stage}: {reason}")
        return entry

    try:
        manifest = read_manifest(folder)
        entry.update(format=manifest.format, precision=manifest.precision, runtime=manifest.runtime)
        entry["facts"] = _facts(manifest)
        verify_artefact(folder)
    except Exception as e:
        return fail(FAIL_RUNTIME, "verify", e)
    log(f"{entry['name']}: {manifest.format} {manifest.precision} ({manifest.runtime})")

    try:
        with captured_output(chatter) if chatter else contextlib.nullcontext():
            runner = open_runner(folder, threads=opt.threads)
    except PlatformError as e:
        return fail(SKIPPED_PLATFORM, "load", e)
    except Exception as e:  # ImportError of a runner that has not landed, a load error, ...
        return fail(FAIL_RUNTIME, "load", e)
    try:
        entry["runtime"] = getattr(runner, "runtime", None) or manifest.runtime
        timed = TimedRunner(runner) if getattr(runner, "measures_latency", True) else None
        try:
            if timed:  # the runtime's first call logs too: make it here, untimed, into the log
                with captured_output(chatter) if chatter else contextlib.nullcontext():
                    runner(latency_clip)
            # Batch 1 when timed: the accuracy calls are the latency series (clips differ, work doesn't).
            preds = _predict(timed or runner, records, frames, spec, opt, entry["name"],
                             batch_size=1 if timed else None)
        except PlatformError as e:
            return fail(SKIPPED_PLATFORM, "run", e)
        except Exception as e:
            return fail(FAIL_RUNTIME, "run", e)
        if timed is not None:
            try:
                entry["latency"] = _latency(timed, latency_clip, opt)
            except Exception as e:
                return fail(FAIL_RUNTIME, "latency", e)
            if entry["latency"]["p50_ms"] > 0:
                entry["speedup_vs_reference"] = ref_latency["p50_ms"] / entry["latency"]["p50_ms"]
        else:
            entry["latency_note"] = LATENCY_NOTE_INTERPRETER + f" (runtime {entry['runtime']})"
    finally:
        try:
            runner.close()
        except Exception:
            pass

    names = [p.file_name for p in ref_preds]
    got = {p.file_name: p for p in preds}
    test = [got[n] for n in names]
    agr = agreement(names, [p.ef_true for p in ref_preds], [p.ef for p in ref_preds],
                    [p.ef for p in test], bootstrap=opt.bootstrap, seed=opt.seed, worst_n=opt.worst_n)
    vs_ref = agr.to_dict()
    vs_ref.update(other_output_deltas(test, ref_preds, spec))
    entry.update(run_status="ok", status="PASS", stage=None, reason=None,
                 vs_truth=_summary(preds, records, spec, baseline, opt), vs_reference=vs_ref,
                 predictions=[{"file_name": p.file_name, "ef": p.ef, "edv": p.edv, "esv": p.esv}
                              for p in test])
    log(f"{entry['name']}: mean |ΔEF| {agr.ef.mean_abs:.3f}, p95 {agr.ef.p95_abs:.3f}, "
        f"band agreement {100 * agr.band_agreement:.1f} %"
        + (f", p50 {entry['latency']['p50_ms']:.1f} ms" if entry["latency"] else ""))
    return entry


def _rank(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _version() -> str:
    from echoedge import __version__

    return str(__version__)
