"""Hypothesis strategies shared by the property tests.

Values come in two forms, as in ``sync.entity``: *core* values (what
``validate`` returns and the ticket core works with) and *JSON* input (what a
client sends). ``field_values`` draws core values that are valid for one
declared field; ``to_json`` turns them into the input that validates back to
them, which is how ``ticket_payloads`` builds valid create requests from the
``TICKET`` declaration instead of restating it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from edge_node.core.dispatch import DEFAULT_DEPARTMENTS
from sync.entities import TICKET
from sync.entity import DataClass, Entity, Field, Kind, MergeKind, Value, to_json

OPS = DataClass.OPERATIONAL

# One field of every kind, with the constraints the kinds support, for tests that
# must cover kinds no production entity uses yet (FLOAT, for one).
EVERY_KIND = Entity(
    name="sample",
    table="samples",
    fields=(
        Field("id", Kind.ID, OPS, required=True),
        Field("text", Kind.TEXT, OPS, max_length=20),
        Field("title", Kind.TEXT, OPS, required=True, max_length=20),
        Field("count", Kind.INT, OPS, minimum=1, maximum=5),
        Field("ratio", Kind.FLOAT, OPS, minimum=0.5, maximum=2.5),
        Field("flag", Kind.BOOL, OPS),
        Field("at", Kind.INSTANT, OPS),
        Field("colour", Kind.ENUM, OPS, choices=("red", "green")),
        Field("phone", Kind.PHONE, DataClass.PERSONAL),
        Field("language", Kind.LANGUAGE, OPS, max_length=35),
        Field("labels", Kind.TEXT_SET, OPS, merge=MergeKind.SET, max_length=10),
        Field("doc", Kind.DOCUMENT, OPS),
        Field("server_note", Kind.TEXT, OPS, writable=False),
    ),
)

_ID_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_PHONE_REGEX = r"\+[1-9][0-9]{6,14}"
_MAX_TEXT = 40  # longer texts add run time, not coverage

# --- JSON -------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
"""Anything a JSON decoder may hand over as a scalar, NaN and infinities included."""

json_values: st.SearchStrategy[object] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
"""Arbitrary JSON-like values (lists and objects nest)."""

finite_json_values: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
"""JSON values that survive a ``json.dumps``/``json.loads`` round trip unchanged."""


def arbitrary_payloads(entity: Entity) -> st.SearchStrategy[dict[str, object]]:
    """Objects whose keys are mostly the entity's field names and whose values are anything."""
    keys = st.sampled_from([f.name for f in entity.fields]) | st.text(max_size=12)
    return st.dictionaries(keys, json_values, max_size=8)


# --- core values per kind -----------------------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))

instants = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - bounds of st.datetimes are naive by design
    max_value=datetime(2200, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC) | offsets,
)
"""Aware instants in UTC or at a fixed offset (years 1970-2200, the range the node works in)."""


def texts(*, max_length: int, required: bool = False) -> st.SearchStrategy[str]:
    """Text as ``validate`` returns it: stripped, without NUL, within ``max_length``."""
    alphabet = st.characters(exclude_characters="\x00")
    raw = st.text(alphabet, max_size=min(max_length, _MAX_TEXT)).map(str.strip)
    return raw.filter(bool) if required else raw


ids = st.from_regex(_ID_REGEX, fullmatch=True)
phones = st.from_regex(_PHONE_REGEX, fullmatch=True)


@st.composite
def languages(draw: st.DrawFn) -> str:
    """Language tags like ``en``, ``zh-CN`` or ``sr-Latn-RS`` (at most 30 characters)."""
    primary = draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=3))
    subtag = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=8)
    return "-".join([primary, *draw(st.lists(subtag, max_size=3))])


documents: st.SearchStrategy[dict[str, object]] = st.dictionaries(
    st.text(max_size=8), finite_json_values, max_size=5
)


def field_values(f: Field) -> st.SearchStrategy[Value]:
    """Core values that are valid for ``f`` (None included unless it is required)."""
    strategy: st.SearchStrategy[Value]
    match f.kind:
        case Kind.ID:
            strategy = ids
        case Kind.TEXT:
            strategy = texts(max_length=f.max_length, required=f.required)
        case Kind.INT:
            lo = None if f.minimum is None else int(f.minimum)
            hi = None if f.maximum is None else int(f.maximum)
            strategy = st.integers(lo, hi)
        case Kind.FLOAT:
            strategy = st.floats(f.minimum, f.maximum, allow_nan=False, allow_infinity=False)
        case Kind.BOOL:
            strategy = st.booleans()
        case Kind.INSTANT:
            strategy = instants
        case Kind.ENUM:
            strategy = st.sampled_from(f.choices)
        case Kind.PHONE:
            strategy = phones
        case Kind.LANGUAGE:
            strategy = languages()
        case Kind.TEXT_SET:
            strategy = st.frozensets(texts(max_length=f.max_length), max_size=4)
        case Kind.DOCUMENT:
            strategy = documents
    return strategy if f.required else st.none() | strategy


@st.composite
def records(draw: st.DrawFn, entity: Entity) -> dict[str, Value]:
    """A core record of ``entity``: every required field and a random subset of the others."""
    record: dict[str, Value] = {}
    for f in entity.fields:
        if f.required or draw(st.booleans()):
            record[f.name] = draw(field_values(f))
    return record


# --- tickets ------------------------------------------------------------------------------

DEPARTMENT_IDS = tuple(dept for dept, _, _ in DEFAULT_DEPARTMENTS)
FAULT_FIELDS = ("location", "symptom", "impact_scope")


@st.composite
def ticket_payloads(draw: st.DrawFn, *, ticket_type: str | None = None) -> dict[str, object]:
    """A valid create request for a ticket, as JSON: what a client may POST.

    Required fields are always present (the type's own ones too, so a fault has a
    location, symptom and impact scope); other writable fields are present at
    random, sometimes as null. Departments are drawn from the default ones.
    """
    chosen = ticket_type or draw(st.sampled_from(TICKET.field("type").choices))
    payload: dict[str, object] = {"type": chosen}
    for f in TICKET.fields:
        if not f.writable or f.name == "type":
            continue
        if f.name == "department":
            values: st.SearchStrategy[Value] = st.none() | st.sampled_from(DEPARTMENT_IDS)
        elif chosen == "fault" and f.name in FAULT_FIELDS:
            values = texts(max_length=f.max_length, required=True)
        else:
            values = field_values(f)
        if f.required or (chosen == "fault" and f.name in FAULT_FIELDS) or draw(st.booleans()):
            payload[f.name] = to_json(f, draw(values))
    return payload
