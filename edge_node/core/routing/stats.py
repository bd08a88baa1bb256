"""Queue statistics, and the expected-wait estimator."""

# Theory of operation
# -------------------
# Each queue keeps monotonic counters since the engine started; `statistics()`
# snapshots them with the figures derived from them, so an adapter gets the
# figures of an interval by subtracting two snapshots' counters.
#
# A contact is *answered* when its agent accepts the offer; its wait runs from
# entering the queue to the accept, ringing included (Asterisk's holdtime). A
# contact that overflows or is offered a callback counts in the queue it leaves
# as overflowed or callback-offered, never as answered or abandoned.
#
#   service level     answered within T / (answered + abandoned after T)
#                     T = the queue's service_level_s (20 s by default); waits of
#                     exactly T count as within. Callers who hang up within T are
#                     left out of numerator and denominator (they never gave the
#                     queue a fair chance), callers who hang up later count as
#                     failures. None while the denominator is 0.
#   abandon rate      abandoned / (answered + abandoned), all abandons.
#   ASA               total answered wait / answered.
#   handle time       exponentially smoothed accept-to-release time of the
#                     queue's contacts: h <- h + alpha * (x - h), starting from
#                     the engine's `default_handle_s`.
#
# Expected wait (EWT) of a waiting contact at position p (1 = next):
#
#   EWT = p * h / n
#
# where n is the number of slots on the contact's channel of *staffed* agents
# (presence available, idle or busy) eligible for it at its current ladder step.
# That is the time for p of the n slots to free up if they free up evenly every
# h / n seconds: a Little's-law estimate that ignores how far into their current
# contacts the agents are. With n = 0 there is no estimate: None. A contact that
# is waiting has no free eligible agent (else it would have one), so every slot
# counted is busy or in wrap-up.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from edge_node.core.routing.agents import AgentState


def service_level(answered_within: int, answered: int, abandoned_after: int) -> float | None:
    """Share answered within the threshold, over answered plus abandoned after it."""
    total = answered + abandoned_after
    return None if total == 0 else answered_within / total


def abandon_rate(abandoned: int, answered: int) -> float | None:
    """Share of contacts that ended by abandoning, over those answered or abandoned."""
    total = answered + abandoned
    return None if total == 0 else abandoned / total


def expected_wait_s(position: int, handle_s: float, staffed_slots: int) -> float | None:
    """EWT = position * handle time / staffed eligible slots; None without slots."""
    return None if staffed_slots <= 0 else position * handle_s / staffed_slots


@dataclass(slots=True)
class QueueCounters:
    """One queue's running counters. Internal: callers see `QueueStatistics`."""

    service_level_s: float
    handle_s: float  # smoothed handle time
    arrived: int = 0
    refused: int = 0
    overflowed: int = 0
    callbacks_offered: int = 0
    answered: int = 0
    answered_within: int = 0
    answered_wait_s: float = 0.0
    abandoned: int = 0
    abandoned_after: int = 0
    released: int = 0

    def answer(self, waited_s: float) -> None:
        self.answered += 1
        self.answered_wait_s += waited_s
        self.answered_within += int(waited_s <= self.service_level_s)

    def abandon(self, waited_s: float) -> None:
        self.abandoned += 1
        self.abandoned_after += int(waited_s > self.service_level_s)

    def release(self, handled_s: float, smoothing: float) -> None:
        self.released += 1
        self.handle_s += smoothing * (handled_s - self.handle_s)


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """One queue's figures at `RoutingStatistics.at`; counters run since the engine started."""

    queue_id: str
    waiting: int
    longest_wait_s: float
    arrived: int
    refused: int
    overflowed: int
    callbacks_offered: int
    answered: int
    answered_within: int
    abandoned: int
    abandoned_after: int
    released: int
    answered_wait_s: float
    service_level_s: float
    service_level: float | None
    abandon_rate: float | None
    average_speed_of_answer_s: float | None
    average_handle_s: float

    @classmethod
    def of(
        cls, queue_id: str, counters: QueueCounters, *, waiting: int, longest_wait_s: float
    ) -> QueueStatistics:
        c = counters
        return cls(
            queue_id=queue_id,
            waiting=waiting,
            longest_wait_s=longest_wait_s,
            arrived=c.arrived,
            refused=c.refused,
            overflowed=c.overflowed,
            callbacks_offered=c.callbacks_offered,
            answered=c.answered,
            answered_within=c.answered_within,
            abandoned=c.abandoned,
            abandoned_after=c.abandoned_after,
            released=c.released,
            answered_wait_s=c.answered_wait_s,
            service_level_s=c.service_level_s,
            service_level=service_level(c.answered_within, c.answered, c.abandoned_after),
            abandon_rate=abandon_rate(c.abandoned, c.answered),
            average_speed_of_answer_s=c.answered_wait_s / c.answered if c.answered else None,
            average_handle_s=c.handle_s,
        )


@dataclass(frozen=True, slots=True)
class RoutingStatistics:
    """A snapshot of the whole engine at `at`."""

    at: float
    queues: Mapping[str, QueueStatistics]
    agents_by_state: Mapping[AgentState, int]
    waiting: int
    next_deadline: float | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", MappingProxyType(dict(self.queues)))
        object.__setattr__(self, "agents_by_state", MappingProxyType(dict(self.agents_by_state)))
