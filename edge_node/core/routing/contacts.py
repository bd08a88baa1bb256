"""Contacts waiting for an agent, and the order in which they are served."""

# Theory of operation
# -------------------
# A contact is one customer interaction on one channel (a call, a chat, an
# email, a text). The adapter describes it once, when it first reaches the
# node: who is calling (VIP tier, language, country and area, which the adapter
# derives from the number with `phonenumbers`), what about, and which agent the
# customer last spoke to. The core never looks the number up itself.
#
# Ordering rule. Among contacts competing for the same agent, the engine serves
#   1. the higher priority band first (a contact's `band`, raised by the queue's
#      `inquiry_bands` for its inquiry type), regardless of age, as TaskRouter does;
#   2. then the earlier *credited* arrival: a VIP tier counts as having arrived
#      `vip_credit_s[tier]` seconds earlier (Amazon Connect's time adjustment, the
#      Anonymous Bank VIP head-start), so a platinum caller overtakes standard
#      callers who arrived less than the credit ahead of it, but not older ones;
#   3. then the order in which the engine admitted the contacts (FIFO; a
#      sequence number breaks exact ties, so the order is total and deterministic).
# Age is `arrival_at`, the instant the contact reached the node, not the instant
# it entered its current queue: a contact that overflows or is re-queued after a
# declined offer keeps its place in line. Timers (relaxation, maximum wait) run
# from the entry into the current queue instead. `order_key` is the whole rule.

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from edge_node.core.routing.errors import RoutingConfigError

MIN_LEVEL = 1
MAX_LEVEL = 5

OrderKey = tuple[int, float, int]
"""(-band, credited arrival, admission sequence): smaller is served first."""


class Channel(StrEnum):
    VOICE = "voice"
    CHAT = "chat"
    EMAIL = "email"
    SMS = "sms"


class VipTier(StrEnum):
    STANDARD = "standard"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


DEFAULT_VIP_CREDIT_S: Mapping[VipTier, float] = MappingProxyType(
    {VipTier.STANDARD: 0.0, VipTier.SILVER: 15.0, VipTier.GOLD: 30.0, VipTier.PLATINUM: 60.0}
)


def check_level(what: str, level: object) -> int:
    """Return `level` if it is a whole skill level in 1..5; raise `RoutingConfigError` otherwise."""
    if type(level) is not int or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise RoutingConfigError(what, level, f"must be a whole number from {MIN_LEVEL} to {MAX_LEVEL}")
    return level


def check_seconds(what: str, value: object, *, positive: bool = False) -> float:
    """Return `value` as float if it is a finite, non-negative (or positive) number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RoutingConfigError(what, value, "must be a finite number of seconds")
    if value < 0 or (positive and value == 0):
        raise RoutingConfigError(what, value, "must be positive" if positive else "must not be negative")
    return float(value)


@dataclass(frozen=True, slots=True)
class Contact:
    """One customer interaction, as the adapter describes it on arrival.

    Attributes:
        contact_id: Unique among the contacts the engine holds at a time.
        channel: The channel; an agent needs spare capacity on it.
        arrival_at: When the contact reached the node (seconds, the caller's clock). Its age
            in the ordering rule, kept across overflows and re-queues.
        language: Language the customer needs, or None if any agent will do.
        vip: The customer's tier; buys a head start of `vip_credit_s[vip]` seconds.
        band: Priority band; a higher band is always served first.
        inquiry_type: What the contact is about; queues may raise its band by type.
        caller_country: ISO 3166 region of the caller, derived by the adapter (informational).
        caller_area: Area or region name within the country, derived by the adapter (informational).
        preferred_agent_id: Last-agent affinity: served by this agent whenever it is eligible and free.
    """

    contact_id: str
    channel: Channel
    arrival_at: float
    language: str | None = None
    vip: VipTier = VipTier.STANDARD
    band: int = 0
    inquiry_type: str | None = None
    caller_country: str | None = None
    caller_area: str | None = None
    preferred_agent_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.contact_id, str) or not self.contact_id:
            raise RoutingConfigError("contact_id", self.contact_id, "must be a non-empty string")
        if not isinstance(self.channel, Channel):
            raise RoutingConfigError("channel", self.channel, f"must be one of {', '.join(Channel)}")
        if isinstance(self.arrival_at, bool) or not isinstance(self.arrival_at, int | float):
            raise RoutingConfigError("arrival_at", self.arrival_at, "must be a number of seconds")
        if not math.isfinite(self.arrival_at):
            raise RoutingConfigError("arrival_at", self.arrival_at, "must be finite")
        if type(self.band) is not int:
            raise RoutingConfigError("band", self.band, "must be a whole number")
        if not isinstance(self.vip, VipTier):
            raise RoutingConfigError("vip", self.vip, f"must be one of {', '.join(VipTier)}")


def check_vip_credits(credits: Mapping[VipTier, float]) -> Mapping[VipTier, float]:
    """Validate a tier -> head-start table; tiers left out get no credit."""
    table = {tier: 0.0 for tier in VipTier}
    for tier, credit in credits.items():
        if not isinstance(tier, VipTier):
            raise RoutingConfigError("vip_credit_s tier", tier, f"must be one of {', '.join(VipTier)}")
        table[tier] = check_seconds(f"vip_credit_s[{tier}]", credit)
    return MappingProxyType(table)


def order_key(contact: Contact, *, band: int, credit_s: float, seq: int) -> OrderKey:
    """The contact's place in line: see the ordering rule in the module comment.

    Args:
        contact: The contact.
        band: Its effective band in the queue (the contact's own, possibly raised by the queue).
        credit_s: The head start its VIP tier buys.
        seq: The engine's admission counter, unique per contact, for a total order.
    """
    return (-band, contact.arrival_at - credit_s, seq)
