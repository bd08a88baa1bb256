"""SQLite adapter: one writer thread with group commit, readers on worker threads.

Durability: the database runs in WAL mode. ``synchronous=FULL`` (the default)
makes SQLite fsync the WAL at every commit, so an answered write survives a
process crash *and* a power loss (as far as the disk honours flushes).
``synchronous=NORMAL`` also survives a process crash (the WAL is in the OS page
cache) but a power loss may roll back the last transactions since the previous
checkpoint. A single writer thread takes every queued write, runs each in its
own SAVEPOINT inside one ``BEGIN IMMEDIATE`` transaction and commits them
together: one fsync covers the whole batch, which is how FULL durability keeps
up with concurrent clients. A request's future resolves only after COMMIT
returns, so nothing is acknowledged before it is on disk.

Every mutation made through :class:`Tx` appends its change-log operation in the
same transaction (the outbox), with a hybrid-logical-clock timestamp, the
origin node and a gap-free per-node sequence number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import msgpack
import sqlite_utils
from sqlite_utils.migrations import Migrations

from edge_node.errors import EdgeNodeError
from sync.adapters.replica import REPLICA_TABLES, MergeOutcome, merge_op, record_local
from sync.crdt import Op, Version
from sync.entities import CALL_RECORD, ENTITIES
from sync.entity import Entity, StorageValue, Value, encode_fields, from_storage, sqlite_columns
from sync.hlc import HLCTimestamp, HybridLogicalClock
from sync.transport.codec import decode_changes, encode_changes

log = logging.getLogger(__name__)

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL"]


class StoreError(EdgeNodeError):
    """Base for storage failures."""


class StoreUnavailableError(StoreError):
    """The database cannot be opened or written."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"database {path} is unavailable: {reason}")


class StoreClosedError(StoreError):
    """A write arrived after the store began shutting down."""

    def __init__(self) -> None:
        super().__init__("the store is closed; the write was not applied")


class NotFoundError(EdgeNodeError):
    """No record of that entity has that id."""

    def __init__(self, entity: str, record_id: str) -> None:
        self.entity, self.record_id = entity, record_id
        super().__init__(f"{entity} {record_id!r} not found")


@dataclass(frozen=True, slots=True)
class Operation:
    """One change-log entry: the fields a write set on one record."""

    seq: int
    entity: str
    record_id: str
    fields: dict[str, Any]
    hlc: HLCTimestamp
    origin: str
    actor: str


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters for /readyz, logs and benchmarks."""

    commits: int
    jobs: int
    failed_jobs: int
    queued: int
    last_seq: int


# --- migrations -----------------------------------------------------------------------
# Versioned with sqlite-utils' migration sets: each step runs once, in registration
# order, in a transaction together with its record in _sqlite_migrations.

MIGRATIONS = Migrations("edgecare-node")


@MIGRATIONS(name="0001_entities_changelog_idempotency")
def _m0001(db: sqlite_utils.Database) -> None:
    for entity in ENTITIES:
        table = db.table(entity.table)
        table.create(sqlite_columns(entity), pk="id")
        for f in entity.fields:
            if f.indexed:
                table.create_index([f.name])
    db.execute(
        """CREATE TABLE changelog (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            entity TEXT NOT NULL,
            record_id TEXT NOT NULL,
            fields BLOB NOT NULL,
            hlc INTEGER NOT NULL,
            origin TEXT NOT NULL,
            actor TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX changelog_record ON changelog (entity, record_id)")
    db.execute(
        """CREATE TABLE idempotency_keys (
            principal TEXT NOT NULL,
            key TEXT NOT NULL,
            request_digest TEXT NOT NULL,
            entity TEXT NOT NULL,
            record_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (principal, key)
        )"""
    )
    db.execute("CREATE TABLE node_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@MIGRATIONS(name="0002_replica_metadata")
def _m0002(db: sqlite_utils.Database) -> None:
    for statement in REPLICA_TABLES:
        db.execute(statement)
    # The CRDT form of each operation (versions, set deltas), what replication ships.
    db.execute("ALTER TABLE changelog ADD COLUMN changes BLOB")


@MIGRATIONS(name="0003_call_records")
def _m0003(db: sqlite_utils.Database) -> None:
    # 0001 creates the table of every entity declared when a database is new, so a database
    # created by this release has call_records already; this brings older databases up to date.
    _create_entity_table(db, CALL_RECORD)


@MIGRATIONS(name="0004_call_recordings")
def _m0004(db: sqlite_utils.Database) -> None:
    # Where the region's recording store keeps a call's recording (media: it stays in the region).
    # A database whose call_records table 0001 or 0003 created in this release has the column.
    _add_declared_column(db, CALL_RECORD, "recording_uri")


def _add_declared_column(db: sqlite_utils.Database, entity: Entity, name: str) -> None:
    """Add one declared field's column, typed as the declaration derives it; a no-op if present."""
    table = db.table(entity.table)
    if name not in table.columns_dict:
        column_type = sqlite_columns(entity)[name]
        db.execute(f"ALTER TABLE {entity.table} ADD COLUMN {name} {column_type}")


def _create_entity_table(db: sqlite_utils.Database, entity: Entity) -> None:
    """The table and indexes derived from a declaration, as 0001 creates them; a no-op if present."""
    table = db.table(entity.table)
    table.create(sqlite_columns(entity), pk="id", if_not_exists=True)
    for f in entity.fields:
        if f.indexed:
            table.create_index([f.name], if_not_exists=True)


def migrate(conn: sqlite3.Connection, migrations: Migrations = MIGRATIONS) -> list[str]:
    """Apply pending migrations; refuse a database written by a newer program."""
    db = sqlite_utils.Database(conn)
    known = {m.name for m in migrations._migrations}
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise StoreError(
            f"database {conn!r} has migrations this program does not know ({', '.join(unknown)}); "
            "upgrade edgecare"
        )
    pending = [m.name for m in migrations.pending(db)]
    migrations.apply(db)
    for name in pending:
        log.info("schema migration applied: %s", name)
    return pending


# --- transactions ---------------------------------------------------------------------


class Reader:
    """Read access on one connection; also the read half of :class:`Tx`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, entity: Entity, record_id: str) -> dict[str, Value] | None:
        """The record with that id, as core values, or None."""
        cur = self.conn.execute(f"SELECT * FROM {entity.table} WHERE id = ?", (record_id,))  # noqa: S608 - table names come from declarations
        row = cur.fetchone()
        if row is None:
            return None
        return _row_values(entity, cur.description, row)

    def require(self, entity: Entity, record_id: str) -> dict[str, Value]:
        """The record with that id, or :class:`NotFoundError`."""
        record = self.get(entity, record_id)
        if record is None:
            raise NotFoundError(entity.name, record_id)
        return record

    def select(
        self, entity: Entity, where: str, params: Sequence[object], *, tail: str = ""
    ) -> list[dict[str, Value]]:
        """Records matching a WHERE clause built by the caller from declared names only."""
        sql = f"SELECT * FROM {entity.table} WHERE {where} {tail}"  # noqa: S608 - clauses are built from declared names; values are bound
        cur = self.conn.execute(sql, tuple(params))
        return [_row_values(entity, cur.description, row) for row in cur.fetchall()]

    def operations(self, *, after_seq: int = 0, limit: int = 1000) -> list[Operation]:
        """Change-log operations in sequence order."""
        rows = self.conn.execute(
            "SELECT seq, entity, record_id, fields, hlc, origin, actor FROM changelog "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            Operation(seq, entity, rid, msgpack.unpackb(blob), HLCTimestamp.decode(hlc), origin, actor)
            for seq, entity, rid, blob, hlc, origin, actor in rows
        ]

    def crdt_ops(self, *, after_seq: int = 0, limit: int = 1000) -> list[Op]:
        """Change-log operations in their replicated (CRDT) form, in sequence order."""
        rows = self.conn.execute(
            "SELECT seq, entity, record_id, hlc, origin, changes FROM changelog "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            Op(entity, rid, origin, seq, hlc, decode_changes(changes))
            for seq, entity, rid, hlc, origin, changes in rows
        ]

    def meta(self, key: str) -> str | None:
        """A node metadata value."""
        row = self.conn.execute("SELECT value FROM node_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])


def _row_values(entity: Entity, description: Any, row: Sequence[Any]) -> dict[str, Value]:
    names = [d[0] for d in description]
    return {name: from_storage(entity.field(name), value) for name, value in zip(names, row, strict=True)}


class Tx(Reader):
    """The writer's view inside one job: reads, plus writes that log themselves."""

    def __init__(self, conn: sqlite3.Connection, store: Store, actor: str) -> None:
        super().__init__(conn)
        self._store = store
        self.actor = actor

    def insert(self, entity: Entity, values: Mapping[str, Value]) -> Operation:
        """Insert a new record and log every field set."""
        stored = encode_fields(entity, values)  # once: the row, the log and the versions share it
        columns = list(stored)
        self.conn.execute(
            f"INSERT INTO {entity.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608 - declared names
            list(stored.values()),
        )
        return self._log(entity, str(values["id"]), values, stored)

    def update(self, entity: Entity, record_id: str, changes: Mapping[str, Value]) -> Operation | None:
        """Set fields of an existing record and log exactly the fields set."""
        if not changes:
            return None
        stored = encode_fields(entity, changes)
        cur = self.conn.execute(
            f"UPDATE {entity.table} SET {', '.join(f'{c} = ?' for c in stored)} WHERE id = ?",  # noqa: S608 - declared names
            [*stored.values(), record_id],
        )
        if cur.rowcount != 1:
            raise NotFoundError(entity.name, record_id)
        return self._log(entity, record_id, changes, stored)

    def set_meta(self, key: str, value: str) -> None:
        """Set a node metadata value (not replicated)."""
        self.conn.execute(
            "INSERT INTO node_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def merge(self, entity: Entity, op: Op) -> MergeOutcome:
        """Merge an operation from another replica; the local clock moves past it.

        Raises:
            ClockDriftError: the operation's clock is too far ahead of ours; nothing is merged.
        """
        self._store.clock.receive(HLCTimestamp.decode(op.hlc), self._store.wall_ms())
        return merge_op(self.conn, entity, op)

    def _log(
        self, entity: Entity, record_id: str, values: Mapping[str, Value], fields: Mapping[str, StorageValue]
    ) -> Operation:
        hlc = self._store.clock.now(self._store.wall_ms())
        changes = record_local(
            self.conn, entity, record_id, values, Version(hlc.encode(), self._store.node_id), stored=fields
        )
        cur = self.conn.execute(
            "INSERT INTO changelog (entity, record_id, fields, hlc, origin, actor, changes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entity.name,
                record_id,
                msgpack.packb(fields),
                hlc.encode(),
                self._store.node_id,
                self.actor,
                encode_changes(changes),
            ),
        )
        seq = cur.lastrowid
        if seq is None:  # pragma: no cover - sqlite3 always reports it for an INSERT
            raise StoreError("change log insert reported no sequence number")
        return Operation(seq, entity.name, record_id, dict(fields), hlc, self._store.node_id, self.actor)


# --- the store ------------------------------------------------------------------------


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[Tx], T]
    actor: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


_STOP = object()


class Store:
    """The node's database: migrations, the single writer, and readers."""

    def __init__(
        self,
        path: Path,
        *,
        node_id: str,
        synchronous: Synchronous = "FULL",
        max_batch: int = 256,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.path = path
        self.node_id = node_id
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.clock = HybridLogicalClock()
        self._queue: queue.SimpleQueue[_Job[Any] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._commits = self._jobs = self._failed = 0
        self._last_seq = 0
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._commit_listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []

    # lifecycle

    def open(self) -> None:
        """Migrate the schema and start the writer thread; raise if the file is unusable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise StoreUnavailableError(self.path, str(self._startup_error)) from self._startup_error

    def close(self) -> None:
        """Finish queued writes, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def add_commit_listener(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Call ``callback`` on ``loop`` after every commit (e.g. to wake the replication drainer)."""
        self._commit_listeners.append((loop, callback))

    # writing

    async def write(self, fn: Callable[[Tx], T], *, actor: str) -> T:
        """Run ``fn`` in the writer's transaction; return after its COMMIT.

        ``fn`` runs on the writer thread inside a savepoint: if it raises, its
        effects are rolled back, the rest of the batch still commits, and the
        exception is raised here.
        """
        if self._closed:
            raise StoreClosedError
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, actor, loop, future))
        return await future

    def _writer(self) -> None:
        try:
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {self.path} to WAL mode (got {mode})")
            migrate(conn)
            row = conn.execute("SELECT max(hlc), max(seq) FROM changelog").fetchone()
            if row[0] is not None:
                self.clock = HybridLogicalClock(last=HLCTimestamp.decode(int(row[0])))
            self._last_seq = int(row[1] or 0)
        except (sqlite3.Error, StoreError, OSError) as exc:
            self._startup_error = exc
            self._closed = True
            with contextlib.suppress(NameError, sqlite3.Error):
                conn.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch: list[_Job[Any]] = [first]  # type: ignore[list-item]  # _STOP is handled above
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)  # type: ignore[arg-type]  # _STOP is handled above
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(Tx(conn, self, job.actor))
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller below
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("commit of %d writes failed", len(batch))
            failure = StoreUnavailableError(self.path, str(exc))
            outcomes = [(False, failure)] * len(batch)
        else:
            self._commits += 1
            row = conn.execute("SELECT max(seq) FROM changelog").fetchone()
            self._last_seq = int(row[0] or 0)
            for loop, callback in self._commit_listeners:
                loop.call_soon_threadsafe(callback)
        self._jobs += len(batch)
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if not ok:
                self._failed += 1
            job.loop.call_soon_threadsafe(_settle, job.future, ok, value)

    # reading

    async def read(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with a read connection on a worker thread."""
        return await asyncio.to_thread(self.read_nowait, fn)

    def read_nowait(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with this thread's read connection, blocking the caller."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return fn(Reader(conn))

    def statistics(self) -> StoreStatistics:
        """A snapshot of the writer's counters."""
        return StoreStatistics(self._commits, self._jobs, self._failed, self._queue.qsize(), self._last_seq)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller went away (cancelled); the write still committed
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
