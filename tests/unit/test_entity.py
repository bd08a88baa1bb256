"""Entity declarations: validation, storage form, JSON schema and the declaration rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sync.entities import ENTITIES, TICKET, TICKET_TYPES
from sync.entity import (
    DataClass,
    Entity,
    EntityDeclarationError,
    Field,
    FieldProblem,
    FieldValueError,
    Kind,
    MergeKind,
    UnknownFieldError,
    ValidationError,
    Value,
    convert,
    encode_fields,
    format_instant,
    from_storage,
    json_schema,
    sqlite_columns,
    to_json,
    to_storage,
    validate,
)
from tests.strategies import EVERY_KIND

OPS = DataClass.OPERATIONAL
ALL_NAMES = tuple(f.name for f in EVERY_KIND.fields)
AT = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)


def problems(payload: dict[str, object], **kwargs: object) -> list[tuple[str, str]]:
    """The (field, problem) pairs ``validate`` reports for ``payload`` on EVERY_KIND."""
    with pytest.raises(ValidationError) as info:
        validate(EVERY_KIND, payload, **kwargs)  # type: ignore[arg-type]  # kwargs are validate's
    return [(p.field, p.problem) for p in info.value.problems]


def one_problem(name: str, raw: object) -> str:
    """The single problem validating ``{name: raw}`` reports, asserting it names the field."""
    found = problems({name: raw}, allowed=ALL_NAMES)
    assert len(found) == 1
    field, problem = found[0]
    assert field == name
    return problem


# --- validation: good values per kind ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("id", "T-01.a:b_c", "T-01.a:b_c"),
        ("id", "  x  ", "x"),
        ("text", "  padded  ", "padded"),
        ("text", "", ""),
        ("text", "工单：宽带故障", "工单：宽带故障"),
        ("title", "a" * 20, "a" * 20),
        ("count", 1, 1),
        ("count", 5, 5),
        ("ratio", 1, 1.0),
        ("ratio", 2.5, 2.5),
        ("flag", True, True),
        ("flag", False, False),
        ("at", "2026-03-02T09:30:15.123456Z", AT),
        ("at", "2026-03-02T11:30:15.123456+02:00", AT),
        ("colour", "green", "green"),
        ("phone", "+4930123456", "+4930123456"),
        ("phone", "+861012345678901", "+861012345678901"),
        ("language", "en", "en"),
        ("language", "zh-CN", "zh-CN"),
        ("language", "sr-Latn-RS", "sr-Latn-RS"),
        ("labels", ["b", " a ", "b"], frozenset({"a", "b"})),
        ("labels", [], frozenset()),
        ("doc", {"k": [1, {"x": None}]}, {"k": [1, {"x": None}]}),
        ("text", None, None),
        ("count", None, None),
        ("labels", None, None),
    ],
)
def test_good_values_convert_to_core_values(name: str, raw: object, expected: Value) -> None:
    values = validate(EVERY_KIND, {name: raw}, allowed=ALL_NAMES)
    assert values == {name: expected}
    assert type(values[name]) is type(expected)


def test_instants_come_back_in_utc() -> None:
    value = validate(EVERY_KIND, {"at": "2026-03-02T11:30:15.123456+02:00"}, allowed=("at",))["at"]
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC
    assert value.hour == 9


# --- validation: bad values per kind, with the exact problem text --------------------------


@pytest.mark.parametrize(
    ("name", "raw", "problem"),
    [
        # text-like kinds
        ("text", 5, "expected a string, got a number"),
        ("text", True, "expected a string, got a boolean"),
        ("text", ["a"], "expected a string, got a list"),
        ("text", {"a": 1}, "expected a string, got an object"),
        ("text", (1,), "expected a string, got tuple"),
        ("text", "x" * 21, "longer than 20 characters"),
        ("text", "a\x00b", "contains a NUL character"),
        ("title", "   ", "must not be empty"),
        ("title", None, "must not be null"),
        (
            "id",
            "-starts-with-dash",
            "must be 1-64 letters, digits or _.:- starting alphanumeric; got '-starts-with-dash'",
        ),
        ("id", "has space", "must be 1-64 letters, digits or _.:- starting alphanumeric; got 'has space'"),
        (
            "id",
            "x" * 65,
            "must be 1-64 letters, digits or _.:- starting alphanumeric; got '" + "x" * 65 + "'",
        ),
        ("id", None, "must not be null"),
        ("colour", "blue", "must be one of red, green; got 'blue'"),
        ("colour", "", "must be one of red, green; got ''"),
        ("phone", "030123456", "must be an E.164 number like +4930123456; got '030123456'"),
        ("phone", "+0301234567", "must be an E.164 number like +4930123456; got '+0301234567'"),
        ("phone", "+12345", "must be an E.164 number like +4930123456; got '+12345'"),
        ("language", "English", "must be a language tag like 'en' or 'zh-CN'; got 'English'"),
        ("language", "zh_CN", "must be a language tag like 'en' or 'zh-CN'; got 'zh_CN'"),
        # numbers and booleans
        ("count", "3", "expected an integer, got a string"),
        ("count", 2.0, "expected an integer, got a number"),
        ("count", True, "expected an integer, got a boolean"),
        ("count", 0, "must be at least 1; got 0"),
        ("count", 6, "must be at most 5; got 6"),
        ("ratio", "1.0", "expected a number, got a string"),
        ("ratio", False, "expected a number, got a boolean"),
        ("ratio", math.nan, "must be a finite number"),
        ("ratio", math.inf, "must be a finite number"),
        ("ratio", 0.25, "must be at least 0.5; got 0.25"),
        ("ratio", 3, "must be at most 2.5; got 3"),
        ("flag", "true", "expected true or false, got a string"),
        ("flag", 1, "expected true or false, got a number"),
        # instants
        ("at", 1767225600, "expected an ISO-8601 timestamp, got a number"),
        ("at", "yesterday", "not an ISO-8601 timestamp: 'yesterday'"),
        ("at", "2026-02-30T09:00:00Z", "not an ISO-8601 timestamp: '2026-02-30T09:00:00Z'"),
        ("at", "2026-03-02T09:00:00", "timestamp needs a UTC offset, e.g. 2026-01-31T09:00:00Z"),
        ("at", "2026-03-02", "timestamp needs a UTC offset, e.g. 2026-01-31T09:00:00Z"),
        # sets and documents
        ("labels", "a,b", "expected a list of strings, got a string"),
        ("labels", {"a": 1}, "expected a list of strings, got an object"),
        ("labels", ["ok", 3], "expected a string, got a number"),
        ("labels", ["x" * 11], "longer than 10 characters"),
        ("labels", ["a\x00"], "contains a NUL character"),
        ("doc", [1, 2], "expected an object, got a list"),
        ("doc", "{}", "expected an object, got a string"),
    ],
)
def test_bad_values_name_the_field_and_the_problem(name: str, raw: object, problem: str) -> None:
    assert one_problem(name, raw) == problem


def test_every_kind_has_a_good_and_a_bad_case_above() -> None:
    # Guards the tables above: a new Kind must get examples here.
    assert {f.kind for f in EVERY_KIND.fields} == set(Kind)


def test_every_problem_is_reported_at_once_in_payload_order() -> None:
    found = problems(
        {"count": 0, "nope": 1, "colour": "blue", "server_note": "x", "text": "fine"},
        require=("title",),
    )
    assert found == [
        ("count", "must be at least 1; got 0"),
        ("nope", "unknown field"),
        ("colour", "must be one of red, green; got 'blue'"),
        ("server_note", "cannot be set here"),
        ("title", "is required"),
    ]


def test_validation_error_message_lists_every_problem() -> None:
    error = ValidationError([FieldProblem("a", "is required"), FieldProblem("b", "unknown field")])
    assert str(error) == "invalid input: a: is required; b: unknown field"
    assert error.problems == (FieldProblem("a", "is required"), FieldProblem("b", "unknown field"))


# --- unknown, not writable, allowed, require -------------------------------------------------


def test_unknown_fields_are_refused() -> None:
    assert problems({"colour": "red", "shade": "dark"}) == [("shade", "unknown field")]


def test_server_managed_fields_cannot_be_set_by_default() -> None:
    assert problems({"server_note": "hi"}) == [("server_note", "cannot be set here")]
    with pytest.raises(ValidationError, match=r"^invalid input: status: cannot be set here$"):
        validate(TICKET, {"status": "closed"})


def test_allowed_replaces_the_writable_set() -> None:
    assert validate(EVERY_KIND, {"server_note": "hi"}, allowed=("server_note",)) == {"server_note": "hi"}
    assert problems({"colour": "red"}, allowed=("server_note",)) == [("colour", "cannot be set here")]


def test_require_reports_missing_and_null_fields() -> None:
    assert problems({}, require=("title", "colour")) == [("title", "is required"), ("colour", "is required")]
    assert problems({"colour": None}, require=("colour",)) == [("colour", "is required")]


def test_require_does_not_repeat_a_field_that_already_has_a_problem() -> None:
    assert problems({"title": None}, require=("title",)) == [("title", "must not be null")]
    assert problems({"colour": "blue"}, require=("colour",)) == [
        ("colour", "must be one of red, green; got 'blue'")
    ]


def test_require_is_satisfied_by_a_value() -> None:
    assert validate(EVERY_KIND, {"title": "t"}, require=("title",)) == {"title": "t"}


def test_ticket_create_payload_validates() -> None:
    payload = {
        "type": "fault",
        "subject": "  No internet  ",
        "priority": "P1",
        "location": "Berlin",
        "symptom": "no sync",
        "impact_scope": "one line",
        "tags": ["dsl", "dsl"],
    }
    values = validate(TICKET, payload, require=("type", "subject"))
    assert values["subject"] == "No internet"
    assert values["tags"] == frozenset({"dsl"})
    with pytest.raises(ValidationError, match=r"type: must be one of consult, fault, complaint"):
        validate(TICKET, {**payload, "type": "outage"})


def test_convert_raises_field_value_error() -> None:
    with pytest.raises(FieldValueError, match=r"^count: must be at most 5; got 9$") as info:
        convert(EVERY_KIND.field("count"), 9)
    assert (info.value.name, info.value.problem) == ("count", "must be at most 5; got 9")


# --- storage form -----------------------------------------------------------------------------

STORAGE_CASES: list[tuple[str, Value, object]] = [
    ("id", "T-1", "T-1"),
    ("text", "工单", "工单"),
    ("count", 3, 3),
    ("ratio", 1.25, 1.25),
    ("flag", True, 1),
    ("flag", False, 0),
    ("at", AT, "2026-03-02T09:30:15.123456Z"),
    ("at", datetime(2026, 3, 2, 11, 30, tzinfo=timezone(timedelta(hours=2))), "2026-03-02T09:30:00.000000Z"),
    ("colour", "red", "red"),
    ("phone", "+4930123456", "+4930123456"),
    ("language", "zh-CN", "zh-CN"),
    ("labels", frozenset({"b", "a", "工单"}), '["a","b","工单"]'),
    ("labels", frozenset(), "[]"),
    ("doc", {"z": 1, "a": {"y": [1.5, None], "b": "é"}}, '{"a":{"b":"é","y":[1.5,null]},"z":1}'),
    ("text", None, None),
    ("at", None, None),
    ("labels", None, None),
]


@pytest.mark.parametrize(("name", "value", "stored"), STORAGE_CASES)
def test_storage_form_and_round_trip(name: str, value: Value, stored: object) -> None:
    f = EVERY_KIND.field(name)
    assert to_storage(f, value) == stored
    assert from_storage(f, to_storage(f, value)) == value


def test_storage_round_trip_covers_every_kind() -> None:
    assert {EVERY_KIND.field(name).kind for name, _, _ in STORAGE_CASES} == set(Kind)


def test_stored_booleans_and_instants_come_back_typed() -> None:
    assert from_storage(EVERY_KIND.field("flag"), 1) is True
    assert from_storage(EVERY_KIND.field("flag"), 0) is False
    back = from_storage(EVERY_KIND.field("at"), "2026-03-02T09:30:15.123456Z")
    assert back == AT
    assert isinstance(back, datetime)
    assert back.utcoffset() == timedelta(0)


def test_stored_instants_sort_as_text() -> None:
    f = EVERY_KIND.field("at")
    instants = [AT - timedelta(days=400), AT - timedelta(microseconds=1), AT, AT + timedelta(hours=1)]
    stored = [to_storage(f, at) for at in instants]
    assert stored == sorted(stored)


def test_to_storage_refuses_a_value_of_the_wrong_kind() -> None:
    with pytest.raises(FieldValueError, match=r"^labels: cannot store a list in a text_set field$"):
        to_storage(EVERY_KIND.field("labels"), ["a"])  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(FieldValueError, match=r"^doc: cannot store a list in a document field$"):
        to_storage(EVERY_KIND.field("doc"), ["a"])  # type: ignore[arg-type]  # the point of the test


def test_from_storage_refuses_a_stored_value_that_does_not_fit() -> None:
    with pytest.raises(FieldValueError, match=r"^doc: stored value '\[1\]' does not fit a document field$"):
        from_storage(EVERY_KIND.field("doc"), "[1]")
    with pytest.raises(FieldValueError, match=r"^doc: stored value '\"x\"' does not fit a document field$"):
        from_storage(EVERY_KIND.field("doc"), '"x"')


def test_format_instant_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive datetimes are not instants"):
        format_instant(datetime(2026, 3, 2))  # noqa: DTZ001 - the point of the test


def test_encode_fields_stores_each_value_and_refuses_unknown_names() -> None:
    assert encode_fields(EVERY_KIND, {"flag": True, "at": AT, "labels": frozenset({"x"})}) == {
        "flag": 1,
        "at": "2026-03-02T09:30:15.123456Z",
        "labels": '["x"]',
    }
    with pytest.raises(UnknownFieldError, match=r"^entity 'sample' has no field 'nope'$"):
        encode_fields(EVERY_KIND, {"nope": 1})


def test_to_json() -> None:
    assert to_json(EVERY_KIND.field("at"), AT) == "2026-03-02T09:30:15.123456Z"
    assert to_json(EVERY_KIND.field("labels"), frozenset({"b", "a"})) == ["a", "b"]
    assert to_json(EVERY_KIND.field("flag"), True) is True
    assert to_json(EVERY_KIND.field("text"), None) is None


def test_sqlite_columns_follow_the_kinds() -> None:
    assert sqlite_columns(EVERY_KIND) == {
        "id": "TEXT",
        "text": "TEXT",
        "title": "TEXT",
        "count": "INTEGER",
        "ratio": "REAL",
        "flag": "INTEGER",
        "at": "TEXT",
        "colour": "TEXT",
        "phone": "TEXT",
        "language": "TEXT",
        "labels": "TEXT",
        "doc": "TEXT",
        "server_note": "TEXT",
    }


# --- edges of the value range: validate raises only ValidationError -------------------------


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_at_the_edge_of_the_range_are_a_validation_error(raw: str) -> None:
    one_problem("at", raw)


def test_a_huge_integer_for_a_float_field_is_a_validation_error() -> None:
    assert one_problem("ratio", 10**400) == "is too large for a number"


def test_instants_before_year_1000_round_trip() -> None:
    f = EVERY_KIND.field("at")
    value = validate(EVERY_KIND, {"at": "0999-06-01T00:00:00Z"}, allowed=("at",))["at"]
    assert from_storage(f, to_storage(f, value)) == value


# --- JSON schema --------------------------------------------------------------------------------


def test_json_schema_shape() -> None:
    schema = json_schema(
        TICKET, ["type", "priority", "subject", "tags"], required=["subject", "type", "type"]
    )
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["subject", "type"]
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert list(properties) == ["type", "priority", "subject", "tags"]
    assert properties["type"] == {
        "type": "string",
        "enum": list(TICKET_TYPES),
        "description": "consult, fault, complaint or service_request",
        "x-data-class": "operational",
    }
    assert properties["priority"] == {
        "anyOf": [{"type": "string", "enum": ["P1", "P2", "P3", "P4"]}, {"type": "null"}],
        "description": "P1 (urgent) to P4 (low); sets the SLA targets; default P2",
        "x-data-class": "operational",
    }
    assert properties["subject"] == {"type": "string", "maxLength": 200, "x-data-class": "personal"}
    assert properties["tags"] == {
        "anyOf": [{"type": "array", "items": {"type": "string", "maxLength": 64}}, {"type": "null"}],
        "x-data-class": "operational",
    }


def test_json_schema_per_kind() -> None:
    properties = json_schema(EVERY_KIND, ALL_NAMES)["properties"]
    assert isinstance(properties, dict)

    def inner(name: str) -> object:
        schema = properties[name]
        return (
            schema["anyOf"][0]
            if "anyOf" in schema
            else {k: v for k, v in schema.items() if k != "x-data-class"}
        )

    assert inner("id") == {"type": "string", "maxLength": 1000}
    assert inner("title") == {"type": "string", "maxLength": 20}
    assert inner("count") == {"type": "integer", "minimum": 1, "maximum": 5}
    assert inner("ratio") == {"type": "number", "minimum": 0.5, "maximum": 2.5}
    assert inner("flag") == {"type": "boolean"}
    assert inner("at") == {"type": "string", "format": "date-time"}
    assert inner("colour") == {"type": "string", "enum": ["red", "green"]}
    assert inner("phone") == {"type": "string", "pattern": r"\+[1-9][0-9]{6,14}"}
    assert inner("language") == {"type": "string", "maxLength": 35}
    assert inner("labels") == {"type": "array", "items": {"type": "string", "maxLength": 10}}
    assert inner("doc") == {"type": "object"}
    assert properties["phone"]["x-data-class"] == "personal"


def test_json_schema_without_required_has_no_required_key() -> None:
    schema = json_schema(EVERY_KIND, ["text"])
    assert "required" not in schema


def test_json_schema_refuses_unknown_names() -> None:
    with pytest.raises(UnknownFieldError, match=r"^entity 'ticket' has no field 'colour'$"):
        json_schema(TICKET, ["colour"])


# --- declarations ---------------------------------------------------------------------------------

ID = Field("id", Kind.ID, OPS, required=True)


def test_declarations_refuse_duplicate_names() -> None:
    with pytest.raises(
        EntityDeclarationError, match=r"^entity 'x' is badly declared: duplicate field names$"
    ):
        Entity("x", "xs", (ID, Field("a", Kind.TEXT, OPS), Field("a", Kind.INT, OPS)))


def test_declarations_need_an_id() -> None:
    with pytest.raises(EntityDeclarationError, match=r"an entity needs an 'id' field$") as info:
        Entity("x", "xs", (Field("a", Kind.TEXT, OPS),))
    assert (info.value.entity, info.value.problem) == ("x", "an entity needs an 'id' field")


def test_declarations_refuse_an_enum_without_choices() -> None:
    with pytest.raises(EntityDeclarationError, match=r"enum field 'mood' has no choices$"):
        Entity("x", "xs", (ID, Field("mood", Kind.ENUM, OPS)))


@pytest.mark.parametrize(
    "bad",
    [
        Field("tags", Kind.TEXT_SET, OPS),  # a set that merges as a register
        Field("note", Kind.TEXT, OPS, merge=MergeKind.SET),  # a register that merges as a set
    ],
)
def test_declarations_require_sets_to_merge_as_sets(bad: Field) -> None:
    with pytest.raises(EntityDeclarationError, match=rf"field '{bad.name}': sets merge as sets$"):
        Entity("x", "xs", (ID, bad))


def test_entity_lookup() -> None:
    assert TICKET.field("priority").kind is Kind.ENUM
    assert TICKET.has("priority")
    assert not TICKET.has("colour")
    with pytest.raises(UnknownFieldError, match=r"^entity 'ticket' has no field 'colour'$"):
        TICKET.field("colour")


def test_ticket_writable_fields_are_the_client_fields() -> None:
    assert TICKET.writable_names == {
        "type",
        "priority",
        "subject",
        "description",
        "customer_id",
        "channel",
        "location",
        "symptom",
        "impact_scope",
        "department",
        "call_ids",
        "tags",
    }


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_production_declarations_are_consistent(entity: Entity) -> None:
    assert entity.field("id").kind is Kind.ID
    assert all(f.choices for f in entity.fields if f.kind is Kind.ENUM)
    assert len({e.table for e in ENTITIES}) == len(ENTITIES)
