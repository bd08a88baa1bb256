"""Bearer tokens: round trip, refusals, and the secret file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from security.errors import SecurityError
from security.roles import Role
from security.tokens import (
    SECRET_BYTES,
    InvalidPrincipalError,
    InvalidSecretError,
    InvalidTokenError,
    Principal,
    SecretFileError,
    issue_token,
    load_or_create_secret,
    new_secret,
    verify_token,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
NOW_S = 1_795_435_200
ALICE = Principal(Role.SUPERVISOR, "Alice Martin", issued_at=NOW_S, expires_at=NOW_S + 3600)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(secret: bytes, payload: bytes) -> str:
    """Sign an arbitrary payload with a real MAC, to reach the checks behind it."""
    signing_input = f"ec1.{b64(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_round_trip() -> None:
    assert verify_token(SECRET, issue_token(SECRET, ALICE), now_s=NOW_S) == ALICE


def test_token_without_expiry_never_expires() -> None:
    principal = Principal(Role.COMPLIANCE_AUDITOR, "auditor-1", issued_at=0, expires_at=None)
    assert verify_token(SECRET, issue_token(SECRET, principal), now_s=2**62) == principal


def test_wire_form() -> None:
    token = issue_token(SECRET, ALICE)
    version, payload, mac = token.split(".")
    assert version == "ec1"
    assert base64.urlsafe_b64decode(payload + "==") == (
        b'{"r":"supervisor","n":"Alice Martin","iat":1795435200,"exp":1795438800}'
    )
    expected = hmac.new(SECRET, f"ec1.{payload}".encode(), hashlib.sha256).digest()
    assert mac == b64(expected)
    assert "=" not in token


def test_non_ascii_names_round_trip() -> None:
    principal = Principal(Role.AGENT, "Zoë 李 🙂", issued_at=NOW_S, expires_at=None)
    assert verify_token(SECRET, issue_token(SECRET, principal), now_s=NOW_S) == principal


def test_expiry_is_exclusive() -> None:
    token = issue_token(SECRET, ALICE)
    assert verify_token(SECRET, token, now_s=NOW_S + 3599) == ALICE
    with pytest.raises(InvalidTokenError):
        verify_token(SECRET, token, now_s=NOW_S + 3600)


def _tampered_payload() -> str:
    _, payload, mac = issue_token(SECRET, ALICE).split(".")
    admin = b64(base64.urlsafe_b64decode(payload + "==").replace(b"supervisor", b"regional_admin"))
    return f"ec1.{admin}.{mac}"


def _tampered_signature() -> str:
    token = issue_token(SECRET, ALICE)
    return token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]


def _padded() -> str:
    return issue_token(SECRET, ALICE) + "="


def _non_canonical_mac() -> str:
    # The last of 43 base64 characters carries two unused bits; flipping them
    # decodes to the same MAC, and must still be refused.
    token = issue_token(SECRET, ALICE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    return token[:-1] + alphabet[last | 1]


REFUSED = {
    "tampered-payload": _tampered_payload(),
    "tampered-signature": _tampered_signature(),
    "other-secret": issue_token(OTHER_SECRET, ALICE),
    "expired": issue_token(SECRET, Principal(Role.AGENT, "bob", issued_at=1, expires_at=NOW_S)),
    "empty": "",
    "garbage": "not a token",
    "two-parts": "ec1.abc",
    "four-parts": issue_token(SECRET, ALICE) + ".x",
    "wrong-version": "ec2" + issue_token(SECRET, ALICE)[3:],
    "bearer-prefix": "Bearer " + issue_token(SECRET, ALICE),
    "trailing-newline": issue_token(SECRET, ALICE) + "\n",
    "padded": _padded(),
    "non-canonical-mac": _non_canonical_mac(),
    "bad-base64": "ec1.!!!!." + "A" * 43,
    "non-ascii": "ec1.é." + "A" * 43,
    "bad-json": forge(SECRET, b"{not json"),
    "bad-utf8": forge(SECRET, b'{"r":"agent","n":"\xff","iat":1,"exp":null}'),
    "json-list": forge(SECRET, b"[1, 2]"),
    "unknown-role": forge(SECRET, b'{"r":"root","n":"x","iat":1,"exp":null}'),
    "missing-field": forge(SECRET, b'{"r":"agent","n":"x","iat":1}'),
    "extra-field": forge(SECRET, b'{"r":"agent","n":"x","iat":1,"exp":null,"admin":true}'),
    "bool-time": forge(SECRET, b'{"r":"agent","n":"x","iat":true,"exp":null}'),
    "float-time": forge(SECRET, b'{"r":"agent","n":"x","iat":1.5,"exp":null}'),
    "empty-name": forge(SECRET, b'{"r":"agent","n":"","iat":1,"exp":null}'),
    "control-in-name": forge(SECRET, b'{"r":"agent","n":"a\\u0000b","iat":1,"exp":null}'),
    "role-not-string": forge(SECRET, b'{"r":1,"n":"x","iat":1,"exp":null}'),
}


@pytest.mark.parametrize("token", list(REFUSED.values()), ids=list(REFUSED))
def test_every_refusal_looks_the_same(token: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        verify_token(SECRET, token, now_s=NOW_S)
    assert str(info.value) == "invalid or expired token"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None
    assert isinstance(info.value, SecurityError)


@pytest.mark.parametrize(
    ("name", "issued_at", "expires_at", "message"),
    [
        ("", 0, None, "principal name must be 1 to 64 characters, got 0"),
        ("x" * 65, 0, None, "principal name must be 1 to 64 characters, got 65"),
        ("tab\there", 0, None, "principal name must be printable characters only"),
        ("line\u2028sep", 0, None, "principal name must be printable characters only"),
        ("x", -1, None, "principal issued_at must be in [0, 2**63), got -1"),
        (
            "x",
            100,
            100,
            "principal expires_at must be after issued_at 100 and below 2**63, got 100",
        ),
    ],
)
def test_principals_are_validated(name: str, issued_at: int, expires_at: int | None, message: str) -> None:
    with pytest.raises(InvalidPrincipalError) as info:
        Principal(Role.AGENT, name, issued_at=issued_at, expires_at=expires_at)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SecurityError)


def test_names_of_64_printable_characters_with_spaces_are_fine() -> None:
    Principal(Role.AGENT, "a b" + "c" * 61, issued_at=0, expires_at=None)


@pytest.mark.parametrize("secret", [b"", b"short", bytes(33)])
def test_secrets_of_the_wrong_size_are_refused(secret: bytes) -> None:
    with pytest.raises(InvalidSecretError, match=f"token secret must be 32 bytes, got {len(secret)}"):
        issue_token(secret, ALICE)
    with pytest.raises(InvalidSecretError):
        verify_token(secret, issue_token(SECRET, ALICE), now_s=NOW_S)


def test_new_secrets_are_32_fresh_bytes() -> None:
    assert len(new_secret()) == SECRET_BYTES
    assert new_secret() != new_secret()


def test_secret_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "token.secret"
    secret = load_or_create_secret(path)
    assert len(secret) == SECRET_BYTES
    assert path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.secret"]  # no temp left over


def test_secret_file_creation_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "token.secret"
        load_or_create_secret(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token.secret"
    path.write_bytes(SECRET)
    path.chmod(mode)
    with pytest.raises(SecretFileError) as info:
        load_or_create_secret(path)
    assert info.value.path == path
    assert str(info.value) == (
        f"refusing token secret file {str(path)!r}: its mode {mode:#o} lets group or others "
        "access it; use 0o600"
    )


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_secret_file_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "token.secret"
    path.write_bytes(bytes(size))
    path.chmod(0o600)
    with pytest.raises(SecretFileError) as info:
        load_or_create_secret(path)
    assert info.value.path == path
    assert str(info.value).endswith(f"it holds {size} bytes, expected exactly 32")
    assert path.read_bytes() == bytes(size)  # refused, never replaced


def test_secret_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError) as info:
        load_or_create_secret(tmp_path)
    assert info.value.path == tmp_path


def test_secret_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "token.secret"
    with pytest.raises(SecretFileError) as info:
        load_or_create_secret(path)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert not path.parent.exists()


def test_a_secret_created_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token.secret"
    real_link = os.link

    def link_after_a_rival(src: str, dst: Path) -> None:
        path.write_bytes(OTHER_SECRET)
        path.chmod(0o600)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_a_rival)
    assert load_or_create_secret(path) == OTHER_SECRET
    assert path.read_bytes() == OTHER_SECRET
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.secret"]


def test_payload_json_is_compact() -> None:
    _, payload, _ = issue_token(SECRET, ALICE).split(".")
    decoded = base64.urlsafe_b64decode(payload + "==")
    assert b" " not in decoded.replace(b"Alice Martin", b"")
    assert json.loads(decoded)["r"] == "supervisor"
