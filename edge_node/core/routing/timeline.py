"""The deadlines of the routing engine: when something happens without being asked."""

# Theory of operation
# -------------------
# Three things happen by themselves: a waiting contact reaches the next step of
# its queue's relaxation ladder, a waiting contact reaches the queue's maximum
# wait, and an agent's timed wrap-up runs out. Each is a `Deadline` in one binary
# heap ordered by (instant, kind, sequence): a total, deterministic order. The
# engine takes the deadlines of one instant together: it applies the relaxations
# and wrap-up ends, matches contacts and agents once, and only then fires the
# maximum waits, so a contact is matched at its loosest step, with every agent
# freed at that instant, before it is sent elsewhere.
#
# Deadlines are never removed when they stop mattering (the contact was served,
# the agent ended wrap-up by hand); the owner tells live from stale with a
# predicate when it looks at the head, as lazy deletion. Only the next step of a
# contact's ladder is scheduled at a time, so a contact has at most two
# deadlines in the heap however long its ladder.

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from edge_node.core.routing.agents import AgentRecord
from edge_node.core.routing.queues import Entry, QueueConfig


class DeadlineKind(IntEnum):
    """What a deadline does; the value is the order deadlines of one instant fire in."""

    RELAX = 0
    WRAP_UP = 1
    MAX_WAIT = 2


@dataclass(frozen=True, slots=True, order=True)
class Deadline:
    """`kind` is due `at`; `mark` is the step a RELAX starts, or the wrap-up generation it ends."""

    at: float
    kind: DeadlineKind
    seq: int
    entry: Entry | None = field(default=None, compare=False)
    agent: AgentRecord | None = field(default=None, compare=False)
    mark: int = field(default=0, compare=False)


class Timeline:
    """A heap of deadlines with lazy deletion."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = 0

    def add(
        self,
        at: float,
        kind: DeadlineKind,
        *,
        entry: Entry | None = None,
        agent: AgentRecord | None = None,
        mark: int = 0,
    ) -> None:
        self._seq += 1
        heapq.heappush(self._heap, Deadline(at, kind, self._seq, entry, agent, mark))

    def schedule(self, entry: Entry, config: QueueConfig, *, max_wait: bool) -> None:
        """Set the entry's next relaxation step and, if asked, its maximum wait."""
        ladder = config.ladder
        if entry.step + 1 < len(ladder):
            at = entry.enqueued_at + ladder[entry.step + 1].after_s
            self.add(at, DeadlineKind.RELAX, entry=entry, mark=entry.step + 1)
        if max_wait and config.max_wait_s is not None:
            self.add(entry.enqueued_at + config.max_wait_s, DeadlineKind.MAX_WAIT, entry=entry)

    def head(self, live: Callable[[Deadline], bool]) -> Deadline | None:
        """The earliest live deadline, dropping stale ones before it."""
        while self._heap and not live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def pop_instant(self, at: float, live: Callable[[Deadline], bool]) -> list[Deadline]:
        """Remove every deadline due exactly `at` and return the live ones, in firing order."""
        batch = []
        while self._heap and self._heap[0].at == at:
            deadline = heapq.heappop(self._heap)
            if live(deadline):
                batch.append(deadline)
        return batch
