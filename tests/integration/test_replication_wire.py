"""Replication on the wire: what the hub does with frames it did not expect, over real processes.

A hub and nodes run as real processes (nats-server leaf to hub); the tests
connect their own nats-py client to the hub's nats-server (``hub.nats_url``)
and replay, reorder, re-split and forge frames on the ``EC_OPS`` stream:

* duplicates and reordering: every stored batch published again (same message
  ids: dropped by the stream's dedup; new ids: merged again), in reverse and
  shuffled order, and re-cut into single-op and small batches sent out of
  order. The region's digests at the hub must not move by a bit, and the
  merge counters prove the frames were processed. A fresh hub fed the whole
  log backwards converges with the node.
* two regions: one hub, an ``eu-de`` and a ``cn-sh`` node; each region's data
  reaches the hub and only its own; a central edit of a ``cn-sh`` ticket goes
  down to ``cn-sh`` only.
* refusals: an unknown node, another region's subject, a batch disagreeing
  with its subject and undecodable bytes are counted by reason and never merged.

"Processed" is read from the hub's durable merge consumer: its ack floor
reaches the stream's last sequence only after every message was merged (and
committed) or terminated. Waiting polls conditions with deadlines; every
process is stopped by its context manager, also when a test fails.

Stopping gives a process ``STOP_GRACE_S`` to exit on SIGTERM, then SIGKILLs it
(the harness waits 15 s). Hub and node shutdown can hang: ``HubBus.run`` and
``NodeReplicator.run`` ``drain()`` their NATS connection after cancelling a
pending pull ``fetch``, and the drain waits for that subscription's pending
queue up to nats-py's 30 s drain timeout. The shorter grace keeps this file
bounded until that is fixed; it does not change what the tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import signal
import subprocess
from collections.abc import Iterator, Sequence
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
from sync import subjects
from sync.crdt import Op
from sync.transport.codec import (
    WIRE_VERSION,
    OpBatch,
    WireError,
    decode_batch,
    encode_batch,
    split_batches,
)
from tests.integration.nodeproc import HubProcess, NodeProcess, start_hub, start_node
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
STOP_GRACE_S = 5.0  # a healthy hub or node exits within about 0.5 s of SIGTERM
Frame = tuple[str, bytes, dict[str, str] | None]  # subject, payload, headers


# --- processes ---------------------------------------------------------------------------------


def _stop(proc: NodeProcess) -> None:
    """SIGTERM, SIGKILL after ``STOP_GRACE_S`` (see the module docstring), then close the pipe."""
    if proc.proc.poll() is None:
        proc.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the shutdown hang; kill() ends it
            proc.proc.wait(timeout=STOP_GRACE_S)
    proc.kill()  # only signals a process still running; always reaps it and closes the pipe


@contextlib.contextmanager
def running_hub(data_dir: Path) -> Iterator[HubProcess]:
    """A hub for the block, stopped afterwards whatever happens."""
    hub = start_hub(data_dir)
    try:
        yield hub
    finally:
        _stop(hub.node)


@contextlib.contextmanager
def running_node(data_dir: Path, *, hub: HubProcess, region: str = EU) -> Iterator[NodeProcess]:
    """A node of ``region`` replicating to ``hub`` for the block, stopped afterwards whatever happens."""
    node = start_node(data_dir, region=region, hub=hub.leaf_url)
    try:
        yield node
    finally:
        _stop(node)


# --- NATS side: read the stream, publish frames, wait for the merger ----------------------------


@dataclass(frozen=True)
class Stored:
    """One message of the hub's ``EC_OPS`` stream."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]

    @property
    def batch(self) -> OpBatch:
        return decode_batch(self.data)


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


def wait_merger_done(hub: HubProcess) -> None:
    """Wait until the hub's merger has acked or terminated every message of ``EC_OPS``."""
    wait_for(
        lambda: consumer_state(hub, subjects.HUB_OPS_STREAM, MERGER_DURABLE),
        lambda s: s[1] == s[0] and s[2] == 0 and s[3] == 0,
        timeout_s=NATS_DEADLINE_S,
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


def frames_of(region: str, node_id: str, batches: Sequence[OpBatch], tag: str) -> list[Frame]:
    subject = subjects.ops_subject(region, node_id)
    return fresh_ids([(subject, encode_batch(b), None) for b in batches], tag)


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

            stored = read_stream(hub)
            subject = subjects.ops_subject(EU, node_id)
            assert {m.subject for m in stored} == {subject}
            ops = sorted((op for m in stored for op in m.batch.ops), key=lambda op: op.seq)
            # the node may have sent a batch twice (a resend); the stream still holds its whole log
            assert sorted({op.seq for op in ops}) == list(range(1, last_seq + 1))
            ops = list({op.seq: op for op in ops}.values())
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

            # out-of-order ops cannot share one batch: the codec refuses such a header
            with pytest.raises(WireError):
                OpBatch(WIRE_VERSION, EU, node_id, ops[1].seq, ops[0].seq, (ops[1], ops[0]))

            rng = random.Random(20240611)
            as_stored = [(m.subject, m.data, None) for m in stored]
            singles = split_batches(EU, node_id, ops, max_ops=1)
            threes = split_batches(EU, node_id, ops, max_ops=3)
            rounds: dict[str, list[Frame]] = {
                "as-is": fresh_ids(as_stored, "dup"),
                "reversed": fresh_ids(as_stored[::-1], "rev"),
                "shuffled": fresh_ids(rng.sample(as_stored, len(as_stored)), "shuf"),
                "single ops, seq descending": frames_of(EU, node_id, singles[::-1], "one"),
                "3-op batches, shuffled": frames_of(EU, node_id, rng.sample(threes, len(threes)), "three"),
                "single ops, shuffled, each twice": frames_of(
                    EU, node_id, rng.sample(singles + singles, 2 * len(singles)), "twice"
                ),
            }
            merged = start["ops_merged"]
            for name, frames in rounds.items():
                acks = publish(hub, frames)
                assert not any(a.duplicate for a in acks), name
                wait_merger_done(hub)
                sent = sum(len(decode_batch(data).ops) for _, data, _ in frames)
                now = counters(hub_api)
                assert now["ops_merged"] == merged + sent, name  # every op went through the merge
                assert now["refused"] == {}, name
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
            ops = list({op.seq: op for m in read_stream(hub) for op in m.batch.ops}.values())
            ops.sort(key=lambda op: op.seq)
            expected = digests(node_api, EU)

        # a second hub that never saw the node: it learns of it from a heartbeat, then
        # receives the node's whole log newest op first, one op per batch
        with running_hub(tmp_path / "hub2") as fresh:
            beat = {
                "node_id": node_id,
                "region": EU,
                "version": "test",
                "last_seq": ops[-1].seq,
                "acked_seq": 0,
                "backlog_ops": len(ops),
                "oldest_pending_hlc": None,
                "sent_at_ms": 0,
            }
            # the hub says it is ready before its bus has subscribed: ask until it answers
            wait_for(
                lambda: request(fresh, subjects.heartbeat_subject(EU, node_id), msgpack.packb(beat)),
                lambda answer: answer == {"ok": True},
                timeout_s=NATS_DEADLINE_S,
                what="the fresh hub to accept the node's heartbeat",
            )
            frames = frames_of(EU, node_id, split_batches(EU, node_id, ops, max_ops=1)[::-1], "back")
            publish(fresh, frames)
            wait_merger_done(fresh)
            with client(fresh.url, fresh.token("central_ops")) as fresh_api:
                assert counters(fresh_api)["refused"] == {}
                assert digests(fresh_api, EU) == expected
            assert request(fresh, subjects.ack_subject(node_id), b"") == {"merged_seq": ops[-1].seq}


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

            # ... and only it: EC_DOWN holds cn-sh edits alone, and the eu-de node's
            # consumer exists, has nothing pending and was never delivered anything
            down = read_stream(hub, subjects.HUB_DOWN_STREAM)
            assert down
            assert {m.subject for m in down} == {subjects.down_subject(CN)}
            eu_consumer = wait_for(
                lambda: consumer_state(hub, subjects.HUB_DOWN_STREAM, f"down-{eu_id}"),
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


def test_frames_from_unknown_nodes_other_regions_and_garbage_are_refused_by_reason(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub, running_node(tmp_path / "node", hub=hub) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            create_tickets(node_api, 3, prefix="genuine")
            before = wait_converged(node_api, hub_api, EU)
            last_seq = wait_drained(node_api)["changelog_last_seq"]
            node_id = node_id_of(node_api)
            wait_merger_done(hub)
            template = next(op for m in read_stream(hub) for op in m.batch.ops if op.entity == "ticket")
            start = counters(hub_api)
            assert start["refused"] == {}

            ghost = "ghost0000"
            seq = last_seq + 100  # beyond the node's log, so a wrong merge could not be undone by it

            def one(region: str, origin: str, record_id: str) -> bytes:
                op = forged(template, origin=origin, seq=seq, record_id=record_id)
                return encode_batch(split_batches(region, origin, [op])[0])

            garbage = random.Random(7).randbytes(300)
            good = one(EU, node_id, "forged-truncated")
            refusals: dict[str, list[Frame]] = {
                "unknown_node": [(subjects.ops_subject(EU, ghost), one(EU, ghost, "forged-ghost"), None)],
                "wrong_region": [(subjects.ops_subject(CN, node_id), one(CN, node_id, "forged-cn"), None)],
                "subject_mismatch": [
                    (subjects.ops_subject(CN, node_id), one(EU, node_id, "forged-mismatch"), None),
                    (subjects.ops_subject(EU, ghost), one(EU, node_id, "forged-posing"), None),
                ],
                "malformed": [
                    (subjects.ops_subject(EU, node_id), garbage, None),
                    (subjects.ops_subject(EU, node_id), good[: len(good) // 2], None),
                    (subjects.ops_subject(EU, node_id), msgpack.packb({"version": 1}), None),
                    (f"ec.ops.{EU}", good, None),  # no node token in the subject
                ],
            }
            for reason, frames in refusals.items():
                acks = publish(hub, fresh_ids(frames, reason))
                assert not any(a.duplicate for a in acks), reason
                wait_merger_done(hub)
                now = counters(hub_api)
                assert now["refused"].get(reason) == len(frames), (reason, now)
                assert now["ops_merged"] == start["ops_merged"], reason
                assert digests(hub_api, EU) == before, reason

            assert counters(hub_api)["refused"] == {r: len(f) for r, f in refusals.items()}
            readyz = ok(hub_api.get("/readyz"))
            assert readyz["regions"] == [EU]  # no store was made for the claimed region
            assert digests(hub_api, CN)["status"] == 404
            nodes = ok(hub_api.get(f"{API}/fleet"))["nodes"]
            assert [n["node_id"] for n in nodes] == [node_id]
            for record_id in ("forged-ghost", "forged-cn", "forged-mismatch", "forged-posing"):
                assert hub_api.get(f"{API}/tickets/{EU}/{record_id}").status_code == 404

            # the hub keeps merging and serving
            more = create_tickets(node_api, 2, prefix="after")
            after = wait_converged(node_api, hub_api, EU)
            assert after["entities"]["ticket"]["count"] == 5
            assert set(more) <= hub_ticket_ids(hub_api, EU)
            assert counters(hub_api)["ops_merged"] > start["ops_merged"]
