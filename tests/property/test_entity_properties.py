"""Laws of entity declarations: storage round trips, validation totality, valid payloads."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.entities import ENTITIES, TICKET
from sync.entity import (
    Entity,
    Field,
    FieldProblem,
    ValidationError,
    Value,
    encode_fields,
    from_storage,
    to_json,
    to_storage,
    validate,
)
from tests.strategies import (
    EVERY_KIND,
    FAULT_FIELDS,
    arbitrary_payloads,
    field_values,
    instants,
    records,
    ticket_payloads,
)

FAST = settings(max_examples=200, deadline=None)
ENTITIES_UNDER_TEST = (*ENTITIES, EVERY_KIND)
FIELDS = [(e, f) for e in ENTITIES_UNDER_TEST for f in e.fields]


@st.composite
def fields_and_values(draw: st.DrawFn) -> tuple[Entity, Field, Value]:
    """A declared field of any entity (every Kind occurs) and a valid core value for it."""
    entity, f = draw(st.sampled_from(FIELDS))
    return entity, f, draw(field_values(f))


@FAST
@given(fields_and_values())
def test_storage_round_trip(drawn: tuple[Entity, Field, Value]) -> None:
    _, f, value = drawn
    stored = to_storage(f, value)
    assert stored is None or isinstance(stored, str | int | float)
    assert from_storage(f, stored) == value


@FAST
@given(fields_and_values())
def test_json_form_validates_back_to_the_core_value(drawn: tuple[Entity, Field, Value]) -> None:
    entity, f, value = drawn
    assert validate(entity, {f.name: to_json(f, value)}, allowed=(f.name,)) == {f.name: value}


@FAST
@given(st.sampled_from(ENTITIES_UNDER_TEST).flatmap(lambda e: st.tuples(st.just(e), records(e))))
def test_record_round_trip_through_the_change_log_form(
    entity_and_record: tuple[Entity, dict[str, Value]],
) -> None:
    entity, record = entity_and_record
    encoded = encode_fields(entity, record)
    assert {name: from_storage(entity.field(name), v) for name, v in encoded.items()} == record


@FAST
@given(st.data())
def test_validate_raises_only_validation_error(data: st.DataObject) -> None:
    entity = data.draw(st.sampled_from(ENTITIES_UNDER_TEST))
    payload = data.draw(arbitrary_payloads(entity))
    everything = data.draw(st.booleans())
    require = data.draw(st.lists(st.sampled_from([f.name for f in entity.fields]), max_size=3))
    allowed = [f.name for f in entity.fields] if everything else None
    problems: tuple[FieldProblem, ...] = ()
    values: dict[str, Value] = {}
    try:
        values = validate(entity, payload, allowed=allowed, require=require)
    except ValidationError as exc:
        problems = exc.problems
    if problems:
        assert all(p.field in payload or p.field in require for p in problems)
    else:
        assert set(values) == set(payload)
        assert all(values.get(name) is not None for name in require)


@FAST
@given(ticket_payloads())
def test_valid_ticket_payloads_validate(payload: dict[str, object]) -> None:
    values = validate(TICKET, payload, require=("type", "subject"))
    assert set(values) == set(payload)
    for name, raw in payload.items():
        assert to_json(TICKET.field(name), values[name]) == raw


@FAST
@given(ticket_payloads(ticket_type="fault"))
def test_fault_payloads_carry_the_fault_fields(payload: dict[str, object]) -> None:
    values = validate(TICKET, payload, require=("type", "subject", *FAULT_FIELDS))
    assert all(values[name] for name in FAULT_FIELDS)


@FAST
@given(instants, instants)
def test_stored_instants_are_utc_text_that_sorts_like_the_instants(a: datetime, b: datetime) -> None:
    f = TICKET.field("created_at")
    stored_a, stored_b = to_storage(f, a), to_storage(f, b)
    assert isinstance(stored_a, str)
    assert isinstance(stored_b, str)
    assert stored_a.endswith("Z")
    assert len(stored_a) == len("2026-01-01T00:00:00.000000Z")
    assert (stored_a < stored_b) == (a < b)
    assert (stored_a == stored_b) == (a == b)
