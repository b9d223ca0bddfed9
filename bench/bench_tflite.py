"""TFLite fp32 / fp16 / int8 against eager fp32 and ONNX Runtime (fp32 and its own static int8):
latency per interpreter, file size, conversion time, and EF drift vs the eager fp32 reference.

One process, one clip (batch 1), a fixed thread count (default 2) for every runner. Warm-up runs
are discarded, then the median and p90 of --runs timed calls, taken round-robin across the runners
(this machine may be shared; a load burst then hits every runner alike). Each .tflite file runs in
both interpreters (tf.lite.Interpreter and ai_edge_litert), and each row says which.

ONNX Runtime int8 is what a user might pick instead: `onnxruntime.quantization.quantize_static`
(QDQ, per-channel int8 weights, int8 activations) on the same ONNX graph the TFLite files come
from, calibrated on the same echo calibration clips.

EF drift: per-video EF with `evaluate`'s protocol (--clips evenly spaced clips per video) on the
first --videos TEST videos of the default dataset, each artefact against the eager fp32 reference.

    python bench/bench_tflite.py                            # shipped checkpoint (paper config)
    python bench/bench_tflite.py --keep /tmp/tfl --reuse    # time again without reconverting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from echoedge.validate.agreement import delta_stats
from echoedge.validate.latency import round_robin


def _drift(ef: np.ndarray, ref: np.ndarray) -> Any:
    return delta_stats(ref, ef)


PRECISIONS = ("fp32", "fp16", "int8")


class OrtRunner:
    """An ONNX file in ONNX Runtime (CPU), batch 1 looped, as a Runner-like callable."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        per = [self.sess.run(None, {self.name: np.ascontiguousarray(c[None])}) for c in batch]
        return [np.concatenate([p[k] for p in per]) for k in range(len(per[0]))]

    def close(self) -> None:
        self.sess = None


def ort_static_int8(src: Path, dst: Path, clips: np.ndarray, input_name: str) -> float:
    """quantize_static (QDQ, per-channel int8 weights, int8 activations); returns seconds."""
    from onnxruntime.quantization import (
        CalibrationDataReader, QuantFormat, QuantType, quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(clips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            c = next(self.it, None)
            return None if c is None else {input_name: np.ascontiguousarray(c[None])}

    t0 = time.perf_counter()
    pre = dst.with_name("pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    import torch

    from echoedge.calibration import build_calibration_set
    from echoedge.convert import tflite as tfl
    from echoedge.convert.tflite_interpreter import DEFAULT_INTERPRETER, INTERPRETERS
    from echoedge.convert.artefact import read_manifest
    from echoedge.data.cache import FrameCache
    from echoedge.data.default import default_dataset
    from echoedge.data.echonet import EchoNet
    from echoedge.model.checkpoint import SHIPPED, load_checkpoint
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.evaluate import predict_videos
    from echoedge.validate.runner import EagerRunner
    from echoedge.validate.tflite_runner import TFLiteRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--data", type=Path, default=None, help="default: the built-in synthetic set")
    ap.add_argument("--calibration", default="ef-stratified")
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--videos", type=int, default=50, help="TEST videos for the EF drift")
    ap.add_argument("--clips", type=int, default=2, help="clips per video")
    ap.add_argument("--runs", type=int, default=20, help="timed calls (>= 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="write the artefacts here instead of a temp dir")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse artefacts already there (conversion times from their manifests)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error("--runs must be >= 20")
    if args.reuse and args.keep is None:
        ap.error("--reuse needs --keep DIR")

    torch.set_num_threads(args.threads)
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    data = args.data or default_dataset()
    reader = EchoNet(data)
    frames = FrameCache(reader, None)
    test = reader.records("TEST")[: args.videos]
    calib = build_calibration_set(data, spec, strategy=args.calibration, size=args.calib_size,
                                  seed=0, progress=False)
    example = torch.from_numpy(calib.clips[:2].copy())
    t0 = time.perf_counter()
    form = to_deploy_form(ck.model, example)
    deploy_s = time.perf_counter() - t0

    tmp = tempfile.TemporaryDirectory(prefix="bench-tflite-") if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    root.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    convert_s: dict[str, float] = {}
    for p in PRECISIONS:
        folder = root / f"tflite-{p}"
        if args.reuse and (folder / "manifest.json").is_file():
            folders[p] = folder
            t = read_manifest(folder).details["timings_s"]
            convert_s[p] = t["tflite_convert"] + t["run_check"]
            continue
        t0 = time.perf_counter()
        folders[p] = tfl.export_tflite(form, spec, folder, p, calib if p == "int8" else None, ck.sha256,
                                       progress=True, overwrite=args.keep is not None)
        convert_s[p] = time.perf_counter() - t0
    front = read_manifest(folders["fp32"]).details["timings_s"]
    front_s = front["onnx_export"] + front["onnx2tf"]

    # The ONNX graph the TFLite files came from, for ONNX Runtime (rebuilt when reusing).
    onnx_dir = root / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    onnx_fp32 = onnx_dir / "model.onnx"
    if not (args.reuse and onnx_fp32.is_file()):
        from echoedge.convert.onnx_export import export_onnx

        export_onnx(form, calib.clips[:1].copy(), onnx_fp32)
    onnx_int8 = onnx_dir / "model.int8.onnx"
    ort_q_s = None
    if not (args.reuse and onnx_int8.is_file()):
        ort_q_s = ort_static_int8(onnx_fp32, onnx_int8, calib.clips, "clip")

    reference = EagerRunner(ck.model, threads=args.threads)
    runners: dict[str, Any] = {"eager fp32 (3D reference)": reference}
    for p in PRECISIONS:
        for kind in INTERPRETERS:
            runners[f".tflite {p} [{kind}]"] = TFLiteRunner(folders[p], threads=args.threads, interpreter=kind)
    runners["onnxruntime fp32"] = OrtRunner(onnx_fp32, args.threads)
    runners["onnxruntime int8 (static QDQ)"] = OrtRunner(onnx_int8, args.threads)
    clip = calib.clips[:1].copy()
    rows = {k: v.to_dict() for k, v in round_robin(runners, clip, args.runs, args.warmup).items()}
    base = rows["eager fp32 (3D reference)"]["p50_ms"]

    def per_video_ef(infer: Any, what: str) -> np.ndarray:
        preds = predict_videos(infer, test, frames, spec, clips_per_video=args.clips,
                               progress=True, description=what)
        return np.array([p.ef for p in preds])

    ref_ef = per_video_ef(reference, "eager reference")
    drifts: dict[str, dict[str, float]] = {}
    for p in PRECISIONS:
        drifts[f".tflite {p}"] = _drift(per_video_ef(runners[f".tflite {p} [{DEFAULT_INTERPRETER}]"], p), ref_ef)
    drifts["onnxruntime fp32"] = _drift(per_video_ef(runners["onnxruntime fp32"], "ort fp32"), ref_ef)
    drifts["onnxruntime int8 (static QDQ)"] = _drift(
        per_video_ef(runners["onnxruntime int8 (static QDQ)"], "ort int8"), ref_ef)

    versions = read_manifest(folders["fp32"]).tool_versions
    print()
    print(f"checkpoint {args.checkpoint.name} ({ck.config.name}), input {spec.input_shape(1)}, "
          f"batch 1, {args.threads} threads, {args.warmup} warm-up + {args.runs} timed runs (round-robin)")
    print("torch {torch}, tensorflow-cpu {tensorflow-cpu}, ai-edge-litert {ai-edge-litert}, onnx2tf "
          "{onnx2tf}, onnxruntime {onnxruntime}".format(**versions))
    print(f"deploy form built in {deploy_s:.1f} s; ONNX + onnx2tf SavedModel (shared by the precisions) "
          f"{front_s:.0f} s; calibration {calib.id} ({len(calib)} clips, {args.calibration})")
    head = f"{'':<34} {'median ms':>9} {'p90 ms':>7} {'vs eager':>8} {'MB':>6} {'conv s':>6}"
    print(head)
    print("-" * len(head))
    sizes = {f".tflite {p}": read_manifest(folders[p]).model_bytes / 1e6 for p in PRECISIONS}
    sizes["onnxruntime fp32"] = onnx_fp32.stat().st_size / 1e6
    sizes["onnxruntime int8 (static QDQ)"] = onnx_int8.stat().st_size / 1e6
    for name, row in rows.items():
        key = name.split(" [")[0]
        size = f"{sizes[key]:.2f}" if key in sizes else "-"
        p = key.removeprefix(".tflite ")
        conv = (f"{convert_s[p]:.0f}" if p in convert_s else
                (f"{ort_q_s:.0f}" if name.startswith("onnxruntime int8") and ort_q_s else "-"))
        print(f"{name:<34} {row['p50_ms']:9.1f} {row['p90_ms']:7.1f} {base / row['p50_ms']:7.2f}x "
              f"{size:>6} {conv:>6}")
    print()
    print(f"EF drift vs the eager fp32 reference, {len(test)} TEST videos x {args.clips} clips "
          f"(.tflite rows run in the {DEFAULT_INTERPRETER} interpreter)")
    head = f"{'artefact':<34} {'|dEF| mean':>10} {'p95':>6} {'max':>6}"
    print(head)
    print("-" * len(head))
    for key, d in drifts.items():
        print(f"{key:<34} {d.mean_abs:10.3f} {d.p95_abs:6.3f} {d.max_abs:6.3f}")
    print()
    for p in PRECISIONS:
        m = read_manifest(folders[p])
        d = m.details
        left = ", ".join(f"{op} x{n}" for op, n in sorted(d["ops_left_in_float"].items(), key=lambda kv: -kv[1]))
        print(f".tflite {p}: {d['route']}; int8 op fraction {d['int8_op_fraction']:.2f}; "
              f"input {d['input_layout']}; float ops: {left if p == 'int8' else '(all)'}")
    int8_best = min(rows[f".tflite int8 [{k}]"]["p50_ms"] for k in INTERPRETERS)
    ort_int8 = rows["onnxruntime int8 (static QDQ)"]["p50_ms"]
    print(f"\ngoals: int8 .tflite {base / int8_best:.2f}x eager fp32 (goal >= 3x), "
          f"{ort_int8 / int8_best:.2f}x ONNX Runtime int8 (goal > 1x), "
          f"int8 mean |dEF| {drifts['.tflite int8'].mean_abs:.3f} (goal <= 0.5)")
    faster = {p: min(INTERPRETERS, key=lambda k: rows[f".tflite {p} [{k}]"]["p50_ms"]) for p in PRECISIONS}
    print(f"faster interpreter per file: {faster} (default: {DEFAULT_INTERPRETER})")
    if args.json:
        args.json.write_text(json.dumps({"latency": rows, "drift": {k: asdict(v) for k, v in drifts.items()}, "convert_s": convert_s,
                                         "front_end_s": front_s, "threads": args.threads,
                                         "runs": args.runs, "videos": len(test), "clips": args.clips},
                                        indent=2))
    for r in runners.values():
        r.close()
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
