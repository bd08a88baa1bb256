"""The wire codec: op batches as versioned MessagePack.

Theory of operation
-------------------
Everything about the *shape* of the wire format lives in the pure
:mod:`sync.wire` (the op tree, its checks, :class:`OpBatch`); this adapter only
packs that tree with MessagePack and translates the library's errors into
:class:`sync.wire.WireError`, so a caller handles one exception type whatever
arrives: too many bytes, bytes that are not MessagePack, a newer wire version,
missing or ill-typed keys, or ops that disagree with the batch header.

Decoding is defensive: the size limit is checked before unpacking, MessagePack
extension types and non-string map keys are refused, and the unpacker's own
limits follow from the input size (MessagePack 1.0 defaults). Floats are packed
as float64, so -0.0 and NaN payloads arrive bit for bit; register equality then
follows the float rule of :mod:`sync.crdt`, which is what makes
``decode_batch(encode_batch(b)) == b`` hold with NaN values too.

:func:`split_batches` cuts a node's outbox into batches that respect both an
op count and an encoded size limit (measured, not estimated), so every batch
it returns encodes to at most ``max_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgpack

from sync.crdt import FieldChange, Op, ORSet, RecordState
from sync.wire import (
    WIRE_VERSION,
    BatchTooLargeError,
    MalformedBatchError,
    NotMessagePackError,
    OpBatch,
    OpTooLargeError,
    UnencodableValueError,
    UnsupportedWireVersionError,
    WireError,
    batch_from_tree,
    batch_to_tree,
    change_from_tree,
    change_to_tree,
    make_batch,
    op_to_tree,
    orset_from_tree,
    orset_to_tree,
    state_from_tree,
    state_to_tree,
)

__all__ = [
    "WIRE_VERSION",
    "OpBatch",
    "UnsupportedWireVersionError",
    "WireError",
    "decode_batch",
    "decode_changes",
    "decode_orset",
    "decode_state",
    "encode_batch",
    "encode_changes",
    "encode_orset",
    "encode_state",
    "split_batches",
]

DEFAULT_MAX_BYTES: Final = 1_000_000
_ARRAY_HEADER_MAX: Final = 5  # a MessagePack array header is at most 5 bytes


def _pack(tree: object, what: str) -> bytes:
    try:
        packed: bytes = msgpack.packb(tree, use_bin_type=True, use_single_float=False)
    except (TypeError, ValueError, OverflowError) as exc:  # msgpack's Pack* errors subclass these
        raise UnencodableValueError(tree, f"{what} ({exc})") from exc
    return packed


def _unpack(data: bytes, max_bytes: int) -> object:
    if len(data) > max_bytes:
        raise BatchTooLargeError(len(data), max_bytes)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except WireError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise NotMessagePackError(
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        ) from None


def _refuse_ext(code: int, data: bytes) -> object:
    raise NotMessagePackError(f"extension type {code} is not part of the wire format")


def encode_batch(batch: OpBatch) -> bytes:
    """Pack a batch.

    Raises:
        UnencodableValueError: a string holds a lone surrogate, or a counter
            total is outside the 64-bit range.
    """
    return _pack(batch_to_tree(batch), "batch")


def decode_batch(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OpBatch:
    """Unpack and check a batch.

    Raises:
        WireError: naming the problem; subclasses tell apart too large
            (``BatchTooLargeError``), not MessagePack (``NotMessagePackError``),
            a newer or invalid version (``UnsupportedWireVersionError``),
            missing or ill-typed keys (``MalformedBatchError``) and ops that
            disagree with the header (``BatchHeaderMismatchError``).
    """
    return batch_from_tree(_unpack(data, max_bytes))


def encode_state(state: RecordState) -> bytes:
    """Pack a record's CRDT state, for stores that keep it as a blob."""
    return _pack(state_to_tree(state), "state")


def decode_state(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> RecordState:
    """Unpack :func:`encode_state` output; raise :class:`WireError` naming the problem."""
    return state_from_tree(_unpack(data, max_bytes))


def encode_changes(changes: Mapping[str, FieldChange]) -> bytes:
    """Pack one operation's field changes, as the change log keeps them."""
    return _pack({name: change_to_tree(c) for name, c in changes.items()}, "changes")


def decode_changes(data: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, FieldChange]:
    """Unpack :func:`encode_changes` output; raise :class:`WireError` naming the problem."""
    if data is None:
        return {}
    tree = _unpack(data, max_bytes)
    if not isinstance(tree, dict):
        raise MalformedBatchError("changes", "expected a map of field changes")
    return {str(name): change_from_tree(c, f"changes[{name!r}]") for name, c in tree.items()}


def encode_orset(state: ORSet) -> bytes:
    """Pack one set field's OR-set state."""
    return _pack(orset_to_tree(state), "set")


def decode_orset(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ORSet:
    """Unpack :func:`encode_orset` output; raise :class:`WireError` naming the problem."""
    return orset_from_tree(_unpack(data, max_bytes))


def split_batches(
    region: str, node_id: str, ops: Sequence[Op], *, max_bytes: int = 256_000, max_ops: int = 1000
) -> list[OpBatch]:
    """Cut consecutive ops of ``node_id`` into batches of at most ``max_ops`` ops and ``max_bytes`` bytes.

    Raises:
        OpTooLargeError: one op alone does not fit in ``max_bytes``.
        BatchHeaderMismatchError: the ops are not ``node_id``'s, in consecutive sequence order.
        ValueError: ``max_ops`` is not positive.
    """
    if max_ops < 1:
        raise ValueError(f"max_ops must be positive, got {max_ops}")
    if not ops:
        return []
    make_batch(region, node_id, ops)  # check origin and sequence before cutting
    # A batch is its header map plus an array of ops; measuring a one-op batch's header
    # with the widest sequence numbers bounds every batch's header.
    header = len(_pack({**batch_to_tree(make_batch(region, node_id, ops[-1:])), "ops": []}, "batch")) - 1
    budget = max_bytes - header - _ARRAY_HEADER_MAX
    batches: list[OpBatch] = []
    current: list[Op] = []
    used = 0
    for op in ops:
        size = len(_pack(op_to_tree(op), "op"))
        if size > budget:
            raise OpTooLargeError(op.origin, op.seq, size + header + _ARRAY_HEADER_MAX, max_bytes)
        if current and (len(current) >= max_ops or used + size > budget):
            batches.append(make_batch(region, node_id, current))
            current, used = [], 0
        current.append(op)
        used += size
    batches.append(make_batch(region, node_id, current))
    return batches
