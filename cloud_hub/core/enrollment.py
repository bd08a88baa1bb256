"""Enrollment: a one-time token turns a node's public key into a registered member of a region. Pure.

Theory of operation
-------------------
Central ops runs ``edgecare hub enroll-token --region R`` and hands the token to
the region's operator out of band. The token names the region and carries a
random secret; the hub keeps only the secret's SHA-256, so a copy of the hub's
database cannot enroll anyone. The node starts with ``--enroll TOKEN``: it
sends the token, its node id and its Ed25519 public key in a frame signed by
that key (proof that it holds the private half). :func:`decide` accepts when
the token exists, has not expired, was issued for the node's region and was
not used by another node or key. Sending the same token again with the same
node id and key is accepted too, so a node that crashed between the hub's
registration and its own bookkeeping can finish enrolling.

Everything the hub later accepts from the node (operation batches, heartbeats,
policies, audit checkpoints) must be signed by the key registered here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from cloud_hub.errors import HubError

TOKEN_PREFIX: Final = "ect1"  # noqa: S105 - a format tag, not a secret
SECRET_BYTES: Final = 24
DEFAULT_TTL_S: Final = 24 * 3600
_TOKEN_ID: Final = re.compile(r"[0-9a-f]{16}")
_REGION: Final = re.compile(r"[a-z][a-z0-9-]{1,31}")


class EnrollmentError(HubError):
    """An enrollment was refused; ``reason`` is a short code, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class EnrollToken:
    """A parsed token: the region it enrolls into, its public id and its secret."""

    region: str
    token_id: str
    secret: bytes

    def encode(self) -> str:
        secret = base64.urlsafe_b64encode(self.secret).decode().rstrip("=")
        return f"{TOKEN_PREFIX}.{self.region}.{self.token_id}.{secret}"

    @property
    def secret_hash(self) -> bytes:
        return secret_hash(self.secret)


def secret_hash(secret: bytes) -> bytes:
    return hashlib.sha256(b"edgecare.enroll.v1\x00" + secret).digest()


def new_token(region: str, token_id: str, secret: bytes) -> EnrollToken:
    """A token from fresh randomness the caller supplies (``os.urandom``); checks the region."""
    if not _REGION.fullmatch(region):
        raise EnrollmentError(
            "bad_region", f"region {region!r} must be 2-32 lowercase letters, digits or '-'"
        )
    return EnrollToken(region, token_id, secret)


def parse_token(text: str) -> EnrollToken:
    """Read a token as printed by ``edgecare hub enroll-token``.

    Raises:
        EnrollmentError: the text is not a token, saying which part is wrong.
    """
    parts = text.strip().split(".")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
        raise EnrollmentError(
            "malformed_token", f"an enrollment token looks like {TOKEN_PREFIX}.<region>.<id>.<secret>"
        )
    _, region, token_id, secret_text = parts
    if not _REGION.fullmatch(region):
        raise EnrollmentError("malformed_token", f"the token's region {region!r} is not a region code")
    if not _TOKEN_ID.fullmatch(token_id):
        raise EnrollmentError("malformed_token", "the token's id must be 16 hex digits")
    try:
        padded = (secret_text + "=" * (-len(secret_text) % 4)).encode("ascii")
        secret = base64.b64decode(padded, altchars=b"-_", validate=True)
        if "+" in secret_text or "/" in secret_text:
            raise ValueError("standard base64 alphabet")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EnrollmentError("malformed_token", "the token's secret is not base64url") from None
    if len(secret) != SECRET_BYTES:
        raise EnrollmentError("malformed_token", f"the token's secret must be {SECRET_BYTES} bytes")
    return EnrollToken(region, token_id, secret)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the hub stores about a token it issued."""

    token_id: str
    region: str
    secret_hash: bytes
    created_ms: int
    expires_ms: int
    used_ms: int | None = None
    used_by: str | None = None  # node id
    used_key: bytes | None = None  # that node's public key


@dataclass(frozen=True, slots=True)
class EnrollClaim:
    """What an enrolling node sends (after its frame's signature was checked against ``public_key``)."""

    token: EnrollToken
    node_id: str
    region: str
    public_key: bytes


def decide(
    record: TokenRecord | None,
    claim: EnrollClaim,
    *,
    now_ms: int,
    registered_region: str | None,
    registered_key: bytes | None = None,
) -> None:
    """Accept (return) or refuse (raise) an enrollment.

    Args:
        record: the stored token with the claim's token id, if any.
        claim: the node's request.
        now_ms: the hub's clock.
        registered_region: the region the node id is already enrolled in, if it is.
        registered_key: the public key the node id is enrolled with, if it is: a new token
            does not let anyone take over an enrolled node id with another key.

    Raises:
        EnrollmentError: with reason ``unknown_token``, ``expired``, ``wrong_region``,
            ``token_used``, ``node_in_other_region`` or ``node_id_taken``.
    """
    if record is None or not hmac.compare_digest(record.secret_hash, claim.token.secret_hash):
        raise EnrollmentError(
            "unknown_token", "the hub did not issue this token; ask central ops for a new one"
        )
    if claim.region != record.region or claim.token.region != record.region:
        raise EnrollmentError(
            "wrong_region",
            f"the token enrolls into region {record.region!r}, but the node serves {claim.region!r}",
        )
    if registered_region is not None and registered_region != claim.region:
        raise EnrollmentError(
            "node_in_other_region",
            f"node {claim.node_id!r} is already enrolled in region {registered_region!r}",
        )
    if registered_key is not None and not hmac.compare_digest(registered_key, claim.public_key):
        raise EnrollmentError(
            "node_id_taken",
            f"node id {claim.node_id!r} is enrolled with another key; a node keeps its identity, "
            "so give a replacement node a new data directory (and so a new id)",
        )
    if record.used_ms is not None:
        if record.used_by == claim.node_id and record.used_key == claim.public_key:
            return  # the same node finishing an enrollment it started
        raise EnrollmentError(
            "token_used", f"the token was used by node {record.used_by!r}; a token enrolls one node only"
        )
    if now_ms >= record.expires_ms:
        raise EnrollmentError("expired", "the token has expired; ask central ops for a new one")


__all__ = [
    "DEFAULT_TTL_S",
    "EnrollClaim",
    "EnrollToken",
    "EnrollmentError",
    "TokenRecord",
    "decide",
    "new_token",
    "parse_token",
    "secret_hash",
]
