"""Laws of the wire: codec round trips, measured splitting, total decoding, injective canonical encoding."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.crdt import Op, StorageValue, fold, value_key
from sync.transport.codec import decode_batch, decode_state, encode_batch, encode_state, split_batches
from sync.wire import OpBatch, WireError, batch_to_tree, canonical, make_batch
from tests.property.test_crdt_properties import histories, storage_values

LAWS = settings(max_examples=150, deadline=None)
HISTORIES = settings(max_examples=50, deadline=None)


def by_origin(ops: list[Op]) -> dict[str, list[Op]]:
    """Each origin's ops in sequence order: what its outbox holds."""
    out: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        out[op.origin].append(op)
    return out


@st.composite
def batches(draw: st.DrawFn) -> OpBatch:
    outboxes = by_origin(draw(histories()))
    origin = draw(st.sampled_from(sorted(outboxes)))
    return make_batch(draw(st.sampled_from(["eu-west", "北京"])), origin, outboxes[origin])


@HISTORIES
@given(batch=batches())
def test_decode_inverts_encode(batch: OpBatch) -> None:
    assert decode_batch(encode_batch(batch)) == batch


@HISTORIES
@given(ops=histories(), max_bytes=st.integers(600, 3000), max_ops=st.integers(1, 6))
def test_split_batches_keep_every_op_in_order_within_both_limits(
    ops: list[Op], max_bytes: int, max_ops: int
) -> None:
    for origin, outbox in by_origin(ops).items():
        batches = split_batches("r", origin, outbox, max_bytes=max_bytes, max_ops=max_ops)
        assert [op for b in batches for op in b.ops] == outbox
        for b in batches:
            assert len(b.ops) <= max_ops
            encoded = encode_batch(b)
            assert len(encoded) <= max_bytes
            assert decode_batch(encoded, max_bytes=max_bytes) == b


@HISTORIES
@given(ops=histories())
def test_stored_record_states_round_trip(ops: list[Op]) -> None:
    for state in fold(ops).values():
        assert decode_state(encode_state(state)) == state


def _decodes_or_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_batch(data, max_bytes=1_000_000)


@LAWS
@given(data=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_wire_error_only(data: bytes) -> None:
    _decodes_or_wire_error(data)


msgpack_trees = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@LAWS
@given(tree=msgpack_trees)
def test_random_msgpack_values_decode_or_raise_wire_error_only(tree: object) -> None:
    _decodes_or_wire_error(msgpack.packb(tree))


@HISTORIES
@given(batch=batches(), data=st.data())
def test_corrupted_batches_decode_or_raise_wire_error_only(batch: OpBatch, data: st.DataObject) -> None:
    encoded = bytearray(encode_batch(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    _decodes_or_wire_error(bytes(encoded[:cut]))
    _decodes_or_wire_error(bytes(encoded))


@LAWS
@given(a=st.lists(storage_values, max_size=3), b=st.lists(storage_values, max_size=3))
def test_canonical_encoding_is_injective_up_to_the_value_rule(
    a: list[StorageValue], b: list[StorageValue]
) -> None:
    same = [value_key(v) for v in a] == [value_key(v) for v in b]
    assert (canonical(a) == canonical(b)) == same
    assert (canonical(frozenset(map(str, a))) == canonical(frozenset(map(str, b)))) == (
        set(map(str, a)) == set(map(str, b))
    )


def _paths(tree: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(tree, dict):
        for k, v in tree.items():
            found += _paths(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            found += _paths(v, (*path, i))
    return found


def _replace(tree: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, *rest = path
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree[head], tuple(rest), new)}
    assert isinstance(tree, list)
    assert isinstance(head, int)
    return [_replace(v, tuple(rest), new) if i == head else v for i, v in enumerate(tree)]


@HISTORIES
@given(batch=batches(), data=st.data())
def test_batches_with_one_node_replaced_decode_or_raise_wire_error_only(
    batch: OpBatch, data: st.DataObject
) -> None:
    tree = batch_to_tree(batch)
    path = data.draw(st.sampled_from(_paths(tree)))
    _decodes_or_wire_error(msgpack.packb(_replace(tree, path, data.draw(msgpack_trees))))
