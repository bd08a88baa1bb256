"""The errors the routing engine raises on purpose.

Each keeps its data as attributes and builds a lowercase message from it: the
rule that broke and the values that broke it. Routing outcomes a caller must
expect (a full queue, a diverted contact) are decisions, not errors; errors
mean the caller asked for something the engine's state or configuration forbids.
"""

# Theory of operation
# -------------------
# One base, `RoutingError` (an `EdgeNodeError`), so adapters can map every
# routing refusal in one table; subclasses name the broken rule. Engine calls
# check before they change anything, so an error leaves the engine as it was.

from __future__ import annotations

from collections.abc import Iterable

from edge_node.errors import EdgeNodeError


class RoutingError(EdgeNodeError):
    """Base for every error the routing core raises."""


class RoutingConfigError(RoutingError):
    """A queue, agent or engine setting breaks a rule; `what` names the setting."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"bad {what} {value!r}: {reason}")


class UnknownQueueError(RoutingError):
    """A call names a queue the engine does not have."""

    def __init__(self, queue_id: str) -> None:
        self.queue_id = queue_id
        super().__init__(f"unknown queue {queue_id!r}")


class UnknownAgentError(RoutingError):
    """A call names an agent the engine does not have."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"unknown agent {agent_id!r}")


class DuplicateIdError(RoutingError):
    """An agent, queue or live contact id is already taken; `kind` says which."""

    def __init__(self, kind: str, id_: str) -> None:
        self.kind, self.id = kind, id_
        super().__init__(f"{kind} {id_!r} already exists")


class ContactStateError(RoutingError):
    """A contact is not where the call needs it: `expected` says where, `actual` where it is."""

    def __init__(self, contact_id: str, *, expected: str, actual: str) -> None:
        self.contact_id, self.expected, self.actual = contact_id, expected, actual
        super().__init__(f"contact {contact_id!r} is {actual}, expected {expected}")


class IllegalTransitionError(RoutingError):
    """An agent state change the state machine does not allow from the current state."""

    def __init__(self, agent_id: str, current: str, requested: str, allowed: Iterable[str]) -> None:
        self.agent_id, self.current, self.requested = agent_id, current, requested
        self.allowed = tuple(sorted(allowed))
        names = ", ".join(self.allowed) or "none"
        super().__init__(
            f"agent {agent_id!r} cannot move from {current} to {requested}; allowed from {current}: {names}"
        )


class BreakReasonError(RoutingError):
    """A break was requested without a reason, or a reason was given for another state."""

    def __init__(self, agent_id: str, requested: str, reason: str | None) -> None:
        self.agent_id, self.requested, self.reason = agent_id, requested, reason
        rule = "a break needs a non-empty reason" if requested == "break" else "only a break takes a reason"
        super().__init__(f"agent {agent_id!r} to {requested} with reason {reason!r}: {rule}")


class ClockWentBackwardsError(RoutingError):
    """A call passed a `now` earlier than one the engine has already seen."""

    def __init__(self, now: float, latest: float) -> None:
        self.now, self.latest = now, latest
        super().__init__(f"time went backwards: now {now!r} is before {latest!r} already seen")
