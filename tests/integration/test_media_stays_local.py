"""Media stays in its region: a call's recording location never reaches the hub under the default policy.

Theory of operation
-------------------
A hub and one ``eu-de`` node with gRPC run as real processes; the node's policy
is the default, so ``media = "local"``. The switch routes one call over
CallControl and reports its end with a ``recording_uri`` holding a unique
canary. The agent then leaves wrap-up, so the record's last operation
(``wrap_up_s``) comes after the one carrying the recording; once node and hub
digest alike, the hub has merged everything up to it, so the recording's
operation went through the node's egress too.

The test then shows that the node serves the recording's location to its own
users, while the hub's region store holds the call record (operational fields
in plain) with ``recording_uri`` NULL and no version of that field, and no
file under the hub's data directory (SQLite files and WALs, JetStream blocks,
with the hub stopped so everything is on disk) nor its log contains the
canary, which the node's own files do contain (the search is not blind). The
node's audit log accounts for it: its ``egress_batch`` entries count media
values in the ``local`` form and values dropped as local.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto import callcontrol_pb2 as pb
from proto import callcontrol_pb2_grpc as pb_grpc
from security.audit_log import audit_db_path
from tests.integration.nodeproc import NodeProcess, running_hub, running_node
from tests.integration.replication_harness import node_and_hub_clients, wait_converged, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REGION = "eu-de"
CONTACT = "call-1"
GRPC_LINE = re.compile(r"^  grpc: (?P<address>\S+)$", re.MULTILINE)
ROSTER = """
[[agents]]
id = "ann"
skills = { billing = 3 }
languages = ["en", "de"]
capacity = { voice = 1 }

[[queues]]
id = "billing"
skill = "billing"
"""


def grpc_address(node: NodeProcess) -> str:
    match = GRPC_LINE.search(node.log)  # printed before the ready line, so it is in the log already
    assert match is not None, node.log
    return match["address"]


def route_and_record(stub: pb_grpc.CallControlStub, recording_uri: str) -> None:
    """One call: answered, ended with its recording's location, then the agent's wrap-up ends."""
    stub.SetAgentState(pb.SetAgentStateRequest(agent_id="ann", state=pb.AGENT_STATE_AVAILABLE))
    offer = pb.OfferContactRequest(
        contact_id=CONTACT, channel=pb.CHANNEL_VOICE, caller_number="+4930123456", queue_id="billing"
    )
    assert stub.OfferContact(offer).decision.agent.agent_id == "ann"
    events = [
        pb.ContactEvent(contact_id=CONTACT, agent_id="ann", ringing=pb.Ringing()),
        pb.ContactEvent(contact_id=CONTACT, agent_id="ann", answered=pb.Answered()),
        pb.ContactEvent(
            contact_id=CONTACT,
            agent_id="ann",
            ended=pb.Ended(hung_up_by=pb.PARTY_CALLER),
            recording_uri=recording_uri,
        ),
    ]
    summary = stub.ReportEvents(iter(events))
    assert (summary.applied, list(summary.rejected)) == (3, [])
    stub.SetAgentState(
        pb.SetAgentStateRequest(agent_id="ann", state=pb.AGENT_STATE_BREAK, break_reason="lunch")
    )


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every regular file below ``root`` whose bytes contain ``needle``."""
    return [
        str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()
    ]


def egress_batches(node_dir: Path) -> list[dict[str, Any]]:
    """The bodies of the node's ``egress_batch`` audit entries (the node stopped, or read-only)."""
    rows = query(audit_db_path(node_dir), "SELECT body FROM entries WHERE kind = 'egress_batch' ORDER BY seq")
    return [json.loads(str(body)) for (body,) in rows]


def test_a_call_recording_location_never_leaves_the_region(tmp_path: Path) -> None:
    canary = f"s3://recordings-{REGION}/CANARY-{uuid.uuid4().hex}.opus"
    (tmp_path / "roster.toml").write_text(ROSTER, encoding="utf-8")
    config = tmp_path / "node.toml"
    config.write_text(f'[routing]\nroster = "{tmp_path / "roster.toml"}"\n', encoding="utf-8")
    hub_dir, node_dir = tmp_path / "hub", tmp_path / "node"
    grpc_on = ("--grpc", "127.0.0.1:0", "--config", str(config))
    with running_hub(hub_dir) as hub, running_node(node_dir, region=REGION, hub=hub, extra=grpc_on) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            with grpc.insecure_channel(grpc_address(node)) as channel:
                route_and_record(pb_grpc.CallControlStub(channel), canary)

            calls = wait_for(
                lambda: node_api.get("/api/v1/calls").json()["items"],
                lambda items: len(items) == 1 and items[0]["wrap_up_s"] is not None,
                timeout_s=10,
                what="the call record on the node, wrapped up",
            )
            assert (calls[0]["id"], calls[0]["outcome"], calls[0]["recording_uri"]) == (
                CONTACT,
                "answered",
                canary,
            )
            final = wait_converged(node_api, hub_api, REGION)
            assert final["entities"]["call_record"]["count"] == 1

        assert hub.stop() == 0  # everything the hub holds is in its files now
        region_db = hub_dir / "regions" / f"{REGION}.db"
        assert query(region_db, "SELECT outcome, ended_by, recording_uri FROM call_records") == [
            ("answered", "caller", None)
        ]
        versions = {
            name
            for (name,) in query(
                region_db,
                "SELECT field FROM field_versions WHERE entity = 'call_record' AND record_id = ?",
                (CONTACT,),
            )
        }
        assert {"outcome", "ended_by", "wrap_up_s"} <= versions  # the record's operations merged
        assert "recording_uri" not in versions
        assert files_holding(hub_dir, canary.encode()) == []
        assert canary not in hub.node.log

        assert node.stop() == 0
        assert files_holding(node_dir, canary.encode()) != []  # the search finds it where it lives
        batches = egress_batches(node_dir)
        media_forms = {key for b in batches for key in b["values"] if key.startswith("media:")}
        assert media_forms == {"media:local"}  # media left in no other form
        media_local = sum(int(b["values"].get("media:local", 0)) for b in batches)
        dropped_local = sum(int(b["dropped_local"]) for b in batches)
        assert media_local > 0
        assert dropped_local == media_local  # under the default policy, media is the only local class
