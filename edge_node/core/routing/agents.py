"""Agents: skills, languages, channel capacity, and the agent state machine."""

# Theory of operation
# -------------------
# An agent's *state* is derived from two things the engine tracks separately:
# its presence, which only the agent (through the adapter) chooses, and the
# contacts it holds, which only the engine changes.
#
#   presence      OFFLINE | AVAILABLE | BREAK(reason)     set by set_agent_state
#   holdings      contacts offered (ringing) or connected  offers, accept, decline, release
#   in wrap-up    after the last held contact ends          release; ends on request or timer
#
#   state = ON_CONTACT  if any held contact is connected
#           RESERVED    elif any is offered and not yet accepted
#           WRAP_UP     elif in wrap-up
#           presence    otherwise
#
# Requests (`REQUESTABLE`) move between presences; the work states are entered
# only through the engine:
#
#   OFFLINE    -> AVAILABLE, BREAK                 (log in)
#   AVAILABLE  -> BREAK, OFFLINE                   (engine: -> RESERVED on an offer)
#   RESERVED   -> AVAILABLE, BREAK                 (engine: -> ON_CONTACT on accept,
#   ON_CONTACT -> AVAILABLE, BREAK                  -> BREAK on decline, -> WRAP_UP on release)
#   WRAP_UP    -> AVAILABLE, BREAK, OFFLINE        (engine: -> presence when wrap_up_s runs out)
#   BREAK      -> AVAILABLE, BREAK, OFFLINE        (BREAK -> BREAK changes the reason)
#
# A request while RESERVED or ON_CONTACT sets the presence the agent returns to
# when its work ends; BREAK also stops new offers at once (a "pending break").
# Logging off with contacts in hand is refused: release or decline them first.
#
# An agent is *routable* on a channel when its presence is AVAILABLE, it is not
# in wrap-up, and it holds fewer contacts on that channel than its capacity there
# (say voice 1, chat 3). Channels are independent: a voice call does not use up
# chat capacity. Wrap-up starts only when the last held contact ends, so a chat
# agent who closes one of three chats keeps taking chats.
#
# `idle_since` is the instant the agent last became AVAILABLE from OFFLINE, BREAK
# or WRAP_UP; an offer withdrawn before it was accepted does not reset it, so the
# agent keeps its place for longest-idle routing.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from edge_node.core.routing.contacts import Channel, Contact, OrderKey, check_level, check_seconds
from edge_node.core.routing.errors import RoutingConfigError


class AgentState(StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RESERVED = "reserved"  # offered a contact that is ringing, not yet accepted
    ON_CONTACT = "on_contact"
    WRAP_UP = "wrap_up"  # after-contact work; no offers
    BREAK = "break"


PRESENCES = frozenset({AgentState.OFFLINE, AgentState.AVAILABLE, AgentState.BREAK})

REQUESTABLE: Mapping[AgentState, frozenset[AgentState]] = MappingProxyType(
    {
        AgentState.OFFLINE: frozenset({AgentState.AVAILABLE, AgentState.BREAK}),
        AgentState.AVAILABLE: frozenset({AgentState.BREAK, AgentState.OFFLINE}),
        AgentState.RESERVED: frozenset({AgentState.AVAILABLE, AgentState.BREAK}),
        AgentState.ON_CONTACT: frozenset({AgentState.AVAILABLE, AgentState.BREAK}),
        AgentState.WRAP_UP: frozenset({AgentState.AVAILABLE, AgentState.BREAK, AgentState.OFFLINE}),
        AgentState.BREAK: frozenset({AgentState.AVAILABLE, AgentState.BREAK, AgentState.OFFLINE}),
    }
)
"""The states `set_agent_state` may request from each current state (see the module comment)."""


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """Who an agent is and what it can take; fixed while the agent is registered.

    Attributes:
        agent_id: Unique within the engine.
        skills: Skill name -> proficiency, 1 (novice) to 5 (expert). A missing skill is not level 0:
            the agent is simply not eligible where the skill is required.
        languages: Languages the agent speaks; contacts that need another language never reach it.
        capacity: Channel -> how many contacts at once (say voice 1, chat 3); absent means 0.
        wrap_up_s: After-contact work time after which wrap-up ends by itself; None keeps the
            agent in wrap-up until it asks for another state.
    """

    agent_id: str
    skills: Mapping[str, int]
    languages: frozenset[str]
    capacity: Mapping[Channel, int]
    wrap_up_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.agent_id, str) or not self.agent_id:
            raise RoutingConfigError("agent_id", self.agent_id, "must be a non-empty string")
        skills = {}
        for skill, level in self.skills.items():
            if not isinstance(skill, str) or not skill:
                raise RoutingConfigError("skill name", skill, "must be a non-empty string")
            skills[skill] = check_level(f"level of skill {skill!r}", level)
        capacity = {}
        for channel, slots in self.capacity.items():
            if not isinstance(channel, Channel):
                raise RoutingConfigError("capacity channel", channel, f"must be one of {', '.join(Channel)}")
            if type(slots) is not int or slots < 0:
                raise RoutingConfigError(f"capacity for {channel}", slots, "must be a whole number >= 0")
            if slots:
                capacity[channel] = slots
        if not capacity:
            raise RoutingConfigError("capacity", dict(self.capacity), "an agent needs at least one slot")
        if self.wrap_up_s is not None:
            check_seconds("wrap_up_s", self.wrap_up_s)
        object.__setattr__(self, "skills", MappingProxyType(skills))
        object.__setattr__(self, "capacity", MappingProxyType(dict(sorted(capacity.items()))))
        object.__setattr__(self, "languages", frozenset(self.languages))

    def eligible(
        self, channel: Channel, language: str | None, skill: str | None, min_level: int | None
    ) -> bool:
        """Whether the agent could ever take such a contact: channel, language and skill level.

        `min_level=None` (the last relaxation step of some queues) waives the skill but never the
        language or the channel. Whether it can take one *now* is `AgentRecord.routable`.
        """
        if channel not in self.capacity or (language is not None and language not in self.languages):
            return False
        return min_level is None or (skill is not None and self.skills.get(skill, 0) >= min_level)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent, for adapters, supervisors and tests.

    Attributes:
        state: The derived state (see the module comment).
        presence: What the agent returns to when its work ends: offline, available or break.
        contacts: Contacts held, offered or connected, in the order they were offered.
        connected: Those of `contacts` the agent has accepted.
        routable: Channels on which the agent could be offered a contact right now.
    """

    agent_id: str
    state: AgentState
    presence: AgentState
    break_reason: str | None
    idle_since: float
    contacts_handled: int
    load: Mapping[Channel, int]
    contacts: tuple[str, ...]
    connected: tuple[str, ...]
    routable: frozenset[Channel]


@dataclass(slots=True, eq=False)
class Holding:
    """A contact offered to (or connected with) an agent, and where it came from."""

    contact: Contact
    queue_id: str
    key: OrderKey
    enqueued_at: float
    offered_at: float
    connected_at: float | None = None


@dataclass(slots=True, eq=False)
class AgentRecord:
    """The engine's mutable record of one agent. Internal: callers see `AgentStatus`."""

    profile: AgentProfile
    seq: int  # registration order: round-robin order and the final tie-break
    idle_since: float
    presence: AgentState = AgentState.OFFLINE
    break_reason: str | None = None
    in_wrap_up: bool = False
    wrap_gen: int = 0  # tells a wrap-up timer from the one of an earlier wrap-up
    handled: int = 0
    holdings: dict[str, Holding] = field(default_factory=dict)
    load: dict[Channel, int] = field(default_factory=dict)
    version: int = 0  # bumped by the index whenever the agent's routing keys may change
    indexed: frozenset[Channel] = frozenset()  # channels on whose pools the agent is listed
    staffed: bool = False  # whether the index counts the agent's slots as staffed
    filed_as: tuple[object, ...] = ()  # what the index last filed: routable channels and heap keys

    @property
    def agent_id(self) -> str:
        return self.profile.agent_id

    @property
    def state(self) -> AgentState:
        if any(h.connected_at is not None for h in self.holdings.values()):
            return AgentState.ON_CONTACT
        if self.holdings:
            return AgentState.RESERVED
        return AgentState.WRAP_UP if self.in_wrap_up else self.presence

    @property
    def total_load(self) -> int:
        return len(self.holdings)

    def routable(self, channel: Channel) -> bool:
        """Whether the agent can be offered a contact on `channel` now."""
        if self.presence is not AgentState.AVAILABLE or self.in_wrap_up:
            return False
        return self.load.get(channel, 0) < self.profile.capacity.get(channel, 0)

    def status(self) -> AgentStatus:
        return AgentStatus(
            agent_id=self.agent_id,
            state=self.state,
            presence=self.presence,
            break_reason=self.break_reason,
            idle_since=self.idle_since,
            contacts_handled=self.handled,
            load=MappingProxyType({ch: self.load.get(ch, 0) for ch in self.profile.capacity}),
            contacts=tuple(self.holdings),
            connected=tuple(c for c, h in self.holdings.items() if h.connected_at is not None),
            routable=frozenset(ch for ch in self.profile.capacity if self.routable(ch)),
        )
