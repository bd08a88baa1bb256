"""Erlang C staffing: how many agents a queue needs to answer calls within a target time."""

# Theory of operation
# -------------------
# Erlang C models a queue as M/M/N: calls arrive as a Poisson stream, handle
# times are exponential with mean `aht_s`, N agents serve one queue, and nobody
# hangs up. The offered load A = calls * aht_s / period_s (in erlangs) is the
# number of agents the work would keep busy all the time; with N <= A the queue
# grows without bound, so every function here refuses such inputs instead of
# returning a negative or infinite figure.
#
# The textbook formula needs A^N / N! and a sum of such terms, which overflows a
# float long before a large contact centre's N. We use the Erlang B recurrence
# instead, B(0) = 1 and B(k) = A*B(k-1) / (k + A*B(k-1)): each step keeps B in
# [0, 1], costs two multiplications, and underflows gracefully to 0 rather than
# overflowing. Erlang C follows from B in one step, C = N*B / (N - A + A*B),
# which cannot exceed 1 because B <= 1. From C the rest is closed form: service
# level SL(t) = 1 - C*exp(-(N-A)*t/AHT), average speed of answer
# ASA = C*AHT/(N-A), occupancy A/N.
#
# `agents_needed` walks N upward from the first stable count, advancing the
# recurrence by one step per candidate, so a search over thousands of agents
# costs O(N) rather than O(N^2). Service level grows with N and occupancy falls,
# so the first N meeting both targets is the smallest. Nothing here reads the
# clock or logs: inputs in, numbers out. The figures match the published
# reference tables (CRAN ErlangC, pyworkforce) to four places.

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_node.errors import EdgeNodeError


class ErlangError(EdgeNodeError):
    """Base for every error the Erlang staffing core raises."""


class ErlangValueError(ErlangError):
    """An input is outside the model's domain; `what` names the parameter."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"bad {what} {value!r}: {reason}")


class UnstableQueueError(ErlangError):
    """The agents cannot keep up with the offered load, so the queue grows without bound."""

    def __init__(self, agents: int, load_erlangs: float) -> None:
        self.agents, self.load_erlangs = agents, load_erlangs
        super().__init__(
            f"unstable queue: {agents} agents cannot serve {load_erlangs!r} erlangs; agents must exceed load"
        )


@dataclass(frozen=True, slots=True)
class StaffingResult:
    """One staffing level with its predicted performance, and the inputs it was computed from.

    Attributes:
        agents: Agents on the queue (N).
        load_erlangs: Offered load A = calls * aht_s / period_s.
        p_wait: Probability that a call waits at all (Erlang C).
        service_level: Share of calls answered within `target_s`.
        asa_s: Average speed of answer over all calls, in seconds.
        occupancy: Share of agent time spent handling calls (A / N).
        calls: Calls offered per period.
        period_s: Length of the period, in seconds.
        aht_s: Average handle time, in seconds.
        target_s: Answer-time target of the service level, in seconds.
    """

    agents: int
    load_erlangs: float
    p_wait: float
    service_level: float
    asa_s: float
    occupancy: float
    calls: float
    period_s: float
    aht_s: float
    target_s: float


def _positive(what: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ErlangValueError(what, value, "must be a finite number above 0")
    return float(value)


def _non_negative(what: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ErlangValueError(what, value, "must be a finite number of at least 0")
    return float(value)


def _stable(agents: int, load: float) -> tuple[int, float]:
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise ErlangValueError("agents", agents, "must be a whole number of at least 1")
    load = _non_negative("load", load)
    if agents <= load:
        raise UnstableQueueError(agents, load)
    return agents, load


def _erlang_b_step(b: float, k: int, load: float) -> float:
    """Advance the Erlang B recurrence from k - 1 to k servers; stays in [0, 1]."""
    ab = load * b
    return ab / (k + ab)


def _erlang_b(agents: int, load: float) -> float:
    b = 1.0
    for k in range(1, agents + 1):
        b = _erlang_b_step(b, k, load)
    return b


def _erlang_c_from_b(agents: int, load: float, b: float) -> float:
    # N*B / (N - A(1 - B)), rearranged so N - A is formed once; min() absorbs a last-bit rounding above 1.
    return min(1.0, agents * b / (agents - load + load * b))


def _service_level(p_wait: float, agents: int, load: float, aht_s: float, target_s: float) -> float:
    return 1.0 - p_wait * math.exp(-(agents - load) * target_s / aht_s)


def offered_load(calls: float, period_s: float, aht_s: float) -> float:
    """Return the offered load in erlangs, A = calls * aht_s / period_s.

    Args:
        calls: Calls arriving per period; may be 0 (a quiet interval needs no agents waiting).
        period_s: Length of the period the calls arrive in, in seconds.
        aht_s: Average handle time (talk plus wrap-up), in seconds.

    Raises:
        ErlangValueError: `calls` is negative or `period_s`/`aht_s` is not positive.
    """
    return _non_negative("calls", calls) * _positive("aht_s", aht_s) / _positive("period_s", period_s)


def probability_of_waiting(agents: int, load: float) -> float:
    """Return the Erlang C probability that a call has to queue before an agent answers.

    Computed through the Erlang B recurrence, so it is exact to float precision
    for any number of agents; no factorial is ever formed.

    Raises:
        ErlangValueError: `agents` is not a whole number >= 1 or `load` is negative.
        UnstableQueueError: `agents <= load`; the queue would grow forever.
    """
    agents, load = _stable(agents, load)
    return _erlang_c_from_b(agents, load, _erlang_b(agents, load))


def service_level(agents: int, load: float, aht_s: float, target_s: float) -> float:
    """Return the share of calls answered within `target_s`: 1 - P(wait) * e^(-(N - A) * t / AHT).

    Raises:
        ErlangValueError: An input is outside its domain (see `probability_of_waiting`);
            `aht_s` must be positive and `target_s` at least 0.
        UnstableQueueError: `agents <= load`.
    """
    aht_s, target_s = _positive("aht_s", aht_s), _non_negative("target_s", target_s)
    p_wait = probability_of_waiting(agents, load)
    return _service_level(p_wait, agents, float(load), aht_s, target_s)


def average_speed_of_answer(agents: int, load: float, aht_s: float) -> float:
    """Return the mean time a call waits for an agent, over all calls: P(wait) * AHT / (N - A).

    Raises:
        ErlangValueError: An input is outside its domain; `aht_s` must be positive.
        UnstableQueueError: `agents <= load`.
    """
    aht_s = _positive("aht_s", aht_s)
    p_wait = probability_of_waiting(agents, load)
    return p_wait * aht_s / (agents - load)


def occupancy(agents: int, load: float) -> float:
    """Return the share of agent time spent on calls, A / N.

    Raises:
        ErlangValueError: An input is outside its domain.
        UnstableQueueError: `agents <= load`; occupancy would reach or pass 100 %.
    """
    agents, load = _stable(agents, load)
    return load / agents


def _result(agents: int, p_wait: float, load: float, *inputs: float) -> StaffingResult:
    calls, period_s, aht_s, target_s = inputs
    return StaffingResult(
        agents=agents,
        load_erlangs=load,
        p_wait=p_wait,
        service_level=_service_level(p_wait, agents, load, aht_s, target_s),
        asa_s=p_wait * aht_s / (agents - load),
        occupancy=load / agents,
        calls=calls,
        period_s=period_s,
        aht_s=aht_s,
        target_s=target_s,
    )


def staffing(agents: int, calls: float, period_s: float, aht_s: float, target_s: float) -> StaffingResult:
    """Return the predicted performance of a given number of agents, e.g. for one row of a staffing table.

    Raises:
        ErlangValueError: An input is outside its domain.
        UnstableQueueError: `agents` does not exceed the offered load.
    """
    load = offered_load(calls, period_s, aht_s)
    target_s = _non_negative("target_s", target_s)
    agents, load = _stable(agents, load)
    p_wait = _erlang_c_from_b(agents, load, _erlang_b(agents, load))
    return _result(agents, p_wait, load, float(calls), float(period_s), float(aht_s), target_s)


def agents_needed(
    calls: float,
    period_s: float,
    aht_s: float,
    target_s: float,
    service_level: float = 0.8,
    max_occupancy: float | None = None,
) -> StaffingResult:
    """Return the smallest number of agents that answers `service_level` of calls within `target_s`.

    With `max_occupancy`, the result also keeps occupancy at or below it, which
    protects agents from back-to-back calls when the service level alone would
    allow a very busy floor. Shrinkage (breaks, training) is the caller's
    business: divide the result by (1 - shrinkage) to get rostered heads.

    Args:
        calls: Calls arriving per period.
        period_s: Length of the period, in seconds (1800 for a half-hour interval).
        aht_s: Average handle time, in seconds.
        target_s: Answer-time target, in seconds (the 20 of "80/20").
        service_level: Share of calls to answer within `target_s`, strictly between 0 and 1.
        max_occupancy: Highest acceptable occupancy, in (0, 1]; None for no cap.

    Returns:
        The staffing level found, with its predicted P(wait), service level, ASA and occupancy.

    Raises:
        ErlangValueError: An input is outside its domain.
    """
    load = offered_load(calls, period_s, aht_s)
    target_s = _non_negative("target_s", target_s)
    if (
        isinstance(service_level, bool)
        or not isinstance(service_level, int | float)
        or not 0 < service_level < 1
    ):
        raise ErlangValueError("service_level", service_level, "must lie strictly between 0 and 1")
    if max_occupancy is not None and (
        isinstance(max_occupancy, bool)
        or not isinstance(max_occupancy, int | float)
        or not 0 < max_occupancy <= 1
    ):
        raise ErlangValueError("max_occupancy", max_occupancy, "must lie in (0, 1]")
    inputs = (float(calls), float(period_s), float(aht_s), target_s)
    agents = math.floor(load) + 1  # the first stable count
    b = _erlang_b(agents, load)
    while True:
        p_wait = _erlang_c_from_b(agents, load, b)
        meets_sl = _service_level(p_wait, agents, load, inputs[2], target_s) >= service_level
        if meets_sl and (max_occupancy is None or load / agents <= max_occupancy):
            return _result(agents, p_wait, load, *inputs)
        agents += 1
        b = _erlang_b_step(b, agents, load)
