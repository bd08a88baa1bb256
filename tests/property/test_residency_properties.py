"""Laws of the residency rules, for any operation over the declared entities and any supported policy.

The node's egress and the hub's check are two readings of one policy: whatever
:func:`egress_op` lets out must pass :func:`check_op`, what it did not rewrite
must not, and what it sealed must open back to what the node held.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from security import _primitives
from security.envelope import DataKey, FieldContext, SealedValue, Sealer, looks_sealed, open_value
from security.keys import UnknownKeyError
from security.pseudonym import looks_pseudonym, pseudonymise
from sync.crdt import FieldChange, Op, Register, SetDelta, StorageValue, Version
from sync.entities import BY_NAME, ENTITIES
from sync.entity import DataClass, Entity, Field, Kind, MergeKind, Value, to_storage
from sync.residency import (
    EgressTally,
    Form,
    ResidencyPolicy,
    check_op,
    egress_op,
    key_id_for,
    pseudonym_scope,
)
from tests.strategies import field_values, texts

LAWS = settings(max_examples=200, deadline=None)
REGION = "eu"
NODES = ("node-a", "node-b")
PSEUDONYM_KEY = bytes(range(32))
SealFn = Callable[[str, str, str, str, StorageValue], str | None]


# --- an in-memory key store -----------------------------------------------------------------------


class MemoryKeys:
    """``security.envelope.DataKeys`` in a dict: a key per id, made on first use."""

    def __init__(self) -> None:
        self.keys: dict[str, DataKey] = {}

    def data_key(self, key_id: str) -> DataKey:
        if key_id not in self.keys:
            self.keys[key_id] = DataKey(key_id, 1, _primitives.new_key())
        return self.keys[key_id]

    def existing_data_key(self, key_id: str, version: int | None = None) -> DataKey:
        key = self.keys.get(key_id)
        if key is None or version not in (None, key.version):
            raise UnknownKeyError(key_id, version)
        return key


def sealer_fn(keys: MemoryKeys) -> SealFn:
    sealer = Sealer(keys, REGION)

    def seal(entity: str, record_id: str, name: str, key_id: str, value: StorageValue) -> str | None:
        return sealer.seal(FieldContext(REGION, entity, record_id, name), key_id, value)

    return seal


def real_pseudonymise(scope: str, value: StorageValue) -> str:
    token = pseudonymise(PSEUDONYM_KEY, scope, value)
    assert token is not None  # egress never asks for the token of None
    return token


def check(op: Op, policy: ResidencyPolicy) -> list[str]:
    """The fields ``check_op`` flags, as the hub runs it."""
    return [v.field for v in check_op(op, policy, is_sealed=looks_sealed, is_pseudonym=looks_pseudonym)]


# --- strategies -----------------------------------------------------------------------------------


def _forms_for(data_class: DataClass) -> list[Form]:
    """Every form ``check_supported`` allows for the class: no sealing where a set field lives."""
    has_set = any(
        f.data_class is data_class and f.merge is not MergeKind.REGISTER for e in ENTITIES for f in e.fields
    )
    return [f for f in Form if not (has_set and f is Form.SEALED)]


policies: st.SearchStrategy[ResidencyPolicy] = st.builds(
    ResidencyPolicy,
    st.fixed_dictionaries({c: st.sampled_from(_forms_for(c)) for c in DataClass}),
    st.integers(1, 5),
)
versions = st.builds(Version, st.integers(0, 2**40), st.sampled_from(NODES))


record_ids = st.text("abcdefghijklmnopqrstuvwxyzABCDEF0123456789-:", min_size=1, max_size=16)
_cheap: Mapping[Kind, st.SearchStrategy[Value]] = {
    Kind.ID: record_ids,
    Kind.PHONE: st.integers(10**6, 10**14).map(lambda n: f"+{n}"),
    Kind.DOCUMENT: st.dictionaries(
        st.text(max_size=4), st.none() | st.integers() | st.text(max_size=6), max_size=3
    ),
}


def _core_values(f: Field) -> st.SearchStrategy[Value]:
    """Values of ``f``'s kind, as ``field_values`` draws them, with quicker ids, phones and documents.

    Residency never parses a value, only its storage type matters; regex-drawn
    ids and recursive documents would make the drawing most of the run time.
    """
    return _cheap[f.kind] if f.kind in _cheap else field_values(f)


def _change(f: Field, version: Version) -> st.SearchStrategy[FieldChange]:
    if f.merge is MergeKind.SET:
        elements = texts(max_length=f.max_length, required=True)
        return st.builds(
            lambda add, remove: FieldChange(
                MergeKind.SET, delta=SetDelta(dict.fromkeys(add, version), remove)
            ),
            st.frozensets(elements, max_size=3),
            st.dictionaries(elements, st.frozensets(versions, max_size=2), max_size=3),
        )
    values = (st.none() | _core_values(f)).map(lambda v: to_storage(f, v))
    return values.map(lambda v: FieldChange(MergeKind.REGISTER, register=Register(v, version)))


@st.composite
def ops(draw: st.DrawFn) -> Op:
    """An op on a declared entity: a random subset of its fields with values of their storage type.

    Now and then a field no entity declares rides along (a newer peer's field).
    """
    entity: Entity = draw(st.sampled_from(ENTITIES))
    version = draw(versions)
    names = draw(st.lists(st.sampled_from([f.name for f in entity.fields]), unique=True, max_size=8))
    changes = {name: draw(_change(entity.field(name), version)) for name in names}
    for name in draw(st.lists(st.sampled_from(["shoe_size", "x_note"]), unique=True, max_size=1)):
        changes[name] = FieldChange(
            MergeKind.REGISTER, register=Register(draw(texts(max_length=10)), version)
        )
    return Op(entity.name, draw(record_ids), version.node, draw(st.integers(1, 10**6)), version.hlc, changes)


customer_ids = st.none() | record_ids


def same(a: StorageValue, b: StorageValue) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def _non_plain(op: Op, policy: ResidencyPolicy) -> Mapping[str, tuple[Form, FieldChange]]:
    entity = BY_NAME[op.entity]
    return {
        name: (form, change)
        for name, change in op.changes.items()
        if entity.has(name) and (form := policy.field_form(entity, name)) is not Form.PLAIN
    }


# --- laws -----------------------------------------------------------------------------------------


def _assert_sealed_values_open_back(
    op: Op, out: Op, policy: ResidencyPolicy, keys: MemoryKeys, key_id: str
) -> None:
    sealed_any = False
    for name, (form, change) in _non_plain(op, policy).items():
        if form is not Form.SEALED or change.register is None or change.register.value is None:
            continue
        sealed = out.changes[name].register
        assert sealed is not None
        assert isinstance(sealed.value, str)
        envelope = SealedValue.parse(sealed.value)
        assert (envelope.key_id, envelope.key_version) == (key_id, 1)
        ctx = FieldContext(REGION, op.entity, op.record_id, name)
        assert same(open_value(keys.existing_data_key(key_id), ctx, envelope), change.register.value)
        sealed_any = True
    assert set(keys.keys) == ({key_id} if sealed_any else set())


def _assert_tokens_are_the_fields_pseudonyms(op: Op, out: Op, policy: ResidencyPolicy) -> None:
    """Register values and both sides of set deltas map to their tokens, so removes still match adds."""
    for name, (form, change) in _non_plain(op, policy).items():
        if form is not Form.PSEUDONYMISED:
            continue
        scope = pseudonym_scope(op.entity, name)
        mapped = out.changes[name]
        if change.register is not None:
            token = pseudonymise(PSEUDONYM_KEY, scope, change.register.value)
            assert mapped.register == Register(token, change.register.version)
        else:
            assert change.delta is not None
            assert mapped.delta is not None
            assert dict(mapped.delta.add) == {
                real_pseudonymise(scope, e): v for e, v in change.delta.add.items()
            }
            assert dict(mapped.delta.remove) == {
                real_pseudonymise(scope, e): tags for e, tags in change.delta.remove.items()
            }


@LAWS
@given(op=ops(), policy=policies, customer_id=customer_ids)
def test_what_egress_lets_out_passes_the_hubs_check_and_opens_back(
    op: Op, policy: ResidencyPolicy, customer_id: str | None
) -> None:
    keys, tally = MemoryKeys(), EgressTally()
    out = egress_op(
        op, policy, seal=sealer_fn(keys), pseudonymise=real_pseudonymise, customer_id=customer_id, tally=tally
    )
    assert check(out, policy) == []

    entity = BY_NAME[op.entity]
    declared = [n for n in op.changes if entity.has(n)]
    local = [n for n in declared if policy.field_form(entity, n) is Form.LOCAL]
    assert list(out.changes) == [n for n in declared if n not in local]
    assert (tally.ops, dict(tally.records), tally.dropped_local) == (1, {op.entity: 1}, len(local))
    assert sum(tally.values.values()) == len(declared)
    for name, change in out.changes.items():
        if policy.field_form(entity, name) is Form.PLAIN:
            assert change is op.changes[name]
        elif change.register is not None:
            original = op.changes[name].register
            assert original is not None
            assert change.register.version == original.version
            assert (change.register.value is None) == (original.value is None)
    _assert_sealed_values_open_back(op, out, policy, keys, key_id_for(op.entity, op.record_id, customer_id))
    _assert_tokens_are_the_fields_pseudonyms(op, out, policy)


@LAWS
@given(op=ops(), policy=policies)
def test_an_unrewritten_op_fails_the_check_in_exactly_its_non_plain_fields(
    op: Op, policy: ResidencyPolicy
) -> None:
    expected = []
    for name, (form, change) in _non_plain(op, policy).items():
        looks = looks_sealed if form is Form.SEALED else looks_pseudonym
        if form is Form.LOCAL:
            expected.append(name)
        elif change.register is not None:
            if change.register.value is not None and not looks(change.register.value):
                expected.append(name)
        elif change.delta is not None and not all(
            looks(e) for e in [*change.delta.add, *change.delta.remove]
        ):
            expected.append(name)
    assert check(op, policy) == expected
    carries_a_value = any(
        form is Form.LOCAL
        or (change.register is not None and change.register.value is not None)
        or (change.delta is not None and (change.delta.add or change.delta.remove))
        for form, change in _non_plain(op, policy).values()
    )
    assert bool(expected) == carries_a_value  # drawn values never look like envelopes or tokens


@settings(LAWS, max_examples=100)
@given(op=ops(), policy=policies, withhold=st.booleans())
def test_withheld_values_pass_the_check_too(op: Op, policy: ResidencyPolicy, withhold: bool) -> None:
    def seal(entity: str, record_id: str, name: str, key_id: str, value: StorageValue) -> str | None:
        return None if withhold else "ecs1.not-really"

    out = egress_op(op, policy, seal=seal, pseudonymise=real_pseudonymise, customer_id=None)
    garbage = [
        name
        for name, (form, change) in _non_plain(op, policy).items()
        if form is Form.SEALED and change.register is not None and change.register.value is not None
    ]
    # Withheld values leave as None and pass; a sealer answering garbage is caught at the hub.
    assert check(out, policy) == ([] if withhold else garbage)
