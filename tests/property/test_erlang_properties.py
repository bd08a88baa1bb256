"""Laws of Erlang C staffing over random loads, handle times and targets."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.core.erlang import (
    agents_needed,
    average_speed_of_answer,
    probability_of_waiting,
    service_level,
    staffing,
)

# Strategies live here rather than in tests/strategies.py until another module needs them.

FAST = settings(max_examples=80, deadline=None)

loads = st.one_of(
    st.floats(0, 50, allow_nan=False),  # a small team
    st.floats(50, 3000, allow_nan=False),  # a large centre: the recurrence must hold up
)
aht_s = st.floats(10, 1200, allow_nan=False)
target_s = st.floats(0, 120, allow_nan=False)


@st.composite
def stable(draw: st.DrawFn) -> tuple[int, float]:
    """An offered load and an agent count that can serve it."""
    load = draw(loads)
    return math.floor(load) + 1 + draw(st.integers(0, 60)), load


@FAST
@given(queue=stable(), aht=aht_s, target=target_s)
def test_p_wait_is_a_probability_and_asa_is_never_negative(
    queue: tuple[int, float], aht: float, target: float
) -> None:
    agents, load = queue
    assert 0.0 <= probability_of_waiting(agents, load) <= 1.0
    assert 0.0 <= service_level(agents, load, aht, target) <= 1.0
    assert average_speed_of_answer(agents, load, aht) >= 0.0


@FAST
@given(queue=stable(), aht=aht_s, target=target_s)
def test_another_agent_never_hurts(queue: tuple[int, float], aht: float, target: float) -> None:
    agents, load = queue
    assert probability_of_waiting(agents + 1, load) <= probability_of_waiting(agents, load)
    assert service_level(agents + 1, load, aht, target) >= service_level(agents, load, aht, target)
    assert average_speed_of_answer(agents + 1, load, aht) <= average_speed_of_answer(agents, load, aht)


@FAST
@given(
    calls=st.floats(0, 3000, allow_nan=False),
    period_s=st.sampled_from([900.0, 1800.0, 3600.0]),
    aht=aht_s,
    target=target_s,
    goal=st.floats(0.05, 0.99),
    max_occupancy=st.none() | st.floats(0.3, 1.0),
)
def test_agents_needed_is_the_smallest_count_meeting_the_targets(
    calls: float, period_s: float, aht: float, target: float, goal: float, max_occupancy: float | None
) -> None:
    result = agents_needed(calls, period_s, aht, target, service_level=goal, max_occupancy=max_occupancy)
    assert result.agents > result.load_erlangs
    assert result.service_level >= goal
    assert max_occupancy is None or result.occupancy <= max_occupancy
    fewer = result.agents - 1
    if fewer > result.load_erlangs:  # otherwise N - 1 is unstable and cannot be staffed at all
        worse = staffing(fewer, calls, period_s, aht, target)
        assert worse.service_level < goal or (max_occupancy is not None and worse.occupancy > max_occupancy)
