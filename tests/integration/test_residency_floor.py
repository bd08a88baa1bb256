"""Central ops' floor for a region: the hub refuses a node policy below it, and whatever was made under one.

The floor is set with the real CLI while the hub runs; the node (default
policy: personal sealed) is refused while the floor demands personal data stay
local, keeps its changes, and replicates once the floor is lowered again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.nodeproc import running_hub, running_node
from tests.integration.replication_harness import client, create_tickets, wait_converged, wait_for

REGION = "eu-de"
API = "/api/v1"


def floor(hub_dir: Path, *options: str) -> str:
    command = ["hub", "residency-floor", "--data-dir", str(hub_dir), "--region", REGION, *options]
    done = subprocess.run(
        [sys.executable, "-m", "edge_node", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_policy_below_the_regions_floor_is_refused_until_the_floor_allows_it(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    with running_hub(hub_dir) as hub, client(hub.url, hub.token()) as hub_api:
        assert floor(hub_dir) == f"residency floor of {REGION}: none"
        assert floor(hub_dir, "--personal", "local") == f"residency floor of {REGION}: personal>=local"

        with (
            running_node(tmp_path / "node", region=REGION, hub=hub) as node,
            client(node.url, node.token("agent")) as node_api,
        ):
            ids = create_tickets(node_api, 3, prefix="held back")
            refused = wait_for(
                lambda: hub_api.get(f"{API}/replication").json()["refused"],
                lambda r: r.get("policy_below_floor", 0) >= 2,  # refused again at each retry
                timeout_s=30,
                what="the hub to refuse the node's policy below the floor",
            )
            assert set(refused) == {"policy_below_floor"}, refused
            status = node_api.get(f"{API}/replication").json()
            assert (status["connected_to_hub"], status["confirmed_seq"]) == (False, 0)
            assert hub_api.get(f"{API}/tickets", params={"region": REGION}).json()["items"] == []

            assert floor(hub_dir, "--personal", "sealed") == f"residency floor of {REGION}: personal>=sealed"
            wait_converged(node_api, hub_api, REGION, timeout_s=30)
            at_hub = {
                t["id"] for t in hub_api.get(f"{API}/tickets", params={"region": REGION}).json()["items"]
            }
            assert at_hub == set(ids)
            report = hub_api.get(
                f"{API}/compliance/{REGION}", params={"since": "2020-01-01", "until": "2100-01-01"}
            ).json()
            assert "personal at least sealed" in report["notes"][0]
