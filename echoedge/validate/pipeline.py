"""`echo-edge run`: the main job end to end, timed stage by stage.

data -> checkpoint -> calibrate (once) -> export every available format in the requested
precisions -> validate -> report. Each format is exported in its own call so that one toolchain
failing (or not installed) costs only its own artefacts: the failure becomes a FAIL_RUNTIME row of
the report (stage "convert"), and the other formats are still validated. Formats whose converter
module is not part of this install are named in the report's notes, not silently dropped.

The int8 calibration clips come from TRAIN of the data, else from a split other than the one
validated, else from `calibration_data` or the built-in synthetic set (`calibration.source`): a
test-only dataset is never calibrated on the videos it is validated on, and the report's notes
say where the clips came from whenever it is not TRAIN of the data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from echoedge import atomic
from echoedge.errors import EchoEdgeError, first_line
from echoedge.outlock import folder_lock
from echoedge.validate.gates import FAIL_RUNTIME
from echoedge.validate.validate import ValidateOptions, ValidationResult, failed_entry, validate

ARTEFACTS_DIR = "artefacts"
RUN_FILE = "run.json"
LOGS_DIR = "logs"  # worker processes' stderr, one file per format
# fp32 everywhere, int8 for ExecuTorch and TFLite, w8a8 (int8 weights and activations) for
# Core ML: with a zero point per activation and its output shift taken out it meets the int8
# gates on the shipped checkpoint (bench/bench_coreml.py: mean / p95 |dEF| 0.23 / 0.47; it was
# ~0.7 / 1.8 with symmetric activations, when W8 was the default). W8 stays one word away.
DEFAULT_PRECISIONS = "fp32,int8,w8a8"


@dataclass
class JobResult:
    validation: ValidationResult
    artefacts_dir: Path
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.validation.exit_code


def available_formats(formats: list[str]) -> tuple[list[str], dict[str, str]]:
    """Formats whose converter and runner modules are installed, and why the others are not."""
    from echoedge.convert.export import CONVERTERS, RUNS_AS
    from echoedge.validate.runner import RUNNERS

    ok, missing = [], {}
    for fmt in formats:
        runs_as = RUNS_AS.get(fmt, fmt)
        mods = [CONVERTERS[fmt][1].split(":")[0]] + ([RUNNERS[runs_as].split(":")[0]] if runs_as in RUNNERS else [])
        absent = [m for m in mods if importlib.util.find_spec(m) is None]
        if runs_as not in RUNNERS:
            absent.append("(no runner registered)")
        if absent:
            missing[fmt] = f"not in this install ({', '.join(absent)} missing)"
        else:
            ok.append(fmt)
    return ok, missing


def plan(formats: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(format, precision) pairs: each format builds the requested precisions it offers."""
    from echoedge.convert.export import CONVERTERS

    return [(f, p) for f in formats for p in precisions if p in CONVERTERS[f][0]]


def run_job(
    out: Path,
    data: Path | None = None,
    checkpoint: Path | None = None,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    # 32 clips: simulated ExecuTorch int8 mean |dEF| 0.501 vs 0.532 with 64 (shipped checkpoint,
    # 24 TEST videos x 2 clips); each clip costs every int8 conversion a calibration pass (TFLite's
    # 0.6 s, Core ML W8A8's two interpreter passes about 1.2 s).
    calibration: str = "ef-stratified:32",
    calibration_set: Path | None = None,
    options: ValidateOptions | None = None,
    gates: Path | None = None,
    strict: bool = False,
    reuse: bool = False,
    seed: int = 0,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    calibration_data: Path | None = None,
    int8_recipe: str | None = None,
    model: str = "e3net",
) -> JobResult:
    """Run the main job into `out`; `jobs` > 1 converts that many formats at once, each in its own
    process (conversion is mostly single-threaded Python: graph passes, onnx2tf, MIL passes).
    `int8_recipe` (echoedge.convert.int8_recipe.RECIPES; None: the default) is what ExecuTorch's
    and TFLite's int8 artefacts quantize. `model` names what `checkpoint` holds
    (echoedge.model.registry): the shipped Echo-E3Net when both are left out."""
    from echoedge.convert.export import CALIBRATED, DEFAULT_FORMATS
    from echoedge.convert.int8_recipe import DEFAULT_RECIPE, check_recipe

    int8_recipe = int8_recipe or DEFAULT_RECIPE
    check_recipe(int8_recipe)

    opt = options or ValidateOptions()
    out = Path(out)
    art_dir = out / ARTEFACTS_DIR
    timings: dict[str, float] = {}
    t_job = time.perf_counter()

    formats = list(formats or DEFAULT_FORMATS)
    precisions = list(precisions or DEFAULT_PRECISIONS.split(","))
    if gates is not None:  # fail on a bad gates file before minutes of conversion
        from echoedge.validate.gates import load_gates

        load_gates(gates)
    usable, unavailable = available_formats(formats)
    for fmt, why in unavailable.items():
        log(f"{fmt}: {why}; skipped")
    pairs = plan(usable, precisions)
    if not pairs:
        raise EchoEdgeError(f"nothing to build: formats {', '.join(formats)} with precisions "
                            f"{', '.join(precisions)} ({'; '.join(f'{k}: {v}' for k, v in unavailable.items()) or 'no format offers them'})")

    # One writer per OUT: a second run into it refuses with who holds it (echoedge.outlock).
    with folder_lock(out, "echo-edge run"):
        t0 = time.perf_counter()
        if data is None:
            from echoedge.data.default import default_dataset

            data = default_dataset(progress=opt.progress)
        log(f"data: {data}")
        timings["data"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        from echoedge.model.registry import open_model

        ck = open_model(model, checkpoint)
        checkpoint = ck.path
        log(f"model: {ck.entry.name} from {checkpoint}")
        timings["checkpoint"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        notes = [f"{fmt}: {why}" for fmt, why in unavailable.items()]
        calib_path = None
        if any(p in CALIBRATED for _, p in pairs):
            calib_path, calib_note = _calibrate(data, ck, art_dir, calibration, calibration_set,
                                                calibration_data, seed, reuse, opt, log)
            notes += [calib_note] if calib_note else []
        timings["calibrate"] = time.perf_counter() - t0

        built, reused, failed = [], [], []
        extra: list[dict[str, Any]] = []
        calib_id = _calibration_id(calib_path)
        tasks: list[ExportTask] = []
        for fmt in usable:
            todo = [p for f, p in pairs if f == fmt]
            if reuse:
                keep = [p for p in todo if _reusable(art_dir / f"{fmt}-{p}", ck.sha256,
                                                       calib_id if p in CALIBRATED else None, int8_recipe)]
                reused += [f"{fmt}-{p}" for p in keep]
                todo = [p for p in todo if p not in keep]
            if todo:
                tasks.append(ExportTask(fmt, todo, Path(checkpoint), Path(data), art_dir, calibration,
                                        calib_path, seed, opt.cache_dir, opt.progress, int8_recipe,
                                        model))
        t0 = time.perf_counter()
        for done in _run_exports(tasks, jobs, log):
            built += done.built
            failed += done.failed
            extra += done.entries
            timings[f"export {done.fmt}"] = done.seconds
        if tasks:
            timings["export (wall)"] = time.perf_counter() - t0

        # Validate exactly what this job planned (not other folders that happen to be there).
        folders = [art_dir / f"{f}-{p}" for f, p in pairs if f"{f}-{p}" not in failed]
        t0 = time.perf_counter()
        result = validate(folders, data, checkpoint, out, gates=gates, strict=strict, options=opt,
                          extra_entries=extra, notes=notes, log=log, model=model)
        timings["validate"] = time.perf_counter() - t0 - result.timings_s.get("report", 0.0)
        timings["report"] = result.timings_s.get("report", 0.0)
        timings["total"] = time.perf_counter() - t_job
        job = JobResult(result, art_dir, built, reused, failed, unavailable, timings)
        _write_run_json(job, out, opt)
        return job


@dataclass
class ExportTask:
    """One format's conversions; plain data so that it can travel to a worker process."""

    fmt: str
    precisions: list[str]
    checkpoint: Path
    data: Path
    art_dir: Path
    calibration: str
    calibration_set: Path | None
    seed: int
    cache_dir: Path | None
    progress: bool
    int8_recipe: str | None = None  # None: the converters' default
    model: str = "e3net"  # what `checkpoint` holds (echoedge.model.registry)


@dataclass
class ExportDone:
    fmt: str
    built: list[str]
    failed: list[str]
    entries: list[dict[str, Any]]  # FAIL_RUNTIME report entries of what was not built
    seconds: float


def export_format(task: ExportTask, log: Callable[[str], None] = print) -> ExportDone:
    """Convert one format; a toolchain failure becomes FAIL_RUNTIME entries, not an exception."""
    from echoedge.convert.export import export

    t0 = time.perf_counter()
    current: list[str] = []

    def export_log(msg: str) -> None:
        # export() announces each conversion as "<fmt> <precision>: converting -> <folder>":
        # the last one announced is the one a failure belongs to.
        head = msg.split(":", 1)[0].split()
        if len(head) == 2 and "converting" in msg:
            current.append(head[1])
        log(msg)

    fmt, todo, art_dir = task.fmt, task.precisions, task.art_dir
    built: list[str] = []
    failed: list[str] = []
    entries: list[dict[str, Any]] = []
    try:
        res = export(task.checkpoint, task.data, art_dir, [fmt], todo, calibration=task.calibration,
                     calibration_set=task.calibration_set, seed=task.seed, overwrite=True,
                     cache_dir=task.cache_dir, progress=task.progress, log=export_log,
                     model=task.model,
                     **({"int8_recipe": task.int8_recipe} if task.int8_recipe else {}))
        built = [p.name for p in res.artefacts]
    except KeyboardInterrupt:
        raise
    except atomic.DiskFullError:  # the machine's problem, not the format's: the job stops
        raise
    except Exception as e:  # a toolchain's failure is a finding about that format, not the job
        if atomic.is_disk_full(e):
            raise atomic.disk_full(art_dir / f"{fmt}-{current[-1] if current else todo[0]}") from None
        bad = current[-1] if current else todo[0]
        reason = f"conversion failed: {first_line(e)}"
        log(f"{fmt}-{bad}: {reason}")
        done = set(current[:-1])
        built = [f"{fmt}-{p}" for p in todo if p in done]
        for p in todo:
            if p in done:
                continue
            why = reason if p == bad else f"not built: the {fmt} {bad} conversion before it failed"
            entries.append(failed_entry(f"{fmt}-{p}", str(art_dir / f"{fmt}-{p}"), fmt, p,
                                        FAIL_RUNTIME, "convert", why))
            failed.append(f"{fmt}-{p}")
            # A stale folder from an earlier run must not be validated as if just built.
            _drop_stale(art_dir / f"{fmt}-{p}")
    return ExportDone(fmt, built, failed, entries, time.perf_counter() - t0)


def _run_exports(tasks: list[ExportTask], jobs: int, log: Callable[[str], None]) -> list[ExportDone]:
    if jobs <= 1 or len(tasks) <= 1:
        from echoedge.console import stderr_to

        done = []
        for t in tasks:  # in this process: its toolchain chatter to a log file all the same
            chatter = t.art_dir.parent / LOGS_DIR / f"export-{t.fmt}.log"
            log(f"[{t.fmt}] toolchain messages -> {chatter}")
            with stderr_to(chatter):
                done.append(export_format(t, log))
        return done
    import multiprocessing as mp
    import threading
    from concurrent.futures import ProcessPoolExecutor

    jobs = min(jobs, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn, not fork: a forked copy of a process that already started torch's thread pools can
    # deadlock. Log lines come back through a queue so the parent's `log` shows live progress.
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()

        def drain() -> None:
            while (msg := queue.get()) is not None:
                log(msg)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                # Progress bars of two processes would overwrite each other: log lines only.
                futures = [pool.submit(_export_in_worker, replace(t, progress=False), queue, threads,
                                       t.art_dir.parent / LOGS_DIR / f"export-{t.fmt}.log")
                           for t in tasks]
                return [f.result() for f in futures]
        finally:
            queue.put(None)
            reader.join(timeout=5)


def _export_in_worker(task: ExportTask, queue: Any, threads: int, stderr_log: Path) -> ExportDone:
    # The toolchains write to the C-level stderr (TF/XNNPACK cpuinfo lines, torchao's optional
    # kernels, coremltools' pass logs); two workers interleaving them would bury the progress
    # lines, so each worker's stderr goes to its own file. Failures still reach the report.
    _die_with_parent()
    stderr_log.parent.mkdir(parents=True, exist_ok=True)
    with open(stderr_log, "w") as f:
        os.dup2(f.fileno(), 2)
    queue.put(f"[{task.fmt}] toolchain messages -> {stderr_log}")
    import torch

    torch.set_num_threads(threads)
    return export_format(task, lambda msg: queue.put(f"[{task.fmt}] {msg}"))


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the `run` that spawned it dies, so a killed run leaves
    no orphan finishing a conversion into OUT while the next run writes there."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    import multiprocessing as mp

    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        os._exit(1)


def _calibrate(data: Path, ck: Any, art_dir: Path, calibration: str, calibration_set: Path | None,
               calibration_data: Path | None, seed: int, reuse: bool, opt: ValidateOptions,
               log: Callable[[str], None]) -> tuple[Path, str | None]:
    """The calibration set's folder, and a note for the report when its clips are not from TRAIN
    of `data` (a test-only dataset)."""
    from echoedge.calibration import (
        build_calibration_set, calibration_source, load_calibration_set, parse_calibration_arg,
        save_calibration_set,
    )
    from echoedge.convert.export import CALIBRATION_DIR

    if calibration_set is not None:
        cs = load_calibration_set(calibration_set)
        if cs.spec != ck.spec:
            raise EchoEdgeError(f"{calibration_set}: calibration clips were made for another ClipSpec "
                                "than the checkpoint")
        log(f"calibration: reusing {calibration_set} ({cs.id})")
        return Path(calibration_set), None
    target = art_dir / CALIBRATION_DIR
    strategy, size = parse_calibration_arg(calibration)
    src = calibration_source(data, calibration_data, opt.split, opt.require_tracings)
    if src.note:
        log(f"calibration: {src.note}")
    if reuse and (target / "manifest.json").is_file():
        try:
            cs = load_calibration_set(target)
            m = cs.manifest
            if (cs.spec == ck.spec and m.get("strategy") == strategy and len(cs) == size
                    and m.get("seed") == seed and m.get("split") == src.split
                    and m.get("data_root") == str(src.root.resolve())):
                log(f"calibration: reusing {target} ({cs.id})")
                return target, src.note
        except EchoEdgeError:
            pass
    log(f"calibration: drawing {strategy}:{size} from {src.describe()}")
    cs = build_calibration_set(src.root, ck.spec, strategy=strategy, size=size, seed=seed,
                               split=src.split, cache_dir=opt.cache_dir, progress=opt.progress,
                               require_tracings=opt.require_tracings)
    save_calibration_set(cs, target)
    log(f"calibration: set {cs.id} ({len(cs)} clips) -> {target}")
    return target, src.note


def _calibration_id(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("id")
    except (OSError, ValueError):
        return None


def _reusable(folder: Path, checkpoint_sha: str, calib_id: str | None,
              int8_recipe: str | None = None) -> bool:
    """An artefact from an earlier run is reused only if it is intact and built from the same
    inputs: checkpoint, calibration set and, for a recipe-built int8 file, the same recipe."""
    from echoedge.convert.artefact import verify_artefact
    from echoedge.convert.int8_recipe import DEFAULT_RECIPE, recipe_of

    try:
        m = verify_artefact(folder)
    except EchoEdgeError:
        return False
    if m.source_checkpoint_sha256 != checkpoint_sha or m.calibration_id != calib_id:
        return False
    if m.precision == "int8" and m.format in ("executorch", "tflite"):
        # A manifest that predates the recipe record was built with the only recipe there was.
        return (recipe_of(m.details) or DEFAULT_RECIPE) == (int8_recipe or DEFAULT_RECIPE)
    return True


def _drop_stale(folder: Path) -> None:
    import shutil

    if (folder / "manifest.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)


def _write_run_json(job: JobResult, out: Path, opt: ValidateOptions) -> None:
    rec = {"timings_s": {k: round(v, 2) for k, v in job.timings_s.items()},
           "validation_timings_s": {k: round(v, 2) for k, v in job.validation.timings_s.items()},
           "built": job.built, "reused": job.reused, "failed": job.failed,
           "unavailable": job.unavailable, "exit_code": job.exit_code,
           "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opt).items()},
           "report": str(job.validation.files.get("html", ""))}
    atomic.write_text(out / RUN_FILE, json.dumps(rec, indent=2) + "\n")
