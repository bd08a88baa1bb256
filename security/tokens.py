"""Stateless signed bearer tokens for a node's (and later the hub's) HTTP API.

Theory of operation
-------------------
A node keeps a 32-byte secret in its data directory. A token states who the
caller is (``Principal``: role, name, issue and expiry times) and carries an
HMAC-SHA256 over that statement, so the node can check a token without any
session table: if the MAC matches, the node itself issued it.

Wire form::

    ec1.<base64url(payload)>.<base64url(HMAC-SHA256(secret, "ec1." + base64url(payload)))>

``payload`` is compact JSON ``{"r": role, "n": name, "iat": unix_s, "exp":
unix_s | null}``; base64url is unpadded. The MAC covers the version prefix and
the payload exactly as transmitted, and is checked (in constant time, with
``hmac.compare_digest``) before the payload is parsed at all, so unsigned
input never reaches the JSON decoder. Base64 is decoded canonically: an
encoding that does not re-encode to the same text is refused, so no two
spellings of one token exist and a token cannot be altered in padding bits.

Verification is opaque on purpose: a malformed, forged, tampered, foreign,
expired or otherwise unacceptable token all raise ``InvalidTokenError`` with
the same message, so a caller probing the API learns nothing about which check
failed. A token is expired from the second ``exp`` on (``now_s >= exp``);
``exp = null`` never expires. Tokens cannot be revoked one by one: replacing
the secret revokes them all.

Apart from ``load_or_create_secret``, which is the file adapter for the
secret, the module is pure: the caller passes the current time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from security.errors import SecurityError
from security.roles import Role

SECRET_BYTES: Final = 32
MAX_NAME_CHARS: Final = 64
MAX_UNIX_S: Final = 2**63
"""Times must fit a signed 64-bit integer, so every principal round-trips."""

_VERSION: Final = "ec1"
_MAC_B64_CHARS: Final = 43  # 32 bytes of HMAC-SHA256, base64url without padding
_TOKEN_RE: Final = re.compile(rf"{_VERSION}\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{{{_MAC_B64_CHARS}}})")
_PAYLOAD_KEYS: Final = frozenset({"r", "n", "iat", "exp"})


class InvalidTokenError(SecurityError):
    """A bearer token was refused; deliberately silent about why."""

    def __init__(self) -> None:
        super().__init__("invalid or expired token")


class InvalidPrincipalError(SecurityError, ValueError):
    """A principal breaks a rule that every token's subject must follow."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field, self.value, self.rule = field, value, rule
        super().__init__(f"principal {field} {rule}")


class InvalidSecretError(SecurityError):
    """An in-memory token secret has the wrong size."""

    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        super().__init__(f"token secret must be {SECRET_BYTES} bytes, got {size_bytes}")


class SecretFileError(SecurityError):
    """The token secret file cannot be used: unsafe, malformed or unreadable."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"refusing token secret file {str(path)!r}: {problem}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token speaks for; validated on construction.

    Attributes:
        role: The role the caller acts in.
        name: Who the caller is, for audit logs: 1 to 64 printable characters
            (spaces allowed, control and format characters not).
        issued_at: When the token was issued, in Unix seconds.
        expires_at: The first Unix second at which the token is refused, after
            ``issued_at``; None for a token that never expires.

    Raises:
        InvalidPrincipalError: A field breaks the rules above (also a ValueError).
    """

    role: Role
    name: str
    issued_at: int
    expires_at: int | None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise InvalidPrincipalError("role", self.role, "must be a Role")
        if not 1 <= len(self.name) <= MAX_NAME_CHARS:
            raise InvalidPrincipalError(
                "name", self.name, f"must be 1 to {MAX_NAME_CHARS} characters, got {len(self.name)}"
            )
        if not self.name.isprintable():
            raise InvalidPrincipalError("name", self.name, "must be printable characters only")
        if not 0 <= self.issued_at < MAX_UNIX_S:
            raise InvalidPrincipalError(
                "issued_at", self.issued_at, f"must be in [0, 2**63), got {self.issued_at}"
            )
        if self.expires_at is not None and not self.issued_at < self.expires_at < MAX_UNIX_S:
            raise InvalidPrincipalError(
                "expires_at",
                self.expires_at,
                f"must be after issued_at {self.issued_at} and below 2**63, got {self.expires_at}",
            )


def new_secret() -> bytes:
    """Generate a fresh token secret.

    Randomness is the one input this pure module draws itself: a secret that a
    caller could choose or replay would defeat its purpose, and ``os.urandom``
    reads the kernel CSPRNG without touching any clock or file we own.
    """
    return os.urandom(SECRET_BYTES)


def _check_secret(secret: bytes) -> None:
    if len(secret) != SECRET_BYTES:
        raise InvalidSecretError(len(secret))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode unpadded base64url, refusing any non-canonical spelling."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


def _mac(secret: bytes, signing_input: str) -> bytes:
    return hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()


def issue_token(secret: bytes, principal: Principal) -> str:
    """Sign a bearer token for ``principal``.

    Args:
        secret: The node's 32-byte token secret.
        principal: Who the token speaks for; validated when it was built.

    Returns:
        ``"ec1.<payload>.<mac>"``, URL- and header-safe ASCII.

    Raises:
        InvalidSecretError: ``secret`` is not 32 bytes.
    """
    _check_secret(secret)
    payload = {
        "r": principal.role.value,
        "n": principal.name,
        "iat": principal.issued_at,
        "exp": principal.expires_at,
    }
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signing_input = f"{_VERSION}.{_b64encode(raw)}"
    return f"{signing_input}.{_b64encode(_mac(secret, signing_input))}"


def _exact_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


def _parse_payload(raw: bytes) -> Principal:
    fields = json.loads(raw.decode("utf-8"))
    if not isinstance(fields, dict) or fields.keys() != _PAYLOAD_KEYS:
        raise ValueError("unexpected payload shape")
    role, name, exp = fields["r"], fields["n"], fields["exp"]
    if not isinstance(role, str) or not isinstance(name, str):
        raise TypeError("expected strings")
    return Principal(
        role=Role(role),
        name=name,
        issued_at=_exact_int(fields["iat"]),
        expires_at=None if exp is None else _exact_int(exp),
    )


def verify_token(secret: bytes, token: str, *, now_s: int) -> Principal:
    """Check a bearer token and return who it speaks for.

    Args:
        secret: The node's 32-byte token secret.
        token: The token as received, e.g. from ``Authorization: Bearer``.
        now_s: The current time in Unix seconds.

    Returns:
        The principal the token was issued for.

    Raises:
        InvalidTokenError: For every kind of refusal, with one message.
        InvalidSecretError: ``secret`` is not 32 bytes (a configuration error,
            not a property of the token).
    """
    _check_secret(secret)
    match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise InvalidTokenError
    payload_b64, mac_b64 = match.groups()
    try:
        mac = _b64decode(mac_b64)
    except (ValueError, binascii.Error):
        raise InvalidTokenError from None
    if not hmac.compare_digest(mac, _mac(secret, f"{_VERSION}.{payload_b64}")):
        raise InvalidTokenError
    try:
        principal = _parse_payload(_b64decode(payload_b64))
    except (ValueError, TypeError, binascii.Error):  # InvalidPrincipalError is a ValueError
        raise InvalidTokenError from None
    if principal.expires_at is not None and now_s >= principal.expires_at:
        raise InvalidTokenError
    return principal


def _read_secret(path: Path) -> bytes:
    with path.open("rb") as file:
        status = os.fstat(file.fileno())
        mode = status.st_mode
        if not stat.S_ISREG(mode):
            raise SecretFileError(path, "it is not a regular file")
        if mode & 0o077:
            raise SecretFileError(
                path, f"its mode {stat.S_IMODE(mode):#o} lets group or others access it; use 0o600"
            )
        secret = file.read(SECRET_BYTES + 1)
    if len(secret) != SECRET_BYTES or status.st_size != SECRET_BYTES:
        raise SecretFileError(path, f"it holds {status.st_size} bytes, expected exactly {SECRET_BYTES}")
    return secret


def _create_secret(path: Path) -> bytes:
    """Publish a new secret at ``path`` atomically, never replacing another's.

    The secret is written and synced under a temporary name (mode 0o600 from
    ``mkstemp``) and then hard-linked into place: readers never see a partial
    file, and if another process created ``path`` meanwhile, the link fails
    and we adopt its secret instead of silently overwriting it.
    """
    secret = new_secret()
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as temp:
            os.fchmod(temp.fileno(), 0o600)
            temp.write(secret)
            temp.flush()
            os.fsync(temp.fileno())
        try:
            os.link(temp_name, path)
        except FileExistsError:
            return _read_secret(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the new name durable, or a crash could forget the secret
    finally:
        os.close(dir_fd)
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """Load the node's token secret, creating it on first run.

    Args:
        path: The secret file, normally inside the node's data directory.

    Returns:
        The 32-byte secret.

    Raises:
        SecretFileError: The file is not a regular file, grants group or others
            any access, is not exactly 32 bytes, or cannot be read or created.
    """
    try:
        try:
            return _read_secret(path)
        except FileNotFoundError:
            return _create_secret(path)
    except OSError as exc:
        raise SecretFileError(path, f"it cannot be read or created: {exc.strerror}") from exc
