"""Working memory per artefact: planned (read from the file) and measured (a fresh process's RSS).

The tiny run's report carries both for its ExecuTorch artefact and the planned estimate for its
Core ML one (its reference interpreter is not measured, like its latency). No byte thresholds:
only that the figures exist, are positive, and that planned <= measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echoedge.convert.memory_plan import activation_plan, liveness_peak
from echoedge.errors import EchoEdgeError
from echoedge.validate import memory as mem


def _entries(tiny_run) -> dict:
    assert tiny_run.rc == 0, tiny_run.stdout
    report = json.loads((tiny_run.out / "report.json").read_text())
    return {e["name"]: e for e in report["artefacts"]}


def test_manifests_carry_the_planned_activation_memory(tiny_run):
    for name in ("executorch-fp32", "coreml-fp32"):
        m = json.loads((tiny_run.out / "artefacts" / name / "manifest.json").read_text())
        p = m["details"]["memory"]
        assert p["planned_bytes"] > 0 and p["graph_peak_bytes"] > 0, p
        assert sum(p["bytes_by_dtype"].values()) > 0 and p["how"]
    assert m["details"]["memory"]["estimate"] is True  # Core ML states no size: ours, labelled


def test_report_has_planned_and_measured_memory(tiny_run):
    et = _entries(tiny_run)["executorch-fp32"]["memory"]
    p, m = et["planned"], et["measured"]
    assert p["estimate"] is False and p["planned_bytes"] > 0 and p["buffers"]
    for k in ("baseline_rss_bytes", "working_bytes", "peak_rss_bytes"):
        assert m[k] > 0, (k, m)
    assert m["calls"] == mem.CALLS and m["batch"] == 1 and m["threads"] == 2
    assert p["planned_bytes"] <= m["working_bytes"]
    assert "fresh process" in et["method"]
    # where the RSS lies, by mapping: the kinds account for what the load and the calls added
    b = m["breakdown"]
    if mem.read_mappings() is None:  # a /proc without smaps: the probe says so with None
        assert b is None
        return
    assert b["largest_block_bytes"] > 0 and b["heap_bytes"] >= 0, b
    added = m["load_added_bytes"] + m["calls_added_bytes"]
    assert abs(sum(b.values()) - added) <= max(2 << 20, added // 10), (b, added)
    md = (tiny_run.out / "report.md").read_text()
    assert f"Memory of executorch-fp32, where the measured RSS lies: {mem.breakdown_text(b)}" in md


def test_breakdown_counts_a_moved_mapping_by_its_growth_only():
    # before: a 50-byte anonymous mapping, the heap, a library; after, the C library has merged the
    # first into a larger mapping at the same place (+10), mapped a new 400-byte block, the heap
    # grew by 7 and 3 more bytes of the library's code were touched.
    before = [(100, 200, "", 50), (300, 400, "[heap]", 20), (500, 600, "/lib/x.so", 5)]
    after = [(100, 260, "", 60), (300, 400, "[heap]", 27), (500, 600, "/lib/x.so", 8),
             (1000, 2000, "", 400), (3000, 3100, "[stack]", 4)]
    b = mem.by_mapping(before, after)
    assert b == {"largest_block_bytes": 400, "other_anonymous_bytes": 10, "heap_bytes": 7,
                 "file_bytes": 3, "other_bytes": 4}
    assert sum(b.values()) == sum(r for *_, r in after) - sum(r for *_, r in before)


def test_mappings_are_read_from_smaps(tmp_path):
    smaps = tmp_path / "smaps"
    smaps.write_text("7f00-7f80 rw-p 00000000 00:00 0 \nSize:  2 kB\nRss:  1 kB\n"
                     "5500-5600 rw-p 00000000 00:00 0    [heap]\nRss:  3 kB\n"
                     "7e00-7e10 r-xp 00000000 08:01 42   /usr/lib/libz.so\nRss:  2 kB\n")
    assert mem.read_mappings(smaps) == [(0x7f00, 0x7f80, "", 1024), (0x5500, 0x5600, "[heap]", 3072),
                                        (0x7e00, 0x7e10, "/usr/lib/libz.so", 2048)]
    assert mem.read_mappings(tmp_path / "none") is None


def test_coreml_estimate_is_labelled_and_interpreter_not_measured(tiny_run):
    cm = _entries(tiny_run)["coreml-fp32"]["memory"]
    assert cm["planned"]["estimate"] is True and "estimate" in cm["planned"]["how"]
    assert cm["measured"] is None and "reference interpreter" in cm["measured_note"]
    md = (tiny_run.out / "report.md").read_text()
    assert "memory MB (planned / measured)" in md and "Memory: planned =" in md
    assert "~" + f"{cm['planned']['planned_bytes'] / 1e6:.1f} / –" in md
    assert "mem MB plan/meas" in tiny_run.stdout  # the CLI's status table
    assert "data-memory" in (tiny_run.out / "report.html").read_text()


def test_planned_is_read_from_the_file_when_the_manifest_predates_it(tiny_run, tmp_path, helpers):
    folder = helpers["copy_with_manifest"](tiny_run.fp32, tmp_path / "old")
    m = json.loads((folder / "manifest.json").read_text())
    stored = m["details"].pop("memory")
    (folder / "manifest.json").write_text(json.dumps(m))
    p = mem.planned(folder)
    assert "read from the model file" in p["source"]
    assert p["planned_bytes"] == stored["planned_bytes"]


def test_no_proc_gives_none_with_a_reason(monkeypatch, tmp_path, tiny_run):
    monkeypatch.setattr(mem, "PROC_STATUS", tmp_path / "no-proc" / "status")
    assert mem.read_status() is None
    measured, why = mem.measure(tiny_run.fp32)
    assert measured is None and "Linux only" in why
    entry = mem.memory_entry(tiny_run.fp32, {"run_status": "ok", "runtime": "executorch-xnnpack"}, 2)
    assert entry["measured"] is None and "Linux only" in entry["measured_note"]
    assert entry["planned"]["planned_bytes"] > 0  # the planned figure needs no /proc


def test_bad_artefact_folder_is_one_line(tmp_path):
    with pytest.raises(EchoEdgeError) as e:
        mem.probe(tmp_path / "missing")
    assert "artefact folder not found" in str(e.value) and "\n" not in str(e.value)
    measured, why = mem.measure(tmp_path / "missing")  # through the fresh process
    assert measured is None and "artefact folder not found" in why and "\n" not in why
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a program at all")
    with pytest.raises(EchoEdgeError) as e:
        activation_plan(bad, "executorch")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_liveness_peak_frees_after_the_last_read():
    # a -> b -> c, with a read again by the last op: a lives throughout; b dies after op 2.
    steps = [(["a"], ["b"]), (["b"], ["c"]), (["a", "c"], ["d"])]
    sizes = {"a": 1, "b": 10, "c": 100, "d": 1000}
    assert liveness_peak(steps, sizes, ["a"], ["d"]) == 1 + 100 + 1000
    assert liveness_peak(steps[:2], sizes, ["a"], ["c"]) == 10 + 100  # a is not read after op 0


def test_memory_is_an_optional_checked_part_of_the_report_schema(tiny_run):
    from echoedge.validate.report_json import check_report

    report = json.loads((tiny_run.out / "report.json").read_text())
    assert check_report(report) == []
    old = json.loads(json.dumps(report))
    for e in old["artefacts"]:
        e.pop("memory")
    assert check_report(old) == []  # reports written before it stay valid
    report["artefacts"][0]["memory"]["measured"]["working_bytes"] = "a lot"
    assert any("memory.measured.working_bytes" in p for p in check_report(report))


def test_memory_entries_keep_the_order_of_their_artefacts(monkeypatch, tmp_path):
    seen = []

    def fake_entry(folder, entry, threads, measure_it=True, log=None):
        seen.append(entry["name"])
        return {"folder": Path(folder).name, "threads": threads}

    monkeypatch.setattr(mem, "memory_entry", fake_entry)
    items = [(tmp_path / n, {"name": n}) for n in ("a", "b", "c")]
    out = mem.memory_entries(items, threads=2, workers=2)
    assert [o["folder"] for o in out] == ["a", "b", "c"] and sorted(seen) == ["a", "b", "c"]
