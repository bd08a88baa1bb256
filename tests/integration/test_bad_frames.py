"""Ten thousand bad frames at a live hub: it survives, merges none, and accounts for every one.

Theory of operation
-------------------
A real hub and one enrolled ``eu-de`` node run as processes; the node creates
a few tickets and converges, so the hub's ``EC_OPS`` stream holds frames it
accepted. The test then signs frames *as the node* (its key from
``<data dir>/identity/node.key``) and as strangers, and publishes, with a core
NATS client on the hub's own nats-server, more than 10,000 bad frames mixed at
random with 50 good ones to ``ec.ops.<region>.<node>`` subjects, where
``EC_OPS`` captures them. Every bad frame is built so that the one reason the
hub must refuse it for is known in advance (:class:`Shot`):

* random bytes of every size up to 4 KiB (``unsigned``), and random bodies
  behind the magic with a random or the node's fingerprint (``forged``,
  ``altered``);
* valid frames (accepted ones from the stream, and frames the node signed but
  nobody sent) with bits flipped, bytes overwritten, truncated or extended:
  the reason follows from where the bytes changed (magic: ``unsigned``,
  fingerprint: ``forged``, signature or body: ``altered``; cut below the
  header: ``unsigned``);
* swapped signatures, a stranger's signature under the node's fingerprint,
  and a signature for another subject (``altered``);
* byte-identical copies of frames the hub accepted before, and frames signed
  outside the replay window (``replayed``);
* frames signed by keys the hub never enrolled (``forged``), by the node for
  region ``us-east`` (``wrong_region``), for node ids nobody enrolled
  (``unknown_node``);
* validly signed garbage: undecodable payloads, bodies that are not v1 bodies,
  another kind, node or region in the body or the batch header, subjects
  without a node token (``malformed``), and an unregistered policy version
  (``policy_unregistered``);
* 600 KiB frames (``oversized``: the hub takes 512 KiB, the stream 1 MiB).

Every forged operation is a new ticket the node never made, so one merged by
mistake would show in the hub's digests and ticket list. The 50 good frames
each carry one of the node's own operations, freshly signed: merged again,
idempotently, so the digests must not move, while ``ops_merged`` counts each.

Publishing is flow-controlled: each message names a reply subject, where
JetStream answers with its PubAck, and the test waits for a chunk's acks before
sending the next, so it knows every frame was stored (none dropped before the
hub could see it). Then it polls ``GET /api/v1/replication`` until
accepted + refused covers every frame sent and the merger's consumer has
nothing left, and checks the per-reason counts exactly.

Accepted frames are read from ``frames_accepted``; ``ops_merged`` must agree,
since every good frame carries exactly one operation, and ``ops_quarantined``
must not move.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import nats
import pytest

from security.frames import HEADER_BYTES, MAGIC
from security.identity import NodeIdentity
from sync import subjects
from sync.crdt import Op
from sync.transport.codec import OpBatch, encode_batch, split_batches
from tests.integration.nodeproc import HubProcess, NodeProcess, running_hub, running_node
from tests.integration.replication_harness import (
    create_tickets,
    digests,
    node_and_hub_clients,
    wait_converged,
    wait_for,
)
from tests.integration.test_replication_wire import (
    API,
    DAY_MS,
    EU,
    HOUR_MS,
    NodeSigner,
    Stored,
    counters,
    hub_ticket_ids,
    node_id_of,
    node_log,
    node_status,
    now_ms,
    ok,
    read_stream,
    wait_drained,
    wait_merger_done,
)

BUDGET_S = 90
MIN_BAD_FRAMES = 10_000
VALID_FRAMES = 50
OVERSIZED_BYTES = 600 * 1024
CHUNK = 500  # frames published before waiting for their PubAcks
ACCOUNT_TIMEOUT_S = 60.0
OTHER_REGION = "us-east"
FINGERPRINT_AT = len(MAGIC)
SIGNATURE_AT = FINGERPRINT_AT + 8
DOMAIN = b"edgecare.frame.v1\x00"  # the signed input's prefix, as security.frames documents the wire


@dataclass(frozen=True)
class Shot:
    """One frame to publish, and the reason the hub must refuse it for (None: it must accept it)."""

    subject: str
    data: bytes
    reason: str | None


@dataclass(frozen=True)
class Live:
    """A hub with one converged eu-de node, and what the test needs to sign as that node."""

    hub: HubProcess
    node: NodeProcess
    node_api: httpx.Client
    hub_api: httpx.Client
    signer: NodeSigner
    stored: list[Stored]  # frames the hub accepted from the node
    ops: list[Op]  # the node's operations, once each
    ticket_ids: frozenset[str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("bad-frames")
    with running_hub(base / "hub") as hub, running_node(base / "node", hub=hub) as node:
        node_api, hub_api = node_and_hub_clients(node, hub)
        with node_api, hub_api:
            ids = create_tickets(node_api, 4, prefix="bad frames")
            wait_converged(node_api, hub_api, EU)
            wait_drained(node_api)
            wait_merger_done(hub)
            signer = NodeSigner.of(node, node_id_of(node_api))
            stored = read_stream(hub)
            assert stored
            assert counters(hub_api)["refused"] == {}
            yield Live(hub, node, node_api, hub_api, signer, stored, node_log(signer, stored), frozenset(ids))


# --- building frames ------------------------------------------------------------------------------


class Forge:
    """Builds the frames of one run from one seeded random source."""

    def __init__(self, live: Live, seed: int) -> None:
        self.rng = random.Random(seed)
        self.signer = live.signer
        self.own = live.signer.subject
        self.stored = live.stored
        self.template = next(op for op in live.ops if op.entity == "ticket")
        self.next_seq = 1_000_000  # far beyond the node's log
        self.strangers = tuple(NodeIdentity.generate() for _ in range(3))  # keys the hub never enrolled

    def forged_batch(self, region: str = EU, origin: str | None = None) -> bytes:
        """A new ticket the node never made, as an encoded batch: merging it would add a row."""
        origin = origin or self.signer.node_id
        self.next_seq += 1
        op = dataclasses.replace(
            self.template, origin=origin, seq=self.next_seq, record_id=f"forged-{self.next_seq}"
        )
        return encode_batch(split_batches(region, origin, [op])[0])

    def signed(self, subject: str | None = None, **fields: Any) -> bytes:
        """A forged batch in a frame the node's key signed for ``subject`` (fields overridable)."""
        return self.signer.frame(subject or self.own, self.forged_batch(), **fields)

    def by_stranger(self, *, fingerprint: bytes | None = None, subject: str | None = None) -> bytes:
        """A forged batch signed by a key the hub never enrolled, naming ``fingerprint`` in its header."""
        stranger = self.rng.choice(self.strangers)
        subject = subject or self.own
        frame = NodeSigner(stranger, self.signer.node_id, EU, self.signer.policy).frame(
            subject, self.forged_batch()
        )
        return frame if fingerprint is None else MAGIC + fingerprint + frame[SIGNATURE_AT:]

    def raw_signed(self, body: bytes, subject: str | None = None) -> bytes:
        """Any ``body`` behind a valid signature of the node: the hub must parse it, and refuse it."""
        subject = subject or self.own
        signature = self.signer.identity.sign(DOMAIN + subject.encode() + b"\x00" + body)
        return MAGIC + self.signer.identity.fingerprint + signature + body

    def pool(self) -> list[bytes]:
        """Valid frames to mutate: accepted ones from the stream, and signed ones nobody sent."""
        return [m.data for m in self.stored] + [self.signed() for _ in range(40)]

    def valid(self, ops: Sequence[Op], count: int) -> list[Shot]:
        """``count`` good frames, each one of the node's own operations freshly signed."""
        node_id = self.signer.node_id
        batches: list[OpBatch] = [split_batches(EU, node_id, [ops[i % len(ops)]])[0] for i in range(count)]
        return [Shot(self.own, self.signer.batch_frame(b), None) for b in batches]


def reason_of_change(positions: Sequence[int]) -> str:
    """Why a valid frame changed at ``positions`` is refused: the first check its changes break."""
    first = min(positions)
    if first < FINGERPRINT_AT:
        return "unsigned"  # the magic is gone
    if first < SIGNATURE_AT:
        return "forged"  # the header names another key
    return "altered"  # the signature no longer verifies


def random_bytes(f: Forge, n: int) -> list[Shot]:
    shots: list[Shot] = []
    for _ in range(n):
        size = (
            f.rng.randint(0, HEADER_BYTES - 1) if f.rng.random() < 0.3 else f.rng.randint(HEADER_BYTES, 4096)
        )
        data = f.rng.randbytes(size)
        if data.startswith(MAGIC):  # 1 in 2**32: keep the reason certain
            data = b"X" + data[1:]
        shots.append(Shot(f.own, data, "unsigned"))
    return shots


def magic_then_noise(f: Forge, n: int) -> list[Shot]:
    shots: list[Shot] = []
    node_fp = f.signer.identity.fingerprint
    for i in range(n):
        rest = f.rng.randbytes(f.rng.randint(64, 2048))
        if i % 2:
            shots.append(Shot(f.own, MAGIC + node_fp + rest, "altered"))
        else:
            fp = f.rng.randbytes(8)
            shots.append(Shot(f.own, MAGIC + fp + rest, "forged" if fp != node_fp else "altered"))
    return shots


def bit_flips(f: Forge, pool: Sequence[bytes], n: int) -> list[Shot]:
    shots: list[Shot] = []
    for _ in range(n):
        frame = bytearray(f.rng.choice(pool))
        positions = f.rng.sample(range(len(frame)), f.rng.randint(1, 8))
        for p in positions:
            frame[p] ^= 1 << f.rng.randrange(8)
        shots.append(Shot(f.own, bytes(frame), reason_of_change(positions)))
    return shots


def overwrites(f: Forge, pool: Sequence[bytes], n: int) -> list[Shot]:
    shots: list[Shot] = []
    while len(shots) < n:
        original = f.rng.choice(pool)
        at = f.rng.randrange(len(original))
        frame = bytearray(original)
        frame[at : at + 16] = f.rng.randbytes(len(frame[at : at + 16]))
        changed = [i for i in range(at, min(at + 16, len(frame))) if frame[i] != original[i]]
        if changed:
            shots.append(Shot(f.own, bytes(frame), reason_of_change(changed)))
    return shots


def truncations(f: Forge, pool: Sequence[bytes], n: int) -> list[Shot]:
    shots: list[Shot] = []
    for _ in range(n):
        frame = f.rng.choice(pool)
        cut = f.rng.randrange(len(frame))
        shots.append(Shot(f.own, frame[:cut], "unsigned" if cut < HEADER_BYTES else "altered"))
    return shots


def extensions(f: Forge, pool: Sequence[bytes], n: int) -> list[Shot]:
    return [
        Shot(f.own, f.rng.choice(pool) + f.rng.randbytes(f.rng.randint(1, 512)), "altered") for _ in range(n)
    ]


def swapped_signatures(f: Forge, pool: Sequence[bytes], n: int) -> list[Shot]:
    shots: list[Shot] = []
    elsewhere = subjects.ops_subject("cn-sh", f.signer.node_id)
    for i in range(n):
        match i % 3:
            case 0:  # one valid frame's header on another's body
                a, b = f.rng.sample(pool, 2)
                shots.append(Shot(f.own, a[:HEADER_BYTES] + b[HEADER_BYTES:], "altered"))
            case 1:  # a stranger's signature under the node's fingerprint
                shots.append(Shot(f.own, f.by_stranger(fingerprint=f.signer.identity.fingerprint), "altered"))
            case _:  # the node's signature, for another subject
                shots.append(Shot(f.own, f.signed(elsewhere), "altered"))
    return shots


def replays(f: Forge, n: int, stale: int) -> list[Shot]:
    copies = [Shot(m.subject, m.data, "replayed") for m in (f.rng.choice(f.stored) for _ in range(n))]
    old = [
        Shot(f.own, f.signed(signed_at_ms=now_ms() - 2 * DAY_MS if i % 2 else now_ms() + HOUR_MS), "replayed")
        for i in range(stale)
    ]
    return copies + old


def strangers(f: Forge, n: int) -> list[Shot]:
    return [Shot(f.own, f.by_stranger(), "forged") for _ in range(n)]


def wrong_region(f: Forge, n: int) -> list[Shot]:
    subject = subjects.ops_subject(OTHER_REGION, f.signer.node_id)
    # half claim us-east in the body, half say eu-de on us-east's subject
    return [
        Shot(subject, f.signed(subject, region=OTHER_REGION if i % 2 else None), "wrong_region")
        for i in range(n)
    ]


def unknown_nodes(f: Forge, n: int) -> list[Shot]:
    shots: list[Shot] = []
    for i in range(n):
        ghost = f"ghost-{i % 40:02d}"
        subject = subjects.ops_subject(EU, ghost)
        data = f.signed(subject, node_id=ghost) if i % 2 else f.by_stranger(subject=subject)
        shots.append(Shot(subject, data, "unknown_node"))
    return shots


def malformed(f: Forge, n: int) -> list[Shot]:
    """Validly signed by the node, but not a v1 ops body with a batch of the node's region."""
    body = {
        "v": 1,
        "kind": "ops",
        "node_id": f.signer.node_id,
        "region": EU,
        "signed_at_ms": now_ms(),
        "nonce": f.rng.randbytes(16),
        "policy_version": f.signer.policy.version,
        "payload": f.forged_batch(),
    }
    no_node, too_deep = f"ec.ops.{EU}", f"{f.own}.extra"
    variants: list[Callable[[], Shot]] = [
        lambda: Shot(f.own, f.signer.frame(f.own, f.rng.randbytes(f.rng.randint(0, 600))), "malformed"),
        lambda: Shot(f.own, f.signed(kind="heartbeat"), "malformed"),
        lambda: Shot(f.own, f.signed(node_id="someone-else"), "malformed"),
        lambda: Shot(f.own, f.signer.frame(f.own, f.forged_batch(region="cn-sh")), "malformed"),
        lambda: Shot(f.own, f.signer.frame(f.own, f.forged_batch(origin="someone-else")), "malformed"),
        lambda: Shot(f.own, f.raw_signed(f.rng.randbytes(f.rng.randint(0, 300))), "malformed"),
        lambda: Shot(f.own, f.raw_signed(json.dumps({"v": 1}).encode()), "malformed"),
        lambda: Shot(f.own, f.raw_signed(_pack({**body, "v": 2})), "malformed"),
        lambda: Shot(f.own, f.raw_signed(_pack({**body, "extra": 1})), "malformed"),
        lambda: Shot(f.own, f.raw_signed(_pack({**body, "nonce": f.rng.randbytes(8)})), "malformed"),
        lambda: Shot(no_node, f.signed(no_node), "malformed"),  # no node token in the subject
        lambda: Shot(too_deep, f.signed(too_deep), "malformed"),
    ]
    return [variants[i % len(variants)]() for i in range(n)]


def unregistered_policy(f: Forge, n: int) -> list[Shot]:
    version = f.signer.policy.version
    return [Shot(f.own, f.signed(policy_version=version + 1 + i), "policy_unregistered") for i in range(n)]


def oversized(f: Forge, n: int) -> list[Shot]:
    return [
        Shot(
            f.own,
            f.signer.frame(f.own, f.rng.randbytes(OVERSIZED_BYTES))
            if i % 2
            else f.rng.randbytes(OVERSIZED_BYTES),
            "oversized",
        )
        for i in range(n)
    ]


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def bad_frames(f: Forge) -> list[Shot]:
    pool = f.pool()
    return [
        *random_bytes(f, 2600),
        *magic_then_noise(f, 400),
        *bit_flips(f, pool, 2400),
        *overwrites(f, pool, 600),
        *truncations(f, pool, 800),
        *extensions(f, pool, 500),
        *swapped_signatures(f, pool, 600),
        *replays(f, 800, stale=100),
        *strangers(f, 500),
        *wrong_region(f, 400),
        *unknown_nodes(f, 400),
        *malformed(f, 500),
        *unregistered_policy(f, 50),
        *oversized(f, 6),
    ]


# --- firing and accounting ------------------------------------------------------------------------


async def _fire(nats_url: str, shots: Sequence[Shot]) -> list[int]:
    """Publish every shot with core NATS; return the stream sequence JetStream stored each at.

    Each message names a reply subject for its PubAck; a chunk's acks are awaited
    before the next chunk goes out, so nothing is dropped for want of flow control.
    """
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        inbox = nc.new_inbox()
        acks: dict[int, dict[str, Any]] = {}
        wanted = 0
        caught_up = asyncio.Event()

        async def on_ack(msg: Any) -> None:
            acks[int(msg.subject.rsplit(".", 1)[1])] = json.loads(msg.data)
            if len(acks) >= wanted:
                caught_up.set()

        await nc.subscribe(f"{inbox}.*", cb=on_ack)
        for start in range(0, len(shots), CHUNK):
            chunk = shots[start : start + CHUNK]
            wanted = start + len(chunk)
            caught_up.clear()
            for i, shot in enumerate(chunk, start):
                await nc.publish(shot.subject, shot.data, reply=f"{inbox}.{i}")
            await nc.flush()
            async with asyncio.timeout(30):
                while len(acks) < wanted:
                    await caught_up.wait()
                    caught_up.clear()
        errors = {i: a for i, a in acks.items() if "error" in a}
        assert not errors, f"JetStream refused {len(errors)} frames, e.g. {next(iter(errors.items()))}"
        return [int(acks[i]["seq"]) for i in range(len(shots))]
    finally:
        await nc.close()


def fire(hub: HubProcess, shots: Sequence[Shot]) -> list[int]:
    return asyncio.run(_fire(hub.nats_url, shots))


def refused_since(start: dict[str, Any], now: dict[str, Any]) -> dict[str, int]:
    """Refusals by reason counted between two ``/replication`` snapshots."""
    before: dict[str, int] = start["refused"]
    return {r: n - before.get(r, 0) for r, n in now["refused"].items() if n != before.get(r, 0)}


def accepted_since(start: dict[str, Any], now: dict[str, Any]) -> int:
    """Frames the hub accepted between two ``/replication`` snapshots."""
    return int(now["frames_accepted"]) - int(start["frames_accepted"])


def wait_accounted(live: Live, start: dict[str, Any], sent: int) -> dict[str, Any]:
    """Wait until accepted + refused covers ``sent`` frames and the merger has nothing left."""
    wait_for(
        lambda: counters(live.hub_api),
        lambda now: accepted_since(start, now) + sum(refused_since(start, now).values()) >= sent,
        timeout_s=ACCOUNT_TIMEOUT_S,
        what=f"the hub to account for {sent} frames",
    )
    wait_merger_done(live.hub, timeout_s=ACCOUNT_TIMEOUT_S)
    return counters(live.hub_api)


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.timeout(BUDGET_S)
def test_ten_thousand_bad_frames_are_each_refused_for_their_reason_and_none_is_merged(live: Live) -> None:
    began = time.monotonic()
    before = digests(live.hub_api, EU)
    assert before == digests(live.node_api, EU)
    forge = Forge(live, seed=20241123)
    bad = bad_frames(forge)
    good = forge.valid(live.ops, VALID_FRAMES)
    assert len(bad) >= MIN_BAD_FRAMES
    shots = bad + good
    forge.rng.shuffle(shots)
    expected = Counter(s.reason for s in bad)
    assert set(expected) >= {"unsigned", "forged", "altered", "malformed", "wrong_region", "replayed"}
    assert set(expected) >= {"unknown_node", "oversized", "policy_unregistered"}
    start = counters(live.hub_api)

    seqs = fire(live.hub, shots)
    assert len(set(seqs)) == len(shots)  # JetStream stored every frame, each once
    final = wait_accounted(live, start, len(shots))

    # the hub is alive and serving
    assert live.hub.node.proc.poll() is None, live.hub.node.log[-4000:]
    readyz = ok(live.hub_api.get("/readyz"))
    # every frame is accounted for, bad ones under exactly the reason they were built for
    refused = refused_since(start, final)
    accepted = accepted_since(start, final)
    assert refused == dict(expected)
    assert accepted == len(good)
    assert final["ops_merged"] - start["ops_merged"] == len(good)  # one op each, merged again
    assert final["ops_quarantined"] == start["ops_quarantined"]
    assert accepted + sum(refused.values()) == len(shots)
    # nothing bad was merged: the hub's replica is still the node's, ticket for ticket
    assert digests(live.hub_api, EU) == before
    assert digests(live.node_api, EU) == before
    assert hub_ticket_ids(live.hub_api, EU) == live.ticket_ids
    assert readyz["regions"] == [EU]  # no store for us-east
    nodes = ok(live.hub_api.get(f"{API}/fleet"))["nodes"]
    assert [n["node_id"] for n in nodes] == [live.signer.node_id]
    assert node_status(live.node_api)["inbound_ops_merged"] == 0
    elapsed_s = time.monotonic() - began
    assert elapsed_s < BUDGET_S, elapsed_s

    # ... and still merges what the node sends
    more = create_tickets(live.node_api, 1, prefix="after the storm")
    wait_converged(live.node_api, live.hub_api, EU)
    assert set(more) <= hub_ticket_ids(live.hub_api, EU)


@pytest.mark.timeout(BUDGET_S)
def test_a_copy_fetched_together_with_its_original_is_refused_as_replayed(live: Live) -> None:
    forge = Forge(live, seed=7)
    originals = forge.valid(live.ops, VALID_FRAMES)
    shots = [shot for original in originals for shot in (original, original)]  # back to back
    start = counters(live.hub_api)
    fire(live.hub, shots)
    final = wait_accounted(live, start, len(shots))
    assert refused_since(start, final) == {"replayed": len(originals)}
    assert accepted_since(start, final) == len(originals)
    assert final["ops_merged"] - start["ops_merged"] == len(originals)
