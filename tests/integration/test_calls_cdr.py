"""A real node routes calls and records them with no hub reachable; the records replicate once it returns.

The hub is started once to learn its addresses and stopped, so the node's leaf connection points
at a closed port for the whole time the calls happen. Routing never waits on the hub: every
answer comes from the node alone, and the call detail records sit in its change log. When the
hub comes back on the same ports, the records reach it and both sides digest alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import httpx
import pytest

from proto import callcontrol_pb2 as pb
from proto import callcontrol_pb2_grpc as pb_grpc
from tests.integration.faults import HubAddress, Processes, shut_down
from tests.integration.nodeproc import NodeProcess, start_node
from tests.integration.replication_harness import client, digests, wait_converged, wait_for

REGION = "eu-de"
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
max_length = 1

[[queues]]
id = "sales"
skill = "sales"
"""

pytestmark = pytest.mark.slow


def grpc_address(node: NodeProcess) -> str:
    match = GRPC_LINE.search(node.log)  # printed before the ready line, so it is in the log already
    assert match is not None, node.log
    return match["address"]


def offer(contact_id: str, queue_id: str) -> pb.OfferContactRequest:
    return pb.OfferContactRequest(
        contact_id=contact_id,
        channel=pb.CHANNEL_VOICE,
        caller_number="+4930123456",
        language="de",
        queue_id=queue_id,
    )


def route_calls(stub: pb_grpc.CallControlStub) -> None:
    """Four contacts: answered and completed, waiting then abandoned, refused, still waiting."""
    stub.SetAgentState(pb.SetAgentStateRequest(agent_id="ann", state=pb.AGENT_STATE_AVAILABLE))
    assert stub.OfferContact(offer("call-1", "billing")).decision.agent.agent_id == "ann"
    assert stub.OfferContact(offer("call-2", "billing")).decision.queued.position == 1
    assert stub.OfferContact(offer("call-3", "billing")).decision.WhichOneof("outcome") == "refused"
    assert stub.OfferContact(offer("call-4", "sales")).decision.WhichOneof("outcome") == "queued"
    events = [
        pb.ContactEvent(contact_id="call-1", agent_id="ann", ringing=pb.Ringing()),
        pb.ContactEvent(contact_id="call-1", agent_id="ann", answered=pb.Answered()),
        pb.ContactEvent(contact_id="call-2", abandoned=pb.Abandoned()),
        pb.ContactEvent(contact_id="call-1", agent_id="ann", ended=pb.Ended(hung_up_by=pb.PARTY_AGENT)),
    ]
    summary = stub.ReportEvents(iter(events))
    assert (summary.applied, list(summary.rejected)) == (4, [])
    stub.SetAgentState(
        pb.SetAgentStateRequest(agent_id="ann", state=pb.AGENT_STATE_BREAK, break_reason="lunch")
    )


def call_record_count(c: httpx.Client) -> int | None:
    body = digests(c, REGION)
    entry = body.get("entities", {}).get("call_record")
    return None if entry is None else int(entry["count"])


def test_calls_are_routed_and_recorded_without_the_hub_and_replicate_when_it_returns(tmp_path: Path) -> None:
    (tmp_path / "roster.toml").write_text(ROSTER, encoding="utf-8")
    config = tmp_path / "node.toml"
    config.write_text(f'[routing]\nroster = "{tmp_path / "roster.toml"}"\n', encoding="utf-8")
    with Processes() as procs:
        hub = procs.hub(tmp_path / "hub")
        at = HubAddress.of(hub)
        shut_down(hub)  # from here on, the node's leaf remote is a closed port

        node = start_node(
            tmp_path / "node",
            region=REGION,
            hub=at.leaf_url,
            extra=("--grpc", "127.0.0.1:0", "--config", str(config)),
        )
        procs.started.append(node)
        node_api = procs.client(node.url, node.token("supervisor"))
        with grpc.insecure_channel(grpc_address(node)) as channel:
            route_calls(pb_grpc.CallControlStub(channel))

        calls = wait_for(
            lambda: node_api.get("/api/v1/calls").json()["items"],
            lambda items: len(items) == 4 and any(c["wrap_up_s"] is not None for c in items),
            timeout_s=10,
            what="four call records on the node, call-1 wrapped up",
        )
        by_id = {c["id"]: c for c in calls}
        assert {i: c["outcome"] for i, c in by_id.items()} == {
            "call-1": "answered",
            "call-2": "abandoned",
            "call-3": "refused",
            "call-4": None,
        }
        assert by_id["call-1"]["agent_id"] == "ann"
        assert by_id["call-1"]["caller_country"] == "DE"
        assert by_id["call-1"]["talk_s"] >= 0
        assert by_id["call-1"]["wrap_up_s"] >= 0
        assert by_id["call-2"]["exit_position"] == 1

        response = node_api.get("/api/v1/calls/queue_log")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        events = [line.split("|")[1:5] for line in response.text.splitlines()]
        assert ["call-1", "billing", "ann", "CONNECT"] in events
        assert ["call-1", "billing", "ann", "COMPLETEAGENT"] in events
        assert ["call-2", "billing", "NONE", "ABANDON"] in events
        assert ["call-3", "billing", "NONE", "FULL"] in events
        assert ["call-4", "sales", "NONE", "ENTERQUEUE"] in events

        status = node_api.get("/api/v1/replication").json()
        assert status["connected_to_hub"] is False
        assert status["backlog_ops"] > 0
        recorded = call_record_count(node_api)
        assert recorded == 4

        hub = procs.hub(tmp_path / "hub", at=at)  # the hub returns where the node expects it
        hub_api = procs.client(hub.url, hub.token("central_ops"))
        wait_for(
            lambda: call_record_count(hub_api),
            lambda count: count == recorded,
            timeout_s=30,
            what="the hub to hold the node's call records",
        )
        final = wait_converged(node_api, hub_api, REGION)
        assert final["entities"]["call_record"]["count"] == 4


def test_the_grpc_address_is_announced_and_served(tmp_path: Path) -> None:
    node = start_node(tmp_path / "node", extra=("--grpc", "127.0.0.1:0"))
    try:
        lines = node.log.splitlines()
        ready = next(i for i, line in enumerate(lines) if "ready at http://" in line)
        address = grpc_address(node)
        assert lines[ready - 1] == f"  grpc: {address}"
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CallControlStub(channel)
            with pytest.raises(grpc.RpcError) as caught:  # no roster: no queues
                stub.OfferContact(offer("call-1", "billing"))
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        with client(node.url, node.token("agent")) as api:
            assert api.get("/api/v1/calls").json() == {"items": []}
    finally:
        assert node.stop() == 0
