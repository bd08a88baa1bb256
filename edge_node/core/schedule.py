"""Deadline schedule: which tickets need an SLA look, and when.

Theory of operation
-------------------
The node keeps one deadline per open ticket (its earliest pending SLA warning
or breach). ``set`` replaces a ticket's deadline; ``due`` pops every ticket
whose deadline has passed. A heap with lazy deletion keeps both cheap: stale
heap entries are skipped when they surface. The adapter sleeps until
``next_deadline()`` or until woken by a write, the aioquic timer pattern.
"""

from __future__ import annotations

import heapq
from datetime import datetime


class DeadlineSchedule:
    """Earliest-deadline-first set of ticket ids."""

    def __init__(self) -> None:
        self._deadline: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []

    def __len__(self) -> int:
        return len(self._deadline)

    def set(self, ticket_id: str, deadline: datetime | None) -> None:
        """Replace the ticket's deadline; None removes it."""
        if deadline is None:
            self._deadline.pop(ticket_id, None)
            return
        if self._deadline.get(ticket_id) == deadline:
            return
        self._deadline[ticket_id] = deadline
        heapq.heappush(self._heap, (deadline, ticket_id))

    def next_deadline(self) -> datetime | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: datetime) -> list[str]:
        """Remove and return the tickets whose deadline is at or before ``now``."""
        out: list[str] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            _, ticket_id = heapq.heappop(self._heap)
            del self._deadline[ticket_id]
            out.append(ticket_id)

    def _drop_stale(self) -> None:
        while self._heap:
            deadline, ticket_id = self._heap[0]
            if self._deadline.get(ticket_id) == deadline:
                return
            heapq.heappop(self._heap)
