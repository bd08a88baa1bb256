"""The routing package obeys the layering rule of STYLE.md, like the flat core modules.

`tests/test_layering.py` checks `edge_node/core/*.py`; this applies the same rule,
with the same parser, to the subpackage `edge_node/core/routing/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_layering import FORBIDDEN_OWN, _imports

PACKAGE = Path(__file__).resolve().parents[2] / "edge_node" / "core" / "routing"
ALLOWED = {"edge_node", "sync"}
MODULES = sorted(PACKAGE.glob("*.py"))


def test_the_package_is_there() -> None:
    assert {"engine.py", "agents.py", "queues.py", "stats.py"} <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_routing_imports_only_stdlib_sync_and_edge_node_core(path: Path) -> None:
    bad = []
    for name in _imports(path):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top not in ALLOWED or any(name == f or name.startswith(f + ".") for f in FORBIDDEN_OWN):
            bad.append(name)
    assert not bad, f"{path.name} imports {bad}; core must stay pure"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_routing_reads_no_clock_and_does_no_io(path: Path) -> None:
    banned = {"time", "datetime", "logging", "asyncio", "random", "os", "socket", "threading"}
    used = {name.split(".")[0] for name in _imports(path)}
    assert not used & banned, f"{path.name} imports {used & banned}"
