"""Laws of bearer tokens: every principal round-trips, every mutation is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security.roles import Role
from security.tokens import (
    MAX_NAME_CHARS,
    MAX_UNIX_S,
    SECRET_BYTES,
    InvalidTokenError,
    Principal,
    issue_token,
    verify_token,
)

secrets = st.binary(min_size=SECRET_BYTES, max_size=SECRET_BYTES)
# Printable means: no control, format, surrogate, private-use, unassigned or
# separator characters, except the plain space.
names = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")) | st.just(" "),
    min_size=1,
    max_size=MAX_NAME_CHARS,
)


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    issued_at = draw(st.integers(0, MAX_UNIX_S - 2))
    expires_at = draw(st.none() | st.integers(issued_at + 1, MAX_UNIX_S - 1))
    return Principal(draw(st.sampled_from(Role)), draw(names), issued_at, expires_at)


@given(secret=secrets, principal=principals())
def test_every_principal_round_trips(secret: bytes, principal: Principal) -> None:
    token = issue_token(secret, principal)
    assert token.isascii()
    assert verify_token(secret, token, now_s=principal.issued_at) == principal


@given(secret=secrets, other=secrets, principal=principals())
def test_a_token_is_only_good_with_its_own_secret(secret: bytes, other: bytes, principal: Principal) -> None:
    token = issue_token(secret, principal)
    if other != secret:
        with pytest.raises(InvalidTokenError):
            verify_token(other, token, now_s=principal.issued_at)


@given(
    secret=secrets,
    principal=principals(),
    position=st.integers(min_value=0),
    replacement=st.integers(0, 255),
)
def test_any_single_byte_substitution_is_refused(
    secret: bytes, principal: Principal, position: int, replacement: int
) -> None:
    token = issue_token(secret, principal).encode("ascii")
    position %= len(token)
    if token[position] == replacement:
        replacement ^= 0x01
    mutated = token[:position] + bytes([replacement]) + token[position + 1 :]
    with pytest.raises(InvalidTokenError, match=r"^invalid or expired token$"):
        verify_token(secret, mutated.decode("latin-1"), now_s=principal.issued_at)


@given(
    secret=secrets,
    principal=principals(),
    position=st.integers(min_value=0),
    inserted=st.integers(0, 255),
    delete=st.booleans(),
)
def test_any_single_byte_insertion_or_deletion_is_refused(
    secret: bytes, principal: Principal, position: int, inserted: int, delete: bool
) -> None:
    token = issue_token(secret, principal).encode("ascii")
    if delete:
        position %= len(token)
        mutated = token[:position] + token[position + 1 :]
    else:
        position %= len(token) + 1
        mutated = token[:position] + bytes([inserted]) + token[position:]
    with pytest.raises(InvalidTokenError, match=r"^invalid or expired token$"):
        verify_token(secret, mutated.decode("latin-1"), now_s=principal.issued_at)


@given(
    secret=secrets,
    principal=principals().filter(lambda p: p.expires_at is not None),
    late_s=st.integers(0, 2**40),
)
def test_tokens_are_refused_from_their_expiry_on(secret: bytes, principal: Principal, late_s: int) -> None:
    assert principal.expires_at is not None
    with pytest.raises(InvalidTokenError):
        verify_token(secret, issue_token(secret, principal), now_s=principal.expires_at + late_s)
