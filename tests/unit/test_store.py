"""The SQLite adapter on a real database in ``tmp_path``: migrations, group commit, the change log."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_node.store import (
    NotFoundError,
    Operation,
    Store,
    StoreClosedError,
    StoreUnavailableError,
    Synchronous,
    Tx,
    migrate,
)
from sync.entities import CALL_RECORD, DEPARTMENT, TICKET
from sync.entity import Value, encode_fields, sqlite_columns
from sync.hlc import HLCTimestamp

NODE = "node-a"
WALL_MS = 1_772_442_000_000  # 2026-03-02T09:00:00Z
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIGRATIONS = (
    "0001_entities_changelog_idempotency",
    "0002_replica_metadata",
    "0003_call_records",
    "0004_call_recordings",
)


class BoomError(Exception):
    """A job's own failure."""


def open_store(path: Path, *, synchronous: Synchronous = "FULL", wall_ms: int = WALL_MS) -> Store:
    store = Store(path, node_id=NODE, synchronous=synchronous, wall_ms=lambda: wall_ms)
    store.open()
    return store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "edgecare.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = open_store(db_path)
    try:
        yield s
    finally:
        s.close()


def department(dept_id: str, **extra: Value) -> dict[str, Value]:
    return {"id": dept_id, "name": f"Team {dept_id}", "created_at": AT, **extra}


def insert(entity_values: dict[str, Value]) -> Callable[[Tx], Operation]:
    return lambda tx: tx.insert(DEPARTMENT, entity_values)


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file with a connection of our own, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def all_operations(store: Store) -> list[Operation]:
    return await store.read(lambda r: r.operations(limit=10_000))


# --- migrations and pragmas --------------------------------------------------------------------


def test_migrations_run_once_and_are_recorded(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_node.store")
    open_store(db_path).close()
    assert [r.getMessage() for r in caplog.records] == [f"schema migration applied: {m}" for m in MIGRATIONS]
    caplog.clear()
    open_store(db_path).close()
    assert caplog.records == []
    assert query(db_path, "SELECT migration_set, name FROM _sqlite_migrations ORDER BY id") == [
        ("edgecare-node", m) for m in MIGRATIONS
    ]
    tables = {name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tickets", "ticket_comments", "customers", "departments", "changelog", "node_meta"} <= tables
    assert {"field_versions", "set_states", "replication_progress", "replication_seen"} <= tables


def test_migrate_on_a_migrated_database_has_nothing_to_do(db_path: Path) -> None:
    open_store(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn) == []
    finally:
        conn.close()


def test_0003_adds_call_records_to_a_database_created_before_it(db_path: Path) -> None:
    open_store(db_path).close()
    conn = sqlite3.connect(db_path)
    with conn:  # the state a database created by 0001 of the previous release is in
        conn.execute("DROP TABLE call_records")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0003_call_records'")
    conn.close()
    open_store(db_path).close()
    columns = [name for (_, name, *_) in query(db_path, "PRAGMA table_info(call_records)")]
    assert columns == [f.name for f in CALL_RECORD.fields]
    indexes = {name for (_, name, *_) in query(db_path, "PRAGMA index_list(call_records)")}
    assert {f"idx_call_records_{f.name}" for f in CALL_RECORD.fields if f.indexed} <= indexes


def test_a_database_from_a_newer_program_is_refused(db_path: Path) -> None:
    open_store(db_path).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('edgecare-node', '0099_future', '2030-01-01')"
        )
    conn.close()
    store = Store(db_path, node_id=NODE)
    with pytest.raises(StoreUnavailableError, match=r"0099_future\); upgrade edgecare$"):
        store.open()
    store.close()


def test_journal_mode_is_wal(store: Store, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_synchronous_is_set_on_the_writer_connection(
    db_path: Path, mode: Synchronous, level: int
) -> None:
    store = open_store(db_path, synchronous=mode)
    try:
        on_writer = await store.write(
            lambda tx: tx.conn.execute("PRAGMA synchronous").fetchone()[0], actor="t"
        )
        on_reader = await store.read(lambda r: r.conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        store.close()
    assert (on_writer, on_reader) == (level, level)


async def test_writes_run_inside_begin_immediate(store: Store) -> None:
    assert await store.write(lambda tx: tx.conn.in_transaction, actor="t") is True


# --- data survives ---------------------------------------------------------------------------------


async def test_reopening_keeps_data(db_path: Path) -> None:
    record: dict[str, Value] = {
        "id": "T1",
        "type": "fault",
        "subject": "no internet",
        "tags": frozenset({"dsl", "工单"}),
        "created_at": AT,
        "archived": False,
        "tier": 1,
        "sla": {"version": 1, "nested": {"x": [1, 2.5, None]}},
    }
    store = open_store(db_path)
    await store.write(lambda tx: tx.insert(TICKET, record), actor="ana")
    store.close()

    store = open_store(db_path)
    try:
        got = await store.read(lambda r: r.require(TICKET, "T1"))
        missing = await store.read(lambda r: r.get(TICKET, "T2"))
    finally:
        store.close()
    assert {k: got[k] for k in record} == record
    assert all(v is None for k, v in got.items() if k not in record)
    assert set(got) == {f.name for f in TICKET.fields}
    assert missing is None


async def test_require_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"^ticket 'T9' not found$"):
        await store.read(lambda r: r.require(TICKET, "T9"))


async def test_update_sets_and_logs_exactly_the_fields_given(store: Store) -> None:
    await store.write(insert(department("d1")), actor="ana")
    op = await store.write(lambda tx: tx.update(DEPARTMENT, "d1", {"escalates_to": "d2"}), actor="bob")
    assert op is not None
    assert op.fields == {"escalates_to": "d2"}
    assert op.actor == "bob"
    assert await store.write(lambda tx: tx.update(DEPARTMENT, "d1", {}), actor="bob") is None
    got = await store.read(lambda r: r.require(DEPARTMENT, "d1"))
    assert got["escalates_to"] == "d2"
    assert [o.seq for o in await all_operations(store)] == [1, 2]


async def test_update_of_a_missing_record_fails_and_leaves_no_operation(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"^department 'nope' not found$"):
        await store.write(lambda tx: tx.update(DEPARTMENT, "nope", {"name": "x"}), actor="bob")
    assert await all_operations(store) == []


# --- the change log --------------------------------------------------------------------------------


async def test_operations_decode_what_was_written(store: Store) -> None:
    values = department("d1", escalates_to="tier2")
    written = await store.write(insert(values), actor="ana")
    (read,) = await all_operations(store)
    assert read == written
    assert read.seq == 1
    assert read.entity == "department"
    assert read.record_id == "d1"
    assert read.fields == encode_fields(DEPARTMENT, values)
    assert read.fields["created_at"] == "2026-03-02T09:00:00.000000Z"
    assert read.origin == NODE
    assert read.actor == "ana"
    assert read.hlc == HLCTimestamp(WALL_MS, 0)


async def test_operations_page_by_sequence(store: Store) -> None:
    for i in range(5):
        await store.write(insert(department(f"d{i}")), actor="ana")
    page = await store.read(lambda r: r.operations(after_seq=2, limit=2))
    assert [(o.seq, o.record_id) for o in page] == [(3, "d2"), (4, "d3")]


async def test_concurrent_writes_get_gap_free_sequence_numbers_and_increasing_hlcs(store: Store) -> None:
    results = await asyncio.gather(
        *(store.write(insert(department(f"d{i:03}")), actor="ana") for i in range(200))
    )
    ops = await all_operations(store)
    assert [o.seq for o in ops] == list(range(1, 201))
    assert all(a.hlc < b.hlc for a, b in itertools.pairwise(ops))
    assert sorted(r.seq for r in results) == list(range(1, 201))
    assert {o.record_id for o in ops} == {f"d{i:03}" for i in range(200)}
    stats = store.statistics()
    assert (stats.jobs, stats.failed_jobs, stats.last_seq) == (200, 0, 200)
    assert stats.commits <= 200  # group commit: usually far fewer


async def test_a_failing_job_is_rolled_back_while_its_batch_commits(store: Store) -> None:
    entered, release = threading.Event(), threading.Event()

    def gate(tx: Tx) -> None:  # holds the writer so the next jobs queue up as one batch
        entered.set()
        release.wait(10)

    def failing(tx: Tx) -> None:
        tx.insert(DEPARTMENT, department("bad"))
        raise BoomError("the job failed after writing")

    gate_write = asyncio.create_task(store.write(gate, actor="t"))
    assert await asyncio.to_thread(entered.wait, 10)
    jobs = [
        asyncio.create_task(store.write(insert(department("d1")), actor="t")),
        asyncio.create_task(store.write(failing, actor="t")),
        asyncio.create_task(store.write(insert(department("d2")), actor="t")),
    ]
    await asyncio.sleep(0)  # one turn of the loop: each task queues its job
    assert store.statistics().queued == 3
    release.set()
    await gate_write
    first, failed, last = await asyncio.gather(*jobs, return_exceptions=True)

    assert isinstance(failed, BoomError)
    assert isinstance(first, Operation)
    assert isinstance(last, Operation)
    assert (first.seq, last.seq) == (1, 2)
    stats = store.statistics()
    assert (stats.commits, stats.jobs, stats.failed_jobs) == (2, 4, 1)  # the gate, then one batch of 3
    ids = await store.read(lambda r: [d["id"] for d in r.select(DEPARTMENT, "1 = 1", (), tail="ORDER BY id")])
    assert ids == ["d1", "d2"]
    assert [(o.seq, o.record_id) for o in await all_operations(store)] == [(1, "d1"), (2, "d2")]


async def test_a_duplicate_insert_fails_alone(store: Store) -> None:
    await store.write(insert(department("d1")), actor="t")
    with pytest.raises(sqlite3.IntegrityError):
        await store.write(insert(department("d1")), actor="t")
    await store.write(insert(department("d2")), actor="t")
    assert [o.seq for o in await all_operations(store)] == [1, 2]


async def test_the_hlc_is_restored_after_reopen(db_path: Path) -> None:
    store = open_store(db_path, wall_ms=WALL_MS)
    for i in range(3):
        await store.write(insert(department(f"d{i}")), actor="t")
    old = await all_operations(store)
    store.close()

    store = open_store(db_path, wall_ms=WALL_MS - 60_000)  # the wall clock stepped back a minute
    try:
        assert store.statistics().last_seq == 3
        new = await store.write(insert(department("d9")), actor="t")
    finally:
        store.close()
    assert new.seq == 4
    assert new.hlc > max(o.hlc for o in old)
    assert new.hlc.wall_ms == WALL_MS


# --- closing ---------------------------------------------------------------------------------------


async def test_writes_after_close_raise(db_path: Path) -> None:
    store = open_store(db_path)
    store.close()
    store.close()  # closing twice is fine
    with pytest.raises(StoreClosedError, match=r"^the store is closed; the write was not applied$"):
        await store.write(insert(department("d1")), actor="t")


async def test_close_finishes_queued_writes(db_path: Path) -> None:
    store = open_store(db_path)
    pending = [asyncio.create_task(store.write(insert(department(f"d{i}")), actor="t")) for i in range(20)]
    await asyncio.sleep(0)  # one turn of the loop: the jobs are queued
    store.close()
    results = await asyncio.gather(*pending)
    assert sorted(r.seq for r in results) == list(range(1, 21))
    assert query(db_path, "SELECT count(*) FROM changelog") == [(20,)]


def test_an_unusable_path_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    store = Store(tmp_path / "a-directory.db", node_id=NODE)
    with pytest.raises(StoreUnavailableError, match=r"a-directory\.db is unavailable"):
        store.open()
    store.close()


# --- 0004: call recordings -------------------------------------------------------------------------


async def test_0004_adds_recording_uri_to_an_older_call_records_table(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_store(db_path).close()
    old_columns = {n: t for n, t in sqlite_columns(CALL_RECORD).items() if n != "recording_uri"}
    conn = sqlite3.connect(db_path)
    with conn:  # call_records as 0003 of the previous release created it, holding one record
        conn.execute("DROP TABLE call_records")
        columns = ", ".join(f"{n} {t}{' PRIMARY KEY' if n == 'id' else ''}" for n, t in old_columns.items())
        conn.execute(f"CREATE TABLE call_records ({columns})")
        conn.execute("INSERT INTO call_records (id, outcome) VALUES ('call-1', 'answered')")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_call_recordings'")
    conn.close()
    assert "recording_uri" not in [
        name for (_, name, *_) in query(db_path, "PRAGMA table_info(call_records)")
    ]

    caplog.set_level(logging.INFO, logger="edge_node.store")
    caplog.clear()  # only what reopening the old database logs
    store = open_store(db_path)
    try:
        applied = [r.getMessage() for r in caplog.records if r.name == "edge_node.store"]
        assert "schema migration applied: 0004_call_recordings" in applied
        table = query(db_path, "PRAGMA table_info(call_records)")
        assert [name for (_, name, *_) in table] == [f.name for f in CALL_RECORD.fields]
        assert [kind for (_, name, kind, *_) in table if name == "recording_uri"] == ["TEXT"]
        record = await store.read(lambda r: r.require(CALL_RECORD, "call-1"))
        assert (record["outcome"], record["recording_uri"]) == ("answered", None)
        uri = "s3://recordings-eu-de/call-1.opus"
        await store.write(lambda tx: tx.update(CALL_RECORD, "call-1", {"recording_uri": uri}), actor="t")
        assert query(db_path, "SELECT recording_uri FROM call_records") == [(uri,)]
    finally:
        store.close()


def test_0004_on_a_database_that_has_the_column_changes_nothing(db_path: Path) -> None:
    open_store(db_path).close()
    before = query(db_path, "PRAGMA table_info(call_records)")
    conn = sqlite3.connect(db_path)
    with conn:  # applied again, as if it never ran: the column is there already
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_call_recordings'")
    conn.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn) == ["0004_call_recordings"]
    finally:
        conn.close()
    assert query(db_path, "PRAGMA table_info(call_records)") == before
