"""What a bridge build returns: the bundle folder, its artefacts and golden vectors, and the report
their validated EF error came from; `describe()` is the CLI's closing note."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from echoedge.bridges.bundling import BundleArtefact


@dataclass
class BundleSummary:
    out: Path
    artefacts: list[BundleArtefact]
    golden: dict
    report: Path | None

    def describe(self) -> str:
        lines = [f"wrote {self.out}"]
        for a in self.artefacts:
            g = next(x for x in self.golden["artefacts"] if x["name"] == a.name)
            run = (f"golden vectors from {g['runtime_used']}" if g["status"] == "ok"
                   else f"no golden outputs ({g['reason']})")
            lines.append(f"  {a.name}: {run}; {a.validation.text}")
        return "\n".join(lines)
