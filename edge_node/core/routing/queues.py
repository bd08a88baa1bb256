"""Queues: who may serve their contacts, and the line of contacts waiting in each."""

# Theory of operation
# -------------------
# A queue requires one skill. Who may serve a contact in it depends on how long
# the contact has waited *in this queue*: the ladder of steps starts with
# `(0 s, min_level)` and each `RelaxationStep(after_s, min_level)` loosens it,
# as Asterisk's queuerules and Amazon Connect's routing-criteria steps do. A step
# with `min_level=None` waives the skill: any agent speaking the contact's
# language will do. Language and channel are never waived. A contact keeps its
# place in line when a step widens the pool; the engine's deadline heap fires
# each step at `enqueued_at + after_s`.
#
# After `max_wait_s` in the queue a contact overflows to `overflow_to`, or, if
# the queue names none, is offered a callback and leaves the engine. With
# `divert_on_entry` the same happens at once when the expected wait on arrival
# already exceeds `max_wait_s` (Wazo's wait-time diversion). A contact that
# would have to wait while `max_length` contacts already wait is refused.
#
# The waiting line keeps its contacts three ways, so the engine never scans it:
# a sorted list of order keys (position = bisect), the entries by contact id,
# and *partitions* by (channel, language, step). Everyone in a partition is
# eligible for exactly the same agents, so the partition head is the only one
# an agent can want from it: a freed agent looks up one head per channel,
# language and step it qualifies for, in each queue of its skills. Contacts on
# a step that waives the skill are also filed across all queues in an
# `OpenIndex` by (channel, language), so agents without the skill find them
# without visiting every queue.

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from edge_node.core.routing.contacts import (
    MAX_LEVEL,
    MIN_LEVEL,
    Channel,
    Contact,
    OrderKey,
    check_level,
    check_seconds,
)
from edge_node.core.routing.errors import RoutingConfigError


class Strategy(StrEnum):
    """How a queue chooses among several eligible, routable agents.

    Every strategy first prefers agents holding fewer contacts right now, so a
    multitasking agent is not loaded up while a colleague sits idle (this never
    matters for agents with one slot per channel), except round robin, which
    only rotates.
    """

    LONGEST_IDLE = "longest_idle"  # earliest idle_since (Asterisk leastrecent, TaskRouter default)
    LEAST_CONTACTS = "least_contacts"  # fewest contacts handled, then longest idle (fewestcalls)
    ROUND_ROBIN = "round_robin"  # next agent in registration order after the last one served (rrmemory)
    SKILL_WEIGHTED = "skill_weighted"  # highest level in the queue's skill, then longest idle


@dataclass(frozen=True, slots=True)
class RelaxationStep:
    """From `after_s` seconds in the queue on, agents from `min_level` up qualify (None: any level)."""

    after_s: float
    min_level: int | None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's rules.

    Attributes:
        queue_id: Unique within the engine.
        skill: The skill an agent needs (until a step waives it).
        min_level: Level required on entry: the first step of the ladder.
        strategy: How to choose among eligible agents.
        steps: Later, looser steps; `after_s` strictly increasing and positive, levels strictly falling
            (None, "any agent with the language", can only be last).
        max_wait_s: Longest stay in this queue before overflow or a callback offer; None waits forever.
        overflow_to: Queue taking contacts after `max_wait_s`; None offers a callback instead. It must be
            registered before this queue, so overflow chains cannot loop.
        max_length: Most contacts that may wait at once; a contact that would be one more is refused.
        service_level_s: Answer-time threshold of the service level (Asterisk `servicelevel`).
        inquiry_bands: Inquiry type -> band; raises (never lowers) the band of matching contacts.
        divert_on_entry: Overflow (or offer a callback) on arrival when the expected wait already
            exceeds `max_wait_s`, or when no staffed agent qualifies at all.
    """

    queue_id: str
    skill: str
    min_level: int = 1
    strategy: Strategy = Strategy.LONGEST_IDLE
    steps: tuple[RelaxationStep, ...] = ()
    max_wait_s: float | None = None
    overflow_to: str | None = None
    max_length: int | None = None
    service_level_s: float = 20.0
    inquiry_bands: Mapping[str, int] = field(default_factory=dict)
    divert_on_entry: bool = False
    ladder: tuple[RelaxationStep, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("queue_id", "skill"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise RoutingConfigError(name, getattr(self, name), "must be a non-empty string")
        if not isinstance(self.strategy, Strategy):
            raise RoutingConfigError("strategy", self.strategy, f"must be one of {', '.join(Strategy)}")
        ladder = [RelaxationStep(0.0, check_level("min_level", self.min_level))]
        for i, step in enumerate(self.steps):
            if not isinstance(step, RelaxationStep):
                raise RoutingConfigError(f"steps[{i}]", step, "must be a RelaxationStep(after_s, min_level)")
            after_s = check_seconds(f"steps[{i}].after_s", step.after_s, positive=True)
            before = ladder[-1]
            if after_s <= before.after_s:
                raise RoutingConfigError(f"steps[{i}].after_s", step.after_s, "must exceed the step before")
            if step.min_level is not None:
                check_level(f"steps[{i}].min_level", step.min_level)
            if before.min_level is None or (
                step.min_level is not None and step.min_level >= before.min_level
            ):
                raise RoutingConfigError(
                    f"steps[{i}].min_level", step.min_level, "must loosen the step before"
                )
            ladder.append(RelaxationStep(after_s, step.min_level))
        object.__setattr__(self, "ladder", tuple(ladder))
        self._check_limits()
        for kind, band in self.inquiry_bands.items():
            if type(band) is not int:
                raise RoutingConfigError(f"inquiry_bands[{kind!r}]", band, "must be a whole number")
        object.__setattr__(self, "inquiry_bands", MappingProxyType(dict(self.inquiry_bands)))

    def _check_limits(self) -> None:
        check_seconds("service_level_s", self.service_level_s, positive=True)
        if self.max_wait_s is not None:
            check_seconds("max_wait_s", self.max_wait_s, positive=True)
        elif self.overflow_to is not None or self.divert_on_entry:
            raise RoutingConfigError(
                "max_wait_s", None, "overflow_to and divert_on_entry need a maximum wait"
            )
        if self.overflow_to == self.queue_id:
            raise RoutingConfigError("overflow_to", self.overflow_to, "a queue cannot overflow into itself")
        if self.max_length is not None and (type(self.max_length) is not int or self.max_length < 0):
            raise RoutingConfigError("max_length", self.max_length, "must be a whole number >= 0")

    def band_of(self, contact: Contact) -> int:
        """The contact's effective band here: its own, raised by `inquiry_bands` for its type."""
        raised = None if contact.inquiry_type is None else self.inquiry_bands.get(contact.inquiry_type)
        return contact.band if raised is None else max(contact.band, raised)

    def step_at(self, waited_s: float) -> int:
        """Index of the ladder step in force after `waited_s` seconds in the queue."""
        return max(i for i, step in enumerate(self.ladder) if step.after_s <= max(waited_s, 0.0))


PartitionKey = tuple[Channel, str | None, int]
"""(channel, language, step): contacts eligible for exactly the same agents."""
OpenKey = tuple[Channel, str | None]
"""(channel, language) of a contact on a step that waives the skill."""


@dataclass(slots=True, eq=False)
class Entry:
    """A contact waiting in a queue."""

    contact: Contact
    queue_id: str
    key: OrderKey
    enqueued_at: float
    step: int = 0

    @property
    def partition(self) -> PartitionKey:
        return (self.contact.channel, self.contact.language, self.step)


@dataclass(frozen=True, slots=True)
class WaitingContact:
    """A snapshot of one waiting contact: where it stands and which ladder step is in force."""

    contact: Contact
    queue_id: str
    position: int
    enqueued_at: float
    step: int
    min_level: int | None


class OpenIndex:
    """Entries on a skill-waiving step in any queue, by (channel, language), each list in line order.

    Such contacts are eligible for any agent speaking their language, whatever its skills, so a
    freed agent finds the first of them with one lookup per channel and language it has.
    """

    __slots__ = ("_entries", "_keys")

    def __init__(self) -> None:
        self._keys: dict[OpenKey, list[OrderKey]] = {}
        self._entries: dict[OrderKey, Entry] = {}

    def add(self, entry: Entry) -> None:
        insort(self._keys.setdefault((entry.contact.channel, entry.contact.language), []), entry.key)
        self._entries[entry.key] = entry

    def remove(self, entry: Entry) -> None:
        group = (entry.contact.channel, entry.contact.language)
        keys = self._keys[group]
        del keys[bisect_left(keys, entry.key)]
        if not keys:
            del self._keys[group]
        del self._entries[entry.key]

    def head(self, channel: Channel, language: str | None) -> Entry | None:
        keys = self._keys.get((channel, language))
        return self._entries[keys[0]] if keys else None


class WaitingLine:
    """The contacts waiting in one queue, ordered by the ordering rule."""

    __slots__ = (
        "_by_key",
        "_open",
        "_order",
        "_steps_for",
        "config",
        "entries",
        "partitions",
        "rotation_after",
    )

    def __init__(self, config: QueueConfig, open_index: OpenIndex) -> None:
        """Create an empty line; entries on a skill-waiving step are also filed in `open_index`."""
        self.config = config
        self.entries: dict[str, Entry] = {}
        self.partitions: dict[PartitionKey, list[OrderKey]] = {}
        self.rotation_after = -1  # seq of the agent this queue served last (round robin)
        self._open = open_index
        levels = [step.min_level for step in config.ladder]
        self._steps_for = {
            level: tuple(i for i, need in enumerate(levels) if need is not None and need <= level)
            for level in range(MIN_LEVEL, MAX_LEVEL + 1)
        }
        self._by_key: dict[OrderKey, Entry] = {}
        self._order: list[OrderKey] = []

    def __len__(self) -> int:
        return len(self.entries)

    def level_of(self, step: int) -> int | None:
        return self.config.ladder[step].min_level

    def add(self, entry: Entry) -> None:
        self.entries[entry.contact.contact_id] = entry
        self._by_key[entry.key] = entry
        insort(self._order, entry.key)
        self._file(entry)

    def remove(self, entry: Entry) -> None:
        del self.entries[entry.contact.contact_id]
        del self._by_key[entry.key]
        del self._order[bisect_left(self._order, entry.key)]
        self._unfile(entry)

    def move(self, entry: Entry, step: int) -> None:
        """Put `entry` on ladder step `step`, keeping its place in line."""
        self._unfile(entry)
        entry.step = step
        self._file(entry)

    def steps_for(self, level: int) -> tuple[int, ...]:
        """Ladder steps, other than skill-waiving ones, at which an agent of `level` qualifies."""
        return self._steps_for.get(level, ())

    def head_key(self, part: PartitionKey) -> OrderKey | None:
        keys = self.partitions.get(part)
        return keys[0] if keys else None

    def entry(self, key: OrderKey) -> Entry:
        return self._by_key[key]

    def position(self, key: OrderKey) -> int:
        """1-based place of the entry with `key` among everyone waiting here (or that it would take)."""
        return bisect_left(self._order, key) + 1

    def in_order(self) -> Iterator[Entry]:
        """Everyone waiting, first in line first."""
        return (self._by_key[key] for key in self._order)

    def _file(self, entry: Entry) -> None:
        insort(self.partitions.setdefault(entry.partition, []), entry.key)
        if self.level_of(entry.step) is None:
            self._open.add(entry)

    def _unfile(self, entry: Entry) -> None:
        part = entry.partition
        keys = self.partitions[part]
        del keys[bisect_left(keys, entry.key)]
        if not keys:
            del self.partitions[part]
        if self.level_of(entry.step) is None:
            self._open.remove(entry)
