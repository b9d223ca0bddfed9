"""report.md: the summary a person pastes into a pull request, rendered from report.json only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echoedge import atomic
from echoedge.model.evaluate import NO_TRACED_FRAME_SEEN, NO_TRACINGS, NOT_PRODUCED
from echoedge.validate.latency import cpu_line

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


def landmark_cell(value: float | None, report: dict[str, Any], spec: str = ".2f") -> str:
    """A landmark figure, or why there is none ("n/a (no tracings)" on EF-only data, "– (not
    produced by this model)" for an EF-only model)."""
    if value is not None:
        return format(value, spec)
    if not produces(report, "ed_landmarks"):
        return NOT_PRODUCED
    n_traced = report["data"].get("n_traced")
    if n_traced is None:  # a report written before n_traced was recorded
        return "–"
    return NO_TRACINGS if n_traced == 0 else NO_TRACED_FRAME_SEEN


def produces(report: dict[str, Any], output: str) -> bool:
    """Whether the validated model has `output`; reports written before `reference.outputs`
    was recorded are Echo-E3Net's, which has all five."""
    outputs = report["reference"].get("outputs")
    return outputs is None or output in outputs


def truth_lines(report: dict[str, Any]) -> list[str]:
    """The reference's volume and landmark errors vs truth, and the always-mean EF baseline.

    Plain text shared by the Markdown, the HTML and the CLI, so the three say the same.
    """
    vt, d = report["reference"]["vs_truth"], report["data"]
    lm = landmark_cell(vt.get("landmark_error_px"), report)
    traced = d.get("n_traced")
    traced = "" if traced is None or traced in (0, d["n_videos"]) else \
        f" ({traced} of {d['n_videos']} videos traced)"
    if produces(report, "edv"):
        lines = [f"Reference vs truth: EF MAE {fmt(vt['mae'])}, EDV MAE {fmt(vt.get('edv_mae'), '.1f')} mL, "
                 f"ESV MAE {fmt(vt.get('esv_mae'), '.1f')} mL, landmarks {lm}"
                 f"{' px' if vt.get('landmark_error_px') is not None else ''}{traced}"]
    else:  # an EF-only model (EchoNet-Dynamic's video ResNets)
        lines = [f"Reference vs truth ({report['reference'].get('model')}, EF only): EF MAE "
                 f"{fmt(vt['mae'])}; EDV, ESV, landmarks {NOT_PRODUCED}"]
    b = report.get("baseline")
    if b is not None:  # reports written before the baseline was recorded lack it
        lines.append(f"Baseline: {b['description']}" + (f": EF MAE {b['mae']:.2f}" if b.get("mae") is not None else ""))
    return lines


def host_line(report: dict[str, Any]) -> str:
    """Where the latencies were measured, for the CLI under the status table: a speed-up of int8
    over fp32 depends on the CPU's SIMD (latency.cpu_line) as much as on the model."""
    host = report["host"]
    return (f"Latency: batch 1, {host['threads']} threads, {cpu_line(host)}, "
            f"host {host['id']}{load_note(host)}")


def status_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per artefact (reference first) with the headline figures as display strings.

    Shared by the Markdown, the HTML and the CLI summary so the three never disagree.
    """
    from echoedge.validate.memory import memory_cell

    ref = report["reference"]
    rl = ref.get("latency") or {}
    rows = [{
        "artefact": "reference (eager fp32)", "format": "pytorch", "precision": "fp32",
        "runtime": ref["runtime"], "status": "REFERENCE", "size": "–", "int8_w": "–",
        "mae": fmt(ref["vs_truth"]["mae"]), "mean_d": "0", "p95_d": "0", "max_d": "0",
        "band_ref": "100.0", "band_truth": fmt(100 * ref["vs_truth"]["band_agreement"], ".1f"),
        "latency": f"{rl['p50_ms']:.1f} / {rl['p90_ms']:.1f}" if rl else "–", "speedup": "1.00×",
        "memory": "–", "reason": "",
    }]
    for e in report["artefacts"]:
        vr, vt = e.get("vs_reference"), e.get("vs_truth")
        rows.append({
            "artefact": e["name"], "format": e["format"], "precision": e["precision"],
            "runtime": e.get("runtime") or "–", "status": e["status"],
            "size": size_mb(e["facts"].get("model_bytes")),
            "int8_w": fmt(100 * e["facts"]["int8_weight_share"], ".1f")
            if e["facts"].get("int8_weight_share") is not None else "–",
            "mae": fmt(vt["mae"]) if vt else "–",
            "mean_d": fmt(vr["ef"]["mean_abs"], ".3f") if vr else "–",
            "p95_d": fmt(vr["ef"]["p95_abs"], ".3f") if vr else "–",
            "max_d": fmt(vr["ef"]["max_abs"], ".3f") if vr else "–",
            "band_ref": band_cell(e),
            "band_truth": fmt(100 * vt["band_agreement"], ".1f") if vt else "–",
            "latency": latency_cell(e),
            "speedup": f"{e['speedup_vs_reference']:.2f}×" if e.get("speedup_vs_reference") else "–",
            "memory": memory_cell(e.get("memory")),
            "reason": e.get("reason") or "",
        })
    if report.get("stress") is not None:
        from echoedge.validate.report_stress import reference_worst_cell, worst_shift_cell

        rows[0]["worst_shift"] = reference_worst_cell(report)
        for row, e in zip(rows[1:], report["artefacts"]):
            row["worst_shift"] = worst_shift_cell(report, e["name"])
    return rows


def band_cell(entry: dict[str, Any]) -> str:
    """The strict band agreement with the reference, and the gated figure beside it when the gate
    left borderline flips out (gates.band_margin_ef)."""
    vr = entry.get("vs_reference")
    if not vr:
        return "–"
    strict = fmt(100 * vr["band_agreement"], ".1f")
    gate = next((g for g in entry.get("gates") or [] if g["name"] == "band_agreement_reference"), None)
    if gate is None or gate["value"] is None or abs(gate["value"] - 100 * vr["band_agreement"]) < 1e-9:
        return strict
    return f"{strict} ({fmt(gate['value'], '.1f')} gated)"


COLUMNS = (("artefact", "artefact"), ("status", "status"), ("runtime", "runtime"), ("size", "size"),
           ("int8_w", "int8 weights %"), ("mae", "EF MAE vs truth"), ("mean_d", "mean |ΔEF|"), ("p95_d", "p95 |ΔEF|"),
           ("max_d", "max |ΔEF|"), ("band_ref", "band agr. ref %"), ("band_truth", "band agr. truth %"),
           ("latency", "p50 / p90 ms"), ("speedup", "speed-up"), ("memory", "memory MB (planned / measured)"))
WORST_SHIFT = ("worst_shift", "worst shift (mean |ΔEF|; reference: MAE)")


def columns(report: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The status table's columns: a stressed report adds each artefact's worst shift."""
    return COLUMNS + ((WORST_SHIFT,) if report.get("stress") is not None else ())


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
        "| " + " | ".join(h for _, h in columns(report)) + " |",
        "|" + "|".join("---" for _ in columns(report)) + "|",
    ]
    for row in status_rows(report):
        status = STATUS_MARK.get(row["status"], row["status"])
        cells = [status if k == "status" else row[k] for k, _ in columns(report)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("ΔEF = artefact EF − reference EF per video (EF points); EF bands <40 / 40–49 / ≥50 %; "
                 "band agreement counts every flip, and its gate (in brackets where it differs) leaves out "
                 "a flip whose reference EF lies within band_margin_ef of the artefact's band. "
                 f"Latency: batch 1, {host['threads']} threads, every accuracy call after the first "
                 f"{report['settings']['warmup']} (warm-up), at least {report['settings']['latency_runs']} "
                 "timed calls; speed-up vs the eager reference.")
    lines += [""] + [f"- {t}" for t in truth_lines(report)] + [f"- {t}" for t in memory_lines(report)]
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
    lines += ["", f"Host `{host['id']}`: {cpu_line(host)}, {host['logical_cores']} cores, "
              f"{host['threads']} threads{load_note(host)}; " + ", ".join(f"{k} {v}" for k, v in host["runtime_versions"].items()), ""]
    if report.get("realtime"):  # `run`: the smallest real-time hop per artefact
        from echoedge.validate.realtime import markdown_lines as realtime_lines

        lines += realtime_lines(report)
    if report.get("stress") is not None:
        from echoedge.validate.report_stress import markdown_lines

        lines += markdown_lines(report)
    if report.get("debug_quant"):  # added by `echo-edge debug-quant --report`
        lines += ["## Quantization debugging", "", render_debug_quant(report["debug_quant"]), ""]
    return "\n".join(lines)


def render_debug_quant(dq: dict[str, Any]) -> str:
    """The "Quantization debugging" section (echo-edge debug-quant's debug_quant.json), in Markdown.

    Rendered from the dict alone: a report.json carries it under the key `debug_quant`, and
    debug_quant.md is this text. Parts that did not run are left out.
    """
    v = dq["videos"]
    shifted = f" shifted by `{v['shift']}` ({v.get('shift_level')})" if v.get("shift") else ""
    out = [f"{len(v['names'])} {v['split']} videos{shifted} x {v['clips_per_video']} clip(s), ΔEF against the "
           f"fp32 deploy form of `{Path(dq['checkpoint']).name}` "
           f"({dq['model'] + ', ' if dq.get('model') else ''}{dq['checkpoint_sha256'][:12]}); "
           f"parts: {', '.join(dq['parts'])}."]
    att = dq.get("attribution")
    if att is not None:
        out += ["", "### Error attribution", "",
                "| artefact | runtime | mean \\|ΔEF\\| | quantization (simulated) | conversion/runtime | "
                "quantization share | signed: total = quant + conv |", "|---|---|---|---|---|---|---|"]
        for a in att:
            share = a.get("quantization_share")  # null when both terms are 0
            share = "–" if share is None else f"{100 * share:.0f} %"
            out.append(f"| {a['artefact']} | {a['runtime']} | {a['total']:.3f} | {a['quantization']:.3f} | "
                       f"{a['conversion']:.3f} | {share} | "
                       f"{a['bias_total']:+.3f} = {a['bias_quantization']:+.3f} {a['bias_conversion']:+.3f} |")
        skipped = dq.get("attribution_skipped") or {}
        out += [""] * bool(skipped) + [f"- `{k}` not attributed: {r}" for k, r in skipped.items()]
    for s in dq.get("sensitivity") or []:
        what = "EF points won back when kept float" if s["mode"] == "all-but" else "mean |ΔEF| with only it int8"
        out += ["", f"### Per-layer sensitivity: {s['family']} ({', '.join(s['formats'])}, {s['mode']})", "",
                f"All int8 (simulated): mean |ΔEF| {s['baseline']:.3f}; {s['evaluations']} simulations, "
                f"{s['wall_s']:.0f} s ({s['seconds_per_evaluation']:.1f} s each), "
                f"{s['calibration_clips']} calibration clips.", "",
                f"| rank | unit | weights | mean \\|ΔEF\\| | effect ({what}) |", "|---|---|---|---|---|"]
        for i, u in enumerate(s["units"][:10], 1):
            out.append(f"| {i} | `{u['unit']}` | {u['params']} | {u['mean_abs_def']:.3f} | {u['effect']:+.3f} |")
        if len(s["units"]) > 10:
            out.append(f"| | … {len(s['units']) - 10} more in debug_quant.json | | | |")
    budget = dq.get("budget")
    if budget is not None:
        out += ["", f"### Mixed precision to a budget of {dq['settings']['budget']:g} EF points", ""]
        for b in budget:
            if not b["met"]:
                out.append(f"- **{b['format']} {b['precision']}: not met** — {b['reason']}")
            elif not b["kept_float"]:
                out.append(f"- {b['format']} {b['precision']}: met by the pure recipe (simulated "
                           f"{b['simulated']:.3f}); nothing kept float")
            else:
                m = b.get("mixed")
                real = (f"; emitted `{m['name']}`: mean |ΔEF| {m['mean_abs_def']:.3f} in {m['runtime']}, "
                        f"p50 {fmt(m['latency_ms'], '.1f')} ms, {fmt(m.get('speedup_vs_eager'), '.2f')}× eager fp32"
                        + (f", {b['latency_cost_vs_pure_ms']:+.1f} ms vs pure" if b.get("latency_cost_vs_pure_ms")
                           is not None else "")) if m else ""
                out.append(f"- {b['format']} {b['precision']}: {len(b['kept_float'])} unit(s) float "
                           f"(simulated {b['simulated']:.3f}){real}: " + ", ".join(f"`{u}`" for u in b["kept_float"]))
            mem = b.get("memory")
            if mem:
                out.append(f"  - memory limit {mem['limit_mb']:g} MB: search estimate {fmt(mem['estimate_mb'], '.1f')} MB; "
                           f"the emitted file's graph liveness peak {mem['graph_peak_mb']:.1f} MB "
                           f"({'within' if mem['within_limit'] else '**over**'} the limit), planned "
                           f"{mem['planned_mb']:.1f} MB ({mem['planned_how']})")
        cands = dq.get("candidates")
        if cands:
            out += ["", "| candidate | runtime | float units | mean \\|ΔEF\\| | simulated | p50 ms | speed-up vs eager | "
                    "size | Pareto | goal |", "|---|---|---|---|---|---|---|---|---|---|"]
            for c in cands:
                goal = ("—" if c["folder"] is None or c["precision"] in ("fp32", "fp16")  # not int8-or-mixed
                        else "✅" if c.get("meets_goal") else "❌")
                out.append(f"| {c['name']} | {c['runtime']} | {len(c['kept_float'])} | {c['mean_abs_def']:.3f} | "
                           f"{fmt(c.get('simulated_abs_def'), '.3f')} | {fmt(c['latency_ms'], '.1f')} | "
                           f"{fmt(c.get('speedup_vs_eager'), '.2f')} | {size_mb(c['size_bytes'])} | "
                           f"{'★' if c.get('pareto') else ''} | {goal} |")
            out.append("")
            out.append("Goal: mean |ΔEF| within the budget and at least 2.5× faster than eager fp32 "
                       "(latencies timed side by side, batch 1).")
        goal = dq.get("goal")
        if goal:
            out += ["", "**Goal per format** (an int8-or-mixed artefact within the budget and ≥ 2.5× eager fp32):", ""]
            for g in goal:
                mark = {"met": "✅ met", "unmeasured": "⚪ speed unmeasured"}.get(g["status"], "❌ not met")
                what = (f" by `{g['candidate']}` (mean |ΔEF| {g['mean_abs_def']:.3f}, "
                        f"{g['speedup_vs_eager']:.2f}× eager)" if g["status"] == "met" else f": {g['reason']}")
                out.append(f"- {g['format']}: {mark}{what}")
    cal = dq.get("calibration")
    if cal:
        st, cv = cal["settings"], cal["videos"]
        out += ["", "### Calibration stability and size", "",
                f"{cal['label']}: {st['draws']} disjoint {st['split']} draws per N (no video shared); "
                f"low EF = {st['low_ef_by']} EF < {st['low_ef']:g} ({cv['n_low_ef']} of {len(cv['names'])} videos).", "",
                "| strategy | N | draws | mean \\|ΔEF\\| | sd | min | max | low-EF mean | rest mean |",
                "|---|---|---|---|---|---|---|---|---|"]
        recs = cal.get("recommendations") or {}
        for p in cal["points"]:
            star = " ★" if (recs.get(p["strategy"]) or {}).get("size") == p["size"] else ""
            out.append(f"| {p['strategy']} | {p['size']}{star} | {p['draws']} | {fmt(p['mean'], '.3f')} | "
                       f"{fmt(p['sd'], '.3f')} | {fmt(p['min'], '.3f')} | {fmt(p['max'], '.3f')} | "
                       f"{fmt(p['low_ef_mean'], '.3f')} | {fmt(p['rest_mean'], '.3f')} |")
        out.append("")
        for s, r in recs.items():
            out.append(f"- {s}: recommended N = {r['size']} ({'' if r['rule_met'] else 'rule not met: '}{r['reason']})")
        if cal.get("overall"):
            o = cal["overall"]
            out.append(f"- overall: **{o['strategy']}, N = {o['size']}** (mean |ΔEF| {o['mean']:.3f})")
        out += [f"- note: {n}" for n in cal.get("notes") or []]
        c = cal.get("cost") or {}
        out.append(f"- cost: {c.get('models')} simulated models, {c.get('clips_calibrated')} distinct calibration "
                   f"clips for {c.get('clips_requested')} requested, {fmt(c.get('total_s'), '.0f')} s in all "
                   f"({fmt(c.get('evaluate_s_per_clip'), '.2f')} s per evaluated clip)")
    out += [f"- {n}" for n in dq.get("notes") or []]
    t = dq.get("timings_s") or {}
    if t:
        out += ["", "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())]
    return "\n".join(out)


def summary_table(report: dict[str, Any]) -> str:
    """A fixed-width table for the terminal (same rows as the Markdown)."""
    cols = (("artefact", "artefact"), ("status", "status"), ("mae", "MAE"), ("mean_d", "mean|ΔEF|"),
            ("p95_d", "p95|ΔEF|"), ("band_ref", "band%ref"), ("latency", "p50/p90 ms"),
            ("speedup", "speed-up"), ("size", "size"), ("int8_w", "int8 w%"), ("memory", "mem MB plan/meas"))
    cols += (("worst_shift", "worst shift"),) if report.get("stress") is not None else ()
    rows = status_rows(report)
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in cols]
    out = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(r[k].ljust(w) for (k, _), w in zip(cols, widths)))
        if r["reason"]:
            out.append(f"    {r['reason']}")
    return "\n".join(out)


def memory_lines(report: dict[str, Any]) -> list[str]:
    """How the memory column was measured (one line), when the report has memory figures; then
    each measured artefact's breakdown by mapping (echoedge.validate.memory.by_mapping)."""
    from echoedge.validate.memory import breakdown_text

    mems = [e["memory"] for e in report["artefacts"] if e.get("memory")]
    if not mems:
        return []
    return ["Memory: planned = activation memory as the format states it (ExecuTorch: the method's "
            "memory-planned buffers; TFLite: the interpreter's arena; Core ML, marked ~: an estimate, the "
            f"liveness peak of the MIL program's tensors); measured = {mems[0]['method']}."] + [
        f"Memory of {e['name']}: {e['memory'][k]}" for e in report["artefacts"] if e.get("memory")
        for k in ("planned_note", "measured_note") if e["memory"].get(k)] + [
        f"Memory of {e['name']}, where the measured RSS lies: {text}" for e in report["artefacts"]
        if (text := breakdown_text(((e.get("memory") or {}).get("measured") or {}).get("breakdown")))]


# Other work while the latencies were timed (latency.LoadWindow) that marks the figures as
# inflated: a quarter of a core's time or more taken by other processes, or 10 % stolen.
BUSY_OTHER_CORES = 0.25
BUSY_STEAL = 0.10


def load_note(host: dict[str, Any]) -> str:
    w = host.get("load_while_timing")
    if w:
        busy = w["other_processes_cores"] >= BUSY_OTHER_CORES or w["steal_share"] >= BUSY_STEAL
        return (f", other processes {w['other_processes_cores']:.2f} cores and steal "
                f"{100 * w['steal_share']:.0f} % while timing" + (" — busy host: latency inflated" if busy else ""))
    load = host.get("load_average_1m")  # reports written before load_while_timing
    if load is None:
        return ""
    busy = " — busy host: latency inflated" if load > host.get("logical_cores", 0) else ""
    return f", 1-min load {load:.1f}{busy}"


def write_markdown(report: dict[str, Any], path: str | Path) -> Path:
    """report.md, and beside it the stress heat map it links (when the report has one)."""
    from echoedge.validate.report_stress import write_heatmap

    path = Path(path)
    write_heatmap(report, path.parent)
    return atomic.write_text(path, render_markdown(report))
