"""`echo-edge bridge ios`: what can be checked without a Swift compiler.

The bundle is a well-formed Swift package (a structural check of Package.swift against the folders it
names), its golden vectors are the Android bundle's byte for byte (one truth for both platforms), its
manifests agree with the golden index, and the Swift sources still mirror the Java core they copy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from echoedge.bridges.golden import read_golden
from echoedge.cli import main as cli_main
from echoedge.convert.artefact import read_manifest

SOURCES = Path("Sources/EchoEdgeBridge")
GOLDEN = Path("Tests/EchoEdgeBridgeTests/Resources/golden")
ANDROID_GOLDEN = Path("echo-edge-bridge/src/androidTest/assets/echoedge/golden")


def _strip_swift(text: str) -> str:
    """Swift source without comments and string literals (what bracket matching must ignore)."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def check_package_swift(root: Path) -> list[str]:
    """Problems with root/Package.swift: tools version, brackets, targets and their folders, resources."""
    problems = []
    text = (root / "Package.swift").read_text()
    if not re.match(r"// swift-tools-version:\s*5\.(9|\d\d)|// swift-tools-version:\s*6", text):
        problems.append("first line is not a swift-tools-version >= 5.9 comment")
    if "import PackageDescription" not in text or "let package = Package(" not in text:
        problems.append("not a PackageDescription manifest")
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for ch in _strip_swift(text):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            problems.append(f"unbalanced '{ch}'")
            break
    if stack:
        problems.append(f"unclosed {''.join(stack)}")
    targets = re.findall(r"\.(target|testTarget)\((.*?)\n\s*\)", text, flags=re.S)
    if not targets:
        problems.append("no targets")
    for kind, block in targets:
        named = re.search(r'name:\s*"([^"]+)"', block)
        if named is None:
            problems.append(f"a {kind} without a name")
            continue
        folder = root / ("Tests" if kind == "testTarget" else "Sources") / named.group(1)
        if not any(folder.glob("*.swift")):
            problems.append(f"{kind} {named.group(1)}: no Swift sources in {folder.relative_to(root)}")
        for res in re.findall(r'\.(?:copy|process)\("([^"]+)"\)', block):
            if not (folder / res).exists():
                problems.append(f"resource {res} of {named.group(1)} is missing")
    return problems


def test_package_swift_is_structurally_valid(ios_bundle: Path, tmp_path: Path):
    assert check_package_swift(ios_bundle) == []
    # The check can fail: a dropped parenthesis and a missing resource are both caught.
    broken = tmp_path / "pkg"
    (broken / SOURCES).mkdir(parents=True)
    (broken / SOURCES / "A.swift").write_text("")
    (broken / "Tests/EchoEdgeBridgeTests").mkdir(parents=True)
    (broken / "Tests/EchoEdgeBridgeTests/T.swift").write_text("")
    text = (ios_bundle / "Package.swift").read_text()
    (broken / "Package.swift").write_text(text.replace('"EchoEdgeBridge"])', '"EchoEdgeBridge"]', 1))
    problems = check_package_swift(broken)
    assert any("unclosed" in p or "unbalanced" in p for p in problems)
    assert any("Resources/artefacts" in p for p in problems)


def test_bundle_holds_sources_artefacts_tests_and_readme(ios_bundle: Path):
    for name in ("ClipBuffer", "Preprocessor", "Postprocessor", "Manifest", "GoldenVectors", "GoldenCheck",
                 "ModelRunner", "CoreMLRunner"):
        assert (ios_bundle / SOURCES / f"{name}.swift").is_file(), name
    assert (ios_bundle / "Tests/EchoEdgeBridgeTests/GoldenVectorsTests.swift").is_file()
    art = ios_bundle / SOURCES / "Resources/artefacts/executorch-fp32"
    assert (art / "model.pte").is_file() and read_manifest(art).format == "executorch"
    assert (ios_bundle / "Extras/ExecuTorchRunner.swift").is_file()  # a .pte is bundled
    readme = (ios_bundle / "README.md").read_text()
    assert "swift test" in readme and "not validated" in readme and "## Input contract" in readme
    record = json.loads((ios_bundle / "bundle.json").read_text())
    assert record["bundle"] == "echo-edge-ios" and record["artefacts"][0]["golden_status"] == "ok"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_golden_vectors_are_the_android_ones_and_match_the_manifests(ios_bundle: Path, android_bundle: Path):
    assert _digest(ios_bundle / GOLDEN) == _digest(android_bundle / ANDROID_GOLDEN)
    index = read_golden(ios_bundle / GOLDEN)
    for art in index["artefacts"]:
        m = read_manifest(ios_bundle / SOURCES / "Resources/artefacts" / art["name"])
        assert m.clip_spec == index["clip_spec"]
        assert (m.format, m.precision, m.model_file, m.model_sha256) == (
            art["format"], art["precision"], art["model_file"], art["model_sha256"])
        for exp in art["expected"]:
            size = (ios_bundle / GOLDEN / exp["outputs_file"]).stat().st_size
            assert size == 4 * sum(exp["output_sizes"])
            assert exp["output_sizes"][:3] == [1, 1, 1]
            assert exp["output_sizes"][3] == exp["output_sizes"][4] == 2 * len(exp["result"]["ed_landmarks_px"])


def _java_methods(path: Path) -> set[str]:
    return set(re.findall(r"public (?:static )?(?:final )?[\w\[\]<>.]+ (\w+)\(", path.read_text()))


def _swift_funcs(path: Path) -> set[str]:
    text = path.read_text()
    return set(re.findall(r"func (\w+)\(", text)) | set(re.findall(r"var (\w+):", text))


@pytest.mark.parametrize("name", ["Preprocessor", "ClipBuffer", "Postprocessor", "GoldenCheck"])
def test_swift_mirrors_the_java_core(name: str):
    from echoedge.bridges.android.bundle import package_data
    from echoedge.bridges.ios.bundle import SWIFT

    java = _java_methods(package_data("java", "core", "org/echoedge/bridge", f"{name}.java"))
    swift = _swift_funcs(SWIFT / SOURCES / f"{name}.swift")
    # Java-only conveniences: ARGB ints (Android Bitmap) and the JVM entry point / its file writers.
    java_only = {"toGrayArgb", "addArgb", "main", "flatten", "parse", "toString", "spec", "frameWidth",
                 "frameHeight", "timeMode", "ready", "passed", "close"}
    missing = {m for m in java - java_only if m not in swift}
    assert not missing, f"{name}.swift lacks {sorted(missing)}"
    # The arithmetic that must be identical is spelled identically.
    jtext = package_data("java", "core", "org/echoedge/bridge", f"{name}.java").read_text()
    stext = (SWIFT / SOURCES / f"{name}.swift").read_text()
    for token in ("(s + 1) / 3", "(hi - lo)", "- spec.mean) / spec.std", "1_000_000.0 / modelFps + 0.5",
                  "ef < 40.0 ? 0 : (ef < 50.0 ? 1 : 2)", "a.atol + a.rtol *", "(abs(x) + 0.5)"):
        if token.replace("abs(", "Math.abs(") in jtext or token in jtext:
            assert token in stext, (name, token)


def test_ios_refuses_a_folder_without_coreml_or_executorch(tmp_path: Path, capsys):
    (tmp_path / "artefacts").mkdir()
    rc = cli_main(["bridge", "ios", str(tmp_path / "artefacts"), "--out", str(tmp_path / "ios")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no coreml or executorch artefacts" in err[0]
    assert not (tmp_path / "ios").exists()
