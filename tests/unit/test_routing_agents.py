"""The agent state machine, agent profiles and per-channel capacity."""

from __future__ import annotations

import pytest

from edge_node.core.routing import (
    REQUESTABLE,
    AgentProfile,
    AgentState,
    AgentStateChanged,
    BreakReasonError,
    Channel,
    Contact,
    ContactStateError,
    DuplicateIdError,
    IllegalTransitionError,
    QueueConfig,
    RoutingConfigError,
    RoutingEngine,
    RoutingError,
    UnknownAgentError,
)
from edge_node.errors import EdgeNodeError

VOICE, CHAT = Channel.VOICE, Channel.CHAT
S = AgentState


def profile(agent_id: str = "a", *, wrap_up_s: float | None = None, chat: int = 0) -> AgentProfile:
    capacity = {VOICE: 1} if not chat else {VOICE: 1, CHAT: chat}
    return AgentProfile(agent_id, {"billing": 3}, frozenset({"en"}), capacity, wrap_up_s=wrap_up_s)


def engine(*profiles: AgentProfile) -> RoutingEngine:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    for p in profiles or (profile(),):
        eng.add_agent(p, 0.0)
    return eng


def call(contact_id: str, channel: Channel = VOICE, at: float = 0.0) -> Contact:
    return Contact(contact_id, channel, at, language="en")


def reach(eng: RoutingEngine, state: AgentState, now: float = 1.0) -> None:
    """Drive agent 'a' of `engine()` into `state` by legal moves."""
    if state is S.OFFLINE:
        return
    if state is S.BREAK:
        eng.set_agent_state("a", S.BREAK, now, reason="lunch")
        return
    eng.set_agent_state("a", S.AVAILABLE, now)
    if state is S.AVAILABLE:
        return
    eng.enqueue(call("c"), "q", now)
    if state is S.RESERVED:
        return
    eng.accept("a", "c", now)
    if state is S.ON_CONTACT:
        return
    eng.release("a", "c", now)
    assert state is S.WRAP_UP


# --- the state machine ------------------------------------------------------------------


def test_an_agent_starts_offline_and_idle_since_registration() -> None:
    status = engine().agent("a")
    assert (status.state, status.presence, status.idle_since, status.contacts_handled) == (
        S.OFFLINE,
        S.OFFLINE,
        0,
        0,
    )


def test_the_requestable_table() -> None:
    assert {
        S.OFFLINE: {S.AVAILABLE, S.BREAK},
        S.AVAILABLE: {S.BREAK, S.OFFLINE},
        S.RESERVED: {S.AVAILABLE, S.BREAK},
        S.ON_CONTACT: {S.AVAILABLE, S.BREAK},
        S.WRAP_UP: {S.AVAILABLE, S.BREAK, S.OFFLINE},
        S.BREAK: {S.AVAILABLE, S.BREAK, S.OFFLINE},
    } == REQUESTABLE


LEGAL = [(current, target) for current in S for target in REQUESTABLE[current]]
ILLEGAL = [(current, target) for current in S for target in S if target not in REQUESTABLE[current]]


@pytest.mark.parametrize(("current", "target"), LEGAL, ids=lambda s: str(s))
def test_every_legal_request_is_accepted(current: AgentState, target: AgentState) -> None:
    eng = engine()
    reach(eng, current)
    reason = "training" if target is S.BREAK else None
    eng.set_agent_state("a", target, 2.0, reason=reason)
    status = eng.agent("a")
    assert status.presence is target
    if current in (S.RESERVED, S.ON_CONTACT):  # the request waits for the work to end
        assert status.state is current
    else:
        assert status.state is target


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=lambda s: str(s))
def test_every_illegal_request_is_refused_and_changes_nothing(
    current: AgentState, target: AgentState
) -> None:
    eng = engine()
    reach(eng, current)
    before = eng.agent("a")
    reason = "training" if target is S.BREAK else None
    with pytest.raises(IllegalTransitionError) as caught:
        eng.set_agent_state("a", target, 2.0, reason=reason)
    assert (caught.value.current, caught.value.requested) == (current, target)
    assert caught.value.allowed == tuple(sorted(REQUESTABLE[current]))
    assert eng.agent("a") == before


def test_the_illegal_transition_message_names_current_requested_and_allowed() -> None:
    eng = engine()
    with pytest.raises(IllegalTransitionError) as caught:
        eng.set_agent_state("a", S.ON_CONTACT, 1.0)
    assert str(caught.value) == (
        "agent 'a' cannot move from offline to on_contact; allowed from offline: available, break"
    )
    assert isinstance(caught.value, RoutingError)
    assert isinstance(caught.value, EdgeNodeError)


def test_logging_off_with_a_contact_in_hand_is_refused() -> None:
    eng = engine()
    reach(eng, S.ON_CONTACT)
    with pytest.raises(IllegalTransitionError, match="from on_contact to offline"):
        eng.set_agent_state("a", S.OFFLINE, 2.0)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_break_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(BreakReasonError, match="a break needs a non-empty reason"):
        engine().set_agent_state("a", S.BREAK, 1.0, reason=reason)


def test_only_a_break_takes_a_reason() -> None:
    with pytest.raises(BreakReasonError, match="only a break takes a reason"):
        engine().set_agent_state("a", S.AVAILABLE, 1.0, reason="back")


def test_a_break_records_its_reason_and_a_new_reason_is_a_change() -> None:
    eng = engine()
    assert eng.set_agent_state("a", S.BREAK, 1.0, reason="lunch") == [
        AgentStateChanged("a", S.OFFLINE, S.BREAK, "lunch", 1.0)
    ]
    assert eng.set_agent_state("a", S.BREAK, 2.0, reason="coaching") == [
        AgentStateChanged("a", S.BREAK, S.BREAK, "coaching", 2.0)
    ]
    assert eng.agent("a").break_reason == "coaching"
    eng.set_agent_state("a", S.AVAILABLE, 3.0)
    assert eng.agent("a").break_reason is None


def test_the_work_states_follow_offer_accept_release() -> None:
    eng = engine()
    eng.set_agent_state("a", S.AVAILABLE, 1.0)
    eng.enqueue(call("c"), "q", 2.0)
    assert eng.tick(2.0) == [AgentStateChanged("a", S.AVAILABLE, S.RESERVED, None, 2.0)]
    assert eng.accept("a", "c", 3.0) == [AgentStateChanged("a", S.RESERVED, S.ON_CONTACT, None, 3.0)]
    events = eng.release("a", "c", 10.0)
    assert events[-1] == AgentStateChanged("a", S.ON_CONTACT, S.WRAP_UP, None, 10.0)
    assert eng.agent("a").contacts_handled == 1


def test_wrap_up_without_a_timer_lasts_until_the_agent_asks() -> None:
    eng = engine()
    reach(eng, S.WRAP_UP)
    assert eng.next_deadline() is None
    assert eng.tick(1000.0) == []
    assert eng.agent("a").state is S.WRAP_UP
    eng.set_agent_state("a", S.AVAILABLE, 1001.0)
    assert eng.agent("a").idle_since == 1001.0


def test_a_timed_wrap_up_ends_by_itself() -> None:
    eng = engine(profile(wrap_up_s=30.0))
    reach(eng, S.WRAP_UP, now=5.0)
    assert eng.next_deadline() == 35.0
    assert eng.tick(34.9) == []
    assert eng.tick(40.0) == [AgentStateChanged("a", S.WRAP_UP, S.AVAILABLE, None, 35.0)]
    assert eng.agent("a").idle_since == 35.0  # the instant it became idle, not the late tick


def test_ending_wrap_up_early_cancels_its_timer() -> None:
    eng = engine(profile(wrap_up_s=30.0))
    reach(eng, S.WRAP_UP, now=5.0)
    eng.set_agent_state("a", S.BREAK, 6.0, reason="lunch")
    assert eng.next_deadline() is None
    assert eng.tick(100.0) == []
    assert eng.agent("a").state is S.BREAK


def test_a_zero_wrap_up_ends_within_the_release() -> None:
    eng = engine(profile(wrap_up_s=0.0))
    reach(eng, S.ON_CONTACT, now=5.0)
    events = eng.release("a", "c", 9.0)
    states = [(e.before, e.after) for e in events if isinstance(e, AgentStateChanged)]
    assert states == [(S.ON_CONTACT, S.WRAP_UP), (S.WRAP_UP, S.AVAILABLE)]


def test_a_pending_break_stops_offers_and_applies_after_wrap_up() -> None:
    eng = engine(profile(wrap_up_s=10.0))
    reach(eng, S.ON_CONTACT)
    assert eng.set_agent_state("a", S.BREAK, 2.0, reason="lunch") == []  # still on the contact
    assert eng.agent("a").presence is S.BREAK
    eng.release("a", "c", 3.0)
    assert eng.tick(13.0) == [AgentStateChanged("a", S.WRAP_UP, S.BREAK, "lunch", 13.0)]


def test_an_offer_withdrawn_keeps_the_agents_idle_time() -> None:
    eng = engine()
    eng.set_agent_state("a", S.AVAILABLE, 1.0)
    eng.enqueue(call("c"), "q", 5.0)
    eng.abandon("c", 6.0)
    assert eng.agent("a").state is S.AVAILABLE
    assert eng.agent("a").idle_since == 1.0


def test_decline_puts_the_agent_on_break_with_the_reason() -> None:
    eng = engine()
    reach(eng, S.RESERVED)
    eng.decline("a", "c", 2.0, reason="no answer")
    status = eng.agent("a")
    assert (status.state, status.break_reason) == (S.BREAK, "no answer")
    assert eng.position("c") == 1


# --- capacity ---------------------------------------------------------------------------


def test_a_chat_agent_takes_up_to_its_capacity_and_voice_is_separate() -> None:
    eng = engine(profile(chat=3))
    eng.set_agent_state("a", S.AVAILABLE, 1.0)
    decisions = [eng.enqueue(call(f"chat{i}", CHAT), "q", 2.0) for i in range(4)]
    assert [type(d).__name__ for d in decisions] == ["Assigned", "Assigned", "Assigned", "Queued"]
    status = eng.agent("a")
    assert status.load == {VOICE: 0, CHAT: 3}
    assert status.routable == {VOICE}
    assert type(eng.enqueue(call("v"), "q", 3.0)).__name__ == "Assigned"
    assert eng.agent("a").routable == frozenset()


def test_closing_one_chat_of_three_takes_the_next_without_wrap_up() -> None:
    eng = engine(profile(chat=2))
    eng.set_agent_state("a", S.AVAILABLE, 1.0)
    for i in range(3):
        eng.enqueue(call(f"chat{i}", CHAT), "q", 2.0)
    eng.accept("a", "chat0", 3.0)
    events = eng.release("a", "chat0", 4.0)
    assert [type(e).__name__ for e in events] == ["ContactReleased", "AgentStateChanged", "ContactAssigned"]
    assert events[1] == AgentStateChanged(
        "a", S.ON_CONTACT, S.RESERVED, None, 4.0
    )  # chat1 rings, none connected
    assert eng.agent("a").contacts == ("chat1", "chat2")


# --- profiles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent_id": ""}, "bad agent_id '': must be a non-empty string"),
        ({"skills": {"billing": 0}}, "level of skill 'billing'"),
        ({"skills": {"billing": 6}}, "must be a whole number from 1 to 5"),
        ({"skills": {"billing": True}}, "must be a whole number from 1 to 5"),
        ({"capacity": {VOICE: -1}}, "capacity for voice"),
        ({"capacity": {VOICE: 0}}, "an agent needs at least one slot"),
        ({"capacity": {"fax": 1}}, "bad capacity channel 'fax'"),
        ({"wrap_up_s": -1.0}, "bad wrap_up_s -1.0: must not be negative"),
    ],
)
def test_profiles_are_validated(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "agent_id": "a",
        "skills": {"billing": 3},
        "languages": frozenset({"en"}),
        "capacity": {VOICE: 1},
    }
    with pytest.raises(RoutingConfigError, match=message):
        AgentProfile(**{**args, **kwargs})  # type: ignore[arg-type]  # deliberately bad values


def test_a_profile_drops_empty_channels_and_freezes_its_tables() -> None:
    p = AgentProfile("a", {"x": 2}, frozenset({"en"}), {VOICE: 1, CHAT: 0})
    assert dict(p.capacity) == {VOICE: 1}
    with pytest.raises(TypeError):
        p.skills["x"] = 5  # type: ignore[index]  # a read-only mapping


def test_eligibility_is_channel_language_and_level() -> None:
    p = AgentProfile("a", {"billing": 3}, frozenset({"en", "de"}), {VOICE: 1})
    assert p.eligible(VOICE, "de", "billing", 3)
    assert p.eligible(VOICE, None, "billing", 1)
    assert not p.eligible(VOICE, "de", "billing", 4)
    assert not p.eligible(VOICE, "fr", "billing", 1)
    assert not p.eligible(CHAT, "en", "billing", 1)
    assert not p.eligible(VOICE, "en", "tech", 1)
    assert p.eligible(VOICE, "en", "tech", None)  # a step that waives the skill


def test_agent_ids_are_unique_and_unknown_ones_are_named() -> None:
    eng = engine()
    with pytest.raises(DuplicateIdError, match="agent 'a' already exists"):
        eng.add_agent(profile(), 1.0)
    with pytest.raises(UnknownAgentError, match="unknown agent 'zed'"):
        eng.set_agent_state("zed", S.AVAILABLE, 1.0)


def test_accepting_what_was_not_offered_is_refused() -> None:
    eng = engine(profile("a"), profile("b"))
    eng.set_agent_state("a", S.AVAILABLE, 1.0)
    eng.enqueue(call("c"), "q", 1.0)
    with pytest.raises(
        ContactStateError, match="contact 'c' is offered to agent 'a', expected offered to agent 'b'"
    ):
        eng.accept("b", "c", 2.0)
    with pytest.raises(ContactStateError, match="is offered to agent 'a', expected connected to agent 'a'"):
        eng.release("a", "c", 2.0)
    eng.accept("a", "c", 2.0)
    with pytest.raises(ContactStateError, match="is connected to agent 'a', expected offered"):
        eng.decline("a", "c", 3.0)
    with pytest.raises(ContactStateError, match="is connected to agent 'a', expected waiting or offered"):
        eng.abandon("c", 3.0)


def test_states_may_be_requested_by_their_string_values() -> None:
    eng = engine()
    eng.set_agent_state("a", "available", 1.0)  # type: ignore[arg-type]  # what an HTTP adapter may pass
    assert eng.agent("a").presence is S.AVAILABLE
    with pytest.raises(IllegalTransitionError, match="cannot move from available to lunch"):
        eng.set_agent_state("a", "lunch", 2.0)  # type: ignore[arg-type]  # not a state at all


def test_a_decline_needs_a_reason_too() -> None:
    eng = engine()
    reach(eng, S.RESERVED)
    with pytest.raises(BreakReasonError):
        eng.decline("a", "c", 2.0, reason=" ")
    assert eng.agent("a").state is S.RESERVED
