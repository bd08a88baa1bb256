"""Worked examples of state digests, bucket maps and the digests report body."""

from __future__ import annotations

import math

import pytest

from sync.crdt import FieldChange, Op, Register, Version, fold
from sync.digest import (
    EMPTY_DIGEST,
    DigestFormatError,
    DigestReport,
    DuplicateRecordError,
    bucket_digests,
    bucket_of,
    combine,
    differing_buckets,
    digest,
    digests_json,
    from_json,
    report,
    state_rows,
    to_json,
)
from sync.entity import MergeKind
from sync.wire import UnencodableValueError

ROWS = [
    ("t1", {"title": "a", "tags": frozenset({"x", "y"}), "n": 2**70}),
    ("t2", {"title": "😀", "score": 1.5}),
]


def test_digest_is_hex_sha256_and_ignores_row_order() -> None:
    d = digest(ROWS)
    assert len(d) == 64
    assert int(d, 16) >= 0
    assert digest(reversed(ROWS)) == d
    assert digest(()) == EMPTY_DIGEST != d


def test_digest_changes_with_any_value_id_or_row() -> None:
    d = digest(ROWS)
    assert digest([("t1", {**ROWS[0][1], "title": "b"}), ROWS[1]]) != d
    assert digest([("t3", ROWS[0][1]), ROWS[1]]) != d
    assert digest(ROWS[:1]) != d
    assert digest([ROWS[0], ("t2", {"title": "😀", "score": 1.5, "extra": 0})]) != d


def test_digest_types_are_tagged() -> None:
    assert digest([("t", {"v": 1})]) != digest([("t", {"v": 1.0})])
    assert digest([("t", {"v": "1"})]) != digest([("t", {"v": b"1"})])
    assert digest([("t", {"v": 0})]) != digest([("t", {"v": ""})])


def test_none_fields_count_as_absent() -> None:
    assert digest([("t", {"a": 1, "b": None})]) == digest([("t", {"a": 1})])


def test_float_rule_nan_is_one_value_and_negative_zero_is_zero() -> None:
    assert digest([("t", {"f": math.nan})]) == digest([("t", {"f": -math.nan})])
    assert digest([("t", {"f": -0.0})]) == digest([("t", {"f": 0.0})])
    assert digest([("t", {"f": math.inf})]) != digest([("t", {"f": math.nan})])


def test_bool_counts_as_its_storage_int() -> None:
    assert digest([("t", {"flag": True})]) == digest([("t", {"flag": 1})])


def test_duplicate_record_ids_are_refused() -> None:
    with pytest.raises(DuplicateRecordError, match="'t1' appears twice"):
        digest([("t1", {}), ("t1", {"a": 1})])


def test_values_outside_storage_form_are_refused() -> None:
    with pytest.raises(UnencodableValueError, match="cannot encode a object"):
        digest([("t1", {"a": object()})])


def test_buckets_locate_the_differing_rows() -> None:
    rows = [(f"t{i}", {"v": i}) for i in range(50)]
    changed = [*rows[:10], ("t10", {"v": -1}), *rows[11:]]
    a, b = bucket_digests(rows, 16), bucket_digests(changed, 16)
    assert differing_buckets(a, b) == {bucket_of("t10", 16)}
    assert combine(a) != combine(b)
    assert combine(a) == combine(bucket_digests(reversed(rows), 16))


def test_empty_buckets_count_the_same_listed_or_not() -> None:
    a = bucket_digests(ROWS, 8)
    with_empty = {**a, 99: EMPTY_DIGEST}
    assert combine(with_empty) == combine(a)
    assert differing_buckets(a, with_empty) == set()
    assert bucket_digests([]) == {}


def test_bucket_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        bucket_digests(ROWS, 0)


def test_state_rows_materialize_live_records_of_one_entity() -> None:
    title = FieldChange(MergeKind.REGISTER, register=Register("x", Version(1, "n")))
    states = fold(
        [
            Op("ticket", "t1", "n", 1, 1, {"title": title}),
            Op("ticket", "t2", "n", 2, 2, {"title": title}),
            Op("ticket", "t2", "n", 3, 3, delete=True),
            Op("customer", "c1", "n", 4, 4, {"title": title}),
        ]
    )
    assert state_rows(states, "ticket") == [("t1", {"title": "x"})]


def test_report_and_json_body_shape() -> None:
    r = report("eu-west", "ticket", ROWS)
    assert r == DigestReport("eu-west", "ticket", 2, digest(ROWS))
    assert to_json(r) == {"count": 2, "digest": r.digest}
    body = digests_json("eu-west", [r, report("eu-west", "customer", [])])
    assert body == {
        "region": "eu-west",
        "entities": {
            "customer": {"count": 0, "digest": EMPTY_DIGEST},
            "ticket": {"count": 2, "digest": r.digest},
        },
    }
    assert set(from_json(body)) == {r, DigestReport("eu-west", "customer", 0, EMPTY_DIGEST)}


def test_json_body_refuses_mixed_regions_and_repeats() -> None:
    r = report("eu-west", "ticket", ROWS)
    with pytest.raises(DigestFormatError, match="is for region 'eu-west', not 'ap-east'"):
        digests_json("ap-east", [r])
    with pytest.raises(DigestFormatError, match="appears twice"):
        digests_json("eu-west", [r, r])


E = EMPTY_DIGEST


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([], "body"),
        ({"entities": {}}, "region"),
        ({"region": "r", "entities": []}, "entities"),
        ({"region": "r", "entities": {"ticket": 1}}, "entities.ticket"),
        (
            {"region": "r", "entities": {"ticket": {"count": -1, "digest": EMPTY_DIGEST}}},
            "entities.ticket.count",
        ),
        (
            {"region": "r", "entities": {"ticket": {"count": True, "digest": EMPTY_DIGEST}}},
            "entities.ticket.count",
        ),
        ({"region": "r", "entities": {"ticket": {"count": 1, "digest": "ABC"}}}, "entities.ticket.digest"),
    ],
)
def test_from_json_names_the_bad_key(body: object, where: str) -> None:
    with pytest.raises(DigestFormatError) as info:
        from_json(body)
    assert info.value.where == where
