"""The ACD routing engine: one object owning agents, queues and their deadlines."""

# Theory of operation
# -------------------
# The engine is a synchronous state machine (STYLE.md section 4). Every call
# takes `now`, seconds on any clock the caller likes (monotonic or virtual) that
# never runs backwards, and returns what happened; the engine reads no clock and
# keeps no timers. `next_deadline()` is the next instant at which something
# happens by itself (a relaxation step, a maximum wait, the end of a timed
# wrap-up); the adapter sleeps until then and calls `tick(now)`.
#
# Every call first fires the deadlines due by `now`, each at its own instant and
# in time order (timeline.py), so a late tick changes when events are reported,
# never what is decided, and a call never acts on a stale view. The events of
# those deadlines lead the call's result. `enqueue` answers with a `Decision`
# about its contact; other events it causes wait in the outbox for the next call
# that returns events.
#
# Life of a contact: `enqueue` offers it at once to an agent no one waiting
# could take (matching.py), or refuses it (full queue), diverts it (expected wait
# beyond the maximum, if the queue says so), or queues it. Waiting, it relaxes
# step by step and, at the maximum wait, overflows to another queue or leaves
# with a callback offer. An offer reserves the agent (RESERVED); `accept`
# connects it (ON_CONTACT) and counts the contact answered; `decline` (or an
# unanswered ring) puts the contact back in its old place, timers still
# running, and puts the agent on break, as Asterisk's autopause does, so the
# contact is not offered straight back; `abandon` ends a waiting or ringing
# contact; `release` ends a connected one, and the agent wraps up once it holds
# nothing else.
#
# Calls validate everything before changing anything, so a call that raises
# leaves the engine as it was (apart from deadlines that had come due, whose
# events stay in the outbox).

from __future__ import annotations

import math
from collections.abc import Iterable

from edge_node.core.routing.admission import Admission
from edge_node.core.routing.agents import REQUESTABLE, AgentProfile, AgentRecord, AgentState, AgentStatus
from edge_node.core.routing.config import RoutingConfig
from edge_node.core.routing.contacts import Contact
from edge_node.core.routing.errors import (
    BreakReasonError,
    ClockWentBackwardsError,
    ContactStateError,
    DuplicateIdError,
    IllegalTransitionError,
    RoutingConfigError,
)
from edge_node.core.routing.events import (
    ContactAbandoned,
    ContactDeclined,
    ContactReleased,
    Decision,
    RoutingEvent,
)
from edge_node.core.routing.matching import mark
from edge_node.core.routing.queues import Entry, QueueConfig, WaitingContact, WaitingLine
from edge_node.core.routing.stats import QueueCounters, QueueStatistics, RoutingStatistics
from edge_node.core.routing.timeline import DeadlineKind

__all__ = ["RoutingConfig", "RoutingEngine"]


class RoutingEngine(Admission):
    """Agents, queues and waiting contacts of one node, and every routing decision about them.

    Args:
        queues: Queues to register, in order (an overflow target before the queues overflowing into it).
        config: Engine-wide settings.
    """

    def __init__(self, queues: Iterable[QueueConfig] = (), *, config: RoutingConfig | None = None) -> None:
        super().__init__(config or RoutingConfig())
        self._now = -math.inf
        self._seq = 0  # admission and registration counter
        for queue in queues:
            self.add_queue(queue)

    # --- configuration --------------------------------------------------------------------

    def add_queue(self, config: QueueConfig) -> None:
        """Register a queue; its overflow target must be registered already, so chains cannot loop."""
        if config.queue_id in self._lines:
            raise DuplicateIdError("queue", config.queue_id)
        if config.overflow_to is not None and config.overflow_to not in self._lines:
            raise RoutingConfigError("overflow_to", config.overflow_to, "register the target queue first")
        line = WaitingLine(config, self._open)
        self._lines[config.queue_id] = line
        self._by_skill.setdefault(config.skill, []).append(line)
        self._counters[config.queue_id] = QueueCounters(config.service_level_s, self._config.default_handle_s)

    def add_agent(self, profile: AgentProfile, now: float) -> None:
        """Register an agent, OFFLINE and idle since `now`."""
        self._begin(now)
        if profile.agent_id in self._agents:
            raise DuplicateIdError("agent", profile.agent_id)
        self._seq += 1
        agent = AgentRecord(profile, seq=self._seq, idle_since=now)
        self._agents[profile.agent_id] = agent
        self._index.add(agent)

    # --- contacts -------------------------------------------------------------------------

    def enqueue(self, contact: Contact, queue_id: str, now: float) -> Decision:
        """Admit a contact to a queue: offer it to an agent now, or queue, divert or refuse it.

        The contact is offered at once only to an agent no one waiting could take, so it never
        jumps the line; it is refused only if it would have to wait in a full queue.

        Raises:
            UnknownQueueError: No such queue.
            DuplicateIdError: The engine already holds a contact with this id.
        """
        self._begin(now)
        line = self._line(queue_id)
        if contact.contact_id in self._where:
            raise DuplicateIdError("contact", contact.contact_id)
        self._seq += 1
        return self._admit(contact, line, now, seq=self._seq, report=False)

    def abandon(self, contact_id: str, now: float) -> list[RoutingEvent]:
        """The customer hung up (or left) while waiting, or while an agent was being offered the contact."""
        self._begin(now)
        where = self._where.get(contact_id)
        if isinstance(where, AgentRecord):
            holding = self._offered(where, contact_id, expected="waiting or offered")
            queue_id, waited_s = holding.queue_id, now - holding.enqueued_at
        elif isinstance(where, Entry):
            queue_id, waited_s = where.queue_id, now - where.enqueued_at
        else:
            raise ContactStateError(
                contact_id, expected="waiting or offered", actual=self._describe(contact_id)
            )
        self._counters[queue_id].abandon(waited_s)
        self._outbox.append(ContactAbandoned(contact_id, queue_id, waited_s, now))
        if isinstance(where, AgentRecord):
            self._drop_holding(where, contact_id, now)
            self._settle(now, agents=[where])
        else:
            self._leave(where)
        return self._finish(now)

    def accept(self, agent_id: str, contact_id: str, now: float) -> list[RoutingEvent]:
        """The agent answered an offer: the contact is connected and counts as answered."""
        self._begin(now)
        agent = self._agent(agent_id)
        holding = self._offered(agent, contact_id, expected=f"offered to agent {agent_id!r}")
        before = mark(agent)
        holding.connected_at = now
        self._counters[holding.queue_id].answer(now - holding.enqueued_at)
        self._commit(agent, before, now)
        return self._finish(now)

    def decline(
        self, agent_id: str, contact_id: str, now: float, *, reason: str = "declined"
    ) -> list[RoutingEvent]:
        """The agent refused or did not answer an offer.

        The agent goes on break with `reason` (a pending break if it holds other contacts), and
        the contact goes back to its queue in its old place, with its timers still running.
        """
        self._begin(now)
        agent = self._agent(agent_id)
        self._offered(agent, contact_id, expected=f"offered to agent {agent_id!r}")
        if not reason.strip():
            raise BreakReasonError(agent_id, AgentState.BREAK, reason)
        before = mark(agent)
        agent.presence, agent.break_reason = AgentState.BREAK, reason
        holding = self._drop_holding(agent, contact_id, now, before=before)
        self._outbox.append(ContactDeclined(contact_id, agent_id, now))
        line = self._lines[holding.queue_id]
        entry = Entry(holding.contact, holding.queue_id, holding.key, holding.enqueued_at)
        entry.step = line.config.step_at(now - holding.enqueued_at)
        self._place(entry, line, now)
        return self._finish(now)

    def release(self, agent_id: str, contact_id: str, now: float) -> list[RoutingEvent]:
        """A connected contact ended; the agent starts wrap-up if it holds nothing else."""
        self._begin(now)
        agent = self._agent(agent_id)
        holding = agent.holdings.get(contact_id)
        if holding is None or holding.connected_at is None:
            expected = f"connected to agent {agent_id!r}"
            raise ContactStateError(contact_id, expected=expected, actual=self._describe(contact_id))
        handled_s = now - holding.connected_at
        self._counters[holding.queue_id].release(handled_s, self._config.handle_smoothing)
        self._outbox.append(ContactReleased(contact_id, holding.queue_id, agent_id, handled_s, now))
        before = mark(agent)
        agent.handled += 1
        if len(agent.holdings) == 1:
            agent.in_wrap_up = True
            agent.wrap_gen += 1
            if agent.profile.wrap_up_s is not None:
                at = now + agent.profile.wrap_up_s
                self._timeline.add(at, DeadlineKind.WRAP_UP, agent=agent, mark=agent.wrap_gen)
        self._drop_holding(agent, contact_id, now, before=before)
        self._settle(now, agents=[agent])
        return self._finish(now)

    # --- agents ---------------------------------------------------------------------------

    def set_agent_state(
        self, agent_id: str, state: AgentState, now: float, reason: str | None = None
    ) -> list[RoutingEvent]:
        """Request a presence for an agent (see `REQUESTABLE`); BREAK needs a reason, others take none.

        While the agent holds contacts the request sets what it returns to when they end, and BREAK
        stops new offers at once. Any request ends wrap-up.

        Raises:
            UnknownAgentError: No such agent.
            IllegalTransitionError: The state machine does not allow the move from the current state.
            BreakReasonError: A break without a reason, or a reason for another state.
        """
        self._begin(now)
        agent = self._agent(agent_id)
        current = agent.state
        if state not in REQUESTABLE[current]:
            raise IllegalTransitionError(agent_id, current, str(state), REQUESTABLE[current])
        state = AgentState(state)
        if (state is AgentState.BREAK) != bool(reason and reason.strip()) or (
            state is not AgentState.BREAK and reason is not None
        ):
            raise BreakReasonError(agent_id, state, reason)
        before = mark(agent)
        agent.presence, agent.break_reason, agent.in_wrap_up = state, reason, False
        self._commit(agent, before, now)
        self._settle(now, agents=[agent])
        return self._finish(now)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[RoutingEvent]:
        """Fire every deadline due by `now`; return their events and any left by `enqueue`."""
        self._begin(now)
        return self._finish(now)

    def next_deadline(self) -> float | None:
        """The next instant at which something happens by itself; None if nothing is pending."""
        head = self._timeline.head(self._live)
        return None if head is None else head.at

    # --- queries --------------------------------------------------------------------------

    def position(self, contact_id: str) -> int:
        """1-based place of a waiting contact in its queue, by the ordering rule."""
        entry = self._waiting(contact_id)
        return self._lines[entry.queue_id].position(entry.key)

    def expected_wait_s(self, contact_id: str) -> float | None:
        """Expected remaining wait of a waiting contact (see stats.py); None if no staffed agent qualifies."""
        entry = self._waiting(contact_id)
        line = self._lines[entry.queue_id]
        return self._ewt(entry, line, line.position(entry.key))

    def waiting(self, queue_id: str) -> tuple[WaitingContact, ...]:
        """Everyone waiting in a queue, first in line first."""
        line = self._line(queue_id)
        return tuple(
            WaitingContact(e.contact, e.queue_id, i, e.enqueued_at, e.step, line.level_of(e.step))
            for i, e in enumerate(line.in_order(), start=1)
        )

    def agent(self, agent_id: str) -> AgentStatus:
        """A snapshot of one agent."""
        return self._agent(agent_id).status()

    def agents(self) -> tuple[AgentStatus, ...]:
        """Snapshots of every agent, in registration order."""
        return tuple(agent.status() for agent in self._agents.values())

    def queue(self, queue_id: str) -> QueueConfig:
        """A registered queue's configuration."""
        return self._line(queue_id).config

    def statistics(self, now: float | None = None) -> RoutingStatistics:
        """Per-queue figures and agent counts as of `now` (default: the latest `now` the engine saw).

        A query: it fires no deadlines, so call `tick` first for figures as of a later instant.
        """
        if now is None:
            now = self._now if math.isfinite(self._now) else 0.0
        queues = {}
        for queue_id, line in self._lines.items():
            longest = max((now - e.enqueued_at for e in line.entries.values()), default=0.0)
            counters = self._counters[queue_id]
            queues[queue_id] = QueueStatistics.of(
                queue_id, counters, waiting=len(line), longest_wait_s=longest
            )
        by_state = dict.fromkeys(AgentState, 0)
        for agent in self._agents.values():
            by_state[agent.state] += 1
        waiting = sum(len(line) for line in self._lines.values())
        return RoutingStatistics(now, queues, by_state, waiting, self.next_deadline())

    # --- internals: time ------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise RoutingConfigError("now", now, "must be a finite number of seconds")
        if now < self._now:
            raise ClockWentBackwardsError(now, self._now)
        self._fire_due(now)
        self._now = now

    def _finish(self, now: float) -> list[RoutingEvent]:
        self._fire_due(now)  # deadlines the call itself made due, such as a zero wrap-up
        events, self._outbox = self._outbox, []
        return events

    def _fire_due(self, now: float) -> None:
        """Fire due deadlines instant by instant: relaxations and wrap-up ends, matching, maximum waits."""
        while (at := self.next_deadline()) is not None and at <= now:
            batch = self._timeline.pop_instant(at, self._live)
            entries, agents = [], []
            for deadline in batch:
                if deadline.kind is DeadlineKind.RELAX and deadline.entry is not None:
                    entries.append(self._relax(deadline.entry, deadline.mark, at))
                elif deadline.kind is DeadlineKind.WRAP_UP and deadline.agent is not None:
                    before = mark(deadline.agent)
                    deadline.agent.in_wrap_up = False
                    self._commit(deadline.agent, before, at)
                    agents.append(deadline.agent)
            self._settle(at, entries=entries, agents=agents)
            for deadline in batch:
                if (
                    deadline.kind is DeadlineKind.MAX_WAIT
                    and deadline.entry is not None
                    and self._live(deadline)
                ):
                    self._expire(deadline.entry, at)
