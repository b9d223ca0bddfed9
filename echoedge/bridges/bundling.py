"""What both bridges share: picking artefacts, reading their validated EF error, the input
contract in words, and writing a bundle folder all-or-nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from echoedge.convert.artefact import ArtefactManifest, find_artefacts, read_manifest, verify_artefact
from echoedge.data.clipspec import ClipSpec
from echoedge.errors import EchoEdgeError, first_line

BUNDLE_FILE = "bundle.json"  # marks a folder as a bridge bundle (what --overwrite may replace)
BUNDLE_VERSION = 1
REPORT_NAME = "report.json"


@dataclass
class Validation:
    """An artefact's validated EF error, copied from report.json (or why there is none)."""

    validated: bool
    text: str  # one line for the README
    ef_mae: float | None = None  # vs ground truth, EF points
    ef_vs_reference: float | None = None  # mean |EF - EF_fp32|, EF points
    status: str | None = None
    report: str | None = None


@dataclass
class BundleArtefact:
    name: str  # folder name, e.g. executorch-int8
    folder: Path
    manifest: ArtefactManifest
    validation: Validation


def select_artefacts(root: Path, formats: tuple[str, ...], platform: str) -> tuple[list[BundleArtefact], ClipSpec]:
    """Artefact folders under `root` of the given formats, checked (sha256) and sharing one ClipSpec."""
    root = Path(root)
    if not root.exists():
        raise EchoEdgeError(f"{root}: artefacts folder not found")
    found = find_artefacts(root)
    picked, seen = [], []
    for folder in found:
        m = verify_artefact(folder)
        seen.append(f"{folder.name} ({m.format})")
        if m.format in formats:
            picked.append(BundleArtefact(folder.name, folder, m, Validation(False, "not validated")))
    if not picked:
        raise EchoEdgeError(f"{root}: no {' or '.join(formats)} artefacts for the {platform} bundle "
                            f"(found: {', '.join(seen) or 'no artefact folders'}); run `echo-edge export` first")
    names = [a.name for a in picked]
    if len(set(names)) != len(names):
        raise EchoEdgeError(f"{root}: two artefact folders named the same ({', '.join(names)}); bundle one export")
    specs = {json.dumps(a.manifest.clip_spec, sort_keys=True) for a in picked}
    if len(specs) != 1:
        raise EchoEdgeError(f"{root}: the artefacts were built for different ClipSpecs; a bundle needs one "
                            "input contract (export them from one checkpoint)")
    return picked, ClipSpec.from_dict(picked[0].manifest.clip_spec)


# --------------------------------------------------------------------------------------------
# report.json
# --------------------------------------------------------------------------------------------


def attach_validation(artefacts: list[BundleArtefact], root: Path, report: Path | None) -> Path | None:
    """Fill each artefact's Validation from report.json: `report` if given (must exist), else
    ROOT/../report.json when present. Returns the report used, or None.

    Assumed schema (echoedge/validate/report_json.py, kept tolerant on purpose): a top-level
    "artefacts" list of objects with "name" or "folder" naming the artefact folder, optionally
    "facts.model_sha256", "status", "vs_truth": {"mae", "n"}, "vs_reference": {"ef": {"mean_abs"}}.
    An entry whose sha256 differs from the bundled file is not used ("report is for another file").
    """
    path = Path(report) if report is not None else Path(root).resolve().parent / REPORT_NAME
    if not path.is_file():
        if report is not None:
            raise EchoEdgeError(f"{path}: validation report not found")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EchoEdgeError(f"{path}: unreadable validation report ({first_line(e)})") from None
    entries = data.get("artefacts") if isinstance(data, dict) else None
    if isinstance(entries, dict):  # {name: entry} is accepted too
        entries = [{"name": k, **v} for k, v in entries.items() if isinstance(v, dict)]
    if not isinstance(entries, list):
        raise EchoEdgeError(f"{path}: no 'artefacts' list; is this an echo-edge report.json?")
    for art in artefacts:
        entry = _find_entry(entries, art)
        if entry is None:
            art.validation = Validation(False, f"not validated (no entry in {path.name})", report=str(path))
            continue
        sha = _get(entry, "facts", "model_sha256") or entry.get("model_sha256")
        if isinstance(sha, str) and sha and art.manifest.model_sha256 and sha != art.manifest.model_sha256:
            art.validation = Validation(False, f"not validated ({path.name} is for another file with this name)",
                                        report=str(path))
            continue
        art.validation = _validation(entry, path)
    return path


def _find_entry(entries: list[Any], art: BundleArtefact) -> dict[str, Any] | None:
    for e in entries:
        if not isinstance(e, dict):
            continue
        names = {e.get("name"), e.get("artefact")}
        for key in ("folder", "path"):
            if isinstance(e.get(key), str):
                names.add(Path(e[key]).name)
        if art.name in names:
            return e
    return None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _validation(entry: dict[str, Any], path: Path) -> Validation:
    mae = _num(_get(entry, "vs_truth", "mae"))
    n = _get(entry, "vs_truth", "n")
    ref = _num(_get(entry, "vs_reference", "ef", "mean_abs"))
    status = entry.get("status") if isinstance(entry.get("status"), str) else None
    if mae is None and ref is None:
        why = entry.get("reason") if isinstance(entry.get("reason"), str) else None
        return Validation(False, f"not validated ({status or 'no EF figures'}{': ' + why if why else ''})",
                          status=status, report=str(path))
    parts = []
    if mae is not None:
        parts.append(f"EF MAE {mae:.2f} points vs ground truth" + (f" ({n} videos)" if isinstance(n, int) else ""))
    if ref is not None:
        parts.append(f"{ref:.3f} points mean absolute EF difference from fp32")
    text = "; ".join(parts) + (f"; status {status}" if status else "")
    return Validation(True, text, ef_mae=mae, ef_vs_reference=ref, status=status, report=str(path))


# --------------------------------------------------------------------------------------------
# README pieces
# --------------------------------------------------------------------------------------------


def input_contract(spec: ClipSpec, artefacts: list[BundleArtefact], model_fps: float) -> str:
    """The input contract in plain words (markdown)."""
    lines = [
        "## Input contract",
        "",
        f"- **Frames**: {spec.frames} frames per clip, one every **{spec.period}** source frames "
        f"(a clip covers {spec.span} consecutive source frames).",
        "  - *Frame mode* (ClipBuffer without a rate): every frame you add is a source frame, exactly as "
        "in training (EchoNet clips ignore the video's FPS).",
        f"  - *Time mode* (ClipBuffer with modelFps = {model_fps:g}): the clip takes the frames nearest to "
        f"times spaced {spec.period}/{model_fps:g} s apart, ending at the newest frame, so a 30 or 60 FPS "
        f"probe stream gets the spacing the model was trained on ({model_fps:g} FPS EchoNet-rate video).",
        "- **Grey**: (r + g + b + 1) / 3 in integers on the first three channels (alpha ignored); RGB and "
        "BGR give the same grey. A grey frame is used as is.",
        f"- **Size**: exact area average (OpenCV INTER_AREA when shrinking) of the whole frame to "
        f"**{spec.height} x {spec.width}** (height x width), computed in double; no crop, no padding, "
        "no rounding to uint8.",
        f"- **Normalisation**: x = (grey - {spec.mean!r}) / {spec.std!r}, computed in double and rounded "
        "once to float32 (the mean and sd are the training set's, exactly as in the manifests).",
        f"- **Channels**: {spec.channels} ({'grey' if spec.channels == 1 else 'the grey value repeated 3 times'}).",
    ]
    for a in artefacts:
        t = a.manifest.inputs[0]
        q = ""
        if t.scale is not None and t.zero_point is not None:
            q = (f"; quantized q = clamp(round_half_away(x / {t.scale!r}) + {t.zero_point}, "
                 f"{'-128, 127' if t.dtype == 'int8' else '0, 255'})")
        lines.append(f"- **{a.name}** takes `{t.name}` {t.dtype} {t.layout} {t.shape}{q}.")
    lines += [
        "",
        "## Outputs",
        "",
        "Five tensors in this order: `ef` (%), `edv` (mL), `esv` (mL), `ed_landmarks` and `es_landmarks` "
        "(K x 2, normalised (x / width, y / height) of the model frame). The post-processor gives EF, EDV, "
        "ESV, the EF band (< 40 reduced, 40-49 mildly reduced, >= 50 preserved) and the landmarks in pixels of "
        "the original frame (x * frame width, y * frame height).",
    ]
    return "\n".join(lines)


def artefact_table(artefacts: list[BundleArtefact], golden: dict[str, Any]) -> str:
    status = {a["name"]: a for a in golden["artefacts"]}
    rows = ["| artefact | format | precision | size | validated EF error | golden vectors |",
            "| --- | --- | --- | --- | --- | --- |"]
    for a in artefacts:
        g = status.get(a.name, {})
        gtext = (f"{len(g.get('expected', []))} clips on {g.get('runtime_used')}, rtol {g['tolerance']['rtol']:g} "
                 f"atol {g['tolerance']['atol']:g}" if g.get("status") == "ok"
                 else f"none: {g.get('reason') or 'not run'}")
        cells = [a.name, a.manifest.format, a.manifest.precision, f"{a.manifest.model_bytes / 1e6:.2f} MB",
                 a.validation.text, gtext]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def bundle_record(platform: str, spec: ClipSpec, artefacts: list[BundleArtefact], golden: dict[str, Any],
                  report: Path | None, paths: dict[str, str]) -> dict[str, Any]:
    """bundle.json: what is inside, machine-readable."""
    from echoedge import __version__

    return {
        "bundle": f"echo-edge-{platform}", "bundle_version": BUNDLE_VERSION, "echo_edge_version": __version__,
        "clip_spec": spec.to_dict(), "report": str(report) if report else None,
        "artefacts": [{
            "name": a.name, "format": a.manifest.format, "precision": a.manifest.precision,
            "runtime": a.manifest.runtime, "model_file": a.manifest.model_file,
            "model_sha256": a.manifest.model_sha256, "path": paths[a.name],
            "source_checkpoint_sha256": a.manifest.source_checkpoint_sha256,
            "validated": a.validation.validated, "validation": a.validation.text,
            "ef_mae": a.validation.ef_mae, "ef_vs_reference": a.validation.ef_vs_reference,
            "golden_status": next((g["status"] for g in golden["artefacts"] if g["name"] == a.name), None),
        } for a in artefacts],
    }


def tree(root: Path, name: str | None = None, limit: int = 200) -> str:
    """The bundle's file tree (folders first), for README and the closing note; a .mlpackage is one entry."""
    out: list[str] = []

    def walk(d: Path, prefix: str) -> None:
        kids = sorted(d.iterdir(), key=lambda p: (not p.is_dir() or p.suffix == ".mlpackage", p.name))
        for i, k in enumerate(kids):
            if len(out) >= limit:
                return
            last = i == len(kids) - 1
            out.append(f"{prefix}{'└── ' if last else '├── '}{k.name}{'/' if k.is_dir() else ''}")
            if k.is_dir() and k.suffix != ".mlpackage":
                walk(k, prefix + ("    " if last else "│   "))

    out.append(f"{name or root.name}/")
    walk(root, "")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_bundle(out: Path, build: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Run build(tmp) in a hidden sibling folder and rename it to `out` only when it returned.

    An existing `out` is replaced only with overwrite and only when it is a bundle (has
    bundle.json) or empty, so a typo in --out cannot wipe an unrelated folder.
    """
    out = Path(out)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        build(tmp)
        if not (tmp / BUNDLE_FILE).is_file():
            raise EchoEdgeError(f"{out}: bundle build wrote no {BUNDLE_FILE}")
        _check_target(out, overwrite)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise EchoEdgeError(f"{out}: already exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise EchoEdgeError(f"{out}: exists and is not a folder; will not replace it")
    if not (out / BUNDLE_FILE).is_file() and any(out.iterdir()):
        raise EchoEdgeError(f"{out}: exists and is not an echo-edge bundle (no {BUNDLE_FILE}); will not replace it")


def copy_artefact(folder: Path, dest: Path, manifest: ArtefactManifest) -> None:
    """Copy what an app needs of an artefact folder: manifest.json and the model (a file, or a
    .mlpackage folder). Side files such as ExecuTorch's model.bpte stay behind: the golden vectors
    do their job, and they would double the app's size."""
    from echoedge.convert.artefact import MANIFEST_NAME

    dest.mkdir(parents=True)
    shutil.copy2(folder / MANIFEST_NAME, dest / MANIFEST_NAME)
    model = folder / manifest.model_file
    if model.is_dir():
        shutil.copytree(model, dest / manifest.model_file)
    else:
        shutil.copy2(model, dest / manifest.model_file)
