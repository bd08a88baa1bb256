"""Field envelopes: personal values sealed with a key only their region holds.

Theory of operation
-------------------
A node seals a personal field before the change leaves the region; the hub
stores and merges the sealed string like any other register value without
holding a key, and only a node of the same region can open it again.

A sealed value is an ASCII string::

    "ecs1." + base64url-without-padding(binary)

    binary = fmt (1 byte) | key_version (u32 big-endian) | len(key_id) (1 byte, 1..255)
             | key_id (UTF-8) | nonce (12 bytes) | ciphertext with the GCM tag (>= 16 bytes)

The plaintext is the value packed with MessagePack (``use_bin_type=True``),
so the type survives the trip: ``True`` stays a bool, ``b"x"`` stays bytes.
Integers outside MessagePack's 64-bit range, which register values may be,
travel as extension type 1 holding their minimal two's complement bytes, the
same form the wire's ``bigint`` uses.

Encryption is AES-256-GCM with a fresh random 12-byte nonce per seal
(``_primitives.aead_encrypt``), and the associated data is
:func:`field_aad`: the canonical encoding of the format version, region,
entity, record id, field, key id and key version. So a ciphertext opens only
in the exact place it was sealed for: moved to another field, record, entity
or region, or relabelled with another key version, its tag no longer
verifies. The associated data holds identifiers only, never personal data,
because error messages and logs name them.

The envelope names its key (id and version) in the clear, so a node can find
the key without trying each one, and so crypto-shredding a key id makes every
value sealed under it unreadable at once. Parsing is strict and canonical:
anything else, including a second base64 spelling of the same bytes, is
refused with :class:`NotSealedError`, whose message describes the input by
type and length only.

Everything here is pure except the random nonce; :class:`Sealer` ties the
recipe to a key store (``security.keystore.KeyStore``, or any
:class:`DataKeys`).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgpack

from security import _primitives
from security.errors import SecurityError
from sync.crdt import StorageValue
from sync.wire import canonical

FORMAT_VERSION: Final = 1
SEALED_PREFIX: Final = "ecs1."
MAX_KEY_ID_BYTES: Final = 255
MAX_KEY_VERSION: Final = 2**32 - 1

_HEADER: Final = struct.Struct(">BIB")  # fmt, key_version, len(key_id)
_MIN_BINARY: Final = _HEADER.size + 1 + _primitives.NONCE_BYTES + _primitives.TAG_BYTES
_BIGINT_EXT: Final = 1
_MSGPACK_INT_MIN: Final = -(2**63)
_MSGPACK_INT_LIMIT: Final = 2**64
_STORAGE_TYPES: Final = (str, int, float, bytes, type(None))  # bool is an int


class NotSealedError(SecurityError):
    """A value is not a sealed envelope this code can read."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"not a sealed value: {problem}")


class InvalidKeyIdError(SecurityError, ValueError):
    """A key id or key version cannot be written into an envelope."""

    def __init__(self, key_id: str, rule: str) -> None:
        self.key_id, self.rule = key_id, rule
        super().__init__(f"key id {key_id!r}: {rule}")


class UnsealableValueError(SecurityError):
    """A value is not a storage value that an envelope can carry."""

    def __init__(self, ctx: FieldContext, problem: str) -> None:
        self.ctx, self.problem = ctx, problem
        super().__init__(f"cannot seal {ctx.entity}/{ctx.record_id}.{ctx.field}: {problem}")


class UnsealError(SecurityError):
    """A sealed value did not open; names the key and the place, never the plaintext."""

    def __init__(self, key_id: str, key_version: int, ctx: FieldContext, reason: str) -> None:
        self.key_id, self.key_version, self.reason = key_id, key_version, reason
        self.region, self.entity, self.record_id, self.field = (
            ctx.region,
            ctx.entity,
            ctx.record_id,
            ctx.field,
        )
        super().__init__(
            f"cannot open {ctx.entity}/{ctx.record_id}.{ctx.field} in region {ctx.region!r} "
            f"sealed under key {key_id!r} v{key_version}: {reason}"
        )


class ForeignRegionError(SecurityError):
    """A sealer was asked to seal a field of another region."""

    def __init__(self, own: str, asked: str) -> None:
        self.own, self.asked = own, asked
        super().__init__(f"this sealer holds the keys of region {own!r} and cannot seal for region {asked!r}")


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a value lives; all of it is bound into the associated data.

    Attributes:
        region: The region whose key seals the value.
        entity: The entity name (``customer``, ``ticket``).
        record_id: The record's id.
        field: The field's name.
    """

    region: str
    entity: str
    record_id: str
    field: str


def check_key_id(key_id: str, version: int = 1) -> None:
    """Check that ``key_id`` and ``version`` fit an envelope's header.

    Raises:
        InvalidKeyIdError: the id is empty, over 255 UTF-8 bytes or not
            encodable, or the version is outside 1 to 2**32 - 1.
    """
    try:
        size = len(key_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyIdError(key_id, "must be encodable as UTF-8 (no lone surrogates)") from None
    if not 1 <= size <= MAX_KEY_ID_BYTES:
        raise InvalidKeyIdError(key_id, f"must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes, got {size}")
    if isinstance(version, bool) or not 1 <= version <= MAX_KEY_VERSION:
        raise InvalidKeyIdError(key_id, f"version must be 1 to {MAX_KEY_VERSION}, got {version}")


@dataclass(frozen=True, slots=True)
class DataKey:
    """One version of a data key, unwrapped; its repr never shows the key bytes.

    Raises:
        InvalidKeyIdError: the id or version does not fit an envelope.
        PrimitiveError: the key is not 32 bytes.
    """

    key_id: str
    version: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id, self.version)
        if len(self.key) != _primitives.KEY_BYTES:
            raise _primitives.PrimitiveError(
                "data key", f"must be exactly {_primitives.KEY_BYTES} bytes, got {len(self.key)}"
            )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _describe(value: object) -> str:
    """Type and size of ``value``, never its content."""
    if isinstance(value, str | bytes):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


@dataclass(frozen=True, slots=True)
class SealedValue:
    """The parts of a sealed value; :meth:`encode` and :meth:`parse` convert to and from the wire string.

    Raises:
        NotSealedError: a part breaks the layout (unknown format, key id or
            version out of range, nonce not 12 bytes, ciphertext shorter than
            the tag).
    """

    fmt: int
    key_id: str
    key_version: int
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.fmt != FORMAT_VERSION:
            raise NotSealedError(f"format version {self.fmt} is not known (this code reads {FORMAT_VERSION})")
        if not 0 <= self.key_version <= MAX_KEY_VERSION:
            raise NotSealedError(f"key version {self.key_version} is outside 0 to {MAX_KEY_VERSION}")
        try:
            size = len(self.key_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise NotSealedError("key id is not encodable as UTF-8") from None
        if not 1 <= size <= MAX_KEY_ID_BYTES:
            raise NotSealedError(f"key id must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes, got {size}")
        if len(self.nonce) != _primitives.NONCE_BYTES:
            raise NotSealedError(f"nonce must be {_primitives.NONCE_BYTES} bytes, got {len(self.nonce)}")
        if len(self.ciphertext) < _primitives.TAG_BYTES:
            raise NotSealedError(
                f"ciphertext must be at least {_primitives.TAG_BYTES} bytes, got {len(self.ciphertext)}"
            )

    def encode(self) -> str:
        """The wire string: ``"ecs1."`` and the unpadded base64url of the binary layout."""
        key_id = self.key_id.encode("utf-8")
        binary = _HEADER.pack(self.fmt, self.key_version, len(key_id)) + key_id + self.nonce + self.ciphertext
        return SEALED_PREFIX + _b64encode(binary)

    @classmethod
    def parse(cls, text: object) -> SealedValue:
        """Read a wire string.

        Raises:
            NotSealedError: ``text`` is not a str, lacks the prefix, is not
                canonical unpadded base64url, is too short, has an unknown
                format version, or its key id is not UTF-8.
        """
        if not isinstance(text, str):
            raise NotSealedError(f"expected a str, got {_describe(text)}")
        if not text.startswith(SEALED_PREFIX):
            raise NotSealedError(f"{_describe(text)} without the {SEALED_PREFIX!r} prefix")
        body = text[len(SEALED_PREFIX) :]
        try:
            binary = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise NotSealedError(f"the body of {_describe(text)} is not unpadded base64url") from None
        if _b64encode(binary) != body:
            raise NotSealedError(f"the body of {_describe(text)} is not canonical unpadded base64url")
        if len(binary) < _MIN_BINARY:
            raise NotSealedError(f"{len(binary)} bytes, shorter than the minimum of {_MIN_BINARY}")
        fmt, key_version, id_len = _HEADER.unpack_from(binary)
        if fmt != FORMAT_VERSION:
            raise NotSealedError(f"format version {fmt} is not known (this code reads {FORMAT_VERSION})")
        if id_len == 0:
            raise NotSealedError("key id is empty")
        start = _HEADER.size
        nonce_at = start + id_len
        ct_at = nonce_at + _primitives.NONCE_BYTES
        if len(binary) - ct_at < _primitives.TAG_BYTES:
            raise NotSealedError(
                f"{len(binary)} bytes, too short for a {id_len}-byte key id, a nonce and a tag"
            )
        try:
            key_id = binary[start:nonce_at].decode("utf-8")
        except UnicodeDecodeError:
            raise NotSealedError("key id is not UTF-8") from None
        return cls(FORMAT_VERSION, key_id, key_version, binary[nonce_at:ct_at], binary[ct_at:])


def looks_sealed(value: object) -> bool:
    """Whether ``value`` parses as a sealed value (says nothing about whether it opens)."""
    try:
        SealedValue.parse(value)
    except NotSealedError:
        return False
    return True


def field_aad(ctx: FieldContext, key_id: str, key_version: int, fmt: int = FORMAT_VERSION) -> bytes:
    """The associated data that binds a ciphertext to its format, place and key version."""
    return canonical(
        ["edgecare.field.v1", fmt, ctx.region, ctx.entity, ctx.record_id, ctx.field, key_id, key_version]
    )


def _pack(ctx: FieldContext, value: StorageValue) -> bytes:
    if not isinstance(value, _STORAGE_TYPES):
        raise UnsealableValueError(ctx, f"a {type(value).__name__} is not a storage value")
    if isinstance(value, int) and not _MSGPACK_INT_MIN <= value < _MSGPACK_INT_LIMIT:
        raw = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
        packed: bytes = msgpack.packb(msgpack.ExtType(_BIGINT_EXT, raw), use_bin_type=True)
        return packed
    try:
        packed = msgpack.packb(value, use_bin_type=True)
    except UnicodeEncodeError:
        raise UnsealableValueError(ctx, "text holds a lone surrogate, which UTF-8 cannot carry") from None
    return packed


def _ext_hook(code: int, data: bytes) -> int:
    if code != _BIGINT_EXT or not data:
        raise ValueError(f"extension type {code} is not part of the envelope format")
    return int.from_bytes(data, "big", signed=True)


def _unpack(plaintext: bytes) -> StorageValue:
    value = msgpack.unpackb(plaintext, raw=False, use_list=True, strict_map_key=True, ext_hook=_ext_hook)
    if not isinstance(value, _STORAGE_TYPES):
        raise TypeError(f"a {type(value).__name__} is not a storage value")
    return value


def seal_value(key: DataKey, ctx: FieldContext, value: StorageValue) -> str:
    """Seal ``value`` for the place ``ctx`` names, under ``key``.

    Returns:
        The sealed wire string (ASCII, starting ``"ecs1."``), different on
        every call because the nonce is random.

    Raises:
        UnsealableValueError: ``value`` is not a storage value, or is a str
            with a lone surrogate.
    """
    aad = field_aad(ctx, key.key_id, key.version)
    nonce, ciphertext = _primitives.aead_encrypt(key.key, _pack(ctx, value), aad)
    return SealedValue(FORMAT_VERSION, key.key_id, key.version, nonce, ciphertext).encode()


def open_value(key: DataKey, ctx: FieldContext, sealed: str | SealedValue) -> StorageValue:
    """Open a value sealed by :func:`seal_value` for the same place and key.

    Raises:
        NotSealedError: ``sealed`` is a str that is not a sealed value.
        UnsealError: the envelope names another key id or version than
            ``key``, or the tag does not verify (wrong key, a value moved from
            another field, record, entity or region, or altered bytes).
    """
    envelope = sealed if isinstance(sealed, SealedValue) else SealedValue.parse(sealed)
    if (envelope.key_id, envelope.key_version) != (key.key_id, key.version):
        raise UnsealError(
            envelope.key_id,
            envelope.key_version,
            ctx,
            f"the key given is {key.key_id!r} v{key.version}",
        )
    aad = field_aad(ctx, envelope.key_id, envelope.key_version, envelope.fmt)
    try:
        plaintext = _primitives.aead_decrypt(key.key, envelope.nonce, envelope.ciphertext, aad)
    except _primitives.AEADError:
        raise UnsealError(
            envelope.key_id,
            envelope.key_version,
            ctx,
            "the tag does not verify: wrong key, sealed for another place, or altered",
        ) from None
    try:
        return _unpack(plaintext)
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError):
        raise UnsealError(
            envelope.key_id, envelope.key_version, ctx, "the decrypted bytes are not a storage value"
        ) from None


class DataKeys(Protocol):
    """Where a :class:`Sealer` gets its keys; ``security.keystore.KeyStore`` is one."""

    def data_key(self, key_id: str) -> DataKey:
        """The newest version of ``key_id``, created if there is none."""
        ...

    def existing_data_key(self, key_id: str, version: int | None = None) -> DataKey:
        """A version of ``key_id`` that exists, or raise."""
        ...


class Sealer:
    """Seals and opens one region's fields with keys from its key store.

    Args:
        keys: The region's key store.
        region: The region whose fields this sealer handles.
    """

    def __init__(self, keys: DataKeys, region: str) -> None:
        self._keys = keys
        self.region = region

    def seal(self, ctx: FieldContext, key_id: str, value: StorageValue) -> str:
        """Seal ``value`` under the newest version of data key ``key_id`` (created if new).

        Raises:
            ForeignRegionError: ``ctx`` is of another region.
            KeyShreddedError: ``key_id`` was shredded; its subject gets no new key.
            UnsealableValueError: ``value`` is not a storage value.
        """
        if ctx.region != self.region:
            raise ForeignRegionError(self.region, ctx.region)
        return seal_value(self._keys.data_key(key_id), ctx, value)

    def open(self, ctx: FieldContext, sealed: str | SealedValue) -> StorageValue:
        """Open ``sealed`` with the key version its envelope names.

        Raises:
            NotSealedError: ``sealed`` is not a sealed value.
            KeyShreddedError: its key was shredded, so it can never be opened again.
            UnknownKeyError: this store never held its key (sealed in another region?).
            UnsealError: the tag does not verify for ``ctx``.
        """
        envelope = sealed if isinstance(sealed, SealedValue) else SealedValue.parse(sealed)
        key = self._keys.existing_data_key(envelope.key_id, envelope.key_version)
        return open_value(key, ctx, envelope)


__all__ = [
    "FORMAT_VERSION",
    "SEALED_PREFIX",
    "DataKey",
    "DataKeys",
    "FieldContext",
    "ForeignRegionError",
    "InvalidKeyIdError",
    "NotSealedError",
    "SealedValue",
    "Sealer",
    "UnsealError",
    "UnsealableValueError",
    "check_key_id",
    "field_aad",
    "looks_sealed",
    "open_value",
    "seal_value",
]
