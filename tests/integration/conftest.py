"""Fixtures that run real node processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.nodeproc import NodeProcess, running_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node shared by a test module; tests keep to their own records."""
    with running_node(tmp_path_factory.mktemp("node")) as proc:
        yield proc


@pytest.fixture(scope="module")
def tokens(node: NodeProcess) -> dict[str, str]:
    """A token per role for the shared node."""
    roles = ("agent", "supervisor", "regional_admin", "central_ops", "compliance_auditor")
    return {role: node.token(role, name=f"{role}-1") for role in roles}


@pytest.fixture
def client(node: NodeProcess, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    """An HTTP client authenticated as an agent."""
    with httpx.Client(
        base_url=node.url, headers={"Authorization": f"Bearer {tokens['agent']}"}, timeout=30
    ) as c:
        yield c


def as_role(node: NodeProcess, tokens: dict[str, str], role: str) -> httpx.Client:
    """A client for another role; close it after use (``with as_role(...) as c``)."""
    return httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {tokens[role]}"}, timeout=30)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"
