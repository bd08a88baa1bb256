"""Statistics: the service level, abandon rate, ASA and expected-wait formulas, worked through."""

from __future__ import annotations

import pytest

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    Channel,
    Contact,
    QueueConfig,
    Queued,
    RelaxationStep,
    RoutingConfig,
    RoutingConfigError,
    RoutingEngine,
    VipTier,
    abandon_rate,
    expected_wait_s,
    service_level,
)

VOICE, CHAT = Channel.VOICE, Channel.CHAT


def call(contact_id: str, at: float = 0.0, channel: Channel = VOICE) -> Contact:
    return Contact(contact_id, channel, at, language="en")


def add(eng: RoutingEngine, agent_id: str, *, level: int = 3, chat: int = 0, now: float = 0.0) -> None:
    capacity = {VOICE: 1, CHAT: chat} if chat else {VOICE: 1}
    eng.add_agent(AgentProfile(agent_id, {"billing": level}, frozenset({"en"}), capacity), now)


# --- formulas ---------------------------------------------------------------------------


def test_service_level_counts_late_abandons_as_failures_and_ignores_early_ones() -> None:
    # 8 of 10 answered within T; 2 abandoned after T; early abandons do not appear at all
    assert service_level(answered_within=8, answered=10, abandoned_after=2) == pytest.approx(8 / 12)
    assert service_level(0, 0, 0) is None
    assert service_level(0, 0, 3) == 0.0


def test_abandon_rate_counts_every_abandon() -> None:
    assert abandon_rate(abandoned=5, answered=15) == pytest.approx(0.25)
    assert abandon_rate(0, 0) is None


def test_expected_wait_is_position_times_handle_time_over_slots() -> None:
    assert expected_wait_s(position=3, handle_s=180.0, staffed_slots=2) == 270.0
    assert expected_wait_s(position=1, handle_s=180.0, staffed_slots=6) == 30.0
    assert expected_wait_s(position=1, handle_s=180.0, staffed_slots=0) is None


# --- a worked day -----------------------------------------------------------------------


def test_queue_figures_over_a_small_worked_example() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", service_level_s=20.0)])
    add(eng, "a")
    for n, at in enumerate((0.0, 1.0, 2.0, 3.0, 4.0)):
        eng.enqueue(call(f"c{n}", at), "q", at)
    eng.abandon("c3", 8.0)  # waited 5 s: an early abandon
    eng.set_agent_state("a", AgentState.AVAILABLE, 9.0)
    eng.accept("a", "c0", 10.0)  # waited 10 s
    eng.abandon("c4", 44.0)  # waited 40 s: a late abandon
    eng.release("a", "c0", 110.0)
    eng.set_agent_state("a", AgentState.AVAILABLE, 110.0)
    eng.accept("a", "c1", 111.0)  # waited 110 s
    stats = eng.statistics(120.0).queues["q"]
    assert (stats.arrived, stats.waiting, stats.answered, stats.answered_within) == (5, 1, 2, 1)
    assert (stats.abandoned, stats.abandoned_after) == (2, 1)
    assert stats.longest_wait_s == 118.0  # c2, in line since 2
    assert stats.service_level == pytest.approx(1 / 3)  # 1 within / (2 answered + 1 late abandon)
    assert stats.abandon_rate == pytest.approx(2 / 4)
    assert stats.average_speed_of_answer_s == pytest.approx((10 + 110) / 2)
    assert stats.average_handle_s == pytest.approx(180 + 0.2 * (100 - 180))  # smoothed from the default


def test_answers_at_exactly_the_threshold_count_as_within() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", service_level_s=20.0)])
    add(eng, "a")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c"), "q", 0.0)
    eng.accept("a", "c", 20.0)
    assert eng.statistics(20.0).queues["q"].service_level == 1.0


def test_a_declined_then_answered_contact_is_answered_once() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a")
    add(eng, "b")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.set_agent_state("b", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c"), "q", 0.0)
    eng.decline("a", "c", 15.0)
    eng.accept("b", "c", 25.0)
    stats = eng.statistics(25.0).queues["q"]
    assert (stats.arrived, stats.answered, stats.answered_within, stats.answered_wait_s) == (1, 1, 0, 25.0)


# --- expected wait in the engine -----------------------------------------------------------


def test_expected_wait_counts_staffed_slots_busy_or_not() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", min_level=2)])
    add(eng, "a")
    add(eng, "b")
    add(eng, "weak", level=1)
    add(eng, "away")
    for agent_id in ("a", "b", "weak"):
        eng.set_agent_state(agent_id, AgentState.AVAILABLE, 0.0)
    eng.set_agent_state("away", AgentState.BREAK, 0.0, reason="lunch")
    eng.enqueue(call("busy-a"), "q", 0.0)
    eng.enqueue(call("busy-b"), "q", 0.0)
    assert eng.enqueue(call("c1"), "q", 1.0) == Queued("c1", "q", 1, 90.0)  # 1 x 180 / 2 slots
    assert eng.enqueue(call("c2"), "q", 1.0) == Queued("c2", "q", 2, 180.0)
    eng.set_agent_state("away", AgentState.AVAILABLE, 2.0)  # takes c1; 3 slots now
    assert eng.expected_wait_s("c2") == 60.0


def test_expected_wait_follows_the_ladder_step_and_chat_capacity() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", min_level=3, steps=(RelaxationStep(30.0, 1),))])
    add(eng, "expert", chat=1)
    add(eng, "novice", level=1, chat=3)
    for agent_id in ("expert", "novice"):
        eng.set_agent_state(agent_id, AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("first", channel=CHAT), "q", 0.0)  # expert's only chat slot
    assert eng.enqueue(call("c", channel=CHAT), "q", 0.0) == Queued("c", "q", 1, 180.0)
    eng.tick(30.0)  # relaxed: novice takes it at once
    assert eng.waiting("q") == ()


def test_expected_wait_uses_the_smoothed_handle_time() -> None:
    eng = RoutingEngine(
        [QueueConfig("q", "billing")], config=RoutingConfig(default_handle_s=100.0, handle_smoothing=0.5)
    )
    add(eng, "a")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c0"), "q", 0.0)
    eng.accept("a", "c0", 0.0)
    eng.release("a", "c0", 300.0)  # 100 -> 200
    eng.set_agent_state("a", AgentState.AVAILABLE, 300.0)
    eng.enqueue(call("c1"), "q", 300.0)
    assert eng.enqueue(call("c2"), "q", 300.0) == Queued("c2", "q", 1, 200.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_handle_s": 0}, "bad default_handle_s 0"),
        ({"handle_smoothing": 0}, r"must lie in \(0, 1\]"),
        ({"handle_smoothing": 1.5}, r"must lie in \(0, 1\]"),
        ({"vip_credit_s": {VipTier.GOLD: -1.0}}, r"bad vip_credit_s\[gold\] -1.0"),
        ({"vip_credit_s": {"diamond": 1.0}}, "bad vip_credit_s tier 'diamond'"),
    ],
)
def test_engine_config_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RoutingConfigError, match=message):
        RoutingConfig(**kwargs)  # type: ignore[arg-type]  # deliberately bad values


def test_statistics_are_frozen() -> None:
    stats = RoutingEngine([QueueConfig("q", "billing")]).statistics(0.0)
    with pytest.raises(TypeError):
        stats.queues["x"] = stats.queues["q"]  # type: ignore[index]  # read-only
    assert stats.next_deadline is None


def test_statistics_default_to_the_latest_instant_seen() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    assert eng.statistics().at == 0.0
    eng.enqueue(call("c"), "q", 5.0)
    eng.tick(65.0)
    stats = eng.statistics()
    assert (stats.at, stats.waiting, stats.queues["q"].longest_wait_s) == (65.0, 1, 60.0)
