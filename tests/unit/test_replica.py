"""The SQLite replica adapter: local versions, remote merge, gap-free progress."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from sync.adapters.replica import REPLICA_TABLES, contiguous_seq, merge_op, progress, record_local
from sync.crdt import FieldChange, Op, Register, SetDelta, Version
from sync.entities import TICKET
from sync.entity import MergeKind, sqlite_columns


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", isolation_level=None)
    cols = ", ".join(f"{name} {kind}" for name, kind in sqlite_columns(TICKET).items() if name != "id")
    c.execute(f"CREATE TABLE tickets (id TEXT PRIMARY KEY, {cols})")
    for statement in REPLICA_TABLES:
        c.execute(statement)
    yield c
    c.close()


def reg(value: object, hlc: int, node: str = "a") -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, Version(hlc, node)))  # type: ignore[arg-type]


def op(seq: int, hlc: int, changes: dict[str, FieldChange], origin: str = "a", rid: str = "T1") -> Op:
    return Op("ticket", rid, origin, seq, hlc, changes)


def subject(conn: sqlite3.Connection) -> object:
    return conn.execute("SELECT subject FROM tickets WHERE id = 'T1'").fetchone()[0]


def test_a_newer_write_wins_and_an_older_one_is_stale(conn: sqlite3.Connection) -> None:
    assert merge_op(conn, TICKET, op(1, 100, {"subject": reg("first", 100)})).applied_fields == 1
    assert merge_op(conn, TICKET, op(2, 50, {"subject": reg("older", 50)})).stale_fields == 1
    assert subject(conn) == "first"
    merge_op(conn, TICKET, op(3, 200, {"subject": reg("newer", 200)}))
    assert subject(conn) == "newer"


def test_equal_clocks_are_broken_by_node_id(conn: sqlite3.Connection) -> None:
    merge_op(conn, TICKET, op(1, 100, {"subject": reg("from b", 100, "b")}, origin="b"))
    merge_op(conn, TICKET, op(1, 100, {"subject": reg("from a", 100, "a")}, origin="a"))
    assert subject(conn) == "from b"


def test_a_duplicate_is_recognised_and_changes_nothing(conn: sqlite3.Connection) -> None:
    first = merge_op(conn, TICKET, op(1, 100, {"subject": reg("x", 100)}))
    again = merge_op(conn, TICKET, op(1, 100, {"subject": reg("x", 100)}))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert progress(conn)["a"] == (1, 1, 1)


def test_progress_stays_gap_free_when_operations_arrive_out_of_order(conn: sqlite3.Connection) -> None:
    for seq in (3, 1, 5):
        merge_op(conn, TICKET, op(seq, seq, {"subject": reg(str(seq), seq)}))
    assert contiguous_seq(conn, "a") == 1
    merge_op(conn, TICKET, op(2, 2, {"subject": reg("2", 2)}))
    assert contiguous_seq(conn, "a") == 3
    merge_op(conn, TICKET, op(4, 4, {"subject": reg("4", 4)}))
    assert contiguous_seq(conn, "a") == 5
    assert progress(conn)["a"] == (5, 5, 5)
    assert conn.execute("SELECT count(*) FROM replication_seen").fetchone()[0] == 0


def test_fields_a_newer_peer_declares_are_kept_out(conn: sqlite3.Connection) -> None:
    outcome = merge_op(conn, TICKET, op(1, 1, {"subject": reg("s", 1), "from_the_future": reg(1, 1)}))
    assert (outcome.applied_fields, outcome.unknown_fields) == (1, 1)


def test_a_local_write_records_versions_and_set_deltas(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO tickets (id) VALUES ('T1')")
    changes = record_local(
        conn, TICKET, "T1", {"subject": "s", "tags": frozenset({"a", "b"})}, Version(10, "n")
    )
    assert changes["subject"].register == Register("s", Version(10, "n"))
    delta = changes["tags"].delta
    assert isinstance(delta, SetDelta)
    assert set(delta.add) == {"a", "b"}
    # a remote write older than the local one loses
    merge_op(conn, TICKET, op(1, 5, {"subject": reg("older", 5, "z")}, origin="z"))
    assert conn.execute("SELECT hlc, node FROM field_versions WHERE field = 'subject'").fetchone() == (
        10,
        "n",
    )


def test_removing_one_tag_keeps_the_other_everywhere(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO tickets (id) VALUES ('T1')")
    first = record_local(conn, TICKET, "T1", {"tags": frozenset({"a", "b"})}, Version(10, "n"))
    second = record_local(conn, TICKET, "T1", {"tags": frozenset({"a"})}, Version(11, "n"))
    other = sqlite3.connect(":memory:", isolation_level=None)
    cols = ", ".join(f"{name} {kind}" for name, kind in sqlite_columns(TICKET).items() if name != "id")
    other.execute(f"CREATE TABLE tickets (id TEXT PRIMARY KEY, {cols})")
    for statement in REPLICA_TABLES:
        other.execute(statement)
    merge_op(other, TICKET, Op("ticket", "T1", "n", 2, 11, second))
    merge_op(other, TICKET, Op("ticket", "T1", "n", 1, 10, first))
    assert other.execute("SELECT tags FROM tickets").fetchone()[0] == '["a"]'
    other.close()
