"""Hostile input against ``verify_frame``: every bad frame is refused and counted by reason.

A seeded loop sends well over 10,000 bad frames (random bytes, mutated valid
frames, swapped signatures, replays, oversized, wrong keys, wrong regions,
validly signed garbage, stale and future frames) mixed with valid fresh ones,
and checks the reconciliation the threat model asks for: nothing but
``FrameRejected`` escapes, no bad frame is accepted, every valid one is, and
``accepted + sum(rejected by reason) == sent``. Each refusal is also checked
against an independent oracle for *which* reason it must carry.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from security.frames import (
    HEADER_BYTES,
    MAGIC,
    REASONS,
    EnrolledKey,
    FrameRejected,
    VerifiedFrame,
    sign_frame,
    verify_frame,
)
from security.identity import NodeIdentity
from security.replay import ReplayGuard
from sync.subjects import heartbeat_subject, ops_subject

SEED = 20_260_801
BAD_FRAMES = 12_000
VALID_EVERY = 12  # one valid fresh frame per this many bad ones
MAX_BYTES = 4096  # small, so oversized frames are cheap to build
T0 = 1_795_435_200_000
EU, US = "eu-de", "us-east"

N1, N2, N3 = NodeIdentity.generate(), NodeIdentity.generate(), NodeIdentity.generate()
STRANGER = NodeIdentity.generate()
KEYS = {
    "n1": EnrolledKey("n1", EU, N1.public_key),
    "n2": EnrolledKey("n2", EU, N2.public_key),
    "n3": EnrolledKey("n3", EU, N3.public_key),  # enrolled in eu-de, misbehaves as us-east
}
IDENTITY = {"n1": N1, "n2": N2, "n3": N3}


def seal(identity: NodeIdentity, subject: str, body: bytes, fingerprint: bytes | None = None) -> bytes:
    """A frame around any body, signed as the format says (restated here, not imported)."""
    signature = identity.sign(b"edgecare.frame.v1\x00" + subject.encode() + b"\x00" + body)
    return MAGIC + (identity.fingerprint if fingerprint is None else fingerprint) + signature + body


def header_oracle(frame: bytes, node: str) -> str:
    """The reason a frame that no enrolled key signed as-is must get, from its header alone."""
    if len(frame) > MAX_BYTES:
        return "oversized"
    if len(frame) < HEADER_BYTES or frame[:4] != MAGIC:
        return "unsigned"
    if node not in KEYS:
        return "unknown_node"
    if frame[4:12] != KEYS[node].fingerprint:
        return "forged"
    return "altered"


@dataclass(frozen=True)
class Case:
    """One bad frame, where it is sent, and the reason it must get (None: ask the header oracle)."""

    frame: bytes
    node: str
    expected: str | None = None
    subject: str | None = None
    region: str = EU


@dataclass
class Hub:
    """The verifying side: one guard, counters, and the accept-then-remember rule."""

    rng: random.Random
    now_ms: int = T0
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    delivery: int = 0

    def send(
        self, frame: bytes, *, node: str, region: str = EU, subject: str | None = None
    ) -> str | VerifiedFrame:
        self.sent += 1
        self.delivery += 1
        try:
            verified = verify_frame(
                frame,
                ops_subject(region, node) if subject is None else subject,
                expected_kind="ops",
                subject_region=region,
                subject_node=node,
                lookup=KEYS.get,
                now_ms=self.now_ms,
                guard=self.guard,
                delivery=self.delivery,
                max_bytes=MAX_BYTES,
            )
        except FrameRejected as exc:  # anything else escapes and fails the test
            self.rejected[exc.reason] += 1
            return exc.reason
        self.accepted += 1
        self.guard.remember(verified.node_id, verified.nonce, verified.signed_at_ms, self.delivery)
        return verified


@dataclass
class Traffic:
    """Builds valid and bad frames from a seeded generator."""

    rng: random.Random
    hub: Hub
    sent_valid: list[tuple[str, bytes]] = field(default_factory=list)

    def nonce(self) -> bytes:
        return self.rng.randbytes(16)

    def valid(self, node: str | None = None, *, region: str = EU, signed_at_ms: int | None = None) -> bytes:
        node = node or self.rng.choice(["n1", "n2"])
        identity = IDENTITY[node]
        return sign_frame(
            identity.sign,
            identity.fingerprint,
            ops_subject(region, node),
            kind="ops",
            node_id=node,
            region=region,
            payload=self.rng.randbytes(self.rng.randrange(0, 300)),
            now_ms=self.hub.now_ms if signed_at_ms is None else signed_at_ms,
            nonce=self.nonce(),
        )

    def random_bytes(self) -> Case:
        data = self.rng.randbytes(self.rng.randrange(0, 400))
        if self.rng.random() < 0.5:  # get past the magic check, and sometimes the fingerprint check
            fp = N1.fingerprint if self.rng.random() < 0.5 else self.rng.randbytes(8)
            data = MAGIC + fp + data
        return Case(data, "n1")

    def bit_flips(self) -> Case:
        frame = bytearray(self.valid("n1"))
        for bit in self.rng.sample(range(len(frame) * 8), self.rng.randint(1, 8)):
            frame[bit // 8] ^= 1 << (bit % 8)
        return Case(bytes(frame), "n1")

    def truncation(self) -> Case:
        frame = self.valid("n1")
        cut = self.rng.randint(1, len(frame))
        return Case((frame[:-cut] if self.rng.random() < 0.7 else frame[cut:]), "n1")

    def extension(self) -> Case:
        return Case(self.valid("n1") + self.rng.randbytes(self.rng.randint(1, 64)), "n1")

    def insertion(self) -> Case:
        frame = self.valid("n1")
        at = self.rng.randrange(0, len(frame) + 1)
        return Case(frame[:at] + self.rng.randbytes(self.rng.randint(1, 16)) + frame[at:], "n1")

    def deletion(self) -> Case:
        frame = self.valid("n1")
        at = self.rng.randrange(0, len(frame))
        return Case(frame[:at] + frame[at + self.rng.randint(1, 16) :], "n1")

    def swapped_signatures(self) -> Case:
        a, b = self.valid("n1"), self.valid("n1")
        return Case(a[:12] + b[12:HEADER_BYTES] + a[HEADER_BYTES:], "n1", "altered")

    def replay(self) -> Case:
        node, frame = self.rng.choice(self.sent_valid)
        return Case(frame, node, "replayed")

    def oversized(self) -> Case:
        size = MAX_BYTES + self.rng.randint(1, 2000)
        prefix = self.valid("n1")[: self.rng.randint(0, HEADER_BYTES + 20)]
        return Case(prefix + self.rng.randbytes(size - len(prefix)), "n1", "oversized")

    def wrong_key(self) -> Case:
        impostor = self.rng.choice([N2, STRANGER])
        frame = sign_frame(
            impostor.sign,
            impostor.fingerprint,
            ops_subject(EU, "n1"),
            kind="ops",
            node_id="n1",
            region=EU,
            payload=b"take over n1",
            now_ms=self.hub.now_ms,
            nonce=self.nonce(),
        )
        if self.rng.random() < 0.5:  # claim n1's fingerprint: the signature then fails instead
            return Case(frame[:4] + N1.fingerprint + frame[12:], "n1", "altered")
        return Case(frame, "n1", "forged")

    def wrong_region(self) -> Case:
        if self.rng.random() < 0.5:  # n3 is enrolled in eu-de and publishes as us-east
            return Case(self.valid("n3", region=US), "n3", "wrong_region", region=US)
        body_region_us = sign_frame(
            N1.sign,
            N1.fingerprint,
            ops_subject(EU, "n1"),
            kind="ops",
            node_id="n1",
            region=US,
            payload=b"",
            now_ms=self.hub.now_ms,
            nonce=self.nonce(),
        )
        return Case(body_region_us, "n1", "wrong_region")

    def moved_subject(self) -> Case:
        frame = self.valid("n1")
        if self.rng.random() < 0.5:
            return Case(frame, "n2", "forged")  # onto n2's ops subject
        return Case(
            frame, "n1", "altered", subject=heartbeat_subject(EU, "n1")
        )  # onto n1's heartbeat subject

    def unknown_node(self) -> Case:
        frame = sign_frame(
            STRANGER.sign,
            STRANGER.fingerprint,
            ops_subject(EU, "n9"),
            kind="ops",
            node_id="n9",
            region=EU,
            payload=b"",
            now_ms=self.hub.now_ms,
            nonce=self.nonce(),
        )
        return Case(frame, "n9", "unknown_node")

    def signed_garbage(self) -> Case:
        subject = ops_subject(EU, "n1")
        if self.rng.random() < 0.5:
            body = self.rng.randbytes(self.rng.randrange(0, 200))
        else:
            fields: dict[str, object] = {
                "v": 1,
                "kind": "ops",
                "node_id": "n1",
                "region": EU,
                "signed_at_ms": self.hub.now_ms,
                "nonce": self.nonce(),
                "policy_version": 0,
                "payload": b"",
            }
            key = self.rng.choice(sorted(fields))
            wrong_types = [
                v
                for v in (None, 1.5, True, "text", b"bytes", [1], {"k": 1})
                if type(v) is not type(fields[key])
            ]
            fields[key] = self.rng.choice(wrong_types)
            body = msgpack.packb(fields)
        return Case(seal(N1, subject, body), "n1", "malformed")

    def stale_or_future(self) -> Case:
        if self.rng.random() < 0.5:
            signed_at = self.hub.now_ms - self.hub.guard.window_ms - self.rng.randint(1, 10**9)
        else:
            signed_at = self.hub.now_ms + self.hub.guard.max_skew_ms + self.rng.randint(1, 10**9)
        return Case(self.valid("n1", signed_at_ms=signed_at), "n1", "replayed")


def test_ten_thousand_bad_frames_are_all_refused_and_counted() -> None:
    rng = random.Random(SEED)
    hub = Hub(rng)
    traffic = Traffic(rng, hub)
    generators: list[Callable[[], Case]] = [
        traffic.random_bytes,
        traffic.bit_flips,
        traffic.truncation,
        traffic.extension,
        traffic.insertion,
        traffic.deletion,
        traffic.swapped_signatures,
        traffic.replay,
        traffic.oversized,
        traffic.wrong_key,
        traffic.wrong_region,
        traffic.moved_subject,
        traffic.unknown_node,
        traffic.signed_garbage,
        traffic.stale_or_future,
    ]
    by_generator: Counter[str] = Counter()
    valid_sent = bad_sent = 0

    for i in range(BAD_FRAMES):
        hub.now_ms += rng.randint(0, 50)
        if i % VALID_EVERY == 0:
            node = rng.choice(["n1", "n2"])
            frame = traffic.valid(node)
            outcome = hub.send(frame, node=node)
            assert isinstance(outcome, VerifiedFrame), f"valid frame {i} refused as {outcome}"
            traffic.sent_valid.append((node, frame))
            valid_sent += 1
        generate = generators[i % len(generators)]
        case = generate()
        outcome = hub.send(case.frame, node=case.node, region=case.region, subject=case.subject)
        bad_sent += 1
        by_generator[generate.__name__] += 1
        assert not isinstance(outcome, VerifiedFrame), f"{generate.__name__} frame {i} was accepted"
        want = header_oracle(case.frame, case.node) if case.expected is None else case.expected
        assert outcome == want, f"{generate.__name__} frame {i}: refused as {outcome}, expected {want}"

    assert bad_sent >= 10_000
    assert hub.sent == bad_sent + valid_sent
    assert hub.accepted == valid_sent
    assert hub.accepted + sum(hub.rejected.values()) == hub.sent
    assert sum(hub.rejected.values()) == bad_sent
    assert set(hub.rejected) == set(REASONS), f"reasons never produced: {set(REASONS) - set(hub.rejected)}"
    assert min(by_generator.values()) >= BAD_FRAMES // len(generators)


# --- a smaller property with hypothesis -------------------------------------------------------

ENROLLED_N1 = KEYS["n1"]


def _verify(frame: bytes, subject: str) -> VerifiedFrame:
    return verify_frame(
        frame,
        subject,
        expected_kind="ops",
        subject_region=EU,
        subject_node="n1",
        lookup=KEYS.get,
        now_ms=T0,
        guard=ReplayGuard(),
    )


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=64), nonce=st.binary(min_size=16, max_size=16), data=st.data())
def test_any_single_bit_flip_of_a_valid_frame_is_rejected(
    payload: bytes, nonce: bytes, data: st.DataObject
) -> None:
    subject = ops_subject(EU, "n1")
    frame = sign_frame(
        N1.sign,
        N1.fingerprint,
        subject,
        kind="ops",
        node_id="n1",
        region=EU,
        payload=payload,
        now_ms=T0,
        nonce=nonce,
    )
    assert _verify(frame, subject).payload == payload
    bit = data.draw(st.integers(0, len(frame) * 8 - 1), label="bit")
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameRejected) as caught:
        _verify(bytes(flipped), subject)
    assert caught.value.reason == ("unsigned" if bit < 32 else "forged" if bit < 96 else "altered")
