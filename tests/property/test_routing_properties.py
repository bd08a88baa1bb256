"""Laws of the routing engine, over random agents, queues, contacts and event sequences.

Each example registers a few agents and queues (two skills, two languages, voice
and chat, random strategies, relaxation ladders, overflow, limits), then plays a
random sequence of arrivals, state requests, accepts, declines, releases,
abandons and pauses, ticking at every call as an adapter would. A shadow model
built only from the decisions and events checks every offer as it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    AgentStateChanged,
    Assigned,
    CallbackOffered,
    Channel,
    Contact,
    ContactAbandoned,
    ContactAssigned,
    ContactCallbackOffered,
    ContactDeclined,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactRelaxed,
    ContactReleased,
    Decision,
    Overflowed,
    QueueConfig,
    Queued,
    Refused,
    RelaxationStep,
    RoutingConfig,
    RoutingEngine,
    RoutingError,
    RoutingEvent,
    Strategy,
    VipTier,
)

SKILLS = ("s0", "s1")
LANGS = ("en", "de")
CHANNELS = (Channel.VOICE, Channel.CHAT)
FAST = settings(max_examples=60, deadline=None)

# --- worlds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    profiles: tuple[AgentProfile, ...]
    queues: tuple[QueueConfig, ...]
    config: RoutingConfig
    available: frozenset[str]  # agents that log in at 0


@st.composite
def profiles(draw: st.DrawFn, agent_id: str) -> AgentProfile:
    skills = draw(st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5), min_size=1, max_size=2))
    langs = draw(st.frozensets(st.sampled_from(LANGS), min_size=1, max_size=2))
    voice, chat = draw(st.integers(0, 1)), draw(st.integers(0, 3))
    capacity = {Channel.VOICE: voice or int(not chat), Channel.CHAT: chat}
    wrap_up_s = draw(st.one_of(st.none(), st.integers(0, 15).map(float)))
    return AgentProfile(agent_id, skills, langs, capacity, wrap_up_s=wrap_up_s)


@st.composite
def queues(draw: st.DrawFn, index: int) -> QueueConfig:
    min_level = draw(st.sampled_from([1, 1, 2, 3, 5]))
    steps: list[RelaxationStep] = []
    level: int | None = min_level
    after = 0
    for _ in range(draw(st.integers(0, 2))):
        if level is None:
            break
        after += draw(st.integers(1, 40))
        level = draw(st.sampled_from([*range(1, level), None]))
        steps.append(RelaxationStep(float(after), level))
    max_wait_s = draw(st.one_of(st.none(), st.integers(5, 60).map(float)))
    overflow_to = None
    if max_wait_s is not None and index and draw(st.booleans()):
        overflow_to = f"q{draw(st.integers(0, index - 1))}"
    return QueueConfig(
        f"q{index}",
        draw(st.sampled_from(SKILLS)),
        min_level=min_level,
        strategy=draw(st.sampled_from(Strategy)),
        steps=tuple(steps),
        max_wait_s=max_wait_s,
        overflow_to=overflow_to,
        max_length=draw(st.one_of(st.none(), st.integers(0, 4))),
        divert_on_entry=max_wait_s is not None and draw(st.booleans()),
    )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_agents, n_queues = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    agents = tuple(draw(profiles(f"a{i}")) for i in range(n_agents))
    queue_list = tuple(draw(queues(i)) for i in range(n_queues))
    credits = draw(
        st.one_of(st.none(), st.dictionaries(st.sampled_from(VipTier), st.integers(0, 30).map(float)))
    )
    config = RoutingConfig() if credits is None else RoutingConfig(vip_credit_s=credits)
    available = draw(st.frozensets(st.sampled_from([p.agent_id for p in agents])))
    return World(agents, queue_list, config, available)


@st.composite
def crowded_worlds(draw: st.DrawFn) -> World:
    """One queue every agent qualifies for, a few agents all logged off: contacts pile up, then compete."""
    agents = tuple(
        AgentProfile(
            f"a{i}", {"s0": 3}, draw(st.frozensets(st.sampled_from(LANGS), min_size=1)), {Channel.VOICE: 1}
        )
        for i in range(draw(st.integers(1, 3)))
    )
    queue = QueueConfig("q0", "s0", strategy=draw(st.sampled_from(Strategy)))
    return World(agents, (queue,), RoutingConfig(), frozenset())


# --- operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueue:
    dt: int
    queue: int
    channel: Channel
    language: str | None
    vip: VipTier
    band: int
    back: int  # arrived this long before now
    preferred: int | None


@dataclass(frozen=True)
class Request:
    dt: int
    agent: int
    state: AgentState


@dataclass(frozen=True)
class Act:  # accept, decline or release one of the agent's contacts; or abandon any live contact
    dt: int
    verb: str
    agent: int
    pick: int


@dataclass(frozen=True)
class Wait:
    dt: int


Op = Enqueue | Request | Act | Wait
dts = st.integers(0, 15)
VERBS = ("accept", "accept", "release", "release", "decline", "abandon")
arrivals = st.builds(
    Enqueue,
    dts,
    st.integers(0, 2),
    st.sampled_from(CHANNELS),
    st.sampled_from([None, None, *LANGS]),
    st.sampled_from([VipTier.STANDARD, VipTier.STANDARD, *VipTier]),  # equal tiers make FIFO bite
    st.sampled_from([0, 0, 0, 1]),
    st.integers(0, 20),
    st.one_of(st.none(), st.integers(0, 5)),
)
requests = st.builds(
    Request,
    dts,
    st.integers(0, 5),
    st.sampled_from([AgentState.AVAILABLE, AgentState.AVAILABLE, *AgentState]),
)
acts = st.builds(Act, dts, st.sampled_from(VERBS), st.integers(0, 5), st.integers(0, 9))
ops = st.one_of(arrivals, arrivals, arrivals, requests, acts, acts, acts, st.builds(Wait, st.integers(0, 60)))
scripts = st.lists(ops, min_size=12, max_size=40)

# --- the shadow model -------------------------------------------------------------------


@dataclass
class Shadow:
    """What the decisions and events say, and the checks each offer must pass."""

    world: World
    presence: dict[str, AgentState] = field(default_factory=dict)
    wrapping: set[str] = field(default_factory=set)
    load: dict[tuple[str, Channel], int] = field(default_factory=dict)
    held: dict[str, tuple[str, Channel]] = field(default_factory=dict)
    waiting: dict[str, dict[str, tuple[Contact, float]]] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    assignments: int = 0

    def __post_init__(self) -> None:
        self.profile = {p.agent_id: p for p in self.world.profiles}
        self.queue = {q.queue_id: q for q in self.world.queues}
        self.waiting = {q.queue_id: {} for q in self.world.queues}
        self.presence = dict.fromkeys(self.profile, AgentState.OFFLINE)

    def routable(self, agent_id: str, channel: Channel) -> bool:
        cap = self.profile[agent_id].capacity.get(channel, 0)
        free = self.load.get((agent_id, channel), 0) < cap
        return self.presence[agent_id] is AgentState.AVAILABLE and agent_id not in self.wrapping and free

    def eligible(self, agent_id: str, contact: Contact, queue_id: str, enqueued_at: float, at: float) -> bool:
        queue = self.queue[queue_id]
        level = queue.ladder[queue.step_at(at - enqueued_at)].min_level
        return self.profile[agent_id].eligible(contact.channel, contact.language, queue.skill, level)

    def decided(self, decision: Decision, contact: Contact, now: float) -> None:
        if isinstance(decision, Assigned):
            self.assigned(contact, decision.queue_id, decision.agent_id, 0, now, now, decision.by_affinity)
        elif isinstance(decision, Queued):
            self.waiting[decision.queue_id][contact.contact_id] = (contact, now)
        elif isinstance(decision, Overflowed):
            self.decided(decision.outcome, contact, now)
        else:
            assert isinstance(decision, Refused | CallbackOffered)

    def assigned(
        self,
        contact: Contact,
        queue_id: str,
        agent_id: str,
        step: int,
        enqueued_at: float,
        at: float,
        affinity: bool,
    ) -> None:
        queue, cid = self.queue[queue_id], contact.contact_id
        self.waiting[queue_id].pop(cid, None)
        # eligible at the step in force, and free on the channel
        assert step == queue.step_at(at - enqueued_at), (cid, step, at, enqueued_at)
        assert self.eligible(agent_id, contact, queue_id, enqueued_at, at), (cid, agent_id)
        assert self.routable(agent_id, contact.channel), (cid, agent_id, self.presence[agent_id])
        assert affinity == (contact.preferred_agent_id == agent_id)
        # FIFO within band and tier: no older one the same agent could take now is left waiting
        if not affinity:
            for other, other_enqueued_at in self.waiting[queue_id].values():
                assert not (
                    other.band == contact.band
                    and other.vip == contact.vip
                    and other.arrival_at < contact.arrival_at
                    and self.eligible(agent_id, other, queue_id, other_enqueued_at, at)
                    and self.routable(agent_id, other.channel)
                ), f"{cid} served by {agent_id} before older {other.contact_id}"
        self.held[cid] = (agent_id, contact.channel)
        self.load[agent_id, contact.channel] = self.load.get((agent_id, contact.channel), 0) + 1
        assert self.load[agent_id, contact.channel] <= self.profile[agent_id].capacity[contact.channel]
        self.assignments += 1

    def unhold(self, contact_id: str) -> None:
        agent_id, channel = self.held.pop(contact_id)
        self.load[agent_id, channel] -= 1

    def saw(self, events: list[RoutingEvent]) -> None:  # one branch per event type
        for e in events:
            if isinstance(e, ContactAssigned):
                contact = self.contacts[e.contact_id]
                self.assigned(contact, e.queue_id, e.agent_id, e.step, e.enqueued_at, e.at, e.by_affinity)
            elif isinstance(e, ContactQueued):
                self.waiting[e.queue_id][e.contact_id] = (self.contacts[e.contact_id], e.enqueued_at)
            elif isinstance(e, ContactOverflowed):
                self.waiting[e.from_queue_id].pop(e.contact_id, None)
            elif isinstance(e, ContactCallbackOffered):
                self.waiting[e.queue_id].pop(e.contact_id, None)
            elif isinstance(e, ContactAbandoned):
                if self.waiting[e.queue_id].pop(e.contact_id, None) is None:
                    self.unhold(e.contact_id)
            elif isinstance(e, ContactDeclined | ContactReleased):
                self.unhold(e.contact_id)
            elif isinstance(e, AgentStateChanged):
                if e.after is AgentState.WRAP_UP:
                    self.wrapping.add(e.agent_id)
                elif e.before is AgentState.WRAP_UP:
                    self.wrapping.discard(e.agent_id)
            else:
                assert isinstance(e, ContactRelaxed | ContactRefused)


# --- running scripts --------------------------------------------------------------------


@dataclass
class Run:
    world: World
    tick_every_deadline: bool = False
    outputs: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = RoutingEngine(self.world.queues, config=self.world.config)
        self.shadow = Shadow(self.world)
        for profile in self.world.profiles:
            self.engine.add_agent(profile, 0.0)
            if profile.agent_id in self.world.available:
                self.observe(self.engine.set_agent_state(profile.agent_id, AgentState.AVAILABLE, 0.0))
                self.shadow.presence[profile.agent_id] = AgentState.AVAILABLE
        self.now = 0.0
        self.serial = 0

    def play(self, script: list[Op], check: Callable[[Run], None] | None = None) -> None:
        for op in script:
            self.now += op.dt
            if self.tick_every_deadline:
                while (deadline := self.engine.next_deadline()) is not None and deadline <= self.now:
                    self.observe(self.engine.tick(deadline))
            self.observe(self.engine.tick(self.now))
            self.apply(op)
            if check is not None:
                check(self)

    def observe(self, events: list[RoutingEvent]) -> None:
        self.outputs.extend(events)
        self.shadow.saw(events)

    def apply(self, op: Op) -> None:
        eng, agents = self.engine, self.world.profiles
        if isinstance(op, Enqueue):
            self.serial += 1
            preferred = None if op.preferred is None else f"a{op.preferred}"
            contact = Contact(
                f"c{self.serial}",
                op.channel,
                self.now - op.back,
                op.language,
                op.vip,
                op.band,
                None,
                None,
                None,
                preferred,
            )
            self.shadow.contacts[contact.contact_id] = contact
            queue_id = self.world.queues[op.queue % len(self.world.queues)].queue_id
            decision = eng.enqueue(contact, queue_id, self.now)
            self.outputs.append(decision)
            self.shadow.decided(decision, contact, self.now)
        elif isinstance(op, Request):
            agent_id = agents[op.agent % len(agents)].agent_id
            reason = "r" if op.state is AgentState.BREAK else None
            self.attempt(
                lambda: eng.set_agent_state(agent_id, op.state, self.now, reason), agent_id, op.state
            )
        elif isinstance(op, Act):
            self.act(op)

    def act(self, op: Act) -> None:
        eng = self.engine
        if op.verb == "abandon":
            live = sorted(self.shadow.held) + sorted(c for w in self.shadow.waiting.values() for c in w)
            if live:
                contact_id = live[op.pick % len(live)]
                self.attempt(lambda: eng.abandon(contact_id, self.now))
            return
        held = [
            (status.agent_id, contact_id)
            for status in eng.agents()
            for contact_id in status.contacts
            if (contact_id in status.connected) == (op.verb == "release")
        ]
        if held and op.pick:
            agent_id, contact_id = held[(op.agent + op.pick) % len(held)]
        else:  # sometimes a contact the agent does not hold as required: must be refused
            agent_id, contact_id = self.world.profiles[op.agent % len(self.world.profiles)].agent_id, "c1"
        call = {"accept": eng.accept, "decline": eng.decline, "release": eng.release}[op.verb]
        presence = AgentState.BREAK if op.verb == "decline" else None
        self.attempt(lambda: call(agent_id, contact_id, self.now), agent_id, presence)

    def attempt(
        self,
        call: Callable[[], list[RoutingEvent]],
        agent_id: str | None = None,
        presence: AgentState | None = None,
    ) -> None:
        before = (self.engine.agents(), [self.engine.waiting(q.queue_id) for q in self.world.queues])
        try:
            events = call()
        except RoutingError as exc:
            self.outputs.append((type(exc).__name__, str(exc)))
            after = (self.engine.agents(), [self.engine.waiting(q.queue_id) for q in self.world.queues])
            assert after == before, "a refused call changed the engine"
            return
        if agent_id is not None and presence is not None:
            self.shadow.presence[agent_id] = presence
        self.observe(events)


def check_capacity(run: Run) -> None:
    """Per-channel capacity, and agreement of the engine's agents with the shadow."""
    for status in run.engine.agents():
        profile = run.shadow.profile[status.agent_id]
        for channel, load in status.load.items():
            assert load <= profile.capacity[channel]
            assert load == run.shadow.load.get((status.agent_id, channel), 0)
        assert status.routable == {ch for ch in profile.capacity if run.shadow.routable(status.agent_id, ch)}


def check_invariants(run: Run) -> None:
    """Capacity, agreement with the shadow, and: nobody waits while an agent eligible now is free."""
    check_capacity(run)
    eng, shadow = run.engine, run.shadow
    statuses = eng.agents()
    for queue in run.world.queues:
        waiting = eng.waiting(queue.queue_id)
        assert {w.contact.contact_id for w in waiting} == set(shadow.waiting[queue.queue_id])
        for w in waiting:
            assert w.step == queue.step_at(run.now - w.enqueued_at)
            for status in statuses:
                if w.contact.channel in status.routable:
                    eligible = shadow.eligible(
                        status.agent_id, w.contact, queue.queue_id, w.enqueued_at, run.now
                    )
                    assert not eligible, (
                        f"{w.contact.contact_id} waits while {status.agent_id} is free for it"
                    )


# --- the laws ---------------------------------------------------------------------------


@FAST
@given(world=worlds(), script=scripts)
def test_every_offer_respects_capacity_eligibility_and_fifo(world: World, script: list[Op]) -> None:
    """Checked offer by offer by the shadow: per-channel capacity is never exceeded; the agent is
    eligible at the ladder step in force (skill level, language, channel) and routable; and no
    older contact of the same band and tier that the agent could take is left waiting."""
    run = Run(world)
    run.play(script, check_capacity)


same_tier_arrivals = st.builds(
    Enqueue,
    dts,
    st.just(0),
    st.just(Channel.VOICE),
    st.sampled_from([None, *LANGS]),
    st.just(VipTier.STANDARD),
    st.just(0),
    st.integers(0, 30),
    st.none(),
)
crowded_scripts = st.lists(
    st.one_of(same_tier_arrivals, same_tier_arrivals, requests, acts, acts), min_size=12, max_size=40
)


@FAST
@given(world=crowded_worlds(), script=crowded_scripts)
def test_fifo_within_band_and_tier_when_contacts_compete(world: World, script: list[Op]) -> None:
    """Many contacts of one band and tier waiting for few agents: the shadow checks every offer
    takes the oldest contact the agent could take."""
    run = Run(world)
    run.play(script, check_capacity)


@FAST
@given(world=worlds(), script=scripts)
def test_no_contact_waits_while_an_agent_eligible_at_its_step_is_free(world: World, script: list[Op]) -> None:
    """After each tick, and after every other call, the matching invariant holds; the relaxation
    law (nobody waits beyond its last step while an agent eligible at that step is free) is the
    special case of contacts on their last step."""
    run = Run(world)
    run.play(script, check_invariants)
    run.now += 1000.0  # well beyond every ladder: all waiting contacts are on their last step
    run.observe(run.engine.tick(run.now))
    check_invariants(run)


@FAST
@given(world=worlds(), script=scripts)
def test_the_engine_is_deterministic(world: World, script: list[Op]) -> None:
    first, second = Run(world), Run(world)
    first.play(script)
    second.play(script)
    assert first.outputs == second.outputs


@FAST
@given(world=worlds(), script=scripts)
def test_late_ticks_decide_exactly_as_timely_ones(world: World, script: list[Op]) -> None:
    """Ticking at every deadline or only when something else happens yields the same events."""
    late, timely = Run(world), Run(world, tick_every_deadline=True)
    late.play(script)
    timely.play(script)
    assert late.outputs == timely.outputs
