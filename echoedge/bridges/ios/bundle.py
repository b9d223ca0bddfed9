"""`echo-edge bridge ios`: a Swift package a device engineer adds to an Xcode project.

    OUT/
      README.md, bundle.json
      Package.swift
      Sources/EchoEdgeBridge/*.swift                      mirror of the Java core + CoreMLRunner
      Sources/EchoEdgeBridge/Resources/artefacts/<name>/  .mlpackage / .pte + manifest.json
      Tests/EchoEdgeBridgeTests/GoldenVectorsTests.swift
      Tests/EchoEdgeBridgeTests/Resources/golden/         the same golden vectors as Android
      Extras/ExecuTorchRunner.swift                       (with a .pte) for apps that link ExecuTorch

Swift cannot be compiled here; the sources are kept a line-by-line mirror of the Java core, whose
arithmetic the JVM test holds to the Python reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from echoedge.bridges.bundling import (
    BUNDLE_FILE, BundleArtefact, artefact_table, attach_validation, bundle_record, copy_artefact,
    input_contract, select_artefacts, tree, write_bundle,
)
from echoedge.bridges.golden import GOLDEN_DIR, MODEL_FPS, GoldenArtefact, write_golden
from echoedge.bridges.summary import BundleSummary

FORMATS = ("coreml", "executorch")
TARGET = "EchoEdgeBridge"
SOURCES = Path("Sources") / TARGET
TESTS = Path("Tests") / f"{TARGET}Tests"
SWIFT = Path(__file__).resolve().parent / "swift"


def build_ios_bundle(artefacts_root: str | Path, out: str | Path, report: str | Path | None = None,
                     overwrite: bool = False, threads: int = 2, progress: bool = True) -> BundleSummary:
    """Bundle the .mlpackage and .pte artefacts under `artefacts_root` into a Swift package at `out`."""
    root = Path(artefacts_root)
    arts, spec = select_artefacts(root, FORMATS, "iOS")
    used_report = attach_validation(arts, root, Path(report) if report else None)
    result: dict = {}

    def build(tmp: Path) -> None:
        shutil.copy(SWIFT / "Package.swift", tmp / "Package.swift")
        shutil.copytree(SWIFT / SOURCES, tmp / SOURCES)
        shutil.copytree(SWIFT / TESTS, tmp / TESTS)
        paths = {}
        for a in arts:
            copy_artefact(a.folder, tmp / SOURCES / "Resources" / "artefacts" / a.name, a.manifest)
            paths[a.name] = str(SOURCES / "Resources" / "artefacts" / a.name)
        if any(a.manifest.format == "executorch" for a in arts):
            (tmp / "Extras").mkdir()
            shutil.copy(SWIFT / "Extras" / "ExecuTorchRunner.swift", tmp / "Extras" / "ExecuTorchRunner.swift")
        golden = write_golden(tmp / TESTS / "Resources" / GOLDEN_DIR, spec,
                              [GoldenArtefact(a.name, a.folder) for a in arts], threads=threads,
                              progress=progress).index
        result["golden"] = golden
        (tmp / BUNDLE_FILE).write_text(json.dumps(
            bundle_record("ios", spec, arts, golden, used_report, paths), indent=2) + "\n")
        (tmp / "README.md").touch()  # so the README's file tree lists itself
        (tmp / "README.md").write_text(_readme(tmp, Path(out).name, spec, arts, golden, used_report))

    write_bundle(Path(out), build, overwrite=overwrite)
    return BundleSummary(Path(out), arts, result["golden"], used_report)


def _readme(root: Path, name: str, spec, arts: list[BundleArtefact], golden: dict, report: Path | None) -> str:
    report_line = (f"Validated EF errors are copied from `{report}`." if report else
                   "No report.json was found next to the artefacts (or given with --report): the artefacts "
                   "are **not validated**; run `echo-edge validate` and rebuild the bundle.")
    coreml = [a for a in arts if a.manifest.format == "coreml"]
    not_run = [g for g in golden["artefacts"] if g["status"] != "ok"]
    not_run_line = ""
    if not_run:
        not_run_line = ("\nNo golden outputs could be computed for " + ", ".join(
            f"{g['name']} ({g['reason']})" for g in not_run) + " where this bundle was built; on macOS the "
            "XCTest still runs them and prints their EF, and checks the preprocessing exactly as for the others.\n")
    interp = [g["name"] for g in golden["artefacts"] if g["status"] == "ok" and g["runtime_measures_latency"] is False]
    if interp:
        not_run_line += ("\nThe golden outputs of " + ", ".join(interp) + " come from echo-edge's reference interpreter of "
                         "the model's MIL program (the validation runner where Core ML itself cannot run); the XCTest "
                         "compares Core ML on the device against them within the Core ML tolerance.\n")
    example = (f'let folder = BundledArtefacts.folder("{coreml[0].name}")!\n'
               "let runner = try CoreMLRunner(folder: folder)" if coreml else
               f'let folder = BundledArtefacts.folder("{arts[0].name}")!\n'
               "let runner = try ExecuTorchRunner(folder: folder)   // Extras/ExecuTorchRunner.swift")
    return f"""# echo-edge iOS bridge

Echo-E3Net ejection-fraction model for iOS: {', '.join(a.name for a in arts)}, the input contract,
Swift code that turns probe frames into the model's input and its outputs into EF, and golden vectors
that prove on a device that the app computes what validation computed.

## Artefacts

{artefact_table(arts, golden)}

{report_line}
{not_run_line}
{input_contract(spec, arts, MODEL_FPS)}

## Integrate

Add this folder as a local Swift package (Xcode: File > Add Package Dependencies > Add Local), and
link the `EchoEdgeBridge` library. Core ML artefacts run through `CoreMLRunner` (the .mlpackage is
compiled on first load). A `.pte` is bundled for ExecuTorch on iOS: add ExecuTorch's Swift package
(`https://github.com/pytorch/executorch`, branch `swiftpm-<version>`, products `executorch`,
`backend_xnnpack`, `kernels_optimized`) to the app and `Extras/ExecuTorchRunner.swift` to its target.

```swift
import EchoEdgeBridge

{example}
let buffer = ClipBuffer(spec: runner.manifest.clipSpec, modelFps: {MODEL_FPS:g})   // or modelFps: 0: frame mode
// for every frame: bytes as delivered (.gray8, .rgb888, .bgr888, .rgba8888, .bgra8888)
try buffer.add(pixels, width: w, height: h, format: .bgra8888, timestampUs: t)
if buffer.ready {{
    let out = try runner.run(try buffer.clip())
    let r = try Postprocessor.postprocess(out, frameWidth: buffer.frameWidth, frameHeight: buffer.frameHeight)
    // r.ef, r.bandLabel, r.edv, r.esv, r.edLandmarksPx[k] = [x, y] in pixels of your frame
}}
```

The Swift sources mirror the Android bridge's pure-Java core line by line (same arithmetic, same
order), and the Java core is held to the Python reference on the same golden vectors.

## Golden vectors and tests

`{TESTS}/Resources/{GOLDEN_DIR}/`: {len(golden['clips'])} clips of raw frames as an app sees them
({', '.join(c['id'] for c in golden['clips'])}), the preprocessed tensor each must become (float32,
within {golden['input_tolerance']:g}), and every artefact's outputs as computed by the validation runner, with its
tolerance. On a Mac with Xcode 15 or later:

```sh
swift test
```

runs GoldenVectorsTests: preprocessing and post-processing against Python, the bundled manifests'
ClipSpec, and each Core ML artefact against its golden outputs (on the CPU, `.cpuOnly`).

## Files

```
{tree(root, name)}
```
"""
