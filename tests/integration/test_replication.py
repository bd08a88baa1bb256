"""A node and a hub converge over real nats-servers (leaf to hub), both ways."""

from __future__ import annotations

from pathlib import Path

from tests.integration.nodeproc import running_hub, running_node
from tests.integration.replication_harness import (
    create_tickets,
    node_and_hub_clients,
    wait_converged,
    wait_for,
)


def test_node_changes_reach_the_hub_and_central_edits_come_back(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub, running_node(tmp_path / "node", hub=hub.leaf_url) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            ids = create_tickets(node_api, 20, prefix="replicated")
            converged = wait_converged(node_api, hub_api, "eu-de")
            assert converged["entities"]["ticket"]["count"] == 20

            fleet = hub_api.get("/api/v1/fleet").json()["nodes"]
            assert [n["region"] for n in fleet] == ["eu-de"]
            assert fleet[0]["state"] == "up"

            # central ops raises a ticket to P1 at the hub; the region receives it and
            # re-derives the SLA on its own calendar, and both converge again
            edited = hub_api.patch(f"/api/v1/tickets/eu-de/{ids[0]}", json={"priority": "P1"})
            assert edited.status_code == 200, edited.text
            ticket = wait_for(
                lambda: node_api.get(f"/api/v1/tickets/{ids[0]}").json(),
                lambda t: t["priority"] == "P1" and t["sla"]["priority"] == "P1",
                timeout_s=30,
                what="the central edit to reach the node",
            )
            assert ticket["first_response_due_at"] < ticket["resolution_due_at"]
            wait_converged(node_api, hub_api, "eu-de")

            status = wait_for(
                lambda: node_api.get("/api/v1/replication").json(),
                lambda s: s["backlog_ops"] == 0,
                timeout_s=30,
                what="the node's backlog to drain",
            )
            assert status["confirmed_seq"] == status["changelog_last_seq"]
