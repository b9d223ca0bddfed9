"""`echo-edge bridge android`: a Gradle library module a device engineer drops into an app.

    OUT/
      README.md                 integration, the input contract in words, each artefact's validated EF error
      bundle.json               what is inside (machine-readable)
      echo-edge-bridge/         the Gradle module
        build.gradle
        src/main/AndroidManifest.xml
        src/main/java/org/echoedge/bridge/...           pure-Java core (no Android dependency)
        src/main/java/org/echoedge/bridge/executorch/   ExecuTorch adapter (when a .pte is bundled)
        src/main/java/org/echoedge/bridge/litert/       LiteRT adapter (when a .tflite is bundled)
        src/main/assets/echoedge/artefacts/<name>/      model file + manifest.json, per artefact
        src/androidTest/assets/echoedge/golden/         golden vectors (test APK only: no app bloat)
        src/androidTest/java/org/echoedge/bridge/GoldenVectorsInstrumentedTest.java
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

FORMATS = ("executorch", "tflite")
MODULE = "echo-edge-bridge"
JAVA_PACKAGE = Path("org/echoedge/bridge")
ASSETS = Path("src/main/assets/echoedge")
TEST_ASSETS = Path("src/androidTest/assets/echoedge")
# Maven coordinates of the runtimes' Android libraries; the version is the one that wrote the
# file where the manifest records it (keep the app's runtime at or after it).
RUNTIME_LIBS = {
    "executorch": ("org.pytorch:executorch-android", "executorch"),
    "tflite": ("com.google.ai.edge.litert:litert", "ai-edge-litert"),
}
ADAPTERS = {"executorch": "executorch", "tflite": "litert"}
OPEN_RUNNER = {
    "executorch": 'if ("executorch".equals(format)) return new org.echoedge.bridge.executorch.ExecuTorchRunner(dir, 2);',
    "tflite": 'if ("tflite".equals(format)) return new org.echoedge.bridge.litert.LiteRtRunner(dir, 2);',
}


def build_android_bundle(artefacts_root: str | Path, out: str | Path, report: str | Path | None = None,
                         overwrite: bool = False, threads: int = 2, progress: bool = True) -> BundleSummary:
    """Bundle the .pte and .tflite artefacts under `artefacts_root` into an Android module at `out`."""
    root = Path(artefacts_root)
    arts, spec = select_artefacts(root, FORMATS, "Android")
    used_report = attach_validation(arts, root, Path(report) if report else None)
    result: dict = {}

    def build(tmp: Path) -> None:
        mod = tmp / MODULE
        java = mod / "src/main/java"
        _copy_java(package_data("java", "core"), java)
        formats = sorted({a.manifest.format for a in arts})
        for fmt in formats:
            _copy_java(package_data("java", ADAPTERS[fmt]), java)
        paths = {}
        for a in arts:
            copy_artefact(a.folder, mod / ASSETS / "artefacts" / a.name, a.manifest)
            paths[a.name] = str(Path(MODULE) / ASSETS / "artefacts" / a.name)
        golden = write_golden(mod / TEST_ASSETS / GOLDEN_DIR, spec,
                              [GoldenArtefact(a.name, a.folder) for a in arts], threads=threads,
                              progress=progress).index
        result["golden"] = golden
        (mod / "src/main").mkdir(parents=True, exist_ok=True)
        shutil.copy(package_data("templates", "AndroidManifest.xml"), mod / "src/main/AndroidManifest.xml")
        (mod / "build.gradle").write_text(_gradle(arts))
        test = mod / "src/androidTest/java" / JAVA_PACKAGE / "GoldenVectorsInstrumentedTest.java"
        test.parent.mkdir(parents=True, exist_ok=True)
        test.write_text(package_data("templates", "GoldenVectorsInstrumentedTest.java").read_text().replace(
            "@OPEN_RUNNERS@", "\n".join(f"        {OPEN_RUNNER[f]}" for f in formats)))
        (tmp / BUNDLE_FILE).write_text(json.dumps(
            bundle_record("android", spec, arts, golden, used_report, paths), indent=2) + "\n")
        (tmp / "README.md").touch()  # so the README's file tree lists itself
        (tmp / "README.md").write_text(_readme(tmp, Path(out).name, spec, arts, golden, used_report))

    write_bundle(Path(out), build, overwrite=overwrite)
    return BundleSummary(Path(out), arts, result["golden"], used_report)


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside this package (Java sources, templates)."""
    return Path(__file__).resolve().parent.joinpath(*parts)


def _copy_java(src: Path, dest: Path) -> None:
    for f in sorted(src.rglob("*.java")):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)


def _gradle(arts: list[BundleArtefact]) -> str:
    deps = []
    for fmt in sorted({a.manifest.format for a in arts}):
        coord, tool = RUNTIME_LIBS[fmt]
        versions = {a.manifest.tool_versions.get(tool) for a in arts if a.manifest.format == fmt}
        versions.discard(None)
        version = sorted(versions)[-1] if versions else "+"
        deps.append(f"    // {fmt} files here were written with {tool} {version}; use the Android "
                    f"release of the same line or later.")
        deps.append(f"    implementation '{coord}:{version}'")
    template = package_data("templates", "build.gradle.in").read_text()
    return template.replace("@RUNTIME_DEPENDENCIES@", "\n".join(deps))


def _readme(root: Path, name: str, spec, arts: list[BundleArtefact], golden: dict, report: Path | None) -> str:
    fmt = {a.manifest.format for a in arts}
    first = arts[0]
    runner_line = ("new ExecuTorchRunner(dir, 2)" if first.manifest.format == "executorch"
                   else "new LiteRtRunner(dir, 2)")
    report_line = (f"Validated EF errors are copied from `{report}`." if report else
                   "No report.json was found next to the artefacts (or given with --report): the artefacts "
                   "are **not validated**; run `echo-edge validate` and rebuild the bundle.")
    return f"""# echo-edge Android bridge

Echo-E3Net ejection-fraction model for Android: {', '.join(a.name for a in arts)}, the input contract,
Java code that turns probe frames into the model's input and its outputs into EF, and golden vectors
that prove on a device that the app computes what validation computed.

## Artefacts

{artefact_table(arts, golden)}

{report_line}

{input_contract(spec, arts, MODEL_FPS)}

## Integrate

1. Copy `{MODULE}/` into your project; in `settings.gradle`: `include ':{MODULE}'`; in the app:
   `implementation project(':{MODULE}')`. Runtimes: {', '.join(sorted(fmt))} (see `{MODULE}/build.gradle`).
2. The artefacts are assets under `echoedge/artefacts/<name>/`. ExecuTorch's `Module.load` and
   LiteRT's `Interpreter(File)` take a path: copy the folder to `context.getFilesDir()` once (the
   instrumentation test shows how).
3. Feed frames and run:

```java
Manifest m = Manifest.read(new File(dir, "manifest.json"));
ClipBuffer buffer = new ClipBuffer(m.clipSpec, {MODEL_FPS:g});          // or new ClipBuffer(m.clipSpec): frame mode
ModelRunner runner = {runner_line};
// for every frame: pixels as delivered (GRAY8, RGB888, BGR888, RGBA8888, BGRA8888, or Bitmap ints)
buffer.add(pixels, width, height, Preprocessor.PixelFormat.RGBA8888, timestampUs);
if (buffer.ready()) {{
    float[][] out = runner.run(buffer.clip());
    Postprocessor.EchoResult r = Postprocessor.postprocess(out, buffer.frameWidth(), buffer.frameHeight());
    // r.ef, r.bandLabel, r.edv, r.esv, r.edLandmarksPx[k] = {{x, y}} in pixels of your frame
}}
```

The pure-Java core (`org.echoedge.bridge`: ClipBuffer, Preprocessor, Postprocessor, Manifest, Json,
GoldenVectors, GoldenCheck) has no Android dependency; the adapters are
`org.echoedge.bridge.executorch.ExecuTorchRunner` and `org.echoedge.bridge.litert.LiteRtRunner`.

## Golden vectors

`{MODULE}/{TEST_ASSETS}/{GOLDEN_DIR}/`: {len(golden['clips'])} clips of raw frames as an app sees them
({', '.join(c['id'] for c in golden['clips'])}), the preprocessed tensor each must become (float32,
within {golden['input_tolerance']:g}), and every artefact's outputs as computed by the validation runner, with
its tolerance. `index.json` describes them; tensors are raw little-endian files.

- On a device: `./gradlew :{MODULE}:connectedAndroidTest` (GoldenVectorsInstrumentedTest).
- On any JVM (preprocessing and post-processing only):

```sh
cd {MODULE}
javac -d build/jvm src/main/java/org/echoedge/bridge/*.java
java -cp build/jvm org.echoedge.bridge.GoldenCheck {TEST_ASSETS}/{GOLDEN_DIR}
```

## Files

```
{tree(root, name)}
```
"""
