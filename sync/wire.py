"""Wire structs and encodings that need no third-party code.

Theory of operation
-------------------
Two encodings live here.

**The canonical encoding** (:func:`canonical`) turns a value into bytes that
depend only on the value, for digests and equality checks. It is type-tagged
and self-delimiting, so distinct values never share an encoding and a
concatenation of encodings splits only one way:

====  ===========================================================
tag   then
====  ===========================================================
N     nothing (None)
I     length, then the minimal big-endian two's complement bytes
      (ints of any size; a bool counts as its int, as in storage)
F     8 bytes: :func:`sync.crdt.float_bits` (NaN and -0.0 normalised)
S     length, then UTF-8 (lone surrogates pass through, so every str encodes)
B     length, then the bytes
E     count, then the element encodings in byte order (sets)
L     count, then the item encodings in order (lists, tuples)
D     count, then key and value encodings, pairs in key-encoding order
====  ===========================================================

Lengths and counts are unsigned LEB128. Anything else (a datetime, say) is
refused with :class:`UnencodableValueError`: callers hash storage forms.

**The op tree** (:func:`batch_to_tree`, :func:`batch_from_tree`) is the wire
form of an :class:`OpBatch` as plain dicts, lists, strings, ints, floats,
bytes, booleans and None; ``sync.transport.codec`` packs it with MessagePack.
Keeping the tree here keeps every rule about the wire format pure and
testable. Its rules (STYLE.md: tagged, versioned structs):

* the batch carries ``version`` (:data:`WIRE_VERSION`); a newer version is
  refused with :class:`UnsupportedWireVersionError` saying so, and a decoder
  ignores keys it does not know, so a field can be added with a default
  without a version bump (never reorder or retype);
* field changes are dicts tagged by ``kind`` (``register``/``set``/``counter``);
  versions are ``[hlc, node]``; register values travel in storage form, and
  ints outside MessagePack's 64-bit range as ``bigint`` (two's complement
  bytes) instead of ``value``;
* false flags (``delete``, ``restore``) are left out;
* decoding checks every key's type and names the path of the first problem
  (``ops[3].changes['title'].version``) in :class:`MalformedBatchError`.

A batch holds one origin's ops with consecutive sequence numbers:
``ops[i].origin == node_id`` and ``ops[i].seq == first_seq + i``, ending at
``last_seq``. :class:`OpBatch` checks that on construction, so a decoded batch
whose ops disagree with its header never exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sync.crdt import (
    Counter,
    CRDTError,
    FieldChange,
    Op,
    ORSet,
    RecordState,
    Register,
    SetDelta,
    StorageValue,
    Version,
    float_bits,
)
from sync.entity import MergeKind
from sync.errors import SyncError
from sync.subjects import SubjectTokenError, check_token

WIRE_VERSION: Final = 1
INT_MIN: Final = -(2**63)
INT_LIMIT: Final = 2**64  # MessagePack ints are in [INT_MIN, INT_LIMIT)
HLC_LIMIT: Final = 2**64

Tree = dict[str, object]


class WireError(SyncError):
    """Base for every problem with encoding or decoding wire data."""


class UnencodableValueError(WireError):
    """A value has a type no encoding here defines."""

    def __init__(self, value: object, where: str = "value") -> None:
        self.value_type, self.where = type(value).__name__, where
        super().__init__(f"{where}: cannot encode a {self.value_type}")


class BatchTooLargeError(WireError):
    """A batch is bigger than the receiver accepts."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size, self.max_bytes = size, max_bytes
        super().__init__(f"batch of {size} bytes exceeds the limit of {max_bytes} bytes")


class NotMessagePackError(WireError):
    """The bytes do not decode as one MessagePack value."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"batch is not valid msgpack: {reason}")


class UnsupportedWireVersionError(WireError):
    """A batch has a wire version this code cannot read."""

    def __init__(self, version: int, known: int = WIRE_VERSION) -> None:
        self.version, self.known = version, known
        if version > known:
            detail = f"newer than the newest this node knows ({known}); upgrade this node"
        else:
            detail = "wire versions start at 1"
        super().__init__(f"batch has wire version {version}, {detail}")


class MalformedBatchError(WireError):
    """A key of a batch (or stored state) is missing or has the wrong type or value."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"wire field {where}: {problem}" if where else f"wire data: {problem}")


class BatchHeaderMismatchError(WireError):
    """A batch's ops disagree with its header (origin or sequence numbers)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"batch {where} disagrees with its header: {problem}")


class OpTooLargeError(WireError):
    """One op alone encodes larger than a batch may be."""

    def __init__(self, origin: str, seq: int, size: int, max_bytes: int) -> None:
        self.origin, self.seq, self.size, self.max_bytes = origin, seq, size, max_bytes
        super().__init__(f"op {origin}/{seq} encodes to {size} bytes, over the batch limit of {max_bytes}")


# --- canonical encoding -------------------------------------------------------------------


def _uvarint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def _sized(tag: bytes, payload: bytes, out: bytearray) -> None:
    out += tag
    _uvarint(len(payload), out)
    out += payload


def _encode(value: object, out: bytearray) -> None:
    match value:
        case None:
            out += b"N"
        case bool() | int():
            n = int(value)
            _sized(b"I", n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True), out)
        case float():
            out += b"F"
            out += float_bits(value).to_bytes(8, "big")
        case str():
            _sized(b"S", value.encode("utf-8", "surrogatepass"), out)
        case bytes() | bytearray() | memoryview():
            _sized(b"B", bytes(value), out)
        case frozenset() | set():
            out += b"E"
            _uvarint(len(value), out)
            for item in sorted(canonical(v) for v in value):
                out += item
        case list() | tuple():
            out += b"L"
            _uvarint(len(value), out)
            for v in value:
                _encode(v, out)
        case Mapping():
            out += b"D"
            _uvarint(len(value), out)
            for k, v in sorted((canonical(k), canonical(v)) for k, v in value.items()):
                out += k
                out += v
        case _:
            raise UnencodableValueError(value)


def canonical(value: object) -> bytes:
    """The canonical, self-delimiting, type-tagged encoding of ``value``.

    Raises:
        UnencodableValueError: ``value`` holds a type the encoding does not define.
    """
    out = bytearray()
    _encode(value, out)
    return bytes(out)


# --- batches --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpBatch:
    """Consecutive ops of one origin, as published to ``ec.ops.<region>.<node>``.

    Raises:
        UnsupportedWireVersionError: ``version`` is not one this code writes.
        MalformedBatchError: the region or node id is not a subject token.
        BatchHeaderMismatchError: an op's origin or seq disagrees with the header.
    """

    version: int
    region: str
    node_id: str
    first_seq: int
    last_seq: int
    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.version <= WIRE_VERSION:
            raise UnsupportedWireVersionError(self.version)
        for name, what, token in (("region", "region", self.region), ("node_id", "node id", self.node_id)):
            try:
                check_token(token, what)
            except SubjectTokenError as exc:
                raise MalformedBatchError(name, exc.problem) from None
        if not self.ops:
            raise BatchHeaderMismatchError("ops", "a batch holds at least one op")
        if self.first_seq < 1:
            raise BatchHeaderMismatchError("first_seq", f"sequence numbers start at 1, got {self.first_seq}")
        for i, op in enumerate(self.ops):
            if op.origin != self.node_id:
                raise BatchHeaderMismatchError(f"ops[{i}].origin", f"{op.origin!r} is not {self.node_id!r}")
            if op.seq != self.first_seq + i:
                raise BatchHeaderMismatchError(
                    f"ops[{i}].seq", f"expected {self.first_seq + i}, got {op.seq}"
                )
        if self.last_seq != self.ops[-1].seq:
            raise BatchHeaderMismatchError(
                "last_seq", f"is {self.last_seq} but the last op is {self.ops[-1].seq}"
            )


def make_batch(region: str, node_id: str, ops: Sequence[Op]) -> OpBatch:
    """A current-version batch of ``ops`` with the header they imply."""
    first, last = (ops[0].seq, ops[-1].seq) if ops else (0, 0)
    return OpBatch(WIRE_VERSION, region, node_id, first, last, tuple(ops))


def _version_tree(v: Version) -> list[object]:
    return [v.hlc, v.node]


def _value_tree(value: StorageValue, tree: Tree) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value < INT_LIMIT:
        tree["bigint"] = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    else:
        tree["value"] = value


def change_to_tree(change: FieldChange) -> Tree:
    """The tagged wire dict of one field change."""
    tree: Tree = {"kind": str(change.kind)}
    if change.register is not None:
        _value_tree(change.register.value, tree)
        tree["version"] = _version_tree(change.register.version)
    if change.delta is not None:
        tree["add"] = {e: _version_tree(v) for e, v in sorted(change.delta.add.items())}
        tree["remove"] = {
            e: sorted(_version_tree(v) for v in tags) for e, tags in sorted(change.delta.remove.items())
        }
    if change.counter is not None:
        tree["counts"] = dict(sorted(change.counter.counts.items()))
    return tree


def op_to_tree(op: Op) -> Tree:
    """The wire dict of one op."""
    tree: Tree = {
        "entity": op.entity,
        "record_id": op.record_id,
        "origin": op.origin,
        "seq": op.seq,
        "hlc": op.hlc,
        "changes": {name: change_to_tree(c) for name, c in sorted(op.changes.items())},
    }
    if op.delete:
        tree["delete"] = True
    if op.restore:
        tree["restore"] = True
    return tree


def batch_to_tree(batch: OpBatch) -> Tree:
    """The wire dict of a batch."""
    return {
        "version": batch.version,
        "region": batch.region,
        "node_id": batch.node_id,
        "first_seq": batch.first_seq,
        "last_seq": batch.last_seq,
        "ops": [op_to_tree(op) for op in batch.ops],
    }


# --- decoding ---------------------------------------------------------------------------------

_MISSING: Final = object()


def _get(tree: Mapping[object, object], key: str, where: str, default: object = _MISSING) -> object:
    if key in tree:
        return tree[key]
    if default is _MISSING:
        raise MalformedBatchError(f"{where}.{key}" if where else key, "is missing")
    return default


def _mapping(value: object, where: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        raise MalformedBatchError(where, f"expected a map, got {type(value).__name__}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedBatchError(where, f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object, where: str, lo: int = INT_MIN, limit: int = INT_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBatchError(where, f"expected an integer, got {type(value).__name__}")
    if not lo <= value < limit:
        raise MalformedBatchError(where, f"must be in [{lo}, {limit}), got {value}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedBatchError(where, f"expected true or false, got {type(value).__name__}")
    return value


def _version(value: object, where: str) -> Version:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise MalformedBatchError(where, "expected a version [hlc, node]")
    return Version(_int(value[0], f"{where}[0]", 0, HLC_LIMIT), _str(value[1], f"{where}[1]"))


def _str_keyed(value: object, where: str) -> dict[str, object]:
    items = _mapping(value, where)
    return {_str(k, f"{where} key"): v for k, v in items.items()}


def _register(tree: Mapping[object, object], where: str) -> Register:
    version = _version(_get(tree, "version", where), f"{where}.version")
    if "bigint" in tree:
        raw = tree["bigint"]
        if not isinstance(raw, bytes) or not raw:
            raise MalformedBatchError(f"{where}.bigint", "expected non-empty bytes")
        return Register(int.from_bytes(raw, "big", signed=True), version)
    value = _get(tree, "value", where)
    if value is not None and not isinstance(value, str | int | float | bytes):
        raise MalformedBatchError(f"{where}.value", f"a register cannot hold a {type(value).__name__}")
    return Register(value, version)


def _delta(tree: Mapping[object, object], where: str) -> SetDelta:
    add = {
        e: _version(v, f"{where}.add[{e!r}]")
        for e, v in _str_keyed(_get(tree, "add", where, {}), f"{where}.add").items()
    }
    remove: dict[str, frozenset[Version]] = {}
    for e, tags in _str_keyed(_get(tree, "remove", where, {}), f"{where}.remove").items():
        at = f"{where}.remove[{e!r}]"
        if not isinstance(tags, list | tuple):
            raise MalformedBatchError(at, "expected a list of versions")
        remove[e] = frozenset(_version(t, f"{at}[{i}]") for i, t in enumerate(tags))
    return SetDelta(add, remove)


def _counter(tree: Mapping[object, object], where: str) -> Counter:
    counts = _str_keyed(_get(tree, "counts", where), f"{where}.counts")
    return Counter({n: _int(c, f"{where}.counts[{n!r}]", 0) for n, c in counts.items()})


def change_from_tree(value: object, where: str = "change") -> FieldChange:
    """Decode one tagged field change; raise :class:`MalformedBatchError` naming the problem."""
    tree = _mapping(value, where)
    kind = _str(_get(tree, "kind", where), f"{where}.kind")
    match kind:
        case MergeKind.REGISTER:
            return FieldChange(MergeKind.REGISTER, register=_register(tree, where))
        case MergeKind.SET:
            return FieldChange(MergeKind.SET, delta=_delta(tree, where))
        case MergeKind.COUNTER:
            return FieldChange(MergeKind.COUNTER, counter=_counter(tree, where))
    raise MalformedBatchError(f"{where}.kind", f"unknown change kind {kind!r}")


def op_from_tree(value: object, where: str = "op") -> Op:
    """Decode one op; raise :class:`MalformedBatchError` naming the problem."""
    tree = _mapping(value, where)
    changes = _str_keyed(_get(tree, "changes", where, {}), f"{where}.changes")
    origin = _str(_get(tree, "origin", where), f"{where}.origin")
    seq = _int(_get(tree, "seq", where), f"{where}.seq", 0)
    try:
        return Op(
            entity=_str(_get(tree, "entity", where), f"{where}.entity"),
            record_id=_str(_get(tree, "record_id", where), f"{where}.record_id"),
            origin=origin,
            seq=seq,
            hlc=_int(_get(tree, "hlc", where), f"{where}.hlc", 0, HLC_LIMIT),
            changes={n: change_from_tree(c, f"{where}.changes[{n!r}]") for n, c in changes.items()},
            delete=_bool(_get(tree, "delete", where, False), f"{where}.delete"),
            restore=_bool(_get(tree, "restore", where, False), f"{where}.restore"),
        )
    except CRDTError as exc:
        raise MalformedBatchError(where, str(exc)) from None


def batch_from_tree(value: object) -> OpBatch:
    """Decode a batch from its wire dict.

    Raises:
        UnsupportedWireVersionError: the batch is of a newer (or no) wire version.
        MalformedBatchError: a key is missing or ill-typed.
        BatchHeaderMismatchError: ops disagree with the header.
    """
    tree = _mapping(value, "")
    version = _int(_get(tree, "version", ""), "version")
    if not 1 <= version <= WIRE_VERSION:
        raise UnsupportedWireVersionError(version)
    ops = _get(tree, "ops", "")
    if not isinstance(ops, list | tuple):
        raise MalformedBatchError("ops", f"expected a list, got {type(ops).__name__}")
    return OpBatch(
        version=version,
        region=_str(_get(tree, "region", ""), "region"),
        node_id=_str(_get(tree, "node_id", ""), "node_id"),
        first_seq=_int(_get(tree, "first_seq", ""), "first_seq"),
        last_seq=_int(_get(tree, "last_seq", ""), "last_seq"),
        ops=tuple(op_from_tree(op, f"ops[{i}]") for i, op in enumerate(ops)),
    )


# --- record states (for stores that persist CRDT metadata) -------------------------------------


def state_to_tree(state: RecordState) -> Tree:
    """A record state as a plain dict (field states tagged by kind, like changes)."""
    fields: dict[str, object] = {}
    for name, s in sorted(state.fields.items()):
        match s:
            case Register():
                fields[name] = change_to_tree(FieldChange(MergeKind.REGISTER, register=s))
            case Counter():
                fields[name] = change_to_tree(FieldChange(MergeKind.COUNTER, counter=s))
            case _:
                fields[name] = orset_to_tree(s)
    tree: Tree = {"fields": fields}
    if state.deleted is not None:
        tree["deleted"] = change_to_tree(FieldChange(MergeKind.REGISTER, register=state.deleted))
    return tree


def orset_to_tree(state: ORSet) -> Tree:
    """An OR-set state as a plain dict: ``{"kind": "set", "adds": ..., "removes": ...}``."""
    return {
        "kind": str(MergeKind.SET),
        "adds": {e: sorted(_version_tree(v) for v in t) for e, t in sorted(state.adds.items())},
        "removes": {e: sorted(_version_tree(v) for v in t) for e, t in sorted(state.removes.items())},
    }


def orset_from_tree(value: object, where: str = "set") -> ORSet:
    """Decode :func:`orset_to_tree` output; raise :class:`MalformedBatchError` naming the problem."""
    tree = _mapping(value, where)
    adds = _tags(_get(tree, "adds", where, {}), f"{where}.adds")
    return ORSet(adds, _tags(_get(tree, "removes", where, {}), f"{where}.removes"))


def _tags(value: object, where: str) -> dict[str, frozenset[Version]]:
    out: dict[str, frozenset[Version]] = {}
    for e, tags in _str_keyed(value, where).items():
        if not isinstance(tags, list | tuple):
            raise MalformedBatchError(f"{where}[{e!r}]", "expected a list of versions")
        out[e] = frozenset(_version(t, f"{where}[{e!r}][{i}]") for i, t in enumerate(tags))
    return out


def state_from_tree(value: object) -> RecordState:
    """Decode :func:`state_to_tree` output; raise :class:`MalformedBatchError` naming the problem."""
    tree = _mapping(value, "state")
    fields: dict[str, Register | ORSet | Counter] = {}
    for name, raw in _str_keyed(_get(tree, "fields", "state"), "state.fields").items():
        where = f"state.fields[{name!r}]"
        ftree = _mapping(raw, where)
        if _get(ftree, "kind", where) == MergeKind.SET:
            fields[name] = orset_from_tree(ftree, where)
        else:
            fields[name] = change_from_tree(ftree, where).state()
    deleted = None
    if "deleted" in tree:
        deleted = _register(_mapping(tree["deleted"], "state.deleted"), "state.deleted")
    return RecordState(fields, deleted)
