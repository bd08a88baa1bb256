"""Merge rules: state-based CRDTs per field, and the record state they make up.

Theory of operation
-------------------
Every replica (a regional node, the hub) holds, per record, a :class:`RecordState`:
one CRDT state per field plus a deletion register. Replicas exchange operations
(:class:`Op`); an operation is itself a small record state, and :func:`apply_op`
merges it in with :func:`merge_record`. Every merge here is a *join*:
commutative, associative and idempotent. So replicas that merged the same
operations, in any order and with any repetition, hold equal states, which is
what :func:`fold` (the reference replay) and the property tests check.

Versions. A write is stamped ``Version(hlc, node)``: ``hlc`` is
``HLCTimestamp.encode()`` and ``node`` the writer's id. Versions compare as
tuples: the higher HLC wins and equal HLCs fall back to the node id string. A
node never issues two writes with one HLC, so equal versions mean the same
write.

Field kinds (``MergeKind`` of the entity declaration):

* ``REGISTER``: last writer wins (:func:`merge_register`). The higher version
  keeps its value. Values are never compared to decide a winner; only if two
  registers carry the same version but different values (impossible for honest
  writers, possible for a corrupted peer) does the larger :func:`value_key`
  win, so even then merging stays commutative.
* ``SET``: add-wins observed-remove set of strings (:class:`ORSet`). Every add
  carries a tag (the version of the op that added it); a remove tombstones the
  tags of that element it has *observed*. An element is present while it has a
  tag that is not tombstoned, so an add concurrent with a remove survives it
  (add wins), and a remove takes out exactly the adds it saw. Tombstones are
  kept per element: one op adding several elements stamps them all with the
  same tag, and removing one of them must not remove the others.
* ``COUNTER``: one grow-only total per node (:class:`Counter`); merge takes the
  per-node maximum and the value is the sum. An op carries its origin's new
  total, not an increment, so duplicates are harmless.

Deletes. A delete is a tombstone: the record's ``deleted`` register set to
``True`` at the delete's version; the fields stay (and keep merging). A record
is live iff it has no ``deleted`` register or its value is false. Field updates
never touch ``deleted``, so an update concurrent with the delete, or stamped
later than it, does not bring the record back: *delete wins over field
updates*. Only an explicit restore (``Op(restore=True)``: ``deleted=False`` at
the restore's version) does, and only if it is newer than the delete: *a newer
explicit restore wins over the delete*. Since fields merged underneath all
along, a restored record shows every update, including those made while it was
deleted. A delete and a restore with the very same version cannot come from
honest writers; should they meet, ``True`` has the larger value key, so the
delete wins.

Floats (NaN and -0.0). Merge never looks at values, so no float rule can change
a merge result. Where values *are* compared (register equality, the equal-
version tie-break, digests through :func:`float_bits`), a float counts as its
IEEE-754 bit pattern after normalising: every NaN is the quiet NaN
``0x7ff8000000000000`` and ``-0.0`` is ``0.0``. So ``NaN == NaN`` (unlike
Python) and ``-0.0 == 0.0`` (like Python and SQLite, which stores -0.0 as 0.0)
for convergence checks. The wire carries floats bit for bit (MessagePack
float64), so a replica may still hold -0.0 or a NaN payload it was sent. Note
that SQLite stores NaN as NULL; the API refuses non-finite floats, so only a
misbehaving peer could bring one, and the store must not keep one in a REAL
column.

Booleans are stored as integers (``Kind.BOOL`` has storage form 0/1), and a
``bool`` register value counts as the integer it equals.

Tombstone collection (:func:`collectable`). Tombstones cannot live forever, but
dropping one too early resurrects the record at a replica that has not merged
the delete yet. ``seen`` maps every known replica (the caller included) to its
*stable watermark*: the highest HLC ``w`` such that the replica has merged
every op with ``hlc <= w`` from every origin and can receive none later (each
origin publishes in HLC order over a FIFO stream, so that is the minimum over
origins of the last contiguous HLC merged from each). A tombstone is
collectable iff ``seen`` is not empty and every watermark is at or past the
delete's HLC; never before. Two obligations stay with the caller: a replica
must be in ``seen`` before it may send ops (a replica missing from ``seen`` is
not waited for), and a watermark must arrive over the replica's own FIFO op
stream, after the ops it sent before reporting it, so that updates concurrent
with the delete (which may carry a higher HLC) are merged before the tombstone
is dropped.

The module is pure: no I/O, no clock. States are immutable; the mappings in
them are treated as read-only and never shared with callers' dictionaries.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from sync.entity import MergeKind
from sync.errors import SyncError

StorageValue = str | int | float | bytes | None
"""A field value in storage form (``sync.entity.to_storage``), plus raw bytes."""

K = TypeVar("K", bound=Hashable)

CANONICAL_NAN_BITS: Final = 0x7FF8000000000000


class CRDTError(SyncError):
    """Base for errors about CRDT states and operations."""


class UnsupportedValueError(CRDTError):
    """A register value is not in storage form."""

    def __init__(self, value: object) -> None:
        self.value_type = type(value).__name__
        super().__init__(f"a register holds str, int, float, bytes or None, not {self.value_type}")


class MergeKindMismatchError(CRDTError):
    """Two states of one field have different merge kinds; they cannot be merged."""

    def __init__(self, field_name: str, left: str, right: str) -> None:
        self.field_name, self.left, self.right = field_name, left, right
        super().__init__(f"field {field_name!r} cannot merge a {left} with a {right}")


class MalformedChangeError(CRDTError):
    """A field change does not carry exactly the payload its kind needs."""

    def __init__(self, kind: str, problem: str) -> None:
        self.kind, self.problem = kind, problem
        super().__init__(f"{kind} change {problem}")


class MalformedOpError(CRDTError):
    """An operation breaks a rule of its own shape."""

    def __init__(self, origin: str, seq: int, problem: str) -> None:
        self.origin, self.seq, self.problem = origin, seq, problem
        super().__init__(f"op {origin}/{seq}: {problem}")


class NegativeCountError(CRDTError):
    """A counter total or increment is negative; per-node totals only grow."""

    def __init__(self, node: str, count: int) -> None:
        self.node, self.count = node, count
        super().__init__(f"counter totals only grow; got {count} for node {node!r}")


# --- versions and values ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """The stamp of one write: ``(hlc, node)``, compared as a tuple."""

    hlc: int
    node: str


def float_bits(x: float) -> int:
    """The IEEE-754 bits a float counts as: any NaN is the quiet NaN, -0.0 is 0.0."""
    if math.isnan(x):
        return CANONICAL_NAN_BITS
    if x == 0.0:
        return 0
    bits: int = struct.unpack(">Q", struct.pack(">d", x))[0]
    return bits


def value_key(value: StorageValue) -> tuple[int, int | str | bytes]:
    """A total order key of a storage value: type rank first, then the value.

    Equal keys mean equal values under the float rule of the module docstring.
    """
    match value:
        case None:
            return (0, 0)
        case bool() | int():
            return (1, int(value))
        case float():
            return (2, float_bits(value))
        case str():
            return (3, value)
        case bytes():
            return (4, value)
    raise UnsupportedValueError(value)


# --- register ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Register:
    """A last-writer-wins register: the value of the write with the highest version.

    Equality compares values by :func:`value_key`, so registers holding NaN are
    equal to themselves and -0.0 equals 0.0.
    """

    value: StorageValue
    version: Version

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, str | int | float | bytes):
            raise UnsupportedValueError(self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Register):
            return NotImplemented
        return self.version == other.version and value_key(self.value) == value_key(other.value)

    def __hash__(self) -> int:
        return hash((self.version, value_key(self.value)))


def merge_register(a: Register | None, b: Register | None) -> Register | None:
    """Last writer wins: the register with the higher version (None is the bottom)."""
    if a is None:
        return b
    if b is None:
        return a
    return _last_writer(a, b)


def _last_writer(a: Register, b: Register) -> Register:
    if a.version != b.version:
        return a if a.version > b.version else b
    return b if value_key(b.value) > value_key(a.value) else a


# --- observed-remove set ------------------------------------------------------------------

_NO_TAGS: Final[frozenset[Version]] = frozenset()
TagMap = Mapping[str, frozenset[Version]]
"""Element to a set of add tags."""


@dataclass(frozen=True, slots=True)
class SetDelta:
    """What one operation did to a set: tags it added and tags it tombstoned.

    Attributes:
        add: element to the tag of this add (the op's version).
        remove: element to the add tags of it the remover had observed.
    """

    add: Mapping[str, Version] = field(default_factory=dict)
    remove: Mapping[str, frozenset[Version]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ORSet:
    """An add-wins observed-remove set of strings.

    Attributes:
        adds: element to its live add tags (tags not tombstoned); elements
            without one are left out, so equal sets have equal states.
        removes: element to its tombstoned add tags; kept so a tag that
            arrives after its remove stays dead.
    """

    adds: Mapping[str, frozenset[Version]] = field(default_factory=dict)
    removes: Mapping[str, frozenset[Version]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        removes = {e: frozenset(tags) for e, tags in self.removes.items() if tags}
        adds: dict[str, frozenset[Version]] = {}
        for e, tags in self.adds.items():
            live = frozenset(tags) - removes.get(e, _NO_TAGS)
            if live:
                adds[e] = live
        object.__setattr__(self, "adds", adds)
        object.__setattr__(self, "removes", removes)

    def value(self) -> frozenset[str]:
        """The elements present: those with a live add tag."""
        return frozenset(self.adds)

    def add(self, element: str, tag: Version) -> ORSet:
        """Add ``element`` with ``tag`` (ignored if that tag was already tombstoned)."""
        return self.apply(SetDelta(add={element: tag}))

    def remove(self, element: str) -> ORSet:
        """Remove ``element`` by tombstoning every add tag of it observed here."""
        return self.apply(SetDelta(remove={element: self.adds.get(element, _NO_TAGS)}))

    def apply(self, delta: SetDelta) -> ORSet:
        """Merge what one operation did into this set."""
        return merge_orset(self, delta_state(delta))


def delta_state(delta: SetDelta) -> ORSet:
    """The set state that holds exactly what ``delta`` did."""
    return ORSet({e: frozenset((tag,)) for e, tag in delta.add.items()}, delta.remove)


def set_delta(before: ORSet, after_value: frozenset[str], tag: Version) -> SetDelta:
    """The delta turning ``before`` into a set whose value is ``after_value``.

    New elements are added with ``tag``; elements to drop have every tag
    observed in ``before`` tombstoned; elements in both are left alone.
    """
    current = before.value()
    return SetDelta(
        add={e: tag for e in after_value - current},
        remove={e: before.adds[e] for e in current - after_value},
    )


def _union(a: TagMap, b: TagMap) -> dict[str, frozenset[Version]]:
    merged = dict(a)
    for e, tags in b.items():
        merged[e] = merged.get(e, _NO_TAGS) | tags
    return merged


def merge_orset(a: ORSet, b: ORSet) -> ORSet:
    """Union of add tags and of tombstones; tombstoned tags stay dead."""
    return ORSet(_union(a.adds, b.adds), _union(a.removes, b.removes))


# --- counter ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counter:
    """Per-node grow-only totals; the value is their sum.

    Attributes:
        counts: node id to that node's total (zero totals are left out).
    """

    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node, count in self.counts.items():
            if count < 0:
                raise NegativeCountError(node, count)
        object.__setattr__(self, "counts", {n: c for n, c in self.counts.items() if c})

    def value(self) -> int:
        """The sum of every node's total."""
        return sum(self.counts.values())

    def increment(self, node: str, amount: int = 1) -> Counter:
        """Add ``amount`` (not negative) to ``node``'s total."""
        if amount < 0:
            raise NegativeCountError(node, amount)
        return Counter({**self.counts, node: self.counts.get(node, 0) + amount})


def merge_counter(a: Counter, b: Counter) -> Counter:
    """Per-node maximum."""
    merged = dict(a.counts)
    for node, count in b.counts.items():
        merged[node] = max(merged.get(node, 0), count)
    return Counter(merged)


# --- records --------------------------------------------------------------------------------

FieldState = Register | ORSet | Counter


def kind_of(state: FieldState) -> MergeKind:
    """The merge kind a field state belongs to."""
    match state:
        case Register():
            return MergeKind.REGISTER
        case ORSet():
            return MergeKind.SET
        case Counter():
            return MergeKind.COUNTER


@dataclass(frozen=True, slots=True)
class RecordState:
    """One record's field states and its deletion register (``True`` = deleted)."""

    fields: Mapping[str, FieldState] = field(default_factory=dict)
    deleted: Register | None = None


def _merge_field(name: str, a: FieldState, b: FieldState) -> FieldState:
    match a, b:
        case Register(), Register():
            return _last_writer(a, b)
        case ORSet(), ORSet():
            return merge_orset(a, b)
        case Counter(), Counter():
            return merge_counter(a, b)
    raise MergeKindMismatchError(name, kind_of(a), kind_of(b))


def merge_record(a: RecordState, b: RecordState) -> RecordState:
    """Merge field by field (each by its kind) and the deletion registers."""
    fields = dict(a.fields)
    for name, state in b.fields.items():
        mine = fields.get(name)
        fields[name] = state if mine is None else _merge_field(name, mine, state)
    return RecordState(fields, merge_register(a.deleted, b.deleted))


def is_live(state: RecordState) -> bool:
    """Not deleted: no deletion register, or the newest one is a restore."""
    return state.deleted is None or not state.deleted.value


def materialize(state: RecordState) -> dict[str, StorageValue | frozenset[str] | int]:
    """The plain field values: register values, set elements, counter sums."""
    values: dict[str, StorageValue | frozenset[str] | int] = {}
    for name, s in state.fields.items():
        match s:
            case Register():
                values[name] = s.value
            case ORSet():
                values[name] = s.value()
            case Counter():
                values[name] = s.value()
    return values


# --- operations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    """What one operation did to one field; exactly the payload of its kind is set."""

    kind: MergeKind
    register: Register | None = None
    delta: SetDelta | None = None
    counter: Counter | None = None

    def __post_init__(self) -> None:
        present = {
            MergeKind.REGISTER: self.register is not None,
            MergeKind.SET: self.delta is not None,
            MergeKind.COUNTER: self.counter is not None,
        }
        if not present[self.kind]:
            raise MalformedChangeError(self.kind, f"needs its {self.kind} payload")
        extra = sorted(k for k, there in present.items() if there and k is not self.kind)
        if extra:
            raise MalformedChangeError(self.kind, f"must not carry a {' or '.join(extra)} payload")

    def state(self) -> FieldState:
        """The field state holding exactly this change."""
        match self.kind, self.register, self.delta, self.counter:
            case MergeKind.REGISTER, Register() as register, _, _:
                return register
            case MergeKind.SET, _, SetDelta() as delta, _:
                return delta_state(delta)
            case MergeKind.COUNTER, _, _, Counter() as counter:
                return counter
        raise MalformedChangeError(self.kind, f"needs its {self.kind} payload")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Op:
    """One replicated operation on one record, as logged by its origin.

    Attributes:
        entity: the entity name (``Entity.name``).
        record_id: the record's id.
        origin: the node that made the op.
        seq: the origin's sequence number for it (per origin, from 1, gap-free).
        hlc: the op's ``HLCTimestamp.encode()``.
        changes: field name to what the op did to it.
        delete: the op deletes the record (tombstone at ``Version(hlc, origin)``).
        restore: the op undeletes the record (an explicit restore).
    """

    entity: str
    record_id: str
    origin: str
    seq: int
    hlc: int
    changes: Mapping[str, FieldChange] = field(default_factory=dict)
    delete: bool = False
    restore: bool = False

    def __post_init__(self) -> None:
        if self.delete and self.restore:
            raise MalformedOpError(self.origin, self.seq, "cannot both delete and restore")

    @property
    def key(self) -> tuple[str, str]:
        """``(entity, record_id)``: which record the op is about."""
        return (self.entity, self.record_id)

    @property
    def version(self) -> Version:
        """``Version(hlc, origin)``."""
        return Version(self.hlc, self.origin)


def op_state(op: Op) -> RecordState:
    """The record state holding exactly what ``op`` did."""
    deleted = Register(op.delete, op.version) if op.delete or op.restore else None
    return RecordState({name: change.state() for name, change in op.changes.items()}, deleted)


EMPTY_RECORD: Final = RecordState()


def apply_op(state: RecordState | None, op: Op) -> RecordState:
    """Merge one operation into a record's state (idempotent, order-free)."""
    return merge_record(EMPTY_RECORD if state is None else state, op_state(op))


def fold(ops: Iterable[Op]) -> dict[tuple[str, str], RecordState]:
    """The state every replica reaches from ``ops``, whatever their order or repetition."""
    states: dict[tuple[str, str], RecordState] = {}
    for op in ops:
        states[op.key] = apply_op(states.get(op.key), op)
    return states


# --- tombstone collection ----------------------------------------------------------------------


def collectable(tombstones: Iterable[tuple[K, Version]], seen: Mapping[str, int]) -> set[K]:
    """The tombstones every known replica has merged, so they may be dropped.

    Args:
        tombstones: ``(key, delete version)`` pairs.
        seen: every known replica (the caller too) to its stable HLC watermark
            (see the module docstring for what a watermark must guarantee).

    Returns:
        The keys whose delete HLC is at or below every watermark; nothing when
        ``seen`` is empty, since then no replica is known to have merged anything.
    """
    if not seen:
        return set()
    horizon = min(seen.values())
    return {key for key, version in tombstones if version.hlc <= horizon}
