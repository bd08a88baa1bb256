"""Laws of the merge rules: joins, order- and duplicate-free replay, safe tombstone collection.

Histories come from at least five replicas. Each op is made by one replica
from *its* view: the fold of a random subset of earlier ops (plus its own), so
replicas edit concurrently without seeing each other, stamp with their own
HLC (one more than anything they saw, so equal HLCs across replicas are
common) and remove only the set tags they observed. Values include None,
non-BMP text, integers beyond 64 bits, NaN, -0.0, infinities and bytes.

The strategies here are shared with the digest and wire property tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.crdt import (
    Counter,
    FieldChange,
    FieldState,
    Op,
    ORSet,
    RecordState,
    Register,
    StorageValue,
    Version,
    apply_op,
    collectable,
    fold,
    is_live,
    merge_counter,
    merge_orset,
    merge_record,
    merge_register,
    set_delta,
)
from sync.entity import MergeKind

REPLICAS = ("n0", "n1", "n2", "n3", "n4", "hub")
RECORDS = ("r1", "r2", "r3")
ELEMENTS = ("a", "b", "😀", "𝄞")
ENTITY = "ticket"
LAWS = settings(max_examples=150, deadline=None)
HISTORIES = settings(max_examples=60, deadline=None)

# --- values and states -----------------------------------------------------------------------

texts = st.sampled_from(["", "😀", "𝄞", "é", "x"]) | st.text(max_size=5)
ints = st.integers(-(2**70), 2**70) | st.sampled_from([2**64 - 1, 2**64, 2**64 + 1, -(2**63) - 1, -(2**63)])
floats = st.floats() | st.sampled_from([math.nan, -math.nan, -0.0, 0.0, math.inf, -math.inf])
storage_values: st.SearchStrategy[StorageValue] = st.one_of(
    st.none(), texts, ints, floats, st.binary(max_size=5)
)
versions = st.builds(Version, st.integers(0, 6), st.sampled_from(REPLICAS))
tag_sets = st.frozensets(versions, max_size=3)

registers = st.builds(Register, storage_values, versions)
orsets = st.builds(
    ORSet,
    st.dictionaries(st.sampled_from(ELEMENTS), tag_sets, max_size=3),
    st.dictionaries(st.sampled_from(ELEMENTS), tag_sets, max_size=3),
)
counters = st.builds(Counter, st.dictionaries(st.sampled_from(REPLICAS), st.integers(0, 2**70), max_size=3))

# each field name has one kind, as in an entity declaration
FIELD_KINDS: dict[str, st.SearchStrategy[FieldState]] = {
    "title": registers,
    "score": registers,
    "tags": orsets,
    "hits": counters,
}


@st.composite
def record_states(draw: st.DrawFn) -> RecordState:
    """An arbitrary record state: any subset of the fields, maybe a deletion register."""
    names = draw(st.lists(st.sampled_from(sorted(FIELD_KINDS)), unique=True))
    deleted = draw(st.none() | st.builds(Register, st.booleans(), versions))
    return RecordState({n: draw(FIELD_KINDS[n]) for n in names}, deleted)


# --- histories -------------------------------------------------------------------------------


def _change(draw: st.DrawFn, name: str, state: RecordState, version: Version) -> FieldChange:
    current = state.fields.get(name)
    if name == "tags":
        before = current if isinstance(current, ORSet) else ORSet()
        wanted = draw(st.frozensets(st.sampled_from(ELEMENTS)))
        return FieldChange(MergeKind.SET, delta=set_delta(before, wanted, version))
    if name == "hits":
        counts = current.counts if isinstance(current, Counter) else {}
        total = counts.get(version.node, 0) + draw(st.integers(0, 3))
        return FieldChange(MergeKind.COUNTER, counter=Counter({version.node: total}))
    return FieldChange(MergeKind.REGISTER, register=Register(draw(storage_values), version))


@st.composite
def histories(draw: st.DrawFn, *, max_ops: int = 20) -> list[Op]:
    """Ops of several replicas, each made from that replica's partial view."""
    ops: list[Op] = []
    last_hlc = dict.fromkeys(REPLICAS, 0)
    seq = dict.fromkeys(REPLICAS, 0)
    for _ in range(draw(st.integers(1, max_ops))):
        node = draw(st.sampled_from(REPLICAS))
        heard = draw(st.lists(st.booleans(), min_size=len(ops), max_size=len(ops)))
        observed = [o for o, h in zip(ops, heard, strict=True) if h or o.origin == node]
        record = draw(st.sampled_from(RECORDS))
        hlc = max([last_hlc[node], *(o.hlc for o in observed)]) + 1 + draw(st.integers(0, 1))
        last_hlc[node] = hlc
        seq[node] += 1
        version = Version(hlc, node)
        view = fold(observed).get((ENTITY, record), RecordState())
        names = draw(st.lists(st.sampled_from(sorted(FIELD_KINDS)), unique=True, max_size=3))
        flag = draw(st.sampled_from(["", "", "", "delete", "restore"]))
        ops.append(
            Op(
                ENTITY,
                record,
                node,
                seq[node],
                hlc,
                {n: _change(draw, n, view, version) for n in names},
                delete=flag == "delete",
                restore=flag == "restore",
            )
        )
    return ops


@st.composite
def deliveries(draw: st.DrawFn, ops: Sequence[Op]) -> list[Op]:
    """``ops`` in a random order, some of them more than once."""
    extra = draw(st.lists(st.sampled_from(ops), max_size=len(ops)))
    return draw(st.permutations([*ops, *extra]))


@st.composite
def history_and_replicas(draw: st.DrawFn, replicas: int = 5) -> tuple[list[Op], list[list[Op]]]:
    """A history and what each of ``replicas`` replicas receives: every op, any order, duplicates."""
    ops = draw(histories())
    return ops, [draw(deliveries(ops)) for _ in range(replicas)]


def replay(ops: Sequence[Op]) -> dict[tuple[str, str], RecordState]:
    """Apply ops one at a time, as a replica does."""
    states: dict[tuple[str, str], RecordState] = {}
    for op in ops:
        states[op.key] = apply_op(states.get(op.key), op)
    return states


def merge_states(
    a: dict[tuple[str, str], RecordState], b: dict[tuple[str, str], RecordState]
) -> dict[tuple[str, str], RecordState]:
    """State-based sync of two whole replicas."""
    merged = dict(a)
    for key, state in b.items():
        merged[key] = merge_record(merged[key], state) if key in merged else state
    return merged


# --- laws ------------------------------------------------------------------------------------


@LAWS
@given(a=st.none() | registers, b=st.none() | registers, c=st.none() | registers)
def test_merge_register_is_a_join(a: Register | None, b: Register | None, c: Register | None) -> None:
    assert merge_register(a, b) == merge_register(b, a)
    assert merge_register(merge_register(a, b), c) == merge_register(a, merge_register(b, c))
    assert merge_register(a, a) == a


@LAWS
@given(a=orsets, b=orsets, c=orsets)
def test_merge_orset_is_a_join(a: ORSet, b: ORSet, c: ORSet) -> None:
    assert merge_orset(a, b) == merge_orset(b, a)
    assert merge_orset(merge_orset(a, b), c) == merge_orset(a, merge_orset(b, c))
    assert merge_orset(a, a) == a


@LAWS
@given(a=counters, b=counters, c=counters)
def test_merge_counter_is_a_join(a: Counter, b: Counter, c: Counter) -> None:
    assert merge_counter(a, b) == merge_counter(b, a)
    assert merge_counter(merge_counter(a, b), c) == merge_counter(a, merge_counter(b, c))
    assert merge_counter(a, a) == a
    assert merge_counter(a, b).value() >= max(a.value(), b.value())


@LAWS
@given(a=record_states(), b=record_states(), c=record_states())
def test_merge_record_is_a_join(a: RecordState, b: RecordState, c: RecordState) -> None:
    assert merge_record(a, b) == merge_record(b, a)
    assert merge_record(merge_record(a, b), c) == merge_record(a, merge_record(b, c))
    assert merge_record(a, a) == a


@HISTORIES
@given(data=history_and_replicas())
def test_fold_ignores_order_and_duplicates(data: tuple[list[Op], list[list[Op]]]) -> None:
    ops, received = data
    reference = fold(ops)
    for delivery in received:
        assert fold(delivery) == reference
        assert replay(delivery) == reference


@HISTORIES
@given(ops=histories(), data=st.data())
def test_replicas_syncing_states_reach_the_state_of_all_ops(ops: list[Op], data: st.DataObject) -> None:
    # five replicas each merge some of the ops, then exchange whole states in a random order
    subsets = [data.draw(st.lists(st.sampled_from(ops), max_size=len(ops))) for _ in range(5)]
    subsets[0] = ops  # together they hold every op
    states = [fold(s) for s in subsets]
    order = data.draw(st.permutations(range(5)))
    merged: dict[tuple[str, str], RecordState] = {}
    for i in order:
        merged = merge_states(merged, states[i])
    assert merged == fold(ops)


@HISTORIES
@given(ops=histories(), data=st.data())
def test_apply_op_commutes(ops: list[Op], data: st.DataObject) -> None:
    a, b = data.draw(st.sampled_from(ops)), data.draw(st.sampled_from(ops))
    start = fold(data.draw(st.lists(st.sampled_from(ops), max_size=5))).get(a.key)
    if a.key == b.key:
        assert apply_op(apply_op(start, a), b) == apply_op(apply_op(start, b), a)
    assert apply_op(apply_op(start, a), a) == apply_op(start, a)


# --- tombstone collection --------------------------------------------------------------------


def stable_watermark(merged: set[int], ops: Sequence[Op]) -> int:
    """The highest HLC w such that the replica merged every op with hlc <= w (honestly computed)."""
    missing = [op.hlc for i, op in enumerate(ops) if i not in merged]
    return min(missing) - 1 if missing else max(op.hlc for op in ops)


@HISTORIES
@given(ops=histories(), data=st.data())
def test_collectable_never_returns_a_tombstone_a_known_replica_has_not_merged(
    ops: list[Op], data: st.DataObject
) -> None:
    indexes = st.sets(st.integers(0, len(ops) - 1))
    merged_by = {r: data.draw(indexes) for r in REPLICAS}
    seen = {r: stable_watermark(m, ops) for r, m in merged_by.items()}
    tombstones = [((i, op.key), op.version) for i, op in enumerate(ops) if op.delete]
    for i, _key in collectable(tombstones, seen):
        for replica, merged in merged_by.items():
            assert i in merged, f"{replica} has not merged the delete {ops[i]}"


@HISTORIES
@given(ops=histories())
def test_once_every_replica_merged_everything_every_tombstone_is_collectable(ops: list[Op]) -> None:
    everything = set(range(len(ops)))
    seen = {r: stable_watermark(everything, ops) for r in REPLICAS}
    tombstones = [(i, op.version) for i, op in enumerate(ops) if op.delete]
    assert collectable(tombstones, seen) == {i for i, _ in tombstones}


@HISTORIES
@given(ops=histories())
def test_liveness_is_decided_by_the_newest_delete_or_restore_alone(ops: list[Op]) -> None:
    states = fold(ops)
    for key, state in states.items():
        flags = [(op.version, op.delete) for op in ops if op.key == key and (op.delete or op.restore)]
        assert is_live(state) == (not flags or not max(flags)[1])
