"""The node's side of replication: drain the change log up, merge the hub's edits down.

Acknowledgement chain (what each step means):

1. An API write is answered after its SQLite COMMIT (fsync'd): the change log
   holds the operation and stays the truth.
2. The drainer publishes batches of operations to the hub's JetStream stream
   through the local leaf nats-server, with a message id per batch. The hub's
   stream runs ``sync_interval: always``, so its PubAck means the batch is on
   the hub's disk; the operations are still *pending* here.
3. The hub merges a batch into its SQLite store, commits, and only then acks the
   JetStream message and advances its merged watermark for this node.
4. The node asks the hub for that watermark; operations up to it leave the
   pending state (``hub_acked_seq`` in node_meta). If the watermark stops
   moving, or moves backwards (a hub restored from backup), the node sends again
   from it: merges are idempotent, so a resend is always safe.

Before any of that the node must be enrolled: on first contact it sends the
one-time token from ``--enroll`` with its Ed25519 public key, then registers
its residency policy. Every message after that is a signed frame, and every
operation leaves in the form its policy allows (:mod:`edge_node.egress`).
Signed audit checkpoints go to the hub every ``checkpoint_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import msgpack
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig
from nats.js.errors import Error as JetStreamError

from edge_node import __version__
from edge_node.egress import Egress
from edge_node.store import Reader, Store, Tx
from security.frames import FrameRejected, verify_frame_with_key
from security.replay import ReplayGuard
from sync import subjects
from sync.crdt import Op
from sync.entities import BY_NAME, CENTRAL_EDITS
from sync.errors import SyncError
from sync.hlc import HLCTimestamp
from sync.transport.codec import OpBatch, WireError, decode_batch, encode_batch, split_batches
from sync.transport.delivery import stream_sequence

log = logging.getLogger(__name__)

HUB_DOMAIN = "hub"
ACKED_KEY = "hub_acked_seq"
ENROLLED_KEY = "enrolled_at_hub"
HUB_KEY_META = "hub_public_key"  # hex of the hub's Ed25519 key, learnt at enrollment
DOWN_ACK_WAIT_S = 3.0
IDLE_CHECK_S = 5.0  # with nothing pending, still ask now and then: a restored hub may have lost ops
TRANSIENT = (NatsError, JetStreamError, NatsTimeoutError, NoRespondersError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """Timings of the node's replication loops."""

    heartbeat_interval_s: float = 2.0
    confirm_interval_s: float = 0.2
    resend_after_s: float = 5.0
    publish_timeout_s: float = 5.0
    batch_max_ops: int = 1000
    batch_max_bytes: int = 256_000
    inbound_batch: int = 100
    checkpoint_interval_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ReplicationStatistics:
    """Where replication stands, for /readyz, heartbeats and logs."""

    connected_to_hub: bool
    last_seq: int
    published_seq: int
    acked_seq: int
    backlog_ops: int
    oldest_pending_hlc: int | None
    batches_sent: int
    inbound_ops_merged: int
    inbound_refused: dict[str, int]


class NodeReplicator:
    """Runs the drain, confirm, inbound and heartbeat loops of one node."""

    def __init__(
        self,
        store: Store,
        *,
        region: str,
        nats_url: str,
        egress: Egress,
        settings: ReplicationSettings | None = None,
        on_merged: Callable[[list[str]], Awaitable[None]] | None = None,
        connect_options: dict[str, object] | None = None,
        enroll_token: str | None = None,
        hub_configured: bool = True,
    ) -> None:
        self.store = store
        self.region = region
        self.node_id = store.node_id
        self.nats_url = nats_url
        self.egress = egress
        self.settings = settings or ReplicationSettings()
        self._connect_options = connect_options or {}
        self._enroll_token = enroll_token
        self.hub_configured = hub_configured
        self._told_unenrolled = False
        self._last_refusal = ""
        self._shipped_audit_size = 0
        self._hub_key: tuple[str, bytes] | None = None
        self._down_guard = ReplayGuard()
        self._on_merged = on_merged
        self._nc: NATS | None = None
        self._wake = asyncio.Event()
        self._hub_seen = asyncio.Event()
        self.published_seq = 0
        self.acked_seq = 0
        self._last_progress_at = time.monotonic()
        self._last_check = 0.0
        self._batches_sent = 0
        self._resends = 0
        self._inbound_merged = 0
        self._refused: dict[str, int] = {}
        self._oldest_pending_hlc: int | None = None

    def wake(self) -> None:
        """New operations were committed: drain soon."""
        self._wake.set()

    async def run(self) -> None:
        """Connect to the local nats-server and run every loop until cancelled."""
        stored = await self.store.read(lambda r: r.meta(ACKED_KEY))
        self.acked_seq = self.published_seq = int(stored or 0)
        self._nc = await nats.connect(
            self.nats_url,
            name=f"edgecare-node-{self.node_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            **{"inbox_prefix": subjects.inbox_prefix(self.region), **self._connect_options},  # + TLS, user
        )
        log.info(
            "replication started: node %s, region %s, %d ops already confirmed by the hub",
            self.node_id,
            self.region,
            self.acked_seq,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat_loop(), name="heartbeat")
                tg.create_task(self._drain_loop(), name="drain")
                tg.create_task(self._confirm_loop(), name="confirm")
                tg.create_task(self._inbound_loop(), name="inbound")
                tg.create_task(self._audit_loop(), name="audit-checkpoints")
        finally:
            with contextlib.suppress(*TRANSIENT):
                # close, not drain: drain() waits up to 30 s on pull subscriptions, and
                # unacked messages are redelivered anyway
                await self._nc.close()

    def statistics(self) -> ReplicationStatistics:
        last = self.store.statistics().last_seq
        return ReplicationStatistics(
            connected_to_hub=self._hub_seen.is_set(),
            last_seq=last,
            published_seq=self.published_seq,
            acked_seq=self.acked_seq,
            backlog_ops=max(0, last - self.acked_seq),
            oldest_pending_hlc=self._oldest_pending_hlc if last > self.acked_seq else None,
            batches_sent=self._batches_sent,
            inbound_ops_merged=self._inbound_merged,
            inbound_refused=dict(self._refused),
        )

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise SyncError("replication is not connected")
        return self._nc

    # --- hello: enrollment, policy, then heartbeats ---------------------------------------

    async def _request(self, subject: str, kind: str, body: dict[str, object]) -> dict[str, object]:
        frame = self.egress.sign(subject, kind, msgpack.packb(body), self.store.wall_ms())
        reply = await self.nc.request(subject, frame, timeout=2)
        answer = msgpack.unpackb(reply.data)
        if not isinstance(answer, dict):
            raise SyncError(f"the hub answered {subject} with a {type(answer).__name__}")
        return answer

    async def _enroll(self) -> bool:
        """Enroll at the hub once; True when this node is (or already was) enrolled."""
        if await self.store.read(lambda r: r.meta(ENROLLED_KEY)) is not None:
            return True
        if self._enroll_token is None:
            if not self.hub_configured:
                return False  # standalone: nothing to enroll with until the node is given a hub
            if not self._told_unenrolled:  # once: the same line every heartbeat would bury the log
                log.error(
                    "node %s is not enrolled at the hub: ask central ops for a token "
                    "(edgecare hub enroll-token --region %s) and restart with --enroll TOKEN; "
                    "the node keeps serving and queues its changes",
                    self.node_id,
                    self.region,
                )
                self._told_unenrolled = True
            return False
        body: dict[str, object] = {
            "token": self._enroll_token,
            "public_key": self.egress.identity.public_key,
            "version": __version__,
        }
        answer = await self._request(subjects.enroll_subject(self.region), "enroll", body)
        if not answer.get("ok"):
            self._hello_refused(f"the hub refused this node's enrollment: {answer.get('error')}")
            return False
        hub_id, hub_key = answer.get("hub_id"), answer.get("hub_public_key")
        if not isinstance(hub_id, str) or not isinstance(hub_key, bytes) or len(hub_key) != 32:
            log.error("the hub's enrollment answer lacks its id or public key; not enrolled")
            return False

        def enrolled(tx: Tx) -> None:
            tx.set_meta(HUB_KEY_META, hub_key.hex())
            tx.set_meta(ENROLLED_KEY, hub_id)

        await self.store.write(enrolled, actor="replication")
        log.info("node %s enrolled at hub %s for region %s", self.node_id, hub_id, self.region)
        return True

    def _hello_refused(self, message: str) -> None:
        """Log a refused enrollment or policy once, not at every retry (the answer rarely changes)."""
        if message != self._last_refusal:
            log.error("%s; retrying every %.0f s", message, self.settings.heartbeat_interval_s)
            self._last_refusal = message

    async def _register_policy(self) -> bool:
        policy = self.egress.policy
        body: dict[str, object] = {"version": policy.version, "forms": policy.as_dict()}
        answer = await self._request(subjects.policy_subject(self.region, self.node_id), "policy", body)
        if not answer.get("ok"):
            self._hello_refused(f"the hub refused residency policy v{policy.version}: {answer.get('error')}")
            return False
        log.info("residency policy v%d registered at the hub: %s", policy.version, policy.as_dict())
        return True

    async def _heartbeat_loop(self) -> None:
        ready = False
        while True:
            try:
                if not ready:
                    ready = await self._enroll() and await self._register_policy()
                if ready:
                    await self._heartbeat()
            except TRANSIENT:
                if self._hub_seen.is_set():
                    log.warning("hub unreachable; the node keeps serving and queues its changes")
                self._hub_seen.clear()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _heartbeat(self) -> None:
        stats = self.statistics()
        body: dict[str, object] = {
            "version": __version__,
            "last_seq": stats.last_seq,
            "acked_seq": stats.acked_seq,
            "backlog_ops": stats.backlog_ops,
            "oldest_pending_hlc": stats.oldest_pending_hlc,
            "sent_at_ms": self.store.wall_ms(),
        }
        answer = await self._request(subjects.heartbeat_subject(self.region, self.node_id), "heartbeat", body)
        if answer.get("ok"):
            if not self._hub_seen.is_set():
                log.info("hub reachable: node %s of region %s replicating", self.node_id, self.region)
            self._hub_seen.set()
            self._wake.set()
        else:
            log.warning("hub refused this node's heartbeat: %s", answer.get("error"))
            self._hub_seen.clear()

    # --- audit checkpoints up --------------------------------------------------------------

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            if not self._hub_seen.is_set():
                continue
            try:
                await self.ship_checkpoint()
            except TRANSIENT as exc:
                log.info("shipping the audit checkpoint failed (%s); retrying", type(exc).__name__)

    async def ship_checkpoint(self) -> bool:
        """Sign the audit log's head and send it, with erasures and the key inventory, to the hub."""
        audit = self.egress.audit
        if audit.statistics().entries == self._shipped_audit_size:
            return False
        checkpoint = await asyncio.to_thread(audit.checkpoint)
        erasures = [
            {
                "key_id": e.body.get("key_id"),
                "customer_id": e.body.get("customer_id"),
                "at_ms": e.at_ms,
                "seq": e.seq,
            }
            for e in await asyncio.to_thread(audit.entries, kinds=("erasure",))
        ]
        body: dict[str, object] = {
            "checkpoint": checkpoint.to_dict(),
            "erasures": erasures,
            "key_inventory": self.egress.key_inventory(),
        }
        answer = await self._request(subjects.audit_subject(self.region, self.node_id), "audit", body)
        if not answer.get("ok"):
            log.error("the hub refused audit checkpoint %d: %s", checkpoint.size, answer.get("error"))
            return False
        self._shipped_audit_size = checkpoint.size
        log.debug("->> audit checkpoint %d", checkpoint.size)
        return True

    # --- up: change log -> hub --------------------------------------------------------

    async def _drain_loop(self) -> None:
        js = self.nc.jetstream(domain=HUB_DOMAIN, timeout=self.settings.publish_timeout_s)
        subject = subjects.ops_subject(self.region, self.node_id)
        while True:
            await self._hub_seen.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            while self._hub_seen.is_set() and self.published_seq < self.store.statistics().last_seq:
                start = self.published_seq
                ops, customers = await self.store.read(
                    partial(_ops_after, start, self.settings.batch_max_ops)
                )
                if not ops:
                    break
                if start == self.acked_seq:
                    self._oldest_pending_hlc = ops[0].hlc
                prepared = await asyncio.to_thread(self.egress.prepare, ops, customers)
                batches = split_batches(
                    self.region, self.node_id, prepared.ops, max_bytes=self.settings.batch_max_bytes
                )
                frames = [
                    (batch, self.egress.sign(subject, "ops", encode_batch(batch), self.store.wall_ms()))
                    for batch in batches
                ]
                # audited before anything leaves, so the log never shows less than what may have left
                await asyncio.to_thread(
                    self.egress.record_batch,
                    ops[0].seq,
                    ops[-1].seq,
                    prepared,
                    size_bytes=sum(len(f) for _, f in frames),
                )
                try:
                    for batch, frame in frames:
                        await js.publish(subject, frame, headers={"Nats-Msg-Id": self._msg_id(batch)})
                        self.published_seq = batch.last_seq
                        self._batches_sent += 1
                        log.debug(
                            "->> batch %d..%d (%d ops)", batch.first_seq, batch.last_seq, len(batch.ops)
                        )
                except TRANSIENT as exc:
                    log.info("publishing to the hub failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.5)
                    break

    def _msg_id(self, batch: OpBatch) -> str:
        """Same batch, same attempt: deduplicated. A deliberate resend gets a new id.

        A resend must reach the merger even while JetStream still holds the first
        copy (a hub that died between fetch and ack): merges are idempotent, and
        the duplicate window would otherwise swallow the resend.
        """
        return f"{self.node_id}:{batch.first_seq}:{batch.last_seq}:{self._resends}"

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.confirm_interval_s)
            idle = self.published_seq <= self.acked_seq
            if not self._hub_seen.is_set() or (idle and time.monotonic() - self._last_check < IDLE_CHECK_S):
                continue
            self._last_check = time.monotonic()
            try:
                reply = await self.nc.request(subjects.ack_subject(self.region, self.node_id), b"", timeout=2)
            except TRANSIENT:
                continue
            answer = msgpack.unpackb(reply.data)
            merged = answer.get("merged_seq")
            if not isinstance(merged, int):
                log.warning("hub could not confirm: %s", answer.get("error"))
                continue
            await self._confirmed(merged)

    def _stale(self) -> bool:
        return time.monotonic() - self._last_progress_at > self.settings.resend_after_s

    async def _confirmed(self, merged: int) -> None:
        if merged < self.acked_seq:
            log.warning(
                "hub reports %d ops merged from this node, fewer than the %d it confirmed before; "
                "sending again from %d",
                merged,
                self.acked_seq,
                merged,
            )
        if merged != self.acked_seq:
            await self.store.write(lambda tx: tx.set_meta(ACKED_KEY, str(merged)), actor="replication")
            self.acked_seq = merged
            self._last_progress_at = time.monotonic()
            self._oldest_pending_hlc = None
        if merged < self.published_seq and self._stale():
            log.info("hub has merged up to %d of %d sent; sending again", merged, self.published_seq)
            self.published_seq = merged
            self._resends += 1
            self._last_progress_at = time.monotonic()
            self._wake.set()
        elif merged > self.published_seq:
            self.published_seq = merged

    # --- down: the hub's edits for this region ----------------------------------------

    async def _inbound_loop(self) -> None:
        durable = subjects.down_consumer(self.node_id)
        while True:
            await self._hub_seen.wait()
            try:
                js = self.nc.jetstream(domain=HUB_DOMAIN, timeout=5)
                sub = await js.pull_subscribe(
                    subjects.down_subject(self.region),
                    durable=durable,
                    stream=subjects.down_stream(self.region),
                    # an edit delivered into the pull request of a node that just stopped
                    # comes back after ack_wait; the server's 30 s default is too slow
                    config=ConsumerConfig(ack_wait=DOWN_ACK_WAIT_S),
                )
                while True:
                    try:
                        msgs = await sub.fetch(self.settings.inbound_batch, timeout=1)
                    except NatsTimeoutError:
                        continue
                    await self._merge_inbound(msgs)
            except TRANSIENT as exc:
                log.debug("inbound consumer not available (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _hub(self) -> tuple[str, bytes] | None:
        """The enrolled hub's id and public key (what down edits must be signed with)."""
        if self._hub_key is None:
            hub_id, key = await self.store.read(lambda r: (r.meta(ENROLLED_KEY), r.meta(HUB_KEY_META)))
            if hub_id is not None and key is not None:
                self._hub_key = (hub_id, bytes.fromhex(key))
        return self._hub_key

    def _open_down(self, msg: Msg, hub: tuple[str, bytes]) -> OpBatch:
        """Verify a down message as the hub's, then parse it, then keep it to central edits."""
        hub_id, hub_key = hub
        frame = verify_frame_with_key(
            msg.data,
            msg.subject,
            public_key=hub_key,
            expected_kind="ops",
            subject_region=self.region,
            now_ms=self.store.wall_ms(),
            guard=self._down_guard,
            delivery=stream_sequence(msg),
        )
        batch = decode_batch(frame.payload)
        if frame.node_id != hub_id or batch.node_id != hub_id or batch.region != self.region:
            raise FrameRejected("wrong_region", f"batch of {batch.node_id}/{batch.region}", msg.subject)
        for op in batch.ops:
            allowed = CENTRAL_EDITS.get(op.entity, frozenset())
            if op.delete or op.restore or not set(op.changes) <= allowed:
                extra = sorted(set(op.changes) - allowed)
                raise FrameRejected("malformed", f"{op.entity} {op.record_id}: not a central edit ({extra})")
        self._down_guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, stream_sequence(msg))
        return batch

    async def _merge_inbound(self, msgs: list[Msg]) -> None:
        hub = await self._hub()
        batches: list[OpBatch] = []
        accepted: list[Msg] = []
        for msg in msgs:
            try:
                if hub is None:
                    raise FrameRejected("unknown_node", "no enrolled hub key to check it with", msg.subject)
                batches.append(self._open_down(msg, hub))
                accepted.append(msg)
            except (FrameRejected, WireError) as exc:
                reason = exc.reason if isinstance(exc, FrameRejected) else "malformed"
                self._refuse(reason, f"down edit refused: {exc}")
                with contextlib.suppress(*TRANSIENT):
                    await msg.term()
        self._down_guard.prune(self.store.wall_ms())

        def merge(tx: Tx) -> list[str]:
            touched: list[str] = []
            for batch in batches:
                for op in batch.ops:
                    entity = BY_NAME.get(op.entity)
                    if entity is None:
                        self._refuse("unknown_entity", f"op for unknown entity {op.entity!r}")
                        continue
                    tx.merge(entity, op)
                    if op.entity == "ticket":
                        touched.append(op.record_id)
            return touched

        touched = await self.store.write(merge, actor="hub")
        self._inbound_merged += sum(len(b.ops) for b in batches)
        for msg in accepted:  # after the merge committed; refused ones were terminated
            with contextlib.suppress(*TRANSIENT):
                await msg.ack()
        if batches:
            log.info(
                "merged %d ops from the hub (%s)",
                sum(len(b.ops) for b in batches),
                ", ".join(f"{b.node_id}:{b.first_seq}-{b.last_seq}" for b in batches),
            )
        if touched and self._on_merged is not None:
            await self._on_merged(touched)

    def _refuse(self, reason: str, message: str) -> None:
        self._refused[reason] = self._refused.get(reason, 0) + 1
        log.warning("refused: %s", message)


def _ops_after(seq: int, limit: int, reader: Reader) -> tuple[list[Op], dict[tuple[str, str], str | None]]:
    """The next ops and the customer each of their records belongs to (whose key seals it)."""
    ops = reader.crdt_ops(after_seq=seq, limit=limit)
    return ops, customers_of(reader.conn, ops)


def customers_of(conn: sqlite3.Connection, ops: Sequence[Op]) -> dict[tuple[str, str], str | None]:
    """``{(entity, record id): customer id}`` for the ticket and comment records of ``ops``."""
    out: dict[tuple[str, str], str | None] = {}
    queries = {
        "ticket": "SELECT id, customer_id FROM tickets WHERE id IN ({})",
        "comment": "SELECT c.id, t.customer_id FROM ticket_comments c JOIN tickets t ON t.id = c.ticket_id "
        "WHERE c.id IN ({})",
    }
    for entity, sql in queries.items():
        ids = sorted({op.record_id for op in ops if op.entity == entity})
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = conn.execute(sql.format(", ".join("?" * len(chunk))), chunk)
            out.update({(entity, str(r)): None if c is None else str(c) for r, c in rows})
    return out


def hlc_age_s(hlc: int | None, now_ms: int) -> float | None:
    """Seconds between an HLC timestamp's wall time and now."""
    if hlc is None:
        return None
    return max(0.0, (now_ms - HLCTimestamp.decode(hlc).wall_ms) / 1000)
