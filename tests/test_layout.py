"""The package's shape: imports follow the flow, and modules stay short enough to read in one go.

The flow (DESIGN.md): data -> model -> calibration -> convert -> validate -> quantdebug -> bridges
-> cli. Machinery two stages share lives below both: `echoedge/mil` (the MIL interpreter) below
convert and validate. A module may import its own package, any earlier stage, and the package
root's plain modules (errors); never a later stage, and nothing imports the CLI.

Imports are read with `ast` (every `import` and `from ... import`, including the lazy ones inside
functions), not with a regex, so a string or a comment that names a module is not an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "echoedge"

# Rank in the flow; a module may import ranks <= its own.
STAGES: dict[str, int] = {
    "errors": 0,
    "atomic": 0,
    "console": 0,
    "outlock": 0,  # one writer per output folder (echoedge/outlock.py), below every stage
    "data": 1,
    "model": 2,
    "calibration": 3,
    "mil": 4,
    "convert": 5,
    "validate": 6,
    "quantdebug": 7,
    "bridges": 8,
    "commands": 9,
    "cli": 10,
}
# What only the CLI may import.
CLI_ONLY = {"commands", "cli"}
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _stage(rel: Path) -> str | None:
    """The stage a file of the package belongs to: its first folder, or its own name at the root."""
    parts = rel.parts
    if len(parts) == 1:
        return None if parts[0] == "__init__.py" else parts[0].removesuffix(".py")
    return parts[0]


def _imported(tree: ast.AST, rel: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every echoedge import in a module, relative ones resolved."""
    out: list[tuple[int, str]] = []
    package = ["echoedge", *rel.parts[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from echoedge import cli` names a submodule in the alias
            if name == "echoedge":
                out += [(node.lineno, f"echoedge.{a.name}") for a in node.names]
    return [(line, m) for line, m in out if m == "echoedge" or m.startswith("echoedge.")]


def flow_violations() -> list[str]:
    problems = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        own = _stage(rel)
        rank = STAGES.get(own, 0) if own else 0
        for line, module in _imported(ast.parse(path.read_text(), str(path)), rel):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else None
            if target is None or target == own or target not in STAGES:
                continue
            if target in CLI_ONLY and own not in CLI_ONLY:
                problems.append(f"echoedge/{rel}:{line} imports {module}: nothing imports the CLI")
            elif STAGES[target] > rank:
                problems.append(f"echoedge/{rel}:{line} imports {module}: '{own}' comes before "
                                f"'{target}' in the flow")
    return problems


def test_every_package_has_a_place_in_the_flow() -> None:
    stages = {_stage(p.relative_to(PACKAGE)) for p in _modules()} - {None}
    assert stages - STAGES.keys() == set(), "add the new package to STAGES (and DESIGN.md's flow)"


def test_no_import_runs_against_the_flow() -> None:
    problems = flow_violations()
    assert not problems, "imports against the flow:\n" + "\n".join(problems)


def test_the_walker_sees_lazy_and_relative_imports() -> None:
    src = ("def f():\n    from echoedge.validate.runner import open_runner\n"
           "from .. import cli\nimport echoedge.bridges.golden\n")
    found = sorted(m for _, m in _imported(ast.parse(src), Path("convert/x.py")))
    assert found == ["echoedge", "echoedge.bridges.golden", "echoedge.cli", "echoedge.validate.runner"]


def test_modules_stay_short_or_say_why() -> None:
    long = []
    for path in _modules():
        text = path.read_text()
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and "long because" not in doc.lower():
            long.append(f"echoedge/{path.relative_to(PACKAGE)}: {lines} lines")
    assert not long, (f"modules over {MAX_LINES} lines: split them by concept, or say why at the top "
                      "of the docstring ('Long because ...'):\n" + "\n".join(long))
