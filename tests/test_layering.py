"""The layering rule of STYLE.md, enforced by parsing imports.

Core modules (``*/core/*.py``) and ``sync/`` import only the standard library,
``sync`` and their own package, so the domain logic stays pure and testable
without a network, a database or a web framework.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_DIRS = {
    ROOT / "cloud_hub" / "core": {"cloud_hub", "sync"},
    ROOT / "edge_node" / "core": {"edge_node", "sync"},
    ROOT / "sync": {"sync"},
}
# Core must not reach the adapters of its own package either.
FORBIDDEN_OWN = {
    "cloud_hub.service",
    "cloud_hub.http",
    "cloud_hub.app",
    "cloud_hub.bus",
    "edge_node.http",
    "edge_node.store",
    "edge_node.app",
    "edge_node.service",
    "edge_node.cli",
    "edge_node.replication",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _pure_modules() -> list[tuple[Path, frozenset[str]]]:
    return [
        (path, frozenset(allowed))
        for folder, allowed in PURE_DIRS.items()
        for path in sorted(folder.glob("*.py"))
    ]


@pytest.mark.parametrize(("path", "allowed"), _pure_modules(), ids=lambda v: getattr(v, "name", ""))
def test_pure_modules_import_only_stdlib_and_own_packages(path: Path, allowed: frozenset[str]) -> None:
    bad = []
    for name in _imports(path):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top not in allowed or any(name == f or name.startswith(f + ".") for f in FORBIDDEN_OWN):
            bad.append(name)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; core and sync must stay pure"


def test_the_rule_sees_every_pure_module() -> None:
    names = {p.name for p, _ in _pure_modules()}
    assert {"tickets.py", "sla.py", "calendar.py", "entity.py", "hlc.py"} <= names
