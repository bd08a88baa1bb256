"""Worked examples of the merge rules: registers, OR-sets, counters, deletes, tombstone collection."""

from __future__ import annotations

import math
import struct

import pytest

from sync.crdt import (
    Counter,
    FieldChange,
    MalformedChangeError,
    MalformedOpError,
    MergeKindMismatchError,
    NegativeCountError,
    Op,
    ORSet,
    RecordState,
    Register,
    SetDelta,
    StorageValue,
    UnsupportedValueError,
    Version,
    apply_op,
    collectable,
    float_bits,
    fold,
    is_live,
    materialize,
    merge_counter,
    merge_orset,
    merge_record,
    merge_register,
    op_state,
    set_delta,
    value_key,
)
from sync.entity import MergeKind
from sync.errors import SyncError

V = Version


def reg(value: StorageValue, hlc: int, node: str = "n1") -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, V(hlc, node)))


def op(
    origin: str,
    seq: int,
    hlc: int,
    record: str = "t1",
    *,
    delete: bool = False,
    restore: bool = False,
    **changes: FieldChange,
) -> Op:
    return Op("ticket", record, origin, seq, hlc, changes, delete=delete, restore=restore)


# --- versions and registers ----------------------------------------------------------------


def test_versions_order_by_hlc_then_node_id() -> None:
    assert V(2, "a") > V(1, "z")
    assert V(1, "b") > V(1, "a")
    assert V(1, "a") == V(1, "a")


def test_register_last_writer_wins_by_hlc() -> None:
    old, new = Register("old", V(1, "z")), Register("new", V(2, "a"))
    assert merge_register(old, new) == new
    assert merge_register(new, old) == new


def test_register_equal_hlc_is_broken_by_node_id() -> None:
    a, b = Register("from a", V(7, "node-a")), Register("from b", V(7, "node-b"))
    assert merge_register(a, b) == b
    assert merge_register(b, a) == b


def test_register_none_is_the_bottom_and_none_values_are_values() -> None:
    cleared = Register(None, V(3, "n"))
    assert merge_register(None, cleared) == cleared
    assert merge_register(cleared, None) == cleared
    assert merge_register(None, None) is None
    assert merge_register(Register("x", V(2, "n")), cleared) == cleared


def test_register_same_version_different_values_still_merges_commutatively() -> None:
    a, b = Register("a", V(1, "n")), Register("b", V(1, "n"))
    assert merge_register(a, b) == merge_register(b, a) == b


def test_register_refuses_values_not_in_storage_form() -> None:
    with pytest.raises(UnsupportedValueError, match="not list") as info:
        Register([1], V(1, "n"))  # type: ignore[arg-type] # the point of the test
    assert isinstance(info.value, SyncError)


# --- floats -------------------------------------------------------------------------------------


def test_nan_registers_are_equal_whatever_the_payload() -> None:
    other_nan = struct.unpack(">d", bytes.fromhex("fff0000000000123"))[0]  # negative, with a payload
    assert math.isnan(other_nan)
    assert Register(math.nan, V(1, "n")) == Register(other_nan, V(1, "n"))
    assert hash(Register(math.nan, V(1, "n"))) == hash(Register(other_nan, V(1, "n")))
    assert float_bits(math.nan) == float_bits(-math.nan) == 0x7FF8000000000000


def test_negative_zero_counts_as_zero_but_merge_keeps_the_written_bits() -> None:
    assert Register(-0.0, V(1, "n")) == Register(0.0, V(1, "n"))
    assert float_bits(-0.0) == float_bits(0.0) == 0
    won = merge_register(Register(1.5, V(1, "n")), Register(-0.0, V(2, "n")))
    assert won is not None
    assert isinstance(won.value, float)
    assert math.copysign(1.0, won.value) == -1.0


def test_merge_never_compares_values_only_versions() -> None:
    nan_newer = Register(math.nan, V(2, "n"))
    assert merge_register(Register(math.inf, V(1, "n")), nan_newer) == nan_newer


def test_value_key_keeps_types_apart_but_bool_is_its_int() -> None:
    assert value_key(1) != value_key(1.0)
    assert value_key(True) == value_key(1)
    assert value_key("1") != value_key(b"1")
    assert value_key(None) != value_key(0)


# --- OR-sets ---------------------------------------------------------------------------------------


def test_orset_add_and_remove_of_an_observed_add() -> None:
    s = ORSet().add("vip", V(1, "a"))
    assert s.value() == {"vip"}
    removed = s.remove("vip")
    assert removed.value() == frozenset()
    assert removed.removes == {"vip": frozenset({V(1, "a")})}


def test_orset_add_wins_over_a_concurrent_remove() -> None:
    base = ORSet().add("x", V(1, "a"))
    removed_at_b = base.remove("x")  # b saw only tag (1, a)
    re_added_at_c = base.add("x", V(2, "c"))  # c adds again concurrently
    merged = merge_orset(removed_at_b, re_added_at_c)
    assert merged.value() == {"x"}
    assert merged.adds == {"x": frozenset({V(2, "c")})}
    assert merge_orset(re_added_at_c, removed_at_b) == merged


def test_orset_remove_arriving_before_its_add_keeps_the_add_dead() -> None:
    tombstone_only = ORSet(removes={"x": frozenset({V(1, "a")})})
    assert tombstone_only.add("x", V(1, "a")).value() == frozenset()
    assert tombstone_only.add("x", V(2, "a")).value() == {"x"}


def test_orset_removing_one_element_keeps_others_added_by_the_same_op() -> None:
    tag = V(1, "a")
    both = ORSet().apply(set_delta(ORSet(), frozenset({"x", "y"}), tag))
    assert both.value() == {"x", "y"}
    only_y = both.apply(set_delta(both, frozenset({"y"}), V(2, "a")))
    assert only_y.value() == {"y"}


def test_set_delta_adds_new_elements_and_tombstones_observed_tags() -> None:
    before = ORSet().add("a", V(1, "n")).add("b", V(2, "n")).add("b", V(3, "m"))
    delta = set_delta(before, frozenset({"a", "c"}), V(4, "n"))
    assert delta == SetDelta(add={"c": V(4, "n")}, remove={"b": frozenset({V(2, "n"), V(3, "m")})})
    assert before.apply(delta).value() == {"a", "c"}
    assert set_delta(before, before.value(), V(5, "n")) == SetDelta()


def test_orset_states_normalise_so_equal_histories_compare_equal() -> None:
    assert ORSet({"x": frozenset()}, {"y": frozenset()}) == ORSet()
    assert ORSet({"x": frozenset({V(1, "a")})}, {"x": frozenset({V(1, "a")})}).adds == {}


# --- counters -----------------------------------------------------------------------------------------


def test_counter_sums_per_node_totals_and_merges_by_maximum() -> None:
    a = Counter().increment("n1").increment("n1")
    b = Counter().increment("n2", 5)
    assert merge_counter(a, b).value() == 7
    stale_a = Counter({"n1": 1})
    assert merge_counter(merge_counter(a, b), stale_a).value() == 7
    assert merge_counter(a, a) == a


def test_counter_totals_never_go_down() -> None:
    with pytest.raises(NegativeCountError, match="only grow"):
        Counter().increment("n1", -1)
    with pytest.raises(NegativeCountError):
        Counter({"n1": -3})
    assert Counter({"n1": 0}) == Counter()


# --- records, deletes, restores ------------------------------------------------------------------------


def test_apply_op_merges_fields_by_kind() -> None:
    tags = set_delta(ORSet(), frozenset({"vip"}), V(1, "n1"))
    state = apply_op(
        None,
        op(
            "n1",
            1,
            1,
            title=reg("Router down", 1),
            tags=FieldChange(MergeKind.SET, delta=tags),
            hits=FieldChange(MergeKind.COUNTER, counter=Counter({"n1": 2})),
        ),
    )
    state = apply_op(state, op("n2", 1, 2, title=reg("Router down (Berlin)", 2, "n2")))
    assert materialize(state) == {"title": "Router down (Berlin)", "tags": frozenset({"vip"}), "hits": 2}
    assert is_live(state)


def test_delete_wins_over_a_concurrent_update() -> None:
    create = op("n1", 1, 10, title=reg("a", 10))
    delete = op("n1", 2, 20, delete=True)
    update = op("n2", 1, 20, title=reg("b", 20, "n2"))  # concurrent with the delete, even stamped later
    for order in ([create, delete, update], [update, delete, create], [delete, update, create]):
        state = fold(order)[("ticket", "t1")]
        assert not is_live(state)
        assert materialize(state) == {"title": "b"}  # fields keep merging underneath


def test_a_later_update_does_not_resurrect_a_deleted_record() -> None:
    state = fold([op("n1", 1, 10, title=reg("a", 10)), op("n1", 2, 20, delete=True)])[("ticket", "t1")]
    later = apply_op(state, op("n2", 1, 99, title=reg("b", 99, "n2")))
    assert not is_live(later)


def test_a_newer_restore_wins_over_the_delete_and_shows_merged_fields() -> None:
    ops = [
        op("n1", 1, 10, title=reg("a", 10)),
        op("n1", 2, 20, delete=True),
        op("n2", 1, 25, title=reg("edited while deleted", 25, "n2")),
        op("n2", 2, 30, restore=True),
    ]
    state = fold(ops)[("ticket", "t1")]
    assert is_live(state)
    assert materialize(state) == {"title": "edited while deleted"}
    assert state.deleted == Register(False, V(30, "n2"))


def test_an_older_restore_loses_to_the_delete() -> None:
    state = fold([op("n2", 1, 15, restore=True), op("n1", 1, 20, delete=True)])[("ticket", "t1")]
    assert not is_live(state)


def test_delete_wins_a_tie_with_a_restore_of_the_same_version() -> None:
    deleted = RecordState(deleted=Register(True, V(5, "n")))
    restored = RecordState(deleted=Register(False, V(5, "n")))
    assert not is_live(merge_record(deleted, restored))
    assert not is_live(merge_record(restored, deleted))


def test_apply_op_is_idempotent() -> None:
    o = op("n1", 1, 1, title=reg("x", 1), delete=True)
    once = apply_op(None, o)
    assert apply_op(once, o) == once
    assert op_state(o) == once


def test_fold_keeps_records_apart() -> None:
    states = fold([op("n1", 1, 1, "a", title=reg("x", 1)), op("n1", 2, 2, "b", title=reg("y", 2))])
    assert {k: materialize(s) for k, s in states.items()} == {
        ("ticket", "a"): {"title": "x"},
        ("ticket", "b"): {"title": "y"},
    }


def test_merging_a_register_with_a_set_is_refused() -> None:
    a = RecordState({"tags": Register("x", V(1, "n"))})
    b = RecordState({"tags": ORSet()})
    with pytest.raises(MergeKindMismatchError, match="'tags' cannot merge a register with a set"):
        merge_record(a, b)


def test_field_changes_carry_exactly_their_kinds_payload() -> None:
    with pytest.raises(MalformedChangeError, match="register change needs its register payload"):
        FieldChange(MergeKind.REGISTER)
    with pytest.raises(MalformedChangeError, match="must not carry a counter payload"):
        FieldChange(MergeKind.SET, delta=SetDelta(), counter=Counter())


def test_an_op_cannot_both_delete_and_restore() -> None:
    with pytest.raises(MalformedOpError, match="op n1/3: cannot both delete and restore"):
        op("n1", 3, 1, delete=True, restore=True)


def test_op_key_and_version() -> None:
    o = op("n1", 3, 42, "t9")
    assert o.key == ("ticket", "t9")
    assert o.version == V(42, "n1")


# --- tombstone collection --------------------------------------------------------------------


def test_tombstones_are_collected_only_once_every_replica_is_past_them() -> None:
    tombstones = [("t1", V(10, "n1")), ("t2", V(20, "n2")), ("t3", V(30, "n1"))]
    assert collectable(tombstones, {"n1": 25, "n2": 40, "hub": 20}) == {"t1", "t2"}
    assert collectable(tombstones, {"n1": 100, "n2": 100, "hub": 19}) == {"t1"}
    assert collectable(tombstones, {"n1": 100, "n2": 100, "hub": 100}) == {"t1", "t2", "t3"}


def test_no_known_replica_means_nothing_is_collectable() -> None:
    assert collectable([("t1", V(0, "n1"))], {}) == set()
