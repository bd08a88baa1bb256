"""The SLA timer of a real node fires warnings and breaches, and escalates, on its own.

The node is configured with P1 targets of a few seconds (24x7), so the test
waits for the node's own timer instead of faking time. Waiting here polls the
API for a condition with a deadline; it never sleeps a fixed time and hopes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.integration.nodeproc import running_node

FAST_P1 = """
[tickets]
warn_share = 0.5
escalate_on_breach = true

[tickets.priorities.P1]
first_response_min = 0.05   # 3 s
next_update_min = 0.05
resolution_min = 0.5
always_open = true
"""


def _wait_for(
    probe: Callable[[], dict[str, Any]], ready: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _fault(client: httpx.Client) -> dict[str, Any]:
    response = client.post(
        "/api/v1/tickets",
        json={
            "type": "fault",
            "priority": "P1",
            "subject": "Mast down",
            "location": "cell 4711",
            "symptom": "no service",
            "impact_scope": "district",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_breach_fires_on_time_and_escalates_to_tier_two(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "node.toml").write_text(FAST_P1, encoding="utf-8")
    with running_node(data_dir) as node:
        headers = {"Authorization": f"Bearer {node.token('agent')}"}
        with httpx.Client(base_url=node.url, headers=headers, timeout=10) as client:
            created = _fault(client)
            assert created["department"] == "network-ops"
            due = datetime.fromisoformat(created["first_response_due_at"])
            created_at = datetime.fromisoformat(created["created_at"])
            assert 2.9 <= (due - created_at).total_seconds() <= 3.1

            ticket = _wait_for(
                lambda: client.get(f"/api/v1/tickets/{created['id']}").json(),
                lambda t: bool(t["breached"]),
                timeout_s=30,
            )
    assert ticket["breached"] is True, ticket
    first_response = ticket["sla"]["first_response"]
    assert first_response["warned_at"] is not None
    assert datetime.fromisoformat(first_response["breached_at"]) == due
    assert ticket["tier"] == 2
    assert ticket["department"] == "network-l2"
    assert ticket["escalation_reason"] == "SLA breached"
    assert "SLABreached" in node.log
    assert "TicketEscalated" in node.log


def test_a_breach_that_fell_due_while_the_node_was_down_is_applied_at_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "node.toml").write_text(FAST_P1, encoding="utf-8")
    with running_node(data_dir) as node:
        token = node.token("agent")
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}) as client:
            created = _fault(client)
    due = datetime.fromisoformat(created["first_response_due_at"])
    # The node is down now; let the due time pass before it comes back.
    while datetime.now(due.tzinfo) <= due:
        time.sleep(0.1)
    with (
        running_node(data_dir) as node,
        httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        ticket = _wait_for(
            lambda: client.get(f"/api/v1/tickets/{created['id']}").json(),
            lambda t: bool(t["breached"]),
            timeout_s=30,
        )
    assert ticket["breached"] is True
    assert ticket["tier"] == 2
