"""Entity declarations: one place that says what a replicated record is.

Theory of operation
-------------------
Each replicated entity (a ticket, a customer, a department, ...) is declared
once as an :class:`Entity`: a tuple of :class:`Field` values, each with a value
kind, a data class (what residency rules apply to it), a merge kind (how
concurrent edits combine) and whether it is required. Everything else is
derived from that declaration instead of being written again by hand:

* the SQLite columns (:func:`sqlite_columns`),
* the change-log operation for a write (the fields set, encoded by
  :func:`encode_fields`),
* the validation of API input (:func:`validate`), which names the field and the
  problem for every mistake it finds,
* the JSON schema shown in the OpenAPI document (:func:`json_schema`),
* and, in later work, residency filtering by data class.

Values inside the core are plain Python: ``str``, ``int``, ``float``,
``bool``, aware ``datetime`` for instants, ``frozenset[str]`` for sets and
``dict`` for server-managed documents. Storage and wire adapters convert them
with :func:`to_storage` and :func:`from_storage`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sync.errors import SyncError


class DataClass(StrEnum):
    """What a field's content is, which decides where it may travel."""

    PUBLIC = "public"
    OPERATIONAL = "operational"
    PERSONAL = "personal"
    MEDIA = "media"


class MergeKind(StrEnum):
    """How concurrent edits of a field combine at a replica."""

    REGISTER = "register"  # last writer wins on (HLC, node id)
    SET = "set"  # add-wins observed-remove set
    COUNTER = "counter"  # per-node counters, summed


class Kind(StrEnum):
    """The value kind of a field, which fixes its storage and validation."""

    ID = "id"
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    INSTANT = "instant"
    ENUM = "enum"
    PHONE = "phone"
    LANGUAGE = "language"
    TEXT_SET = "text_set"
    DOCUMENT = "document"


Value = str | int | float | bool | datetime | frozenset[str] | dict[str, object] | None

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class Field:
    """One declared field of an entity.

    Attributes:
        name: the JSON and column name.
        kind: the value kind.
        data_class: what the content is, for residency.
        merge: how concurrent edits combine.
        required: must be present (non-null) when a record is created.
        writable: clients may set it directly; server-managed fields are not.
        choices: allowed values of an ``ENUM`` field.
        max_length: the longest text (or set element) accepted.
        minimum: the smallest ``INT``/``FLOAT`` accepted.
        maximum: the largest ``INT``/``FLOAT`` accepted.
        indexed: the store keeps an index on the column.
        description: shown in the API schema.
    """

    name: str
    kind: Kind
    data_class: DataClass
    merge: MergeKind = MergeKind.REGISTER
    required: bool = False
    writable: bool = True
    choices: tuple[str, ...] = ()
    max_length: int = 1000
    minimum: float | None = None
    maximum: float | None = None
    indexed: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Entity:
    """A replicated record type: a name, its table and its fields."""

    name: str
    table: str
    fields: tuple[Field, ...]
    description: str = ""
    _by_name: Mapping[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise EntityDeclarationError(self.name, "duplicate field names")
        if "id" not in names:
            raise EntityDeclarationError(self.name, "an entity needs an 'id' field")
        for f in self.fields:
            if f.kind is Kind.ENUM and not f.choices:
                raise EntityDeclarationError(self.name, f"enum field {f.name!r} has no choices")
            if (f.merge is MergeKind.SET) != (f.kind is Kind.TEXT_SET):
                raise EntityDeclarationError(self.name, f"field {f.name!r}: sets merge as sets")
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    def field(self, name: str) -> Field:
        """Return the declared field ``name``; raise if the entity has none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownFieldError(self.name, name) from None

    def has(self, name: str) -> bool:
        """Whether the entity declares a field called ``name``."""
        return name in self._by_name

    @property
    def writable_names(self) -> frozenset[str]:
        """The fields a client may set directly."""
        return frozenset(f.name for f in self.fields if f.writable)


class EntityError(SyncError):
    """Base for errors about entity declarations and values."""


class EntityDeclarationError(EntityError):
    """An entity declaration breaks a rule; a programming error caught at import."""

    def __init__(self, entity: str, problem: str) -> None:
        self.entity, self.problem = entity, problem
        super().__init__(f"entity {entity!r} is badly declared: {problem}")


class UnknownFieldError(EntityError):
    """Code asked for a field the entity does not declare."""

    def __init__(self, entity: str, name: str) -> None:
        self.entity, self.name = entity, name
        super().__init__(f"entity {entity!r} has no field {name!r}")


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field of some input."""

    field: str
    problem: str


class ValidationError(EntityError):
    """Input broke the declared rules; lists every field at fault."""

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems = tuple(problems)
        detail = "; ".join(f"{p.field}: {p.problem}" for p in self.problems)
        super().__init__(f"invalid input: {detail}")


def validate(
    entity: Entity,
    payload: Mapping[str, object],
    *,
    allowed: Iterable[str] | None = None,
    require: Iterable[str] = (),
) -> dict[str, Value]:
    """Check client input against the declaration and convert it to core values.

    Every problem is collected, so one round trip shows a client all of its
    mistakes; nothing is partially accepted.

    Args:
        entity: the declaration to check against.
        payload: decoded JSON, field name to value.
        allowed: names the caller may set here (default: the writable fields).
        require: names that must be present and non-null here.

    Returns:
        The converted values, keyed by field name.

    Raises:
        ValidationError: naming each bad field and its problem.
    """
    allowed_names = entity.writable_names if allowed is None else frozenset(allowed)
    problems: list[FieldProblem] = []
    values: dict[str, Value] = {}
    for name, raw in payload.items():
        if not entity.has(name):
            problems.append(FieldProblem(name, "unknown field"))
            continue
        if name not in allowed_names:
            problems.append(FieldProblem(name, "cannot be set here"))
            continue
        try:
            values[name] = convert(entity.field(name), raw)
        except FieldValueError as exc:
            problems.append(FieldProblem(name, exc.problem))
    for name in require:
        if values.get(name) is None and not any(p.field == name for p in problems):
            problems.append(FieldProblem(name, "is required"))
    if problems:
        raise ValidationError(problems)
    return values


class FieldValueError(EntityError):
    """A single value does not fit its field."""

    def __init__(self, name: str, problem: str) -> None:
        self.name, self.problem = name, problem
        super().__init__(f"{name}: {problem}")


def convert(f: Field, raw: object) -> Value:  # noqa: C901 - one flat branch per kind reads best
    """Convert one JSON value to the field's core value, or raise naming the problem."""
    if raw is None:
        if f.required:
            raise FieldValueError(f.name, "must not be null")
        return None
    match f.kind:
        case Kind.TEXT | Kind.ID | Kind.ENUM | Kind.PHONE | Kind.LANGUAGE:
            return _convert_text(f, raw)
        case Kind.BOOL:
            if not isinstance(raw, bool):
                raise FieldValueError(f.name, f"expected true or false, got {_json_type(raw)}")
            return raw
        case Kind.INT:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise FieldValueError(f.name, f"expected an integer, got {_json_type(raw)}")
            _check_range(f, raw)
            return raw
        case Kind.FLOAT:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise FieldValueError(f.name, f"expected a number, got {_json_type(raw)}")
            if isinstance(raw, int) and abs(raw) > sys.float_info.max:
                raise FieldValueError(f.name, "is too large for a number")
            if not math.isfinite(raw):
                raise FieldValueError(f.name, "must be a finite number")
            _check_range(f, raw)
            return float(raw)
        case Kind.INSTANT:
            return _convert_instant(f, raw)
        case Kind.TEXT_SET:
            if not isinstance(raw, list):
                raise FieldValueError(f.name, f"expected a list of strings, got {_json_type(raw)}")
            items = [_convert_text(f, item) for item in raw]
            return frozenset(items)
        case Kind.DOCUMENT:
            if not isinstance(raw, dict):
                raise FieldValueError(f.name, f"expected an object, got {_json_type(raw)}")
            return raw
    raise AssertionError(f"unhandled kind {f.kind}")  # pragma: no cover


def _convert_text(f: Field, raw: object) -> str:
    if not isinstance(raw, str):
        raise FieldValueError(f.name, f"expected a string, got {_json_type(raw)}")
    value = raw.strip()
    if len(value) > f.max_length:
        raise FieldValueError(f.name, f"longer than {f.max_length} characters")
    if f.required and not value:
        raise FieldValueError(f.name, "must not be empty")
    if "\x00" in value:
        raise FieldValueError(f.name, "contains a NUL character")
    match f.kind:
        case Kind.ENUM if value not in f.choices:
            raise FieldValueError(f.name, f"must be one of {', '.join(f.choices)}; got {value!r}")
        case Kind.PHONE if not _E164.fullmatch(value):
            raise FieldValueError(f.name, f"must be an E.164 number like +4930123456; got {value!r}")
        case Kind.LANGUAGE if not _LANGUAGE.fullmatch(value):
            raise FieldValueError(f.name, f"must be a language tag like 'en' or 'zh-CN'; got {value!r}")
        case Kind.ID if not _ID.fullmatch(value):
            raise FieldValueError(
                f.name, f"must be 1-64 letters, digits or _.:- starting alphanumeric; got {value!r}"
            )
    return value


def _convert_instant(f: Field, raw: object) -> datetime:
    if not isinstance(raw, str):
        raise FieldValueError(f.name, f"expected an ISO-8601 timestamp, got {_json_type(raw)}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise FieldValueError(f.name, f"not an ISO-8601 timestamp: {raw!r}") from None
    if value.tzinfo is None:
        raise FieldValueError(f.name, "timestamp needs a UTC offset, e.g. 2026-01-31T09:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise FieldValueError(f.name, f"timestamp out of range: {raw!r}") from None


def _check_range(f: Field, raw: float) -> None:
    if f.minimum is not None and raw < f.minimum:
        raise FieldValueError(f.name, f"must be at least {_num(f.minimum)}; got {raw}")
    if f.maximum is not None and raw > f.maximum:
        raise FieldValueError(f.name, f"must be at most {_num(f.maximum)}; got {raw}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _json_type(raw: object) -> str:
    match raw:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case dict():
            return "an object"
    return type(raw).__name__


# --- storage and wire form -------------------------------------------------------------

_SQL_TYPES: Mapping[Kind, str] = {
    Kind.ID: "TEXT",
    Kind.TEXT: "TEXT",
    Kind.ENUM: "TEXT",
    Kind.PHONE: "TEXT",
    Kind.LANGUAGE: "TEXT",
    Kind.INT: "INTEGER",
    Kind.FLOAT: "REAL",
    Kind.BOOL: "INTEGER",
    Kind.INSTANT: "TEXT",  # ISO-8601 UTC with microseconds: sorts as text, reads as text
    Kind.TEXT_SET: "TEXT",  # canonical JSON list, sorted
    Kind.DOCUMENT: "TEXT",  # canonical JSON object
}


def sqlite_columns(entity: Entity) -> dict[str, str]:
    """The column name to SQLite type mapping derived from the declaration."""
    return {f.name: _SQL_TYPES[f.kind] for f in entity.fields}


StorageValue = str | int | float | None


def to_storage(f: Field, value: Value) -> StorageValue:
    """Convert a core value to the column value (and the change-log value)."""
    match f.kind, value:
        case _, None:
            return None
        case Kind.BOOL, _:
            return int(bool(value))
        case Kind.INSTANT, datetime():
            return format_instant(value)
        case Kind.TEXT_SET, frozenset():
            return json.dumps(sorted(value), ensure_ascii=False, separators=(",", ":"))
        case Kind.DOCUMENT, dict():
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        case Kind.INSTANT | Kind.TEXT_SET | Kind.DOCUMENT, _:
            pass
        case _, str() | int() | float():
            return value
    raise FieldValueError(f.name, f"cannot store a {type(value).__name__} in a {f.kind} field")


def from_storage(f: Field, stored: StorageValue) -> Value:
    """Convert a column value back to the core value."""
    match f.kind, stored:
        case _, None:
            return None
        case Kind.BOOL, _:
            return bool(stored)
        case Kind.INSTANT, str():
            return datetime.fromisoformat(stored)
        case Kind.TEXT_SET, str():
            return frozenset(json.loads(stored))
        case Kind.DOCUMENT, str():
            loaded = json.loads(stored)
            if isinstance(loaded, dict):
                return loaded
        case Kind.INSTANT | Kind.TEXT_SET | Kind.DOCUMENT, _:
            pass
        case _, str() | int() | float():
            return stored
    raise FieldValueError(f.name, f"stored value {stored!r} does not fit a {f.kind} field")


def to_json(f: Field, value: Value) -> object:
    """Convert a core value to its JSON form for API responses."""
    match value:
        case datetime():
            return format_instant(value)
        case frozenset():
            return sorted(value)
    return value


def format_instant(value: datetime) -> str:
    """The one text form of an instant: UTC, microseconds, 'Z' suffix; sorts as text."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not instants")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encode_fields(entity: Entity, values: Mapping[str, Value]) -> dict[str, StorageValue]:
    """The fields of a change-log operation, in storage form."""
    return {name: to_storage(entity.field(name), v) for name, v in values.items()}


# --- API schema ------------------------------------------------------------------------


def json_schema(entity: Entity, names: Iterable[str], *, required: Iterable[str] = ()) -> dict[str, object]:
    """A JSON schema (OpenAPI 3.1 dialect) for an input made of ``names``."""
    properties: dict[str, object] = {}
    for name in names:
        f = entity.field(name)
        properties[name] = _field_schema(f)
    schema: dict[str, object] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    req = sorted(set(required))
    if req:
        schema["required"] = req
    return schema


_SIMPLE_SCHEMAS: Mapping[Kind, dict[str, object]] = {
    Kind.INT: {"type": "integer"},
    Kind.FLOAT: {"type": "number"},
    Kind.BOOL: {"type": "boolean"},
    Kind.INSTANT: {"type": "string", "format": "date-time"},
    Kind.DOCUMENT: {"type": "object"},
    Kind.PHONE: {"type": "string", "pattern": _E164.pattern},
}


def _field_schema(f: Field) -> dict[str, object]:
    schema: dict[str, object]
    if f.kind in _SIMPLE_SCHEMAS:
        schema = dict(_SIMPLE_SCHEMAS[f.kind])
    elif f.kind is Kind.ENUM:
        schema = {"type": "string", "enum": list(f.choices)}
    elif f.kind is Kind.TEXT_SET:
        schema = {"type": "array", "items": {"type": "string", "maxLength": f.max_length}}
    else:
        schema = {"type": "string", "maxLength": f.max_length}
    if f.minimum is not None:
        schema["minimum"] = f.minimum
    if f.maximum is not None:
        schema["maximum"] = f.maximum
    if not f.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if f.description:
        schema["description"] = f.description
    schema["x-data-class"] = f.data_class.value
    return schema
