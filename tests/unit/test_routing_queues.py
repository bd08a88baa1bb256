"""Queues: relaxation steps, maximum wait with overflow or callback, maximum length, validation."""

from __future__ import annotations

import pytest

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    Assigned,
    CallbackOffered,
    Channel,
    Contact,
    ContactAssigned,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactRelaxed,
    ContactStateError,
    DuplicateIdError,
    Overflowed,
    QueueConfig,
    Queued,
    RefusalReason,
    Refused,
    RelaxationStep,
    RoutingConfigError,
    RoutingEngine,
    RoutingEvent,
    Strategy,
    UnknownQueueError,
)

VOICE = Channel.VOICE
LADDER = (RelaxationStep(30.0, 2), RelaxationStep(60.0, None))  # (0 s, level 3) is the queue's min_level


def add(
    eng: RoutingEngine, agent_id: str, skills: dict[str, int], langs: str = "en", at: float = 0.0
) -> None:
    eng.add_agent(AgentProfile(agent_id, skills, frozenset(langs.split()), {VOICE: 1}), at)
    eng.set_agent_state(agent_id, AgentState.AVAILABLE, at)


def call(contact_id: str, at: float = 0.0, language: str = "en") -> Contact:
    return Contact(contact_id, VOICE, at, language=language)


def kinds(events: list[RoutingEvent]) -> list[str]:
    return [type(e).__name__ for e in events if type(e).__name__ != "AgentStateChanged"]


def relaxing_engine(**queue: object) -> RoutingEngine:
    return RoutingEngine([QueueConfig("q", "billing", min_level=3, steps=LADDER, **queue)])  # type: ignore[arg-type]


# --- relaxation -------------------------------------------------------------------------


def test_the_ladder_starts_at_the_queues_min_level() -> None:
    queue = QueueConfig("q", "billing", min_level=3, steps=LADDER)
    assert queue.ladder == (RelaxationStep(0.0, 3), *LADDER)
    assert [queue.step_at(t) for t in (0, 29.9, 30, 59, 60, 1e9)] == [0, 0, 1, 1, 2, 2]


def test_steps_fire_at_their_instants_and_widen_the_pool() -> None:
    eng = relaxing_engine()
    add(eng, "level2", {"billing": 2})
    add(eng, "speaker", {"tech": 5})
    assert eng.enqueue(call("c"), "q", 100.0) == Queued("c", "q", 1, None)
    assert eng.next_deadline() == 130.0
    assert eng.tick(129.5) == []
    events = eng.tick(130.0)
    assert events[:2] == [
        ContactRelaxed("c", "q", 1, 2, 130.0),
        ContactAssigned("c", "q", "level2", 1, 2, False, 100.0, 130.0),
    ]
    assert eng.next_deadline() is None  # served: its 60 s step is moot


def test_the_last_step_waives_the_skill_but_not_the_language() -> None:
    eng = relaxing_engine()
    add(eng, "german", {"billing": 5}, langs="de")
    add(eng, "speaker", {"tech": 1})
    eng.enqueue(call("c"), "q", 0.0)
    assert kinds(eng.tick(30.0)) == ["ContactRelaxed"]
    events = eng.tick(60.0)
    assert kinds(events) == ["ContactRelaxed", "ContactAssigned"]
    assert [e.agent_id for e in events if isinstance(e, ContactAssigned)] == ["speaker"]


def test_a_late_tick_decides_as_if_on_time() -> None:
    eng = relaxing_engine()
    add(eng, "level2", {"billing": 2})
    eng.enqueue(call("c"), "q", 0.0)
    events = eng.tick(500.0)
    assert [(type(e).__name__, e.at) for e in events] == [
        ("ContactRelaxed", 30.0),
        ("ContactAssigned", 30.0),
        ("AgentStateChanged", 30.0),
    ]


def test_a_relaxed_contact_keeps_its_place() -> None:
    eng = relaxing_engine()
    eng.enqueue(call("first", at=0.0), "q", 0.0)
    eng.enqueue(call("second", at=10.0), "q", 10.0)
    eng.tick(35.0)  # first relaxed, second not yet
    assert [(w.contact.contact_id, w.position, w.step, w.min_level) for w in eng.waiting("q")] == [
        ("first", 1, 1, 2),
        ("second", 2, 0, 3),
    ]


def test_an_agent_freed_as_a_step_fires_sees_the_relaxed_contact() -> None:
    eng = RoutingEngine(
        [QueueConfig("q", "billing", min_level=3, steps=(RelaxationStep(30.0, 2),)), QueueConfig("t", "tech")]
    )
    eng.add_agent(
        AgentProfile("a", {"billing": 2, "tech": 1}, frozenset({"en"}), {VOICE: 1}, wrap_up_s=20.0), 0.0
    )
    eng.enqueue(call("older", at=0.0), "q", 0.0)  # needs level 3 until 30 s
    eng.set_agent_state("a", AgentState.AVAILABLE, 5.0)
    eng.enqueue(call("x", at=5.0), "t", 5.0)
    eng.accept("a", "x", 5.0)
    eng.release("a", "x", 10.0)  # wrap-up ends at 30, the instant "older" relaxes
    eng.enqueue(call("younger", at=10.0), "t", 10.0)
    events = eng.tick(30.0)
    assert [(e.contact_id, e.agent_id) for e in events if isinstance(e, ContactAssigned)] == [("older", "a")]


# --- maximum wait -----------------------------------------------------------------------


def test_after_the_maximum_wait_a_contact_overflows_and_keeps_its_age() -> None:
    eng = RoutingEngine(
        [QueueConfig("backup", "general"), QueueConfig("q", "billing", max_wait_s=45.0, overflow_to="backup")]
    )
    eng.enqueue(call("c", at=0.0), "q", 0.0)
    eng.enqueue(call("newer", at=20.0), "backup", 20.0)
    assert eng.next_deadline() == 45.0
    events = eng.tick(45.0)
    assert events == [
        ContactOverflowed("c", "q", "backup", 45.0, 45.0),
        ContactQueued("c", "backup", 1, None, 45.0, 45.0),
    ]
    assert eng.position("c") == 1  # arrived at 0, ahead of "newer" which arrived at 20
    stats = eng.statistics(45.0)
    assert (stats.queues["q"].overflowed, stats.queues["backup"].arrived) == (1, 2)


def test_an_overflow_can_be_served_at_once_in_the_target() -> None:
    eng = RoutingEngine(
        [QueueConfig("backup", "general"), QueueConfig("q", "billing", max_wait_s=45.0, overflow_to="backup")]
    )
    add(eng, "generalist", {"general": 1})
    eng.enqueue(call("c"), "q", 0.0)
    assert kinds(eng.tick(50.0)) == ["ContactOverflowed", "ContactAssigned"]


def test_without_an_overflow_queue_the_contact_is_offered_a_callback() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", max_wait_s=120.0)])
    eng.enqueue(call("c"), "q", 10.0)
    assert eng.tick(130.0) == [ContactCallbackOffered("c", "q", 120.0, 130.0)]
    with pytest.raises(ContactStateError, match="contact 'c' is not in the engine, expected waiting"):
        eng.position("c")
    assert eng.statistics(130.0).queues["q"].callbacks_offered == 1
    assert isinstance(eng.enqueue(call("c", at=0.0), "q", 140.0), Queued)  # the callback, re-enqueued


def test_relaxation_fires_before_the_maximum_wait_of_the_same_instant() -> None:
    eng = RoutingEngine(
        [QueueConfig("q", "billing", min_level=3, steps=(RelaxationStep(30.0, 2),), max_wait_s=30.0)]
    )
    add(eng, "level2", {"billing": 2})
    eng.enqueue(call("c"), "q", 0.0)
    assert kinds(eng.tick(30.0)) == ["ContactRelaxed", "ContactAssigned"]


def test_overflowing_into_a_full_queue_is_refused_there() -> None:
    eng = RoutingEngine(
        [
            QueueConfig("full", "general", max_length=0),
            QueueConfig("q", "billing", max_wait_s=10.0, overflow_to="full"),
        ]
    )
    eng.enqueue(call("c"), "q", 0.0)
    events = eng.tick(10.0)
    assert kinds(events) == ["ContactOverflowed", "ContactRefused"]
    assert events[1] == ContactRefused(
        "c", "full", RefusalReason.QUEUE_FULL, "queue 'full' is full: 0 of 0 places taken", 10.0
    )


# --- diversion on entry -----------------------------------------------------------------


def test_divert_on_entry_overflows_when_the_expected_wait_is_too_long() -> None:
    eng = RoutingEngine(
        [
            QueueConfig("backup", "general"),
            QueueConfig("q", "billing", max_wait_s=100.0, overflow_to="backup", divert_on_entry=True),
        ]
    )
    add(eng, "a", {"billing": 1})
    eng.enqueue(call("c0"), "q", 0.0)  # a is busy now; handle time 180 s by default
    assert eng.enqueue(call("c1"), "q", 1.0) == Overflowed(
        "c1", "q", "backup", Queued("c1", "backup", 1, None)
    )


def test_divert_on_entry_offers_a_callback_without_an_overflow_queue() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", max_wait_s=200.0, divert_on_entry=True)])
    add(eng, "a", {"billing": 1})
    eng.enqueue(call("c0"), "q", 0.0)
    assert eng.enqueue(call("c1"), "q", 1.0) == Queued("c1", "q", 1, 180.0)  # 180 <= 200: waits
    assert eng.enqueue(call("c2"), "q", 1.0) == CallbackOffered("c2", "q", 360.0)


# --- maximum length ---------------------------------------------------------------------


def test_a_full_queue_refuses_with_a_clear_reason() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", max_length=2)])
    eng.enqueue(call("c1"), "q", 0.0)
    eng.enqueue(call("c2"), "q", 0.0)
    assert eng.enqueue(call("c3"), "q", 0.0) == Refused(
        "c3", "q", RefusalReason.QUEUE_FULL, "queue 'q' is full: 2 of 2 places taken"
    )
    assert eng.statistics(0.0).queues["q"].refused == 1
    add(eng, "de", {"billing": 1}, langs="de")  # c1 and c2 cannot use it
    assert isinstance(eng.enqueue(call("c4", language="de"), "q", 1.0), Assigned)  # no need to wait


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_id": ""}, "bad queue_id"),
        ({"min_level": 0}, "bad min_level 0"),
        ({"strategy": "random"}, "bad strategy 'random'"),
        ({"steps": (RelaxationStep(0.0, 2),)}, r"bad steps\[0\].after_s 0.0: must be positive"),
        ({"steps": (RelaxationStep(30.0, 3),)}, r"bad steps\[0\].min_level 3: must loosen"),
        ({"steps": (RelaxationStep(30.0, 2), RelaxationStep(20.0, 1))}, "must exceed the step before"),
        ({"steps": (RelaxationStep(30.0, None), RelaxationStep(60.0, 1))}, "must loosen the step before"),
        ({"steps": (RelaxationStep(30.0, 7),)}, "from 1 to 5"),
        ({"steps": ((30.0, 2),)}, r"bad steps\[0\] \(30.0, 2\): must be a RelaxationStep"),
        ({"max_wait_s": 0.0}, "bad max_wait_s 0.0: must be positive"),
        ({"overflow_to": "x"}, "need a maximum wait"),
        ({"divert_on_entry": True}, "need a maximum wait"),
        ({"max_wait_s": 5.0, "overflow_to": "q"}, "cannot overflow into itself"),
        ({"max_length": -1}, "bad max_length -1"),
        ({"service_level_s": 0}, "bad service_level_s 0"),
        ({"inquiry_bands": {"x": 1.5}}, "whole number"),
    ],
)
def test_queue_configs_are_validated(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"queue_id": "q", "skill": "billing", "min_level": 3}
    with pytest.raises(RoutingConfigError, match=message):
        QueueConfig(**{**args, **kwargs})  # type: ignore[arg-type]  # deliberately bad values


def test_overflow_targets_are_registered_first_so_chains_cannot_loop() -> None:
    with pytest.raises(RoutingConfigError, match="bad overflow_to 'b': register the target queue first"):
        RoutingEngine([QueueConfig("a", "x", max_wait_s=5.0, overflow_to="b"), QueueConfig("b", "x")])
    eng = RoutingEngine([QueueConfig("q", "x")])
    with pytest.raises(DuplicateIdError, match="queue 'q' already exists"):
        eng.add_queue(QueueConfig("q", "y"))
    with pytest.raises(UnknownQueueError, match="unknown queue 'nope'"):
        eng.enqueue(call("c"), "nope", 0.0)
    assert eng.queue("q").strategy is Strategy.LONGEST_IDLE
