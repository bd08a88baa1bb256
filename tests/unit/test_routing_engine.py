"""The engine's contract: time, the outbox, contact life cycle, errors and determinism."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    AgentStateChanged,
    Assigned,
    Channel,
    ClockWentBackwardsError,
    Contact,
    ContactAbandoned,
    ContactAssigned,
    ContactDeclined,
    ContactQueued,
    ContactReleased,
    ContactStateError,
    DuplicateIdError,
    QueueConfig,
    Queued,
    RelaxationStep,
    RoutingConfigError,
    RoutingEngine,
    WaitingContact,
)

VOICE = Channel.VOICE
ROOT = Path(__file__).resolve().parents[2]


def engine(*agent_ids: str, **queue: object) -> RoutingEngine:
    eng = RoutingEngine([QueueConfig("q", "billing", **queue)])  # type: ignore[arg-type]
    for agent_id in agent_ids:
        eng.add_agent(AgentProfile(agent_id, {"billing": 3}, frozenset({"en"}), {VOICE: 1}), 0.0)
    return eng


def call(contact_id: str, at: float = 0.0) -> Contact:
    return Contact(contact_id, VOICE, at, language="en")


# --- time -------------------------------------------------------------------------------


def test_time_must_not_run_backwards() -> None:
    eng = engine("a")
    eng.tick(10.0)
    with pytest.raises(
        ClockWentBackwardsError, match=r"^time went backwards: now 9.0 is before 10.0 already seen$"
    ):
        eng.enqueue(call("c"), "q", 9.0)
    eng.tick(10.0)  # the same instant again is fine


@pytest.mark.parametrize("now", [math.nan, math.inf, True])
def test_now_must_be_a_finite_number(now: float) -> None:
    with pytest.raises(RoutingConfigError, match="bad now"):
        engine().tick(now)


def test_next_deadline_is_the_earliest_live_one() -> None:
    eng = engine(steps=(RelaxationStep(30.0, None),), max_wait_s=100.0)
    assert eng.next_deadline() is None
    eng.enqueue(call("c1"), "q", 5.0)
    eng.enqueue(call("c2"), "q", 10.0)
    assert eng.next_deadline() == 35.0
    eng.abandon("c1", 11.0)
    assert eng.next_deadline() == 40.0
    eng.tick(40.0)
    assert eng.next_deadline() == 110.0


# --- the outbox -------------------------------------------------------------------------


def test_agent_events_an_enqueue_causes_come_with_the_next_call() -> None:
    eng = engine("a")
    eng.set_agent_state("a", AgentState.AVAILABLE, 1.0)
    assert eng.enqueue(call("c"), "q", 2.0) == Assigned("c", "q", "a", False)
    assert eng.accept("a", "c", 3.0) == [
        AgentStateChanged("a", AgentState.AVAILABLE, AgentState.RESERVED, None, 2.0),
        AgentStateChanged("a", AgentState.RESERVED, AgentState.ON_CONTACT, None, 3.0),
    ]


def test_a_refused_call_keeps_due_events_for_the_next_one() -> None:
    eng = engine("a", steps=(RelaxationStep(10.0, None),))
    eng.enqueue(call("c"), "q", 0.0)
    with pytest.raises(ContactStateError):
        eng.abandon("nope", 20.0)  # fires the step at 10 first, then refuses
    assert [type(e).__name__ for e in eng.tick(20.0)] == ["ContactRelaxed"]


# --- life cycle -------------------------------------------------------------------------


def test_a_contact_from_arrival_to_release() -> None:
    eng = engine("a")
    assert eng.enqueue(call("c"), "q", 0.0) == Queued("c", "q", 1, None)
    assert eng.expected_wait_s("c") is None  # nobody staffed
    events = eng.set_agent_state("a", AgentState.AVAILABLE, 12.0)
    assert events == [
        AgentStateChanged("a", AgentState.OFFLINE, AgentState.AVAILABLE, None, 12.0),
        ContactAssigned("c", "q", "a", 0, 1, False, 0.0, 12.0),
        AgentStateChanged("a", AgentState.AVAILABLE, AgentState.RESERVED, None, 12.0),
    ]
    eng.accept("a", "c", 15.0)
    assert eng.release("a", "c", 75.0) == [
        ContactReleased("c", "q", "a", 60.0, 75.0),
        AgentStateChanged("a", AgentState.ON_CONTACT, AgentState.WRAP_UP, None, 75.0),
    ]
    stats = eng.statistics(75.0).queues["q"]
    assert (stats.answered, stats.answered_wait_s, stats.released) == (1, 15.0, 1)


def test_abandoning_a_waiting_contact() -> None:
    eng = engine()
    eng.enqueue(call("c1"), "q", 0.0)
    eng.enqueue(call("c2"), "q", 1.0)
    assert eng.abandon("c1", 25.0) == [ContactAbandoned("c1", "q", 25.0, 25.0)]
    assert eng.position("c2") == 1
    with pytest.raises(
        ContactStateError, match="contact 'c1' is not in the engine, expected waiting or offered"
    ):
        eng.abandon("c1", 26.0)


def test_abandoning_while_ringing_frees_the_agent_for_the_next_contact() -> None:
    eng = engine("a")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c1"), "q", 1.0)
    eng.enqueue(call("c2"), "q", 2.0)
    events = eng.abandon("c1", 3.0)
    assert [type(e).__name__ for e in events] == [
        "AgentStateChanged",  # reserved for c1, from the enqueue
        "ContactAbandoned",
        "AgentStateChanged",
        "ContactAssigned",
        "AgentStateChanged",
    ]
    assert eng.agent("a").contacts == ("c2",)


def test_a_declined_contact_returns_to_its_place_and_goes_to_another_agent() -> None:
    eng = engine("a", "b")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c1", at=0.0), "q", 1.0)
    eng.enqueue(call("c2", at=2.0), "q", 2.0)
    events = eng.decline("a", "c1", 3.0, reason="no answer")
    assert events[-2:] == [
        ContactDeclined("c1", "a", 3.0),
        ContactQueued("c1", "q", 1, None, 1.0, 3.0),  # first again, entered at 1
    ]
    events = eng.set_agent_state("b", AgentState.AVAILABLE, 4.0)
    assert [(e.contact_id, e.agent_id) for e in events if isinstance(e, ContactAssigned)] == [("c1", "b")]


def test_a_declined_contact_past_its_maximum_wait_leaves_at_once() -> None:
    eng = engine("a", max_wait_s=30.0)
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c"), "q", 0.0)
    events = eng.decline("a", "c", 40.0)
    assert [type(e).__name__ for e in events][-3:] == [
        "ContactDeclined",
        "ContactQueued",
        "ContactCallbackOffered",
    ]


def test_contact_ids_are_unique_while_live() -> None:
    eng = engine()
    eng.enqueue(call("c"), "q", 0.0)
    with pytest.raises(DuplicateIdError, match="contact 'c' already exists"):
        eng.enqueue(call("c"), "q", 1.0)


def test_queries_on_contacts_that_do_not_wait() -> None:
    eng = engine("a")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.enqueue(call("c"), "q", 0.0)
    with pytest.raises(ContactStateError, match="contact 'c' is offered to agent 'a', expected waiting"):
        eng.expected_wait_s("c")
    with pytest.raises(ContactStateError, match="not in the engine"):
        eng.position("ghost")


def test_waiting_snapshots() -> None:
    eng = engine(steps=(RelaxationStep(30.0, None),))
    eng.enqueue(call("c"), "q", 1.0)
    eng.tick(31.0)
    assert eng.waiting("q") == (WaitingContact(call("c"), "q", 1, 1.0, 1, None),)


def test_statistics_count_agents_by_state() -> None:
    eng = engine("a", "b", "c")
    eng.set_agent_state("a", AgentState.AVAILABLE, 0.0)
    eng.set_agent_state("b", AgentState.BREAK, 0.0, reason="lunch")
    stats = eng.statistics(0.0)
    assert {state: n for state, n in stats.agents_by_state.items() if n} == {
        AgentState.AVAILABLE: 1,
        AgentState.BREAK: 1,
        AgentState.OFFLINE: 1,
    }


# --- determinism ------------------------------------------------------------------------

SCENARIO = textwrap.dedent(
    """
    from edge_node.core.routing import *
    langs = [frozenset({"en"}), frozenset({"en", "de"}), frozenset({"de"})]
    eng = RoutingEngine([
        QueueConfig("q0", "s0", min_level=3, steps=(RelaxationStep(20, 1), RelaxationStep(40, None))),
        QueueConfig("q1", "s1", strategy=Strategy.LEAST_CONTACTS, max_wait_s=90, overflow_to="q0"),
        QueueConfig("q2", "s2", strategy=Strategy.ROUND_ROBIN, max_wait_s=120),
        QueueConfig("q3", "s0", strategy=Strategy.SKILL_WEIGHTED),
    ])
    out = []
    for i in range(10):
        skills = {f"s{(i + k) % 3}": 1 + (i * 7 + k) % 5 for k in range(2)}
        capacity = {Channel.VOICE: 1, Channel.CHAT: 1 + i % 3}
        eng.add_agent(AgentProfile(f"a{i}", skills, langs[i % 3], capacity), 0)
        out += eng.set_agent_state(f"a{i}", AgentState.AVAILABLE, 0)
    for t in range(400):
        for n in range(2):
            c = Contact(f"c{t}.{n}", (Channel.VOICE, Channel.CHAT)[t % 2], t,
                        language=("en", "de", None)[t % 3], vip=list(VipTier)[(t + n) % 4],
                        preferred_agent_id=f"a{t % 15}")
            out.append(eng.enqueue(c, f"q{(t + n) % 4}", t))
        out += eng.tick(t + 0.5)
        for s in eng.agents():
            offered = [c for c in s.contacts if c not in s.connected]
            if offered and t % 2:
                out += eng.accept(s.agent_id, offered[0], t + 0.5)
            elif s.connected and t % 7 == 0:
                out += eng.release(s.agent_id, s.connected[-1], t + 0.5)
            elif s.state is AgentState.WRAP_UP and t % 3 == 0:
                out += eng.set_agent_state(s.agent_id, AgentState.AVAILABLE, t + 0.5)
    print(repr(out))
    """
)


def test_decisions_do_not_depend_on_the_hash_seed() -> None:
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", SCENARIO], capture_output=True, text=True, env=env, check=True, timeout=60
        )
        runs.append(proc.stdout)
    for kind in ("ContactAssigned", "ContactRelaxed", "ContactOverflowed", "ContactCallbackOffered"):
        assert kind in runs[0]
    assert runs[0] == runs[1]
