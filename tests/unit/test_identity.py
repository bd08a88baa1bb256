"""Node identity: creation, reload, file permissions, and the public-key text form."""

from __future__ import annotations

import base64
import os
import pickle
import re
import stat
from pathlib import Path

import pytest

from security._primitives import fingerprint, verify
from security.errors import SecurityError
from security.identity import (
    KEY_FILE,
    PUBLIC_KEY_FILE,
    IdentityError,
    NodeIdentity,
    decode_public_key,
    encode_public_key,
    load_public_key,
)

RAW = bytes(range(32))
RAW_TEXT = "ed25519:" + base64.b64encode(RAW).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_creates_key_pub_and_private_directory(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "identity"
    identity = NodeIdentity.load_or_create(directory)

    assert mode(directory) == 0o700
    assert mode(directory / KEY_FILE) == 0o600
    assert (directory / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    pub_text = (directory / PUBLIC_KEY_FILE).read_text()
    assert re.fullmatch(r"ed25519:[A-Za-z0-9+/]{43}=\n", pub_text)
    assert base64.b64decode(pub_text.removeprefix("ed25519:")) == identity.public_key
    assert sorted(p.name for p in directory.iterdir()) == [KEY_FILE, PUBLIC_KEY_FILE]  # no temp files left


def test_reload_returns_the_same_identity(tmp_path: Path) -> None:
    first = NodeIdentity.load_or_create(tmp_path)
    pub_before = (tmp_path / PUBLIC_KEY_FILE).read_bytes()
    second = NodeIdentity.load_or_create(tmp_path)

    assert second.public_key == first.public_key
    assert (tmp_path / PUBLIC_KEY_FILE).read_bytes() == pub_before
    assert verify(first.public_key, second.sign(b"message"), b"message")
    assert not verify(first.public_key, second.sign(b"message"), b"other")


def test_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    NodeIdentity.load_or_create(tmp_path)
    assert mode(tmp_path) == 0o750


def test_properties_and_signature_size() -> None:
    identity = NodeIdentity.generate()
    assert len(identity.public_key) == 32
    assert identity.fingerprint == fingerprint(identity.public_key)
    assert len(identity.fingerprint) == 8
    assert identity.fingerprint_hex == identity.fingerprint.hex()
    assert identity.public_key_text == encode_public_key(identity.public_key)
    assert len(identity.sign(b"x")) == 64
    assert NodeIdentity.generate().public_key != identity.public_key


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_key_readable_by_others_is_refused_with_the_fix(tmp_path: Path, bad_mode: int) -> None:
    NodeIdentity.load_or_create(tmp_path)
    key_path = tmp_path / KEY_FILE
    key_path.chmod(bad_mode)

    with pytest.raises(IdentityError) as caught:
        NodeIdentity.load_or_create(tmp_path)

    message = str(caught.value)
    assert str(key_path) in message
    assert f"chmod 600 {key_path}" in message
    assert oct(bad_mode) in message
    assert caught.value.path == key_path
    assert mode(key_path) == bad_mode  # refused, not silently "fixed"


def test_key_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    key_path = tmp_path / KEY_FILE
    key_path.write_bytes(b"not a key")
    key_path.chmod(0o600)
    with pytest.raises(IdentityError, match=r"node key file .*node\.key.*not a readable PEM key"):
        NodeIdentity.load_or_create(tmp_path)
    assert key_path.read_bytes() == b"not a key"  # never overwritten


def test_key_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).mkdir(mode=0o700)
    with pytest.raises(IdentityError, match="not a regular file"):
        NodeIdentity.load_or_create(tmp_path)


def test_missing_public_key_file_is_rewritten(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path)
    (tmp_path / PUBLIC_KEY_FILE).unlink()
    NodeIdentity.load_or_create(tmp_path)
    assert load_public_key(tmp_path / PUBLIC_KEY_FILE) == identity.public_key


def test_public_key_file_of_another_key_is_refused(tmp_path: Path) -> None:
    NodeIdentity.load_or_create(tmp_path)
    other = NodeIdentity.generate()
    (tmp_path / PUBLIC_KEY_FILE).write_text(other.public_key_text + "\n")
    with pytest.raises(IdentityError, match=r"does not hold this node's key.*delete it"):
        NodeIdentity.load_or_create(tmp_path)


def test_new_key_replaces_a_stale_public_key_file(tmp_path: Path) -> None:
    stale = NodeIdentity.generate()
    (tmp_path / PUBLIC_KEY_FILE).write_text(stale.public_key_text + "\n")
    identity = NodeIdentity.load_or_create(tmp_path)
    assert load_public_key(tmp_path / PUBLIC_KEY_FILE) == identity.public_key


def test_fifo_key_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / KEY_FILE, 0o600)
    with pytest.raises(IdentityError, match="not a regular file"):
        NodeIdentity.load_or_create(tmp_path)


def test_directory_path_that_is_a_file_is_reported(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "identity"
    not_a_directory.write_text("")
    with pytest.raises(IdentityError, match=r"identity directory .*cannot be read or written") as caught:
        NodeIdentity.load_or_create(not_a_directory)
    assert caught.value.path == not_a_directory


def test_repr_and_pickle_never_reveal_the_private_key(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path)
    pem = (tmp_path / KEY_FILE).read_text()
    der = base64.b64decode("".join(pem.splitlines()[1:-1]))
    seed = der[-32:]  # PKCS#8 Ed25519: the private key is the last 32 bytes

    shown = repr(identity) + str(identity)
    assert shown == f"NodeIdentity(fingerprint={identity.fingerprint_hex})" * 2
    assert seed.hex() not in shown
    assert base64.b64encode(seed).decode() not in shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(identity)


# --- public key text form ---------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    assert encode_public_key(RAW) == RAW_TEXT
    assert decode_public_key(RAW_TEXT) == RAW
    assert decode_public_key(f"  {RAW_TEXT}\n") == RAW


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "does not start with 'ed25519:'"),
        (base64.b64encode(RAW).decode(), "does not start with 'ed25519:'"),
        ("ssh-ed25519:" + base64.b64encode(RAW).decode(), "does not start with"),
        ("ed25519:not base64!", "is not valid base64"),
        ("ed25519:" + base64.b64encode(RAW).decode().rstrip("="), "is not valid base64"),
        ("ed25519:" + base64.b64encode(RAW[:31]).decode(), "holds 31 bytes, expected 32"),
        ("ed25519:" + base64.b64encode(RAW + b"\x00").decode(), "holds 33 bytes, expected 32"),
        ("ed25519:" + base64.urlsafe_b64encode(b"\xff" * 32).decode(), "is not valid base64"),
        ("ed25519:é", "is not valid base64"),
    ],
)
def test_decode_refuses_bad_text(text: str, problem: str) -> None:
    with pytest.raises(IdentityError, match=re.escape(problem)) as caught:
        decode_public_key(text)
    assert isinstance(caught.value, SecurityError)
    assert str(caught.value).startswith("public key: ")


def test_decode_refuses_non_canonical_base64() -> None:
    canonical = base64.b64encode(RAW).decode()
    assert canonical[-2] == "8"  # the last char before "=" carries 2 unused bits
    bent = canonical[:-2] + "9="  # same 32 bytes, unused bits set
    assert base64.b64decode(bent) == RAW
    with pytest.raises(IdentityError, match="not canonical base64"):
        decode_public_key("ed25519:" + bent)


def test_encode_refuses_wrong_length() -> None:
    with pytest.raises(IdentityError, match="must be 32 raw bytes, got 31"):
        encode_public_key(RAW[:31])


def test_load_public_key(tmp_path: Path) -> None:
    path = tmp_path / "peer.pub"
    path.write_text(RAW_TEXT + "\n")
    assert load_public_key(path) == RAW


def test_load_public_key_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pub"
    with pytest.raises(IdentityError, match=re.escape(f"'{missing}': it cannot be read")):
        load_public_key(missing)
    bad = tmp_path / "bad.pub"
    bad.write_text("ed25519:AAAA\n")
    with pytest.raises(IdentityError, match=re.escape(f"'{bad}': 'ed25519:AAAA' holds 3 bytes")) as caught:
        load_public_key(bad)
    assert caught.value.path == bad
    binary = tmp_path / "binary.pub"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(IdentityError, match="not ASCII text"):
        load_public_key(binary)


def test_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.pub"
    path.write_bytes(b"x" * 100_000)
    with pytest.raises(IdentityError, match="larger than 16384 bytes"):
        load_public_key(path)
