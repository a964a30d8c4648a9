"""The layout tells the architecture (docs/architecture.md): no import from the child into the parent,
none from the shared foundation up into the parent, the child or the CLI, and small modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor"
ROOMS = ("parent", "children", "cli", "procedures", "storage")
#: Rooms the foundation (top-level modules, storage, procedures) must not import.
UPPER = {"parent", "children", "cli"}
MAX_LINES = 320


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ROOMS else "top"


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("supervisor"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("supervisor")]
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(("supervisor", *p.relative_to(PACKAGE).with_suffix("").parts)), p) for p in PACKAGE.rglob("*.py")]


def test_no_arrow_from_the_child_into_the_parent_and_none_upward() -> None:
    wrong = []
    for name, path in _modules():
        if name == "supervisor.__main__":
            continue  # the entry point runs the CLI
        here = _room(name)
        for imported in _imports(path):
            there = _room(imported)
            into_parent = here == "children" and there == "parent"
            upward = here in ("top", "storage", "procedures") and there in UPPER
            if into_parent or upward:
                wrong.append(f"{name} imports {imported}")
    assert not wrong


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
