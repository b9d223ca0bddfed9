"""junit.xml from report.json: one test case per artefact (it ran) and per gate, for CI systems.

Mapping: FAIL_RUNTIME -> the artefact's "runs" case fails (type FAIL_RUNTIME); SKIPPED_PLATFORM ->
it is skipped (and fails under --strict, matching the exit code); each gate -> one case that
fails when the gate did not hold; with a stress section, each gated shifted condition (artefact x
shift x level) -> one case that fails when any of its gates did not hold.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from echoedge import atomic
from echoedge.validate.report_stress import junit_cases


def render_junit(report: dict[str, Any]) -> ET.ElementTree:
    strict = bool(report["summary"]["strict"])
    suites = ET.Element("testsuites", name="echo-edge validate")
    total = failures = skipped = 0
    for e in report["artefacts"]:
        suite = ET.SubElement(suites, "testsuite", name=f"{e['name']}")
        cls = f"echo-edge.{e['format']}.{e['precision']}"
        cases = []
        runs = ET.Element("testcase", classname=cls, name=f"{e['name']} converts, loads and runs")
        if e["run_status"] == "FAIL_RUNTIME":
            f = ET.SubElement(runs, "failure", type="FAIL_RUNTIME", message=e.get("reason") or "")
            f.text = f"stage: {e.get('stage')}\n{e.get('reason') or ''}"
        elif e["run_status"] == "SKIPPED_PLATFORM":
            if strict:
                ET.SubElement(runs, "failure", type="SKIPPED_PLATFORM",
                              message=f"skipped under --strict: {e.get('reason') or ''}")
            else:
                ET.SubElement(runs, "skipped", message=e.get("reason") or "")
        cases.append(runs)
        for g in e.get("gates", []):
            value = "n/a" if g["value"] is None else f"{g['value']:.4g}"
            case = ET.Element("testcase", classname=cls,
                              name=f"{e['name']} gate {g['name']} {g['op']} {g['threshold']:g} {g['unit']}")
            if not g["passed"]:
                ET.SubElement(case, "failure", type="FAIL_ACCURACY",
                              message=f"{g['name']} = {value} {g['unit']}, needs {g['op']} {g['threshold']:g}")
            ET.SubElement(case, "system-out").text = f"value: {value} {g['unit']}"
            cases.append(case)
        cases += junit_cases(report, e["name"], cls)  # one per gated shifted condition
        n_fail = sum(1 for c in cases if c.find("failure") is not None)
        n_skip = sum(1 for c in cases if c.find("skipped") is not None)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(n_fail))
        suite.set("errors", "0")
        suite.set("skipped", str(n_skip))
        suite.extend(cases)
        total, failures, skipped = total + len(cases), failures + n_fail, skipped + n_skip
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", "0")
    suites.set("skipped", str(skipped))
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    return tree


def write_junit(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    with atomic.replacing(path) as tmp:
        render_junit(report).write(tmp, encoding="utf-8", xml_declaration=True)
    return path
