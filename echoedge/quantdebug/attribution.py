"""Where an artefact's EF error comes from: quantization itself, or the converter and runtime.

For one artefact folder, three per-video EF figures on the same videos and clips (validate's
multi-clip protocol, batch 1):

    ref  the fp32 deploy form of the source checkpoint (eager PyTorch; checked equal to the
         reference model, so it *is* the reference)
    sim  the same quantization simulated in PyTorch (`simulate.simulate`: the artefact's format and
         precision, the calibration clips its manifest names)
    art  the artefact in its runtime (`open_runner`; Core ML off macOS runs in echo-edge's
         reference interpreter of the ML program, and the row says so)

Definitions (per video i; "mean" is over the videos):

    total         = mean |art_i - ref_i|          the artefact's |dEF| vs the reference
    quantization  = mean |sim_i - ref_i|          what the quantization scheme costs by itself
    conversion    = mean |art_i - sim_i|          what the converter and runtime add on top
    signed:  art_i - ref_i = (sim_i - ref_i) + (art_i - sim_i)   exactly, video by video, so
             bias_total = bias_quantization + bias_conversion (means of the signed terms)

The absolute terms do not add up (|a + b| <= |a| + |b|: errors of the two sources can cancel);
the signed decomposition does, and `check()` verifies it. `quantization_share` =
quantization / (quantization + conversion) is the part of the error budget the quantization
scheme explains.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.errors import EchoEdgeError

# Where a calibration set is looked for when the caller gives none: the `calibration` folder
# `echo-edge export` writes next to the artefacts.
CALIBRATION_DIR = "calibration"


@dataclass
class Attribution:
    """The EF error of one artefact split into quantization and conversion/runtime terms."""

    artefact: str  # folder name, e.g. "executorch-int8"
    folder: str
    format: str
    precision: str
    runtime: str  # what ran the artefact (runner.runtime)
    runtime_is_device: bool  # False: a reference interpreter (Core ML off macOS)
    simulation: str  # what the simulation reproduces (simulate.fidelity)
    calibration_id: str | None
    split: str
    videos: list[str]
    clips_per_video: int
    ef_reference: list[float]
    ef_simulated: list[float]
    ef_artefact: list[float]
    total: float  # mean |art - ref|
    quantization: float  # mean |sim - ref|
    conversion: float  # mean |art - sim|
    bias_total: float  # mean (art - ref) = bias_quantization + bias_conversion
    bias_quantization: float  # mean (sim - ref)
    bias_conversion: float  # mean (art - sim)
    max_total: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def quantization_share(self) -> float:
        """quantization / (quantization + conversion); nan when both are 0."""
        denom = self.quantization + self.conversion
        return float(self.quantization / denom) if denom > 0 else float("nan")

    def check(self, atol: float = 1e-9) -> None:
        """Raise if the per-video signed terms do not sum to artefact - reference."""
        ref, sim, art = (np.asarray(v, dtype=np.float64)
                         for v in (self.ef_reference, self.ef_simulated, self.ef_artefact))
        if not (len(ref) == len(sim) == len(art) == len(self.videos)):
            raise EchoEdgeError(f"{self.folder}: attribution figures cover different videos")
        if not np.allclose((sim - ref) + (art - sim), art - ref, atol=atol):
            raise EchoEdgeError(f"{self.folder}: attribution terms do not sum to artefact - reference")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["quantization_share"] = self.quantization_share
        d["definitions"] = DEFINITIONS
        return d


DEFINITIONS = {
    "total": "mean over videos of |EF_artefact - EF_reference|",
    "quantization": "mean over videos of |EF_simulated - EF_reference|",
    "conversion": "mean over videos of |EF_artefact - EF_simulated|",
    "signed": "per video: artefact - reference = (simulated - reference) + (artefact - simulated)",
}


def decompose(ref: Sequence[float], sim: Sequence[float], art: Sequence[float]) -> dict[str, float]:
    """The attribution figures of three per-video EF vectors measured on the same videos."""
    ref_a, sim_a, art_a = (np.asarray(v, dtype=np.float64) for v in (ref, sim, art))
    if not (ref_a.shape == sim_a.shape == art_a.shape) or ref_a.ndim != 1 or len(ref_a) == 0:
        raise EchoEdgeError("attribution needs reference, simulated and artefact EF on the same "
                            f"videos (got {ref_a.shape}, {sim_a.shape}, {art_a.shape})")
    return {
        "total": float(np.mean(np.abs(art_a - ref_a))),
        "quantization": float(np.mean(np.abs(sim_a - ref_a))),
        "conversion": float(np.mean(np.abs(art_a - sim_a))),
        "bias_total": float(np.mean(art_a - ref_a)),
        "bias_quantization": float(np.mean(sim_a - ref_a)),
        "bias_conversion": float(np.mean(art_a - sim_a)),
        "max_total": float(np.max(np.abs(art_a - ref_a))),
    }


def find_calibration(folder: str | Path, calibration_id: str | None,
                     search: Sequence[str | Path] = ()) -> Any | None:
    """The CalibrationSet an artefact was built with (None for uncalibrated artefacts).

    Looks in `search` (calibration folders or folders holding one), then in the artefact's sibling
    `calibration/` folder; the set's id must equal the manifest's `calibration_id`.
    """
    from echoedge.calibration import is_calibration_folder, load_calibration_set

    if calibration_id is None:
        return None
    folder = Path(folder)
    candidates: list[Path] = []
    for s in [*map(Path, search), folder.parent / CALIBRATION_DIR]:
        candidates += [s, s / CALIBRATION_DIR]
    seen = []
    for c in candidates:
        # An artefact folder named on the command line has a manifest.json too: not a set.
        if not is_calibration_folder(c) or c.resolve() in seen:
            continue
        seen.append(c.resolve())
        cs = load_calibration_set(c)
        if cs.id == calibration_id:
            return cs
    where = ", ".join(str(s) for s in seen) or "no calibration folder found"
    raise EchoEdgeError(f"{folder}: its manifest names calibration set {calibration_id}, which is not "
                        f"among the calibration sets given ({where}); pass the folder it was built with")


@dataclass
class AttributionContext:
    """What every artefact of one checkpoint shares: deploy form, videos, reference EF.

    Simulations are cached by (format, precision, calibration id, int8 recipe) so ExecuTorch and
    TFLite int8 (the same simulated scheme) or two artefacts of one calibration set pay for one build.
    """

    deploy: Any
    videos: Any  # simulate.VideoSet
    ef_reference: np.ndarray
    checkpoint_sha256: str | None = None
    simulations: dict[tuple[str, str, str | None, str | None], tuple[Any, np.ndarray, float]] = field(
        default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def make_context(checkpoint: str | Path, data: str | Path, split: str = "VAL", videos: int | None = 12,
                 clips_per_video: int = 1, cache_dir: Path | None = None,
                 progress: bool = False, model: str = "e3net") -> AttributionContext:
    """Load the checkpoint (of `model`, echoedge.model.registry), build its deploy form, load the
    videos and measure the reference EF."""
    import torch

    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.registry import load
    from echoedge.quantdebug.simulate import ef_per_video, load_videos

    t0 = time.perf_counter()
    ck = load(model, Path(checkpoint))
    example = torch.zeros(ck.spec.input_shape(1))
    deploy = to_deploy_form(ck.runnable, example=example).eval()
    vs = load_videos(data, ck.spec, split, videos, clips_per_video, cache_dir)
    t1 = time.perf_counter()
    ref = ef_per_video(deploy, vs, progress=progress, description="EF fp32 reference")
    return AttributionContext(deploy, vs, ref, ck.sha256,
                              seconds={"setup": round(t1 - t0, 2), "reference": round(time.perf_counter() - t1, 2)})


def attribute(folder: str | Path, ctx: AttributionContext, calibration: Any | None = None,
              calibration_search: Sequence[str | Path] = (), threads: int = 2,
              progress: bool = False) -> Attribution:
    """Attribute one artefact's |dEF| (see the module docstring for the definitions).

    `calibration` (a CalibrationSet) overrides the lookup of the set the manifest names.
    """
    from echoedge.convert.artefact import read_manifest
    from echoedge.convert.int8_recipe import recipe_of
    from echoedge.quantdebug.simulate import ef_per_video, fidelity, needs_calibration, simulate
    from echoedge.validate.runner import open_runner

    folder = Path(folder)
    manifest = read_manifest(folder)
    fmt, precision = manifest.format, manifest.precision
    if ctx.checkpoint_sha256 and manifest.source_checkpoint_sha256 not in (None, ctx.checkpoint_sha256):
        raise EchoEdgeError(f"{folder}: built from checkpoint {str(manifest.source_checkpoint_sha256)[:12]}, "
                            f"not the one being debugged ({ctx.checkpoint_sha256[:12]})")
    what = fidelity(fmt, precision)  # fails clearly for formats without a simulation
    # The artefact's own int8 recipe is simulated (ExecuTorch, TFLite): simulating the default
    # recipe for a whole-recipe file would book the recipes' difference as conversion/runtime.
    recipe = recipe_of(manifest.details) if fmt in ("executorch", "tflite") else None
    if recipe:
        what = f"{what} [int8 recipe: {recipe}" + (", output shift taken out as at conversion]"
                                                    if recipe == "whole" else "]")
    clips = None
    if needs_calibration(fmt, precision):
        cs = calibration or find_calibration(folder, manifest.calibration_id, calibration_search)
        if cs is None:
            raise EchoEdgeError(f"{folder}: a {precision} artefact without a calibration id in its "
                                "manifest; cannot simulate it")
        if calibration is not None and manifest.calibration_id and cs.id != manifest.calibration_id:
            raise EchoEdgeError(f"{folder}: built with calibration set {manifest.calibration_id}, "
                                f"given {cs.id}")
        clips = cs.clips
    seconds: dict[str, float] = {}

    key = (fmt if fmt == "coreml" else "int8-pt2e", precision, manifest.calibration_id, recipe)
    if precision in ("fp32", "fp16"):
        sim_ef, sim_s = ctx.ef_reference, 0.0
    elif key in ctx.simulations:
        _, sim_ef, sim_s = ctx.simulations[key]
        seconds["simulation_cached"] = 1.0
    else:
        t0 = time.perf_counter()
        sim = simulate(ctx.deploy, fmt, precision, clips, progress=progress, recipe=recipe)
        seconds["simulation_build"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        sim_ef = ef_per_video(sim, ctx.videos, progress=progress, description=f"EF simulated {fmt} {precision}")
        seconds["simulation_eval"] = round(time.perf_counter() - t0, 2)
        sim_s = seconds["simulation_build"] + seconds["simulation_eval"]
        ctx.simulations[key] = (None, sim_ef, sim_s)  # the module is not kept: memory

    t0 = time.perf_counter()
    runner = open_runner(folder, threads=threads)
    try:
        art_ef = ef_per_video(runner, ctx.videos, progress=progress,
                              description=f"EF {folder.name} ({runner.runtime})")
    finally:
        runner.close()
    seconds["artefact_eval"] = round(time.perf_counter() - t0, 2)
    figures = decompose(ctx.ef_reference, sim_ef, art_ef)
    runtime = runner.runtime + ("" if getattr(runner, "measures_latency", True)
                                else " (reference interpreter, not the device runtime)")
    att = Attribution(
        artefact=folder.name, folder=str(folder), format=fmt, precision=precision, runtime=runtime,
        runtime_is_device=bool(getattr(runner, "measures_latency", True)), simulation=what,
        calibration_id=manifest.calibration_id, split=ctx.videos.split, videos=ctx.videos.names,
        clips_per_video=ctx.videos.clips_per_video,
        ef_reference=[float(v) for v in ctx.ef_reference], ef_simulated=[float(v) for v in sim_ef],
        ef_artefact=[float(v) for v in art_ef], seconds=seconds, **figures)
    att.check()
    return att


def attribute_artefacts(folders: Sequence[str | Path], checkpoint: str | Path, data: str | Path,
                        split: str = "VAL", videos: int | None = 12, clips_per_video: int = 1,
                        calibration_search: Sequence[str | Path] = (), threads: int = 2,
                        cache_dir: Path | None = None, progress: bool = False,
                        log: Callable[[str], None] = lambda s: None,
                        model: str = "e3net") -> list[Attribution]:
    """Attribute every artefact folder in `folders` on the same videos (one reference pass)."""
    if not folders:
        raise EchoEdgeError("no artefact folders to attribute")
    ctx = make_context(checkpoint, data, split, videos, clips_per_video, cache_dir, progress, model)
    out = []
    for f in folders:
        log(f"attribution: {Path(f).name}")
        out.append(attribute(f, ctx, calibration_search=calibration_search, threads=threads,
                             progress=progress))
    return out


def attribution_table(rows: Sequence[Attribution]) -> str:
    """A Markdown table: one row per artefact, EF points vs the fp32 reference."""
    lines = ["| artefact | runtime | mean \\|dEF\\| artefact | quantization (sim) | conversion/runtime "
             "| quantization share | signed: total = quant + conv |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        share = "-" if np.isnan(r.quantization_share) else f"{100 * r.quantization_share:.0f} %"
        lines.append(f"| {r.artefact} | {r.runtime} | {r.total:.3f} | {r.quantization:.3f} | "
                     f"{r.conversion:.3f} | {share} | {r.bias_total:+.3f} = {r.bias_quantization:+.3f} "
                     f"{r.bias_conversion:+.3f} |")
    return "\n".join(lines)


__all__: Sequence[str] = ("Attribution", "AttributionContext", "DEFINITIONS", "attribute",
                          "attribute_artefacts", "attribution_table", "decompose",
                          "find_calibration", "make_context")
