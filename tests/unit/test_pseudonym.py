"""Pseudonyms: deterministic per key and scope, unrelated across keys, well-formed."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from security import _primitives
from security.pseudonym import PSEUDONYM_PREFIX, looks_pseudonym, pseudonymise
from sync.wire import canonical

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_known_answer() -> None:
    mac = hmac.new(
        KEY, canonical(["edgecare.pseudonym.v1", "customer.phone", "+491701234567"]), hashlib.sha256
    )
    expected = "ecp1." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    assert pseudonymise(KEY, "customer.phone", "+491701234567") == expected


def test_same_value_scope_and_key_give_the_same_token() -> None:
    a = pseudonymise(KEY, "customer.phone", "+491701234567")
    assert a == pseudonymise(KEY, "customer.phone", "+491701234567")
    assert a.startswith(PSEUDONYM_PREFIX)
    assert len(a) == len(PSEUDONYM_PREFIX) + 43
    assert looks_pseudonym(a)
    assert "+491701234567" not in a


def test_other_keys_scopes_and_values_give_other_tokens() -> None:
    base = pseudonymise(KEY, "customer.phone", "+491701234567")
    assert pseudonymise(OTHER_KEY, "customer.phone", "+491701234567") != base
    assert pseudonymise(KEY, "customer.email", "+491701234567") != base
    assert pseudonymise(KEY, "customer.phone", "+491701234568") != base


def test_values_of_different_types_give_different_tokens() -> None:
    tokens = {pseudonymise(KEY, "s", v) for v in ("1", 1, 1.0, b"1")}
    assert len(tokens) == 4


def test_a_bool_counts_as_its_int() -> None:
    assert pseudonymise(KEY, "s", True) == pseudonymise(KEY, "s", 1)


def test_none_stays_none() -> None:
    assert pseudonymise(KEY, "customer.phone", None) is None


def test_the_key_must_be_32_bytes() -> None:
    with pytest.raises(_primitives.PrimitiveError, match="key: must be exactly 32 bytes"):
        pseudonymise(bytes(16), "s", "x")


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        b"ecp1." + b"A" * 43,
        "",
        "ecp1.",
        "ecp1." + "A" * 42,
        "ecp1." + "A" * 44,
        "ecp2." + "A" * 43,
        "ecs1." + "A" * 43,
        "ecp1." + "A" * 42 + "B",  # the last character carries bits past the 32 bytes
        "ecp1." + "A" * 42 + "=",
        "ecp1." + "A" * 41 + "+/",
        "ecp1." + "A" * 43 + "\n",
    ],
    ids=repr,
)
def test_looks_pseudonym_refuses_anything_else(value: object) -> None:
    assert not looks_pseudonym(value)


def test_looks_pseudonym_accepts_a_canonical_token() -> None:
    assert looks_pseudonym("ecp1." + "A" * 42 + "E")
