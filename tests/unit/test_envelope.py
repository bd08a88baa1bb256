"""Field envelopes: wire format, round trips, binding to the place, strict parsing."""

from __future__ import annotations

import base64
import dataclasses
import math
import random
import struct

import msgpack
import pytest

from security import _primitives
from security.envelope import (
    FORMAT_VERSION,
    SEALED_PREFIX,
    DataKey,
    FieldContext,
    ForeignRegionError,
    InvalidKeyIdError,
    NotSealedError,
    SealedValue,
    Sealer,
    UnsealableValueError,
    UnsealError,
    field_aad,
    looks_sealed,
    open_value,
    seal_value,
)
from sync.crdt import StorageValue
from sync.wire import canonical

KEY = DataKey("customer:C1", 1, bytes(range(32)))
CTX = FieldContext("eu", "customer", "C1", "name")

VALUES: list[StorageValue] = [
    "Alice Müller 😀",
    "",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    2**200,
    -(2**200),
    0.5,
    -0.0,
    math.inf,
    -math.inf,
    b"",
    bytes(range(256)),
    True,
    False,
    None,
]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def same(a: StorageValue, b: StorageValue) -> bool:
    """Equal and of the same type; NaN equals NaN and -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    return a == b


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_storage_value_round_trips_with_its_type(value: StorageValue) -> None:
    sealed = seal_value(KEY, CTX, value)
    assert sealed.startswith(SEALED_PREFIX)
    assert sealed.isascii()
    assert same(open_value(KEY, CTX, sealed), value)


def test_nan_round_trips() -> None:
    opened = open_value(KEY, CTX, seal_value(KEY, CTX, math.nan))
    assert isinstance(opened, float)
    assert math.isnan(opened)


def test_bool_stays_bool_and_int_stays_int() -> None:
    assert open_value(KEY, CTX, seal_value(KEY, CTX, True)) is True
    one = open_value(KEY, CTX, seal_value(KEY, CTX, 1))
    assert type(one) is int
    assert one == 1


def test_open_accepts_a_parsed_envelope() -> None:
    sealed = seal_value(KEY, CTX, "x")
    assert open_value(KEY, CTX, SealedValue.parse(sealed)) == "x"


def test_sealed_value_does_not_contain_the_plaintext() -> None:
    phone = "+491701234567"
    sealed = seal_value(KEY, CTX, phone)
    binary = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :] + "==")
    assert phone not in sealed
    assert phone.encode() not in binary


def test_values_that_are_not_storage_values_are_refused() -> None:
    with pytest.raises(UnsealableValueError, match="list is not a storage value"):
        seal_value(KEY, CTX, [1, 2])  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(UnsealableValueError, match="lone surrogate"):
        seal_value(KEY, CTX, "a\ud800b")


# --- nonces ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_primitives_refuse_nonces_that_are_not_12_bytes(size: int) -> None:
    with pytest.raises(_primitives.PrimitiveError, match="nonce: must be exactly 12 bytes"):
        _primitives.aead_encrypt(KEY.key, b"x", b"", nonce=bytes(size))
    with pytest.raises(_primitives.PrimitiveError, match="nonce"):
        _primitives.aead_decrypt(KEY.key, bytes(size), bytes(32), b"")


@pytest.mark.parametrize("size", [11, 13])
def test_envelopes_refuse_nonces_that_are_not_12_bytes(size: int) -> None:
    with pytest.raises(NotSealedError, match=f"nonce must be 12 bytes, got {size}"):
        SealedValue(FORMAT_VERSION, "k", 1, bytes(size), bytes(16))


def test_every_seal_draws_a_fresh_12_byte_nonce() -> None:
    nonces = [SealedValue.parse(seal_value(KEY, CTX, "same")).nonce for _ in range(2000)]
    assert {len(n) for n in nonces} == {12}
    assert len(set(nonces)) == len(nonces)


# --- wire format -------------------------------------------------------------------------------


def test_wire_layout_is_pinned() -> None:
    envelope = SealedValue(1, "k", 7, bytes(12), b"\xff" * 16)
    binary = b"\x01" + (7).to_bytes(4, "big") + b"\x01k" + bytes(12) + b"\xff" * 16
    assert envelope.encode() == "ecs1." + b64(binary)
    assert SealedValue.parse(envelope.encode()) == envelope


def test_parse_reads_what_seal_wrote() -> None:
    envelope = SealedValue.parse(seal_value(KEY, CTX, "x"))
    assert (envelope.fmt, envelope.key_id, envelope.key_version) == (1, "customer:C1", 1)
    assert len(envelope.nonce) == 12
    assert len(envelope.ciphertext) == 16 + len(msgpack.packb("x"))


def _binary(
    *, fmt: int = 1, version: int = 1, key_id: bytes = b"k", nonce: bytes = bytes(12), ct: bytes = bytes(16)
) -> str:
    return "ecs1." + b64(
        bytes([fmt]) + version.to_bytes(4, "big") + bytes([len(key_id)]) + key_id + nonce + ct
    )


GARBAGE: list[tuple[object, str]] = [
    (42, "expected a str, got a int"),
    (None, "expected a str, got a NoneType"),
    (b"ecs1.AAAA", "expected a str, got a bytes of length 9"),
    ("", "without the 'ecs1.' prefix"),
    ("Alice", "a str of length 5 without the 'ecs1.' prefix"),
    ("ecs2." + "A" * 60, "without the 'ecs1.' prefix"),
    ("ecp1." + "A" * 43, "without the 'ecs1.' prefix"),
    ("ecs1.", "0 bytes, shorter than the minimum"),
    ("ecs1.!!!!" + "A" * 60, "not unpadded base64url"),
    ("ecs1." + "A" * 60 + "==", "base64url"),
    ("ecs1." + "A" * 57 + "B", "not canonical"),
    ("ecs1." + "A" * 40, "shorter than the minimum"),
    (_binary(fmt=2), "format version 2 is not known"),
    (_binary(fmt=0), "format version 0 is not known"),
    (_binary(key_id=b"", ct=bytes(17)), "key id is empty"),
    (_binary(key_id=b"\xff\xfe"), "key id is not UTF-8"),
    (_binary(key_id=b"k" * 20, ct=bytes(5)), "too short for a 20-byte key id"),
    (_binary(ct=bytes(15)), "shorter than the minimum"),
]


@pytest.mark.parametrize(("text", "problem"), GARBAGE, ids=range(len(GARBAGE)))
def test_parse_refuses_anything_else_and_says_why(text: object, problem: str) -> None:
    with pytest.raises(NotSealedError) as info:
        SealedValue.parse(text)
    message = str(info.value)
    assert message.startswith("not a sealed value: ")
    assert problem in message
    if isinstance(text, str) and len(text) > 5:
        assert text[5:] not in message  # never echoes the input
    assert not looks_sealed(text)


def test_looks_sealed_accepts_sealed_values_only() -> None:
    assert looks_sealed(seal_value(KEY, CTX, None))
    assert looks_sealed(_binary())
    assert not looks_sealed("plain text")


@pytest.mark.parametrize(
    ("key_id", "version", "rule"),
    [
        ("", 1, "must be 1 to 255 UTF-8 bytes, got 0"),
        ("é" * 128, 1, "got 256"),
        ("a\ud800", 1, "lone surrogates"),
        ("k", 0, "version must be 1 to 4294967295, got 0"),
        ("k", 2**32, "version must be"),
    ],
)
def test_data_keys_must_fit_the_header(key_id: str, version: int, rule: str) -> None:
    with pytest.raises(InvalidKeyIdError, match=rule):
        DataKey(key_id, version, bytes(32))


def test_data_key_must_be_32_bytes() -> None:
    with pytest.raises(_primitives.PrimitiveError, match="32 bytes, got 16"):
        DataKey("k", 1, bytes(16))


def test_data_key_repr_hides_the_key() -> None:
    assert repr(DataKey("k", 1, bytes([0xAB]) * 32)) == "DataKey(key_id='k', version=1)"


# --- binding -----------------------------------------------------------------------------------


def test_field_aad_is_the_canonical_tuple() -> None:
    expected = canonical(["edgecare.field.v1", 1, "eu", "customer", "C1", "name", "customer:C1", 1])
    assert field_aad(CTX, "customer:C1", 1) == expected
    assert field_aad(CTX, "customer:C1", 1, fmt=2) != expected


@pytest.mark.parametrize(
    "moved",
    [
        dataclasses.replace(CTX, field="address"),
        dataclasses.replace(CTX, record_id="C2"),
        dataclasses.replace(CTX, entity="ticket"),
        dataclasses.replace(CTX, region="us"),
    ],
    ids=["field", "record", "entity", "region"],
)
def test_a_value_moved_elsewhere_does_not_open(moved: FieldContext) -> None:
    sealed = seal_value(KEY, CTX, "Alice")
    with pytest.raises(UnsealError) as info:
        open_value(KEY, moved, sealed)
    error = info.value
    assert (error.key_id, error.key_version) == ("customer:C1", 1)
    assert (error.entity, error.record_id, error.field) == (moved.entity, moved.record_id, moved.field)
    for name in ("'customer:C1' v1", moved.entity, moved.record_id, moved.field):
        assert name in str(error)
    assert "Alice" not in str(error)


def test_a_value_relabelled_with_another_key_version_does_not_open() -> None:
    sealed = SealedValue.parse(seal_value(KEY, CTX, "Alice"))
    v2 = DataKey(KEY.key_id, 2, KEY.key)  # same bytes, so only the binding can tell
    with pytest.raises(UnsealError, match="the key given is 'customer:C1' v2"):
        open_value(v2, CTX, sealed)
    forged = dataclasses.replace(sealed, key_version=2)
    with pytest.raises(UnsealError, match="tag does not verify"):
        open_value(v2, CTX, forged.encode())


def test_a_value_under_another_key_id_does_not_open() -> None:
    sealed = SealedValue.parse(seal_value(KEY, CTX, "Alice"))
    other = DataKey("customer:C2", 1, KEY.key)
    with pytest.raises(UnsealError, match="the key given is 'customer:C2' v1"):
        open_value(other, CTX, sealed)
    with pytest.raises(UnsealError, match="tag does not verify"):
        open_value(other, CTX, dataclasses.replace(sealed, key_id="customer:C2"))


def test_a_wrong_key_does_not_open() -> None:
    sealed = seal_value(KEY, CTX, "Alice")
    with pytest.raises(UnsealError, match="tag does not verify"):
        open_value(DataKey(KEY.key_id, 1, bytes(32)), CTX, sealed)


@pytest.mark.parametrize("part", ["nonce", "ciphertext"])
def test_altered_bytes_do_not_open(part: str) -> None:
    sealed = SealedValue.parse(seal_value(KEY, CTX, "Alice"))
    data = bytearray(getattr(sealed, part))
    data[-1] ^= 0x01
    if part == "nonce":
        altered = dataclasses.replace(sealed, nonce=bytes(data))
    else:
        altered = dataclasses.replace(sealed, ciphertext=bytes(data))
    with pytest.raises(UnsealError, match="tag does not verify"):
        open_value(KEY, CTX, altered)


def test_authentic_bytes_that_are_not_a_storage_value_are_refused() -> None:
    aad = field_aad(CTX, KEY.key_id, KEY.version)
    nonce, ciphertext = _primitives.aead_encrypt(KEY.key, msgpack.packb([1, 2]), aad)
    with pytest.raises(UnsealError, match="not a storage value"):
        open_value(KEY, CTX, SealedValue(1, KEY.key_id, 1, nonce, ciphertext))


def _vary(rng: random.Random, ctx: FieldContext, key: DataKey) -> tuple[FieldContext, DataKey]:
    """``ctx``/``key`` with exactly one element changed."""
    element = rng.randrange(6)
    if element == 4:
        return ctx, DataKey(key.key_id, key.version + rng.randint(1, 5), key.key)
    if element == 5:
        return ctx, DataKey(key.key_id, key.version, bytes(rng.getrandbits(8) for _ in range(32)))
    name = ("region", "entity", "record_id", "field")[element]
    old = getattr(ctx, name)
    new = old
    while new == old:
        new = rng.choice([old + "x", old[:-1], old.upper(), str(rng.randrange(100)), ""])
    return dataclasses.replace(ctx, **{name: new}), key


def test_ten_thousand_random_swaps_all_fail() -> None:
    rng = random.Random(20240611)
    key = DataKey("ticket:T9", 3, bytes(rng.getrandbits(8) for _ in range(32)))
    regions, entities, fields = ["eu", "us", "cn", "in"], ["customer", "ticket"], ["name", "phone", "note"]
    opened = 0
    for _ in range(10_000):
        ctx = FieldContext(
            rng.choice(regions), rng.choice(entities), f"R{rng.randrange(1000)}", rng.choice(fields)
        )
        sealed = seal_value(key, ctx, "secret")
        other_ctx, other_key = _vary(rng, ctx, key)
        try:
            open_value(other_key, other_ctx, sealed)
        except UnsealError:
            continue
        opened += 1
    assert opened == 0


# --- Sealer ------------------------------------------------------------------------------------


class FakeKeys:
    """A dict of data keys, implementing ``DataKeys``."""

    def __init__(self) -> None:
        self.keys: dict[str, DataKey] = {}

    def data_key(self, key_id: str) -> DataKey:
        return self.keys.setdefault(key_id, DataKey(key_id, 1, _primitives.new_key()))

    def existing_data_key(self, key_id: str, version: int | None = None) -> DataKey:
        key = self.keys[key_id]
        assert version in (None, key.version)
        return key


def test_sealer_seals_under_the_named_key_and_opens_by_the_envelope() -> None:
    keys = FakeKeys()
    sealer = Sealer(keys, "eu")
    a = sealer.seal(CTX, "customer:C1", "Alice")
    b = sealer.seal(dataclasses.replace(CTX, record_id="C2"), "customer:C2", "Bob")
    assert SealedValue.parse(a).key_id == "customer:C1"
    assert set(keys.keys) == {"customer:C1", "customer:C2"}
    assert sealer.open(CTX, a) == "Alice"
    assert sealer.open(dataclasses.replace(CTX, record_id="C2"), b) == "Bob"
    with pytest.raises(UnsealError):
        sealer.open(dataclasses.replace(CTX, record_id="C2"), a)


def test_sealer_refuses_to_seal_for_another_region() -> None:
    with pytest.raises(ForeignRegionError, match="region 'eu' and cannot seal for region 'us'"):
        Sealer(FakeKeys(), "eu").seal(dataclasses.replace(CTX, region="us"), "customer:C1", "x")


def test_sealer_open_refuses_garbage() -> None:
    with pytest.raises(NotSealedError):
        Sealer(FakeKeys(), "eu").open(CTX, "Alice")
