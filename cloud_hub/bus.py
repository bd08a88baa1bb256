"""The hub's NATS adapter: streams, the merging consumer, acks, heartbeats, edits down.

The ``EC_OPS`` stream runs on the hub's nats-server with ``sync_interval:
always``, so a node's PubAck means its batch is on the hub's disk. A durable
pull consumer merges batches into the region stores and acks each message only
after the merge transaction committed: a hub crash between the two makes
JetStream redeliver, and the merge is idempotent. Every refusal (a node the hub
does not know, a batch on another region's subject, an undecodable frame) is
terminated, counted by reason and logged, never merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from functools import partial

import msgpack
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import Error as JetStreamError

from cloud_hub.core.fleet import Heartbeat
from cloud_hub.errors import HubError
from cloud_hub.service import Hub
from edge_node.store import Reader, Tx
from sync import subjects
from sync.crdt import Op
from sync.errors import SyncError
from sync.transport.codec import WireError, decode_batch, encode_batch, split_batches

log = logging.getLogger(__name__)

MERGER_DURABLE = "hub-merger"
DOWN_PUBLISHED_KEY = "down_published_seq"
TRANSIENT = (NatsError, JetStreamError, NatsTimeoutError, TimeoutError, OSError)


class HubBus:
    """Runs the hub's consumers and publishers on its own nats-server."""

    def __init__(self, hub: Hub, nats_url: str, *, fetch_batch: int = 64) -> None:
        self.hub = hub
        self.nats_url = nats_url
        self.fetch_batch = fetch_batch
        self._nc: NATS | None = None
        self._down_wake = asyncio.Event()
        hub.on_local_write = lambda region: self._down_wake.set()

    async def run(self) -> None:
        self._nc = await nats.connect(
            self.nats_url, name="edgecare-hub", max_reconnect_attempts=-1, reconnect_time_wait=0.25
        )
        try:
            await self._ensure_streams()
            await self._nc.subscribe(subjects.HEARTBEAT_WILDCARD, cb=self._on_heartbeat)
            await self._nc.subscribe(subjects.ACK_WILDCARD, cb=self._on_ack_request)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._merge_loop(), name="merge")
                tg.create_task(self._down_loop(), name="down")
        finally:
            with contextlib.suppress(*TRANSIENT):
                # close, not drain: drain() waits up to 30 s on pull subscriptions, and
                # unacked messages are redelivered anyway
                await self._nc.close()

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise HubError("the hub bus is not connected")
        return self._nc

    async def _ensure_streams(self) -> None:
        js = self.nc.jetstream()
        for name, subject in (
            (subjects.HUB_OPS_STREAM, subjects.OPS_WILDCARD),
            (subjects.HUB_DOWN_STREAM, subjects.DOWN_WILDCARD),
        ):
            config = StreamConfig(
                name=name,
                subjects=[subject],
                storage=StorageType.FILE,
                duplicate_window=120.0,
                max_msg_size=1_048_576,
            )
            try:
                await js.add_stream(config)
            except JetStreamError:
                await js.update_stream(config)
        log.info("streams %s and %s ready", subjects.HUB_OPS_STREAM, subjects.HUB_DOWN_STREAM)

    # --- heartbeats and confirmations ---------------------------------------------------

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            raw = msgpack.unpackb(msg.data)
            beat = Heartbeat(
                node_id=str(raw["node_id"]),
                region=str(raw["region"]),
                version=str(raw["version"]),
                last_seq=int(raw["last_seq"]),
                acked_seq=int(raw["acked_seq"]),
                backlog_ops=int(raw["backlog_ops"]),
                oldest_pending_hlc=None
                if raw.get("oldest_pending_hlc") is None
                else int(raw["oldest_pending_hlc"]),
                sent_at_ms=int(raw["sent_at_ms"]),
            )
            _, region, node_id = msg.subject.rsplit(".", 2)
            if (region, node_id) != (beat.region, beat.node_id):
                raise HubError(f"heartbeat on {msg.subject} claims {beat.region}/{beat.node_id}")
            subjects.check_token(beat.region, "region")
            self.hub.heartbeat(beat, int(time.time() * 1000))
            answer: dict[str, object] = {"ok": True}
        except (HubError, SyncError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            self.hub.counters.refuse("bad_heartbeat")
            log.warning("refused heartbeat on %s: %s", msg.subject, exc)
            answer = {"ok": False, "error": str(exc)}
        if msg.reply:
            await msg.respond(msgpack.packb(answer))

    async def _on_ack_request(self, msg: Msg) -> None:
        node_id = msg.subject.rsplit(".", 1)[-1]
        try:
            answer: dict[str, object] = {"merged_seq": await self.hub.merged_seq(node_id)}
        except HubError as exc:
            answer = {"error": str(exc)}
        if msg.reply:
            await msg.respond(msgpack.packb(answer))

    # --- merging ----------------------------------------------------------------------

    async def _merge_loop(self) -> None:
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(
            subjects.OPS_WILDCARD,
            durable=MERGER_DURABLE,
            stream=subjects.HUB_OPS_STREAM,
            config=ConsumerConfig(ack_wait=10.0, max_ack_pending=10_000, max_deliver=-1),
        )
        while True:
            try:
                msgs = await sub.fetch(self.fetch_batch, timeout=1)
            except NatsTimeoutError:
                continue
            except TRANSIENT as exc:
                log.warning("fetching operations failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            await self._merge_messages(msgs)

    async def _merge_messages(self, msgs: list[Msg]) -> None:
        by_region: dict[str, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
        accepted: list[Msg] = []
        for msg in msgs:
            reason = None
            try:
                batch = decode_batch(msg.data)
                _, _, region, node_id = msg.subject.split(".", 3)
                if batch.region != region or batch.node_id != node_id:
                    reason = "subject_mismatch"
                elif not self.hub.fleet.knows(node_id):
                    reason = "unknown_node"
                elif self.hub.fleet.region_of(node_id) != region:
                    reason = "wrong_region"
            except (WireError, ValueError) as exc:
                reason, batch = "malformed", None
                log.warning("undecodable batch on %s: %s", msg.subject, exc)
            if reason is not None or batch is None:
                self.hub.counters.refuse(reason or "malformed", len(batch.ops) if batch else 1)
                log.warning("refused batch on %s: %s", msg.subject, reason)
                with contextlib.suppress(*TRANSIENT):
                    await msg.term()
                continue
            by_region[batch.region][batch.node_id].extend(batch.ops)
            accepted.append(msg)
        for region, ops_by_node in by_region.items():
            merged = await self.hub.merge(region, ops_by_node)
            log.debug("merged %s into %s", {n: len(o) for n, o in ops_by_node.items()}, region)
            for node_id, seq in merged.items():
                log.debug("node %s merged up to %d", node_id, seq)
        for msg in accepted:  # only after every merge above committed
            with contextlib.suppress(*TRANSIENT):
                await msg.ack()

    # --- central edits down to their region ---------------------------------------------

    async def _down_loop(self) -> None:
        js = self.nc.jetstream(timeout=5)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._down_wake.wait()
            self._down_wake.clear()
            for region in self.hub.regions():
                try:
                    await self._publish_down(js, region)
                except TRANSIENT as exc:
                    log.warning("publishing edits down to %s failed (%s); retrying", region, exc)

    async def _publish_down(self, js: nats.js.JetStreamContext, region: str) -> None:
        store = self.hub.store(region)
        while True:
            published = int(await store.read(_down_published) or 0)
            if published >= store.statistics().last_seq:
                return
            ops = await store.read(partial(_ops_after, published))
            own = [op for op in ops if op.origin == self.hub.hub_id]
            for batch in split_batches(region, self.hub.hub_id, own) if own else []:
                await js.publish(
                    subjects.down_subject(region),
                    encode_batch(batch),
                    headers={"Nats-Msg-Id": f"{self.hub.hub_id}:{region}:{batch.first_seq}:{batch.last_seq}"},
                )
                log.info(
                    "->> %d central edits down to %s (%d..%d)",
                    len(batch.ops),
                    region,
                    batch.first_seq,
                    batch.last_seq,
                )
            await store.write(partial(_set_down_published, ops[-1].seq), actor="replication")


def _down_published(reader: Reader) -> str | None:
    return reader.meta(DOWN_PUBLISHED_KEY)


def _ops_after(seq: int, reader: Reader) -> list[Op]:
    return reader.crdt_ops(after_seq=seq, limit=1000)


def _set_down_published(seq: int, tx: Tx) -> None:
    tx.set_meta(DOWN_PUBLISHED_KEY, str(seq))
