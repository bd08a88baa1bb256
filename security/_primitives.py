"""The cryptographic primitives every recipe in ``security`` builds on, and their rules.

Theory of operation
-------------------
This is the one module that touches ``cryptography``'s primitives, so the
rules the library does not enforce are enforced once, here:

* AES-256-GCM keys are exactly 32 bytes and nonces exactly 12 bytes
  (``cryptography`` accepts 8 to 128-byte nonces; any length but 96 bits
  weakens GCM's bounds). Nonces are random (``os.urandom``); with 96-bit random
  nonces a key stays far below the 2^32 encryptions NIST SP 800-38D allows,
  because each data key protects one customer's or record's fields.
* Decryption failures are opaque (:class:`AEADError`): the caller learns that a
  ciphertext was refused, never which input was wrong.
* Ed25519 signatures are 64 bytes, public keys 32 raw bytes; verification
  returns ``False`` instead of raising, because refusing a frame is routine.
* HMAC-SHA256 for keyed tokens; comparisons are constant-time.

Recipes (``envelope``, ``pseudonym``, ``identity``, ``frames``, ``audit``)
import from here and never from ``cryptography`` directly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.errors import SecurityError

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32
FINGERPRINT_BYTES: Final = 8


class PrimitiveError(SecurityError):
    """A primitive was called against its rules (a wrong key or nonce length)."""

    def __init__(self, what: str, rule: str) -> None:
        self.what, self.rule = what, rule
        super().__init__(f"{what}: {rule}")


class AEADError(SecurityError):
    """A ciphertext could not be decrypted: wrong key, nonce, associated data, or altered bytes."""

    def __init__(self) -> None:
        super().__init__("ciphertext refused: wrong key or associated data, or altered bytes")


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def new_key() -> bytes:
    """A fresh AES-256 key."""
    return os.urandom(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise PrimitiveError("key", f"must be exactly {KEY_BYTES} bytes, got {len(key)}")


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_BYTES:
        raise PrimitiveError("nonce", f"must be exactly {NONCE_BYTES} bytes, got {len(nonce)}")


def aead_encrypt(
    key: bytes, plaintext: bytes, aad: bytes, *, nonce: bytes | None = None
) -> tuple[bytes, bytes]:
    """Encrypt with AES-256-GCM; return ``(nonce, ciphertext_with_tag)``.

    ``nonce`` exists for known-answer tests only; production callers leave it
    out and get a fresh random one.

    Raises:
        PrimitiveError: the key is not 32 bytes or the nonce not 12.
    """
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    _check_nonce(nonce)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt AES-256-GCM output of :func:`aead_encrypt`.

    Raises:
        PrimitiveError: the key is not 32 bytes or the nonce not 12.
        AEADError: the tag does not verify (wrong key, wrong associated data, altered bytes).
    """
    _check_key(key)
    _check_nonce(nonce)
    if len(ciphertext) < TAG_BYTES:
        raise AEADError
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise AEADError from None


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key`` (32 bytes)."""
    _check_key(key)
    return hmac.new(key, message, hashlib.sha256).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def fingerprint(public_key: bytes) -> bytes:
    """A short, stable name for a public key: the first 8 bytes of its SHA-256."""
    return hashlib.sha256(b"edgecare.key-fingerprint.v1\x00" + public_key).digest()[:FINGERPRINT_BYTES]


# --- Ed25519 ----------------------------------------------------------------------------------


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(private: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private``."""
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(private: Ed25519PrivateKey, message: bytes) -> bytes:
    """A 64-byte Ed25519 signature."""
    return private.sign(message)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s over ``message``; never raises on bad input."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def private_key_to_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM Ed25519 key.

    Raises:
        PrimitiveError: the data is not an unencrypted Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PrimitiveError("private key", f"not a readable PEM key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PrimitiveError("private key", f"expected Ed25519, got {type(key).__name__}")
    return key


__all__ = [
    "FINGERPRINT_BYTES",
    "KEY_BYTES",
    "NONCE_BYTES",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "AEADError",
    "Ed25519PrivateKey",
    "PrimitiveError",
    "aead_decrypt",
    "aead_encrypt",
    "constant_time_equal",
    "fingerprint",
    "hmac_sha256",
    "new_key",
    "new_signing_key",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_bytes",
    "random_bytes",
    "sha256",
    "sign",
    "verify",
]
