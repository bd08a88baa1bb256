"""Laws of state digests: order-free, sensitive to every change, and equal exactly when states are."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sync.crdt import Op, fold, value_key
from sync.digest import Row, bucket_digests, combine, differing_buckets, digest, state_rows
from tests.property.test_crdt_properties import ENTITY, deliveries, histories, storage_values, texts

LAWS = settings(max_examples=150, deadline=None)
HISTORIES = settings(max_examples=50, deadline=None)

field_values = storage_values | st.frozensets(texts, max_size=3)
fields = st.dictionaries(st.sampled_from(["title", "score", "tags", "é", "😀"]), field_values, max_size=4)
rows = st.dictionaries(texts, fields, max_size=6)


def normal(rows: Mapping[str, Mapping[str, object]] | Sequence[Row]) -> dict[str, dict[str, object]]:
    """Rows compared by the rules, independently of the encoding: None is absent, floats by value_key."""

    def key(v: object) -> object:
        if isinstance(v, frozenset):
            return ("set", tuple(sorted(v)))
        return value_key(v)  # type: ignore[arg-type] # storage values only

    items = rows.items() if isinstance(rows, Mapping) else rows
    return {rid: {k: key(v) for k, v in f.items() if v is not None} for rid, f in items}


@LAWS
@given(table=rows, data=st.data())
def test_equal_rows_in_any_order_have_equal_digests(
    table: dict[str, dict[str, object]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(list(table.items())))
    assert digest(shuffled) == digest(table.items())
    assert combine(bucket_digests(shuffled, 8)) == combine(bucket_digests(table.items(), 8))


@LAWS
@given(table=rows, data=st.data())
def test_changing_a_value_changes_the_digest(
    table: dict[str, dict[str, object]], data: st.DataObject
) -> None:
    assume(table)
    rid = data.draw(st.sampled_from(sorted(table)))
    name = data.draw(st.sampled_from(["title", "score", "tags", "é", "😀"]))
    new = data.draw(field_values)
    changed = {**table, rid: {**table[rid], name: new}}
    assume(normal(changed) != normal(table))
    assert digest(changed.items()) != digest(table.items())
    buckets = bucket_digests(table.items(), 8)
    changed_buckets = bucket_digests(changed.items(), 8)
    assert combine(changed_buckets) != combine(buckets)
    assert len(differing_buckets(buckets, changed_buckets)) == 1


@LAWS
@given(table=rows, rid=texts, row=fields)
def test_adding_or_removing_a_row_changes_the_digest(
    table: dict[str, dict[str, object]], rid: str, row: dict[str, object]
) -> None:
    assume(rid not in table)
    assert digest({**table, rid: row}.items()) != digest(table.items())


@LAWS
@given(table=rows, data=st.data(), new_id=texts)
def test_renaming_a_record_changes_the_digest(
    table: dict[str, dict[str, object]], data: st.DataObject, new_id: str
) -> None:
    assume(table and new_id not in table)
    old_id = data.draw(st.sampled_from(sorted(table)))
    renamed = {(new_id if k == old_id else k): v for k, v in table.items()}
    assert digest(renamed.items()) != digest(table.items())


def variant(value: object) -> object:
    """The same value under the float rule, written differently: 0.0 as -0.0, NaN with another payload."""
    if isinstance(value, float) and value == 0.0:
        return -value
    if isinstance(value, float) and math.isnan(value):
        return -value
    return value


@LAWS
@given(a=rows, data=st.data())
def test_digests_and_bucket_maps_agree_with_row_set_equality(
    a: dict[str, dict[str, object]], data: st.DataObject
) -> None:
    respelled = {rid: {**{k: variant(v) for k, v in f.items()}, "unset": None} for rid, f in a.items()}
    b = data.draw(st.sampled_from([a, respelled]) | rows)
    same = normal(a) == normal(b)
    assert (digest(a.items()) == digest(b.items())) == same
    ba, bb = bucket_digests(a.items(), 4), bucket_digests(b.items(), 4)
    assert (combine(ba) == combine(bb)) == same
    assert (differing_buckets(ba, bb) == set()) == same


@HISTORIES
@given(ops=histories(), data=st.data())
def test_replicas_merging_the_same_ops_in_any_order_report_the_same_digest(
    ops: list[Op], data: st.DataObject
) -> None:
    reference = digest(state_rows(fold(ops), ENTITY))
    for _ in range(5):
        delivery = data.draw(deliveries(ops))
        assert digest(state_rows(fold(delivery), ENTITY)) == reference


@HISTORIES
@given(ops=histories(), data=st.data())
def test_digest_equality_is_materialized_state_equality(ops: list[Op], data: st.DataObject) -> None:
    some = st.lists(st.sampled_from(ops), max_size=len(ops))
    a = state_rows(fold(data.draw(some)), ENTITY)
    b = state_rows(fold(data.draw(some)), ENTITY)
    assert (digest(a) == digest(b)) == (normal(a) == normal(b))
