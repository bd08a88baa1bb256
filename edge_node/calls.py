"""Call detail records: routing decisions, routing events and switch reports become CALL_RECORD writes.

Every contact the node routes gets one record (entity ``call_record``, keyed by the switch's
contact id), written through the store's ``Tx.insert``/``Tx.update`` so each change enters the
change log and replicates to the hub like any other operational data.
"""

# Theory of operation
# -------------------
# The recorder is fed synchronously, in the order things happened, by the switchboard (which
# owns the engine): an arrival with the decision `enqueue` returned, the engine's events, and
# the switch's reports (ringing, answered, ended ...). Each feed turns into one or more writes
# appended to an in-memory queue, and `run()` drains that queue into the store, every waiting
# write in one job, in order. So a routing decision never waits on the disk; a record lags the
# decision by one commit. `wait_flushed()` waits until everything fed so far is committed.
#
# What the recorder remembers per contact (`OpenCall`) lives only until the record is final:
# after the agent's wrap-up, or when the contact leaves unanswered. A record's fields:
#
#   arrived_at   reached the node (IVR entry, or the first queue)   offer (or IVR start)
#   offered_at   rung at an agent: the assignment, or the switch's Ringing report if later
#   answered_at  Answered report; wait_s = answered_at - arrived_at
#   ended_at     Ended/Transferred (talk_s = engine's handle time), or leaving unanswered
#                (abandoned, callback, refused; wait_s = ended_at - arrived_at)
#   wrap_up_s    release to the agent leaving wrap-up; 0 when other contacts kept it busy
#   outcome      the latest fate: overflowed while waiting in the overflow queue, then
#                answered, abandoned, callback or refused; self_service for IVR hang-ups
#   recording_uri  where the switch stored the call's recording, from any report naming it
#                  (the latest wins), also after the record is final; media: stays in the region
#
# A contact id offered again after its record was final (a callback taken, say) starts the
# record afresh: arrival writes every field, clearing the old ones.

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from edge_node.clock import RoutingClock
from edge_node.core.routing import (
    AgentState,
    AgentStateChanged,
    Assigned,
    CallbackOffered,
    ContactAbandoned,
    ContactAssigned,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactReleased,
    Decision,
    Overflowed,
    Queued,
    Refused,
    RoutingEvent,
)
from edge_node.store import Store, Tx
from sync.entities import CALL_RECORD
from sync.entity import Value, format_instant

log = logging.getLogger(__name__)

ACTOR = "routing"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call detail record as read back from the store (see the module comment)."""

    id: str
    channel: str | None = None
    queue_id: str | None = None
    agent_id: str | None = None
    arrived_at: datetime | None = None
    offered_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    wait_s: float | None = None
    talk_s: float | None = None
    wrap_up_s: float | None = None
    caller_country: str | None = None
    inquiry_type: str | None = None
    entry_position: int | None = None
    exit_position: int | None = None
    overflowed_from: str | None = None
    overflowed_at: datetime | None = None
    ended_by: str | None = None
    transferred_to: str | None = None
    recording_uri: str | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Value]) -> CallRecord:
        """Build from the store's core values (`Reader.get`/`select`)."""
        text = {k: v for k, v in values.items() if isinstance(v, str)}
        instants = {k: v for k, v in values.items() if isinstance(v, datetime)}
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        return cls(
            id=str(values["id"]),
            channel=text.get("channel"),
            queue_id=text.get("queue_id"),
            agent_id=text.get("agent_id"),
            arrived_at=instants.get("arrived_at"),
            offered_at=instants.get("offered_at"),
            answered_at=instants.get("answered_at"),
            ended_at=instants.get("ended_at"),
            outcome=text.get("outcome"),
            wait_s=numbers.get("wait_s"),
            talk_s=numbers.get("talk_s"),
            wrap_up_s=numbers.get("wrap_up_s"),
            caller_country=text.get("caller_country"),
            inquiry_type=text.get("inquiry_type"),
            entry_position=_whole(numbers.get("entry_position")),
            exit_position=_whole(numbers.get("exit_position")),
            overflowed_from=text.get("overflowed_from"),
            overflowed_at=instants.get("overflowed_at"),
            ended_by=text.get("ended_by"),
            transferred_to=text.get("transferred_to"),
            recording_uri=text.get("recording_uri"),
        )


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """What the recorder keeps about a new contact, from the switch's description."""

    contact_id: str
    channel: str
    caller_country: str | None = None
    inquiry_type: str | None = None


@dataclass(slots=True)
class OpenCall:
    """The recorder's memory of one contact whose record is not final yet."""

    arrived_at: datetime
    queue_id: str | None = None
    overflowed: bool = False
    exit_position: int | None = None
    ended_by: str | None = None
    transferred_to: str | None = None


@dataclass(frozen=True, slots=True)
class _Write:
    record_id: str
    values: Mapping[str, Value]
    upsert: bool  # True: insert, or overwrite every field of an old record; False: update


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """Writes fed, committed and waiting; contacts whose records are still open."""

    fed: int
    committed: int
    batches: int
    waiting: int
    open_calls: int


@dataclass(slots=True)
class _Wrap:
    contact_id: str
    released_at: float
    wrapping: bool = False


class CallRecorder:
    """Turns routing facts into call detail record writes; `run()` commits them in order.

    Args:
        store: The node's store; records are written with actor "routing".
        clock: Maps engine seconds to instants; the switchboard routes on the same clock.
    """

    def __init__(self, store: Store, clock: RoutingClock | None = None) -> None:
        self.store = store
        self.clock = clock or RoutingClock()
        self._open: dict[str, OpenCall] = {}
        self._wraps: dict[str, _Wrap] = {}
        self._queue: deque[_Write] = deque()
        self._fed = self._committed = self._batches = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()

    # --- feeding (synchronous, in the order things happened) ------------------------------

    def arrived(self, caller: CallerInfo, at: float) -> None:
        """A contact reached the node (an IVR flow, or its first queue): start its record afresh."""
        arrived_at = self.clock.instant(at)
        self._open[caller.contact_id] = OpenCall(arrived_at)
        values: dict[str, Value] = dict.fromkeys(f.name for f in CALL_RECORD.fields if f.name != "id")
        values |= {
            "channel": caller.channel,
            "arrived_at": arrived_at,
            "caller_country": caller.caller_country,
            "inquiry_type": caller.inquiry_type,
        }
        self._push(caller.contact_id, values, upsert=True)

    def decided(self, contact_id: str, decision: Decision, at: float) -> None:
        """`enqueue` answered with `decision` at `at` (after `arrived`)."""
        call = self._open.get(contact_id)
        if call is None:
            return
        changes: dict[str, Value] = {}
        while isinstance(decision, Overflowed):
            changes |= self._overflowed(call, decision.from_queue_id, at)
            decision = decision.outcome
        call.queue_id = decision.queue_id
        changes["queue_id"] = decision.queue_id
        match decision:
            case Assigned():
                changes |= {"agent_id": decision.agent_id, "offered_at": self.clock.instant(at)}
                changes["entry_position"] = 1
            case Queued():
                changes["entry_position"] = decision.position
            case Refused():
                changes |= self._leave(contact_id, call, "refused", at)
            case CallbackOffered():
                changes |= self._leave(contact_id, call, "callback", at)
        self._push(contact_id, changes)

    def events(self, events: Iterable[RoutingEvent]) -> None:
        """Engine events, in the order the engine returned them."""
        for event in events:
            self._event(event)

    def position(self, contact_id: str, position: int | None) -> None:
        """The contact's place in line just before it leaves unanswered (ABANDON's position)."""
        if (call := self._open.get(contact_id)) is not None:
            call.exit_position = position

    def ringing(self, contact_id: str, at: float) -> None:
        """The switch rings the agent: the offer starts now, if that is later than the assignment."""
        if contact_id in self._open:
            self._push(contact_id, {"offered_at": self.clock.instant(at)})

    def answered(self, contact_id: str, at: float) -> None:
        """The agent answered."""
        if (call := self._open.get(contact_id)) is None:
            return
        answered_at = self.clock.instant(at)
        wait_s = max(0.0, (answered_at - call.arrived_at).total_seconds())
        self._push(contact_id, {"answered_at": answered_at, "outcome": "answered", "wait_s": wait_s})

    def hanging_up(self, contact_id: str, *, by: str | None, transferred_to: str | None = None) -> None:
        """Who ends the connected contact (or where it was transferred); the release event follows."""
        if (call := self._open.get(contact_id)) is not None:
            call.ended_by, call.transferred_to = by, transferred_to

    def recorded(self, contact_id: str, recording_uri: str) -> None:
        """The switch stored a recording of the contact at `recording_uri` (checked by the caller).

        Unlike the routing facts this is kept also after the record is final: a switch may name
        the recording only once the file is complete, after the agent's wrap-up. A contact this
        node never recorded has no record to update, and nothing is written.
        """
        self._push(contact_id, {"recording_uri": recording_uri})

    def ivr_ended(self, contact_id: str, at: float, *, outcome: str) -> None:
        """The contact left in the IVR: `self_service` (the flow hung up) or `abandoned`."""
        if (call := self._open.get(contact_id)) is not None:
            self._push(contact_id, self._leave(contact_id, call, outcome, at))

    # --- events ---------------------------------------------------------------------------

    def _event(self, event: RoutingEvent) -> None:
        match event:
            case AgentStateChanged():
                self._agent_changed(event)
                return
            case ContactReleased():
                self._released(event)
                return
        call = self._open.get(event.contact_id)
        if call is None:
            return
        changes: dict[str, Value] = {}
        match event:
            case ContactAssigned():
                call.queue_id = event.queue_id
                changes = {
                    "queue_id": event.queue_id,
                    "agent_id": event.agent_id,
                    "offered_at": self.clock.instant(event.at),
                }
            case ContactQueued():
                call.queue_id = event.queue_id
                changes = {"queue_id": event.queue_id}
                if event.enqueued_at == event.at:  # a new entry (overflow), not a declined offer
                    changes["entry_position"] = event.position
            case ContactOverflowed():
                call.queue_id = event.to_queue_id
                changes = self._overflowed(call, event.from_queue_id, event.at)
                changes["queue_id"] = event.to_queue_id
            case ContactCallbackOffered():
                changes = self._leave(event.contact_id, call, "callback", event.at)
            case ContactRefused():
                changes = self._leave(event.contact_id, call, "refused", event.at)
            case ContactAbandoned():
                changes = self._leave(event.contact_id, call, "abandoned", event.at)
            case _:  # relaxations and declines change nothing the record shows
                return
        self._push(event.contact_id, changes)

    def _overflowed(self, call: OpenCall, from_queue_id: str, at: float) -> dict[str, Value]:
        """The contact left a queue for another; the record keeps the first queue it left."""
        changes: dict[str, Value] = {"outcome": "overflowed"}
        if not call.overflowed:
            call.overflowed = True
            changes |= {"overflowed_from": from_queue_id, "overflowed_at": self.clock.instant(at)}
        return changes

    def _leave(self, contact_id: str, call: OpenCall, outcome: str, at: float) -> dict[str, Value]:
        """The contact leaves unanswered: the final fields, and forget it."""
        del self._open[contact_id]
        ended_at = self.clock.instant(at)
        return {
            "outcome": outcome,
            "ended_at": ended_at,
            "wait_s": max(0.0, (ended_at - call.arrived_at).total_seconds()),
            "exit_position": call.exit_position,
        }

    def _released(self, event: ContactReleased) -> None:
        call = self._open.get(event.contact_id)
        if call is not None:
            changes: dict[str, Value] = {
                "ended_at": self.clock.instant(event.at),
                "talk_s": event.handled_s,
                "ended_by": call.ended_by or ("agent" if call.transferred_to is None else None),
                "transferred_to": call.transferred_to,
            }
            self._push(event.contact_id, changes)
        earlier = self._wraps.get(event.agent_id)
        if earlier is not None and not earlier.wrapping:  # other contacts kept the agent busy
            self._close_wrap(event.agent_id, 0.0)
        self._wraps[event.agent_id] = _Wrap(event.contact_id, event.at)

    def _agent_changed(self, event: AgentStateChanged) -> None:
        wrap = self._wraps.get(event.agent_id)
        if wrap is None:
            return
        if event.after is AgentState.WRAP_UP:
            wrap.wrapping = True
        elif event.before is AgentState.WRAP_UP:
            self._close_wrap(event.agent_id, event.at - wrap.released_at)

    def _close_wrap(self, agent_id: str, wrap_up_s: float) -> None:
        wrap = self._wraps.pop(agent_id)
        if self._open.pop(wrap.contact_id, None) is not None:
            self._push(wrap.contact_id, {"wrap_up_s": max(0.0, wrap_up_s)})

    # --- writing --------------------------------------------------------------------------

    def _push(self, record_id: str, values: Mapping[str, Value], *, upsert: bool = False) -> None:
        if not values:
            return
        self._queue.append(_Write(record_id, dict(values), upsert))
        self._fed += 1
        self._wake.set()

    async def run(self) -> None:
        """Commit fed writes in order, all waiting ones in one store job, until cancelled.

        A write that fails (the store is gone) raises here and ends the task: run it in the
        node's TaskGroup, so the node stops rather than silently dropping records.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                await self.store.write(partial(_apply, batch=batch), actor=ACTOR)
                async with self._progress:
                    self._committed += len(batch)
                    self._batches += 1
                    self._progress.notify_all()
                log.debug("->> %d call record writes committed", len(batch))

    async def wait_flushed(self) -> None:
        """Wait until every write fed so far is committed (needs `run()` running)."""
        target = self._fed
        async with self._progress:
            await self._progress.wait_for(lambda: self._committed >= target)

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            self._fed, self._committed, self._batches, len(self._queue), len(self._open)
        )


def _apply(tx: Tx, batch: list[_Write]) -> None:
    for write in batch:
        exists = tx.get(CALL_RECORD, write.record_id) is not None
        if write.upsert and not exists:
            fields = {k: v for k, v in write.values.items() if v is not None}
            tx.insert(CALL_RECORD, {**fields, "id": write.record_id})
        elif exists:  # an update for a record never inserted cannot happen: fed in order
            tx.update(CALL_RECORD, write.record_id, write.values)


# --- reading --------------------------------------------------------------------------


async def list_calls(store: Store, *, since: datetime | None, limit: int) -> list[CallRecord]:
    """Records of contacts that arrived at or after `since`, oldest first, at most `limit`."""
    where, params = ("arrived_at >= ?", [format_instant(since)]) if since is not None else ("1", [])
    tail = f"ORDER BY arrived_at, id LIMIT {int(limit)}"
    rows = await store.read(lambda r: r.select(CALL_RECORD, where, params, tail=tail))
    return [CallRecord.from_values(row) for row in rows]


async def calls_active_since(store: Store, since: datetime | None) -> list[CallRecord]:
    """Records with anything at or after `since`: contacts still open, or that ended since."""
    where, params = ("ended_at IS NULL OR ended_at >= ?", [format_instant(since)]) if since else ("1", [])
    rows = await store.read(lambda r: r.select(CALL_RECORD, where, params, tail="ORDER BY arrived_at, id"))
    return [CallRecord.from_values(row) for row in rows]
