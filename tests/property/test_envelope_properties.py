"""Laws of field envelopes and pseudonyms, for any storage value and any place."""

from __future__ import annotations

import dataclasses
import math
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from security.envelope import (
    DataKey,
    FieldContext,
    NotSealedError,
    SealedValue,
    UnsealError,
    looks_sealed,
    open_value,
    seal_value,
)
from security.pseudonym import looks_pseudonym, pseudonymise
from sync.crdt import StorageValue

LAWS = settings(max_examples=300, deadline=None)

# Register values: every storage type, ints past MessagePack's 64-bit range included.
storage_values: st.SearchStrategy[StorageValue] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
)
names = st.text(max_size=12)
contexts = st.builds(FieldContext, names, names, names, names)
keys = st.builds(
    DataKey,
    st.text(min_size=1, max_size=20),  # at most 80 UTF-8 bytes, within the 255 an envelope allows
    st.integers(1, 2**32 - 1),
    st.binary(min_size=32, max_size=32),
)
ELEMENTS = ("region", "entity", "record_id", "field")


def same(a: StorageValue, b: StorageValue) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


@LAWS
@given(key=keys, ctx=contexts, value=storage_values)
def test_open_inverts_seal(key: DataKey, ctx: FieldContext, value: StorageValue) -> None:
    sealed = seal_value(key, ctx, value)
    assert looks_sealed(sealed)
    assert same(open_value(key, ctx, sealed), value)


@LAWS
@given(
    key=keys,
    ctx=contexts,
    value=storage_values,
    element=st.sampled_from(ELEMENTS),
    other=names,
)
def test_any_other_place_refuses_to_open(
    key: DataKey, ctx: FieldContext, value: StorageValue, element: str, other: str
) -> None:
    assume(getattr(ctx, element) != other)
    sealed = seal_value(key, ctx, value)
    with pytest.raises(UnsealError):
        open_value(key, dataclasses.replace(ctx, **{element: other}), sealed)


@LAWS
@given(key=keys, ctx=contexts, value=storage_values, version=st.integers(1, 2**32 - 1))
def test_a_relabelled_key_version_refuses_to_open(
    key: DataKey, ctx: FieldContext, value: StorageValue, version: int
) -> None:
    assume(version != key.version)
    relabelled = DataKey(key.key_id, version, key.key)
    forged = dataclasses.replace(SealedValue.parse(seal_value(key, ctx, value)), key_version=version)
    with pytest.raises(UnsealError):
        open_value(relabelled, ctx, forged)


@LAWS
@given(key=keys, other=st.binary(min_size=32, max_size=32), ctx=contexts, value=storage_values)
def test_another_key_refuses_to_open(
    key: DataKey, other: bytes, ctx: FieldContext, value: StorageValue
) -> None:
    assume(other != key.key)
    with pytest.raises(UnsealError):
        open_value(DataKey(key.key_id, key.version, other), ctx, seal_value(key, ctx, value))


@LAWS
@given(
    text=st.text(max_size=80)
    | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120).map(
        lambda body: "ecs1." + body
    )
)
def test_parse_either_succeeds_or_says_not_sealed(text: str) -> None:
    try:
        envelope = SealedValue.parse(text)
    except NotSealedError:
        assert not looks_sealed(text)
    else:
        assert envelope.encode() == text


@LAWS
@given(
    key=st.binary(min_size=32, max_size=32),
    other_key=st.binary(min_size=32, max_size=32),
    scope=names,
    other_scope=names,
    value=storage_values.filter(lambda v: v is not None),
)
def test_pseudonyms_are_deterministic_per_key_and_scope(
    key: bytes, other_key: bytes, scope: str, other_scope: str, value: str | int | float | bytes
) -> None:
    token = pseudonymise(key, scope, value)
    assert token == pseudonymise(key, scope, value)
    assert looks_pseudonym(token)
    if other_key != key:
        assert pseudonymise(other_key, scope, value) != token
    if other_scope != scope:
        assert pseudonymise(key, other_scope, value) != token
