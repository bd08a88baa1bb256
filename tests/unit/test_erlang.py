"""Worked examples for Erlang C staffing: the published reference tables, edge cases and input errors."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction

import pytest

from edge_node.core.erlang import (
    ErlangError,
    ErlangValueError,
    StaffingResult,
    UnstableQueueError,
    agents_needed,
    average_speed_of_answer,
    occupancy,
    offered_load,
    probability_of_waiting,
    service_level,
    staffing,
)
from edge_node.errors import EdgeNodeError

# domain.md section 3.2, case A: 100 calls per 30 min, AHT 180 s => 10 erlangs, target 20 s.
# Columns: agents, P(wait), SL(20 s), ASA (s), occupancy; rounded as published.
CASE_A = [
    (11, 0.6821, 0.3896, 122.78, 0.909),
    (12, 0.4494, 0.6402, 40.44, 0.833),
    (13, 0.2853, 0.7956, 17.12, 0.769),
    (14, 0.1741, 0.8884, 7.84, 0.714),
    (15, 0.1020, 0.9415, 3.67, 0.667),
    (16, 0.0573, 0.9706, 1.72, 0.625),
]


def exact_erlang_c(agents: int, load: Fraction) -> Fraction:
    """The textbook formula in exact rationals, as an independent oracle for small N."""
    top = load**agents / math.factorial(agents) * agents / (agents - load)
    bottom = sum(load**k / math.factorial(k) for k in range(agents)) + top
    return top / bottom


# --- the published example --------------------------------------------------------------


def test_published_example_needs_14_agents() -> None:
    result = agents_needed(calls=100, period_s=1800, aht_s=180, target_s=20, service_level=0.8)
    assert result.agents == 14
    assert result.load_erlangs == 10.0
    assert round(result.p_wait, 4) == 0.1741
    assert round(result.service_level, 4) == 0.8884
    assert round(result.asa_s, 2) == 7.84
    assert round(result.occupancy, 3) == 0.714
    assert (result.calls, result.period_s, result.aht_s, result.target_s) == (100, 1800, 180, 20)


def test_published_example_matches_cran_erlangc_to_its_printed_digits() -> None:
    result = staffing(14, calls=100, period_s=1800, aht_s=180, target_s=20)
    assert result.p_wait == pytest.approx(0.1741319, abs=5e-8)
    assert result.service_level == pytest.approx(0.88835, abs=5e-6)
    assert result.asa_s == pytest.approx(7.8359, abs=5e-5)
    assert result.occupancy == pytest.approx(0.7142857, abs=5e-8)
    assert probability_of_waiting(11, 10.0) == pytest.approx(0.6821182, abs=5e-8)


@pytest.mark.parametrize(("agents", "p_wait", "sl", "asa_s", "occ"), CASE_A)
def test_reference_table_case_a(agents: int, p_wait: float, sl: float, asa_s: float, occ: float) -> None:
    result = staffing(agents, calls=100, period_s=1800, aht_s=180, target_s=20)
    assert round(result.p_wait, 4) == p_wait
    assert round(result.service_level, 4) == sl
    assert round(result.asa_s, 2) == asa_s
    assert round(result.occupancy, 3) == occ


def test_reference_case_b_westbay_worked_example() -> None:
    # 360 calls per half hour, AHT 4 min, 55 agents, target 15 s (recomputed values in domain.md).
    result = staffing(55, calls=360, period_s=1800, aht_s=240, target_s=15)
    assert result.load_erlangs == 48.0
    assert round(result.occupancy, 4) == 0.8727
    assert round(result.p_wait, 4) == 0.2387
    assert round(result.asa_s, 2) == 8.18
    assert round(result.service_level, 4) == 0.8459


@pytest.mark.parametrize(("agents", "sl"), [(28, 0.7613), (29, 0.8403), (30, 0.8952)])
def test_reference_case_c_service_levels(agents: int, sl: float) -> None:
    assert round(service_level(agents, 24.0, aht_s=240, target_s=20), 4) == sl


def test_reference_case_c_needs_29_agents_for_80_20() -> None:
    assert agents_needed(calls=360, period_s=3600, aht_s=240, target_s=20).agents == 29


@pytest.mark.parametrize(("max_occupancy", "agents"), [(0.85, 14), (0.7, 15), (1.0, 14)])
def test_occupancy_cap_matches_pyworkforce_raw_positions(max_occupancy: float, agents: int) -> None:
    # pyworkforce's reference test: raw positions 14 at max_occ 0.85 and 15 at 0.7 (before shrinkage).
    result = agents_needed(100, 1800, 180, 20, service_level=0.8, max_occupancy=max_occupancy)
    assert result.agents == agents
    assert result.occupancy <= max_occupancy


def test_occupancy_cap_can_be_met_exactly() -> None:
    assert agents_needed(100, 1800, 180, 20, service_level=0.5, max_occupancy=0.5).agents == 20


# --- the single-figure functions -------------------------------------------------------


def test_offered_load_is_calls_times_aht_over_period() -> None:
    assert offered_load(100, 1800, 180) == 10.0
    assert offered_load(0, 1800, 180) == 0.0
    assert offered_load(360, 3600, 240) == 24.0


def test_single_figure_functions_agree_with_the_staffing_result() -> None:
    result = staffing(14, 100, 1800, 180, 20)
    assert probability_of_waiting(14, 10.0) == result.p_wait
    assert service_level(14, 10.0, 180, 20) == result.service_level
    assert average_speed_of_answer(14, 10.0, 180) == result.asa_s
    assert occupancy(14, 10.0) == result.occupancy


def test_zero_target_means_answered_without_waiting() -> None:
    assert service_level(14, 10.0, 180, 0) == pytest.approx(1 - probability_of_waiting(14, 10.0))


@pytest.mark.parametrize(
    ("agents", "load"), [(1, Fraction(1, 2)), (5, Fraction(7, 3)), (30, Fraction(55, 2))]
)
def test_recurrence_matches_the_exact_textbook_formula(agents: int, load: Fraction) -> None:
    assert probability_of_waiting(agents, float(load)) == pytest.approx(
        float(exact_erlang_c(agents, load)), rel=1e-12
    )


def test_thousands_of_agents_stay_finite_and_fast() -> None:
    p_wait = probability_of_waiting(5001, 5000.0)
    assert 0.9 < p_wait < 1.0
    assert probability_of_waiting(20_000, 1.0) == 0.0  # underflows to 0 instead of overflowing
    result = agents_needed(calls=100_000, period_s=3600, aht_s=180, target_s=20, service_level=0.9)
    assert 5000 < result.agents < 5100
    assert result.service_level >= 0.9


def test_no_calls_needs_one_agent_who_never_keeps_anyone_waiting() -> None:
    result = agents_needed(0, 1800, 180, 20)
    assert (result.agents, result.p_wait, result.service_level, result.asa_s) == (1, 0.0, 1.0, 0.0)


def test_result_is_frozen() -> None:
    result = agents_needed(100, 1800, 180, 20)
    assert isinstance(result, StaffingResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.agents = 3  # type: ignore[misc]  # the point is that assignment fails


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("agents", "load"), [(10, 10.0), (9, 10.0), (1, 2.5)])
def test_unstable_queue_is_refused(agents: int, load: float) -> None:
    calls: list[Callable[[], float]] = [
        lambda: probability_of_waiting(agents, load),
        lambda: service_level(agents, load, 180, 20),
        lambda: average_speed_of_answer(agents, load, 180),
        lambda: occupancy(agents, load),
    ]
    for call in calls:
        with pytest.raises(UnstableQueueError) as info:
            call()
        assert (info.value.agents, info.value.load_erlangs) == (agents, load)
        assert str(info.value) == (
            f"unstable queue: {agents} agents cannot serve {load!r} erlangs; agents must exceed load"
        )


def test_staffing_a_given_count_below_the_load_is_refused() -> None:
    with pytest.raises(UnstableQueueError):
        staffing(10, 100, 1800, 180, 20)


@pytest.mark.parametrize(
    ("kwargs", "what", "value"),
    [
        ({"period_s": 0}, "period_s", 0),
        ({"period_s": -1800}, "period_s", -1800),
        ({"period_s": math.inf}, "period_s", math.inf),
        ({"aht_s": 0}, "aht_s", 0),
        ({"calls": -1}, "calls", -1),
        ({"target_s": -5}, "target_s", -5),
        ({"service_level": 0}, "service_level", 0),
        ({"service_level": 1}, "service_level", 1),
        ({"service_level": 80}, "service_level", 80),
        ({"max_occupancy": 0}, "max_occupancy", 0),
        ({"max_occupancy": 1.2}, "max_occupancy", 1.2),
    ],
)
def test_agents_needed_names_the_bad_input(kwargs: dict[str, float], what: str, value: float) -> None:
    args: dict[str, float] = {"calls": 100, "period_s": 1800, "aht_s": 180, "target_s": 20, **kwargs}
    with pytest.raises(ErlangValueError) as info:
        agents_needed(**args)
    assert (info.value.what, info.value.value) == (what, value)
    assert str(info.value).startswith(f"bad {what} {value!r}: ")
    assert str(info.value) == str(info.value).lower()


def test_nan_is_refused() -> None:
    with pytest.raises(ErlangValueError, match="bad aht_s nan"):
        offered_load(100, 1800, math.nan)


@pytest.mark.parametrize("agents", [0, -3, True, 2.5])
def test_agents_must_be_a_positive_whole_number(agents: int) -> None:
    with pytest.raises(ErlangValueError) as info:
        probability_of_waiting(agents, 0.5)
    assert info.value.what == "agents"


def test_negative_load_and_bad_aht_are_refused() -> None:
    with pytest.raises(ErlangValueError, match=r"bad load -1\.0"):
        probability_of_waiting(3, -1.0)
    with pytest.raises(ErlangValueError, match="bad aht_s 0"):
        average_speed_of_answer(3, 1.0, 0)


def test_errors_share_the_package_base() -> None:
    assert issubclass(ErlangValueError, ErlangError)
    assert issubclass(UnstableQueueError, ErlangError)
    assert issubclass(ErlangError, EdgeNodeError)
