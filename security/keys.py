"""The key store's vocabulary: the events, reports and errors of ``security.keystore``.

These are the names the rest of the system handles without touching SQLite:
the audit log records :class:`KeyEvent`, compliance reports carry a
:class:`KeyInventory`, and callers of the key store catch its errors. Keeping
them apart from the adapter (:class:`security.keystore.KeyStore`) lets those
modules depend on plain frozen values only.

None of these values carries key bytes: keys are named by id and version, or
by :func:`key_fingerprint`, a domain-separated hash prefix that names a key
without revealing anything usable about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from security import _primitives
from security.errors import SecurityError

EventKind = Literal[
    "kek_created", "kek_rotated", "data_key_created", "data_key_shredded", "pseudonym_key_created"
]
_NO_DETAIL: Final[Mapping[str, object]] = MappingProxyType({})


class KeyStoreError(SecurityError):
    """The key store file cannot be used; names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"key store {str(path)!r}: {problem}")


class UnknownKeyError(SecurityError):
    """A data key (version) was never created in this key store."""

    def __init__(self, key_id: str, version: int | None = None) -> None:
        self.key_id, self.version = key_id, version
        which = f"data key {key_id!r}" if version is None else f"data key {key_id!r} v{version}"
        super().__init__(f"{which} does not exist in this region's key store (sealed in another region?)")


class KeyShreddedError(SecurityError):
    """A data key was crypto-shredded: nothing sealed under it opens, and it is never recreated."""

    def __init__(self, key_id: str, shredded_at_ms: int) -> None:
        self.key_id, self.shredded_at_ms = key_id, shredded_at_ms
        super().__init__(
            f"data key {key_id!r} was shredded at {shredded_at_ms} ms; values sealed under it "
            "cannot be opened and the key id cannot be used again"
        )


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A fact about the key store, for the audit log; never carries key bytes.

    Attributes:
        kind: What happened.
        key_id: The data key id, ``"kek"`` or ``"pseudonym"``.
        version: The version created, rotated to or shredded (0 if a shredded
            id never had a key).
        at_ms: Wall time of the change, in Unix milliseconds.
        detail: Extra facts (``reason``, ``existed``, ``old_version``, ``rewrapped``).
    """

    kind: EventKind
    key_id: str
    version: int
    at_ms: int
    detail: Mapping[str, object] = field(default_factory=lambda: _NO_DETAIL)


@dataclass(frozen=True, slots=True)
class KekRotation:
    """The outcome of :meth:`~security.keystore.KeyStore.rotate_kek`; ``rewrapped`` counts data keys
    (not the pseudonym key)."""

    old_version: int
    new_version: int
    rewrapped: int


@dataclass(frozen=True, slots=True)
class KekInfo:
    """One key-encryption key, named by its fingerprint."""

    version: int
    created_at_ms: int
    fingerprint_hex: str


class ShreddedKey(NamedTuple):
    """A shred tombstone; unpacks as ``(key_id, shredded_at_ms, reason)``."""

    key_id: str
    shredded_at_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class KeyInventory:
    """What the key store holds, for residency audits; fingerprints only, never key bytes."""

    region: str
    location: str
    keks: tuple[KekInfo, ...]
    data_keys_active: int
    data_keys_shredded: int
    shredded: tuple[ShreddedKey, ...]
    pseudonym_key_fingerprint: str


def key_fingerprint(key: bytes) -> str:
    """A short public name for a secret key: hex of the first 8 bytes of a domain-separated SHA-256."""
    return _primitives.sha256(b"edgecare.secret-key-fingerprint.v1\x00" + key)[:8].hex()


def keystore_path(data_dir: Path) -> Path:
    """Where a node keeps its key store: ``<data_dir>/keys/keys.db``."""
    return data_dir / "keys" / "keys.db"


__all__ = [
    "EventKind",
    "KekInfo",
    "KekRotation",
    "KeyEvent",
    "KeyInventory",
    "KeyShreddedError",
    "KeyStoreError",
    "ShreddedKey",
    "UnknownKeyError",
    "key_fingerprint",
    "keystore_path",
]
