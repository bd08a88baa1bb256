"""The hub's NATS adapter: streams, the verifying merge consumer, enrollment, policies, checkpoints.

Every message a node sends is a signed frame (``security.frames``); the hub
checks the signature against the key registered at enrollment *before* it
parses anything, then the frame's region against the subject and the node's
enrolled region, then the replay guard. Only then is the payload decoded.
Each refusal is counted by reason (in memory for ``/replication``, per day in
``hub.db`` for the compliance report), logged, and the message terminated:
never merged, never acked as merged. Operation batches count under the frame
reasons themselves (``unsigned``, ``forged``, ``altered``, ``replayed``, ...,
plus ``policy_unregistered`` and ``below_floor``); requests on the other subjects under the
subject's kind (``heartbeat_unknown_node``, ``enroll_token_used``, ...), so the
batch counters reconcile exactly with what was sent.

The ``EC_OPS`` stream runs on the hub's nats-server with ``sync_interval:
always``, so a node's PubAck means its batch is on the hub's disk. A durable
pull consumer merges batches into the region stores and acks each message only
after the merge transaction committed: a hub crash between the two makes
JetStream redeliver (same stream sequence, which the replay guard lets
through), and the merge is idempotent. Down edits go to one stream per region
(``EC_DOWN_<region>``), so NATS permissions can confine a region to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import msgpack
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import Error as JetStreamError

from cloud_hub.core.enrollment import EnrollClaim, EnrollmentError, parse_token
from cloud_hub.core.fleet import Heartbeat
from cloud_hub.errors import HubError
from cloud_hub.service import Hub, PolicyBelowFloorError, PolicyUnknownError
from edge_node.store import Reader, Tx
from security.frames import (
    FrameRejected,
    VerifiedFrame,
    sign_frame,
    unverified_payload,
    verify_frame,
    verify_frame_with_key,
)
from security.replay import ReplayGuard
from sync import subjects
from sync.crdt import Op
from sync.errors import SyncError
from sync.residency import ResidencyError, ResidencyPolicy
from sync.transport.codec import OpBatch, WireError, decode_batch, encode_batch, split_batches
from sync.transport.delivery import stream_sequence

log = logging.getLogger(__name__)

MERGER_DURABLE = "hub-merger"
DOWN_PUBLISHED_KEY = "down_published_seq"
MAX_DOWN_CONSUMERS = 256  # one durable per node of a region
OPS_MAX_AGE_S = 7 * 24 * 3600.0  # merged batches live on in the region stores; nodes resend anything unmerged
# Refusals of frames whose signature verified: a region's own data, refused before its residency check.
# (Frames failing the signature are a stranger's bytes; they are terminated, not erased one by one.)
SIGNED_REFUSALS = frozenset({"malformed", "wrong_region", "policy_unregistered", "below_floor"})
MAX_FRAME_BYTES = 512 * 1024  # nodes send batches of at most 256 kB; the stream takes up to 1 MiB
TRANSIENT = (NatsError, JetStreamError, NatsTimeoutError, TimeoutError, OSError)
UNPARSED = (SyncError, HubError, KeyError, TypeError, ValueError, msgpack.UnpackException)


class HubBus:
    """Runs the hub's consumers and publishers on its own nats-server."""

    def __init__(
        self,
        hub: Hub,
        nats_url: str,
        *,
        fetch_batch: int = 64,
        connect_options: dict[str, object] | None = None,
        guard: ReplayGuard | None = None,
        regions: Sequence[str] = (),
    ) -> None:
        self.hub = hub
        self.nats_url = nats_url
        self.fetch_batch = fetch_batch
        self._connect_options = connect_options or {}
        self._provisioned_regions = tuple(regions)
        self._nc: NATS | None = None
        self._down_wake = asyncio.Event()
        self._new_regions: asyncio.Queue[str] = asyncio.Queue()
        self.guard = guard or ReplayGuard()
        self.guard.load(self.hub.registry.seen_frames(hub.wall_ms() - self.guard.window_ms))
        hub.on_local_write = lambda region: self._down_wake.set()
        hub.on_new_region = self._new_regions.put_nowait

    async def run(self) -> None:
        self._nc = await nats.connect(
            self.nats_url,
            name="edgecare-hub",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            **self._connect_options,  # TLS and credentials from provisioning
        )
        try:
            await self._ensure_streams()
            for subject, handler in (
                (subjects.HEARTBEAT_WILDCARD, self._on_heartbeat),
                (subjects.ACK_WILDCARD, self._on_ack_request),
                (subjects.ENROLL_WILDCARD, self._on_enroll),
                (subjects.POLICY_WILDCARD, self._on_policy),
                (subjects.AUDIT_WILDCARD, self._on_audit),
            ):
                await self._nc.subscribe(subject, cb=_guarded(handler))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._merge_loop(), name="merge")
                tg.create_task(self._down_loop(), name="down")
                tg.create_task(self._region_streams_loop(), name="region-streams")
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
        await self._ensure_stream(subjects.HUB_OPS_STREAM, subjects.OPS_WILDCARD)
        for region in sorted({*self.hub.regions(), *self._provisioned_regions}):
            await self._ensure_stream(
                subjects.down_stream(region), subjects.down_subject(region), per_region=True
            )

    async def _ensure_stream(self, name: str, subject: str, *, per_region: bool = False) -> None:
        js = self.nc.jetstream()
        config = StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType.FILE,
            duplicate_window=120.0,
            max_msg_size=1_048_576,
            # a region's credentials may create consumers on its own down stream: bound how many
            max_consumers=MAX_DOWN_CONSUMERS if per_region else None,
            max_age=None if per_region else OPS_MAX_AGE_S,
        )
        try:
            await js.add_stream(config)
        except JetStreamError:
            await js.update_stream(config)
        log.info("stream %s on %s ready", name, subject)

    async def _region_streams_loop(self) -> None:
        while True:
            region = await self._new_regions.get()
            await self._ensure_stream(
                subjects.down_stream(region), subjects.down_subject(region), per_region=True
            )

    # --- frames -------------------------------------------------------------------------

    def _verify(self, msg: Msg, kind: str, delivery: int | None = None) -> VerifiedFrame:
        region, node_id = subjects.parse_region_node_subject(
            msg.subject, kind if kind != "heartbeat" else "hb"
        )
        return verify_frame(
            msg.data,
            msg.subject,
            expected_kind=kind,
            subject_region=region,
            subject_node=node_id,
            lookup=self.hub.enrolled_key,
            now_ms=self.hub.wall_ms(),
            guard=self.guard,
            delivery=delivery,
            max_bytes=MAX_FRAME_BYTES,
        )

    def _refused(self, region: str, reason: str, subject: str, message: str) -> None:
        self.hub.counters.refuse(reason)
        self.hub.registry.record_batch(at_ms=self.hub.wall_ms(), refusals=[(region, reason)])
        log.warning("refused %s: %s (%s)", subject, reason, message)

    async def _answer(self, msg: Msg, answer: dict[str, object]) -> None:
        if msg.reply:
            await msg.respond(msgpack.packb(answer))

    # --- requests: enrollment, heartbeats, policies, checkpoints, watermarks ---------------------

    async def _on_enroll(self, msg: Msg) -> None:
        region = _subject_region(msg.subject)
        try:
            claim_region = subjects.parse_enroll_subject(msg.subject)
            # the key the frame must verify with travels inside it; nothing read here is trusted
            body = _unpack_map(unverified_payload(msg.data, msg.subject, max_bytes=MAX_FRAME_BYTES))
            public_key = _bytes(body, "public_key")
            frame = verify_frame_with_key(
                msg.data,
                msg.subject,
                expected_kind="enroll",
                subject_region=claim_region,
                public_key=public_key,
                now_ms=self.hub.wall_ms(),
                guard=self.guard,
                max_bytes=MAX_FRAME_BYTES,
            )
            claim = EnrollClaim(parse_token(str(body["token"])), frame.node_id, frame.region, public_key)
            self.hub.enroll(claim, version=str(body.get("version", "unknown")))
            self.guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, None)
            answer = {"ok": True, "hub_id": self.hub.hub_id, "hub_public_key": self.hub.identity.public_key}
            await self._answer(msg, answer)
        except FrameRejected as exc:
            self._refused(region, f"enroll_{exc.reason}", msg.subject, str(exc))
            await self._answer(msg, {"ok": False, "error": str(exc)})
        except EnrollmentError as exc:
            self._refused(region, f"enroll_{exc.reason}", msg.subject, str(exc))
            await self._answer(msg, {"ok": False, "error": str(exc)})
        except UNPARSED as exc:
            self._refused(region, "enroll_malformed", msg.subject, str(exc))
            await self._answer(msg, {"ok": False, "error": f"malformed enrollment request: {exc}"})

    async def _on_heartbeat(self, msg: Msg) -> None:
        region = _subject_region(msg.subject)
        try:
            frame = self._verify(msg, "heartbeat")
            raw = _unpack_map(frame.payload)
            oldest = raw.get("oldest_pending_hlc")
            beat = Heartbeat(
                node_id=frame.node_id,
                region=frame.region,
                version=str(raw["version"]),
                last_seq=_int(raw, "last_seq"),
                acked_seq=_int(raw, "acked_seq"),
                backlog_ops=_int(raw, "backlog_ops"),
                oldest_pending_hlc=None if oldest is None else _int(raw, "oldest_pending_hlc"),
                sent_at_ms=_int(raw, "sent_at_ms"),
            )
            self.hub.heartbeat(beat, self.hub.wall_ms())
            self.guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, None)
            answer: dict[str, object] = {"ok": True}
        except FrameRejected as exc:
            self._refused(region, f"heartbeat_{exc.reason}", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc), "reason": exc.reason}
        except UNPARSED as exc:
            self._refused(region, "heartbeat_malformed", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        await self._answer(msg, answer)

    async def _on_policy(self, msg: Msg) -> None:
        region = _subject_region(msg.subject)
        try:
            frame = self._verify(msg, "policy")
            raw = _unpack_map(frame.payload)
            forms = raw["forms"]
            if not isinstance(forms, dict):
                raise TypeError("policy forms must be a map")
            self.hub.register_policy(
                frame.node_id, _int(raw, "version"), {str(k): str(v) for k, v in forms.items()}
            )
            self.guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, None)
            answer: dict[str, object] = {"ok": True}
        except FrameRejected as exc:
            self._refused(region, f"policy_{exc.reason}", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        except PolicyBelowFloorError as exc:
            self._refused(region, "policy_below_floor", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        except (*UNPARSED, ResidencyError) as exc:
            self._refused(region, "policy_malformed", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        await self._answer(msg, answer)

    async def _on_audit(self, msg: Msg) -> None:
        region = _subject_region(msg.subject)
        try:
            frame = self._verify(msg, "audit")
            raw = _unpack_map(frame.payload)
            problem = self.hub.receive_checkpoint(frame.node_id, frame.region, raw)
            self.guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, None)
            answer: dict[str, object] = {"ok": problem is None}
            if problem is not None:
                answer["error"] = problem
        except FrameRejected as exc:
            self._refused(region, f"audit_{exc.reason}", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        except UNPARSED as exc:
            self._refused(region, "audit_malformed", msg.subject, str(exc))
            answer = {"ok": False, "error": str(exc)}
        await self._answer(msg, answer)

    async def _on_ack_request(self, msg: Msg) -> None:
        try:
            region, node_id = subjects.parse_region_node_subject(msg.subject, "ack")
            key = self.hub.enrolled_key(node_id)
            if key is None or key.region != region:
                raise HubError(f"node {node_id!r} is not enrolled in region {region!r}")
            answer: dict[str, object] = {"merged_seq": await self.hub.merged_seq(node_id)}
        except (HubError, SyncError) as exc:
            answer = {"error": str(exc)}
        await self._answer(msg, answer)

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

    def _accept(self, msg: Msg) -> tuple[VerifiedFrame, OpBatch, ResidencyPolicy]:
        """Verify, then parse, then check one ops message; raise FrameRejected with the reason."""
        frame = self._verify(msg, "ops", stream_sequence(msg))
        try:
            batch = decode_batch(frame.payload)
        except WireError as exc:
            raise FrameRejected("malformed", f"undecodable batch: {exc}", msg.subject) from None
        if batch.region != frame.region or batch.node_id != frame.node_id:
            raise FrameRejected(
                "malformed", f"the batch header names {batch.region}/{batch.node_id}", msg.subject
            )
        try:
            policy = self.hub.policy_of(frame.node_id, frame.policy_version)
        except PolicyUnknownError as exc:
            raise _Refusal("policy_unregistered", str(exc)) from None
        except PolicyBelowFloorError as exc:
            raise _Refusal("below_floor", str(exc)) from None
        return frame, batch, policy

    async def _merge_messages(self, msgs: list[Msg]) -> None:
        by_region: dict[str, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
        policies: dict[str, ResidencyPolicy] = {}
        accepted: list[tuple[Msg, VerifiedFrame, OpBatch]] = []
        refused: list[Msg] = []
        refusals: list[tuple[str, str]] = []
        for msg in msgs:
            try:
                frame, batch, policy = self._accept(msg)
            except (FrameRejected, _Refusal, SyncError) as exc:
                reason = exc.reason if isinstance(exc, FrameRejected | _Refusal) else "malformed"
                self.hub.counters.refuse(reason)
                refusals.append((_subject_region(msg.subject), reason))
                log.warning("refused batch on %s: %s", msg.subject, exc)
                with contextlib.suppress(*TRANSIENT):
                    await msg.term()
                if reason in SIGNED_REFUSALS:
                    refused.append(msg)
                continue
            # remembered now, in memory, so a copy later in this same fetch is refused; a redelivery
            # of this message after a failed merge has the same delivery id and passes
            self.guard.remember(frame.node_id, frame.nonce, frame.signed_at_ms, stream_sequence(msg))
            by_region[batch.region][batch.node_id].extend(batch.ops)
            policies[batch.node_id] = policy
            accepted.append((msg, frame, batch))
        quarantined: set[tuple[str, int]] = set()
        for region, ops_by_node in by_region.items():
            merged = await self.hub.merge(region, ops_by_node, policies, quarantined_out=quarantined)
            counts = {n: len(o) for n, o in ops_by_node.items()}
            log.debug("merged %s into %s up to %s", counts, region, merged)
        now = self.hub.wall_ms()
        remembered = [(f.node_id, f.nonce, f.signed_at_ms, stream_sequence(m)) for m, f, _ in accepted]
        self.guard.prune(now)
        await asyncio.to_thread(self._record, remembered, refusals, now)
        self.hub.counters.frames_accepted += len(accepted)
        for msg, _, _ in accepted:  # only after every merge above committed
            with contextlib.suppress(*TRANSIENT):
                await msg.ack()
        # a region's own frame that was refused unchecked, or one carrying a quarantined operation, may
        # hold values the region does not let out in that form: nothing of it may stay on the hub's disk
        carrying = [m for m, _, b in accepted if any((b.node_id, op.seq) in quarantined for op in b.ops)]
        await self._erase([*refused, *carrying])

    async def _erase(self, msgs: Sequence[Msg]) -> None:
        """Delete messages from ``EC_OPS``; the server overwrites a deleted message's bytes."""
        js = self.nc.jetstream()
        seqs = [seq for msg in msgs if (seq := stream_sequence(msg)) is not None]
        results = await asyncio.gather(
            *(js.delete_msg(subjects.HUB_OPS_STREAM, seq) for seq in seqs), return_exceptions=True
        )
        for seq, result in zip(seqs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "could not erase refused message %d from %s: %s", seq, subjects.HUB_OPS_STREAM, result
                )

    def _record(
        self, remembered: list[tuple[str, bytes, int, int | None]], refusals: list[tuple[str, str]], now: int
    ) -> None:
        if remembered:
            self.hub.registry.remember_frames(remembered, prune_before_ms=now - self.guard.window_ms)
        if refusals:
            self.hub.registry.record_batch(at_ms=now, refusals=refusals)

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
            subject = subjects.down_subject(region)
            for batch in split_batches(region, self.hub.hub_id, own) if own else []:
                frame = sign_frame(
                    self.hub.identity.sign,
                    self.hub.identity.fingerprint,
                    subject,
                    kind="ops",
                    node_id=self.hub.hub_id,
                    region=region,
                    payload=encode_batch(batch),
                    now_ms=self.hub.wall_ms(),
                )
                await js.publish(
                    subject,
                    frame,
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


class _Refusal(HubError):
    """A verified frame the hub still refuses (a reason beyond the frame checks)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _guarded(handler: Callable[[Msg], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
    """A request handler that answers transient failures with a log line instead of dying."""

    async def run(msg: Msg) -> None:
        try:
            await handler(msg)
        except TRANSIENT as exc:
            log.warning("answering %s failed: %s", msg.subject, exc)

    return run


def _subject_region(subject: str) -> str:
    parts = subject.split(".")
    return parts[2] if len(parts) >= 3 and parts[2] else "?"


def _unpack_map(data: bytes) -> dict[str, object]:
    value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if not isinstance(value, dict):
        raise TypeError(f"expected a map, got {type(value).__name__}")
    return value


def _int(body: dict[str, object], key: str) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer")
    return value


def _bytes(body: dict[str, object], key: str) -> bytes:
    value = body[key]
    if not isinstance(value, bytes):
        raise TypeError(f"{key} must be bytes")
    return value


def _down_published(reader: Reader) -> str | None:
    return reader.meta(DOWN_PUBLISHED_KEY)


def _ops_after(seq: int, reader: Reader) -> list[Op]:
    return reader.crdt_ops(after_seq=seq, limit=1000)


def _set_down_published(seq: int, tx: Tx) -> None:
    tx.set_meta(DOWN_PUBLISHED_KEY, str(seq))
