"""What the routing engine decides and reports: decisions for `enqueue`, events for the rest.

`enqueue` answers with a `Decision` about the contact it was given. Every other
call that changes state returns the events it caused, in the order they
happened, including events for deadlines that had come due before the call;
events an `enqueue` causes besides its decision (an agent going from available
to reserved) are returned by the next call that returns events. All instants
are the engine's `now` (or the deadline that fired), in the caller's seconds.
"""

# Theory of operation
# -------------------
# Decisions and events are frozen, past-tense facts carrying plain values, so
# adapters can log them, publish them (a queue_log-like journal) or replay them
# in tests without touching the engine. `Decision` and `RoutingEvent` are
# tagged unions for `match`.

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge_node.core.routing.agents import AgentState


class RefusalReason(StrEnum):
    QUEUE_FULL = "queue_full"


# --- decisions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assigned:
    """The contact was offered to `agent_id` at once; the agent is now reserved for it."""

    contact_id: str
    queue_id: str
    agent_id: str
    by_affinity: bool


@dataclass(frozen=True, slots=True)
class Queued:
    """The contact waits at `position` (1 = next); None for the wait means no staffed agent qualifies."""

    contact_id: str
    queue_id: str
    position: int
    expected_wait_s: float | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The contact was not admitted; `detail` says why in words."""

    contact_id: str
    queue_id: str
    reason: RefusalReason
    detail: str


@dataclass(frozen=True, slots=True)
class CallbackOffered:
    """The contact left the engine so the adapter can offer a callback; re-enqueue it if taken."""

    contact_id: str
    queue_id: str
    expected_wait_s: float | None


@dataclass(frozen=True, slots=True)
class Overflowed:
    """The contact was diverted to `to_queue_id`; `outcome` is what happened to it there."""

    contact_id: str
    from_queue_id: str
    to_queue_id: str
    outcome: Decision


Decision = Assigned | Queued | Refused | CallbackOffered | Overflowed


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactQueued:
    """A contact (re-)entered a queue's line: after an overflow or a declined offer."""

    contact_id: str
    queue_id: str
    position: int
    expected_wait_s: float | None
    enqueued_at: float
    at: float


@dataclass(frozen=True, slots=True)
class ContactAssigned:
    """A contact was offered to an agent; `step` and `min_level` are the ladder step in force."""

    contact_id: str
    queue_id: str
    agent_id: str
    step: int
    min_level: int | None
    by_affinity: bool
    enqueued_at: float
    at: float


@dataclass(frozen=True, slots=True)
class ContactRelaxed:
    """A waiting contact reached ladder step `step`: agents from `min_level` up now qualify."""

    contact_id: str
    queue_id: str
    step: int
    min_level: int | None
    at: float


@dataclass(frozen=True, slots=True)
class ContactOverflowed:
    """A contact left `from_queue_id` for `to_queue_id`; its fate there follows as another event."""

    contact_id: str
    from_queue_id: str
    to_queue_id: str
    waited_s: float
    at: float


@dataclass(frozen=True, slots=True)
class ContactCallbackOffered:
    """A contact left the engine after waiting too long, so the adapter can offer a callback."""

    contact_id: str
    queue_id: str
    waited_s: float
    at: float


@dataclass(frozen=True, slots=True)
class ContactRefused:
    """A contact overflowing into a full queue was refused there and left the engine."""

    contact_id: str
    queue_id: str
    reason: RefusalReason
    detail: str
    at: float


@dataclass(frozen=True, slots=True)
class ContactAbandoned:
    """The customer gave up, waiting or while an agent was being offered the contact."""

    contact_id: str
    queue_id: str
    waited_s: float
    at: float


@dataclass(frozen=True, slots=True)
class ContactDeclined:
    """An agent declined (or did not answer) an offer; the contact went back to its queue."""

    contact_id: str
    agent_id: str
    at: float


@dataclass(frozen=True, slots=True)
class ContactReleased:
    """A connected contact ended; `handled_s` runs from accept to release."""

    contact_id: str
    queue_id: str
    agent_id: str
    handled_s: float
    at: float


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """An agent's derived state changed; `reason` is the break reason when it went on break."""

    agent_id: str
    before: AgentState
    after: AgentState
    reason: str | None
    at: float


RoutingEvent = (
    ContactQueued
    | ContactAssigned
    | ContactRelaxed
    | ContactOverflowed
    | ContactCallbackOffered
    | ContactRefused
    | ContactAbandoned
    | ContactDeclined
    | ContactReleased
    | AgentStateChanged
)
