"""Per-video EF evaluation: the clip protocol shared by `evaluate` and artefact validation.

Protocol: each video contributes `clips_per_video` clips whose starts are evenly spaced over the
video (first and last start included; a video shorter than one clip gives one zero-padded clip);
the video's EF, EDV and ESV are the means over its clips. The EchoNet reference averages over
every start; N evenly spaced starts keep CPU evaluation affordable and converge to the same value
(pass clips_per_video=None for all starts). Inference goes through a plain callable on a
normalised clip batch, so the eager model and every exported artefact are measured alike.

EF-only data (videos without tracings) gives EF, EDV and ESV metrics as usual; the landmark error
is then None and printed as `NO_TRACINGS`, never as a number. The always-mean baseline comes from
`model.baseline` (the checkpoint's training EF mean first).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoedge.data.clipspec import ClipSpec
from echoedge.model.baseline import EFBaseline, resolve_baseline
from echoedge.model.metrics import EFMetrics, ef_metrics

Infer = Callable[[np.ndarray], Sequence[np.ndarray]]
# How a landmark metric reads when no evaluated video is traced (reports use the same words).
NO_TRACINGS = "n/a (no tracings)"
NO_TRACED_FRAME_SEEN = "n/a (no clip holds a traced frame)"
# What an EF-only model (a video ResNet) leaves out: EDV, ESV, landmarks.
NOT_PRODUCED = "– (not produced by this model)"


def landmark_text(value: float | None, n_traced: int | None, spec: str = ".2f", unit: str = " px"
                  ) -> str:
    """A landmark figure for people: the number, or n/a with the reason."""
    if value is not None:
        return f"{format(value, spec)}{unit}"
    return NO_TRACINGS if not n_traced else NO_TRACED_FRAME_SEEN


@dataclass
class VideoPrediction:
    file_name: str
    split: str
    ef_true: float
    edv_true: float
    esv_true: float
    ef: float
    edv: float | None  # None: not produced by this model (an EF-only video ResNet)
    esv: float | None
    n_clips: int
    ef_clip_sd: float  # spread of EF over the video's clips
    ed_landmarks: list | None = None  # mean over clips that contain the traced ED frame
    es_landmarks: list | None = None


def eager_infer(model: Any, device: str = "cpu") -> Infer:
    """Wrap a torch module as an Infer callable (inference mode, float32 in and out)."""
    import torch

    model = model.to(device).eval()

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return [o.float().cpu().numpy() for o in out]

    return infer


def predict_videos(
    infer: Infer,
    records: Sequence[Any],
    frames_source: Callable[[Any], np.ndarray],
    spec: ClipSpec,
    clips_per_video: int | None = 4,
    batch_size: int = 8,
    progress: bool = True,
    description: str = "evaluating",
) -> list[VideoPrediction]:
    from echoedge.data.clips import clip_contains, eval_starts, extract_clip

    from rich.progress import Progress

    preds: list[VideoPrediction] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(records))
        for rec in records:
            frames = frames_source(rec)
            starts = eval_starts(len(frames), spec, clips_per_video)
            # Echo-E3Net returns 5 outputs; an EF-only model (the video ResNets) returns (ef,):
            # what it does not produce stays None, never a made-up number.
            outs: list[list[np.ndarray]] = [[] for _ in range(5)]
            for i in range(0, len(starts), batch_size):
                clips = np.stack([extract_clip(frames, s, spec) for s in starts[i : i + batch_size]])
                for k, o in enumerate(infer(clips)):
                    outs[k].append(np.asarray(o).reshape(len(clips), *np.shape(o)[1:]))
            ef, edv, esv, ed_lm, es_lm = (np.concatenate(o) if o else None for o in outs)
            preds.append(
                VideoPrediction(
                    file_name=rec.file_name,
                    split=rec.split,
                    ef_true=float(rec.ef),
                    edv_true=float(rec.edv),
                    esv_true=float(rec.esv),
                    ef=float(ef.mean()),
                    edv=None if edv is None else float(edv.mean()),
                    esv=None if esv is None else float(esv.mean()),
                    n_clips=len(starts),
                    ef_clip_sd=float(ef.std()),
                    ed_landmarks=_landmarks_over(ed_lm, starts, rec.ed_frame, spec, clip_contains),
                    es_landmarks=_landmarks_over(es_lm, starts, rec.es_frame, spec, clip_contains),
                )
            )
            bar.advance(task)
    return preds


def _landmarks_over(lm: np.ndarray | None, starts: list[int], frame: int | None, spec: ClipSpec,
                    contains: Callable[[int, int, ClipSpec], bool]) -> list | None:
    if frame is None or lm is None:
        return None
    sel = [i for i, s in enumerate(starts) if contains(s, frame, spec)]
    return lm[sel].mean(axis=0).round(5).tolist() if sel else None


@dataclass
class EvalResult:
    split: str
    n_videos: int
    clips_per_video: int | None
    metrics: EFMetrics
    baseline_mae: float | None  # always predicting the baseline EF; None: no baseline
    train_mean_ef: float | None  # the baseline EF (the training EF mean), None: no baseline
    baseline: str  # EFBaseline.describe(): the EF and where it came from, or why there is none
    edv_mae: float | None  # None: the model produces no EDV / ESV
    esv_mae: float | None
    landmark_error_px: float | None  # None: no traced frame evaluated (see n_traced)
    n_traced: int  # evaluated videos with tracings
    checkpoint: str
    checkpoint_sha256: str
    data_fingerprint: str
    predictions: list[VideoPrediction] = field(default_factory=list)
    ef_only: bool = False  # the model produces EF alone (EDV, ESV, landmarks: not produced)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = self.metrics.to_dict()
        return d

    def describe(self) -> str:
        m = self.metrics
        conf = "\n".join(
            f"    {band:>6} " + " ".join(f"{c:5d}" for c in row)
            for band, row in zip(("<40", "40-49", ">=50"), m.band_confusion)
        )
        lm = NOT_PRODUCED if self.ef_only else landmark_text(self.landmark_error_px, self.n_traced)
        base = f"baseline: {self.baseline}" + (
            f": MAE {self.baseline_mae:.2f}" if self.baseline_mae is not None else "")
        return (
            f"{self.split}: {self.n_videos} videos, {self.clips_per_video or 'all'} clips/video\n"
            f"  EF MAE {m.mae:.2f}  RMSE {m.rmse:.2f}  R2 {m.r2:.3f}  bias {m.bias:+.2f}\n"
            f"  {base}\n"
            f"  {_volumes_text(self.edv_mae, self.esv_mae)}  landmarks {lm}\n"
            f"  EF band agreement {100 * m.band_agreement:.1f}%  (rows truth, cols predicted)\n"
            f"           <40 40-49  >=50\n{conf}"
        )


def _volumes_text(edv_mae: float | None, esv_mae: float | None) -> str:
    if edv_mae is None and esv_mae is None:
        return f"EDV/ESV {NOT_PRODUCED}"
    return f"EDV MAE {edv_mae:.1f} mL  ESV MAE {esv_mae:.1f} mL"


def landmark_error_px(preds: Sequence[VideoPrediction], records: Sequence[Any], spec: ClipSpec) -> float | None:
    """Mean Euclidean landmark error in pixels over traced frames covered by some clip."""
    by_name = {r.file_name: r for r in records}
    errs = []
    scale = np.array([spec.width, spec.height], dtype=np.float64)
    for p in preds:
        r = by_name[p.file_name]
        for pred_lm, true_lm in ((p.ed_landmarks, r.ed_landmarks), (p.es_landmarks, r.es_landmarks)):
            if pred_lm is not None and true_lm is not None:
                d = (np.asarray(pred_lm) - np.asarray(true_lm)) * scale
                errs.append(np.linalg.norm(d, axis=-1).mean())
    return float(np.mean(errs)) if errs else None


def count_traced(preds: Sequence[VideoPrediction], records: Sequence[Any]) -> int:
    """How many of the predicted videos have tracings (landmark metrics are over those)."""
    traced = {r.file_name for r in records if r.has_tracings}
    return sum(p.file_name in traced for p in preds)


def summarise(preds: Sequence[VideoPrediction], records: Sequence[Any], spec: ClipSpec,
              baseline: EFBaseline, split: str, clips_per_video: int | None,
              checkpoint: str = "", checkpoint_sha256: str = "", data_fingerprint: str = "") -> EvalResult:
    truth = np.array([p.ef_true for p in preds])
    pred = np.array([p.ef for p in preds])

    def vol_mae(t: str, q: str) -> float | None:
        if any(getattr(p, q) is None for p in preds):
            return None  # not produced by this model
        a = np.array([getattr(p, t) for p in preds])
        b = np.array([getattr(p, q) for p in preds])
        ok = np.isfinite(a)
        return float(np.abs(a[ok] - b[ok]).mean()) if ok.any() else float("nan")

    return EvalResult(
        split=split,
        n_videos=len(preds),
        clips_per_video=clips_per_video,
        metrics=ef_metrics(truth, pred),
        baseline_mae=baseline.mae(truth),
        train_mean_ef=baseline.ef,
        baseline=baseline.describe(),
        edv_mae=vol_mae("edv_true", "edv"),
        esv_mae=vol_mae("esv_true", "esv"),
        landmark_error_px=landmark_error_px(preds, records, spec),
        n_traced=count_traced(preds, records),
        checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        data_fingerprint=data_fingerprint,
        predictions=list(preds),
        ef_only=bool(preds) and all(p.edv is None for p in preds),
    )


def scatter_plot(result: EvalResult, out: str | Path, title: str = "") -> Path:
    """Predicted vs true EF with the identity line and the clinical band limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    truth = np.array([p.ef_true for p in result.predictions])
    pred = np.array([p.ef for p in result.predictions])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(truth, pred, s=10, alpha=0.7)
    lo, hi = 0.0, 100.0
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    for v in (40, 50):
        ax.axvline(v, color="0.8", lw=0.8)
        ax.axhline(v, color="0.8", lw=0.8)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true EF (%)", ylabel="predicted EF (%)")
    m = result.metrics
    ax.set_title(title or f"{result.split}: MAE {m.mae:.2f}, RMSE {m.rmse:.2f}, R² {m.r2:.2f}", fontsize=9)
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def write_json(obj: Any, out: str | Path) -> Path:
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, out)
    return out


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "TEST",
    clips_per_video: int | None = 4,
    videos: int | None = None,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    expect_config: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    require_tracings: bool = False,
    model: str = "e3net",
) -> EvalResult:
    """`echo-edge evaluate`: per-video metrics of a checkpoint on one split, plus a baseline.

    Only `split` must have videos; `require_tracings` applies EchoNet-Dynamic's rule. `model`
    names the checkpoint's model (echoedge.model.registry); `expect_config` is Echo-E3Net's."""
    from echoedge.data.cache import FrameCache
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import load_checkpoint
    from echoedge.model.config import check_clip_spec
    from echoedge.model.registry import LoadedModel, get_model_entry, load

    entry = get_model_entry(model)
    if entry.family == "e3net":
        raw = load_checkpoint(checkpoint, expect_config=expect_config)
        check_clip_spec(raw.config, raw.spec)
        ck = LoadedModel(entry, raw.model, raw.spec, raw.path, raw.sha256, dict(raw.meta), raw)
    else:
        ck = load(model, checkpoint)
    reader = EchoNet(Path(data), require_tracings=require_tracings)
    records = reader.records(split)
    if videos:
        records = records[:videos]
    baseline = resolve_baseline(ck, reader)
    cache = FrameCache(reader, Path(cache_dir) if cache_dir else None)
    preds = predict_videos(eager_infer(ck.runnable), records, cache, ck.spec, clips_per_video,
                           batch_size=batch_size, progress=progress, description=f"evaluating {split}")
    result = summarise(preds, records, ck.spec, baseline, split, clips_per_video,
                       checkpoint=str(checkpoint), checkpoint_sha256=ck.sha256,
                       data_fingerprint=reader.fingerprint())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(result.to_dict(), out / "results.json")
        scatter_plot(result, out / "scatter.png")
    return result
