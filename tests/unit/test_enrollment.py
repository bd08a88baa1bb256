"""Enrollment tokens: their text form, and the hub's decision on every kind of claim."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace

import pytest

from cloud_hub.core.enrollment import (
    DEFAULT_TTL_S,
    SECRET_BYTES,
    TOKEN_PREFIX,
    EnrollClaim,
    EnrollmentError,
    EnrollToken,
    TokenRecord,
    decide,
    new_token,
    parse_token,
    secret_hash,
)

SECRET = bytes(range(SECRET_BYTES))
TOKEN_ID = "0123456789abcdef"  # noqa: S105 - a token id is public
NOW = 1_700_000_000_000
KEY_A = b"A" * 32
KEY_B = b"B" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(region: str = "eu-west", secret: bytes = SECRET) -> EnrollToken:
    return new_token(region, TOKEN_ID, secret)


def record(**changes: object) -> TokenRecord:
    base = TokenRecord(TOKEN_ID, "eu-west", token().secret_hash, NOW, NOW + DEFAULT_TTL_S * 1000)
    return replace(base, **changes)  # type: ignore[arg-type]


def claim(
    tok: EnrollToken | None = None, node_id: str = "node-1", region: str = "eu-west", key: bytes = KEY_A
) -> EnrollClaim:
    return EnrollClaim(tok or token(), node_id, region, key)


def refusal(
    rec: TokenRecord | None, c: EnrollClaim, *, now_ms: int = NOW, registered: str | None = None
) -> EnrollmentError:
    with pytest.raises(EnrollmentError) as info:
        decide(rec, c, now_ms=now_ms, registered_region=registered)
    return info.value


# --- the token's text ----------------------------------------------------------------------------


def test_a_token_reads_back_as_it_was_printed() -> None:
    tok = token()
    text = tok.encode()
    assert text == f"{TOKEN_PREFIX}.eu-west.{TOKEN_ID}.{b64(SECRET)}"
    assert "=" not in text
    assert parse_token(text) == tok
    assert parse_token(f"  {text}\n") == tok  # pasted with a newline


def test_tokens_of_any_secret_round_trip() -> None:
    for secret in (
        b"\x00" * SECRET_BYTES,
        b"\xff" * SECRET_BYTES,
        hashlib.sha256(b"x").digest()[:SECRET_BYTES],
    ):
        tok = new_token("ap-2", "ffffffffffffffff", secret)
        assert parse_token(tok.encode()) == tok


def test_the_hub_keeps_a_domain_separated_hash_of_the_secret() -> None:
    assert token().secret_hash == secret_hash(SECRET)
    assert secret_hash(SECRET) == hashlib.sha256(b"edgecare.enroll.v1\x00" + SECRET).digest()
    assert secret_hash(SECRET) != hashlib.sha256(SECRET).digest()
    assert secret_hash(SECRET) != secret_hash(SECRET[:-1] + b"\x00")


@pytest.mark.parametrize("region", ["EU", "e", "1eu", "eu_west", "eu.west", "-eu", "a" * 33, ""])
def test_new_token_refuses_a_region_that_is_not_a_region_code(region: str) -> None:
    with pytest.raises(EnrollmentError, match="must be 2-32 lowercase letters") as info:
        new_token(region, TOKEN_ID, SECRET)
    assert info.value.reason == "bad_region"
    assert repr(region) in str(info.value)


@pytest.mark.parametrize("region", ["eu", "eu-west-1", "a" * 32, "z9"])
def test_new_token_accepts_region_codes(region: str) -> None:
    assert new_token(region, TOKEN_ID, SECRET).region == region


GOOD_SECRET = b64(SECRET)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "looks like ect1.<region>.<id>.<secret>"),
        ("hello", "looks like ect1.<region>.<id>.<secret>"),
        (f"ect2.eu.{TOKEN_ID}.{GOOD_SECRET}", "looks like ect1.<region>.<id>.<secret>"),
        (f"ect1.eu.{TOKEN_ID}", "looks like ect1.<region>.<id>.<secret>"),
        (f"ect1.eu.{TOKEN_ID}.{GOOD_SECRET}.x", "looks like ect1.<region>.<id>.<secret>"),
        (f"ect1.EU.{TOKEN_ID}.{GOOD_SECRET}", "the token's region 'EU' is not a region code"),
        (f"ect1.e.{TOKEN_ID}.{GOOD_SECRET}", "the token's region 'e' is not a region code"),
        (f"ect1.eu.0123456789ABCDEF.{GOOD_SECRET}", "the token's id must be 16 hex digits"),
        (f"ect1.eu.0123456789abcde.{GOOD_SECRET}", "the token's id must be 16 hex digits"),
        (f"ect1.eu.0123456789abcdef0.{GOOD_SECRET}", "the token's id must be 16 hex digits"),
        (f"ect1.eu.{TOKEN_ID}.{GOOD_SECRET}A", "the token's secret is not base64url"),
        (f"ect1.eu.{TOKEN_ID}.{b64(SECRET[:-1])}", f"the token's secret must be {SECRET_BYTES} bytes"),
        (f"ect1.eu.{TOKEN_ID}.{b64(SECRET + b'x')}", f"the token's secret must be {SECRET_BYTES} bytes"),
        (f"ect1.eu.{TOKEN_ID}.", f"the token's secret must be {SECRET_BYTES} bytes"),
    ],
)
def test_parse_token_refuses_every_malformed_part_saying_which(text: str, problem: str) -> None:
    with pytest.raises(EnrollmentError, match=re.escape(problem)) as info:
        parse_token(text)
    assert info.value.reason == "malformed_token"


def test_a_refused_token_never_shows_its_secret() -> None:
    with pytest.raises(EnrollmentError) as info:
        parse_token(f"ect1.EU.{TOKEN_ID}.{GOOD_SECRET}")
    assert GOOD_SECRET not in str(info.value)


@pytest.mark.parametrize(
    "secret_text",
    [
        GOOD_SECRET[:8] + "!" + GOOD_SECRET[8:],
        GOOD_SECRET[:8] + "*" + GOOD_SECRET[8:],
        GOOD_SECRET[:8] + " " + GOOD_SECRET[8:],
        b64(b"\xff" * SECRET_BYTES).replace("_", "/"),
    ],
)
def test_parse_token_refuses_characters_outside_base64url_in_the_secret(secret_text: str) -> None:
    with pytest.raises(EnrollmentError) as info:
        parse_token(f"ect1.eu.{TOKEN_ID}.{secret_text}")
    assert info.value.reason == "malformed_token"


# --- the decision --------------------------------------------------------------------------------


def test_a_fresh_token_for_the_nodes_region_is_accepted() -> None:
    decide(record(), claim(), now_ms=NOW, registered_region=None)
    decide(record(), claim(), now_ms=record().expires_ms - 1, registered_region=None)
    decide(record(), claim(), now_ms=NOW, registered_region="eu-west")  # a node moving to a new key


def test_a_new_token_does_not_take_over_an_enrolled_node_id_with_another_key() -> None:
    with pytest.raises(EnrollmentError) as info:
        decide(record(), claim(key=KEY_A), now_ms=NOW, registered_region="eu-west", registered_key=KEY_B)
    assert info.value.reason == "node_id_taken"
    decide(record(), claim(key=KEY_A), now_ms=NOW, registered_region="eu-west", registered_key=KEY_A)


def test_an_unknown_token_is_refused() -> None:
    err = refusal(None, claim())
    assert err.reason == "unknown_token"
    assert "did not issue this token" in str(err)


def test_a_wrong_secret_under_a_known_id_looks_like_an_unknown_token() -> None:
    forged = token(secret=SECRET[:-1] + b"\xff")
    assert forged.token_id == record().token_id
    err = refusal(record(), claim(forged))
    assert err.reason == "unknown_token"


@pytest.mark.parametrize("late_ms", [0, 1, 10**9])
def test_an_expired_token_is_refused(late_ms: int) -> None:
    rec = record()
    err = refusal(rec, claim(), now_ms=rec.expires_ms + late_ms)
    assert err.reason == "expired"
    assert "ask central ops for a new one" in str(err)


def test_a_token_enrolls_only_into_the_region_it_was_issued_for() -> None:
    err = refusal(record(), claim(region="us-east"))
    assert err.reason == "wrong_region"
    assert "'eu-west'" in str(err)
    assert "'us-east'" in str(err)


def test_a_token_whose_text_names_another_region_than_the_hubs_record_is_refused() -> None:
    relabelled = new_token("us-east", TOKEN_ID, SECRET)  # same id and secret, region edited in the text
    for node_region in ("us-east", "eu-west"):
        err = refusal(record(), claim(relabelled, region=node_region))
        assert err.reason == "wrong_region"


def test_a_node_enrolled_in_one_region_cannot_enroll_into_another() -> None:
    err = refusal(record(), claim(), registered="ap-south")
    assert err.reason == "node_in_other_region"
    assert "'node-1'" in str(err)
    assert "'ap-south'" in str(err)


def test_a_used_token_is_refused_to_another_node() -> None:
    used = record(used_ms=NOW, used_by="node-1", used_key=KEY_A)
    err = refusal(used, claim(node_id="node-2"))
    assert err.reason == "token_used"
    assert "'node-1'" in str(err)


def test_a_used_token_is_refused_to_the_same_node_with_another_key() -> None:
    used = record(used_ms=NOW, used_by="node-1", used_key=KEY_A)
    assert refusal(used, claim(key=KEY_B)).reason == "token_used"


def test_the_same_node_and_key_may_finish_an_enrollment_it_started() -> None:
    used = record(used_ms=NOW, used_by="node-1", used_key=KEY_A)
    decide(used, claim(), now_ms=NOW + 5, registered_region="eu-west")
    decide(used, claim(), now_ms=NOW + 5, registered_region=None)
    # The token was spent in time; finishing the bookkeeping later is not a new use.
    decide(used, claim(), now_ms=used.expires_ms + 1, registered_region="eu-west")


def test_the_checks_run_in_order_secret_region_node_use_expiry() -> None:
    used_elsewhere = record(used_ms=NOW, used_by="node-9", used_key=KEY_B)
    late = used_elsewhere.expires_ms + 1
    assert refusal(
        used_elsewhere, claim(token(secret=b"\x00" * 24), region="us-east"), now_ms=late
    ).reason == ("unknown_token")
    assert (
        refusal(used_elsewhere, claim(region="us-east"), now_ms=late, registered="ap").reason
        == "wrong_region"
    )
    assert refusal(used_elsewhere, claim(), now_ms=late, registered="ap").reason == "node_in_other_region"
    assert refusal(used_elsewhere, claim(), now_ms=late).reason == "token_used"
