"""Worked examples: which agent a contact gets (strategies, affinity) and which contact goes first."""

from __future__ import annotations

import pytest

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    Assigned,
    Channel,
    Contact,
    ContactAssigned,
    QueueConfig,
    Queued,
    RoutingConfig,
    RoutingEngine,
    RoutingEvent,
    Strategy,
    VipTier,
)

VOICE, CHAT = Channel.VOICE, Channel.CHAT


def add(
    eng: RoutingEngine,
    agent_id: str,
    *,
    level: int = 3,
    skill: str = "billing",
    langs: str = "en",
    chat: int = 0,
    at: float = 0.0,
    available: bool = True,
) -> None:
    capacity = {VOICE: 1, CHAT: chat} if chat else {VOICE: 1}
    eng.add_agent(AgentProfile(agent_id, {skill: level}, frozenset(langs.split()), capacity), at)
    if available:
        eng.set_agent_state(agent_id, AgentState.AVAILABLE, at)


def call(contact_id: str, at: float = 0.0, **kwargs: object) -> Contact:
    kwargs.setdefault("language", "en")
    channel = kwargs.pop("channel", VOICE)
    return Contact(contact_id, channel, at, **kwargs)  # type: ignore[arg-type]  # test shorthand


def agent_of(decision: object) -> str:
    assert isinstance(decision, Assigned), decision
    return decision.agent_id


def assigned(events: list[RoutingEvent]) -> list[tuple[str, str]]:
    return [(e.contact_id, e.agent_id) for e in events if isinstance(e, ContactAssigned)]


def finish(eng: RoutingEngine, agent_id: str, contact_id: str, now: float) -> None:
    """Accept, release, and end wrap-up: the agent is idle again from `now`."""
    eng.accept(agent_id, contact_id, now)
    eng.release(agent_id, contact_id, now)
    eng.set_agent_state(agent_id, AgentState.AVAILABLE, now)


# --- strategies -------------------------------------------------------------------------


def test_longest_idle_picks_the_agent_idle_the_longest() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", strategy=Strategy.LONGEST_IDLE)])
    add(eng, "b", at=1.0)
    add(eng, "a", at=2.0)
    add(eng, "c", at=3.0)
    assert agent_of(eng.enqueue(call("c1"), "q", 10.0)) == "b"
    finish(eng, "b", "c1", 11.0)  # b is idle since 11 now, a since 2
    assert agent_of(eng.enqueue(call("c2"), "q", 12.0)) == "a"
    assert agent_of(eng.enqueue(call("c3"), "q", 12.0)) == "c"
    assert agent_of(eng.enqueue(call("c4"), "q", 12.0)) == "b"


def test_least_contacts_picks_the_agent_who_handled_fewest_then_longest_idle() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", strategy=Strategy.LEAST_CONTACTS)])
    add(eng, "a", at=1.0)
    for n in range(2):
        assert agent_of(eng.enqueue(call(f"warm-a{n}"), "q", 1.0)) == "a"
        finish(eng, "a", f"warm-a{n}", 1.0)
    add(eng, "b", at=2.0)
    assert agent_of(eng.enqueue(call("warm-b"), "q", 2.0)) == "b"  # 0 handled beats 2
    finish(eng, "b", "warm-b", 2.0)
    add(eng, "c", at=3.0)
    assert [eng.agent(x).contacts_handled for x in "abc"] == [2, 1, 0]
    picks = [agent_of(eng.enqueue(call(f"c{n}"), "q", 20.0)) for n in range(3)]
    assert picks == ["c", "b", "a"]  # longest idle would have given a, b, c


def test_least_contacts_breaks_ties_by_longest_idle() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", strategy=Strategy.LEAST_CONTACTS)])
    add(eng, "early", at=1.0)
    add(eng, "late", at=5.0)
    assert agent_of(eng.enqueue(call("c1"), "q", 10.0)) == "early"


def test_round_robin_rotates_in_registration_order_whoever_is_idle_longest() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", strategy=Strategy.ROUND_ROBIN)])
    for agent_id in "abc":
        add(eng, agent_id, available=False)
    for at, agent_id in enumerate("cba", start=1):  # c is idle longest
        eng.set_agent_state(agent_id, AgentState.AVAILABLE, float(at))
    served = []
    for n in range(5):
        agent_id = agent_of(eng.enqueue(call(f"c{n}"), "q", 10.0 + n))
        served.append(agent_id)
        finish(eng, agent_id, f"c{n}", 10.0 + n)
    assert served == ["a", "b", "c", "a", "b"]


def test_round_robin_skips_agents_that_are_not_routable() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", strategy=Strategy.ROUND_ROBIN)])
    for agent_id in "abc":
        add(eng, agent_id)
    assert agent_of(eng.enqueue(call("c0"), "q", 1.0)) == "a"
    eng.set_agent_state("b", AgentState.BREAK, 1.0, reason="lunch")
    assert agent_of(eng.enqueue(call("c1"), "q", 2.0)) == "c"
    finish(eng, "a", "c0", 3.0)
    assert agent_of(eng.enqueue(call("c2"), "q", 4.0)) == "a"  # wraps around past the end


def test_skill_weighted_picks_the_most_skilled_then_longest_idle() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", min_level=2, strategy=Strategy.SKILL_WEIGHTED)])
    add(eng, "novice", level=2, at=1.0)
    add(eng, "good", level=4, at=2.0)
    add(eng, "expert-early", level=5, at=3.0)
    add(eng, "expert-late", level=5, at=4.0)
    picks = [agent_of(eng.enqueue(call(f"c{n}"), "q", 10.0)) for n in range(4)]
    assert picks == ["expert-early", "expert-late", "good", "novice"]


def test_longest_idle_ignores_skill_level_above_the_minimum() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", min_level=2)])
    add(eng, "unqualified", level=1, at=0.0)
    add(eng, "novice", level=2, at=1.0)
    add(eng, "expert", level=5, at=2.0)
    assert agent_of(eng.enqueue(call("c1"), "q", 10.0)) == "novice"


def test_multitasking_agents_are_loaded_evenly() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a", chat=3, at=1.0)
    add(eng, "b", chat=3, at=2.0)
    picks = [agent_of(eng.enqueue(call(f"c{n}", channel=CHAT), "q", 10.0)) for n in range(4)]
    assert picks == ["a", "b", "a", "b"]


def test_language_and_channel_are_hard_requirements() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "en", langs="en", at=1.0)
    add(eng, "de", langs="de", at=2.0)
    assert agent_of(eng.enqueue(call("c1", language="de"), "q", 10.0)) == "de"
    assert isinstance(eng.enqueue(call("c2", language="fr"), "q", 10.0), Queued)
    assert isinstance(eng.enqueue(call("c3", channel=CHAT), "q", 10.0), Queued)  # nobody has chat slots
    assert agent_of(eng.enqueue(call("c4", language=None), "q", 10.0)) == "en"


# --- affinity ---------------------------------------------------------------------------


def test_the_preferred_agent_wins_when_eligible_and_free() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a", at=1.0)
    add(eng, "b", at=2.0)
    decision = eng.enqueue(call("c1", preferred_agent_id="b"), "q", 10.0)
    assert decision == Assigned("c1", "q", "b", by_affinity=True)


def test_a_busy_or_ineligible_preferred_agent_is_skipped() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing", min_level=3)])
    add(eng, "busy", at=0.0)
    add(eng, "weak", level=2, at=0.0)
    add(eng, "a", at=1.0)
    eng.enqueue(call("c0"), "q", 5.0)  # busy was idle longest, so it takes c0
    assert eng.enqueue(call("c1", preferred_agent_id="busy"), "q", 6.0) == Assigned("c1", "q", "a", False)
    eng.enqueue(call("c2", preferred_agent_id="weak"), "q", 7.0)
    assert eng.agent("weak").state is AgentState.AVAILABLE
    assert eng.enqueue(call("c3", preferred_agent_id="ghost"), "q", 8.0) == Queued("c3", "q", 2, 180.0)


def test_a_freed_agent_serves_the_contact_waiting_for_it_before_older_ones() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a")
    eng.enqueue(call("c0"), "q", 1.0)
    eng.enqueue(call("older", at=2.0), "q", 2.0)
    eng.enqueue(call("fan", at=3.0, preferred_agent_id="a"), "q", 3.0)
    eng.accept("a", "c0", 4.0)
    eng.release("a", "c0", 5.0)
    events = eng.set_agent_state("a", AgentState.AVAILABLE, 6.0)
    assert [e for e in events if isinstance(e, ContactAssigned)] == [
        ContactAssigned("fan", "q", "a", 0, 1, True, 3.0, 6.0)
    ]


# --- the ordering rule ------------------------------------------------------------------


def queued_then_served(eng: RoutingEngine, contacts: list[Contact], now: float) -> list[str]:
    """Queue `contacts` with every agent busy, then free agent 'a' repeatedly; return the service order."""
    for contact in contacts:
        eng.enqueue(contact, "q", now)
    served = []
    while eng.waiting("q"):
        events = eng.set_agent_state("a", AgentState.AVAILABLE, now)
        ((contact_id, _),) = assigned(events)
        served.append(contact_id)
        eng.decline("a", contact_id, now, reason="test")  # back on break; drop the contact for the test
        eng.abandon(contact_id, now)
    return served


def test_fifo_within_a_band_and_tier() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a", available=False)
    contacts = [call("late", at=5.0), call("early", at=1.0), call("middle", at=3.0)]
    assert queued_then_served(eng, contacts, 10.0) == ["early", "middle", "late"]


def test_a_higher_band_goes_first_whatever_its_age() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a", available=False)
    contacts = [
        call("old", at=0.0),
        call("urgent", at=9.0, band=1),
        call("platinum", at=1.0, vip=VipTier.PLATINUM),
    ]
    assert queued_then_served(eng, contacts, 10.0) == ["urgent", "platinum", "old"]


@pytest.mark.parametrize(
    ("tier", "arrived_at", "first"),
    [
        (VipTier.PLATINUM, 59.0, "vip"),  # credited arrival -1 beats 0
        (VipTier.PLATINUM, 61.0, "standard"),  # credited arrival 1 loses to 0
        (VipTier.GOLD, 29.0, "vip"),
        (VipTier.GOLD, 31.0, "standard"),
        (VipTier.SILVER, 14.0, "vip"),
        (VipTier.STANDARD, 0.0, "standard"),  # equal: admission order
    ],
)
def test_vip_tiers_buy_a_head_start(tier: VipTier, arrived_at: float, first: str) -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "a", available=False)
    contacts = [call("standard", at=0.0), call("vip", at=arrived_at, vip=tier)]
    assert queued_then_served(eng, contacts, 100.0)[0] == first


def test_vip_credits_are_configurable() -> None:
    config = RoutingConfig(vip_credit_s={VipTier.GOLD: 500.0})
    eng = RoutingEngine([QueueConfig("q", "billing")], config=config)
    add(eng, "a", available=False)
    contacts = [
        call("standard", at=0.0),
        call("platinum", at=10.0, vip=VipTier.PLATINUM),
        call("gold", at=400.0),
    ]
    contacts[2] = call("gold", at=400.0, vip=VipTier.GOLD)
    assert queued_then_served(eng, contacts, 1000.0) == ["gold", "standard", "platinum"]


def test_inquiry_bands_raise_but_never_lower_a_band() -> None:
    queue = QueueConfig("q", "billing", inquiry_bands={"outage": 2, "billing": -1})
    assert queue.band_of(call("x", inquiry_type="outage")) == 2
    assert queue.band_of(call("x", inquiry_type="billing", band=1)) == 1
    assert queue.band_of(call("x", inquiry_type="other", band=1)) == 1
    eng = RoutingEngine([queue])
    add(eng, "a", available=False)
    contacts = [
        call("plain", at=0.0),
        call("outage", at=5.0, inquiry_type="outage"),
        call("vip", band=1, at=9.0),
    ]
    assert queued_then_served(eng, contacts, 10.0) == ["outage", "vip", "plain"]


def test_positions_follow_the_ordering_rule() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    assert isinstance(eng.enqueue(call("a", at=5.0), "q", 10.0), Queued)
    assert eng.enqueue(call("b", at=1.0), "q", 10.0) == Queued("b", "q", 1, None)
    assert eng.enqueue(call("c", at=0.0, band=1), "q", 10.0) == Queued("c", "q", 1, None)
    assert [eng.position(x) for x in "abc"] == [3, 2, 1]
    assert [w.contact.contact_id for w in eng.waiting("q")] == ["c", "b", "a"]


def test_a_freed_agent_takes_the_first_contact_across_its_queues() -> None:
    eng = RoutingEngine([QueueConfig("billing", "billing"), QueueConfig("tech", "tech")])
    eng.add_agent(AgentProfile("a", {"billing": 3, "tech": 3}, frozenset({"en"}), {VOICE: 1}), 0.0)
    eng.enqueue(call("billing-late", at=5.0), "billing", 10.0)
    eng.enqueue(call("tech-early", at=2.0), "tech", 10.0)
    eng.enqueue(call("billing-early", at=3.0), "billing", 10.0)
    events = eng.set_agent_state("a", AgentState.AVAILABLE, 11.0)
    assert assigned(events) == [("tech-early", "a")]


def test_a_new_contact_never_takes_an_agent_an_older_one_could_use() -> None:
    eng = RoutingEngine([QueueConfig("q", "billing")])
    add(eng, "de", langs="de", available=False)
    eng.enqueue(call("old-de", at=0.0, language="de"), "q", 1.0)
    eng.enqueue(call("old-en", at=0.0), "q", 1.0)
    events = eng.set_agent_state("de", AgentState.AVAILABLE, 2.0)
    assert assigned(events) == [("old-de", "de")]
    add(eng, "en", at=3.0)  # becomes available: takes old-en at once
    assert eng.waiting("q") == ()
