"""The audit chain: entries, checkpoints, and every kind of tampering the verifier must catch."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from security._primitives import fingerprint, new_signing_key, public_key_bytes, sign
from security.audit_chain import (
    ZERO_HASH,
    AuditBodyError,
    AuditEntryError,
    AuditError,
    ChainReport,
    Checkpoint,
    CheckpointFieldError,
    CheckpointFormatError,
    Entry,
    checkpoint_message,
    checkpoint_valid,
    entry_hash,
    make_entry,
    sign_checkpoint,
    thaw_body,
    verify_chain,
)
from security.errors import SecurityError
from sync.wire import canonical

KEY = new_signing_key()
PUB = public_key_bytes(KEY)
FP = fingerprint(PUB)
OTHER_KEY = new_signing_key()
ORIGIN, REGION = "node-7", "eu-west"
KINDS = ("egress.batch", "key.create", "key.rotate", "key.shred", "erasure", "admin.policy")
T0 = 1_790_000_000_000


def node_sign(message: bytes) -> bytes:
    return sign(KEY, message)


def event(i: int) -> tuple[str, dict[str, object]]:
    kind = KINDS[i % len(KINDS)]
    return kind, {
        "batch": f"b-{i:04d}",
        "classes": ["ticket", "customer"][: 1 + i % 2],
        "records": i * 3,
        "forms": {"ticket": "pseudonymised", "customer": "hashed"},
        "policy_version": 7,
        "dry_run": i % 5 == 0,
        "ratio": i / 8,
        "note": None,
    }


def build(n: int) -> list[Entry]:
    entries: list[Entry] = []
    for i in range(n):
        kind, body = event(i)
        entries.append(make_entry(entries[-1] if entries else None, T0 + i * 1000, kind, body))
    return entries


def checkpoint(entries: Sequence[Entry], size: int, *, head: bytes | None = None, at: int = 0) -> Checkpoint:
    if head is None:
        head = entries[size - 1].hash if size else ZERO_HASH
    return sign_checkpoint(node_sign, FP, ORIGIN, REGION, size, head, T0 + 10_000_000 + at)


def kinds(report: ChainReport) -> set[str]:
    return {p.kind for p in report.problems}


CHAIN = build(50)
CPS = [checkpoint(CHAIN, s) for s in (16, 32, 50)]


# --- entries ----------------------------------------------------------------------------------


def test_entry_hash_is_the_documented_formula() -> None:
    body = {"records": 3, "classes": ["ticket"]}
    expected = hashlib.sha256(
        b"edgecare.audit.entry.v1\x00" + canonical([ZERO_HASH, 1, T0, "egress.batch", body])
    ).digest()
    assert entry_hash(ZERO_HASH, 1, T0, "egress.batch", body) == expected
    first = make_entry(None, T0, "egress.batch", body)
    assert (first.seq, first.prev_hash, first.hash) == (1, ZERO_HASH, expected)


def test_entries_are_numbered_from_one_and_linked() -> None:
    chain = build(5)
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == ZERO_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert len({e.hash for e in chain}) == 5
    assert all(e.recomputed_hash == e.hash and len(e.hash) == 32 for e in chain)


def test_body_is_frozen_and_thaws_to_json() -> None:
    body: dict[str, object] = {"classes": ["ticket"], "forms": {"ticket": "hashed"}}
    entry = make_entry(None, T0, "egress.batch", body)
    body["classes"] = ["customer"]  # the caller's dict is copied, not kept
    assert entry.body["classes"] == ("ticket",)
    with pytest.raises(TypeError):
        entry.body["records"] = 1  # type: ignore[index]  # the point: a read-only mapping
    thawed = thaw_body(entry.body)
    assert thawed == {"classes": ["ticket"], "forms": {"ticket": "hashed"}}
    again = Entry(1, T0, "egress.batch", json.loads(json.dumps(thawed)), ZERO_HASH, entry.hash)
    assert again == entry
    assert again.recomputed_hash == entry.hash


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"ids": {"a", "b"}}, "body['ids']"),
        ({"raw": b"\x00"}, "body['raw']"),
        ({"x": [1, float("nan")]}, "body['x'][1]"),
        ({"nested": {1: "one"}}, "body['nested']"),
    ],
)
def test_body_refuses_what_json_cannot_hold(body: dict[str, object], where: str) -> None:
    with pytest.raises(AuditBodyError, match=r"audit body .*") as info:
        make_entry(None, T0, "erasure", body)
    assert info.value.where == where
    assert isinstance(info.value, SecurityError)


@pytest.mark.parametrize(("at_ms", "kind"), [(-1, "erasure"), (T0, ""), (T0, "key shred"), (True, "erasure")])
def test_make_entry_refuses_bad_kind_or_time(at_ms: int, kind: str) -> None:
    with pytest.raises(AuditEntryError):
        make_entry(None, at_ms, kind, {})


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_message_is_a_note_of_five_lines() -> None:
    head = bytes(range(32))
    message = checkpoint_message(ORIGIN, REGION, 64, head, 1234)
    b64 = base64.b64encode(head).decode()
    assert message == f"edgecare-audit/v1\neu-west/node-7\n64\n{b64}\n1234\n".encode()


def test_signed_checkpoint_verifies_only_under_its_key() -> None:
    cp = CPS[0]
    assert cp.key_fingerprint == FP
    assert checkpoint_valid(cp, PUB)
    assert not checkpoint_valid(cp, public_key_bytes(OTHER_KEY))
    assert not checkpoint_valid(dataclasses.replace(cp, size=cp.size + 1), PUB)
    assert not checkpoint_valid(dataclasses.replace(cp, region="us-east"), PUB)
    assert not checkpoint_valid(dataclasses.replace(cp, origin="bad/origin"), PUB)
    assert not checkpoint_valid(dataclasses.replace(cp, key_fingerprint=bytes(8)), PUB)


@pytest.mark.parametrize(
    ("field", "value"), [("origin", ""), ("region", "eu/west"), ("origin", "node 7"), ("size", -1)]
)
def test_sign_checkpoint_refuses_fields_a_message_cannot_hold(field: str, value: object) -> None:
    args: dict[str, object] = {
        "origin": ORIGIN, "region": REGION, "size": 1, "head": ZERO_HASH, "signed_at_ms": 0,
    }  # fmt: skip
    args[field] = value
    with pytest.raises(CheckpointFieldError, match=field):
        sign_checkpoint(node_sign, FP, **args)  # type: ignore[arg-type]  # the test feeds bad types on purpose


def test_checkpoint_round_trips_through_json() -> None:
    cp = CPS[1]
    data = json.loads(json.dumps(cp.to_dict()))
    assert data["key_fingerprint"] == FP.hex()
    assert Checkpoint.from_dict(data) == cp
    assert checkpoint_valid(Checkpoint.from_dict(data), PUB)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("v", 2),
        ("origin", None),
        ("region", "a/b"),
        ("size", -3),
        ("size", "16"),
        ("signed_at_ms", True),
        ("head", "not base64!"),
        ("head", base64.b64encode(b"short").decode()),
        ("key_fingerprint", "zz"),
        ("signature", 12),
    ],
)
def test_from_dict_names_the_bad_key(key: str, value: object) -> None:
    data = CPS[0].to_dict()
    data[key] = value
    with pytest.raises(CheckpointFormatError) as info:
        Checkpoint.from_dict(data)
    assert info.value.key == key
    assert repr(key) in str(info.value)
    assert isinstance(info.value, AuditError)


@pytest.mark.parametrize("key", ["v", "origin", "region", "size", "head", "signed_at_ms", "signature"])
def test_from_dict_names_a_missing_key(key: str) -> None:
    data = CPS[0].to_dict()
    del data[key]
    with pytest.raises(CheckpointFormatError, match="is missing") as info:
        Checkpoint.from_dict(data)
    assert info.value.key == key


# --- verification -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 100])
def test_an_untouched_chain_verifies(n: int) -> None:
    chain = build(n)
    cps = [checkpoint(chain, s) for s in sorted({0, n // 2, n})]
    report = verify_chain(chain, cps, PUB, external=cps[-1:])
    assert report.ok, report.problems
    assert report.entries == n
    assert report.problems == ()
    assert report.head == (chain[-1].hash if chain else ZERO_HASH)
    assert report.checkpoints_checked == len(cps)  # the hub's copy of a local checkpoint counts once
    assert report.latest_checkpoint == cps[-1]


def test_entries_after_the_latest_checkpoint_still_verify() -> None:
    report = verify_chain(CHAIN, CPS[:1], PUB)
    assert report.ok
    assert report.latest_checkpoint == CPS[0]


def test_edited_body_is_detected() -> None:
    body = thaw_body(CHAIN[9].body) | {"records": 999}
    entries = [*CHAIN[:9], dataclasses.replace(CHAIN[9], body=body), *CHAIN[10:]]
    report = verify_chain(entries, CPS, PUB)
    assert not report.ok
    assert [(p.kind, p.seq) for p in report.problems] == [("edited", 10)]


def test_deleted_entry_is_detected() -> None:
    report = verify_chain([*CHAIN[:20], *CHAIN[21:]], CPS, PUB)
    assert {"broken_link", "seq_gap"} <= kinds(report)
    assert ("broken_link", 22) in [(p.kind, p.seq) for p in report.problems]


def test_inserted_forged_entry_is_detected() -> None:
    forged = make_entry(CHAIN[4], T0 + 4500, "key.create", {"key": "k-evil"})  # its own hash is right
    report = verify_chain([*CHAIN[:5], forged, *CHAIN[5:]], CPS, PUB)
    assert "broken_link" in kinds(report)
    assert "edited" not in kinds(report)


def test_swapped_entries_are_detected() -> None:
    entries = list(CHAIN)
    entries[3], entries[7] = entries[7], entries[3]
    report = verify_chain(entries, CPS, PUB)
    assert {"seq_gap", "broken_link"} <= kinds(report)


def test_truncated_tail_is_detected() -> None:
    report = verify_chain(CHAIN[:40], CPS, PUB)
    assert kinds(report) == {"truncated"}
    assert report.problems[0].seq == 50
    assert "41..50" in report.problems[0].message


def test_truncation_with_its_checkpoints_removed_is_caught_by_the_hubs_copy() -> None:
    local = [cp for cp in CPS if cp.size <= 40]
    assert verify_chain(CHAIN[:40], local, PUB).ok  # locally it looks fine...
    report = verify_chain(CHAIN[:40], local, PUB, external=[CPS[-1]])
    assert kinds(report) == {"truncated"}
    assert "hub" in report.problems[0].message


def test_rewritten_history_is_a_fork() -> None:
    entries = list(CHAIN[:10])
    for i in range(10, 50):  # an insider edits entry 11 and recomputes every hash after it
        kind, body = event(i)
        entries.append(make_entry(entries[-1], T0 + i * 1000, kind, body | {"records": 0}))
    report = verify_chain(entries, CPS, PUB)
    assert kinds(report) == {"fork"}
    assert sorted(p.seq for p in report.problems) == [16, 32, 50]


def test_two_signed_checkpoints_of_one_size_are_a_fork() -> None:
    forked = checkpoint(CHAIN, 32, head=bytes(32 * [7]), at=5)
    report = verify_chain(CHAIN, [*CPS, forked], PUB)
    assert kinds(report) == {"fork"}
    assert any("different heads" in p.message for p in report.problems)


def test_checkpoint_with_a_bad_signature_is_detected() -> None:
    bad = dataclasses.replace(CPS[1], signature=bytes(64))
    report = verify_chain(CHAIN, [CPS[0], bad, CPS[2]], PUB)
    assert kinds(report) == {"bad_signature"}
    assert report.latest_checkpoint == CPS[2]


def test_checkpoint_signed_by_another_key_is_a_bad_signature() -> None:
    cp = sign_checkpoint(lambda m: sign(OTHER_KEY, m), FP, ORIGIN, REGION, 50, CHAIN[-1].hash, T0)
    assert kinds(verify_chain(CHAIN, [cp], PUB)) == {"bad_signature"}


def test_hub_checkpoint_that_does_not_match_is_a_fork() -> None:
    hub = checkpoint(CHAIN, 20, head=hashlib.sha256(b"other history").digest())
    report = verify_chain(CHAIN, CPS, PUB, external=[hub])
    assert kinds(report) == {"fork"}
    assert "the hub's checkpoint" in report.problems[0].message


def test_every_problem_says_what_to_check() -> None:
    entries = [*CHAIN[:5], *CHAIN[6:30]]
    bad = dataclasses.replace(CPS[0], signature=bytes(64))
    forked = checkpoint(CHAIN, 32, head=bytes(32))
    report = verify_chain(entries, [bad, CPS[1], forked, CPS[2]], PUB)
    assert kinds(report) == {"broken_link", "seq_gap", "bad_signature", "truncated", "fork"}
    for problem in report.problems:
        assert "restore" in problem.message or "compare" in problem.message, problem


# --- randomized single mutations --------------------------------------------------------------

Mutation = tuple[list[Entry], list[Checkpoint], list[Checkpoint], set[str]]
HUB = [CPS[-1]]


def _edit_body(rng: random.Random) -> Mutation:
    i = rng.randrange(50)
    body = thaw_body(CHAIN[i].body)
    match rng.randrange(4):
        case 0:
            body["records"] = int(str(body["records"])) + rng.randint(1, 1000)
        case 1:
            body["extra"] = rng.randint(0, 9)
        case 2:
            del body["forms"]
        case _:
            body["dry_run"] = not body["dry_run"]
    return _with(i, dataclasses.replace(CHAIN[i], body=body)), list(CPS), HUB, {"edited"}


def _edit_field(rng: random.Random) -> Mutation:
    i = rng.randrange(50)
    e = CHAIN[i]
    match rng.randrange(5):
        case 0:
            changed, expect = dataclasses.replace(e, at_ms=e.at_ms + rng.choice([-1, 1, 3600_000])), "edited"
        case 1:
            changed, expect = (
                dataclasses.replace(e, kind=rng.choice([k for k in KINDS if k != e.kind])),
                "edited",
            )
        case 2:
            changed, expect = dataclasses.replace(e, seq=e.seq + rng.choice([-1, 1, 100])), "seq_gap"
        case 3:
            changed, expect = dataclasses.replace(e, hash=rng.randbytes(32)), "edited"
        case _:
            changed, expect = dataclasses.replace(e, prev_hash=rng.randbytes(32)), "broken_link"
    return _with(i, changed), list(CPS), HUB, {expect}


def _with(i: int, entry: Entry) -> list[Entry]:
    return [*CHAIN[:i], entry, *CHAIN[i + 1 :]]


def _delete(rng: random.Random) -> Mutation:
    i = rng.randrange(50)
    return [*CHAIN[:i], *CHAIN[i + 1 :]], list(CPS), HUB, {"broken_link", "truncated"}


def _insert(rng: random.Random) -> Mutation:
    i = rng.randrange(50)  # before an existing entry; appending at the end is just an append
    kind, body = event(rng.randrange(1000))
    forged = make_entry(CHAIN[i - 1] if i else None, T0 + i * 1000 - 1, kind, body)
    return [*CHAIN[:i], forged, *CHAIN[i:]], list(CPS), HUB, {"broken_link"}


def _swap(rng: random.Random) -> Mutation:
    i, j = rng.sample(range(50), 2)
    entries = list(CHAIN)
    entries[i], entries[j] = entries[j], entries[i]
    return entries, list(CPS), HUB, {"seq_gap", "broken_link"}


def _truncate(rng: random.Random) -> Mutation:
    keep = rng.randrange(50)
    if rng.random() < 0.5:  # the insider also drops the local checkpoints that covered the tail
        return list(CHAIN[:keep]), [cp for cp in CPS if cp.size <= keep], HUB, {"truncated"}
    return list(CHAIN[:keep]), list(CPS), HUB, {"truncated"}


@functools.cache
def _rewritten_from(i: int) -> tuple[Entry, ...]:
    """The chain an insider gets by editing entry ``i + 1`` and recomputing every hash after it."""
    entries = list(CHAIN[:i])
    for k in range(i, 50):
        e = CHAIN[k]
        body = thaw_body(e.body) | ({"records": -1} if k == i else {})
        entries.append(make_entry(entries[-1] if entries else None, e.at_ms, e.kind, body))
    return tuple(entries)


def _rewrite(rng: random.Random) -> Mutation:
    return list(_rewritten_from(rng.randrange(50))), list(CPS), HUB, {"fork"}


def _fork(rng: random.Random) -> Mutation:
    size = rng.choice([16, 32, 50])
    forked = checkpoint(CHAIN, size, head=rng.randbytes(32), at=rng.randrange(1000))
    return list(CHAIN), [*CPS, forked], HUB, {"fork"}


def _bad_signature(rng: random.Random) -> Mutation:
    i = rng.randrange(3)
    cp = CPS[i]
    match rng.randrange(4):
        case 0:
            sig = bytearray(cp.signature)
            sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
            bad = dataclasses.replace(cp, signature=bytes(sig))
        case 1:
            bad = dataclasses.replace(cp, head=rng.randbytes(32))
        case 2:
            bad = dataclasses.replace(cp, signed_at_ms=cp.signed_at_ms + 1)
        case _:
            bad = sign_checkpoint(lambda m: sign(OTHER_KEY, m), FP, ORIGIN, REGION, cp.size, cp.head, 1)
    return list(CHAIN), [*CPS[:i], bad, *CPS[i + 1 :]], HUB, {"bad_signature"}


def _hub_mismatch(rng: random.Random) -> Mutation:
    hub = checkpoint(CHAIN, rng.randint(1, 50), head=rng.randbytes(32), at=rng.randrange(1000))
    return list(CHAIN), list(CPS), [hub], {"fork"}


MUTATIONS: dict[str, Callable[[random.Random], Mutation]] = {
    "edit_body": _edit_body,
    "edit_field": _edit_field,
    "delete": _delete,
    "insert": _insert,
    "swap": _swap,
    "truncate": _truncate,
    "rewrite": _rewrite,
    "fork": _fork,
    "bad_signature": _bad_signature,
    "hub_mismatch": _hub_mismatch,
}


def test_ten_thousand_random_single_mutations_are_all_detected() -> None:
    rng = random.Random(0xEDC)
    assert verify_chain(CHAIN, CPS, PUB, external=HUB).ok
    names = sorted(MUTATIONS)
    seen: Counter[str] = Counter()
    for i in range(10_000):
        name = rng.choice(names)
        entries, cps, external, expected = MUTATIONS[name](rng)
        report = verify_chain(entries, cps, PUB, external=external)
        assert not report.ok, f"mutation {i} ({name}) was accepted"
        assert expected & kinds(report), f"mutation {i} ({name}) reported {kinds(report)}, not {expected}"
        seen[name] += 1
    assert set(seen) == set(names)
    assert min(seen.values()) > 500
    assert verify_chain(CHAIN, CPS, PUB, external=HUB).ok  # nothing leaked into the shared chain
