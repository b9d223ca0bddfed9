"""report.html: one self-contained page (plots inlined as base64 PNG), rendered from report.json.

Sections: verdict and status table, predicted-vs-true EF scatter per artefact, Bland-Altman plot
per artefact (vs the fp32 reference, with bootstrap CIs of bias and limits), latency and size
bars, the worst videos, gates, "Acquisition shifts (stress)" when report.json has `stress`
(validate.report_stress), host, and "Quantization debugging" when report.json has the key
`debug_quant` (put there by `echo-edge debug-quant --report`; its figures are drawn from those
numbers, never read from files). No external CSS, scripts, fonts or images, so the file can be
attached to a CI run or mailed and still render.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from echoedge import atomic
from echoedge.validate.latency import cpu_line
from echoedge.validate.report_md import (columns, fmt, landmark_cell, load_note, memory_lines, status_rows,
                                         truth_lines)

STATUS_COLOURS = {"PASS": "#1a7f37", "FAIL_ACCURACY": "#cf222e", "FAIL_RUNTIME": "#cf222e",
                  "SKIPPED_PLATFORM": "#9a6700", "REFERENCE": "#57606a"}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right} th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left} .status{font-weight:600;color:#fff;border-radius:4px;padding:1px 6px}
.verdict{display:inline-block;font-weight:700;padding:4px 10px;border-radius:6px;color:#fff}
.reason{color:#57606a;font-size:12px;text-align:left} img{max-width:100%;border:1px solid #d0d7de;margin:4px 0}
.gfail{color:#cf222e;font-weight:600} .gpass{color:#1a7f37}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ran(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in report["artefacts"] if e.get("predictions") and e.get("vs_reference")]


def scatter_figure(report: dict[str, Any]) -> str:
    plt = _plt()
    ref = report["reference"]
    truth = {p["file_name"]: p["ef_true"] for p in ref["predictions"]}
    panels = [("reference (eager fp32)", ref["predictions"], ref["vs_truth"])]
    panels += [(e["name"], e["predictions"], e["vs_truth"]) for e in _ran(report)]
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, preds, m) in zip(axes.flat, panels):
        t = np.array([truth[p["file_name"]] for p in preds])
        y = np.array([p["ef"] for p in preds])
        ax.scatter(t, y, s=10, alpha=0.7)
        ax.plot([0, 100], [0, 100], "k--", lw=0.8)
        for v in (40, 50):
            ax.axvline(v, color="0.85", lw=0.8)
            ax.axhline(v, color="0.85", lw=0.8)
        lo = max(0.0, min(t.min(), y.min()) - 5)
        hi = min(100.0, max(t.max(), y.max()) + 5)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true EF (%)", ylabel="predicted EF (%)")
        ax.set_title(f"{name}\nMAE {m['mae']:.2f}, R² {m['r2'] if m['r2'] is not None else float('nan'):.2f}",
                     fontsize=9)
    fig.tight_layout()
    return _png(fig)


def bland_altman_figure(report: dict[str, Any]) -> str | None:
    ran = _ran(report)
    if not ran:
        return None
    plt = _plt()
    ref = {p["file_name"]: p["ef"] for p in report["reference"]["predictions"]}
    n = len(ran)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, e in zip(axes.flat, ran):
        r = np.array([ref[p["file_name"]] for p in e["predictions"]])
        a = np.array([p["ef"] for p in e["predictions"]])
        ba = e["vs_reference"]["bland_altman"]
        ax.scatter((a + r) / 2, a - r, s=10, alpha=0.7)
        for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
            ax.axhline(ba[key], color="C3", ls=style, lw=1)
            ci = ba[f"{key}_ci"]
            ax.axhspan(ci["low"], ci["high"], color="C3", alpha=0.12, lw=0)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.ticklabel_format(useOffset=False)  # EF axis in plain %, not "+5.49e1"
        mid = (a + r) / 2
        if mid.max() - mid.min() < 4:  # nearly constant EF (e.g. an untrained model): keep ticks legible
            c = float(mid.mean())
            ax.set_xlim(c - 2, c + 2)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set(xlabel="mean of artefact and reference EF (%)", ylabel="ΔEF artefact − reference")
        ax.set_title(f"{e['name']}\nbias {ba['bias']:+.3f}, LoA [{ba['loa_low']:+.3f}, {ba['loa_high']:+.3f}]",
                     fontsize=9)
    fig.tight_layout()
    return _png(fig)


def bars_figure(report: dict[str, Any]) -> str:
    plt = _plt()
    names = ["reference"] + [e["name"] for e in report["artefacts"]]
    lat = [report["reference"].get("latency")] + [e.get("latency") for e in report["artefacts"]]
    sizes = [None] + [e["facts"].get("model_bytes") for e in report["artefacts"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.6))
    y = np.arange(len(names))
    p50 = np.array([l["p50_ms"] if l else 0.0 for l in lat])
    p90 = np.array([l["p90_ms"] if l else 0.0 for l in lat])
    a1.barh(y, p50, color=["0.5"] + ["C0"] * (len(names) - 1))
    a1.errorbar(p50, y, xerr=[np.zeros_like(p50), np.maximum(p90 - p50, 0)], fmt="none", ecolor="k", capsize=3)
    for i, l in enumerate(lat):
        a1.text(p50[i], i, f" {l['p50_ms']:.1f} ms" if l else " no latency", va="center", fontsize=8)
    a1.set(yticks=y, yticklabels=names, xlabel="latency per clip, ms (bar p50, whisker p90)")
    a1.invert_yaxis()
    mb = np.array([s / 1e6 if s else 0.0 for s in sizes])
    a2.barh(y, mb, color="C2")
    for i, s in enumerate(sizes):
        a2.text(mb[i], i, f" {s / 1e6:.2f} MB" if s else " –", va="center", fontsize=8)
    a2.set(yticks=y, yticklabels=names, xlabel="model file size, MB")
    a2.invert_yaxis()
    host = report["host"]
    fig.suptitle(f"batch 1, {host['threads']} threads, {cpu_line(host)}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _or_dash(v: Any) -> Any:
    return "–" if v is None else v


def _e(v: Any) -> str:
    return html.escape(str(v))


def render_html(report: dict[str, Any]) -> str:
    s, d, host = report["summary"], report["data"], report["host"]
    verdict = "PASSED" if s["passed"] else "FAILED"
    colour = STATUS_COLOURS["PASS" if s["passed"] else "FAIL_ACCURACY"]
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>echo-edge validation report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>echo-edge validation report</h1>",
        f"<p><span class='verdict' style='background:{colour}'>{verdict}</span> "
        f"<span class='meta'>{_e(counts)} · exit code {s['exit_code']}{' · --strict' if s['strict'] else ''}"
        f" · {_e(report['created_at'])}</span></p>",
        f"<p class='meta'>{d['n_videos']} {_e(d['split'])} videos × {_e(d['clips_per_video'] or 'all')} clips of "
        f"<code>{_e(d['root'])}</code> (fingerprint {_e(d['fingerprint'][:12])}); reference "
        f"<code>{_e(report['reference']['checkpoint'])}</code> ({_e(report['reference']['checkpoint_sha256'][:12])}); "
        f"gates: {_e(report['gates']['source'])}</p>",
        "<h2>Status</h2>", "<table id='status-table'><thead><tr>",
        "".join(f"<th>{_e(h)}</th>" for _, h in columns(report)), "</tr></thead><tbody>",
    ]
    for row in status_rows(report):
        cells = []
        for k, _ in columns(report):
            if k == "status":
                c = STATUS_COLOURS.get(row["status"], "#57606a")
                cells.append(f"<td><span class='status' style='background:{c}'>{_e(row['status'])}</span></td>")
            else:
                cells.append(f"<td>{_e(row[k])}</td>")
        parts.append(f"<tr data-status='{_e(row['status'])}'>" + "".join(cells) + "</tr>")
        if row["reason"]:
            parts.append(f"<tr><td colspan='{len(columns(report))}' class='reason'>{_e(row['artefact'])}: "
                         f"{_e(row['reason'])}</td></tr>")
    parts.append("</tbody></table>")
    for n in report.get("notes") or []:
        parts.append(f"<p class='meta'>{_e(n)}</p>")
    notes = [e for e in report["artefacts"] if e.get("latency_note")]
    for e in notes:
        parts.append(f"<p class='meta'>{_e(e['name'])}: {_e(e['latency_note'])}</p>")
    parts.append("<p class='meta'>ΔEF = artefact EF − fp32 reference EF per video, in EF points. "
                 "EF bands: &lt;40, 40–49, ≥50 %; band agreement counts every flip, and its gate (in "
                 "brackets where it differs) leaves out a flip whose reference EF lies within "
                 "band_margin_ef of the artefact's band.</p>")
    parts += [f"<p class='meta' data-truth>{_e(t)}</p>" for t in truth_lines(report)]
    parts += [f"<p class='meta' data-memory>{_e(t)}</p>" for t in memory_lines(report)]

    parts += ["<h2>Predicted vs true EF</h2>", f"<img alt='scatter' src='{scatter_figure(report)}'>"]
    ba = bland_altman_figure(report)
    if ba:
        parts += ["<h2>Bland-Altman vs the fp32 reference</h2>",
                  "<p class='meta'>Lines: bias and 95 % limits of agreement; bands: their bootstrap 95 % CIs "
                  f"({report['settings']['bootstrap']} resamples, seed {report['settings']['seed']}).</p>",
                  f"<img alt='bland-altman' src='{ba}'>"]
    parts += ["<h2>Latency and size</h2>", f"<img alt='latency and size' src='{bars_figure(report)}'>"]

    ran = _ran(report)
    if ran:
        parts += ["<h2>Agreement details</h2><table><thead><tr><th>artefact</th><th>BA bias [95% CI]</th>"
                  "<th>LoA low [CI]</th><th>LoA high [CI]</th><th>EDV |Δ| mL</th><th>ESV |Δ| mL</th>"
                  "<th>landmarks Δ px</th><th>landmark err px (truth)</th><th>int8 op fraction</th>"
                  "<th>delegated / fallback ops</th><th>calibration</th></tr></thead><tbody>"]
        for e in ran:
            b, vr, f = e["vs_reference"]["bland_altman"], e["vs_reference"], e["facts"]
            ci = lambda k: f"{b[k]:+.3f} [{b[k + '_ci']['low']:+.3f}, {b[k + '_ci']['high']:+.3f}]"  # noqa: E731
            lm = landmark_cell(vr.get("landmark_delta_px"), report, ".3f")
            lt = landmark_cell(e["vs_truth"].get("landmark_error_px"), report)
            frac = f.get("int8_op_fraction")
            parts.append(
                f"<tr><td>{_e(e['name'])}</td><td>{ci('bias')}</td><td>{ci('loa_low')}</td><td>{ci('loa_high')}</td>"
                f"<td>{fmt(vr['edv_mean_abs'])}</td><td>{fmt(vr['esv_mean_abs'])}</td>"
                f"<td>{_e(lm)}</td><td>{_e(lt)}</td>"
                f"<td>{'not recorded' if frac is None else f'{100 * frac:.0f} %'}</td>"
                f"<td>{_e(_or_dash(f.get('delegated_ops')))} / {_e(_or_dash(f.get('fallback_ops')))}</td>"
                f"<td>{_e(f.get('calibration_id') or '–')}</td></tr>")
        parts.append("</tbody></table>")
        parts += ["<h2>Worst videos (largest |ΔEF| vs the reference)</h2><table id='worst-table'><thead><tr>"
                  "<th>artefact</th><th>video</th><th>true EF</th><th>reference EF</th><th>artefact EF</th>"
                  "<th>ΔEF</th></tr></thead><tbody>"]
        for e in ran:
            for w in e["vs_reference"]["worst"]:
                parts.append(f"<tr><td>{_e(e['name'])}</td><td>{_e(w['file_name'])}</td><td>{w['ef_true']:.1f}</td>"
                             f"<td>{w['ef_reference']:.2f}</td><td>{w['ef']:.2f}</td><td>{w['delta_ef']:+.3f}</td></tr>")
        parts.append("</tbody></table>")

    parts.append("<h2>Gates</h2><table id='gates-table'><thead><tr><th>artefact</th><th>gate</th>"
                 "<th>value</th><th>threshold</th><th>result</th></tr></thead><tbody>")
    for e in report["artefacts"]:
        for g in e.get("gates", []):
            v = "n/a" if g["value"] is None else f"{g['value']:.4g}"
            res = "<span class='gpass'>pass</span>" if g["passed"] else "<span class='gfail'>FAIL</span>"
            parts.append(f"<tr><td>{_e(e['name'])}</td><td>{_e(g['name'])}</td><td>{v} {_e(g['unit'])}</td>"
                         f"<td>{_e(g['op'])} {g['threshold']:g}</td><td>{res}</td></tr>")
    parts.append("</tbody></table>")
    if report.get("realtime"):  # `run`: the smallest real-time hop per artefact
        from echoedge.validate.realtime import html_section as realtime_html

        parts.append(realtime_html(report))
    if report.get("stress") is not None:  # echo-edge stress, run --stress
        from echoedge.validate.report_stress import html_section

        parts.append(html_section(report))
    if report.get("debug_quant"):  # added by `echo-edge debug-quant --report`
        parts.append(debug_quant_html(report["debug_quant"]))
    versions = ", ".join(f"{k} {v}" for k, v in host["runtime_versions"].items())
    parts.append(f"<h2>Host</h2><p class='meta'>id <code>{_e(host['id'])}</code>: {_e(cpu_line(host))}, "
                 f"{host['logical_cores']} logical cores, {host['threads']} threads{_e(load_note(host))}, {_e(host.get('os', ''))}; "
                 f"{_e(versions)}. Latency figures from hosts with different ids are not comparable.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# "Quantization debugging" (echo-edge debug-quant): figures drawn from the section's numbers, so
# the page stays self-contained and shows exactly what report.json holds.


def attribution_figure(att: list[dict[str, Any]]) -> str:
    plt = _plt()
    names = [a["artefact"] for a in att]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4))
    for i, (key, label) in enumerate((("total", "artefact vs reference"), ("quantization", "quantization (simulated)"),
                                      ("conversion", "conversion / runtime"))):
        ax.barh(y + (i - 1) * 0.27, [a[key] for a in att], height=0.27, color=f"C{i}", label=label)
    ax.set(yticks=y, yticklabels=names, xlabel="mean |ΔEF| (EF points)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def sensitivity_figure(s: dict[str, Any], top: int = 15) -> str:
    plt = _plt()
    units = s["units"][:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(units) + 1.4))
    vals = [u["effect"] for u in units]
    ax.barh([u["unit"] for u in units], vals, color=["#c0392b" if v > 0 else "#7f8c8d" for v in vals])
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("EF points won back by keeping the unit float" if s["mode"] == "all-but"
                  else "mean |ΔEF| with only this unit int8")
    ax.set_title(f"{s['family']} ({s['mode']}); all int8 (simulated): {s['baseline']:.3f}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _png(fig)


def pareto_figure(cands: list[dict[str, Any]], budget: float) -> str | None:
    pts = [c for c in cands if c.get("latency_ms")]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sizes = np.array([c["size_bytes"] or 0 for c in pts], dtype=float)
    area = 30 + 300 * sizes / max(sizes.max(), 1.0)
    colours = {"executorch": "C0", "tflite": "C1", "coreml": "C4", "pytorch": "0.5"}
    for c, a in zip(pts, area):
        ax.scatter(c["latency_ms"], c["mean_abs_def"], s=a, color=colours.get(c["format"], "C7"), alpha=0.7,
                   edgecolors="k" if c.get("pareto") else "none")
        ax.annotate(c["name"], (c["latency_ms"], c["mean_abs_def"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    front = sorted((c for c in pts if c.get("pareto")), key=lambda c: c["latency_ms"])
    if len(front) > 1:
        ax.plot([c["latency_ms"] for c in front], [c["mean_abs_def"] for c in front], "k--", lw=0.8,
                label="Pareto front")
    ax.axhline(budget, color="C3", lw=0.8, ls=":", label=f"budget {budget:g}")
    ax.set(xlabel="latency p50, ms (batch 1)", ylabel="mean |ΔEF| vs fp32 (EF points)")
    ax.set_title("EF error vs latency (marker area: file size; black edge: Pareto front)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def calibration_figure(cal: dict[str, Any]) -> str:
    plt = _plt()
    pts, st = cal["points"], cal["settings"]
    recs = cal.get("recommendations") or {}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, strat in enumerate(dict.fromkeys(p["strategy"] for p in pts)):
        ps = sorted((p for p in pts if p["strategy"] == strat), key=lambda p: p["size"])
        n = [p["size"] for p in ps]
        a1.fill_between(n, [p["min"] for p in ps], [p["max"] for p in ps], color=f"C{i}", alpha=0.15, lw=0)
        a1.errorbar(n, [p["mean"] for p in ps], yerr=[p["sd"] or 0.0 for p in ps], color=f"C{i}", marker="o",
                    capsize=3, label=strat)
        if strat in recs:
            a1.plot([recs[strat]["size"]], [recs[strat]["mean"]], "*", ms=14, color=f"C{i}", mec="k")
        for key, style in (("low_ef_mean", "-"), ("rest_mean", "--")):
            y = [np.nan if p[key] is None else p[key] for p in ps]
            a2.plot(n, y, style, marker="o", color=f"C{i}", label=f"{strat} ({'low EF' if key == 'low_ef_mean' else 'rest'})")
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(st["sizes"], [str(x) for x in st["sizes"]])
        ax.set(xlabel="calibration clips N", ylabel="mean |ΔEF| (EF points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    a1.set_title(f"{st['draws']} disjoint draws per N: mean ± sd, band min–max, ★ recommended", fontsize=9)
    a2.set_title(f"low-EF hearts ({st['low_ef_by']} EF < {st['low_ef']:g}) vs the rest", fontsize=9)
    fig.suptitle(cal["label"], fontsize=10)
    fig.tight_layout()
    return _png(fig)


def debug_quant_html(dq: dict[str, Any]) -> str:
    """The "Quantization debugging" section: the Markdown section's tables as HTML, plus figures."""
    import re

    from echoedge.validate.report_md import render_debug_quant

    parts = ["<h2 id='quantization-debugging'>Quantization debugging</h2>"]
    # Tables and lines from the Markdown renderer (one wording for both pages), converted simply.
    table: list[str] = []

    def flush() -> None:
        if not table:
            return
        # Split on unescaped pipes only: "mean \\|ΔEF\\|" is one cell.
        rows = [[c for c in re.split(r"(?<!\\)\|", r.strip()[1:-1])] for r in table
                if not re.fullmatch(r"\|[-|]+\|", r.strip())]
        head, body = rows[0], rows[1:]
        parts.append("<table><thead><tr>" + "".join(f"<th>{_e(_md(c))}</th>" for c in head) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{_e(_md(c))}</td>" for c in r) + "</tr>" for r in body)
                     + "</tbody></table>")
        table.clear()

    figures = {"### Error attribution": lambda: attribution_figure(dq["attribution"]) if dq.get("attribution") else None,
               "### Calibration stability and size": lambda: calibration_figure(dq["calibration"])}
    sens = {f"### Per-layer sensitivity: {s['family']}": s for s in dq.get("sensitivity") or []}
    for line in render_debug_quant(dq).splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("### "):
            parts.append(f"<h3>{_e(line[4:])}</h3>")
            key = next((k for k in sens if line.startswith(k + " (")), None)  # "coreml-w8" vs "coreml-w8a8"
            img = sensitivity_figure(sens[key]) if key else figures.get(line, lambda: None)()
            if line.startswith("### Mixed precision") and dq.get("candidates"):
                img = pareto_figure(dq["candidates"], dq["settings"]["budget"])
            if img:
                parts.append(f"<img alt='{_e(line[4:])}' src='{img}'>")
        elif line.strip():
            parts.append(f"<p class='meta'>{_e(_md(line))}</p>")
    flush()
    return "\n".join(parts)


def _md(text: str) -> str:
    """Markdown inline marks out of a cell: the HTML shows plain text."""
    return text.replace("\\|", "|").replace("**", "").replace("`", "").strip()


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    return atomic.write_text(path, render_html(report))
