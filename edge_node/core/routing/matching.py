"""Matching contacts with agents: the state the engine shares, and who gets whom."""

# Theory of operation
# -------------------
# The engine keeps one invariant after every call: no waiting contact has an
# eligible, routable agent at its current ladder step. So only what a call
# changes needs matching, and matching never scans:
#   - contact side: a contact that arrives, relaxes or is re-queued gets its
#     preferred agent if that agent is eligible and routable, else the agent its
#     queue's strategy picks from the index (`_best_agent_for`);
#   - agent side: an agent that becomes routable takes the first waiting contact
#     that prefers it and fits, else the first, by the ordering rule of
#     contacts.py, among the partition heads it qualifies for in the queues of
#     its skills and the heads of the cross-queue index of contacts on a step
#     that waives the skill (`_best_contact_for`; see queues.py).
# When several contacts and agents change at one instant, `_settle` serves the
# candidates in rank order (affinity matches first, then the ordering rule), and
# each contact gets the agent its strategy prefers among those free, so the
# strategy decides between agents freed together, as it does at any other time.
#
# Affinity beats the ordering rule: a contact is served by its preferred agent
# whenever that agent is eligible and free, even ahead of older contacts.
#
# This module also keeps the books every call shares: where each live contact
# is (an entry in a line, or an agent holding it), which waiting contacts prefer
# which agent, per-queue counters, and the outbox of events not yet returned.

from __future__ import annotations

import heapq
from collections.abc import Iterable

from edge_node.core.routing.agents import AgentRecord, AgentState, Holding
from edge_node.core.routing.contacts import Channel, OrderKey
from edge_node.core.routing.errors import ContactStateError, UnknownAgentError, UnknownQueueError
from edge_node.core.routing.events import AgentStateChanged, ContactAssigned, RoutingEvent
from edge_node.core.routing.index import AgentIndex
from edge_node.core.routing.queues import Entry, OpenIndex, WaitingLine
from edge_node.core.routing.stats import QueueCounters, expected_wait_s
from edge_node.core.routing.timeline import Deadline, DeadlineKind, Timeline

Mark = tuple[AgentState, str | None]  # an agent's state, and its break reason when on break
Rank = tuple[int, OrderKey]  # (0 for an affinity match else 1, order key): smaller is served first

_RESTING = frozenset({AgentState.OFFLINE, AgentState.BREAK, AgentState.WRAP_UP})


def mark(agent: AgentRecord) -> Mark:
    state = agent.state
    return state, agent.break_reason if state is AgentState.BREAK else None


class _Round:
    """One `_settle` round: candidates by rank, waiting contacts to try, and each free agent's pick."""

    __slots__ = ("heap", "pending", "picks")

    def __init__(self) -> None:
        self.heap: list[tuple[Rank, int, str]] = []  # (rank, 0 contact / 1 agent, id)
        self.pending: dict[str, Entry] = {}
        self.picks: dict[str, tuple[Rank, Entry]] = {}


class Matchmaker:
    """The engine's shared books and its matching; `RoutingEngine` adds the public calls."""

    def __init__(self) -> None:
        self._lines: dict[str, WaitingLine] = {}
        self._open = OpenIndex()  # who waits on a skill-waiving step, across queues
        self._by_skill: dict[str, list[WaitingLine]] = {}
        self._counters: dict[str, QueueCounters] = {}
        self._agents: dict[str, AgentRecord] = {}
        self._index = AgentIndex()
        self._where: dict[str, Entry | AgentRecord] = {}  # live contact -> its entry, or the agent holding it
        self._affinity: dict[str, dict[str, Entry]] = {}  # agent -> waiting entries preferring it
        self._timeline = Timeline()
        self._outbox: list[RoutingEvent] = []

    # --- lines --------------------------------------------------------------------------

    def _join(self, entry: Entry, line: WaitingLine) -> None:
        line.add(entry)
        self._where[entry.contact.contact_id] = entry
        if (preferred := entry.contact.preferred_agent_id) is not None:
            self._affinity.setdefault(preferred, {})[entry.contact.contact_id] = entry
        self._timeline.schedule(entry, line.config, max_wait=True)

    def _leave(self, entry: Entry) -> None:
        contact_id = entry.contact.contact_id
        self._lines[entry.queue_id].remove(entry)
        del self._where[contact_id]
        if (preferred := entry.contact.preferred_agent_id) is not None:
            waiting = self._affinity[preferred]
            del waiting[contact_id]
            if not waiting:
                del self._affinity[preferred]

    def _ewt(self, entry: Entry, line: WaitingLine, position: int) -> float | None:
        config, contact = line.config, entry.contact
        slots = self._index.staffed_slots(
            channel=contact.channel,
            skill=config.skill,
            min_level=line.level_of(entry.step),
            language=contact.language,
        )
        return expected_wait_s(position, self._counters[config.queue_id].handle_s, slots)

    def _live(self, deadline: Deadline) -> bool:
        """Whether a deadline still matters (see timeline.py)."""
        if deadline.kind is DeadlineKind.WRAP_UP:
            agent = deadline.agent
            return agent is not None and agent.in_wrap_up and agent.wrap_gen == deadline.mark
        entry = deadline.entry
        if entry is None or not self._is_waiting(entry):
            return False
        return deadline.kind is DeadlineKind.MAX_WAIT or entry.step < deadline.mark

    # --- matching -------------------------------------------------------------------------

    def _fits(self, agent: AgentRecord, entry: Entry) -> bool:
        """Whether `agent` is eligible for `entry` at its current step and routable on its channel."""
        line, contact = self._lines[entry.queue_id], entry.contact
        if not agent.routable(contact.channel):
            return False
        return agent.profile.eligible(
            contact.channel, contact.language, line.config.skill, line.level_of(entry.step)
        )

    def _best_agent_for(self, entry: Entry) -> tuple[AgentRecord, bool] | None:
        """Contact side: the preferred agent if it fits, else the strategy's pick; and whether by affinity."""
        line, contact = self._lines[entry.queue_id], entry.contact
        if contact.preferred_agent_id is not None:
            preferred = self._agents.get(contact.preferred_agent_id)
            if preferred is not None and self._fits(preferred, entry):
                return preferred, True
        agent = self._index.best(
            line.config.strategy,
            channel=contact.channel,
            skill=line.config.skill,
            min_level=line.level_of(entry.step),
            language=contact.language,
            rotation_after=line.rotation_after,
        )
        return None if agent is None else (agent, False)

    def _best_contact_for(self, agent: AgentRecord) -> tuple[Rank, Entry] | None:
        """Agent side: the first waiting contact that prefers `agent` and fits, else the first that fits."""
        preferring = [e for e in self._affinity.get(agent.agent_id, {}).values() if self._fits(agent, e)]
        if preferring:
            first = min(preferring, key=lambda e: e.key)
            return (0, first.key), first
        channels = [ch for ch in agent.profile.capacity if agent.routable(ch)]
        languages = (None, *agent.profile.languages)
        heads = [self._open.head(ch, lang) for ch in channels for lang in languages]
        open_best = min((e for e in heads if e is not None), key=lambda e: e.key, default=None)
        found = self._first_in_lines(agent, channels, languages, None if open_best is None else open_best.key)
        best = open_best if found is None else found
        return None if best is None else ((1, best.key), best)

    def _first_in_lines(
        self,
        agent: AgentRecord,
        channels: list[Channel],
        languages: tuple[str | None, ...],
        bound: OrderKey | None,
    ) -> Entry | None:
        """The first contact ahead of `bound` in its skills' queues, on a step the agent qualifies for."""
        best_key, best_line = bound, None
        for skill, level in agent.profile.skills.items():
            for line in self._by_skill.get(skill, ()):
                steps = line.steps_for(level)
                for part in ((ch, lang, step) for ch in channels for lang in languages for step in steps):
                    key = line.head_key(part)
                    if key is not None and (best_key is None or key < best_key):
                        best_key, best_line = key, line
        return None if best_line is None or best_key is None else best_line.entry(best_key)

    def _settle(
        self, at: float, *, entries: Iterable[Entry] = (), agents: Iterable[AgentRecord] = ()
    ) -> None:
        """Match contacts that may have gained agents, and agents that may have gained contacts.

        Candidates are served in rank order. An agent's pick is recomputed lazily when another
        match took it or filled the agent; that only ever makes its rank worse, so the heap stays valid.
        """
        round_ = _Round()
        for entry in entries:
            round_.pending[entry.contact.contact_id] = entry
            heapq.heappush(round_.heap, ((1, entry.key), 0, entry.contact.contact_id))
        for agent in agents:
            self._consider(round_, agent)
        while round_.heap:
            rank, tag, ident = heapq.heappop(round_.heap)
            by_agent = None
            if tag == 0:
                candidate = round_.pending.pop(ident, None)
                if candidate is None or not self._is_waiting(candidate):
                    continue
            else:
                pick = round_.picks.get(ident)
                if pick is None or pick[0] != rank:
                    continue  # superseded by a fresher pick
                candidate, by_agent = pick[1], self._agents[ident]
                if not (self._is_waiting(candidate) and self._fits(by_agent, candidate)):
                    self._consider(round_, by_agent)
                    continue
            found = self._best_agent_for(candidate)
            if found is None:
                if by_agent is not None:  # cannot happen, as by_agent fits; but never loop on it
                    round_.picks.pop(ident, None)
                continue
            self._offer(candidate, found[0], at, found[1], report=True)
            if by_agent is not None:
                self._consider(round_, by_agent)

    def _consider(self, round_: _Round, agent: AgentRecord) -> None:
        found = self._best_contact_for(agent)
        if found is None:
            round_.picks.pop(agent.agent_id, None)
        else:
            round_.picks[agent.agent_id] = found
            heapq.heappush(round_.heap, (found[0], 1, agent.agent_id))

    def _is_waiting(self, entry: Entry) -> bool:
        return self._where.get(entry.contact.contact_id) is entry

    # --- agents ---------------------------------------------------------------------------

    def _offer(self, entry: Entry, agent: AgentRecord, at: float, by_affinity: bool, *, report: bool) -> None:
        """Reserve `agent` for `entry`'s contact; `report` emits `ContactAssigned`."""
        contact, line = entry.contact, self._lines[entry.queue_id]
        if self._where.get(contact.contact_id) is entry:
            self._leave(entry)
        if report:
            level = line.level_of(entry.step)
            assigned = ContactAssigned(
                contact.contact_id,
                entry.queue_id,
                agent.agent_id,
                entry.step,
                level,
                by_affinity,
                entry.enqueued_at,
                at,
            )
            self._outbox.append(assigned)
        before = mark(agent)
        agent.holdings[contact.contact_id] = Holding(
            contact, entry.queue_id, entry.key, entry.enqueued_at, at
        )
        agent.load[contact.channel] = agent.load.get(contact.channel, 0) + 1
        line.rotation_after = agent.seq
        self._where[contact.contact_id] = agent
        self._commit(agent, before, at)

    def _drop_holding(
        self, agent: AgentRecord, contact_id: str, at: float, *, before: Mark | None = None
    ) -> Holding:
        before = mark(agent) if before is None else before
        holding = agent.holdings.pop(contact_id)
        agent.load[holding.contact.channel] -= 1
        del self._where[contact_id]
        self._commit(agent, before, at)
        return holding

    def _commit(self, agent: AgentRecord, before: Mark, at: float) -> None:
        """Re-index an agent after a change, and report its state change if any."""
        after = mark(agent)
        if after[0] is AgentState.AVAILABLE and before[0] in _RESTING:
            agent.idle_since = at
        self._index.refresh(agent)
        if after != before:
            self._outbox.append(AgentStateChanged(agent.agent_id, before[0], after[0], after[1], at))

    # --- lookups --------------------------------------------------------------------------

    def _line(self, queue_id: str) -> WaitingLine:
        try:
            return self._lines[queue_id]
        except KeyError:
            raise UnknownQueueError(queue_id) from None

    def _agent(self, agent_id: str) -> AgentRecord:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgentError(agent_id) from None

    def _waiting(self, contact_id: str) -> Entry:
        where = self._where.get(contact_id)
        if not isinstance(where, Entry):
            raise ContactStateError(contact_id, expected="waiting", actual=self._describe(contact_id))
        return where

    def _offered(self, agent: AgentRecord, contact_id: str, *, expected: str) -> Holding:
        holding = agent.holdings.get(contact_id)
        if holding is None or holding.connected_at is not None:
            raise ContactStateError(contact_id, expected=expected, actual=self._describe(contact_id))
        return holding

    def _describe(self, contact_id: str) -> str:
        where = self._where.get(contact_id)
        if where is None:
            return "not in the engine"
        if isinstance(where, Entry):
            return f"waiting in queue {where.queue_id!r}"
        phase = "offered to" if where.holdings[contact_id].connected_at is None else "connected to"
        return f"{phase} agent {where.agent_id!r}"
