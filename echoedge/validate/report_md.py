"""report.md: the summary a person pastes into a pull request, rendered from report.json only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STATUS_MARK = {"PASS": "✅ PASS", "FAIL_ACCURACY": "❌ FAIL_ACCURACY", "FAIL_RUNTIME": "❌ FAIL_RUNTIME",
               "SKIPPED_PLATFORM": "⏭️ SKIPPED_PLATFORM"}


def fmt(v: Any, spec: str = ".2f", none: str = "–") -> str:
    if v is None:
        return none
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def size_mb(n: int | None) -> str:
    return "–" if not n else f"{n / 1e6:.2f} MB"


def latency_cell(e: dict[str, Any]) -> str:
    lat = e.get("latency")
    if lat:
        return f"{lat['p50_ms']:.1f} / {lat['p90_ms']:.1f}"
    return "n/a (interpreter)" if e.get("latency_note") else "–"


def status_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per artefact (reference first) with the headline figures as display strings.

    Shared by the Markdown, the HTML and the CLI summary so the three never disagree.
    """
    ref = report["reference"]
    rl = ref.get("latency") or {}
    rows = [{
        "artefact": "reference (eager fp32)", "format": "pytorch", "precision": "fp32",
        "runtime": ref["runtime"], "status": "REFERENCE", "size": "–",
        "mae": fmt(ref["vs_truth"]["mae"]), "mean_d": "0", "p95_d": "0", "max_d": "0",
        "band_ref": "100.0", "band_truth": fmt(100 * ref["vs_truth"]["band_agreement"], ".1f"),
        "latency": f"{rl['p50_ms']:.1f} / {rl['p90_ms']:.1f}" if rl else "–", "speedup": "1.00×",
        "reason": "",
    }]
    for e in report["artefacts"]:
        vr, vt = e.get("vs_reference"), e.get("vs_truth")
        rows.append({
            "artefact": e["name"], "format": e["format"], "precision": e["precision"],
            "runtime": e.get("runtime") or "–", "status": e["status"],
            "size": size_mb(e["facts"].get("model_bytes")),
            "mae": fmt(vt["mae"]) if vt else "–",
            "mean_d": fmt(vr["ef"]["mean_abs"], ".3f") if vr else "–",
            "p95_d": fmt(vr["ef"]["p95_abs"], ".3f") if vr else "–",
            "max_d": fmt(vr["ef"]["max_abs"], ".3f") if vr else "–",
            "band_ref": fmt(100 * vr["band_agreement"], ".1f") if vr else "–",
            "band_truth": fmt(100 * vt["band_agreement"], ".1f") if vt else "–",
            "latency": latency_cell(e),
            "speedup": f"{e['speedup_vs_reference']:.2f}×" if e.get("speedup_vs_reference") else "–",
            "reason": e.get("reason") or "",
        })
    return rows


COLUMNS = (("artefact", "artefact"), ("status", "status"), ("runtime", "runtime"), ("size", "size"),
           ("mae", "EF MAE vs truth"), ("mean_d", "mean |ΔEF|"), ("p95_d", "p95 |ΔEF|"),
           ("max_d", "max |ΔEF|"), ("band_ref", "band agr. ref %"), ("band_truth", "band agr. truth %"),
           ("latency", "p50 / p90 ms"), ("speedup", "speed-up"))


def render_markdown(report: dict[str, Any]) -> str:
    d, host, s = report["data"], report["host"], report["summary"]
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v)
    verdict = "PASSED" if s["passed"] else "FAILED"
    lines = [
        "## echo-edge validation",
        "",
        f"**{verdict}** ({counts or 'no artefacts'}; exit code {s['exit_code']}"
        f"{', --strict' if s['strict'] else ''}) · {d['n_videos']} {d['split']} videos × "
        f"{d['clips_per_video'] or 'all'} clips · data `{d['fingerprint'][:12]}` · "
        f"checkpoint `{report['reference']['checkpoint_sha256'][:12]}` · gates: {report['gates']['source']}",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in status_rows(report):
        status = STATUS_MARK.get(row["status"], row["status"])
        cells = [status if k == "status" else row[k] for k, _ in COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("ΔEF = artefact EF − reference EF per video (EF points); EF bands <40 / 40–49 / ≥50 %. "
                 f"Latency: batch 1, {host['threads']} threads, every accuracy call after the first "
                 f"{report['settings']['warmup']} (warm-up), at least {report['settings']['latency_runs']} "
                 "timed calls; speed-up vs the eager reference.")
    notes = [e for e in report["artefacts"] if e.get("reason") or e.get("latency_note")]
    if notes or report.get("notes"):
        lines += ["", "**Notes**", ""]
        lines += [f"- {n}" for n in report.get("notes") or []]
        for e in notes:
            if e.get("reason"):
                where = f" ({e['stage']})" if e.get("stage") else ""
                lines.append(f"- `{e['name']}` {e['status']}{where}: {e['reason']}")
            if e.get("latency_note"):
                lines.append(f"- `{e['name']}`: {e['latency_note']}")
    worst = [(e["name"], w) for e in report["artefacts"] if e.get("vs_reference")
             for w in e["vs_reference"]["worst"][:1]]
    if worst:
        lines += ["", "**Largest |ΔEF| per artefact**", "", "| artefact | video | true EF | reference | artefact | ΔEF |",
                  "|---|---|---|---|---|---|"]
        for name, w in worst:
            lines.append(f"| {name} | {w['file_name']} | {w['ef_true']:.1f} | {w['ef_reference']:.2f} | "
                         f"{w['ef']:.2f} | {w['delta_ef']:+.3f} |")
    lines += ["", f"Host `{host['id']}`: {host['cpu_model']}, {host['logical_cores']} cores, "
              f"{host['threads']} threads{load_note(host)}; " + ", ".join(f"{k} {v}" for k, v in host["runtime_versions"].items()), ""]
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """A fixed-width table for the terminal (same rows as the Markdown)."""
    cols = (("artefact", "artefact"), ("status", "status"), ("mae", "MAE"), ("mean_d", "mean|ΔEF|"),
            ("p95_d", "p95|ΔEF|"), ("band_ref", "band%ref"), ("latency", "p50/p90 ms"),
            ("speedup", "speed-up"), ("size", "size"))
    rows = status_rows(report)
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in cols]
    out = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(r[k].ljust(w) for (k, _), w in zip(cols, widths)))
        if r["reason"]:
            out.append(f"    {r['reason']}")
    return "\n".join(out)


def load_note(host: dict[str, Any]) -> str:
    load = host.get("load_average_1m")
    if load is None:
        return ""
    busy = " — busy host: latency inflated" if load > host.get("logical_cores", 0) else ""
    return f", 1-min load {load:.1f}{busy}"


def write_markdown(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(render_markdown(report))
    os.replace(tmp, path)
    return path
