"""The stress section of report.md / report.html / junit.xml, rendered from report.json only.

Figures: an artefact x shift heat map of mean |ΔEF| vs the reference (one panel per level, the
clean figure first, failed gated conditions marked), and the reference's EF MAE vs the truth per shift
and level. Tables: the same numbers (mean |ΔEF| with p95, per level), the reference's MAE, and
every gated condition that failed. The status table names each artefact's worst shift
(`worst_shift_cell`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echoedge import atomic

HEATMAP_FILE = "stress_heatmap.png"  # beside report.md, which links it


def section(report: dict[str, Any]) -> dict[str, Any] | None:
    return report.get("stress")


def stressed(st: dict[str, Any]) -> list[dict[str, Any]]:
    """Artefact rows with measured conditions."""
    return [a for a in st["artefacts"] if a.get("conditions")]


def _cond(row: dict[str, Any], shift: str, level: str) -> dict[str, Any] | None:
    return next((c for c in row["conditions"] if c["shift"] == shift and c["level"] == level), None)


def _unit(st: dict[str, Any], shift: str) -> str:
    return next((s["unit"] for s in st["shifts"] if s["name"] == shift), "")


def condition_label(st: dict[str, Any], c: dict[str, Any]) -> str:
    return f"{c['shift']} {c['level']} ({c['value']:g}{_unit(st, c['shift'])})"


def worst_shift_cell(report: dict[str, Any], name: str) -> str:
    """'blur severe: 4.30' (the largest mean |ΔEF| of the artefact under any shift), or '–'."""
    from echoedge.validate.stress import worst_condition

    st = section(report)
    row = next((a for a in st["artefacts"] if a["name"] == name), None) if st else None
    if row is None:
        return "–"
    w = worst_condition(row)
    if w is None:
        return row.get("status") if row.get("status") not in (None, "ok") else "–"
    return f"{w['shift']} {w['level']}: {w['vs_reference']['ef']['mean_abs']:.2f}"


def reference_worst_cell(report: dict[str, Any]) -> str:
    """The shift that costs the reference the most EF MAE vs truth: 'blur severe: MAE 30.12'."""
    st = section(report)
    conds = st["reference"]["conditions"] if st else []
    if not conds:
        return "–"
    w = max(conds, key=lambda c: c["vs_truth"]["mae"])
    return f"{w['shift']} {w['level']}: MAE {w['vs_truth']['mae']:.2f}"


def _clean(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    e = next((e for e in report["artefacts"] if e["name"] == name), None)
    return (e or {}).get("vs_reference")


def _mark(c: dict[str, Any]) -> str:
    return " ❌" if c.get("passed") is False else ""


def markdown_lines(report: dict[str, Any], image: str | None = HEATMAP_FILE) -> list[str]:
    """The "Acquisition shifts (stress)" section of report.md."""
    st = section(report)
    if st is None:
        return []
    levels, rows = st["levels"], stressed(st)
    ref_vt = report["reference"]["vs_truth"]
    out = ["## Acquisition shifts (stress)", "",
           f"{st['n_videos']} {st.get('split', '')} videos × {st['clips_per_video'] or 'all'} clips, "
           f"each shift applied to every frame (seed {st['seed']}); cells: mean |ΔEF| vs the fp32 reference "
           f"on the same shifted frames ({' / '.join(levels)}); reference: EF MAE vs truth. "
           "❌: a gated condition that failed.", ""]
    if image:
        out += [f"![artefact × shift heat map of mean |ΔEF|]({image})", ""]
    head = ["shift", "reference MAE"] + [a["name"] for a in rows]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    clean = [_f(ref_vt["mae"])] + [_f((_clean(report, a["name"]) or {}).get("ef", {}).get("mean_abs"), ".3f")
                                   for a in rows]
    out.append("| clean | " + " | ".join(clean) + " |")
    for s in st["shifts"]:
        ref = [_cond(st["reference"], s["name"], lv) for lv in levels]
        cells = [" / ".join(_f(c["vs_truth"]["mae"]) if c else "–" for c in ref)]
        for a in rows:
            cs = [_cond(a, s["name"], lv) for lv in levels]
            cells.append(" / ".join(f"{c['vs_reference']['ef']['mean_abs']:.3f}{_mark(c)}" if c else "–"
                                    for c in cs))
        values = ", ".join(format(s["levels"][lv], "g") for lv in levels)
        out.append(f"| {s['name']} ({values}{s['unit']}) | " + " | ".join(cells) + " |")
    fails = failed_conditions(report)
    if fails:
        out += ["", "**Failed stress gates**", ""]
        out += [f"- `{name}` {condition_label(st, c)}: " + "; ".join(
            f"{g['name']} = {_f(g['value'], '.3g')}, needs {g['op']} {g['threshold']:g}"
            for g in c["gates"] if not g["passed"]) for name, c in fails]
    skipped = [a for a in st["artefacts"] if not a.get("conditions")]
    out += [""] * bool(skipped) + [f"- `{a['name']}` not stressed: {a.get('reason') or a['status']}" for a in skipped]
    out += [f"- {n}" for n in st.get("notes") or []]
    t = st.get("timings_s") or {}
    if t.get("total") is not None:
        out += ["", f"Stress wall time {t['total']:.0f} s (shifting the frames {t.get('shift', 0):.0f} s, "
                f"reference {t.get('reference', 0):.0f} s)."]
    return out + [""]


def failed_conditions(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    st = section(report)
    return [(a["name"], c) for a in (st["artefacts"] if st else []) for c in a.get("conditions", [])
            if c.get("passed") is False]


def _f(v: Any, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _png_bytes(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def heatmap_png(report: dict[str, Any]) -> bytes | None:
    """Mean |ΔEF| per artefact (rows) and shift (columns), one panel per level, clean first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = section(report)
    rows = stressed(st) if st else []
    if not rows:
        return None
    levels, shifts = st["levels"], [s["name"] for s in st["shifts"]]
    cols = ["clean"] + shifts
    grids = []
    for lv in levels:
        g = np.full((len(rows), len(cols)), np.nan)
        bad = np.zeros_like(g, dtype=bool)
        for i, a in enumerate(rows):
            cl = _clean(report, a["name"])
            g[i, 0] = cl["ef"]["mean_abs"] if cl else np.nan
            for j, s in enumerate(shifts, 1):
                c = _cond(a, s, lv)
                if c:
                    g[i, j] = c["vs_reference"]["ef"]["mean_abs"]
                    bad[i, j] = c.get("passed") is False
        grids.append((lv, g, bad))
    from matplotlib.colors import PowerNorm

    vmax = max(0.5, float(np.nanmax([np.nanmax(g) for _, g, _ in grids])))
    norm = PowerNorm(0.5, vmin=0.0, vmax=vmax)  # spreads the small values a gate cares about
    width = max(6.5, 2.2 + 0.62 * len(cols))
    fig, axes = plt.subplots(len(grids), 1, figsize=(width, len(grids) * (1.3 + 0.4 * len(rows))), squeeze=False)
    for ax, (lv, g, bad) in zip(axes[:, 0], grids):
        im = ax.imshow(g, cmap="magma_r", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(g):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}" + (" ✗" if bad[i, j] else ""), ha="center", va="center", fontsize=7,
                        color="white" if norm(v) > 0.6 else "black", fontweight="bold" if bad[i, j] else None)
            if bad[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, ec="#1f9bff", lw=2.5))
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), [a["name"] for a in rows], fontsize=8)
        ax.set_title(f"{lv}: mean |ΔEF| vs the fp32 reference (✗, blue outline: stress gate failed)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    return _png_bytes(fig)


def reference_png(report: dict[str, Any]) -> bytes:
    """The reference's EF MAE vs truth per shift, a bar per level, the clean MAE as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = section(report)
    levels, shifts = st["levels"], [s["name"] for s in st["shifts"]]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 + 0.6 * len(shifts)), 3.4))
    x = np.arange(len(shifts))
    w = 0.8 / max(len(levels), 1)
    for k, lv in enumerate(levels):
        vals = [(_cond(st["reference"], s, lv) or {}).get("vs_truth", {}).get("mae", np.nan) for s in shifts]
        ax.bar(x + (k - (len(levels) - 1) / 2) * w, vals, width=w, label=lv, color=f"C{k}")
    ax.axhline(report["reference"]["vs_truth"]["mae"], color="k", lw=0.8, ls="--", label="clean")
    ax.set_xticks(x, shifts, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="EF MAE vs truth (EF points)", title="reference (eager fp32) under each shift")
    ax.legend(fontsize=8)
    return _png_bytes(fig)


def html_section(report: dict[str, Any]) -> str:
    """The stress section of report.html: both figures inlined, then the Markdown tables as HTML."""
    import base64
    import html

    st = section(report)
    if st is None:
        return ""
    uri = lambda b: "data:image/png;base64," + base64.b64encode(b).decode("ascii")  # noqa: E731
    parts = ["<h2 id='stress'>Acquisition shifts (stress)</h2>"]
    heat = heatmap_png(report)
    if heat:
        parts.append(f"<img alt='stress heat map' src='{uri(heat)}'>")
    parts.append(f"<img alt='reference under shifts' src='{uri(reference_png(report))}'>")
    table: list[str] = []
    for line in markdown_lines(report, image=None)[2:]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                table.append(line)
            continue
        if table:
            cells = [[html.escape(c.strip()) for c in r.strip()[1:-1].split(" | ")] for r in table]
            parts.append("<table id='stress-table'><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells[0])
                         + "</tr></thead><tbody>" + "".join(
                             "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
                         + "</tbody></table>")
            table = []
        if line.strip():
            text = line.removeprefix("- ").replace("**", "").replace("`", "")
            parts.append(f"<p class='meta'>{html.escape(text)}</p>")
    return "\n".join(parts)


def write_heatmap(report: dict[str, Any], folder: Path) -> Path | None:
    """stress_heatmap.png beside report.md (atomically); None when there is nothing to draw."""
    png = heatmap_png(report) if section(report) else None
    if png is None:
        return None
    path = Path(folder) / HEATMAP_FILE
    return atomic.write_bytes(path, png)


def junit_cases(report: dict[str, Any], name: str, cls: str) -> list[Any]:
    """One JUnit test case per gated shifted condition of artefact `name`."""
    import xml.etree.ElementTree as ET

    st = section(report)
    row = next((a for a in st["artefacts"] if a["name"] == name), None) if st else None
    cases = []
    for c in (row or {}).get("conditions", []):
        if c.get("passed") is None:
            continue
        case = ET.Element("testcase", classname=f"{cls}.stress", name=f"{name} under {condition_label(st, c)}")
        vals = ", ".join(f"{g['name']} = {_f(g['value'], '.4g')} {g['unit']}" for g in c["gates"])
        if not c["passed"]:
            ET.SubElement(case, "failure", type="FAIL_ACCURACY", message="; ".join(
                f"{g['name']} = {_f(g['value'], '.4g')} {g['unit']}, needs {g['op']} {g['threshold']:g}"
                for g in c["gates"] if not g["passed"]))
        ET.SubElement(case, "system-out").text = vals
        cases.append(case)
    return cases
