"""Pseudonyms: keyed tokens the hub can count and join on, but not read.

Theory of operation
-------------------
A field whose residency class is ``pseudonymised`` leaves the region as::

    "ecp1." + base64url-without-padding(HMAC-SHA256(key, canonical(["edgecare.pseudonym.v1", scope, value])))

``key`` is the region's pseudonymisation key (``KeyStore.pseudonym_key``),
which never leaves the region; ``scope`` names what is being pseudonymised
(``customer.phone``, say), so equal values of unrelated fields do not share a
token. It follows that:

* the same value, scope and region key always give the same token, so the hub
  can count distinct values and join records on them;
* different region keys give unrelated tokens, so the hub cannot link a
  customer across regions through them;
* without the key a token cannot be reversed, not even by trying every phone
  number, because each guess needs the key.

The value is hashed in its canonical form (``sync.wire.canonical``): a bool
counts as its int, as in storage, and ``1`` and ``1.0`` differ. Normalising
(case, spacing, number format) is the caller's job before calling. None stays
None, so a missing value stays missing.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final, overload

from security import _primitives
from sync.crdt import StorageValue
from sync.wire import canonical

PSEUDONYM_PREFIX: Final = "ecp1."
_TOKEN_CHARS: Final = 43  # 32 bytes of HMAC-SHA256, base64url without padding
_TOKEN_RE: Final = re.compile(rf"{re.escape(PSEUDONYM_PREFIX)}([A-Za-z0-9_-]{{{_TOKEN_CHARS}}})")


@overload
def pseudonymise(key: bytes, scope: str, value: None) -> None: ...
@overload
def pseudonymise(key: bytes, scope: str, value: str | int | float | bytes) -> str: ...
def pseudonymise(key: bytes, scope: str, value: StorageValue) -> str | None:
    """The pseudonym of ``value`` in ``scope`` under the region key ``key``.

    Args:
        key: The region's 32-byte pseudonymisation key.
        scope: What the value is (``"customer.phone"``); tokens of different
            scopes are unrelated.
        value: A storage value; None gives None.

    Returns:
        ``"ecp1."`` and 43 base64url characters, or None.

    Raises:
        PrimitiveError: ``key`` is not 32 bytes.
        UnencodableValueError: ``value`` is not a storage value.
    """
    if value is None:
        return None
    mac = _primitives.hmac_sha256(key, canonical(["edgecare.pseudonym.v1", scope, value]))
    return PSEUDONYM_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def looks_pseudonym(value: object) -> bool:
    """Whether ``value`` has the form of a pseudonym: the prefix and a canonical 43-character MAC."""
    if not isinstance(value, str) or (match := _TOKEN_RE.fullmatch(value)) is None:
        return False
    body = match[1]
    try:
        mac = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii") == body


__all__ = ["PSEUDONYM_PREFIX", "looks_pseudonym", "pseudonymise"]
