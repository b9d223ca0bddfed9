"""Gates: thresholds from YAML applied to report.json, giving each artefact its status.

The gate reads only the report (a dict as written to report.json): it never re-runs a model, so a
CI job can re-gate a stored report with other thresholds. Statuses:

- PASS: it ran and every enabled gate held;
- FAIL_ACCURACY: it ran and at least one gate failed (the failed gates are named);
- FAIL_RUNTIME: it did not convert, load or run (set by validation, kept here);
- SKIPPED_PLATFORM: this host cannot run it (set by validation); a failure under --strict.

Stress (when report.json has a `stress` section, from `echo-edge stress` or `run --stress`): an
artefact whose precision the `stress` part of the gates lists must also meet its clean thresholds
(or those the part sets) under every shifted condition at the listed levels; a failure there makes
it FAIL_ACCURACY like any other gate, and each condition keeps its gate results.

Exit codes: 0 all pass, 1 a gate or a runtime failed (or a skip under --strict), 2 is left to
errors of the tool itself (EchoEdgeError).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from echoedge.errors import EchoEdgeError

PASS = "PASS"
FAIL_ACCURACY = "FAIL_ACCURACY"
FAIL_RUNTIME = "FAIL_RUNTIME"
SKIPPED_PLATFORM = "SKIPPED_PLATFORM"
STATUSES = (PASS, FAIL_ACCURACY, FAIL_RUNTIME, SKIPPED_PLATFORM)

GATES_VERSION = 1


@dataclass(frozen=True)
class Metric:
    path: tuple[str, ...]  # where the value lives in a report.json artefact entry
    op: str  # "<=" or ">="
    unit: str
    scale: float = 1.0  # report value * scale = gate units (fractions -> percent)
    relative_to_reference: bool = False  # subtract the reference's value at the same path


# Gate name -> how to read it from an artefact entry of report.json.
METRICS: dict[str, Metric] = {
    "mean_abs_delta_ef": Metric(("vs_reference", "ef", "mean_abs"), "<=", "EF points"),
    "p95_abs_delta_ef": Metric(("vs_reference", "ef", "p95_abs"), "<=", "EF points"),
    "max_abs_delta_ef": Metric(("vs_reference", "ef", "max_abs"), "<=", "EF points"),
    "band_agreement_reference": Metric(("vs_reference", "band_agreement"), ">=", "%", 100.0),
    "band_agreement_truth": Metric(("vs_truth", "band_agreement"), ">=", "%", 100.0),
    "mae_increase": Metric(("vs_truth", "mae"), "<=", "EF points", relative_to_reference=True),
    "p50_latency_ms": Metric(("latency", "p50_ms"), "<=", "ms"),
}


# Settings that shape a gate rather than bound a metric; resolved like thresholds.
# band_margin_ef: a band flip whose reference EF lies within this many EF points of the artefact's
# band is borderline (inside the drift the mean gate allows) and band_agreement_reference does not
# count it; unset means the artefact's mean_abs_delta_ef threshold, 0 counts every flip.
PARAMETERS = {"band_margin_ef": "EF points"}

# The gates that still mean something on shifted frames: those comparing with the reference on
# the same frames (the truth-based ones would gate the model's own loss to the shift, and there
# is no latency under stress).
STRESS_METRICS = ("mean_abs_delta_ef", "p95_abs_delta_ef", "max_abs_delta_ef", "band_agreement_reference",
                  "mae_increase", "band_margin_ef")
STRESS_KEYS = ("precisions", "levels", "thresholds", "shift")


def default_gates_path() -> Path:
    return Path(str(resources.files("echoedge.validate").joinpath("gates.yaml")))


@dataclass
class GateResult:
    name: str
    op: str
    threshold: float
    value: float | None
    unit: str
    passed: bool

    def describe(self) -> str:
        v = "n/a" if self.value is None else f"{self.value:.3g}"
        return f"{self.name} = {v}, needs {self.op} {self.threshold:g} {self.unit}".replace(" %", "%")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_gates(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped gates, overlaid with the file at `path` (keys it leaves out keep defaults)."""
    import yaml

    base = _read_yaml(default_gates_path(), yaml)
    base["source"] = "shipped defaults"
    base["stress"] = {"precisions": [], "levels": [], **base["stress"]}
    if path is None:
        return base
    user = _read_yaml(Path(path), yaml)
    merged = copy.deepcopy(base)
    merged["defaults"].update(user.get("defaults") or {})
    for p, th in (user.get("precision") or {}).items():
        merged["precision"].setdefault(p, {}).update(th or {})
    for f, per in (user.get("format") or {}).items():
        for p, th in (per or {}).items():
            merged["format"].setdefault(f, {}).setdefault(p, {}).update(th or {})
    stress, mine = merged["stress"], user.get("stress") or {}
    stress.update({k: mine[k] for k in ("precisions", "levels") if k in mine})
    stress["thresholds"].update(mine.get("thresholds") or {})
    for name, th in (mine.get("shift") or {}).items():
        stress["shift"].setdefault(name, {}).update(th or {})
    merged["source"] = str(path)
    return merged


def _read_yaml(path: Path, yaml: Any) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EchoEdgeError(f"{path}: gates file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise EchoEdgeError(f"{path}: unreadable gates file ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(data, dict):
        raise EchoEdgeError(f"{path}: gates file must be a YAML mapping")
    version = data.get("version", GATES_VERSION)
    if version != GATES_VERSION:
        raise EchoEdgeError(f"{path}: gates version {version!r} is not supported (this echo-edge reads {GATES_VERSION})")
    unknown = set(data) - {"version", "defaults", "precision", "format", "stress"}
    if unknown:
        raise EchoEdgeError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                            "(allowed: version, defaults, precision, format, stress)")
    _check_thresholds(data.get("defaults"), f"{path}: defaults")
    for key in ("precision", "format"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise EchoEdgeError(f"{path}: '{key}' must be a mapping")
    for p, th in (data.get("precision") or {}).items():
        _check_thresholds(th, f"{path}: precision.{p}")
    for f, per in (data.get("format") or {}).items():
        if not isinstance(per, dict):
            raise EchoEdgeError(f"{path}: format.{f} must map precisions (or 'all') to thresholds")
        for p, th in per.items():
            _check_thresholds(th, f"{path}: format.{f}.{p}")
    data["stress"] = _check_stress(data.get("stress"), path)
    data.setdefault("defaults", {})
    data["precision"] = data.get("precision") or {}
    data["format"] = data.get("format") or {}
    return data


def _check_stress(st: Any, path: Path) -> dict[str, Any]:
    """The `stress` part: which precisions and levels are gated on shifted frames, and thresholds
    replacing the clean ones under every shift (`thresholds`) or one shift (`shift.<name>`)."""
    from echoedge.data.shifts import LEVELS, SHIFTS

    where = f"{path}: stress"
    if st is None:
        st = {}
    if not isinstance(st, dict):
        raise EchoEdgeError(f"{where} must be a mapping ({', '.join(STRESS_KEYS)})")
    unknown = set(st) - set(STRESS_KEYS)
    if unknown:
        raise EchoEdgeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(STRESS_KEYS)})")
    for key, allowed in (("precisions", None), ("levels", LEVELS)):
        v = st.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise EchoEdgeError(f"{where}.{key} must be a list of names, got {v!r}")
        bad = [x for x in v or [] if allowed and x not in allowed]
        if bad:
            raise EchoEdgeError(f"{where}.{key}: unknown {', '.join(bad)} (known: {', '.join(allowed or ())})")
    _check_thresholds(st.get("thresholds"), f"{where}.thresholds", STRESS_METRICS)
    if st.get("shift") is not None and not isinstance(st["shift"], dict):
        raise EchoEdgeError(f"{where}.shift must map shift names to thresholds")
    for name, th in (st.get("shift") or {}).items():
        if name not in SHIFTS:
            raise EchoEdgeError(f"{where}.shift: unknown shift '{name}' (shifts: {', '.join(SHIFTS)})")
        _check_thresholds(th, f"{where}.shift.{name}", STRESS_METRICS)
    # Only what the file says: a user file that leaves a key out keeps the shipped value.
    out = {k: list(st[k]) for k in ("precisions", "levels") if st.get(k) is not None}
    out["thresholds"] = dict(st.get("thresholds") or {})
    out["shift"] = {k: dict(v or {}) for k, v in (st.get("shift") or {}).items()}
    return out


def _check_thresholds(th: Any, where: str, known: tuple[str, ...] | None = None) -> None:
    if th is None:
        return
    if not isinstance(th, dict):
        raise EchoEdgeError(f"{where} must be a mapping of gate name to threshold")
    known = known or (*METRICS, *PARAMETERS)
    for k, v in th.items():
        if k not in known:
            raise EchoEdgeError(f"{where}: unknown gate '{k}' (known: {', '.join(known)})")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise EchoEdgeError(f"{where}.{k}: threshold must be a number or null, got {v!r}")
        if k in PARAMETERS and v is not None and v < 0:
            raise EchoEdgeError(f"{where}.{k}: must be >= 0 {PARAMETERS[k]}, got {v!r}")


def thresholds_for(gates: dict[str, Any], fmt: str, precision: str) -> dict[str, float]:
    """Enabled thresholds for one artefact: defaults -> precision -> format.all -> format.precision."""
    out = dict(gates.get("defaults") or {})
    out.update((gates.get("precision") or {}).get(precision) or {})
    per_format = (gates.get("format") or {}).get(fmt) or {}
    out.update(per_format.get("all") or {})
    out.update(per_format.get(precision) or {})
    return {k: float(v) for k, v in out.items() if v is not None}


def stress_thresholds_for(gates: dict[str, Any], fmt: str, precision: str, shift: str,
                          level: str) -> dict[str, float] | None:
    """Thresholds for one artefact under one shifted condition; None when it is not gated there.

    The artefact's clean thresholds (thresholds_for) for the gates in STRESS_METRICS, replaced by
    stress.thresholds, then by stress.shift.<shift>; null disables a gate."""
    st = gates.get("stress") or {}
    if precision not in (st.get("precisions") or []) or level not in (st.get("levels") or []):
        return None
    out: dict[str, Any] = {k: v for k, v in thresholds_for(gates, fmt, precision).items() if k in STRESS_METRICS}
    out.update(st.get("thresholds") or {})
    out.update((st.get("shift") or {}).get(shift) or {})
    return {k: float(v) for k, v in out.items() if v is not None}


def _lookup(entry: dict[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = entry
    for key in path:
        if not isinstance(cur, dict) or cur.get(key) is None:
            return None
        cur = cur[key]
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def band_margin(thresholds: dict[str, float]) -> float:
    """The borderline margin (PARAMETERS) for one artefact's resolved thresholds."""
    return thresholds.get("band_margin_ef", thresholds.get("mean_abs_delta_ef", 0.0))


def _band_beyond_margin(entry: dict[str, Any], margin: float) -> float | None:
    """band_agreement_reference counting only flips beyond the margin; the strict figure for a
    report written before flips were listed."""
    from echoedge.validate.agreement import band_agreement_beyond

    vr = entry.get("vs_reference") or {}
    n = vr.get("n", (vr.get("bland_altman") or {}).get("n"))
    if not isinstance(vr.get("band_flips"), list) or not n:
        return _lookup(entry, METRICS["band_agreement_reference"].path)
    return band_agreement_beyond(int(n), vr["band_flips"], margin)


def evaluate_entry(entry: dict[str, Any], reference: dict[str, Any], thresholds: dict[str, float]) -> list[GateResult]:
    results = []
    for name, limit in thresholds.items():
        if name in PARAMETERS:
            continue
        m = METRICS[name]
        if name == "band_agreement_reference":
            value = _band_beyond_margin(entry, band_margin(thresholds))
        else:
            value = _lookup(entry, m.path)
        if value is not None and m.relative_to_reference:
            ref = _lookup(reference, m.path)
            value = None if ref is None else value - ref
        if value is not None:
            value *= m.scale
        # A gate whose number is missing (e.g. no latency from a reference interpreter) fails:
        # a threshold someone set must not pass silently.
        ok = value is not None and math.isfinite(value) and (value <= limit if m.op == "<=" else value >= limit)
        results.append(GateResult(name, m.op, limit, value, m.unit, bool(ok)))
    return results


def apply_gates(report: dict[str, Any], gates: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """Set each artefact's gates and status and the report's summary; returns the report."""
    reference = report.get("reference") or {}
    stress = report.get("stress")
    counts = {s: 0 for s in STATUSES}
    for entry in report.get("artefacts", []):
        run_status = entry.get("run_status") or entry.get("status")
        if run_status in (FAIL_RUNTIME, SKIPPED_PLATFORM):
            entry["gates"] = []
            entry["status"] = run_status
        else:
            th = thresholds_for(gates, entry.get("format", ""), entry.get("precision", ""))
            results = evaluate_entry(entry, reference, th)
            entry["gates"] = [r.to_dict() for r in results]
            failed = [r.describe() for r in results if not r.passed]
            if stress is not None:
                failed += _stress_gates(entry, stress, gates)
            entry["status"] = FAIL_ACCURACY if failed else PASS
            entry["reason"] = "; ".join(failed) if failed else entry.get("reason")
        counts[entry["status"]] += 1
    bad = counts[FAIL_ACCURACY] + counts[FAIL_RUNTIME] + (counts[SKIPPED_PLATFORM] if strict else 0)
    report["gates"] = {"source": gates.get("source", ""), "version": GATES_VERSION,
                       "defaults": gates.get("defaults"), "precision": gates.get("precision"),
                       "format": gates.get("format"), "stress": gates.get("stress")}
    report["summary"] = {"counts": counts, "strict": bool(strict), "passed": bad == 0,
                         "exit_code": 1 if bad else 0}
    return report


def _stress_gates(entry: dict[str, Any], stress: dict[str, Any], gates: dict[str, Any]) -> list[str]:
    """Gate the artefact's shifted conditions in the report's `stress` section (results stored on
    each condition); one line naming the failures, or none."""
    row = next((r for r in stress.get("artefacts", []) if r.get("name") == entry.get("name")), None)
    if row is None:
        return []
    refs = {(c["shift"], c["level"]): c for c in stress["reference"]["conditions"]}
    failed = []
    for cond in row.get("conditions", []):
        th = stress_thresholds_for(gates, entry.get("format", ""), entry.get("precision", ""),
                                   cond["shift"], cond["level"])
        results = evaluate_entry(cond, refs.get((cond["shift"], cond["level"])) or {}, th or {})
        cond["gates"] = [r.to_dict() for r in results]
        cond["passed"] = None if th is None else all(r.passed for r in results)
        if cond["passed"] is False:
            failed.append((cond, [r for r in results if not r.passed]))
    if not failed:
        return []
    cond, bad = max(failed, key=lambda f: f[0]["vs_reference"]["ef"]["mean_abs"])
    n = sum(c.get("passed") is not None for c in row["conditions"])
    return [f"stress: {len(failed)} of {n} gated shifted conditions fail, worst {cond['shift']} "
            f"{cond['level']}: " + ", ".join(r.describe() for r in bad)]
