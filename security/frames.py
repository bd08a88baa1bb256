"""Signed frames: the envelope of every message a node sends to the hub.

Theory of operation
-------------------
A frame is::

    MAGIC b"ECF1" | fingerprint (8 bytes) | Ed25519 signature (64 bytes) | body

The signature covers ``b"edgecare.frame.v1\\x00" + subject + b"\\x00" + body``:
the domain string keeps a frame signature from ever being valid for another
protocol, and the subject binds the frame to the NATS subject it was published
on, so a valid frame copied to another subject (another kind, region or node)
no longer verifies. The subject is the one the broker delivered the frame on,
never a field inside the frame. Both sides refuse a subject holding NUL
(``sync.subjects`` never builds one), so the signed input splits one way only.

The body is a MessagePack map with exactly these keys: ``v`` (1), ``kind``
(one of :data:`KINDS`), ``node_id``, ``region``, ``signed_at_ms`` (Unix ms),
``nonce`` (16 random bytes), ``policy_version`` and ``payload`` (opaque
bytes, the message proper). The envelope never changes shape within a
version: a new field means ``v = 2``; evolving content belongs in the payload,
whose own wire format tolerates added fields.

The hub checks a frame from the cheapest check to the dearest, and parses the
body only after its signature verified (MessagePack accepts a good share of
random mutations as valid input, so a parse proves nothing and unauthenticated
bytes should not reach the parser at all). :func:`verify_frame` refuses, in
this order, with :class:`FrameRejected` naming one of :data:`REASONS`:

1. ``oversized``: longer than ``max_bytes``, before anything else;
2. ``unsigned``: shorter than the header or without the magic;
3. ``unknown_node``: the subject's node is not enrolled;
4. ``forged``: the header names another key than the node's enrolled key;
5. ``altered``: the signature does not verify with that key (altered bytes,
   another subject, or a key forged into the header);
6. ``malformed``: validly signed, but the body is not a v1 body of the
   expected kind for the subject's node (a subject holding NUL is refused
   as ``malformed`` too, right after check 2, since nothing can be signed for it);
7. ``wrong_region``: the body's region, or the node's enrolled region, is not
   the subject's region (subject permissions are not data provenance);
8. ``replayed``: the :class:`~security.replay.ReplayGuard` refuses it (stale,
   from the future, or a nonce already accepted; see ``security.replay``).

:func:`verify_frame_with_key` is the variant for enrollment, where the node is
not known yet and its public key travels in the payload: the enrollment
handler takes the key from :func:`unverified_payload`, verifies the frame
with it, and only then trusts the rest of the payload.

The module is pure: no I/O and no clock; the caller passes ``now_ms``. The
only input it draws itself is a fresh random nonce in :func:`sign_frame`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TypeVar

import msgpack

from security._primitives import FINGERPRINT_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, fingerprint, verify
from security._primitives import random_bytes as _random_bytes
from security.errors import SecurityError

if TYPE_CHECKING:  # annotations only: security.replay imports this module's errors at run time
    from security.replay import ReplayGuard

MAGIC: Final = b"ECF1"
FRAME_VERSION: Final = 1
FRAME_NONCE_BYTES: Final = 16
HEADER_BYTES: Final = len(MAGIC) + FINGERPRINT_BYTES + SIGNATURE_BYTES
DEFAULT_MAX_BYTES: Final = 1_048_576
MAX_TEXT_BYTES: Final = 256
"""Longest ``kind``, ``node_id`` or ``region`` (UTF-8 bytes): they are subject tokens, so short."""
MAX_INT: Final = 2**63
"""Times and policy versions lie in ``[0, 2**63)``, so they fit a signed 64-bit column."""

KINDS: Final = frozenset({"ops", "heartbeat", "enroll", "policy", "audit", "ack"})
"""Every frame kind; each has its own subject family in ``sync.subjects``."""

Reason = Literal[
    "oversized", "unsigned", "unknown_node", "forged", "altered", "malformed", "wrong_region", "replayed"
]
REASONS: Final[tuple[Reason, ...]] = (
    "oversized",
    "unsigned",
    "unknown_node",
    "forged",
    "altered",
    "malformed",
    "wrong_region",
    "replayed",
)
"""Why a frame can be refused, in the order :func:`verify_frame` checks."""

_T = TypeVar("_T")

_DOMAIN: Final = b"edgecare.frame.v1\x00"
_BODY_KEYS: Final = frozenset(
    {"v", "kind", "node_id", "region", "signed_at_ms", "nonce", "policy_version", "payload"}
)


class FrameRejected(SecurityError):
    """A frame was refused; ``reason`` says which check failed, the message why.

    The message names the subject and the problem, never the payload.

    Attributes:
        reason: One of :data:`REASONS`, for counters and quarantine.
        problem: What was wrong, with the values involved.
        subject: The subject the frame arrived on (None inside
            :class:`~security.replay.ReplayGuard`).
    """

    def __init__(self, reason: Reason, problem: str, subject: str | None = None) -> None:
        self.reason, self.problem, self.subject = reason, problem, subject
        where = "frame" if subject is None else f"frame on {subject!r}"
        super().__init__(f"{where} rejected as {reason}: {problem}")


class InvalidFrameArgumentError(SecurityError, ValueError):
    """A caller passed a value no frame may carry (a bug in the caller, not a bad frame)."""

    def __init__(self, name: str, rule: str) -> None:
        self.name, self.rule = name, rule
        super().__init__(f"{name} {rule}")


@dataclass(frozen=True, slots=True)
class EnrolledKey:
    """A node's enrolled public key and the region it was enrolled in.

    Raises:
        InvalidFrameArgumentError: ``public_key`` is not 32 bytes.
    """

    node_id: str
    region: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            raise InvalidFrameArgumentError("public_key", f"must be {PUBLIC_KEY_BYTES} raw bytes")

    @property
    def fingerprint(self) -> bytes:
        """The 8-byte fingerprint frames signed by this key carry in their header."""
        return fingerprint(self.public_key)


@dataclass(frozen=True, slots=True)
class VerifiedFrame:
    """The body of a frame that passed every check (``repr`` leaves the payload out)."""

    kind: str
    node_id: str
    region: str
    signed_at_ms: int
    nonce: bytes
    policy_version: int
    payload: bytes = field(repr=False)


def _shown(text: str) -> str:
    """``text`` as it may appear in a message: quoted and cut short."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


# --- signing ----------------------------------------------------------------------------------


def _subject_bytes(subject: str) -> bytes | None:
    """``subject`` as signed, or None if it cannot be one (NUL, lone surrogates)."""
    if "\x00" in subject:
        return None
    try:
        return subject.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidFrameArgumentError(name, f"must be a non-empty str, got {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidFrameArgumentError(name, f"must be encodable as UTF-8, got {value!r}") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidFrameArgumentError(name, f"must be at most {MAX_TEXT_BYTES} UTF-8 bytes, got {size}")


def _check_count(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value < MAX_INT:
        raise InvalidFrameArgumentError(name, f"must be an int in [0, 2**63), got {value!r}")


def _check_kind(name: str, kind: object) -> None:
    if kind not in KINDS:
        raise InvalidFrameArgumentError(name, f"must be one of {sorted(KINDS)}, got {kind!r}")


def sign_frame(
    sign: Callable[[bytes], bytes],
    fingerprint: bytes,
    subject: str,
    *,
    kind: str,
    node_id: str,
    region: str,
    payload: bytes,
    now_ms: int,
    policy_version: int = 0,
    nonce: bytes | None = None,
) -> bytes:
    """Build a signed frame for ``subject``.

    Args:
        sign: Signs with the node's key (``NodeIdentity.sign``).
        fingerprint: The 8-byte fingerprint of that key.
        subject: The NATS subject the frame will be published on.
        kind: One of :data:`KINDS`.
        node_id: The sending node.
        region: The sending node's region.
        payload: The message proper, opaque here.
        now_ms: The signing time in Unix milliseconds.
        policy_version: The residency-policy version the payload was built under.
        nonce: 16 bytes; leave it out (a fresh random one) except in tests.

    Returns:
        The frame bytes.

    Raises:
        InvalidFrameArgumentError: An argument breaks the rules above, or
            ``sign`` did not return a 64-byte signature.
    """
    if not isinstance(fingerprint, bytes) or len(fingerprint) != FINGERPRINT_BYTES:
        raise InvalidFrameArgumentError("fingerprint", f"must be {FINGERPRINT_BYTES} bytes")
    subject_bytes = _subject_bytes(subject) if isinstance(subject, str) else None
    if subject_bytes is None:
        raise InvalidFrameArgumentError("subject", f"must be a UTF-8 str without NUL, got {subject!r}")
    _check_kind("kind", kind)
    _check_text("node_id", node_id)
    _check_text("region", region)
    _check_count("now_ms", now_ms)
    _check_count("policy_version", policy_version)
    if not isinstance(payload, bytes):
        raise InvalidFrameArgumentError("payload", f"must be bytes, got {type(payload).__name__}")
    nonce = _random_bytes(FRAME_NONCE_BYTES) if nonce is None else nonce
    if not isinstance(nonce, bytes) or len(nonce) != FRAME_NONCE_BYTES:
        raise InvalidFrameArgumentError("nonce", f"must be {FRAME_NONCE_BYTES} bytes")
    body: bytes = msgpack.packb(
        {
            "v": FRAME_VERSION,
            "kind": kind,
            "node_id": node_id,
            "region": region,
            "signed_at_ms": now_ms,
            "nonce": nonce,
            "policy_version": policy_version,
            "payload": payload,
        },
        use_bin_type=True,
    )
    signature = sign(_DOMAIN + subject_bytes + b"\x00" + body)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise InvalidFrameArgumentError("sign", f"must return a {SIGNATURE_BYTES}-byte signature")
    return MAGIC + fingerprint + signature + body


# --- verification -----------------------------------------------------------------------------


class _Signed(NamedTuple):
    fingerprint: bytes
    signature: bytes
    body: bytes
    signed_input: bytes


def _open(frame: bytes, subject: str, max_bytes: int) -> _Signed:
    """Checks 1 and 2 (size, header), and the subject; no parsing."""
    if len(frame) > max_bytes:
        raise FrameRejected("oversized", f"{len(frame)} bytes exceed the limit of {max_bytes}", subject)
    if len(frame) < HEADER_BYTES or frame[: len(MAGIC)] != MAGIC:
        raise FrameRejected(
            "unsigned", f"no {HEADER_BYTES}-byte signed header starting with {MAGIC!r}", subject
        )
    subject_bytes = _subject_bytes(subject)
    if subject_bytes is None:
        raise FrameRejected("malformed", "the subject holds NUL or cannot be encoded", subject)
    signature_at = len(MAGIC) + FINGERPRINT_BYTES
    body = bytes(frame[HEADER_BYTES:])
    return _Signed(
        fingerprint=bytes(frame[len(MAGIC) : signature_at]),
        signature=bytes(frame[signature_at:HEADER_BYTES]),
        body=body,
        signed_input=_DOMAIN + subject_bytes + b"\x00" + body,
    )


def _authenticate(public_key: bytes, signed: _Signed, subject: str, whose: str) -> None:
    """Checks 4 and 5: the header names ``public_key`` and its signature verifies."""
    expected = fingerprint(public_key)
    if signed.fingerprint != expected:
        raise FrameRejected(
            "forged",
            f"signed by key {signed.fingerprint.hex()}, not by {whose} key {expected.hex()}",
            subject,
        )
    if not verify(public_key, signed.signature, signed.signed_input):
        raise FrameRejected(
            "altered",
            f"the signature does not verify with {whose} key {expected.hex()} "
            "(bytes changed, or the frame was signed for another subject)",
            subject,
        )


def _unpack(body: bytes, subject: str) -> dict[str, object]:
    """The body as a map with exactly the v1 keys; parses validly signed bytes only."""
    try:
        fields = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_TEXT_BYTES,
            max_bin_len=len(body),
            max_array_len=0,
            max_map_len=len(_BODY_KEYS),
            max_ext_len=0,
        )
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError):
        raise FrameRejected("malformed", "the body is not valid MessagePack within limits", subject) from None
    if type(fields) is not dict or fields.keys() != _BODY_KEYS:
        keys = sorted(map(repr, fields)) if type(fields) is dict else type(fields).__name__
        raise FrameRejected("malformed", f"the body is not a map of the v1 keys, got {keys}", subject)
    return fields


def _typed(fields: dict[str, object], key: str, kind: type[_T], subject: str) -> _T:
    value = fields[key]
    if type(value) is not kind:  # exact: a bool is not an int here
        raise FrameRejected(
            "malformed", f"body field {key!r} is {type(value).__name__}, expected {kind.__name__}", subject
        )
    return value


def _parse_body(body: bytes, subject: str, expected_kind: str, subject_node: str | None) -> VerifiedFrame:
    """Check 6: a v1 body of ``expected_kind`` from ``subject_node`` (if the subject names one)."""
    fields = _unpack(body, subject)
    version = _typed(fields, "v", int, subject)
    if version != FRAME_VERSION:
        raise FrameRejected("malformed", f"body version {version}, expected {FRAME_VERSION}", subject)
    frame = VerifiedFrame(
        kind=_typed(fields, "kind", str, subject),
        node_id=_typed(fields, "node_id", str, subject),
        region=_typed(fields, "region", str, subject),
        signed_at_ms=_typed(fields, "signed_at_ms", int, subject),
        nonce=_typed(fields, "nonce", bytes, subject),
        policy_version=_typed(fields, "policy_version", int, subject),
        payload=_typed(fields, "payload", bytes, subject),
    )
    if frame.kind != expected_kind:
        raise FrameRejected(
            "malformed", f"kind {_shown(frame.kind)} on a subject for {expected_kind!r}", subject
        )
    if subject_node is not None and frame.node_id != subject_node:
        raise FrameRejected(
            "malformed", f"node {_shown(frame.node_id)} in a frame on {subject_node!r}'s subject", subject
        )
    if not frame.node_id or not frame.region:
        raise FrameRejected("malformed", "empty node_id or region", subject)
    if len(frame.nonce) != FRAME_NONCE_BYTES:
        raise FrameRejected(
            "malformed", f"nonce of {len(frame.nonce)} bytes, expected {FRAME_NONCE_BYTES}", subject
        )
    for name, value in (("signed_at_ms", frame.signed_at_ms), ("policy_version", frame.policy_version)):
        if not 0 <= value < MAX_INT:
            raise FrameRejected("malformed", f"{name} {value} is outside [0, 2**63)", subject)
    return frame


def _check_region(frame: VerifiedFrame, subject_region: str, subject: str) -> None:
    if frame.region != subject_region:
        raise FrameRejected(
            "wrong_region",
            f"node {_shown(frame.node_id)} signed for region {_shown(frame.region)} on region "
            f"{subject_region!r}'s subject",
            subject,
        )


def _check_replay(
    guard: ReplayGuard, frame: VerifiedFrame, now_ms: int, delivery: int | None, subject: str
) -> None:
    try:
        guard.check(frame.node_id, frame.nonce, frame.signed_at_ms, now_ms, delivery)
    except FrameRejected as exc:
        raise FrameRejected(exc.reason, exc.problem, subject) from None


def verify_frame(
    frame: bytes,
    subject: str,
    *,
    expected_kind: str,
    subject_region: str,
    subject_node: str,
    lookup: Callable[[str], EnrolledKey | None],
    now_ms: int,
    guard: ReplayGuard,
    delivery: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> VerifiedFrame:
    """Verify a frame from an enrolled node, then parse it; see the module docstring for the order.

    Does not call ``guard.remember``: the caller does, once it has durably
    accepted the frame.

    Args:
        frame: The bytes as received.
        subject: The subject the broker delivered them on.
        expected_kind: The kind that subject carries (one of :data:`KINDS`).
        subject_region: The region token of ``subject``.
        subject_node: The node token of ``subject``.
        lookup: The enrolled key of a node id, or None if not enrolled.
        now_ms: The current time in Unix milliseconds.
        guard: The replay guard of this stream.
        delivery: The delivery id (JetStream stream sequence), None if unknown.
        max_bytes: The largest frame accepted.

    Returns:
        The verified body.

    Raises:
        FrameRejected: The frame was refused; ``reason`` says by which check.
        InvalidFrameArgumentError: ``expected_kind`` is not a kind.
    """
    _check_kind("expected_kind", expected_kind)
    signed = _open(frame, subject, max_bytes)
    key = lookup(subject_node)
    if key is None or key.node_id != subject_node:
        raise FrameRejected("unknown_node", f"node {subject_node!r} is not enrolled", subject)
    _authenticate(key.public_key, signed, subject, f"node {subject_node!r}'s enrolled")
    verified = _parse_body(signed.body, subject, expected_kind, subject_node)
    _check_region(verified, subject_region, subject)
    if key.region != subject_region:
        raise FrameRejected(
            "wrong_region",
            f"node {subject_node!r} is enrolled in region {key.region!r}, not {subject_region!r}",
            subject,
        )
    _check_replay(guard, verified, now_ms, delivery, subject)
    return verified


def verify_frame_with_key(
    frame: bytes,
    subject: str,
    *,
    public_key: bytes,
    expected_kind: str,
    subject_region: str,
    now_ms: int,
    guard: ReplayGuard,
    subject_node: str | None = None,
    delivery: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> VerifiedFrame:
    """Verify a frame with a key given directly: for enrollment, before the node is known.

    The same checks as :func:`verify_frame` except the lookup: the header must
    name ``public_key`` ("forged" otherwise) and the signature verify with it
    ("altered"), then the body checks, the region check (body against subject)
    and the replay check. The caller must still decide whether ``public_key``
    may enroll at all (an enrollment token, an operator's list).

    Args:
        subject_node: The node the subject names; None for subjects without a
            node token (``ec.enroll.<region>``), when the caller checks the
            body's ``node_id`` itself.

    Raises:
        FrameRejected: The frame was refused; ``reason`` says by which check.
        InvalidFrameArgumentError: ``expected_kind`` is not a kind.
    """
    _check_kind("expected_kind", expected_kind)
    signed = _open(frame, subject, max_bytes)
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise FrameRejected("forged", f"the offered key has {len(public_key)} bytes, not 32", subject)
    _authenticate(public_key, signed, subject, "the offered")
    verified = _parse_body(signed.body, subject, expected_kind, subject_node)
    _check_region(verified, subject_region, subject)
    _check_replay(guard, verified, now_ms, delivery, subject)
    return verified


def unverified_payload(frame: bytes, subject: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The payload of a frame whose signature has NOT been checked: enrollment only.

    An enrollment frame carries the key that signed it inside its payload, so
    the handler must read the payload to find the key to verify with. Nothing
    in the result may be trusted, nor acted on, until
    :func:`verify_frame_with_key` succeeds with the key found in it. The body
    goes through the same strict parser as a verified one.

    Raises:
        FrameRejected: ``oversized``, ``unsigned`` or ``malformed``.
    """
    signed = _open(frame, subject, max_bytes)
    return _typed(_unpack(signed.body, subject), "payload", bytes, subject)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "FRAME_NONCE_BYTES",
    "FRAME_VERSION",
    "HEADER_BYTES",
    "KINDS",
    "MAGIC",
    "MAX_TEXT_BYTES",
    "REASONS",
    "EnrolledKey",
    "FrameRejected",
    "InvalidFrameArgumentError",
    "Reason",
    "VerifiedFrame",
    "sign_frame",
    "unverified_payload",
    "verify_frame",
    "verify_frame_with_key",
]
