"""Replication on the wire: what the hub does with frames it did not expect, over real processes.

A hub and nodes run as real processes (nats-server leaf to hub); the tests
connect their own nats-py client to the hub's nats-server (``hub.nats_url``)
and replay, reorder, re-split and forge frames on the ``EC_OPS`` stream. Every
batch travels in a signed frame (``security.frames``); a test signs frames *as
the node* with the node's own key, read from its data directory
(``<data dir>/identity/node.key``), which is what a node would do:

* duplicates and reordering: every stored frame published again with the same
  message ids is dropped by the stream's dedup; byte-identical copies under new
  message ids are refused as ``replayed`` (counted, never merged); the same
  batches re-signed with fresh nonces, in reverse and shuffled order, and
  re-cut into single-op and small batches sent out of order, are merged again.
  The region's digests at the hub must not move by a bit, and the merge
  counters prove the frames were processed. A fresh hub, enrolled into by the
  node's key, fed the whole log backwards converges with the node.
* two regions: one hub, an ``eu-de`` and a ``cn-sh`` node; each region's data
  reaches the hub and only its own; a central edit of a ``cn-sh`` ticket goes
  down to ``cn-sh``'s stream only.
* refusals: one frame or more for each reason the hub refuses an ops frame for
  (unsigned, unknown node, forged, altered, malformed, unregistered policy,
  wrong region, replayed, oversized) is counted under that reason and never
  merged; ``test_bad_frames.py`` does the same ten thousand times over.

"Processed" is read from the hub's durable merge consumer: its ack floor
reaches the stream's last sequence only after every message was merged (and
committed) or terminated. Waiting polls conditions with deadlines; every
process is stopped by its context manager, also when a test fails.

The NATS and signing helpers here are shared with ``test_bad_frames.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import nats
import nats.errors
import pytest
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from cloud_hub.bus import MERGER_DURABLE
from edge_node import __version__
from edge_node.egress import POLICY_META_KEY
from security.frames import EnrolledKey, VerifiedFrame, sign_frame, verify_frame
from security.identity import NodeIdentity
from security.replay import ReplayGuard
from sync import subjects
from sync.crdt import Op
from sync.residency import ResidencyPolicy
from sync.transport.codec import (
    WIRE_VERSION,
    OpBatch,
    WireError,
    decode_batch,
    encode_batch,
    split_batches,
)
from tests.integration.nodeproc import HubProcess, NodeProcess, running_hub, running_node
from tests.integration.replication_harness import (
    client,
    create_tickets,
    digests,
    node_and_hub_clients,
    wait_converged,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

API = "/api/v1"
EU, CN = "eu-de", "cn-sh"
NATS_DEADLINE_S = 20.0
HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS
Frame = tuple[str, bytes, dict[str, str] | None]  # subject, payload, headers


# --- signing as the node -------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def node_policy(data_dir: Path) -> ResidencyPolicy:
    """The residency policy the node in ``data_dir`` has in force (from its node metadata)."""
    db = data_dir / "edgecare.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (POLICY_META_KEY,)).fetchone()
    assert row is not None, f"no residency policy in {db}"
    raw = json.loads(row[0])
    return ResidencyPolicy.from_dict(raw["forms"], version=int(raw["version"]))


@dataclass(frozen=True)
class NodeSigner:
    """Signs frames as one node, with its enrolled key, as its replicator would."""

    identity: NodeIdentity
    node_id: str
    region: str
    policy: ResidencyPolicy

    @classmethod
    def of(cls, node: NodeProcess, node_id: str, region: str = EU) -> NodeSigner:
        identity = NodeIdentity.load_or_create(node.data_dir / "identity")
        return cls(identity, node_id, region, node_policy(node.data_dir))

    @property
    def subject(self) -> str:
        return subjects.ops_subject(self.region, self.node_id)

    @property
    def key(self) -> EnrolledKey:
        return EnrolledKey(self.node_id, self.region, self.identity.public_key)

    def frame(
        self,
        subject: str,
        payload: bytes,
        *,
        kind: str = "ops",
        node_id: str | None = None,
        region: str | None = None,
        signed_at_ms: int | None = None,
        policy_version: int | None = None,
    ) -> bytes:
        """A frame of ``payload`` for ``subject``, signed now with a fresh nonce (fields overridable)."""
        return sign_frame(
            self.identity.sign,
            self.identity.fingerprint,
            subject,
            kind=kind,
            node_id=node_id or self.node_id,
            region=region or self.region,
            payload=payload,
            now_ms=now_ms() if signed_at_ms is None else signed_at_ms,
            policy_version=self.policy.version if policy_version is None else policy_version,
        )

    def batch_frame(self, batch: OpBatch) -> bytes:
        """``batch`` freshly signed for the node's ops subject."""
        return self.frame(self.subject, encode_batch(batch))

    def opened(self, stored: Stored) -> VerifiedFrame:
        """A stored frame, verified against the node's key (it must be the node's, as it was sent)."""
        return verify_frame(
            stored.data,
            stored.subject,
            expected_kind="ops",
            subject_region=self.region,
            subject_node=self.node_id,
            lookup={self.node_id: self.key}.get,
            now_ms=now_ms(),
            guard=ReplayGuard(),
        )

    def batch_of(self, stored: Stored) -> OpBatch:
        return decode_batch(self.opened(stored).payload)

    def request_frame(self, subject: str, kind: str, body: dict[str, object]) -> bytes:
        return self.frame(subject, msgpack.packb(body), kind=kind)


def enroll_at(hub: HubProcess, signer: NodeSigner) -> None:
    """Enroll the node's key at ``hub`` and register its residency policy, as its replicator does."""
    token = hub.enroll_token(signer.region)
    enroll = subjects.enroll_subject(signer.region)
    body: dict[str, object] = {
        "token": token,
        "public_key": signer.identity.public_key,
        "version": __version__,
    }
    # the hub says it is ready before its bus has subscribed: ask (freshly signed) until it answers
    answer = wait_for(
        lambda: request(hub, enroll, signer.request_frame(enroll, "enroll", body)),
        lambda answer: answer is not None,
        timeout_s=NATS_DEADLINE_S,
        what="the hub to answer the enrollment",
    )
    assert answer["ok"] is True, answer
    policy = subjects.policy_subject(signer.region, signer.node_id)
    forms: dict[str, object] = {"version": signer.policy.version, "forms": signer.policy.as_dict()}
    assert request(hub, policy, signer.request_frame(policy, "policy", forms)) == {"ok": True}


# --- NATS side: read the stream, publish frames, wait for the merger ----------------------------


@dataclass(frozen=True)
class Stored:
    """One message of one of the hub's streams."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


async def _read_stream(nats_url: str, stream: str) -> list[Stored]:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        state = (await js.stream_info(stream)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            raw = await js.get_msg(stream, seq)
            assert raw.subject is not None
            assert raw.data is not None
            out.append(Stored(seq, raw.subject, raw.data, dict(raw.headers or {})))
        return out
    finally:
        await nc.close()


def read_stream(hub: HubProcess, stream: str = subjects.HUB_OPS_STREAM) -> list[Stored]:
    """Every message stored in one of the hub's streams, in stream order."""
    return asyncio.run(_read_stream(hub.nats_url, stream))


async def _publish(nats_url: str, frames: Sequence[Frame]) -> list[PubAck]:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        return [await js.publish(s, data, headers=h) for s, data, h in frames]
    finally:
        await nc.close()


def publish(hub: HubProcess, frames: Sequence[Frame]) -> list[PubAck]:
    """Publish frames into the hub's JetStream, one PubAck each, in the order given."""
    return asyncio.run(_publish(hub.nats_url, frames))


async def _request(nats_url: str, subject: str, body: bytes) -> Any:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        return msgpack.unpackb((await nc.request(subject, body, timeout=5)).data)
    finally:
        await nc.close()


def request(hub: HubProcess, subject: str, body: bytes) -> Any:
    """A core NATS request to the hub, the answer unpacked; ``None`` while nobody answers."""
    try:
        return asyncio.run(_request(hub.nats_url, subject, body))
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return None


async def _consumer_state(nats_url: str, stream: str, consumer: str) -> tuple[int, int, int, int, int]:
    """(stream last seq, ack floor, ack pending, pending, deliveries) of a consumer, -1s if missing."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        last = (await js.stream_info(stream)).state.last_seq
        try:
            info = await js.consumer_info(stream, consumer)
        except NotFoundError:
            return last, -1, -1, -1, -1
        return (
            last,
            info.ack_floor.stream_seq if info.ack_floor else 0,
            info.num_ack_pending or 0,
            info.num_pending or 0,
            info.delivered.consumer_seq if info.delivered else 0,
        )
    finally:
        await nc.close()


def consumer_state(hub: HubProcess, stream: str, consumer: str) -> tuple[int, int, int, int, int]:
    return asyncio.run(_consumer_state(hub.nats_url, stream, consumer))


def wait_merger_done(hub: HubProcess, *, timeout_s: float = NATS_DEADLINE_S) -> None:
    """Wait until the hub's merger has acked or terminated every message of ``EC_OPS``."""
    wait_for(
        lambda: consumer_state(hub, subjects.HUB_OPS_STREAM, MERGER_DURABLE),
        lambda s: s[1] == s[0] and s[2] == 0 and s[3] == 0,
        timeout_s=timeout_s,
        what="the hub's merger to process every stored batch",
    )


# --- HTTP side --------------------------------------------------------------------------------


def counters(hub_api: httpx.Client) -> dict[str, Any]:
    response = hub_api.get(f"{API}/replication")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def node_status(node_api: httpx.Client) -> dict[str, Any]:
    response = node_api.get(f"{API}/replication")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def node_id_of(node_api: httpx.Client) -> str:
    return str(node_api.get("/readyz").json()["node_id"])


def wait_drained(node_api: httpx.Client) -> dict[str, Any]:
    """Wait until the hub confirmed every op of the node's change log."""
    return wait_for(
        lambda: node_status(node_api),
        lambda s: s["backlog_ops"] == 0 and s["confirmed_seq"] == s["changelog_last_seq"] > 0,
        timeout_s=30,
        what="the node's backlog to drain",
    )


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def hub_ticket_ids(hub_api: httpx.Client, region: str) -> set[str]:
    body = ok(hub_api.get(f"{API}/tickets", params={"region": region, "limit": 200}))
    assert body["next_cursor"] is None
    return {str(t["id"]) for t in body["items"]}


def make_history(node_api: httpx.Client, *, prefix: str) -> list[str]:
    """Tickets with creates and every kind of edit: PATCH, transitions, assignment, comments."""
    ids = create_tickets(node_api, 6, prefix=prefix)
    ok(node_api.patch(f"{API}/tickets/{ids[0]}", json={"subject": f"{prefix} renamed", "priority": "P1"}))
    ok(node_api.patch(f"{API}/tickets/{ids[1]}", json={"priority": "P2", "tags": ["vip", "billing"]}))
    ok(node_api.patch(f"{API}/tickets/{ids[1]}", json={"subject": f"{prefix} again", "tags": ["vip"]}))
    ok(node_api.post(f"{API}/tickets/{ids[2]}/assign", json={"assignee": "agent-7"}))
    for status in ("in_progress", "resolved", "closed"):
        ok(node_api.post(f"{API}/tickets/{ids[2]}/transition", json={"status": status}))
    ok(node_api.post(f"{API}/tickets/{ids[3]}/transition", json={"status": "in_progress"}))
    for i, tid in enumerate(ids[:4]):
        ok(node_api.post(f"{API}/tickets/{tid}/comments", json={"body": f"note {i}"}), 201)
    ok(node_api.post(f"{API}/tickets/{ids[0]}/comments", json={"body": "internal", "internal": True}), 201)
    return ids


def fresh_ids(frames: Sequence[Frame], tag: str) -> list[Frame]:
    """The same frames with new ``Nats-Msg-Id`` headers, so the stream's dedup lets them in."""
    return [(s, data, {"Nats-Msg-Id": f"{tag}-{i}"}) for i, (s, data, _) in enumerate(frames)]


def signed_frames(signer: NodeSigner, batches: Sequence[OpBatch], tag: str) -> list[Frame]:
    """``batches`` each freshly signed by the node (new nonce), with new message ids."""
    return fresh_ids([(signer.subject, signer.batch_frame(b), None) for b in batches], tag)


def node_log(signer: NodeSigner, stored: Sequence[Stored]) -> list[Op]:
    """The node's ops as the hub's stream holds them (in egress form), once each, by seq."""
    ops = {op.seq: op for m in stored for op in signer.batch_of(m).ops}
    return [ops[seq] for seq in sorted(ops)]


# --- e. duplicates and reordering -------------------------------------------------------------


def test_replayed_reordered_and_resplit_batches_leave_the_hub_digests_unchanged(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub, running_node(tmp_path / "node", hub=hub) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            make_history(node_api, prefix="wire")
            wait_converged(node_api, hub_api, EU)
            last_seq = wait_drained(node_api)["changelog_last_seq"]
            node_id = node_id_of(node_api)
            wait_merger_done(hub)
            signer = NodeSigner.of(node, node_id)

            stored = read_stream(hub)
            assert {m.subject for m in stored} == {signer.subject}
            # every stored frame verifies with the node's key; the node may have sent a batch
            # twice (a resend), the stream still holds its whole log
            seqs = [op.seq for m in stored for op in signer.batch_of(m).ops]
            assert sorted(set(seqs)) == list(range(1, last_seq + 1))
            ops = node_log(signer, stored)
            assert {op.entity for op in ops} >= {"ticket", "comment"}

            before = digests(hub_api, EU)
            assert before == digests(node_api, EU)
            assert before["entities"]["ticket"]["count"] == 6
            start = counters(hub_api)
            assert start["refused"] == {}

            # identical message ids inside the duplicate window: the stream drops them
            acks = publish(hub, [(m.subject, m.data, m.headers) for m in stored])
            assert all(a.duplicate for a in acks), acks
            assert len(read_stream(hub)) == len(stored)

            # byte-identical frames under new message ids get in, but the hub refuses them as replays
            acks = publish(hub, fresh_ids([(m.subject, m.data, None) for m in stored], "replay"))
            assert not any(a.duplicate for a in acks)
            wait_merger_done(hub)
            replayed = counters(hub_api)
            assert replayed["refused"] == {"replayed": len(stored)}, replayed
            assert replayed["ops_merged"] == start["ops_merged"]
            assert digests(hub_api, EU) == before

            # out-of-order ops cannot share one batch: the codec refuses such a header
            with pytest.raises(WireError):
                OpBatch(WIRE_VERSION, EU, node_id, ops[1].seq, ops[0].seq, (ops[1], ops[0]))

            # the same batches signed again by the node (fresh nonces) are new frames: merged again
            rng = random.Random(20240611)
            as_stored = [signer.batch_of(m) for m in stored]
            singles = split_batches(EU, node_id, ops, max_ops=1)
            threes = split_batches(EU, node_id, ops, max_ops=3)
            rounds: dict[str, list[OpBatch]] = {
                "as-is": as_stored,
                "reversed": as_stored[::-1],
                "shuffled": rng.sample(as_stored, len(as_stored)),
                "single ops, seq descending": singles[::-1],
                "3-op batches, shuffled": rng.sample(threes, len(threes)),
                "single ops, shuffled, each twice": rng.sample(singles + singles, 2 * len(singles)),
            }
            merged = start["ops_merged"]
            for name, batches in rounds.items():
                acks = publish(hub, signed_frames(signer, batches, name))
                assert not any(a.duplicate for a in acks), name
                wait_merger_done(hub)
                now = counters(hub_api)
                # every op went through the merge
                assert now["ops_merged"] == merged + sum(len(b.ops) for b in batches), name
                assert now["refused"] == replayed["refused"], name
                merged = now["ops_merged"]
                assert digests(hub_api, EU) == before, name
                assert digests(node_api, EU) == before, name

            # nothing came back down: the replays were the node's own ops
            assert node_status(node_api)["inbound_ops_merged"] == 0
            assert node_status(node_api)["changelog_last_seq"] == last_seq


def test_a_fresh_hub_fed_the_log_backwards_converges_with_the_node(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub, running_node(tmp_path / "node", hub=hub) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            make_history(node_api, prefix="backwards")
            wait_converged(node_api, hub_api, EU)
            wait_drained(node_api)
            node_id = node_id_of(node_api)
            wait_merger_done(hub)
            signer = NodeSigner.of(node, node_id)
            ops = node_log(signer, read_stream(hub))
            expected = digests(node_api, EU)

    # a second hub that never saw the node: the node's key enrolls there (one-time token) and
    # registers its policy, then the hub receives the node's whole log newest op first, one op
    # per frame, each signed by the node
    with running_hub(tmp_path / "hub2") as fresh:
        enroll_at(fresh, signer)
        frames = signed_frames(signer, split_batches(EU, node_id, ops, max_ops=1)[::-1], "back")
        publish(fresh, frames)
        wait_merger_done(fresh)
        with client(fresh.url, fresh.token("central_ops")) as fresh_api:
            assert counters(fresh_api)["refused"] == {}
            assert counters(fresh_api)["ops_merged"] == len(ops)
            assert digests(fresh_api, EU) == expected
        answer = request(fresh, subjects.ack_subject(EU, node_id), b"")
        assert answer == {"merged_seq": ops[-1].seq}


# --- f. two regions -------------------------------------------------------------------------


def test_two_regions_replicate_separately_and_central_edits_go_to_their_region_only(tmp_path: Path) -> None:
    with (
        running_hub(tmp_path / "hub") as hub,
        running_node(tmp_path / "eu", region=EU, hub=hub) as eu,
        running_node(tmp_path / "cn", region=CN, hub=hub) as cn,
    ):
        eu_api, hub_api = node_and_hub_clients(eu, hub)
        cn_api = client(cn.url, cn.token("supervisor"))
        with eu_api, cn_api, hub_api:
            eu_ids = create_tickets(eu_api, 5, prefix="berlin")
            cn_ids = create_tickets(cn_api, 3, prefix="上海")
            assert not set(eu_ids) & set(cn_ids)
            eu_digests = wait_converged(eu_api, hub_api, EU)
            cn_digests = wait_converged(cn_api, hub_api, CN)
            assert eu_digests["entities"]["ticket"]["count"] == 5
            assert cn_digests["entities"]["ticket"]["count"] == 3
            assert eu_digests != cn_digests
            assert hub_ticket_ids(hub_api, EU) == set(eu_ids)
            assert hub_ticket_ids(hub_api, CN) == set(cn_ids)

            eu_id, cn_id = node_id_of(eu_api), node_id_of(cn_api)
            fleet = wait_for(
                lambda: ok(hub_api.get(f"{API}/fleet"))["nodes"],
                lambda nodes: len(nodes) == 2 and all(n["state"] == "up" for n in nodes),
                timeout_s=30,
                what="both nodes to be up in the fleet",
            )
            assert {n["node_id"]: n["region"] for n in fleet} == {eu_id: EU, cn_id: CN}

            # central ops raises a cn-sh ticket; it reaches the cn-sh node
            target = cn_ids[0]
            ok(hub_api.patch(f"{API}/tickets/{CN}/{target}", json={"priority": "P1"}))
            wait_for(
                lambda: ok(cn_api.get(f"{API}/tickets/{target}"))["priority"],
                lambda p: p == "P1",
                timeout_s=30,
                what="the central edit to reach the cn-sh node",
            )
            assert node_status(cn_api)["inbound_ops_merged"] >= 1
            wait_converged(cn_api, hub_api, CN)

            # ... and only it: cn-sh's down stream holds cn-sh edits alone, eu-de's holds
            # nothing, and the eu-de node's consumer exists, has nothing pending and was
            # never delivered anything
            down = read_stream(hub, subjects.down_stream(CN))
            assert down
            assert {m.subject for m in down} == {subjects.down_subject(CN)}
            assert read_stream(hub, subjects.down_stream(EU)) == []
            eu_consumer = wait_for(
                lambda: consumer_state(hub, subjects.down_stream(EU), subjects.down_consumer(eu_id)),
                lambda s: s[1] >= 0,
                timeout_s=30,
                what="the eu-de node's down consumer",
            )
            assert eu_consumer[3:] == (0, 0), eu_consumer
            assert node_status(eu_api)["inbound_ops_merged"] == 0
            assert node_status(eu_api)["inbound_refused"] == {}
            assert eu_api.get(f"{API}/tickets/{target}").status_code == 404
            assert hub_api.get(f"{API}/tickets/{EU}/{target}").status_code == 404
            assert wait_converged(eu_api, hub_api, EU) == eu_digests
            assert hub_ticket_ids(hub_api, EU) == set(eu_ids)


# --- refusals -------------------------------------------------------------------------------


def forged(op: Op, *, origin: str, seq: int, record_id: str) -> Op:
    """``op`` as if ``origin`` had made it about another record: merging it would add a row."""
    return dataclasses.replace(op, origin=origin, seq=seq, record_id=record_id)


FORGED_RECORDS = (
    "forged-unsigned",
    "forged-ghost",
    "forged-posing",
    "forged-stranger",
    "forged-moved",
    "forged-cut",
    "forged-lent",
    "forged-cn",
    "forged-cn-eu",
    "forged-mismatch",
    "forged-other-origin",
    "forged-kind",
    "forged-policy",
    "forged-no-node",
    "forged-old",
    "forged-future",
)


def test_frames_of_every_refusal_reason_are_counted_by_reason_and_never_merged(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub, running_node(tmp_path / "node", hub=hub) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            create_tickets(node_api, 3, prefix="genuine")
            before = wait_converged(node_api, hub_api, EU)
            last_seq = wait_drained(node_api)["changelog_last_seq"]
            node_id = node_id_of(node_api)
            wait_merger_done(hub)
            signer = NodeSigner.of(node, node_id)
            stored = read_stream(hub)
            template = next(op for op in node_log(signer, stored) if op.entity == "ticket")
            start = counters(hub_api)
            assert start["refused"] == {}

            ghost = "ghost0000"
            seq = last_seq + 100  # beyond the node's log, so a wrong merge could not be undone by it
            stranger = NodeIdentity.generate()  # a key the hub never enrolled
            own = signer.subject
            on_ghost = subjects.ops_subject(EU, ghost)
            on_cn = subjects.ops_subject(CN, node_id)

            def one(region: str, origin: str, record_id: str) -> bytes:
                assert record_id in FORGED_RECORDS
                op = forged(template, origin=origin, seq=seq, record_id=record_id)
                return encode_batch(split_batches(region, origin, [op])[0])

            def by_stranger(record_id: str, *, lend_fingerprint: bool = False) -> bytes:
                """Signed by a key the hub never enrolled, naming it (forged) or the node's (altered)."""
                return sign_frame(
                    stranger.sign,
                    signer.identity.fingerprint if lend_fingerprint else stranger.fingerprint,
                    own,
                    kind="ops",
                    node_id=node_id,
                    region=EU,
                    payload=one(EU, node_id, record_id),
                    now_ms=now_ms(),
                    policy_version=signer.policy.version,
                )

            def signed(record_id: str, subject: str = own, **fields: Any) -> bytes:
                """A forged op about ``record_id`` in a frame the node's key signed (fields overridable)."""
                region = fields.pop("batch_region", EU)
                origin = fields.pop("batch_origin", node_id)
                return signer.frame(subject, one(region, origin, record_id), **fields)

            garbage = random.Random(7).randbytes(300)
            cut = signed("forged-cut")
            no_node = f"ec.ops.{EU}"
            unknown_policy = signer.policy.version + 41
            refusals: dict[str, list[Frame]] = {
                "unsigned": [
                    (own, garbage, None),
                    (own, msgpack.packb({"version": 1}), None),
                    (own, one(EU, node_id, "forged-unsigned"), None),  # a bare batch, as before frames
                ],
                "unknown_node": [
                    (on_ghost, signed("forged-ghost", on_ghost, node_id=ghost, batch_origin=ghost), None),
                    (on_ghost, signed("forged-posing"), None),  # the node's frame on a ghost's subject
                ],
                "forged": [(own, by_stranger("forged-stranger"), None)],
                "altered": [
                    (on_cn, signed("forged-moved"), None),  # signed for another subject
                    (own, cut[: len(cut) - 5], None),
                    (own, by_stranger("forged-lent", lend_fingerprint=True), None),
                ],
                "wrong_region": [
                    (on_cn, signed("forged-cn", on_cn, region=CN, batch_region=CN), None),
                    (on_cn, signed("forged-cn-eu", on_cn), None),  # the body says eu-de
                ],
                "malformed": [
                    (own, signer.frame(own, garbage), None),
                    (own, signed("forged-mismatch", batch_region=CN), None),
                    (own, signed("forged-other-origin", batch_origin=ghost), None),
                    (own, signed("forged-kind", kind="heartbeat"), None),
                    (no_node, signed("forged-no-node", no_node), None),
                ],
                # validly signed, but under a residency policy the node never registered
                "policy_unregistered": [(own, signed("forged-policy", policy_version=unknown_policy), None)],
                "replayed": [
                    (stored[0].subject, stored[0].data, None),  # accepted before: a byte-identical copy
                    (own, signed("forged-old", signed_at_ms=now_ms() - 2 * DAY_MS), None),
                    (own, signed("forged-future", signed_at_ms=now_ms() + HOUR_MS), None),
                ],
                "oversized": [(own, signer.frame(own, random.Random(8).randbytes(600 * 1024)), None)],
            }
            for reason, frames in refusals.items():
                acks = publish(hub, fresh_ids(frames, reason))
                assert not any(a.duplicate for a in acks), reason
                wait_merger_done(hub)
                now = counters(hub_api)
                assert now["refused"].get(reason) == len(frames), f"{reason}: {now['refused']}"
                assert now["ops_merged"] == start["ops_merged"], reason
                assert digests(hub_api, EU) == before, reason

            assert counters(hub_api)["refused"] == {r: len(f) for r, f in refusals.items()}
            readyz = ok(hub_api.get("/readyz"))
            assert readyz["regions"] == [EU]  # no store was made for the claimed region
            assert digests(hub_api, CN)["status"] == 404
            nodes = ok(hub_api.get(f"{API}/fleet"))["nodes"]
            assert [n["node_id"] for n in nodes] == [node_id]
            for record_id in FORGED_RECORDS:
                assert hub_api.get(f"{API}/tickets/{EU}/{record_id}").status_code == 404

            # the hub keeps merging and serving
            more = create_tickets(node_api, 2, prefix="after")
            after = wait_converged(node_api, hub_api, EU)
            assert after["entities"]["ticket"]["count"] == 5
            assert set(more) <= hub_ticket_ids(hub_api, EU)
            assert counters(hub_api)["ops_merged"] > start["ops_merged"]
