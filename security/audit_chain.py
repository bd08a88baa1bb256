"""The tamper-evident audit chain: hash-linked entries and signed checkpoints.

Theory of operation
-------------------
Every security-relevant event on a node (an egress batch, a key created,
rotated or shredded, an erasure, an admin change to policy or roles) becomes an
:class:`Entry`. Entry ``n`` stores the hash of entry ``n - 1`` (32 zero bytes
for the first), and its own hash covers that link plus its fields::

    hash_n = SHA-256(b"edgecare.audit.entry.v1\\x00"
                     + canonical([hash_{n-1}, seq, at_ms, kind, body]))

so changing, dropping, inserting or reordering any entry changes every hash
after it. A chain alone only proves this to someone who remembers an old head,
so the node periodically signs a :class:`Checkpoint` (size and head hash, in
the spirit of the C2SP ``tlog-checkpoint`` note) with its Ed25519 key and ships
it to the hub. Whoever holds a checkpoint can later prove that the log still
starts with the ``size`` entries it committed to: an insider who can rewrite the
node's database can recompute hashes, but cannot sign, and cannot recall the
checkpoints the hub already holds.

:func:`verify_chain` checks a log against its checkpoints (and the hub's
copies, ``external``) using public keys only, and names each problem found:

============== =============================================================
kind           meaning
============== =============================================================
edited         an entry's stored hash is not the hash of its fields
broken_link    an entry's ``prev_hash`` is not its predecessor's hash
seq_gap        sequence numbers do not run 1, 2, ... n in order
bad_signature  a checkpoint's signature or key fingerprint does not verify
truncated      a valid checkpoint covers more entries than the log holds
fork           a valid checkpoint's head differs from the log's hash at its
               size, or two valid checkpoints of one size disagree (split view)
============== =============================================================

Entries after the newest checkpoint are protected only by their links: an
insider could rewrite that tail undetected until the next checkpoint, which is
why checkpoints are signed every ``checkpoint_every`` entries and on demand.

Bodies hold IDs and counts only, never personal data (the hub sees hashes, and
logs outlive erasures). A body is JSON-compatible (str keys; str, int, float,
bool, None, lists and dicts as values) and is deep-frozen when an entry is
made: dicts become read-only mappings and lists become tuples, so an entry's
recomputed hash, computed once, can never go stale. ``canonical`` encodes a
bool as its int, so ``true`` and ``1`` commit to the same value.

The module is pure: callers pass the time and a signing function.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from security._primitives import (
    FINGERPRINT_BYTES,
    SIGNATURE_BYTES,
    constant_time_equal,
    fingerprint,
    sha256,
    verify,
)
from security.errors import SecurityError
from sync.wire import canonical

HASH_BYTES: Final = 32
ZERO_HASH: Final = bytes(HASH_BYTES)
ENTRY_DOMAIN: Final = b"edgecare.audit.entry.v1\x00"
CHECKPOINT_HEADER: Final = "edgecare-audit/v1"
CHECKPOINT_DICT_VERSION: Final = 1

ProblemKind = Literal["edited", "broken_link", "seq_gap", "bad_signature", "truncated", "fork"]

_BAD_NAME = re.compile(r"[/\s\x00-\x1f\x7f]")
_BAD_KIND = re.compile(r"[\s\x00-\x1f\x7f]")


class AuditError(SecurityError):
    """Base for every error of the audit chain and the audit log."""


class AuditBodyError(AuditError, ValueError):
    """An event body holds something an audit entry cannot store."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"audit body {where}: {problem}")


class AuditEntryError(AuditError, ValueError):
    """An entry field breaks its rule (an empty kind, a negative time)."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"audit entry {name} {value!r} {rule}")


class CheckpointFieldError(AuditError, ValueError):
    """A checkpoint field cannot go into a checkpoint message."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"checkpoint {name} {value!r} {rule}")


class CheckpointFormatError(AuditError):
    """A checkpoint dict (from the hub or a file) has a missing or malformed key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"checkpoint key {key!r} {problem}")


# --- bodies ---------------------------------------------------------------------------------


def freeze_body(body: Mapping[str, object]) -> Mapping[str, object]:
    """A deep read-only copy of ``body``: mappings become read-only, lists tuples.

    Raises:
        AuditBodyError: a key is not a str, or a value is not JSON-compatible.
    """
    if not isinstance(body, Mapping):
        raise AuditBodyError("body", f"must be a mapping, got a {type(body).__name__}")
    return _freeze_mapping(body, "body")


def _freeze_mapping(value: Mapping[str, object], where: str) -> Mapping[str, object]:
    items: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise AuditBodyError(where, f"key {key!r} is a {type(key).__name__}; JSON keys are str")
        items[key] = _freeze(item, f"{where}[{key!r}]")
    return MappingProxyType(items)


def _freeze(value: object, where: str) -> object:
    match value:
        case None | bool() | int() | str():
            return value
        case float():
            if not math.isfinite(value):
                raise AuditBodyError(where, f"{value!r} has no JSON form; store a finite number or a string")
            return value
        case Mapping():
            return _freeze_mapping(value, where)
        case list() | tuple():
            return tuple(_freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
        case _:
            raise AuditBodyError(
                where, f"a {type(value).__name__} is not JSON-compatible; use str, int, float, bool, None"
            )


def thaw_body(body: Mapping[str, object]) -> dict[str, object]:
    """A plain ``dict``/``list`` copy of a (frozen) body, ready for ``json.dumps``."""
    return {key: _thaw(value) for key, value in body.items()}


def _thaw(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


# --- entries --------------------------------------------------------------------------------


def entry_hash(prev_hash: bytes, seq: int, at_ms: int, kind: str, body: Mapping[str, object]) -> bytes:
    """The hash entry ``seq`` must store, given its predecessor's hash and its fields."""
    return sha256(ENTRY_DOMAIN + canonical([prev_hash, seq, at_ms, kind, body]))


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit event, linked to its predecessor by ``prev_hash``.

    ``recomputed_hash`` is what the fields hash to (computed once, at
    construction, from the frozen body); it equals ``hash`` unless the entry
    was edited after it was made.
    """

    seq: int
    at_ms: int
    kind: str
    body: Mapping[str, object]
    prev_hash: bytes
    hash: bytes
    recomputed_hash: bytes = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # the body is a read-only view, which Python cannot hash
        return hash((self.seq, self.hash))

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", freeze_body(self.body))
        object.__setattr__(
            self, "recomputed_hash", entry_hash(self.prev_hash, self.seq, self.at_ms, self.kind, self.body)
        )


def make_entry(prev: Entry | None, at_ms: int, kind: str, body: Mapping[str, object]) -> Entry:
    """The entry that follows ``prev`` (the first entry when ``prev`` is None).

    Raises:
        AuditEntryError: ``kind`` is empty or ``at_ms`` is not a non-negative int.
        AuditBodyError: ``body`` is not JSON-compatible.
    """
    if not isinstance(kind, str) or not kind or _BAD_KIND.search(kind):
        raise AuditEntryError("kind", kind, "must be a non-empty str without whitespace")
    if not isinstance(at_ms, int) or isinstance(at_ms, bool) or at_ms < 0:
        raise AuditEntryError("at_ms", at_ms, "must be a non-negative int of epoch milliseconds")
    seq, prev_hash = (1, ZERO_HASH) if prev is None else (prev.seq + 1, prev.hash)
    entry = Entry(seq, at_ms, kind, body, prev_hash, b"")
    # Hash once: the new entry's stored hash is, by definition, the hash of its content.
    object.__setattr__(entry, "hash", entry.recomputed_hash)
    return entry


# --- checkpoints ----------------------------------------------------------------------------


def _check_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or _BAD_NAME.search(value):
        raise CheckpointFieldError(name, value, "must be a non-empty str without '/', whitespace or controls")
    return value


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointFieldError(name, value, "must be a non-negative int")
    return value


def checkpoint_message(origin: str, region: str, size: int, head: bytes, signed_at_ms: int) -> bytes:
    """The exact bytes a checkpoint's signature covers.

    Raises:
        CheckpointFieldError: a name is empty or holds '/', whitespace or a
            control character; a number is negative; ``head`` is not 32 bytes.
    """
    _check_name("origin", origin)
    _check_name("region", region)
    _check_count("size", size)
    _check_count("signed_at_ms", signed_at_ms)
    if not isinstance(head, bytes) or len(head) != HASH_BYTES:
        raise CheckpointFieldError("head", head, f"must be {HASH_BYTES} bytes")
    head_b64 = base64.b64encode(head).decode("ascii")
    return f"{CHECKPOINT_HEADER}\n{region}/{origin}\n{size}\n{head_b64}\n{signed_at_ms}\n".encode()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A node's signed statement "my audit log's first ``size`` entries end in ``head``"."""

    origin: str
    region: str
    size: int
    head: bytes
    signed_at_ms: int
    key_fingerprint: bytes
    signature: bytes

    def message(self) -> bytes:
        """The signed bytes (:func:`checkpoint_message` of this checkpoint's fields)."""
        return checkpoint_message(self.origin, self.region, self.size, self.head, self.signed_at_ms)

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe dict (hashes and signatures in base64, the fingerprint in hex)."""
        return {
            "v": CHECKPOINT_DICT_VERSION,
            "origin": self.origin,
            "region": self.region,
            "size": self.size,
            "head": base64.b64encode(self.head).decode("ascii"),
            "signed_at_ms": self.signed_at_ms,
            "key_fingerprint": self.key_fingerprint.hex(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Checkpoint:
        """Read a dict made by :meth:`to_dict`; unknown keys are ignored.

        This checks the form only; :func:`checkpoint_valid` checks the signature.

        Raises:
            CheckpointFormatError: naming the first key that is missing or malformed.
        """
        version = _dict_int(data, "v")
        if version != CHECKPOINT_DICT_VERSION:
            raise CheckpointFormatError(
                "v", f"is {version}, but this code reads version {CHECKPOINT_DICT_VERSION}; upgrade it"
            )
        names = {}
        for key in ("origin", "region"):
            value = data.get(key)
            try:
                names[key] = _check_name(key, value)
            except CheckpointFieldError as exc:
                problem = f"is {value!r}, but {exc.rule}" if key in data else "is missing"
                raise CheckpointFormatError(key, problem) from None
        return cls(
            origin=names["origin"],
            region=names["region"],
            size=_dict_int(data, "size"),
            head=_dict_bytes(data, "head", HASH_BYTES, hex_=False),
            signed_at_ms=_dict_int(data, "signed_at_ms"),
            key_fingerprint=_dict_bytes(data, "key_fingerprint", FINGERPRINT_BYTES, hex_=True),
            signature=_dict_bytes(data, "signature", SIGNATURE_BYTES, hex_=False),
        )


def _dict_int(data: Mapping[str, object], key: str) -> int:
    if key not in data:
        raise CheckpointFormatError(key, "is missing")
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointFormatError(key, f"must be a non-negative int, got {value!r}")
    return value


def _dict_bytes(data: Mapping[str, object], key: str, size: int, *, hex_: bool) -> bytes:
    if key not in data:
        raise CheckpointFormatError(key, "is missing")
    text = data[key]
    form = "hex" if hex_ else "base64"
    if not isinstance(text, str):
        raise CheckpointFormatError(key, f"must be a {form} str, got a {type(text).__name__}")
    try:
        raw = bytes.fromhex(text) if hex_ else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointFormatError(key, f"is not valid {form}: {text[:80]!r}") from None
    if not hex_ and base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointFormatError(key, "is not canonical base64 (padding or trailing bits)")
    if len(raw) != size:
        raise CheckpointFormatError(key, f"must decode to {size} bytes, got {len(raw)}")
    return raw


def sign_checkpoint(
    sign: Callable[[bytes], bytes],
    fingerprint: bytes,
    origin: str,
    region: str,
    size: int,
    head: bytes,
    signed_at_ms: int,
) -> Checkpoint:
    """Sign "the first ``size`` entries end in ``head``" with the node's key.

    Args:
        sign: the node's Ed25519 signing function (the private key stays with it).
        fingerprint: :func:`security._primitives.fingerprint` of the matching public key.

    Raises:
        CheckpointFieldError: a field cannot go into a checkpoint message.
    """
    if not isinstance(fingerprint, bytes) or len(fingerprint) != FINGERPRINT_BYTES:
        raise CheckpointFieldError("key_fingerprint", fingerprint, f"must be {FINGERPRINT_BYTES} bytes")
    message = checkpoint_message(origin, region, size, head, signed_at_ms)
    return Checkpoint(origin, region, size, head, signed_at_ms, fingerprint, sign(message))


@functools.lru_cache(maxsize=4096)
def _signature_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    # Pure and keyed by exact bytes, so caching is safe; verifiers re-check the
    # same checkpoints often (every verification, every frame from the node).
    return verify(public_key, signature, message)


def checkpoint_valid(cp: Checkpoint, public_key: bytes) -> bool:
    """Whether ``cp`` was signed by ``public_key`` (and names its fingerprint); never raises."""
    if not isinstance(public_key, bytes) or not isinstance(cp.signature, bytes):
        return False
    if not isinstance(cp.key_fingerprint, bytes):
        return False
    if not constant_time_equal(cp.key_fingerprint, fingerprint(public_key)):
        return False
    try:
        message = cp.message()
    except CheckpointFieldError:
        return False
    return _signature_ok(public_key, cp.signature, message)


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One thing wrong with a log; ``seq`` is the entry (or checkpoint size) concerned."""

    kind: ProblemKind
    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of :func:`verify_chain`; ``ok`` means no problem was found."""

    ok: bool
    entries: int
    head: bytes
    problems: tuple[ChainProblem, ...]
    checkpoints_checked: int
    latest_checkpoint: Checkpoint | None


_RESTORE = "restore the audit database from a backup and compare it with the hub's checkpoints"


def _entry_problems(entries: Sequence[Entry]) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    prev_seq, prev_hash = 0, ZERO_HASH
    for entry in entries:
        seq = entry.seq
        if seq != prev_seq + 1:
            where = f"after entry {prev_seq}" if prev_seq else "at the start"
            problems.append(_seq_gap(seq, prev_seq, where))
        if entry.recomputed_hash != entry.hash:
            problems.append(_edited(entry))
        if entry.prev_hash != prev_hash:
            problems.append(_broken_link(seq))
        prev_seq, prev_hash = seq, entry.hash
    return problems


def _seq_gap(seq: int, prev_seq: int, where: str) -> ChainProblem:
    return ChainProblem(
        "seq_gap",
        seq,
        f"expected entry {prev_seq + 1} {where} but found entry {seq}: entries were deleted, "
        f"inserted or reordered; {_RESTORE}",
    )


def _edited(entry: Entry) -> ChainProblem:
    return ChainProblem(
        "edited",
        entry.seq,
        f"entry {entry.seq} ({entry.kind!r}) does not hash to its stored hash: its time, kind, body "
        f"or links were changed after it was written; {_RESTORE}",
    )


def _broken_link(seq: int) -> ChainProblem:
    return ChainProblem(
        "broken_link",
        seq,
        f"entry {seq} does not link to the entry before it: an entry was deleted, inserted or moved "
        f"just before it; {_RESTORE}",
    )


def _describe(cp: Checkpoint, external: bool) -> str:
    source = "the hub's checkpoint" if external else "checkpoint"
    return f"{source} of size {cp.size} signed at {cp.signed_at_ms} ms"


def _bad_signature(cp: Checkpoint, external: bool, public_key: bytes) -> ChainProblem:
    named = cp.key_fingerprint.hex() if isinstance(cp.key_fingerprint, bytes) else repr(cp.key_fingerprint)
    return ChainProblem(
        "bad_signature",
        cp.size,
        f"{_describe(cp, external)} does not verify under key {fingerprint(public_key).hex()} (it names "
        f"key {named}): it was altered or forged, or signed by a rotated key; check that the right "
        f"public key was used, then {_RESTORE}",
    )


def _truncated(cp: Checkpoint, external: bool, have: int) -> ChainProblem:
    return ChainProblem(
        "truncated",
        cp.size,
        f"{_describe(cp, external)} covers {cp.size} entries but the log holds {have}: entries "
        f"{have + 1}..{cp.size} were removed; {_RESTORE}",
    )


def _fork(cp: Checkpoint, external: bool, have: bytes) -> ChainProblem:
    return ChainProblem(
        "fork",
        cp.size,
        f"{_describe(cp, external)} commits to head {cp.head.hex()} but the log's hash at entry "
        f"{cp.size} is {have.hex()}: history was rewritten after signing, or the node showed "
        f"different logs to different parties; {_RESTORE}",
    )


def _equivocation(size: int, heads: set[bytes]) -> ChainProblem:
    listed = ", ".join(sorted(h.hex()[:16] + "..." for h in heads))
    return ChainProblem(
        "fork",
        size,
        f"{len(heads)} validly signed checkpoints of size {size} commit to different heads ({listed}): "
        f"the node key signed two histories; treat the node or its key as compromised and compare "
        f"with the hub's copies",
    )


def _checkpoint_problems(
    entries: Sequence[Entry], valid: Sequence[tuple[Checkpoint, bool]]
) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    heads: dict[int, set[bytes]] = {}
    for cp, external in valid:
        heads.setdefault(cp.size, set()).add(cp.head)
        if cp.size > len(entries):
            problems.append(_truncated(cp, external, len(entries)))
            continue
        have = entries[cp.size - 1].hash if cp.size else ZERO_HASH
        if have != cp.head:
            problems.append(_fork(cp, external, have))
    problems += [_equivocation(size, seen) for size, seen in sorted(heads.items()) if len(seen) > 1]
    return problems


def verify_chain(
    entries: Sequence[Entry],
    checkpoints: Sequence[Checkpoint],
    public_key: bytes,
    *,
    external: Sequence[Checkpoint] = (),
) -> ChainReport:
    """Check a whole log (entries in stored order) against its own and the hub's checkpoints.

    Args:
        entries: every entry, as stored, in ``seq`` order.
        checkpoints: the checkpoints stored with the log.
        public_key: the node's raw 32-byte Ed25519 public key.
        external: checkpoints kept elsewhere (the hub's copies); they catch a
            truncation that also removed the local checkpoints.
    """
    problems = _entry_problems(entries)
    seen: set[tuple[int, bytes, bytes]] = set()
    valid: list[tuple[Checkpoint, bool]] = []
    for cp, is_external in [*((c, False) for c in checkpoints), *((c, True) for c in external)]:
        key = (cp.size, cp.head, cp.signature)
        if key in seen:  # the hub's copy of a local checkpoint adds nothing
            continue
        seen.add(key)
        if checkpoint_valid(cp, public_key):
            valid.append((cp, is_external))
        else:
            problems.append(_bad_signature(cp, is_external, public_key))
    problems += _checkpoint_problems(entries, valid)
    latest = max((cp for cp, _ in valid), key=lambda c: (c.size, c.signed_at_ms), default=None)
    return ChainReport(
        ok=not problems,
        entries=len(entries),
        head=entries[-1].hash if entries else ZERO_HASH,
        problems=tuple(problems),
        checkpoints_checked=len(seen),
        latest_checkpoint=latest,
    )


__all__ = [
    "CHECKPOINT_DICT_VERSION",
    "CHECKPOINT_HEADER",
    "ENTRY_DOMAIN",
    "HASH_BYTES",
    "ZERO_HASH",
    "AuditBodyError",
    "AuditEntryError",
    "AuditError",
    "ChainProblem",
    "ChainReport",
    "Checkpoint",
    "CheckpointFieldError",
    "CheckpointFormatError",
    "Entry",
    "ProblemKind",
    "checkpoint_message",
    "checkpoint_valid",
    "entry_hash",
    "freeze_body",
    "make_entry",
    "sign_checkpoint",
    "thaw_body",
    "verify_chain",
]
