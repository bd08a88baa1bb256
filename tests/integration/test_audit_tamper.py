"""The audit log on a real SQLite file: durability, append-only triggers, and an insider's tampering.

Each tamper test writes a log through :class:`AuditLog`, closes it, then edits
the file with raw ``sqlite3`` the way an insider with file access would (after
dropping the triggers) and checks that :func:`verify_data_dir` names the right
problem.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from security._primitives import fingerprint, new_signing_key, public_key_bytes, sign
from security.audit_chain import (
    AuditBodyError,
    Checkpoint,
    CheckpointFieldError,
    Entry,
    entry_hash,
    make_entry,
    sign_checkpoint,
    thaw_body,
)
from security.audit_log import (
    AuditLog,
    AuditLogClosedError,
    AuditLogMissingError,
    AuditLogOwnerError,
    PublicKeyFileError,
    read_public_key,
    render_chain_report,
    verify_data_dir,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = new_signing_key()
PUB = public_key_bytes(KEY)
FP = fingerprint(PUB)
ORIGIN, REGION = "node-3", "cn-east"
T0 = 1_790_000_000_000
N = 20
EVERY = 8  # checkpoints at 8 and 16


class Clock:
    """A wall clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        self.now_ms += 1000
        return self.now_ms


def node_sign(message: bytes) -> bytes:
    return sign(KEY, message)


def open_log(node_dir: Path, *, origin: str = ORIGIN, clock: Clock | None = None) -> AuditLog:
    return AuditLog(
        node_dir / "audit" / "audit.db",
        origin=origin,
        region=REGION,
        sign=node_sign,
        fingerprint=FP,
        wall_ms=clock or Clock(),
        checkpoint_every=EVERY,
    )


def event(i: int) -> tuple[str, dict[str, object]]:
    kinds = ("egress.batch", "key.rotate", "erasure", "admin.roles")
    return kinds[i % 4], {"batch": f"b-{i}", "records": i, "classes": ["ticket"], "policy_version": 3}


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A data directory with the node's public key, as identity setup leaves it."""
    (tmp_path / "identity").mkdir()
    (tmp_path / "identity" / "node.pub").write_text(f"ed25519:{base64.b64encode(PUB).decode()}\n")
    return tmp_path


@pytest.fixture
def hub_checkpoint(node_dir: Path) -> Checkpoint:
    """Write N entries, sign the head, and return that checkpoint as the hub stores it (JSON)."""
    with open_log(node_dir) as audit:
        audit.append_many(event(i) for i in range(N))
        shipped = json.dumps(audit.checkpoint().to_dict())
    return Checkpoint.from_dict(json.loads(shipped))


@contextlib.contextmanager
def insider(node_dir: Path) -> Iterator[sqlite3.Connection]:
    """Raw write access to the audit database, triggers dropped."""
    conn = sqlite3.connect(node_dir / "audit" / "audit.db", isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        yield conn
    finally:
        conn.close()


def stored(conn: sqlite3.Connection, seq: int) -> Entry:
    row = conn.execute("SELECT seq, at_ms, kind, body, prev_hash, hash FROM entries WHERE seq = ?", (seq,))
    s, at_ms, kind, body, prev_hash, hash_ = row.fetchone()
    return Entry(s, at_ms, kind, json.loads(body), prev_hash, hash_)


def problem_kinds(node_dir: Path, external: list[Checkpoint] | None = None) -> set[str]:
    report = verify_data_dir(node_dir, external=external or [])
    assert not report.ok
    return {p.kind for p in report.problems}


# --- honest use -------------------------------------------------------------------------------


def test_untouched_log_verifies(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    report = verify_data_dir(node_dir, external=[hub_checkpoint])
    assert report.ok, report.problems
    assert report.entries == N
    assert report.head == hub_checkpoint.head
    assert report.latest_checkpoint == hub_checkpoint
    assert report.checkpoints_checked == 3  # 8, 16 and the explicit one (the hub's copy is the same)
    text = render_chain_report(report)
    assert text.startswith("audit log: OK\n")
    assert f"entries: {N}\n" in text


def test_checkpoints_are_signed_automatically_and_on_demand(node_dir: Path) -> None:
    with open_log(node_dir) as audit:
        assert audit.latest_checkpoint() is None
        entries = audit.append_many(event(i) for i in range(N))
        latest = audit.latest_checkpoint()
        assert latest is not None
        assert latest.size == 16
        assert latest.head == entries[15].hash
        stats = audit.statistics()
        assert (stats.entries, stats.head_hex, stats.latest_checkpoint_size) == (
            N,
            entries[-1].hash.hex(),
            16,
        )
        cp = audit.checkpoint()
        assert (cp.origin, cp.region, cp.size, cp.head) == (ORIGIN, REGION, N, entries[-1].hash)
        assert audit.latest_checkpoint() == cp


def test_append_survives_reopen_and_continues_the_chain(node_dir: Path) -> None:
    clock = Clock()
    with open_log(node_dir, clock=clock) as audit:
        first = audit.append("key.create", {"key": "k-1"})
    with open_log(node_dir, clock=clock) as audit:
        second = audit.append("key.rotate", {"key": "k-1", "version": 2})
        assert audit.entries() == [first, second]
    assert second.seq == 2
    assert second.prev_hash == first.hash
    assert verify_data_dir(node_dir).ok


def test_appended_entry_survives_a_killed_process(tmp_path: Path) -> None:
    script = f"""
import base64, os, signal
from pathlib import Path
from security._primitives import fingerprint, new_signing_key, public_key_bytes, sign
from security.audit_log import AuditLog
key = new_signing_key()
pub = public_key_bytes(key)
data = Path({str(tmp_path)!r})
(data / "identity").mkdir()
(data / "identity" / "node.pub").write_text("ed25519:" + base64.b64encode(pub).decode())
audit = AuditLog(data / "audit" / "audit.db", origin="n1", region="r1",
                 sign=lambda m: sign(key, m), fingerprint=fingerprint(pub), checkpoint_every=2)
audit.open()
for i in range(3):
    audit.append("erasure", {{"subject": f"s-{{i}}"}})
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    report = verify_data_dir(tmp_path)
    assert report.ok, report.problems
    assert report.entries == 3
    assert report.latest_checkpoint is not None
    assert report.latest_checkpoint.size == 2


def test_entries_filter_by_time_and_kind(node_dir: Path) -> None:
    with open_log(node_dir) as audit:
        entries = audit.append_many(event(i) for i in range(8))
        assert audit.entries() == entries
        assert audit.entries(kinds={"erasure"}) == [entries[2], entries[6]]
        assert audit.entries(kinds=()) == []
        assert audit.entries(since_ms=entries[3].at_ms, until_ms=entries[5].at_ms) == entries[3:5]
        assert audit.entries(since_ms=entries[6].at_ms, kinds=["erasure", "admin.roles"]) == entries[6:8]


def test_concurrent_appends_build_one_chain(node_dir: Path) -> None:
    with open_log(node_dir) as audit:
        threads = [
            threading.Thread(
                target=lambda t=t: [audit.append("egress.batch", {"t": t, "i": i}) for i in range(25)]
            )
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    report = verify_data_dir(node_dir)
    assert report.ok
    assert report.entries == 100


def test_a_bad_event_in_a_batch_stores_nothing(node_dir: Path) -> None:
    with open_log(node_dir) as audit:
        with pytest.raises(AuditBodyError, match=r"body\['ids'\]"):
            audit.append_many([event(0), ("erasure", {"ids": {1, 2}})])
        assert audit.statistics().entries == 0


def test_triggers_refuse_to_rewrite_history(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    conn = sqlite3.connect(node_dir / "audit" / "audit.db", isolation_level=None)
    try:
        for sql in (
            "UPDATE entries SET body = '{}' WHERE seq = 3",
            "DELETE FROM entries WHERE seq = 20",
            "UPDATE checkpoints SET size = 99",
            "DELETE FROM checkpoints",
            "UPDATE meta SET value = 'x'",
            "INSERT INTO entries VALUES (40, 0, 'erasure', '{}', x'00', x'00')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert verify_data_dir(node_dir, external=[hub_checkpoint]).ok


def test_closed_log_and_foreign_owner_are_refused(node_dir: Path) -> None:
    audit = open_log(node_dir)
    with pytest.raises(AuditLogClosedError, match="not open"):
        audit.append("erasure", {})
    with audit:
        audit.append("erasure", {})
    with pytest.raises(AuditLogOwnerError, match="'node-3'"):
        open_log(node_dir, origin="node-4").open()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"origin": "node/3"}, "origin"),
        ({"region": ""}, "region"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
    ],
)
def test_bad_settings_are_refused_up_front(tmp_path: Path, change: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {"origin": ORIGIN, "region": REGION, "sign": node_sign, "fingerprint": FP}
    with pytest.raises(CheckpointFieldError, match=field):
        AuditLog(tmp_path / "audit.db", **(settings | change))  # type: ignore[arg-type]  # kwargs built on purpose
    assert not (tmp_path / "audit.db").exists()


def test_verify_refuses_a_missing_log_without_creating_one(node_dir: Path) -> None:
    with pytest.raises(AuditLogMissingError, match=str(node_dir / "audit" / "audit.db")):
        verify_data_dir(node_dir)
    assert not (node_dir / "audit").exists()


def test_public_key_file_is_read_as_identity_writes_it(node_dir: Path) -> None:
    assert read_public_key(node_dir / "identity" / "node.pub") == PUB
    with pytest.raises(PublicKeyFileError, match="not a regular file"):
        read_public_key(node_dir / "identity")


def test_verify_writes_nothing_and_needs_only_the_public_key(
    node_dir: Path, hub_checkpoint: Checkpoint
) -> None:
    db = node_dir / "audit" / "audit.db"
    before = db.read_bytes()
    (node_dir / "identity" / "node.pub").unlink()
    with pytest.raises(PublicKeyFileError, match=r"node\.pub"):
        verify_data_dir(node_dir)
    assert verify_data_dir(node_dir, public_key=PUB, external=[hub_checkpoint]).ok
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ed25519:",
        "rsa:AAAA",
        "ed25519:not base64!",
        "ed25519:AAAA",
        "ed25519:" + base64.b64encode(PUB).decode().rstrip("="),
        "\xff",
    ],
)
def test_malformed_public_key_file_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.pub"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PublicKeyFileError, match=str(path)):
        read_public_key(path)


# --- an insider's tampering -------------------------------------------------------------------


def test_edited_entry_is_detected(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        body = thaw_body(stored(conn, 5).body) | {"records": 0}
        conn.execute("UPDATE entries SET body = ? WHERE seq = 5", (json.dumps(body),))
    report = verify_data_dir(node_dir, external=[hub_checkpoint])
    assert [(p.kind, p.seq) for p in report.problems] == [("edited", 5)]
    assert "FAILED (1 problems)" in render_chain_report(report)


def test_deleted_entry_is_detected(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 7")
    assert {"broken_link", "seq_gap"} <= problem_kinds(node_dir, [hub_checkpoint])


def test_inserted_entry_is_detected(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        forged = make_entry(stored(conn, 10), T0, "key.shred", {"key": "k-evil"})
        conn.execute("UPDATE entries SET seq = -(seq + 1) WHERE seq > 10")  # make room at seq 11
        conn.execute("UPDATE entries SET seq = -seq WHERE seq < 0")
        conn.execute(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
            (
                forged.seq,
                forged.at_ms,
                forged.kind,
                json.dumps(thaw_body(forged.body)),
                forged.prev_hash,
                forged.hash,
            ),
        )
    found = problem_kinds(node_dir, [hub_checkpoint])
    assert "broken_link" in found
    assert verify_data_dir(node_dir).entries == N + 1


def test_reordered_entries_are_detected(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    select = "SELECT at_ms, kind, body, prev_hash, hash FROM entries WHERE seq = ?"
    with insider(node_dir) as conn:
        four = conn.execute(select, (4,)).fetchone()
        nine = conn.execute(select, (9,)).fetchone()
        for seq, row in ((4, nine), (9, four)):
            conn.execute(
                "UPDATE entries SET at_ms = ?, kind = ?, body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (*row, seq),
            )
    assert {"edited", "broken_link"} <= problem_kinds(node_dir, [hub_checkpoint])


def test_truncation_is_caught_by_the_hubs_checkpoint(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        conn.execute("DELETE FROM entries WHERE seq > 12")
        conn.execute("DELETE FROM checkpoints WHERE size > 12")
    assert verify_data_dir(node_dir).ok  # the node's file alone now looks like a shorter, honest log
    report = verify_data_dir(node_dir, external=[hub_checkpoint])
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", N)]
    assert "13..20" in report.problems[0].message


def test_second_signed_checkpoint_is_a_fork(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    other_head = entry_hash(bytes(32), 16, T0, "egress.batch", {"records": 1})
    forked = sign_checkpoint(node_sign, FP, ORIGIN, REGION, 16, other_head, T0 + 99)
    with insider(node_dir) as conn:
        conn.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
            (forked.size, forked.head, forked.signed_at_ms, forked.key_fingerprint, forked.signature),
        )
    report = verify_data_dir(node_dir, external=[hub_checkpoint])
    assert {p.kind for p in report.problems} == {"fork"}
    assert {p.seq for p in report.problems} == {16}


def test_altered_checkpoint_is_a_bad_signature(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        conn.execute("UPDATE checkpoints SET signed_at_ms = signed_at_ms + 1 WHERE size = 8")
    assert problem_kinds(node_dir, [hub_checkpoint]) == {"bad_signature"}


def test_unreadable_rows_are_reported_not_crashed_on(node_dir: Path, hub_checkpoint: Checkpoint) -> None:
    with insider(node_dir) as conn:
        conn.execute("UPDATE entries SET body = 'not json' WHERE seq = 2")
        conn.execute("UPDATE entries SET hash = 'text' WHERE seq = 3")
    assert {"edited", "broken_link"} <= problem_kinds(node_dir, [hub_checkpoint])
