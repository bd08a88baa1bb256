"""Helpers for replication tests: a hub and nodes as real processes, and waiting for convergence.

Waiting polls the HTTP APIs for a condition with a deadline; it never sleeps a
fixed time and hopes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from tests.integration.nodeproc import HubProcess, NodeProcess

T = TypeVar("T")
CONVERGE_TIMEOUT_S = 20.0


def wait_for(probe: Callable[[], T], ready: Callable[[T], bool], *, timeout_s: float, what: str) -> T:
    """Poll ``probe`` until ``ready`` holds; fail with the last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not ready(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last value: {value!r}")
        time.sleep(0.1)
        value = probe()
    return value


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def digests(c: httpx.Client, region: str) -> dict[str, Any]:
    response = c.get("/api/v1/digests", params={"region": region})
    if response.status_code != 200:
        return {"status": response.status_code, "body": response.text}
    body: dict[str, Any] = response.json()
    return body


def wait_converged(
    node: httpx.Client, hub: httpx.Client, region: str, *, timeout_s: float = CONVERGE_TIMEOUT_S
) -> dict[str, Any]:
    """Wait until node and hub serve equal digests for the region; return them."""
    final = wait_for(
        lambda: (digests(node, region), digests(hub, region)),
        lambda pair: pair[0] == pair[1] and "entities" in pair[0],
        timeout_s=timeout_s,
        what=f"digests of {region} to match between node and hub",
    )
    return final[0]


def create_tickets(c: httpx.Client, count: int, *, prefix: str) -> list[str]:
    """Create ``count`` consult tickets; return their ids."""
    ids = []
    for i in range(count):
        response = c.post("/api/v1/tickets", json={"type": "consult", "subject": f"{prefix} {i}"})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def node_and_hub_clients(node: NodeProcess, hub: HubProcess) -> tuple[httpx.Client, httpx.Client]:
    return client(node.url, node.token("supervisor")), client(hub.url, hub.token("central_ops"))
