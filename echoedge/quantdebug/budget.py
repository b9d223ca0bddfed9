"""Mixed precision to an EF budget: keep the most sensitive units float until the budget holds.

Search (in the PyTorch simulation, on fixed VAL videos): start from the whole recipe int8; while
mean |EF_sim - EF_ref| > budget, keep the next unit of the sensitivity ranking float and
re-simulate; stop at the first configuration that meets the budget. When the ranking is used up
(or `max_float` units are float) without meeting it, `BudgetError` says so: the budget cannot be
met by keeping these units float (what stays int8 outside them -- e.g. element-wise ops, or the
activations feeding a float unit -- still costs EF).

Each backend then gets the kept-float units through its own mechanism:

    ExecuTorch  the XNNPACK quantizer's per-module filter (`quantizer_for(keep_float=...)`)
    TFLite      denylisted nodes of tf.lite's QuantizationDebugger (the units' convs, located by
                weight in the TFLite graph, stay float)
    Core ML     per-op selection: coremltools' OptimizationConfig op_name_configs set to None for
                the units' weights

and the emitted artefacts are measured for real (EF in their runtime, latency, size) as candidate
points; `pareto_front` / `pareto_plot` show the trade-off so a user can choose.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError
from echoedge.quantdebug.memory_budget import limit_check

# format -> the precision whose mixed form the converter emits
MIXED_PRECISION = {"executorch": "int8", "tflite": "int8", "coreml": "w8"}


class BudgetError(EchoEdgeError):
    """The EF budget cannot be met by keeping the candidate units float."""


@dataclass
class BudgetStep:
    kept_float: list[str]
    mean_abs_def: float
    max_abs_def: float
    seconds: float
    memory_mb: float | None = None  # estimated activation memory (`memory_budget`), with a limit


@dataclass
class BudgetResult:
    budget: float
    format: str
    precision: str
    kept_float: list[str]  # the configuration that meets the budget
    mean_abs_def: float  # its simulated mean |dEF|
    steps: list[BudgetStep]  # every configuration tried, in order
    evaluations: int  # simulations built for the search (configurations reused from the sweep excluded)
    wall_s: float
    split: str = ""
    videos: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def greedy_budget(evaluate: Callable[[list[str]], tuple[float, float]], ranking: Sequence[str],
                  budget: float, max_float: int | None = None,
                  log: Callable[[str], None] = lambda s: None,
                  fits: Callable[[list[str]], tuple[bool, float]] | None = None,
                  ) -> tuple[list[str], list[BudgetStep]]:
    """The greedy search itself, on any `evaluate(kept_float) -> (mean, max |dEF|)`.

    With `fits(kept_float) -> (within the memory limit, estimated MB)`, a unit whose float
    activations would break the memory limit is passed over for the next one in the ranking
    (keeping a unit float never lowers memory, so the all-int8 start must fit).
    Returns the kept-float list that meets the budget and every step tried; raises BudgetError.
    """
    if not (budget > 0 and np.isfinite(budget)):
        raise EchoEdgeError(f"the EF budget must be a positive number of EF points, got {budget}")
    if len(set(ranking)) != len(ranking):
        raise EchoEdgeError("the ranking names a unit twice")
    limit = len(ranking) if max_float is None else min(int(max_float), len(ranking))
    steps: list[BudgetStep] = []
    kept: list[str] = []
    passed_over: list[str] = []
    memory = None
    if fits is not None:
        ok, memory = fits([])
        if not ok:
            raise BudgetError(f"memory limit cannot be met: the recipe with every unit int8 already needs "
                              f"{memory:.1f} MB of activations (estimate); raise --max-memory-mb")
    candidates = iter(ranking)
    while True:
        t0 = time.perf_counter()
        mean, mx = evaluate(list(kept))
        steps.append(BudgetStep(list(kept), float(mean), float(mx), round(time.perf_counter() - t0, 2),
                                None if memory is None else round(float(memory), 3)))
        mem = "" if memory is None else f", {memory:.1f} MB activations (estimate)"
        log(f"budget: {len(kept)} unit(s) float -> mean |dEF| {mean:.3f} (budget {budget:g}){mem}")
        if mean <= budget:
            return kept, steps
        nxt = None
        if len(kept) < limit:
            for unit in candidates:
                if fits is None:
                    nxt = unit
                    break
                ok, mb = fits([*kept, unit])
                if ok:
                    nxt, memory = unit, mb
                    break
                passed_over.append(unit)
                log(f"budget: {unit} stays int8: float it would need {mb:.1f} MB (over the memory limit)")
        if nxt is None:
            best = min(steps, key=lambda s: s.mean_abs_def)
            why = (f"; {len(passed_over)} unit(s) stayed int8 for the memory limit ({', '.join(passed_over)})"
                   if passed_over else "")
            raise BudgetError(
                f"EF budget {budget:g} cannot be met: with {len(kept)} of {len(ranking)} candidate "
                f"unit(s) kept float the simulated mean |dEF| is still {mean:.3f} (best {best.mean_abs_def:.3f} "
                f"with {len(best.kept_float)} float){why}; raise the budget or widen the candidates")
        kept.append(nxt)


def search_budget(deploy: Any, videos: Any, clips: np.ndarray | None, budget: float,
                  ranking: Sequence[str] | Any, fmt: str = "executorch", precision: str = "int8",
                  ef_reference: np.ndarray | None = None, max_float: int | None = None,
                  progress: bool = False,
                  log: Callable[[str], None] = lambda s: None,
                  max_memory_mb: float | None = None) -> BudgetResult:
    """Greedy mixed precision in the simulation: keep units float in `ranking` order until the
    simulated mean |dEF| on `videos` is <= `budget`. `ranking` is a list of unit names or a
    `sensitivity.SensitivityResult` (its ranking). With `max_memory_mb`, units whose float
    activations would break that limit (`memory_budget` estimate) stay int8. Raises BudgetError
    when it cannot be met."""
    t_all = time.perf_counter()
    names = list(ranking.ranking() if hasattr(ranking, "ranking") else ranking)
    ref = _checked(deploy, videos, names, fmt, precision, ef_reference, progress, "ranking")

    # An "all-but" sweep on the same videos already evaluated the first two configurations
    # (nothing float; the top unit alone float): reuse them instead of re-simulating.
    known: dict[tuple[str, ...], tuple[float, float]] = {}
    if (getattr(ranking, "mode", None) == "all-but" and ranking.videos == videos.names
            and (ranking.format, ranking.precision) == (fmt, precision)
            and ranking.calibration_clips == (0 if clips is None else len(clips))):
        known[()] = (ranking.baseline, ranking.baseline_max)
        for u in ranking.units:
            known[(u.unit,)] = (u.mean_abs_def, u.max_abs_def)

    evaluate = _evaluator(deploy, videos, clips, fmt, precision, ref, progress, known)
    fits = limit_check(deploy, videos, clips, fmt, precision, max_memory_mb)
    kept, steps = greedy_budget(evaluate, names, budget, max_float, log, fits)
    fresh = sum(1 for st in steps if tuple(st.kept_float) not in known)
    return BudgetResult(float(budget), fmt, precision, kept, steps[-1].mean_abs_def, steps, fresh,
                        round(time.perf_counter() - t_all, 2), videos.split, videos.names)


def evaluate_mix(deploy: Any, videos: Any, clips: np.ndarray | None, budget: float,
                 keep_float: Sequence[str], fmt: str = "executorch", precision: str = "int8",
                 ef_reference: np.ndarray | None = None, progress: bool = False,
                 log: Callable[[str], None] = lambda s: None,
                 max_memory_mb: float | None = None) -> BudgetResult:
    """A hand-picked mix, no search: the simulated mean |dEF| with exactly `keep_float` float.

    For a user who already knows which layers to keep float (from a sweep, or from experience);
    raises BudgetError when the mix misses `budget` (or `max_memory_mb`), like the search.
    """
    if not (budget > 0 and np.isfinite(budget)):
        raise EchoEdgeError(f"the EF budget must be a positive number of EF points, got {budget}")
    t0 = time.perf_counter()
    kept = list(dict.fromkeys(keep_float))
    ref = _checked(deploy, videos, kept, fmt, precision, ef_reference, progress, "--keep-float")
    memory = None
    fits = limit_check(deploy, videos, clips, fmt, precision, max_memory_mb)
    if fits is not None:
        ok, memory = fits(kept)
        log(f"budget: the chosen mix needs {memory:.1f} MB of activations (estimate; limit {max_memory_mb:g} MB)")
        if not ok:
            raise BudgetError(f"memory limit {max_memory_mb:g} MB is not met by the chosen mix: it needs "
                              f"{memory:.1f} MB of activations (estimate)")
    mean, mx = _evaluator(deploy, videos, clips, fmt, precision, ref, progress, {})(kept)
    log(f"budget: {len(kept)} chosen unit(s) float -> mean |dEF| {mean:.3f} (budget {budget:g})")
    if mean > budget:
        raise BudgetError(f"EF budget {budget:g} is not met by the chosen mix: with {', '.join(kept) or 'nothing'} "
                          f"float the simulated mean |dEF| is {mean:.3f}")
    wall = round(time.perf_counter() - t0, 2)
    return BudgetResult(float(budget), fmt, precision, kept, float(mean),
                        [BudgetStep(kept, float(mean), float(mx), wall, memory)], 1, wall, videos.split,
                        videos.names)



def _checked(deploy: Any, videos: Any, names: Sequence[str], fmt: str, precision: str,
             ef_reference: np.ndarray | None, progress: bool, what: str) -> np.ndarray:
    """Unknown unit names fail clearly; the fp32 reference EF (computed when not given)."""
    from echoedge.quantdebug.simulate import ef_per_video, quant_units

    known = {u.name for u in quant_units(deploy, fmt, precision)}
    bad = [n for n in names if n not in known]
    if bad:
        raise EchoEdgeError(f"{what} names units the {fmt} {precision} recipe does not quantize: "
                            f"{', '.join(bad)} (units: {', '.join(sorted(known))})")
    if ef_reference is None:
        ef_reference = ef_per_video(deploy.eval(), videos, progress=progress, description="EF fp32 reference")
    return np.asarray(ef_reference, dtype=np.float64)


def _evaluator(deploy: Any, videos: Any, clips: np.ndarray | None, fmt: str, precision: str,
               ref: np.ndarray, progress: bool,
               known: dict[tuple[str, ...], tuple[float, float]]) -> Callable[[list[str]], tuple[float, float]]:
    """evaluate(kept_float) -> (mean, max |dEF|) in the simulation; calibrates once, on first need."""
    from echoedge.quantdebug.sensitivity import evaluate_config, shared_stats

    stats: list[Any] = []

    def evaluate(kept: list[str]) -> tuple[float, float]:
        if tuple(kept) in known:
            return known[tuple(kept)]
        if not stats:
            stats.append(shared_stats(deploy, fmt, precision, clips))
        mean, mx, _ = evaluate_config(deploy, videos, ref, fmt, precision, clips, keep_float=kept,
                                      progress=progress, stats=stats[0])
        return mean, mx

    return evaluate


# --------------------------------------------------------------------------------------------
# emitting and measuring the mixed artefacts
# --------------------------------------------------------------------------------------------

def emit_mixed(deploy: Any, spec: Any, fmt: str, keep_float: Sequence[str], out_dir: str | Path,
               calibration: Any | None, source_checkpoint_sha256: str,
               precision: str | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Convert `deploy` to a `fmt` artefact whose `keep_float` units stay float (the backend's own
    mechanism; see the module docstring). `precision` defaults to MIXED_PRECISION[fmt]."""
    import importlib

    from echoedge.convert.export import CALIBRATED, CONVERTERS

    if fmt not in CONVERTERS:
        raise EchoEdgeError(f"unknown format {fmt!r} (have: {', '.join(CONVERTERS)})")
    precision = precision or MIXED_PRECISION[fmt]
    if precision not in ("int8", "w8", "w8a8"):
        raise EchoEdgeError(f"{fmt} {precision}: mixed precision applies to int8/w8/w8a8 artefacts")
    if precision not in CONVERTERS[fmt][0]:
        raise EchoEdgeError(f"{fmt} has no {precision} precision (have: {', '.join(CONVERTERS[fmt][0])})")
    module, func = CONVERTERS[fmt][1].split(":")
    convert = getattr(importlib.import_module(module), func)
    return convert(deploy, spec, out_dir, precision, calibration if precision in CALIBRATED else None,
                   source_checkpoint_sha256, progress=progress, overwrite=overwrite,
                   keep_float=list(keep_float))


@dataclass
class CandidatePoint:
    """One artefact on the accuracy / speed / size trade-off."""

    name: str
    folder: str | None  # None for the eager fp32 reference
    format: str
    precision: str
    kept_float: list[str]
    mean_abs_def: float  # real, in its runtime, vs the fp32 reference on the same videos
    max_abs_def: float
    latency_ms: float | None  # p50, batch 1; None where the runtime is not the device's
    size_bytes: int | None
    runtime: str
    simulated_abs_def: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_candidates(folders: Sequence[str | Path], videos: Any, ef_reference: np.ndarray,
                       reference: Any | None = None, threads: int = 2, latency_runs: int = 20,
                       warmup: int = 3, latency_clip: np.ndarray | None = None,
                       simulated: dict[str, float | None] | None = None,
                       reference_name: str = "eager fp32", progress: bool = False) -> list[CandidatePoint]:
    """Every artefact run for real: mean |dEF| on `videos` vs `ef_reference`, then p50 latency of all
    of them side by side (`latency.round_robin`), file size.

    With `reference` (the fp32 torch model) its eager point comes first and is timed in the same
    round robin: the speed-ups are then ratios from one run, which a shared machine's load
    bursts cannot skew for one candidate alone. Runtimes that are not the device's (Core ML's
    reference interpreter) get no latency. `simulated` maps a folder name to its simulated |dEF|.
    """
    from echoedge.convert.artefact import model_bytes, read_manifest
    from echoedge.quantdebug.simulate import ef_per_video
    from echoedge.validate.latency import round_robin
    from echoedge.validate.runner import EagerRunner, open_runner

    simulated = simulated or {}
    points: list[CandidatePoint] = []
    timed: dict[str, Any] = {}
    shape: tuple[int, ...] | None = None
    try:
        if reference is not None:
            ref = EagerRunner(reference, threads=threads, name=reference_name)
            timed[reference_name] = ref
            shape = ref.clip_shape
            size = int(sum(p.numel() * p.element_size() for p in reference.parameters()))
            points.append(CandidatePoint(reference_name, None, "pytorch", "fp32", [], 0.0, 0.0, None, size,
                                         "pytorch-eager"))
        for folder in map(Path, folders):
            manifest = read_manifest(folder)
            recipe = (manifest.details.get("quantization") or {})
            kept = list((recipe.get("recipe") or {}).get("kept_float") or recipe.get("kept_float") or [])
            runner = open_runner(folder, threads=threads)
            try:
                ef = ef_per_video(runner, videos, progress=progress, description=f"EF {folder.name}")
            except BaseException:
                runner.close()
                raise
            if getattr(runner, "measures_latency", True):
                timed[folder.name] = runner
                shape = shape or tuple(runner.clip_shape)
            else:
                runner.close()
            d = np.abs(ef - np.asarray(ef_reference, dtype=np.float64))
            points.append(CandidatePoint(folder.name, str(folder), manifest.format, manifest.precision, kept,
                                         float(d.mean()), float(d.max()), None,
                                         int(model_bytes(folder / manifest.model_file)), runner.runtime,
                                         simulated.get(folder.name)))
        if timed:
            clip = latency_clip if latency_clip is not None else np.zeros((1, *shape), dtype=np.float32)
            lat = round_robin(timed, clip, runs=latency_runs, warmup=warmup, threads=threads)
            for p in points:
                if p.name in lat:
                    p.latency_ms = lat[p.name].p50_ms
    finally:
        for r in timed.values():
            r.close()
    return points


def measure_candidate(folder: str | Path, videos: Any, ef_reference: np.ndarray, threads: int = 2,
                      latency_runs: int = 20, warmup: int = 3, latency_clip: np.ndarray | None = None,
                      simulated_abs_def: float | None = None, progress: bool = False) -> CandidatePoint:
    """One artefact alone (`measure_candidates` without a reference)."""
    return measure_candidates([folder], videos, ef_reference, threads=threads, latency_runs=latency_runs,
                              warmup=warmup, latency_clip=latency_clip,
                              simulated={Path(folder).name: simulated_abs_def}, progress=progress)[0]


def reference_point(deploy_or_model: Any, clip_shape: Sequence[int], threads: int = 2,
                    latency_runs: int = 20, warmup: int = 3, latency_clip: np.ndarray | None = None,
                    name: str = "eager fp32") -> CandidatePoint:
    """The eager fp32 baseline alone (|dEF| 0 by definition); `measure_candidates` times it beside
    the artefacts, which is what speed-ups should come from."""
    from echoedge.validate.latency import measure_latency
    from echoedge.validate.runner import EagerRunner

    runner = EagerRunner(deploy_or_model, threads=threads, name=name, clip_shape=tuple(clip_shape))
    clip = latency_clip if latency_clip is not None else np.zeros((1, *clip_shape), dtype=np.float32)
    lat = measure_latency(runner, clip, runs=latency_runs, warmup=warmup, threads=threads).p50_ms
    size = int(sum(p.numel() * p.element_size() for p in deploy_or_model.parameters()))
    return CandidatePoint(name, None, "pytorch", "fp32", [], 0.0, 0.0, lat, size, "pytorch-eager")


def pareto_front(points: Sequence[CandidatePoint], size: bool = True) -> list[CandidatePoint]:
    """The points no other point beats on all of EF error, latency and (with `size`) file size
    (None latency: not comparable on speed, left out)."""
    pts = [p for p in points if p.latency_ms is not None]

    def key(p: CandidatePoint) -> tuple[float, ...]:
        return (p.mean_abs_def, p.latency_ms, p.size_bytes or 0) if size else (p.mean_abs_def, p.latency_ms)

    def dominates(a: CandidatePoint, b: CandidatePoint) -> bool:
        ka, kb = key(a), key(b)
        return all(x <= y for x, y in zip(ka, kb)) and any(x < y for x, y in zip(ka, kb))

    return [p for p in pts if not any(dominates(q, p) for q in pts if q is not p)]


def pareto_plot(points: Sequence[CandidatePoint], out: str | Path, budget: float | None = None,
                title: str = "EF error vs latency (marker area: size)") -> Path:
    """Scatter (PNG): x latency p50 (ms), y mean |dEF|; marker area ~ file size; front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pts = [p for p in points if p.latency_ms is not None]
    if not pts:
        raise EchoEdgeError("no candidate has a latency to plot (reference-interpreter runs only)")
    # The line is the front in the plane drawn (error vs latency), as a staircase; a point that is
    # only on the front because its file is smaller gets a black edge instead.
    front = sorted(pareto_front(pts, size=False), key=lambda p: p.latency_ms)
    front3 = {p.name for p in pareto_front(pts)}
    sizes = np.array([p.size_bytes or 0 for p in pts], dtype=float)
    area = 30 + 300 * sizes / max(sizes.max(), 1.0)
    colors = {"executorch": "#2e86c1", "tflite": "#e67e22", "coreml": "#8e44ad", "pytorch": "#7f8c8d"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    in2d = {p.name for p in front}
    for p, a in zip(pts, area):
        edge = "black" if p.name in front3 and p.name not in in2d else "none"
        ax.scatter(p.latency_ms, p.mean_abs_def, s=a, color=colors.get(p.format, "#34495e"), alpha=0.7,
                   edgecolors=edge, linewidths=1.2)
        ax.annotate(p.name, (p.latency_ms, p.mean_abs_def), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    if len(front) > 1:
        ax.plot([p.latency_ms for p in front], [p.mean_abs_def for p in front], "k--", linewidth=0.8,
                drawstyle="steps-post", label="Pareto front (error, latency)")
    if len(front3) > len(in2d):
        ax.scatter([], [], s=60, facecolors="none", edgecolors="black",
                   label="on the front only by file size")
    if budget is not None:
        ax.axhline(budget, color="#c0392b", linewidth=0.8, linestyle=":", label=f"budget {budget:g}")
    ax.set_xlabel("latency p50 (ms, batch 1)")
    ax.set_ylabel("mean |dEF| vs fp32 reference (points)")
    ax.set_title(title, fontsize=9)
    if len(front) > 1 or budget is not None:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def candidates_table(points: Sequence[CandidatePoint]) -> str:
    """A Markdown table of candidate points."""
    lines = ["| candidate | runtime | float units | mean \\|dEF\\| | sim | p50 ms | size MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in points:
        sim = "-" if p.simulated_abs_def is None else f"{p.simulated_abs_def:.3f}"
        lat = "-" if p.latency_ms is None else f"{p.latency_ms:.1f}"
        size = "-" if p.size_bytes is None else f"{p.size_bytes / 1e6:.2f}"
        lines.append(f"| {p.name} | {p.runtime} | {len(p.kept_float)} | {p.mean_abs_def:.3f} | {sim} "
                     f"| {lat} | {size} |")
    return "\n".join(lines)


__all__: Sequence[str] = ("BudgetError", "BudgetResult", "BudgetStep", "CandidatePoint",
                          "MIXED_PRECISION", "candidates_table", "emit_mixed", "evaluate_mix", "greedy_budget",
                          "measure_candidate", "measure_candidates", "pareto_front", "pareto_plot", "reference_point",
                          "search_budget")
