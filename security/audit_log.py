"""The audit log's SQLite adapter (``<data_dir>/audit/audit.db``) and its offline verifier.

Theory of operation
-------------------
:class:`AuditLog` stores the chain of :mod:`security.audit_chain` in its own
database file, apart from the node's data, so an erasure or a restore of the
data never touches the evidence about it. One writer appends under
``BEGIN IMMEDIATE``; each append reads the last stored entry inside its
transaction and links to it, so two ``AuditLog`` objects on one file still
build one chain. The database runs in WAL mode with ``synchronous=FULL``: once
:meth:`AuditLog.append` returns, the entry survives a process crash and a power
loss. Every ``checkpoint_every``-th entry is signed into a checkpoint in the
same transaction; :meth:`AuditLog.checkpoint` signs the current head on demand
(before shipping it to the hub, say).

Triggers refuse ``UPDATE`` and ``DELETE`` on every table, and an ``INSERT``
into ``entries`` whose ``seq`` is not the next one, so honest code cannot
rewrite history by mistake. They do not stop an insider, who can drop them:
that is what the hash chain, the signatures and the hub's copies of the
checkpoints are for. The table ``meta`` records the node (``origin``) and
``region`` the checkpoints are signed for, since the checkpoint rows hold only
what varies.

:func:`verify_data_dir` is the compliance officer's tool: it opens the file
read-only (``mode=ro``; it never creates a database), reads the node's public
key from ``<data_dir>/identity/node.pub`` unless given one, and runs
:func:`security.audit_chain.verify_chain`. Rows an insider has made unreadable
(a body that is not JSON, a hash that is not a blob) become entries whose
hashes cannot match, so they are reported, never crash the verifier.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from security._primitives import FINGERPRINT_BYTES
from security.audit_chain import (
    ZERO_HASH,
    AuditError,
    ChainReport,
    Checkpoint,
    CheckpointFieldError,
    Entry,
    checkpoint_message,
    freeze_body,
    make_entry,
    sign_checkpoint,
    thaw_body,
    verify_chain,
)
from security.identity import IdentityError, decode_public_key

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
_MAX_KEY_FILE_BYTES: Final = 4096


_SCHEMA_V1: Final = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
        body TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
    CREATE INDEX entries_at_ms ON entries (at_ms);
    CREATE TABLE checkpoints (
        size INTEGER NOT NULL, head BLOB NOT NULL, signed_at_ms INTEGER NOT NULL,
        key_fingerprint BLOB NOT NULL, signature BLOB NOT NULL);
    CREATE TRIGGER entries_in_order BEFORE INSERT ON entries
    WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM entries), 0) + 1
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: entries must be inserted in seq order'); END;
    CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of entries cannot be updated'); END;
    CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of entries cannot be deleted'); END;
    CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of checkpoints cannot be updated'); END;
    CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of checkpoints cannot be deleted'); END;
    CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of meta cannot be updated'); END;
    CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: rows of meta cannot be deleted'); END;
"""
MIGRATIONS: Final = ((1, _SCHEMA_V1),)
"""``(user_version, script)`` pairs, applied in order to bring a file up to date."""


class AuditLogMissingError(AuditError):
    """There is no audit database where one was expected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no audit log at {path}: check the data directory (--data-dir) or the node's setup")


class AuditLogUnavailableError(AuditError):
    """The audit database could not be opened, read or written."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"audit log {path} unavailable: {reason}")


class AuditLogClosedError(AuditError):
    """An audit log was used before :meth:`AuditLog.open` or after :meth:`AuditLog.close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"audit log {path} is not open; call open() or use it as a context manager")


class AuditLogOwnerError(AuditError):
    """The database belongs to another node or region than the one opening it."""

    def __init__(self, path: Path, stored: tuple[str, str], configured: tuple[str, str]) -> None:
        self.path, self.stored, self.configured = path, stored, configured
        super().__init__(
            f"audit log {path} belongs to node {stored[0]!r} in region {stored[1]!r}, not "
            f"{configured[0]!r} in {configured[1]!r}: check the data directory and the node id"
        )


class PublicKeyFileError(AuditError):
    """The node's public key file is missing or not ``ed25519:<base64>``."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"public key file {path} {problem}")


@dataclass(frozen=True, slots=True)
class AuditLogStatistics:
    """How much the log holds and how much of it a checkpoint covers."""

    entries: int
    head_hex: str
    latest_checkpoint_size: int | None


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def _body_json(body: Mapping[str, object]) -> str:
    return json.dumps(thaw_body(body), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _blob(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""  # anything else was tampered with; it cannot match


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _row_entry(row: tuple[object, ...]) -> Entry:
    seq, at_ms, kind, body_text, prev_hash, hash_ = row
    body: Mapping[str, object]
    try:
        body = freeze_body(json.loads(_str(body_text)))
    except (ValueError, RecursionError, AuditError):  # not JSON, or not a body: the hash will tell
        body = {"unreadable": str(body_text)[:200]}
    return Entry(_int(seq), _int(at_ms), _str(kind), body, _blob(prev_hash), _blob(hash_))


def _row_checkpoint(row: tuple[object, ...], origin: str, region: str) -> Checkpoint:
    size, head, signed_at_ms, key_fingerprint, signature = row
    return Checkpoint(
        origin, region, _int(size), _blob(head), _int(signed_at_ms), _blob(key_fingerprint), _blob(signature)
    )


_INSERT_ENTRY: Final = (
    "INSERT INTO entries (seq, at_ms, kind, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_ENTRIES: Final = "SELECT seq, at_ms, kind, body, prev_hash, hash FROM entries"
_LAST_ENTRY: Final = _SELECT_ENTRIES + " ORDER BY seq DESC LIMIT 1"
_ALL_ENTRIES: Final = _SELECT_ENTRIES + " ORDER BY seq"
_FILTERED_ENTRIES: Final = (
    "SELECT seq, at_ms, kind, body, prev_hash, hash FROM entries"
    " WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR at_ms < ?2)"
    " AND (?3 IS NULL OR kind IN (SELECT value FROM json_each(?3))) ORDER BY seq"
)
_INSERT_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (size, head, signed_at_ms, key_fingerprint, signature) VALUES (?, ?, ?, ?, ?)"
)
_SELECT_CHECKPOINTS: Final = "SELECT size, head, signed_at_ms, key_fingerprint, signature FROM checkpoints"
_LATEST_CHECKPOINT: Final = _SELECT_CHECKPOINTS + " ORDER BY size DESC, signed_at_ms DESC, rowid DESC LIMIT 1"
_ALL_CHECKPOINTS: Final = _SELECT_CHECKPOINTS + " ORDER BY rowid"


class AuditLog:
    """The node's append-only, hash-chained, periodically signed audit log.

    Thread-safe: one lock serialises every call on the shared connection.
    Calls block on disk I/O; async callers use ``asyncio.to_thread``.
    """

    def __init__(
        self,
        path: Path,
        *,
        origin: str,
        region: str,
        sign: Callable[[bytes], bytes],
        fingerprint: bytes,
        wall_ms: Callable[[], int] = _epoch_ms,
        checkpoint_every: int = 64,
    ) -> None:
        if checkpoint_every < 1:
            raise CheckpointFieldError("checkpoint_every", checkpoint_every, "must be at least 1")
        checkpoint_message(origin, region, 0, ZERO_HASH, 0)  # refuse bad names now, not at entry 64
        if len(fingerprint) != FINGERPRINT_BYTES:
            raise CheckpointFieldError("key_fingerprint", fingerprint, f"must be {FINGERPRINT_BYTES} bytes")
        self.path = path
        self._origin, self._region = origin, region
        self._sign, self._fingerprint = sign, fingerprint
        self._wall_ms = wall_ms
        self._checkpoint_every = checkpoint_every
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Create or open the database, migrate it, and check it belongs to this node.

        Raises:
            AuditLogUnavailableError: the file cannot be created, opened or migrated.
            AuditLogOwnerError: the file was made for another node or region.
        """
        with self._lock:
            if self._conn is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            except (OSError, sqlite3.Error) as exc:
                raise AuditLogUnavailableError(self.path, str(exc)) from exc
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        log.info("audit log open: %s (node %s, region %s)", self.path, self._origin, self._region)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditLogUnavailableError(self.path, f"cannot use WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            with _transaction(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise AuditLogUnavailableError(
                        self.path,
                        f"schema version {version} is newer than this code's {SCHEMA_VERSION}; upgrade",
                    )
                for target, script in MIGRATIONS:
                    if version < target:
                        for statement in _statements(script):
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {int(target)}")
                stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if not stored:
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [("origin", self._origin), ("region", self._region)],
                    )
                elif (stored.get("origin"), stored.get("region")) != (self._origin, self._region):
                    owner = (str(stored.get("origin")), str(stored.get("region")))
                    raise AuditLogOwnerError(self.path, owner, (self._origin, self._region))
        except sqlite3.Error as exc:
            raise AuditLogUnavailableError(self.path, str(exc)) from exc

    def close(self) -> None:
        """Close the database; appended entries are already durable."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditLogClosedError(self.path)
        return self._conn

    # --- writing ------------------------------------------------------------------------------

    def append(self, kind: str, body: Mapping[str, object]) -> Entry:
        """Append one event durably; sign a checkpoint if this entry's seq is due for one.

        Raises:
            AuditEntryError, AuditBodyError: the event cannot be stored (nothing is written).
            AuditLogUnavailableError: the database refused the write.
        """
        return self.append_many([(kind, body)])[0]

    def append_many(self, events: Iterable[tuple[str, Mapping[str, object]]]) -> list[Entry]:
        """Append several events in one transaction: all are stored, or none."""
        batch = list(events)
        with self._lock:
            conn = self._require()
            try:
                with _transaction(conn):
                    prev = self._last(conn)
                    appended = []
                    for kind, body in batch:
                        prev = make_entry(prev, self._wall_ms(), kind, body)
                        conn.execute(
                            _INSERT_ENTRY,
                            (
                                prev.seq,
                                prev.at_ms,
                                prev.kind,
                                _body_json(prev.body),
                                prev.prev_hash,
                                prev.hash,
                            ),
                        )
                        appended.append(prev)
                        if prev.seq % self._checkpoint_every == 0:
                            self._store_checkpoint(conn, prev.seq, prev.hash)
            except sqlite3.Error as exc:
                raise AuditLogUnavailableError(self.path, str(exc)) from exc
        for entry in appended:
            log.debug("audit ->> %d %s", entry.seq, entry.kind)
        return appended

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the current head (size 0 and the zero hash when empty)."""
        with self._lock:
            conn = self._require()
            try:
                with _transaction(conn):
                    last = self._last(conn)
                    size, head = (0, ZERO_HASH) if last is None else (last.seq, last.hash)
                    return self._store_checkpoint(conn, size, head)
            except sqlite3.Error as exc:
                raise AuditLogUnavailableError(self.path, str(exc)) from exc

    def _store_checkpoint(self, conn: sqlite3.Connection, size: int, head: bytes) -> Checkpoint:
        cp = sign_checkpoint(
            self._sign, self._fingerprint, self._origin, self._region, size, head, self._wall_ms()
        )
        conn.execute(
            _INSERT_CHECKPOINT,
            (cp.size, cp.head, cp.signed_at_ms, cp.key_fingerprint, cp.signature),
        )
        log.info("audit checkpoint signed: size %d head %s", cp.size, cp.head.hex()[:16])
        return cp

    def _last(self, conn: sqlite3.Connection) -> Entry | None:
        row = conn.execute(_LAST_ENTRY).fetchone()
        return None if row is None else _row_entry(row)

    # --- reading ------------------------------------------------------------------------------

    def latest_checkpoint(self) -> Checkpoint | None:
        """The checkpoint covering the most entries (the newest among equals), if any."""
        rows = self._read(_LATEST_CHECKPOINT, ())
        return _row_checkpoint(rows[0], self._origin, self._region) if rows else None

    def entries(
        self,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[Entry]:
        """Entries in seq order with ``since_ms <= at_ms < until_ms`` and a kind in ``kinds``."""
        wanted = None if kinds is None else json.dumps(sorted(set(kinds)))
        rows = self._read(_FILTERED_ENTRIES, (since_ms, until_ms, wanted))
        return [_row_entry(row) for row in rows]

    def statistics(self) -> AuditLogStatistics:
        """How many entries there are, the head hash, and the size the latest checkpoint covers."""
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM entries), (SELECT hash FROM entries ORDER BY seq DESC LIMIT 1), "
            "(SELECT MAX(size) FROM checkpoints)",
            (),
        )
        count, head, covered = rows[0]
        return AuditLogStatistics(
            entries=_int(count),
            head_hex=(head if isinstance(head, bytes) else ZERO_HASH).hex(),
            latest_checkpoint_size=covered if isinstance(covered, int) else None,
        )

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        with self._lock:
            conn = self._require()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise AuditLogUnavailableError(self.path, str(exc)) from exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    # Triggers hold ';' inside BEGIN ... END, so split on complete statements only.
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if s]


# --- offline verification ---------------------------------------------------------------------


def read_public_key(path: Path) -> bytes:
    """The raw Ed25519 key in a ``node.pub`` file (``ed25519:<base64 of 32 bytes>``).

    Raises:
        PublicKeyFileError: the file is missing, unreadable or not in that form.
    """
    if not path.exists():
        raise PublicKeyFileError(path, "does not exist: pass the node's public key explicitly")
    if not path.is_file():  # a FIFO or device must not hang or flood the verifier
        raise PublicKeyFileError(path, "is not a regular file")
    try:
        with path.open("rb") as f:
            text = f.read(_MAX_KEY_FILE_BYTES).decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublicKeyFileError(path, f"cannot be read ({exc})") from None
    try:
        return decode_public_key(text)  # the one parser of the format, shared with security.identity
    except IdentityError as exc:
        raise PublicKeyFileError(path, exc.problem) from None


def audit_db_path(data_dir: Path) -> Path:
    """Where a node keeps its audit log inside its data directory."""
    return data_dir / "audit" / "audit.db"


def verify_data_dir(
    data_dir: Path, *, public_key: bytes | None = None, external: Sequence[Checkpoint] = ()
) -> ChainReport:
    """Verify a node's audit log offline, with public keys only and without writing to it.

    Args:
        data_dir: the node's data directory.
        public_key: the node's raw Ed25519 public key; read from
            ``<data_dir>/identity/node.pub`` when None.
        external: checkpoints the hub holds for this node.

    Raises:
        AuditLogMissingError: there is no ``<data_dir>/audit/audit.db``.
        AuditLogUnavailableError: the file is not a readable audit database.
        PublicKeyFileError: no key was given and ``node.pub`` is missing or malformed.
    """
    path = audit_db_path(data_dir)
    if not path.is_file():
        raise AuditLogMissingError(path)
    key = read_public_key(data_dir / "identity" / "node.pub") if public_key is None else public_key
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise AuditLogUnavailableError(path, str(exc)) from exc
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        origin, region = _str(meta.get("origin")), _str(meta.get("region"))
        entries = [_row_entry(r) for r in conn.execute(_ALL_ENTRIES)]
        rows = conn.execute(_ALL_CHECKPOINTS).fetchall()
    except sqlite3.Error as exc:
        raise AuditLogUnavailableError(path, f"not a readable audit log ({exc})") from exc
    finally:
        conn.close()
    checkpoints = [_row_checkpoint(row, origin, region) for row in rows]
    return verify_chain(entries, checkpoints, key, external=external)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def render_chain_report(report: ChainReport) -> str:
    """The report as plain text lines for a terminal."""
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    lines = [
        f"audit log: {verdict}",
        f"entries: {report.entries}",
        f"head: {report.head.hex()}",
        f"checkpoints checked: {report.checkpoints_checked}",
    ]
    latest = report.latest_checkpoint
    if latest is None:
        lines.append("latest checkpoint: none (no entry is covered by a signature yet)")
    else:
        lines.append(
            f"latest checkpoint: size {latest.size}, signed {_when(latest.signed_at_ms)} by key "
            f"{latest.key_fingerprint.hex()} ({latest.region}/{latest.origin})"
        )
        if report.ok and report.entries > latest.size:
            lines.append(
                f"not yet covered: {report.entries - latest.size} entries after the latest checkpoint "
                "(they become tamper-evident once the next checkpoint reaches the hub)"
            )
    lines += [f"problem {p.kind} at {p.seq}: {p.message}" for p in report.problems]
    return "\n".join(lines) + "\n"


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AuditLog",
    "AuditLogClosedError",
    "AuditLogMissingError",
    "AuditLogOwnerError",
    "AuditLogStatistics",
    "AuditLogUnavailableError",
    "PublicKeyFileError",
    "audit_db_path",
    "read_public_key",
    "render_chain_report",
    "verify_data_dir",
]
