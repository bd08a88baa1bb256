"""Signed frames: the wire layout, every refusal reason, and the replay guard."""

from __future__ import annotations

import re
from typing import get_args

import msgpack
import pytest

from security._primitives import verify
from security.errors import SecurityError
from security.frames import (
    DEFAULT_MAX_BYTES,
    HEADER_BYTES,
    KINDS,
    MAGIC,
    REASONS,
    EnrolledKey,
    FrameRejected,
    InvalidFrameArgumentError,
    Reason,
    VerifiedFrame,
    sign_frame,
    unverified_payload,
    verify_frame,
    verify_frame_with_key,
)
from security.identity import NodeIdentity
from security.replay import ReplayEntry, ReplayGuard
from sync.subjects import enroll_subject, heartbeat_subject, ops_subject

NOW = 1_795_435_200_000
DAY_MS = 24 * 3600 * 1000
NONCE = bytes(range(16))
EU, US = "eu-de", "us-east"

ALICE = NodeIdentity.generate()  # n1, enrolled in eu-de
BOB = NodeIdentity.generate()  # n2, enrolled in eu-de
STRANGER = NodeIdentity.generate()  # never enrolled
ENROLLED = {
    "n1": EnrolledKey("n1", EU, ALICE.public_key),
    "n2": EnrolledKey("n2", EU, BOB.public_key),
}
SUBJECT = ops_subject(EU, "n1")


def make(
    identity: NodeIdentity = ALICE,
    subject: str = SUBJECT,
    *,
    kind: str = "ops",
    node_id: str = "n1",
    region: str = EU,
    payload: bytes = b"ops batch",
    now_ms: int = NOW,
    nonce: bytes | None = NONCE,
) -> bytes:
    return sign_frame(
        identity.sign,
        identity.fingerprint,
        subject,
        kind=kind,
        node_id=node_id,
        region=region,
        payload=payload,
        now_ms=now_ms,
        policy_version=7,
        nonce=nonce,
    )


def check(
    frame: bytes,
    subject: str = SUBJECT,
    *,
    region: str = EU,
    node: str = "n1",
    kind: str = "ops",
    guard: ReplayGuard | None = None,
    delivery: int | None = 1,
    now_ms: int = NOW,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> VerifiedFrame:
    return verify_frame(
        frame,
        subject,
        expected_kind=kind,
        subject_region=region,
        subject_node=node,
        lookup=ENROLLED.get,
        now_ms=now_ms,
        guard=ReplayGuard() if guard is None else guard,
        delivery=delivery,
        max_bytes=max_bytes,
    )


def rejected(frame: bytes, subject: str = SUBJECT, **kwargs: object) -> FrameRejected:
    with pytest.raises(FrameRejected) as caught:
        check(frame, subject, **kwargs)  # type: ignore[arg-type]  # keyword pass-through in tests
    return caught.value


def seal(identity: NodeIdentity, subject: str, body: bytes) -> bytes:
    """A frame around an arbitrary body, signed as the format says (restated, not imported)."""
    signature = identity.sign(b"edgecare.frame.v1\x00" + subject.encode() + b"\x00" + body)
    return b"ECF1" + identity.fingerprint + signature + body


def body_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "v": 1,
        "kind": "ops",
        "node_id": "n1",
        "region": EU,
        "signed_at_ms": NOW,
        "nonce": NONCE,
        "policy_version": 7,
        "payload": b"ops batch",
    }
    fields.update(changes)
    return fields


# --- the valid path and the layout ------------------------------------------------------------


def test_valid_frame_verifies_and_returns_the_body() -> None:
    verified = check(make())
    assert verified == VerifiedFrame(
        kind="ops",
        node_id="n1",
        region=EU,
        signed_at_ms=NOW,
        nonce=NONCE,
        policy_version=7,
        payload=b"ops batch",
    )


def test_wire_layout() -> None:
    frame = make()
    assert frame[:4] == MAGIC == b"ECF1"
    assert frame[4:12] == ALICE.fingerprint
    body = frame[HEADER_BYTES:]
    assert HEADER_BYTES == 76
    assert verify(
        ALICE.public_key, frame[12:76], b"edgecare.frame.v1\x00" + SUBJECT.encode() + b"\x00" + body
    )
    assert msgpack.unpackb(body) == body_fields()
    assert frame == seal(ALICE, SUBJECT, msgpack.packb(body_fields()))


def test_fresh_nonce_by_default() -> None:
    first, second = (check(make(nonce=None)) for _ in range(2))
    assert len(first.nonce) == 16
    assert first.nonce != second.nonce


def test_verified_frame_repr_leaves_the_payload_out() -> None:
    assert "CANARY" not in repr(check(make(payload=b"CANARY-1234")))


def test_reasons_and_kinds_constants() -> None:
    assert get_args(Reason) == REASONS
    assert len(set(REASONS)) == 8
    assert {"ops", "heartbeat", "enroll", "policy", "audit", "ack"} == KINDS


# --- one test per reason ----------------------------------------------------------------------


def test_oversized_is_checked_before_anything_else() -> None:
    frame = make(payload=b"x" * 2000)
    assert rejected(frame, max_bytes=len(frame) - 1).reason == "oversized"
    assert check(frame, max_bytes=len(frame)).payload == b"x" * 2000
    garbage = b"\x00" * (DEFAULT_MAX_BYTES + 1)
    error = rejected(garbage, node="not-enrolled")
    assert error.reason == "oversized"
    assert f"{DEFAULT_MAX_BYTES + 1} bytes exceed the limit of {DEFAULT_MAX_BYTES}" in str(error)


@pytest.mark.parametrize(
    "frame",
    [b"", b"ECF1", make()[: HEADER_BYTES - 1], b"ECF2" + make()[4:], b"hello world" * 20],
    ids=["empty", "magic-only", "short-header", "wrong-magic", "text"],
)
def test_unsigned(frame: bytes) -> None:
    assert rejected(frame).reason == "unsigned"


def test_unknown_node() -> None:
    frame = make(STRANGER, ops_subject(EU, "n9"), node_id="n9")
    error = rejected(frame, ops_subject(EU, "n9"), node="n9")
    assert error.reason == "unknown_node"
    assert "node 'n9' is not enrolled" in str(error)


def test_lookup_answering_for_another_node_counts_as_unknown() -> None:
    with pytest.raises(FrameRejected) as caught:
        verify_frame(
            make(),
            SUBJECT,
            expected_kind="ops",
            subject_region=EU,
            subject_node="n1",
            lookup=lambda _node: ENROLLED["n2"],
            now_ms=NOW,
            guard=ReplayGuard(),
        )
    assert caught.value.reason == "unknown_node"


def test_forged_signed_by_another_nodes_key() -> None:
    frame = make(BOB)  # Bob claims to be n1, on n1's subject, with his own key
    error = rejected(frame)
    assert error.reason == "forged"
    assert BOB.fingerprint_hex in str(error)
    assert ALICE.fingerprint_hex in str(error)


def test_altered_when_the_header_names_the_right_key_but_another_key_signed() -> None:
    frame = make(STRANGER)
    frame = frame[:4] + ALICE.fingerprint + frame[12:]
    assert rejected(frame).reason == "altered"


@pytest.mark.parametrize("offset", [HEADER_BYTES, HEADER_BYTES + 10, -1, 20, 75])
def test_altered_one_byte_flipped(offset: int) -> None:
    frame = bytearray(make())
    frame[offset] ^= 0x01
    assert rejected(bytes(frame)).reason == "altered"


def test_altered_when_bytes_are_appended() -> None:
    assert rejected(make() + b"\x00").reason == "altered"


def test_frame_moved_to_another_subject_is_rejected() -> None:
    frame = make()
    # Same node and region, another kind of subject: the signature binds the subject.
    error = rejected(frame, heartbeat_subject(EU, "n1"), kind="ops")
    assert error.reason == "altered"
    assert "signed for another subject" in str(error)
    # Another node's subject: the header names n1's key, not n2's.
    assert rejected(frame, ops_subject(EU, "n2"), node="n2").reason == "forged"
    # A subject that differs only in the node token's text but maps to the same node.
    assert rejected(frame, SUBJECT + ".x").reason == "altered"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        b"\x93\x01\x02\x03",  # an array
        msgpack.packb(body_fields()) + b"\x00",  # trailing data
        msgpack.packb("a string"),
        msgpack.packb(body_fields(v=2)),
        msgpack.packb(body_fields(v=True)),
        msgpack.packb(body_fields(kind="heartbeat")),
        msgpack.packb(body_fields(kind="nope")),
        msgpack.packb(body_fields(node_id="n2")),
        msgpack.packb(body_fields(node_id=b"n1")),
        msgpack.packb(body_fields(nonce=bytes(15))),
        msgpack.packb(body_fields(nonce="0123456789abcdef")),
        msgpack.packb(body_fields(signed_at_ms=float(NOW))),
        msgpack.packb(body_fields(signed_at_ms=-1)),
        msgpack.packb(body_fields(policy_version=False)),
        msgpack.packb(body_fields(policy_version=2**64 - 1)),
        msgpack.packb(body_fields(payload="text")),
        msgpack.packb(body_fields(payload=None)),
        msgpack.packb(body_fields(region="")),
        msgpack.packb(body_fields(extra=1)),
        msgpack.packb({k: v for k, v in body_fields().items() if k != "payload"}),
        msgpack.packb({k.encode(): v for k, v in body_fields().items()}),
        msgpack.packb(body_fields(region="x" * 300)),
        msgpack.packb(body_fields(payload=msgpack.ExtType(1, b"x"))),
    ],
)
def test_malformed_validly_signed_garbage_body(body: bytes) -> None:
    assert rejected(seal(ALICE, SUBJECT, body)).reason == "malformed"


def test_malformed_kind_for_the_subject() -> None:
    frame = make(kind="heartbeat")
    error = rejected(frame, kind="ops")
    assert error.reason == "malformed"
    assert "kind 'heartbeat' on a subject for 'ops'" in str(error)


def test_subject_holding_nul_is_malformed() -> None:
    assert rejected(make(), SUBJECT + "\x00x").reason == "malformed"


def test_wrong_region_enrolled_in_eu_de_publishing_for_us_east() -> None:
    us_subject = ops_subject(US, "n1")
    # Body says us-east, matching the subject: the enrollment says eu-de.
    error = rejected(make(subject=us_subject, region=US), us_subject, region=US)
    assert error.reason == "wrong_region"
    assert "enrolled in region 'eu-de', not 'us-east'" in str(error)
    # Body says eu-de on a us-east subject.
    error = rejected(make(subject=us_subject, region=EU), us_subject, region=US)
    assert error.reason == "wrong_region"
    assert "signed for region 'eu-de'" in str(error)


def test_replayed_with_another_delivery_id() -> None:
    guard = ReplayGuard()
    frame = make()
    verified = check(frame, guard=guard, delivery=1)
    guard.remember(verified.node_id, verified.nonce, verified.signed_at_ms, 1)
    error = rejected(frame, guard=guard, delivery=2)
    assert error.reason == "replayed"
    assert f"nonce {NONCE.hex()} of node 'n1' was already accepted" in str(error)
    assert error.subject == SUBJECT
    assert rejected(frame, guard=guard, delivery=None).reason == "replayed"


def test_redelivery_with_the_same_delivery_id_passes() -> None:
    guard = ReplayGuard()
    frame = make()
    verified = check(frame, guard=guard, delivery=41)
    guard.remember(verified.node_id, verified.nonce, verified.signed_at_ms, 41)
    assert check(frame, guard=guard, delivery=41) == verified


def test_verify_does_not_remember() -> None:
    guard = ReplayGuard()
    frame = make()
    check(frame, guard=guard, delivery=1)
    check(frame, guard=guard, delivery=2)
    assert len(guard) == 0


def test_stale_frame() -> None:
    frame = make(now_ms=NOW - DAY_MS - 1500)
    error = rejected(frame)
    assert error.reason == "replayed"
    assert "signed 86401.5 s ago, outside the replay window of 86400 s" in str(error)


def test_future_frame() -> None:
    frame = make(now_ms=NOW + 5 * 60 * 1000 + 1)
    error = rejected(frame)
    assert error.reason == "replayed"
    assert "signed in the future, 300.001 s ahead" in str(error)


def test_rejection_message_names_the_subject_never_the_payload() -> None:
    frame = make(subject=ops_subject(US, "n1"), region=US, payload=b"CANARY-5551234")
    error = rejected(frame, ops_subject(US, "n1"), region=US)
    assert isinstance(error, SecurityError)
    assert "'ec.ops.us-east.n1'" in str(error)
    assert str(error).startswith("frame on 'ec.ops.us-east.n1' rejected as wrong_region: ")
    assert "CANARY" not in str(error)


def test_expected_kind_must_be_a_kind() -> None:
    with pytest.raises(InvalidFrameArgumentError, match="expected_kind must be one of"):
        check(make(), kind="opz")


# --- enrollment: verify with a given key ------------------------------------------------------


def enroll_frame(identity: NodeIdentity = STRANGER, region: str = EU) -> bytes:
    return make(
        identity,
        enroll_subject(region),
        kind="enroll",
        node_id="n9",
        region=region,
        payload=identity.public_key,
    )


def with_key(
    frame: bytes, public_key: bytes, subject: str = enroll_subject(EU), **kw: object
) -> VerifiedFrame:
    return verify_frame_with_key(
        frame,
        subject,
        public_key=public_key,
        expected_kind="enroll",
        subject_region=EU,
        now_ms=NOW,
        guard=ReplayGuard(),
        **kw,  # type: ignore[arg-type]  # keyword pass-through in tests
    )


def test_enrollment_frame_verifies_with_the_key_it_carries() -> None:
    frame = enroll_frame()
    key = unverified_payload(frame, enroll_subject(EU))
    assert key == STRANGER.public_key
    verified = with_key(frame, key)
    assert (verified.node_id, verified.kind, verified.payload) == ("n9", "enroll", STRANGER.public_key)
    assert with_key(frame, key, subject_node="n9").node_id == "n9"


@pytest.mark.parametrize(
    ("frame", "key", "reason", "kw"),
    [
        (enroll_frame(), ALICE.public_key, "forged", {}),
        (enroll_frame(), b"short", "forged", {}),
        (enroll_frame()[:-1] + b"\x00", STRANGER.public_key, "altered", {}),
        (enroll_frame(region=US), STRANGER.public_key, "wrong_region", {}),
        (enroll_frame(), STRANGER.public_key, "malformed", {"subject_node": "n1"}),
        (enroll_frame(), STRANGER.public_key, "oversized", {"max_bytes": 10}),
        (b"junk", STRANGER.public_key, "unsigned", {}),
    ],
)
def test_enrollment_refusals(frame: bytes, key: bytes, reason: str, kw: dict[str, object]) -> None:
    subject = enroll_subject(US) if reason == "wrong_region" else enroll_subject(EU)
    with pytest.raises(FrameRejected) as caught:
        with_key(frame, key, subject, **kw)
    assert caught.value.reason == reason


def test_unverified_payload_refuses_what_it_cannot_parse() -> None:
    with pytest.raises(FrameRejected) as caught:
        unverified_payload(b"ECF1" + bytes(72) + b"\xc1", enroll_subject(EU))
    assert caught.value.reason == "malformed"


# --- signing arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "opz"}, "kind must be one of"),
        ({"nonce": bytes(15)}, "nonce must be 16 bytes"),
        ({"node_id": ""}, "node_id must be a non-empty str"),
        ({"region": "r" * 257}, "region must be at most 256 UTF-8 bytes"),
        ({"now_ms": True}, "now_ms must be an int in [0, 2**63)"),
        ({"now_ms": -1}, "now_ms must be an int in [0, 2**63)"),
        ({"now_ms": 2**63}, "now_ms must be an int in [0, 2**63)"),
        ({"subject": "ec.ops\x00"}, "subject must be a UTF-8 str without NUL"),
        ({"subject": "ec.\ud800"}, "subject must be a UTF-8 str without NUL"),
        ({"payload": "text"}, "payload must be bytes"),
    ],
)
def test_sign_frame_refuses_bad_arguments(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidFrameArgumentError) as caught:
        make(**changes)  # type: ignore[arg-type]  # deliberately wrong values
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_sign_frame_refuses_bad_fingerprint_and_signer() -> None:
    with pytest.raises(InvalidFrameArgumentError, match="fingerprint must be 8 bytes"):
        sign_frame(ALICE.sign, b"1234", SUBJECT, kind="ops", node_id="n1", region=EU, payload=b"", now_ms=NOW)
    with pytest.raises(InvalidFrameArgumentError, match="sign must return a 64-byte signature"):
        sign_frame(
            lambda _m: b"sig",
            ALICE.fingerprint,
            SUBJECT,
            kind="ops",
            node_id="n1",
            region=EU,
            payload=b"",
            now_ms=NOW,
        )


def test_enrolled_key_fingerprint_and_validation() -> None:
    assert ENROLLED["n1"].fingerprint == ALICE.fingerprint
    with pytest.raises(InvalidFrameArgumentError, match="public_key must be 32 raw bytes"):
        EnrolledKey("n1", EU, b"short")


# --- the replay guard -------------------------------------------------------------------------


def test_window_and_skew_boundaries() -> None:
    guard = ReplayGuard(window_ms=1000, max_skew_ms=100)
    guard.check("n1", NONCE, 9000, 10_000)  # exactly window_ms old: accepted
    guard.check("n1", NONCE, 10_100, 10_000)  # exactly max_skew_ms ahead: accepted
    with pytest.raises(
        FrameRejected, match=re.escape("signed 1.001 s ago, outside the replay window of 1 s")
    ):
        guard.check("n1", NONCE, 8999, 10_000)
    with pytest.raises(FrameRejected, match=re.escape("signed in the future, 0.101 s ahead")):
        guard.check("n1", NONCE, 10_101, 10_000)


def test_nonces_are_per_node_and_none_delivery_never_matches() -> None:
    guard = ReplayGuard()
    guard.remember("n1", NONCE, NOW, None)
    guard.check("n2", NONCE, NOW, NOW, 5)  # another node may draw the same nonce
    for delivery in (None, 5):
        with pytest.raises(FrameRejected) as caught:
            guard.check("n1", NONCE, NOW, NOW, delivery)
        assert caught.value.reason == "replayed"
        assert caught.value.subject is None


def test_prune_forgets_only_what_the_window_refuses_anyway() -> None:
    guard = ReplayGuard(window_ms=1000, max_skew_ms=0)
    guard.remember("n1", b"a" * 16, 100, 1)
    guard.remember("n1", b"b" * 16, 500, 2)
    guard.remember("n2", b"c" * 16, 900, 3)
    guard.remember("n1", b"a" * 16, 100, 1)  # a redelivery remembered twice
    assert guard.prune(1100) == 0  # 100 is exactly window_ms old: still needed
    assert guard.prune(1101) == 1
    assert {(e.node_id, e.nonce) for e in guard.entries()} == {("n1", b"b" * 16), ("n2", b"c" * 16)}
    assert guard.prune(10_000) == 2
    assert len(guard) == 0
    stats = guard.statistics()
    assert (stats.entries, stats.nodes, stats.pruned_total, stats.remembered_total) == (0, 0, 3, 4)


def test_memory_stays_bounded_when_pruned() -> None:
    guard = ReplayGuard(window_ms=1000, max_skew_ms=0)
    for t in range(10_000):
        guard.remember("n1", t.to_bytes(16, "big"), t, t)
        if t % 100 == 0:
            guard.prune(t)
    assert len(guard) <= 1100
    assert len(guard._expiry) <= 1100


def test_entries_and_load_round_trip() -> None:
    guard = ReplayGuard()
    guard.remember("n1", NONCE, NOW, 3)
    guard.remember("n2", NONCE, NOW - 5, None)
    saved = [tuple(entry) for entry in guard.entries()]
    restored = ReplayGuard()
    restored.load(saved)  # type: ignore[arg-type]  # tuples from a store
    assert sorted(restored.entries()) == sorted(guard.entries())
    assert ReplayEntry("n1", NONCE, NOW, 3) in list(restored.entries())
    with pytest.raises(FrameRejected):
        restored.check("n1", NONCE, NOW, NOW, 4)
    restored.check("n1", NONCE, NOW, NOW, 3)
    with pytest.raises(InvalidFrameArgumentError, match="replay entry"):
        restored.load([("n1", "not bytes", NOW, None)])  # type: ignore[list-item]  # a corrupt store


def test_statistics() -> None:
    guard = ReplayGuard(window_ms=5000, max_skew_ms=10)
    guard.remember("n1", NONCE, 1000, 1)
    guard.remember("n1", b"x" * 16, 700, 2)
    with pytest.raises(FrameRejected):
        guard.check("n1", NONCE, 1000, 1000, 2)
    guard.check("n1", NONCE, 1000, 1000, 1)
    stats = guard.statistics()
    assert stats.entries == 2
    assert stats.nodes == 1
    assert stats.oldest_signed_at_ms == 700
    assert (stats.checked_total, stats.refused_total) == (2, 1)
    assert (stats.window_ms, stats.max_skew_ms) == (5000, 10)


@pytest.mark.parametrize(("window_ms", "max_skew_ms"), [(0, 0), (-1, 0), (1000, -1), (True, 0)])
def test_guard_refuses_bad_settings(window_ms: int, max_skew_ms: int) -> None:
    with pytest.raises(InvalidFrameArgumentError):
        ReplayGuard(window_ms=window_ms, max_skew_ms=max_skew_ms)
