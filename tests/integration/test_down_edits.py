"""Central edits down to a region: a node merges only what its hub signed, and only central edits.

Without `edgecare init` anyone who reaches the hub's NATS can publish on a
region's down subject, so the node itself must refuse what its hub did not
send: an unsigned batch, a batch signed by another key, and a batch the hub's
own key signed that reaches beyond what central ops may change (a customer's
name, a ticket's subject). A real central edit still arrives.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from security.frames import sign_frame
from security.identity import NodeIdentity
from sync import subjects
from sync.crdt import FieldChange, Op, Register, Version
from sync.entity import MergeKind
from sync.hlc import HLCTimestamp
from sync.transport.codec import encode_batch, make_batch
from tests.integration.nodeproc import HubProcess, running_hub, running_node
from tests.integration.replication_harness import client, create_tickets, wait_converged, wait_for

REGION = "eu-de"
API = "/api/v1"


def op(hub_id: str, seq: int, entity: str, record_id: str, **fields: str) -> Op:
    hlc = HLCTimestamp(int(time.time() * 1000) + 1000, 0).encode()  # newer than anything the node wrote
    changes = {
        name: FieldChange(MergeKind.REGISTER, register=Register(value, Version(hlc, hub_id)))
        for name, value in fields.items()
    }
    return Op(entity, record_id, hub_id, seq, hlc, changes)


def signed(identity: NodeIdentity, hub_id: str, ops: list[Op]) -> bytes:
    return sign_frame(
        identity.sign,
        identity.fingerprint,
        subjects.down_subject(REGION),
        kind="ops",
        node_id=hub_id,
        region=REGION,
        payload=encode_batch(make_batch(REGION, hub_id, ops)),
        now_ms=int(time.time() * 1000),
    )


async def _publish(hub: HubProcess, frames: list[bytes]) -> None:
    nc = await nats.connect(hub.nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        for frame in frames:
            await js.publish(subjects.down_subject(REGION), frame)
    finally:
        await nc.close()


def test_a_node_merges_only_central_edits_its_hub_signed(tmp_path: Path) -> None:
    with (
        running_hub(tmp_path / "hub") as hub,
        running_node(tmp_path / "node", region=REGION, hub=hub) as node,
    ):
        hub_id = (tmp_path / "hub" / "hub-id").read_text().strip()
        hub_identity = NodeIdentity.load_or_create(tmp_path / "hub" / "identity")
        with client(node.url, node.token("supervisor")) as node_api, client(hub.url, hub.token()) as hub_api:
            (target,) = create_tickets(node_api, 1, prefix="contested")
            wait_converged(node_api, hub_api, REGION)
            before = node_api.get(f"{API}/tickets/{target}").json()

            stranger = NodeIdentity.generate()
            frames = [
                encode_batch(make_batch(REGION, hub_id, [op(hub_id, 900, "ticket", target, priority="P1")])),
                signed(stranger, hub_id, [op(hub_id, 901, "ticket", target, priority="P1")]),
                signed(hub_identity, hub_id, [op(hub_id, 902, "ticket", target, subject="overwritten")]),
                signed(hub_identity, hub_id, [op(hub_id, 903, "customer", "C1", name="Mallory")]),
            ]
            asyncio.run(_publish(hub, frames))
            refused = wait_for(
                lambda: node_api.get(f"{API}/replication").json()["inbound_refused"],
                lambda r: sum(r.values()) >= len(frames),
                timeout_s=30,
                what="the node to refuse the four forged down batches",
            )
            assert refused == {"unsigned": 1, "forged": 1, "malformed": 2}
            after = node_api.get(f"{API}/tickets/{target}").json()
            assert (after["priority"], after["subject"]) == (before["priority"], before["subject"])
            assert node_api.get(f"{API}/customers/C1").status_code == 404

            # the hub's own central edit, signed by it, still arrives
            edit = hub_api.patch(f"{API}/tickets/{REGION}/{target}", json={"priority": "P1"})
            assert edit.status_code == 200, edit.text
            wait_for(
                lambda: node_api.get(f"{API}/tickets/{target}").json()["priority"],
                lambda p: p == "P1",
                timeout_s=30,
                what="the hub's signed central edit to reach the node",
            )
            assert node_api.get(f"{API}/replication").json()["inbound_ops_merged"] >= 1
