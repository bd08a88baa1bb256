"""Replay a contact trace through the routing engine in virtual time, beside Erlang C.

``edgecare routing replay TRACE.csv --roster ROSTER.toml`` is the command line
on top; this module parses the trace, runs it and computes the figures, with no
clock, no randomness and no output of its own.
"""

# Theory of operation
# -------------------
# Trace. A CSV file with a header naming the columns `arrival_s, handle_s,
# channel, language, tier, inquiry_type, patience_s` (any order) and optionally
# `queue`; blank lines and lines starting with `#` are skipped. Empty language or
# inquiry type means none, an empty tier is standard, an empty (or `inf`)
# patience never abandons, and an empty queue means the default queue (the
# `--queue` option, or the roster's only queue). Every problem is a `TraceError`
# naming the line and the column.
#
# Simulation. Every roster agent is registered and logged in (available) at
# t = 0. Then one loop pops the earliest of three sources, at equal instants in
# this order: the engine's own deadlines (`next_deadline()` -> `tick`), our event
# heap (a release at accept + handle_s before an abandon at arrival +
# patience_s), and the next arrival (`enqueue`). Every offer is accepted at
# once, so a contact is either waiting or connected; a contact abandons only if
# it is still waiting when its patience runs out. Wrap-up follows the roster:
# `wrap_up_s` ends by the engine's timer, and an agent without one asks to be
# available again at once. Ties are broken by fixed sequence numbers, so a
# replay is deterministic: the same trace and roster give the same figures.
#
# Figures. Per queue, the engine's own counters (stats.py): service level =
# answered within the queue's `service_level_s` / (answered + abandoned after
# it), ASA over answered contacts, abandon rate = abandoned / (answered +
# abandoned); waits run from entering that queue. Overall, the same formulas
# per contact, with waits from arrival at the node. Occupancy counts inside the
# window [first arrival, last arrival], over agents * window: overall, the
# agent-seconds agents were reserved, on a contact or wrapping up (an agent on a
# call and two chats counts once); per queue, the contact-seconds of its
# contacts (talk, and the wrap-up after the agent's last release), so chats
# handled side by side each count. The Erlang C prediction uses the same traffic:
# calls = contacts arriving at the queue, period = the window, AHT = their mean
# handle_s plus the mean wrap_up_s of the agents, agents = those holding the
# queue's skill at its entry level (overall: every agent), target = the queue's
# service_level_s. Erlang C assumes one pool of interchangeable agents, Poisson
# arrivals, exponential handle times and infinite patience; with shared agents,
# relaxation steps or abandons the two columns measure how far the trace is
# from those assumptions, not an error in either.

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_node.core.erlang import ErlangError, StaffingResult, UnstableQueueError, staffing
from edge_node.core.routing import (
    AgentState,
    AgentStateChanged,
    Assigned,
    CallbackOffered,
    Channel,
    Contact,
    ContactAbandoned,
    ContactAssigned,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactRefused,
    ContactReleased,
    Decision,
    Overflowed,
    Queued,
    Refused,
    RoutingEngine,
    RoutingEvent,
    VipTier,
)
from edge_node.core.routing.stats import abandon_rate, service_level
from edge_node.errors import EdgeNodeError
from edge_node.roster import Roster

__all__ = [
    "QueueFigures",
    "ReplayReport",
    "TraceContact",
    "TraceError",
    "load_trace",
    "parse_trace",
    "replay",
]

REQUIRED_COLUMNS = ("arrival_s", "handle_s", "channel", "language", "tier", "inquiry_type", "patience_s")
OPTIONAL_COLUMNS = ("queue",)
_BUSY = frozenset({AgentState.RESERVED, AgentState.ON_CONTACT, AgentState.WRAP_UP})
_RELEASE, _ABANDON = 0, 1  # heap kinds, in their order at one instant


class TraceError(EdgeNodeError):
    """A trace cannot be replayed; the message names the line and column."""

    def __init__(self, source: str, line: int, column: str | None, problem: str) -> None:
        self.source, self.line, self.column, self.problem = source, line, column, problem
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{source} {where}: {problem}")


@dataclass(frozen=True, slots=True)
class TraceContact:
    """One row of a trace; `line` is its line in the file (1 = the header)."""

    line: int
    arrival_s: float
    handle_s: float
    channel: Channel
    language: str | None = None
    tier: VipTier = VipTier.STANDARD
    inquiry_type: str | None = None
    patience_s: float = math.inf
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """What the replay measured for one queue (or overall), and what Erlang C predicts for its traffic.

    Attributes:
        contacts: Contacts that arrived here (from the trace or by overflow; overall: the trace).
        unserved: Contacts still waiting when nothing was left to happen (nobody could ever take them).
        occupancy: Busy time in the window [first arrival, last arrival] over agents * window
            (see the module comment for what counts as busy).
        aht_s: Mean handle_s of these contacts plus the agents' mean wrap-up: the Erlang C input.
        erlang: The prediction, or None with the reason in `erlang_note`.
    """

    queue_id: str
    service_level_s: float
    agents: int
    contacts: int
    answered: int
    abandoned: int
    overflowed: int
    callbacks_offered: int
    refused: int
    unserved: int
    service_level: float | None
    asa_s: float | None
    abandon_rate: float | None
    occupancy: float | None
    aht_s: float | None
    erlang: StaffingResult | None
    erlang_note: str | None


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of a replay: figures per queue (roster order) and overall."""

    contacts: int
    agents: int
    window_s: float
    ended_at: float
    queues: tuple[QueueFigures, ...]
    overall: QueueFigures


def load_trace(path: Path) -> tuple[TraceContact, ...]:
    """Read and check a trace file (see the module comment for the format)."""
    source = f"trace {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(source, 0, None, f"cannot read the file: {exc}") from exc
    return parse_trace(text, source=source)


def parse_trace(text: str, *, source: str = "trace") -> tuple[TraceContact, ...]:
    """Parse a trace: a header line, then one contact per line."""
    header: dict[str, int] | None = None
    rows: list[TraceContact] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([raw]))]
        if header is None:
            header = _header(source, lineno, fields)
            continue
        if len(fields) != len(header):
            raise TraceError(source, lineno, None, f"expected {len(header)} fields, got {len(fields)}")
        rows.append(_row(source, lineno, {name: fields[i] for name, i in header.items()}))
    if header is None:
        raise TraceError(
            source, 1, None, f"no header; the first line must name {', '.join(REQUIRED_COLUMNS)}"
        )
    return tuple(rows)


def _header(source: str, lineno: int, fields: list[str]) -> dict[str, int]:
    for name in fields:
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            expected = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
            raise TraceError(source, lineno, name or "(empty)", f"unknown column; expected {expected}")
        if fields.count(name) > 1:
            raise TraceError(source, lineno, name, "column named twice")
    for name in REQUIRED_COLUMNS:
        if name not in fields:
            raise TraceError(source, lineno, name, "required column is missing from the header")
    return {name: i for i, name in enumerate(fields)}


def _row(source: str, lineno: int, cells: dict[str, str]) -> TraceContact:
    def number(column: str, *, positive: bool = False, empty: float | None = None) -> float:
        cell = cells[column]
        if not cell and empty is not None:
            return empty
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if (
            math.isnan(value)
            or (value == math.inf and empty is None)
            or value < 0
            or (positive and value == 0)
        ):
            rule = "a number of seconds above 0" if positive else "a number of seconds >= 0"
            raise TraceError(source, lineno, column, f"must be {rule}, got {cell!r}")
        return value

    def choice(column: str, allowed: type[Channel] | type[VipTier], default: str | None) -> str:
        cell = cells[column].lower() or default
        if cell not in {str(member) for member in allowed}:
            raise TraceError(
                source, lineno, column, f"must be one of {', '.join(allowed)}, got {cells[column]!r}"
            )
        return cell

    return TraceContact(
        line=lineno,
        arrival_s=number("arrival_s"),
        handle_s=number("handle_s", positive=True),
        channel=Channel(choice("channel", Channel, None)),
        language=cells["language"] or None,
        tier=VipTier(choice("tier", VipTier, VipTier.STANDARD.value)),
        inquiry_type=cells["inquiry_type"] or None,
        patience_s=number("patience_s", empty=math.inf),
        queue=cells.get("queue") or None,
    )


def replay(
    trace: Sequence[TraceContact],
    roster: Roster,
    *,
    default_queue: str | None = None,
    source: str = "trace",
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Run `trace` through a `RoutingEngine` built from `roster`, in virtual time.

    Args:
        trace: The contacts; replayed in arrival order (ties in trace order).
        roster: Agents (all logged in at t = 0) and queues.
        default_queue: Queue for contacts whose row names none.
        source: Names the trace in error messages.
        on_progress: Called with (contacts arrived, total) now and then, and once at the end.

    Raises:
        TraceError: A row names an unknown queue, or names none and there is no default.
    """
    queue_ids = [q.queue_id for q in roster.queues]
    if default_queue is None and len(queue_ids) == 1:
        default_queue = queue_ids[0]
    targets = []
    for row in trace:
        target = row.queue or default_queue
        if target is None:
            problem = "no queue: fill in the queue column, or give a default queue (--queue)"
            raise TraceError(source, row.line, "queue", problem)
        if target not in queue_ids:
            column = "queue" if row.queue else None
            raise TraceError(
                source, row.line, column, f"unknown queue {target!r}; the roster has {', '.join(queue_ids)}"
            )
        targets.append(target)
    order = sorted(range(len(trace)), key=lambda i: trace[i].arrival_s)
    sim = _Simulation(roster, [trace[i] for i in order], [targets[i] for i in order], on_progress)
    sim.run()
    return sim.report()


class _Simulation:
    """One replay: the engine, the event heap, and the books the figures come from."""

    def __init__(
        self,
        roster: Roster,
        rows: list[TraceContact],
        targets: list[str],
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.roster, self.rows, self.targets, self.on_progress = roster, rows, targets, on_progress
        self.engine = RoutingEngine(roster.queues)
        for profile in roster.agents:
            self.engine.add_agent(profile, 0.0)
            self.engine.set_agent_state(profile.agent_id, AgentState.AVAILABLE, 0.0)
        self.window = (rows[0].arrival_s, rows[-1].arrival_s) if rows else (0.0, 0.0)
        self.heap: list[tuple[float, int, int, str]] = []  # (at, kind, contact index, agent or "")
        self.now = 0.0
        self.waiting: set[int] = set()  # indexes of contacts waiting for an agent
        self.answered_at: dict[int, float] = {}
        self.outcome: dict[int, str] = {}  # abandoned, callback, refused
        self.overflowed: set[int] = set()
        self.handles: dict[str, list[float]] = {q.queue_id: [] for q in roster.queues}  # handle_s of arrivals
        self.queue_of: dict[int, str] = {}  # where each live contact is now
        self.left_at: dict[int, float] = {}
        self.profiles = {p.agent_id: p for p in roster.agents}
        self.busy_since: dict[
            str, float
        ] = {}  # agent -> since when it is reserved, on a contact or wrapping up
        self.busy_s = 0.0  # agent-seconds busy inside the window
        self.queue_busy_s = dict.fromkeys(self.handles, 0.0)  # contact-seconds (talk, wrap-up) inside it
        self.wrap_since: dict[str, float] = {}
        self.last_queue: dict[str, str] = {}  # agent -> queue of the contact it last released

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        n, i = len(self.rows), 0
        step = max(1, n // 200)
        while True:
            at_arrival = self.rows[i].arrival_s if i < n else math.inf
            at_heap = self.heap[0][0] if self.heap else math.inf
            deadline = self.engine.next_deadline()
            at_deadline = math.inf if deadline is None else deadline
            now = min(at_arrival, at_heap, at_deadline)
            if now == math.inf:
                break
            self.now = now
            if at_deadline <= now:
                self._handle(self.engine.tick(now))
            elif at_heap <= now:
                _, kind, index, agent_id = heapq.heappop(self.heap)
                if kind == _RELEASE:
                    self._handle(self.engine.release(agent_id, _cid(index), now))
                elif index in self.waiting:
                    self._handle(self.engine.abandon(_cid(index), now))
            else:
                self._arrive(i)
                i += 1
                if self.on_progress is not None and (i % step == 0 or i == n):
                    self.on_progress(i, n)
        if self.on_progress is not None and n == 0:
            self.on_progress(0, 0)
        for since in self.busy_since.values():  # agents in a manual wrap-up that never ended, if any
            self.busy_s += _clip(since, self.now, self.window)

    def _arrive(self, index: int) -> None:
        row, queue_id = self.rows[index], self.targets[index]
        contact = Contact(
            _cid(index), row.channel, row.arrival_s, row.language, row.tier, inquiry_type=row.inquiry_type
        )
        self._arrived(index, queue_id)
        self._decided(index, self.engine.enqueue(contact, queue_id, self.now))
        if index in self.waiting and row.patience_s != math.inf:
            heapq.heappush(self.heap, (row.arrival_s + row.patience_s, _ABANDON, index, ""))
        self._handle(self.engine.tick(self.now))  # events the enqueue left in the outbox

    def _arrived(self, index: int, queue_id: str) -> None:
        self.queue_of[index] = queue_id
        self.handles[queue_id].append(self.rows[index].handle_s)

    def _decided(self, index: int, decision: Decision) -> None:
        match decision:
            case Assigned(agent_id=agent_id):
                self._accept(index, agent_id)
            case Queued():
                self.waiting.add(index)
            case Overflowed(to_queue_id=to_queue, outcome=outcome):
                self.overflowed.add(index)
                self._arrived(index, to_queue)
                self._decided(index, outcome)
            case CallbackOffered():
                self._left(index, "callback")
            case Refused():
                self._left(index, "refused")

    def _accept(self, index: int, agent_id: str) -> None:
        self.waiting.discard(index)
        self.answered_at[index] = self.now
        self._handle(self.engine.accept(agent_id, _cid(index), self.now))
        heapq.heappush(self.heap, (self.now + self.rows[index].handle_s, _RELEASE, index, agent_id))
        self._add_queue_busy(self.queue_of[index], self.now, self.now + self.rows[index].handle_s)

    def _handle(self, events: list[RoutingEvent]) -> None:
        for event in events:
            match event:
                case ContactAssigned(contact_id=cid, agent_id=agent_id):
                    self._accept(_index(cid), agent_id)
                case ContactOverflowed(contact_id=cid, to_queue_id=to_queue):
                    self.overflowed.add(_index(cid))
                    self._arrived(_index(cid), to_queue)
                case ContactCallbackOffered(contact_id=cid):
                    self._left(_index(cid), "callback")
                case ContactRefused(contact_id=cid):
                    self._left(_index(cid), "refused")
                case ContactAbandoned(contact_id=cid):
                    self._left(_index(cid), "abandoned")
                case ContactReleased(agent_id=agent_id, queue_id=queue_id):
                    self.last_queue[agent_id] = queue_id
                case AgentStateChanged():
                    self._agent_changed(event)

    def _left(self, index: int, outcome: str) -> None:
        self.waiting.discard(index)
        self.outcome[index] = outcome
        self.left_at[index] = self.now

    def _agent_changed(self, event: AgentStateChanged) -> None:
        agent_id, at = event.agent_id, event.at
        if event.after in _BUSY and agent_id not in self.busy_since:
            self.busy_since[agent_id] = at
        elif event.after not in _BUSY and agent_id in self.busy_since:
            self.busy_s += _clip(self.busy_since.pop(agent_id), at, self.window)
        if event.before is AgentState.WRAP_UP and agent_id in self.wrap_since:
            self._add_queue_busy(self.last_queue[agent_id], self.wrap_since.pop(agent_id), at)
        if event.after is AgentState.WRAP_UP:
            self.wrap_since[agent_id] = at
            manual = self.profiles[agent_id].wrap_up_s is None  # the simulated agent is ready at once
            if manual and self.engine.agent(agent_id).state is AgentState.WRAP_UP:
                self._handle(self.engine.set_agent_state(agent_id, AgentState.AVAILABLE, self.now))

    def _add_queue_busy(self, queue_id: str, start: float, end: float) -> None:
        self.queue_busy_s[queue_id] += _clip(start, end, self.window)

    # --- figures --------------------------------------------------------------------------

    def report(self) -> ReplayReport:
        window_s = self.window[1] - self.window[0]
        stats = self.engine.statistics(self.now).queues
        queues = []
        for queue in self.roster.queues:
            s = stats[queue.queue_id]
            agents = [p for p in self.roster.agents if p.skills.get(queue.skill, 0) >= queue.min_level]
            handles = self.handles[queue.queue_id]
            aht_s = _mean(handles) + _mean([p.wrap_up_s or 0.0 for p in agents]) if handles else None
            erlang, note = _predict(len(agents), len(handles), window_s, aht_s, queue.service_level_s)
            queues.append(
                QueueFigures(
                    queue_id=queue.queue_id,
                    service_level_s=queue.service_level_s,
                    agents=len(agents),
                    contacts=s.arrived,
                    answered=s.answered,
                    abandoned=s.abandoned,
                    overflowed=s.overflowed,
                    callbacks_offered=s.callbacks_offered,
                    refused=s.refused,
                    unserved=s.waiting,
                    service_level=s.service_level,
                    asa_s=s.average_speed_of_answer_s,
                    abandon_rate=s.abandon_rate,
                    occupancy=_share(self.queue_busy_s[queue.queue_id], len(agents) * window_s),
                    aht_s=aht_s,
                    erlang=erlang,
                    erlang_note=note,
                )
            )
        return ReplayReport(
            contacts=len(self.rows),
            agents=len(self.roster.agents),
            window_s=window_s,
            ended_at=self.now,
            queues=tuple(queues),
            overall=self._overall(window_s),
        )

    def _overall(self, window_s: float) -> QueueFigures:
        """Figures per contact from arrival at the node, whatever queues it passed through."""
        by_queue = {q.queue_id: q for q in self.roster.queues}
        busiest = max(by_queue, key=self.targets.count) if self.targets else None
        target_s = by_queue[busiest].service_level_s if busiest is not None else 20.0
        waits = [at - self.rows[i].arrival_s for i, at in self.answered_at.items()]
        abandoned = [i for i, outcome in self.outcome.items() if outcome == "abandoned"]
        late = sum(1 for i in abandoned if self.left_at[i] - self.rows[i].arrival_s > target_s)
        agents = self.roster.agents
        aht_s = None
        if self.rows:
            aht_s = _mean([r.handle_s for r in self.rows]) + _mean([p.wrap_up_s or 0.0 for p in agents])
        erlang, note = _predict(len(agents), len(self.rows), window_s, aht_s, target_s)
        return QueueFigures(
            queue_id="overall",
            service_level_s=target_s,
            agents=len(agents),
            contacts=len(self.rows),
            answered=len(waits),
            abandoned=len(abandoned),
            overflowed=len(self.overflowed),
            callbacks_offered=sum(1 for o in self.outcome.values() if o == "callback"),
            refused=sum(1 for o in self.outcome.values() if o == "refused"),
            unserved=len(self.waiting),
            service_level=service_level(sum(1 for w in waits if w <= target_s), len(waits), late),
            asa_s=_mean(waits) if waits else None,
            abandon_rate=abandon_rate(len(abandoned), len(waits)),
            occupancy=_share(self.busy_s, len(agents) * window_s),
            aht_s=aht_s,
            erlang=erlang,
            erlang_note=note,
        )


def _predict(
    agents: int, calls: int, period_s: float, aht_s: float | None, target_s: float
) -> tuple[StaffingResult | None, str | None]:
    """Erlang C for the traffic, or None and why not."""
    if calls == 0 or aht_s is None:
        return None, "no contacts"
    if period_s <= 0:
        return None, "all arrivals at one instant: no arrival rate"
    if agents == 0:
        return None, "no agent holds the skill at the entry level"
    try:
        return staffing(agents, calls, period_s, aht_s, target_s), None
    except UnstableQueueError as exc:
        return None, f"unstable: {agents} agents for {exc.load_erlangs:.2f} erlangs"
    except ErlangError as exc:
        return None, str(exc)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _cid(index: int) -> str:
    return f"c{index + 1}"


def _index(contact_id: str) -> int:
    return int(contact_id[1:]) - 1


def _clip(start: float, end: float, window: tuple[float, float]) -> float:
    return max(0.0, min(end, window[1]) - max(start, window[0]))
