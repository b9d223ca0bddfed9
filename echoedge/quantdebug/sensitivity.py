"""Per-layer sensitivity: which layer's quantization costs the EF points, in the PyTorch simulation.

Units are `simulate.quant_units` (the deploy-form convs of one rewritten reference Conv3d form one
unit named by the reference module path). For each unit, one simulation of the artefact's
format/precision with the same calibration clips, evaluated on a fixed set of videos (validate's
protocol, batch 1) against the fp32 deploy form:

    mode "all-but"  everything int8 except this unit: effect = baseline - error, the EF points
                    won back by keeping the unit float (what mixed precision will do)
    mode "only"     only this unit int8: effect = error, the EF points the unit costs on its own

Units are ranked by effect, largest first. The result records the sweep's wall time and number of
simulation builds/evaluations, because on a 2-core CPU each evaluation of the q/dq graph costs
seconds per clip (size the videos and calibration clips accordingly).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

MODES = ("all-but", "only")


@dataclass
class UnitSensitivity:
    unit: str  # reference module path (a keep_float entry)
    layers: list[str]  # deploy-form layers in the unit
    params: int
    mean_abs_def: float  # mean |EF_sim - EF_ref| of this configuration
    max_abs_def: float
    effect: float  # EF points attributable to the unit (see the module docstring)
    seconds: float


@dataclass
class SensitivityResult:
    format: str
    precision: str
    mode: str
    split: str
    videos: list[str]
    clips_per_video: int
    calibration_clips: int
    baseline: float  # mean |dEF| with the whole recipe int8 (no unit float)
    baseline_max: float
    units: list[UnitSensitivity]  # ranked: most sensitive first
    evaluations: int  # simulations built and evaluated (baseline included)
    wall_s: float
    seconds_per_evaluation: float
    ef_reference: list[float] = field(default_factory=list)

    def ranking(self) -> list[str]:
        return [u.unit for u in self.units]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_config(deploy: Any, videos: Any, ef_reference: np.ndarray, fmt: str, precision: str,
                    clips: np.ndarray | None, keep_float: Sequence[str] = (),
                    only: Sequence[str] | None = None, progress: bool = False,
                    stats: dict[str, Any] | None = None) -> tuple[float, float, np.ndarray]:
    """(mean |dEF|, max |dEF|, per-video EF) of one simulated configuration vs `ef_reference`."""
    from echoedge.quantdebug.simulate import ef_per_video, simulate

    sim = simulate(deploy, fmt, precision, clips, keep_float=keep_float, only=only, progress=False,
                   stats=stats)
    ef = ef_per_video(sim, videos, progress=progress, description="EF simulated")
    d = np.abs(ef - np.asarray(ef_reference, dtype=np.float64))
    return float(d.mean()), float(d.max()), ef


def shared_stats(deploy: Any, fmt: str, precision: str, clips: np.ndarray | None) -> dict[str, Any] | None:
    """Observer statistics calibrated once for every configuration of a PT2E-simulated scheme."""
    from echoedge.quantdebug.observers import observer_stats

    if fmt in ("executorch", "tflite") and precision == "int8" and clips is not None:
        return observer_stats(deploy, clips)
    return None


def sensitivity_sweep(deploy: Any, videos: Any, clips: np.ndarray | None, fmt: str = "executorch",
                      precision: str = "int8", mode: str = "all-but",
                      ef_reference: np.ndarray | None = None, units: Sequence[str] | None = None,
                      progress: bool = False,
                      log: Callable[[str], None] = lambda s: None) -> SensitivityResult:
    """Quantize (or keep float) one unit at a time in the simulation; rank the units.

    `videos` is a `simulate.VideoSet` (e.g. 12 VAL videos x 1 clip), `clips` the calibration clips
    (e.g. 32); `ef_reference` the fp32 deploy form's per-video EF (computed when None); `units`
    restricts the sweep to these unit names (default: every `quant_units` unit).
    """
    from echoedge.quantdebug.simulate import ef_per_video, quant_units

    if mode not in MODES:
        raise EchoEdgeError(f"sensitivity mode must be one of {', '.join(MODES)}, got {mode!r}")
    t_all = time.perf_counter()
    all_units = quant_units(deploy, fmt, precision)
    if units is not None:
        known = {u.name: u for u in all_units}
        bad = [u for u in units if u not in known]
        if bad:
            raise EchoEdgeError(f"unknown units {', '.join(bad)} (have: {', '.join(known)})")
        all_units = [known[u] for u in units]
    if not all_units:
        raise EchoEdgeError(f"{fmt} {precision}: nothing is quantized, so there is nothing to sweep")
    if ef_reference is None:
        ef_reference = ef_per_video(deploy.eval(), videos, progress=progress, description="EF fp32 reference")
    ef_reference = np.asarray(ef_reference, dtype=np.float64)

    t0 = time.perf_counter()
    stats = shared_stats(deploy, fmt, precision, clips)
    base, base_max, _ = evaluate_config(deploy, videos, ef_reference, fmt, precision, clips,
                                        progress=progress, stats=stats)
    log(f"sensitivity: baseline (whole recipe int8) mean |dEF| {base:.3f} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for i, u in enumerate(all_units, 1):
        t0 = time.perf_counter()
        if mode == "all-but":
            err, mx, _ = evaluate_config(deploy, videos, ef_reference, fmt, precision, clips,
                                         keep_float=[u.name], progress=progress, stats=stats)
            effect = base - err
        else:
            err, mx, _ = evaluate_config(deploy, videos, ef_reference, fmt, precision, clips,
                                         only=[u.name], progress=progress, stats=stats)
            effect = err
        dt = time.perf_counter() - t0
        log(f"sensitivity {i}/{len(all_units)}: {u.name} ({mode}) mean |dEF| {err:.3f}, "
            f"effect {effect:+.3f} ({dt:.0f} s)")
        rows.append(UnitSensitivity(u.name, list(u.layers), u.params, err, mx, effect, round(dt, 2)))
    # Ties (e.g. exact zeros) keep forward order: a stable sort.
    rows.sort(key=lambda r: -r.effect)
    wall = time.perf_counter() - t_all
    n = len(all_units) + 1
    return SensitivityResult(fmt, precision, mode, videos.split, videos.names, videos.clips_per_video,
                             0 if clips is None else int(len(clips)), base, base_max, rows, n,
                             round(wall, 2), round(wall / n, 2), [float(v) for v in ef_reference])


def sensitivity_table(result: SensitivityResult, top: int | None = None) -> str:
    """A Markdown table of the ranked units."""
    what = ("EF points won back when kept float" if result.mode == "all-but"
            else "EF points it costs alone")
    lines = [f"| rank | unit | weights | mean \\|dEF\\| ({result.mode}) | effect: {what} |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for i, u in enumerate(result.units[:top] if top else result.units, 1):
        lines.append(f"| {i} | {u.unit} | {u.params} | {u.mean_abs_def:.3f} | {u.effect:+.3f} |")
    lines.append(f"\nbaseline (all int8): {result.baseline:.3f}; {result.evaluations} evaluations on "
                 f"{len(result.videos)} {result.split} videos x {result.clips_per_video} clips, "
                 f"{result.calibration_clips} calibration clips, {result.wall_s:.0f} s "
                 f"({result.seconds_per_evaluation:.1f} s each)")
    return "\n".join(lines)


def sensitivity_plot(result: SensitivityResult, out: str | Path, top: int | None = 20) -> Path:
    """A horizontal bar chart (PNG) of the ranked units' effect in EF points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = result.units[:top] if top else result.units
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(units) + 1.5))
    names = [u.unit for u in units][::-1]
    vals = [u.effect for u in units][::-1]
    ax.barh(names, vals, color=["#c0392b" if v > 0 else "#7f8c8d" for v in vals])
    ax.axvline(0, color="black", linewidth=0.6)
    label = ("EF points won back by keeping the unit float" if result.mode == "all-but"
             else "mean |dEF| with only this unit int8")
    ax.set_xlabel(label)
    ax.set_title(f"{result.format} {result.precision} sensitivity ({result.mode}); "
                 f"all int8: {result.baseline:.3f}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


__all__: Sequence[str] = ("MODES", "SensitivityResult", "UnitSensitivity", "evaluate_config",
                          "sensitivity_plot", "sensitivity_sweep", "sensitivity_table")
