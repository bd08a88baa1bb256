"""The switchboard: the node's side of call control, between the gRPC adapter and the routing core.

It owns the routing engine, the IVR sessions of calls in a flow, and the routing clock; it
feeds every decision and event to the call recorder and to whoever watches routing updates.
The gRPC adapter (rpc.py) translates protobuf to these calls and back, nothing more.
"""

# Theory of operation
# -------------------
# The engine is pure and synchronous; this class is its one driver. Every call reads the clock
# once, calls the engine, then drains the engine's events (a `tick` at the same instant returns
# what `enqueue` left in the outbox) into the recorder and the routing watchers, all without
# awaiting, so the recorder sees facts in the order they happened. `run_timer` sleeps until the
# engine's next deadline (relaxation, maximum wait, end of wrap-up) or until a call may have
# moved it, and ticks.
#
# Timestamps the switch reports are used when they fall between the last instant the engine saw
# and now; otherwise the node's clock wins, so a skewed switch clock can never move routing time
# backwards.
#
# A contact may start in an IVR flow. Its record starts then; when the flow transfers, the
# switch offers the contact to the queue and it keeps its IVR arrival as its age in line.

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from edge_node.calls import CallerInfo, CallRecorder
from edge_node.clock import RoutingClock
from edge_node.core.ivr import Flow, Hangup, IvrAction, IvrInput, IvrSession, Transfer
from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    AgentStatus,
    Channel,
    Contact,
    ContactAssigned,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactStateError,
    Decision,
    QueueStatistics,
    RoutingEngine,
    RoutingEvent,
    VipTier,
)
from edge_node.errors import EdgeNodeError

log = logging.getLogger(__name__)

MAX_TIMER_SLEEP_S = 60.0
WATCHER_BACKLOG = 10_000  # updates a routing watcher may fall behind before it is cut off

RoutingUpdate = ContactAssigned | ContactQueued | ContactCallbackOffered | ContactOverflowed | ContactRefused


class SwitchboardError(EdgeNodeError):
    """Base for call-control requests the switchboard refuses."""


class UnknownFlowError(SwitchboardError):
    """An IVR request names a flow the node does not have."""

    def __init__(self, flow: str, known: Iterable[str]) -> None:
        self.flow, self.known = flow, tuple(sorted(known))
        super().__init__(f"unknown ivr flow {flow!r}; known: {', '.join(self.known) or 'none'}")


class FlowMismatchError(SwitchboardError):
    """A contact already in one IVR flow was sent input for another."""

    def __init__(self, contact_id: str, flow: str, requested: str) -> None:
        self.contact_id, self.flow, self.requested = contact_id, flow, requested
        super().__init__(f"contact {contact_id!r} is in ivr flow {flow!r}, not {requested!r}")


class WatcherTooSlowError(SwitchboardError):
    """A routing watcher fell too far behind and was cut off."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        super().__init__(f"routing watcher fell {backlog} updates behind; reconnect")


@dataclass(frozen=True, slots=True)
class Arrival:
    """A contact as the switch describes it; the switchboard stamps its arrival time."""

    contact_id: str
    channel: Channel
    language: str | None = None
    vip: VipTier = VipTier.STANDARD
    band: int = 0
    inquiry_type: str | None = None
    caller_country: str | None = None
    caller_area: str | None = None
    preferred_agent_id: str | None = None

    def contact(self, arrival_at: float) -> Contact:
        return Contact(
            self.contact_id,
            self.channel,
            arrival_at,
            language=self.language,
            vip=self.vip,
            band=self.band,
            inquiry_type=self.inquiry_type,
            caller_country=self.caller_country,
            caller_area=self.caller_area,
            preferred_agent_id=self.preferred_agent_id,
        )

    def caller(self) -> CallerInfo:
        return CallerInfo(self.contact_id, self.channel.value, self.caller_country, self.inquiry_type)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One queue's figures at `at`, with the agents staffing it."""

    at: datetime
    figures: QueueStatistics
    staffed_agents: int


@dataclass(slots=True)
class _IvrCall:
    flow: str
    session: IvrSession
    started_at: float


class RoutingWatch:
    """A subscription to routing updates: iterate it; `close()` it (or leave the `with`) when done."""

    def __init__(self, watchers: set[RoutingWatch]) -> None:
        self._queue: asyncio.Queue[tuple[datetime, RoutingUpdate]] = asyncio.Queue()
        self._watchers = watchers
        self.cut_off = False
        watchers.add(self)

    def offer(self, updates: list[tuple[datetime, RoutingUpdate]]) -> None:
        if self.cut_off:
            return
        if self._queue.qsize() + len(updates) > WATCHER_BACKLOG:
            self.cut_off = True
            self._queue.put_nowait(updates[0])  # wakes a reader, who then learns it was cut off
            return
        for update in updates:
            self._queue.put_nowait(update)

    def __aiter__(self) -> RoutingWatch:
        return self

    async def __anext__(self) -> tuple[datetime, RoutingUpdate]:
        """The next update.

        Raises:
            WatcherTooSlowError: The reader fell `WATCHER_BACKLOG` updates behind and was cut off.
        """
        update = await self._queue.get()
        if self.cut_off:
            raise WatcherTooSlowError(self._queue.qsize() + 1)
        return update

    def close(self) -> None:
        self._watchers.discard(self)

    def __enter__(self) -> RoutingWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Switchboard:
    """Routing, IVR and call records of one node, driven by one clock.

    Args:
        engine: The routing engine, with its queues registered.
        recorder: Receives every decision and event; its clock is the routing clock.
        agents: Agent profiles to register (offline); the switchboard remembers their skills
            to count the agents staffing each queue.
        flows: IVR flows by name, validated.
    """

    def __init__(
        self,
        engine: RoutingEngine,
        recorder: CallRecorder,
        *,
        agents: Sequence[AgentProfile] = (),
        flows: Mapping[str, Flow] | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.clock: RoutingClock = recorder.clock
        self.flows: Mapping[str, Flow] = MappingProxyType(dict(flows or {}))
        self._profiles: dict[str, AgentProfile] = {}
        self._ivr: dict[str, _IvrCall] = {}
        self._transferred: dict[str, float] = {}  # contact -> IVR start, until offered to a queue
        self._watchers: set[RoutingWatch] = set()
        self._wake = asyncio.Event()
        self._last = self.clock.now()
        for profile in agents:
            self.engine.add_agent(profile, self._now())
            self._profiles[profile.agent_id] = profile

    # --- contacts -------------------------------------------------------------------------

    def offer(self, arrival: Arrival, queue_id: str) -> Decision:
        """Route a contact to a queue: an agent now, a place in line, or why not."""
        now = self._now()
        arrived = self._transferred.get(arrival.contact_id, now)
        try:
            decision = self.engine.enqueue(arrival.contact(arrived), queue_id, now)
        finally:
            self._drain(now)
        if self._transferred.pop(arrival.contact_id, None) is None:
            self.recorder.arrived(arrival.caller(), arrived)
        self.recorder.decided(arrival.contact_id, decision, now)
        log.info("contact %s to queue %s: %s", arrival.contact_id, queue_id, type(decision).__name__)
        self._wake.set()
        return decision

    def ivr(self, arrival: Arrival, flow: str, input: IvrInput) -> IvrAction:
        """Start an IVR flow for a contact (input None), or feed it what happened on the call."""
        call = self._ivr.get(arrival.contact_id)
        if call is not None and call.flow != flow:
            raise FlowMismatchError(arrival.contact_id, call.flow, flow)
        now = self._now()
        if call is None:
            if flow not in self.flows:
                raise UnknownFlowError(flow, self.flows)
            call = _IvrCall(flow, IvrSession(self.flows[flow]), now)
            action = call.session.advance(input)  # raises before anything is kept, if input is wrong
            self._ivr[arrival.contact_id] = call
            self._transferred.pop(arrival.contact_id, None)
            self.recorder.arrived(arrival.caller(), now)
        else:
            action = call.session.advance(input)
        if call.session.finished:
            del self._ivr[arrival.contact_id]
            if isinstance(action, Transfer):
                self._transferred[arrival.contact_id] = call.started_at
            elif isinstance(action, Hangup):
                self.recorder.ivr_ended(arrival.contact_id, now, outcome="self_service")
        return action

    # --- what the switch reports ------------------------------------------------------------

    def ringing(self, contact_id: str, agent_id: str, occurred_at: datetime | None = None) -> None:
        """The agent's phone rings with the contact the engine offered it."""
        if contact_id not in self.engine.agent(agent_id).contacts:
            raise ContactStateError(
                contact_id, expected=f"offered to agent {agent_id!r}", actual="not offered to that agent"
            )
        self.recorder.ringing(contact_id, self._now(occurred_at))

    def answered(self, contact_id: str, agent_id: str, occurred_at: datetime | None = None) -> None:
        now = self._now(occurred_at)
        self._apply(self.engine.accept(agent_id, contact_id, now))
        self.recorder.answered(contact_id, now)

    def abandoned(self, contact_id: str, occurred_at: datetime | None = None) -> None:
        """The customer hung up: waiting, ringing, or still in the IVR."""
        now = self._now(occurred_at)
        if self._ivr.pop(contact_id, None) is not None:
            self.recorder.ivr_ended(contact_id, now, outcome="abandoned")
            return
        self.recorder.position(contact_id, self._position(contact_id))
        self._apply(self.engine.abandon(contact_id, now))

    def declined(
        self, contact_id: str, agent_id: str, reason: str, occurred_at: datetime | None = None
    ) -> None:
        now = self._now(occurred_at)
        self._apply(self.engine.decline(agent_id, contact_id, now, reason=reason))

    def ended(
        self,
        contact_id: str,
        agent_id: str,
        *,
        by: str | None = None,
        transferred_to: str | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        """A connected contact ended (`by` hung up), or the agent transferred it elsewhere."""
        now = self._now(occurred_at)
        events = self.engine.release(agent_id, contact_id, now)
        self.recorder.hanging_up(contact_id, by=by, transferred_to=transferred_to)
        self._apply(events)

    # --- agents and figures -----------------------------------------------------------------

    def set_agent_state(self, agent_id: str, state: AgentState, reason: str | None) -> AgentStatus:
        now = self._now()
        self._apply(self.engine.set_agent_state(agent_id, state, now, reason))
        log.info("agent %s requested %s%s", agent_id, state, f" ({reason})" if reason else "")
        return self.engine.agent(agent_id)

    def queue_figures(self, queue_ids: Sequence[str] = ()) -> list[QueueSnapshot]:
        """Figures of the named queues (all when empty), as of now."""
        for queue_id in queue_ids:
            self.engine.queue(queue_id)  # UnknownQueueError for a wrong name
        now = self.tick()
        stats = self.engine.statistics(now)
        at = self.clock.instant(now)
        statuses = self.engine.agents()
        out = []
        for queue_id in queue_ids or list(stats.queues):
            skill = self.engine.queue(queue_id).skill
            staffed = sum(
                1
                for s in statuses
                if s.presence is AgentState.AVAILABLE
                and (profile := self._profiles.get(s.agent_id)) is not None
                and skill in profile.skills
            )
            out.append(QueueSnapshot(at, stats.queues[queue_id], staffed))
        return out

    def watch_routing(self) -> RoutingWatch:
        """Subscribe to later decisions about contacts, from now on (see `RoutingUpdate`)."""
        return RoutingWatch(self._watchers)

    # --- time -----------------------------------------------------------------------------

    def tick(self) -> float:
        """Fire whatever is due; return the instant (engine seconds) ticked at."""
        now = self._now()
        self._drain(now)
        return now

    async def run_timer(self) -> None:
        """Sleep until the engine's next deadline (or a call that may move it), then tick; forever."""
        while True:
            deadline = self.engine.next_deadline()
            timeout = MAX_TIMER_SLEEP_S
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self.tick()

    # --- internals ------------------------------------------------------------------------

    def _now(self, occurred_at: datetime | None = None) -> float:
        now = self.clock.now()
        if occurred_at is not None:
            now = min(now, max(self._last, self.clock.seconds(occurred_at)))
        self._last = now = max(now, self._last)
        return now

    def _position(self, contact_id: str) -> int | None:
        try:
            return self.engine.position(contact_id)
        except ContactStateError:  # ringing at an agent, not waiting in line
            return None

    def _drain(self, now: float) -> None:
        self._apply(self.engine.tick(now))

    def _apply(self, events: list[RoutingEvent]) -> None:
        if not events:
            return
        self.recorder.events(events)
        self._publish(events)
        self._wake.set()  # the events may have moved the next deadline

    def _publish(self, events: list[RoutingEvent]) -> None:
        updates = [e for e in events if isinstance(e, RoutingUpdate)]
        if not updates:
            return
        stamped = [(self.clock.instant(u.at), u) for u in updates]
        for watch in list(self._watchers):
            watch.offer(stamped)
