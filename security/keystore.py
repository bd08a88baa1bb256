"""The region's key store: one SQLite file per node holding every key it seals with.

Theory of operation
-------------------
Keys form a two-level hierarchy, the envelope encryption of DESIGN.md:

* **Key-encryption keys** (KEKs) are versioned; the newest wraps. They never
  leave this file (the hub holds none), and only the current one is kept.
* **Data keys** (DEKs), one per key id such as ``customer:C1`` or
  ``ticket:T9``, seal field values (``security.envelope``). They are stored
  only wrapped: ``aead_encrypt(kek, dek, aad=canonical(["edgecare.dek.v1",
  region, key_id, key_version, kek_version]))``, so a wrapped key copied to
  another region, key id or version does not unwrap.
* One **pseudonymisation key** (HMAC, ``security.pseudonym``) is wrapped the
  same way, under its own label.

**Rotation** (:meth:`KeyStore.rotate_kek`) creates the next KEK version and
re-wraps every live data key and the pseudonym key under it in one
transaction; sealed data is never re-encrypted. The old KEK row is then
deleted and the WAL checkpointed with ``TRUNCATE``: with ``secure_delete`` on,
SQLite overwrites deleted cells and freed pages with zeros, so the old KEK's
bytes are gone from ``keys.db`` and ``keys.db-wal``. Backups taken before,
and disk blocks the file system has not yet reused, are beyond its reach.

**Crypto-shredding** (:meth:`KeyStore.shred`) destroys a data key the same
way and leaves a tombstone (key id, time, reason). Every value sealed under
the key becomes unreadable everywhere at once, hub copies included. The
tombstone makes :meth:`KeyStore.data_key` raise
:class:`~security.keys.KeyShreddedError` instead of quietly creating a fresh
key under the same id, which would let new personal data of an erased subject
accumulate again.

Unwrapped data keys are cached in memory (purged on shred and rotation), so
sealing a known key does no I/O; creating keys, rotating and shredding write
with ``synchronous = FULL`` and block on fsync, so callers on an event loop run
them in a worker thread. One ``threading.Lock`` serialises every method.
Events (:class:`~security.keys.KeyEvent`) are delivered after their
transaction commits and outside the lock, for the audit log.

The values this module returns and raises (events, the inventory, the
errors) live in ``security.keys``, so their users need not import SQLite.

The file and its directory are created owner-only (0600/0700); an existing
file that grants group or others any access is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, Self

from security import _primitives
from security.envelope import DataKey, check_key_id
from security.keys import (
    KekInfo,
    KekRotation,
    KeyEvent,
    KeyInventory,
    KeyShreddedError,
    KeyStoreError,
    ShreddedKey,
    UnknownKeyError,
    key_fingerprint,
)
from sync.wire import canonical

log = logging.getLogger(__name__)

PSEUDONYM_KEY_ID: Final = "pseudonym"
KEK_KEY_ID: Final = "kek"

_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE keks (version INTEGER PRIMARY KEY, key BLOB NOT NULL, created_at_ms INTEGER NOT NULL);
    CREATE TABLE wrapped_keys (
        purpose TEXT NOT NULL CHECK (purpose IN ('dek', 'pseudonym')),
        key_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        kek_version INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        wrapped BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (purpose, key_id, version)
    );
    CREATE TABLE shredded (key_id TEXT PRIMARY KEY, shredded_at_ms INTEGER NOT NULL, reason TEXT NOT NULL);
    """,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


Purpose = Literal["dek", "pseudonym"]
_WRAP_LABELS: Final[Mapping[Purpose, str]] = {
    "dek": "edgecare.dek.v1",
    "pseudonym": "edgecare.pseudonym-key.v1",
}


def _wrap_aad(purpose: Purpose, region: str, key_id: str, version: int, kek_version: int) -> bytes:
    return canonical([_WRAP_LABELS[purpose], region, key_id, version, kek_version])


class KeyStore:
    """One node's keys in ``keys.db``; see the module docstring.

    Args:
        path: The SQLite file (normally :func:`security.keys.keystore_path`).
        region: The region these keys belong to; bound into every wrap.
        wall_ms: Wall clock in Unix milliseconds, for timestamps.
        on_event: Called with each :class:`~security.keys.KeyEvent` after its commit.
        on_events: Called once with all the events of one commit (instead of
            ``on_event``), so a caller can record a batch of new keys in one write.
    """

    def __init__(
        self,
        path: Path,
        *,
        region: str,
        wall_ms: Callable[[], int] = _epoch_ms,
        on_event: Callable[[KeyEvent], None] | None = None,
        on_events: Callable[[Sequence[KeyEvent]], None] | None = None,
    ) -> None:
        self.path = path
        self.region = region
        self._wall_ms = wall_ms
        self._on_event = on_event
        self._on_events = on_events
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._kek: tuple[int, bytes] | None = None
        self._dek_cache: dict[tuple[str, int], DataKey] = {}
        self._latest: dict[str, int] = {}
        self._pseudonym: bytes | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating on first use) the file, migrate it, and create KEK v1 and the pseudonym key.

        Raises:
            KeyStoreError: the file or directory cannot be created or read,
                grants group or others access, is not a key store, or belongs
                to another region.
        """
        events: list[KeyEvent] = []
        with self._lock:
            if self._conn is not None:
                return
            try:
                self._prepare_file()
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            except OSError as exc:
                raise KeyStoreError(self.path, f"cannot be created or opened: {exc.strerror}") from exc
            except sqlite3.Error as exc:
                raise KeyStoreError(self.path, f"cannot be opened: {exc}") from exc
            self._conn = conn
            try:
                self._setup(conn, events)
            except BaseException:
                conn.close()
                self._conn, self._kek = None, None
                raise
        self._emit(events)

    def close(self) -> None:
        """Close the file and forget every cached key. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._kek = None
            self._forget_unwrapped()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _prepare_file(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # mkdir's mode is masked by the umask
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            info = self.path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise KeyStoreError(self.path, "is not a regular file") from None
            if info.st_mode & 0o077:
                raise KeyStoreError(
                    self.path,
                    f"grants group or others access (mode {stat.S_IMODE(info.st_mode):o}); "
                    "run chmod 600 on it and on its -wal and -shm files",
                ) from None
        else:
            os.fchmod(fd, 0o600)
            os.close(fd)

    def _setup(self, conn: sqlite3.Connection, events: list[KeyEvent]) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA secure_delete = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise KeyStoreError(self.path, f"could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            with _transaction(conn):
                self._migrate(conn)
                now = self._wall_ms()
                if conn.execute("SELECT count(*) FROM keks").fetchone()[0] == 0:
                    conn.execute("INSERT INTO keks VALUES (1, ?, ?)", (_primitives.new_key(), now))
                    events.append(KeyEvent("kek_created", KEK_KEY_ID, 1, now))
                row = conn.execute("SELECT version, key FROM keks ORDER BY version DESC LIMIT 1").fetchone()
                self._kek = (int(row[0]), bytes(row[1]))
                if self._stored(conn, "pseudonym", PSEUDONYM_KEY_ID, None) is None:
                    self._insert(conn, "pseudonym", PSEUDONYM_KEY_ID, _primitives.new_key(), now)
                    events.append(KeyEvent("pseudonym_key_created", PSEUDONYM_KEY_ID, 1, now))
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError(self.path, f"is not a usable key store: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
        if current > SCHEMA_VERSION:
            raise KeyStoreError(
                self.path, f"has schema version {current}, newer than this code knows ({SCHEMA_VERSION})"
            )
        for version, script in enumerate(_MIGRATIONS[current:], start=current + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        row = conn.execute("SELECT value FROM meta WHERE name = 'region'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta VALUES ('region', ?)", (self.region,))
        elif row[0] != self.region:
            raise KeyStoreError(self.path, f"holds the keys of region {row[0]!r}, not {self.region!r}")

    # --- helpers (called with the lock held) --------------------------------------------------

    def _connection(self) -> tuple[sqlite3.Connection, int, bytes]:
        """The open connection and the current KEK's version and bytes."""
        if self._conn is None or self._kek is None:
            raise KeyStoreError(self.path, "is not open; call open() first")
        return self._conn, *self._kek

    def _forget_unwrapped(self) -> None:
        self._dek_cache.clear()
        self._latest.clear()
        self._pseudonym = None

    def _emit(self, events: list[KeyEvent]) -> None:
        if self._on_events is not None:
            if events:
                self._on_events(events)
        elif self._on_event is not None:
            for event in events:
                self._on_event(event)

    def _tombstone(self, conn: sqlite3.Connection, key_id: str) -> int | None:
        row = conn.execute("SELECT shredded_at_ms FROM shredded WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else int(row[0])

    def _insert(self, conn: sqlite3.Connection, purpose: Purpose, key_id: str, key: bytes, now: int) -> None:
        """Store version 1 of a key, wrapped under the current KEK."""
        _, kek_version, kek = self._connection()
        aad = _wrap_aad(purpose, self.region, key_id, 1, kek_version)
        nonce, wrapped = _primitives.aead_encrypt(kek, key, aad)
        conn.execute(
            "INSERT INTO wrapped_keys VALUES (?, ?, 1, ?, ?, ?, ?)",
            (purpose, key_id, kek_version, nonce, wrapped, now),
        )

    def _unwrap(self, purpose: Purpose, key_id: str, version: int, wrap: tuple[int, bytes, bytes]) -> bytes:
        """Unwrap a stored ``(kek_version, nonce, wrapped)`` under the current KEK."""
        _, current, kek = self._connection()
        kek_version, nonce, wrapped = wrap
        aad = _wrap_aad(purpose, self.region, key_id, version, kek_version)
        try:
            if kek_version != current:
                raise _primitives.AEADError
            return _primitives.aead_decrypt(kek, nonce, wrapped, aad)
        except _primitives.AEADError:
            raise KeyStoreError(
                self.path,
                f"{purpose} key {key_id!r} v{version} does not unwrap under KEK v{current}: "
                "the file was altered or is corrupt",
            ) from None

    def _stored(
        self, conn: sqlite3.Connection, purpose: Purpose, key_id: str, version: int | None
    ) -> tuple[int, bytes] | None:
        """Version ``version`` (the newest if None) of a stored key, unwrapped; None if absent."""
        query = (
            "SELECT version, kek_version, nonce, wrapped FROM wrapped_keys WHERE purpose = ? AND key_id = ?"
        )
        if version is None:
            row = conn.execute(query + " ORDER BY version DESC LIMIT 1", (purpose, key_id)).fetchone()
        else:
            row = conn.execute(query + " AND version = ?", (purpose, key_id, version)).fetchone()
        if row is None:
            return None
        found = int(row[0])
        return found, self._unwrap(purpose, key_id, found, (int(row[1]), bytes(row[2]), bytes(row[3])))

    def _data_key(self, conn: sqlite3.Connection, key_id: str, version: int | None) -> DataKey | None:
        """A data key from the cache or the file; None if it does not exist."""
        cached = self._dek_cache.get((key_id, self._latest.get(key_id, 0) if version is None else version))
        if cached is not None:
            return cached
        stored = self._stored(conn, "dek", key_id, version)
        if stored is None:
            return None
        key = DataKey(key_id, *stored)
        self._dek_cache[(key_id, key.version)] = key
        self._latest[key_id] = max(key.version, self._latest.get(key_id, 0))
        return key

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Move the WAL into the file and truncate it, so destroyed keys leave the WAL too."""
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "key store %s: WAL checkpoint blocked; destroyed key bytes may linger in the WAL", self.path
            )

    # --- keys ---------------------------------------------------------------------------------

    @property
    def kek_version(self) -> int:
        """The version of the current key-encryption key."""
        with self._lock:
            return self._connection()[1]

    def data_key(self, key_id: str) -> DataKey:
        """The newest version of data key ``key_id``, created (version 1) if it has none.

        Raises:
            InvalidKeyIdError: ``key_id`` does not fit an envelope.
            KeyShreddedError: ``key_id`` was shredded and is never recreated.
            KeyStoreError: the store is closed or the file fails.
        """
        check_key_id(key_id)
        events: list[KeyEvent] = []
        with self._lock:
            conn, _, _ = self._connection()
            if (key := self._dek_cache.get((key_id, self._latest.get(key_id, 0)))) is not None:
                return key
            with self._sqlite_errors(), _transaction(conn):
                if (shredded_at := self._tombstone(conn, key_id)) is not None:
                    raise KeyShreddedError(key_id, shredded_at)
                key = self._data_key(conn, key_id, None)
                if key is None:
                    now = self._wall_ms()
                    key = DataKey(key_id, 1, _primitives.new_key())
                    self._insert(conn, "dek", key_id, key.key, now)
                    events.append(KeyEvent("data_key_created", key_id, 1, now))
            self._dek_cache[(key_id, key.version)] = key
            self._latest[key_id] = key.version
        self._emit(events)
        return key

    def data_keys(self, key_ids: Iterable[str]) -> dict[str, DataKey]:
        """The newest live data key of each id, creating the missing ones in one transaction.

        Shredded ids are left out of the answer (they are never recreated); the
        caller decides what to do with their values. One commit (and one batch of
        events) however many keys are new: sealing a batch of operations for new
        customers costs one fsync here, not one per customer.

        Raises:
            InvalidKeyIdError: an id does not fit an envelope.
            KeyStoreError: the store is closed or the file fails.
        """
        wanted = sorted(set(key_ids))
        for key_id in wanted:
            check_key_id(key_id)
        found: dict[str, DataKey] = {}
        events: list[KeyEvent] = []
        with self._lock:
            conn, _, _ = self._connection()
            missing = []
            for key_id in wanted:
                cached = self._dek_cache.get((key_id, self._latest.get(key_id, 0)))
                if cached is not None:
                    found[key_id] = cached
                else:
                    missing.append(key_id)
            if not missing:
                return found
            with self._sqlite_errors(), _transaction(conn):
                now = self._wall_ms()
                for key_id in missing:
                    if self._tombstone(conn, key_id) is not None:
                        continue
                    key = self._data_key(conn, key_id, None)
                    if key is None:
                        key = DataKey(key_id, 1, _primitives.new_key())
                        self._insert(conn, "dek", key_id, key.key, now)
                        events.append(KeyEvent("data_key_created", key_id, 1, now))
                    found[key_id] = key
            for key in found.values():
                self._dek_cache[(key.key_id, key.version)] = key
                self._latest[key.key_id] = key.version
        self._emit(events)
        return found

    def existing_data_key(self, key_id: str, version: int | None = None) -> DataKey:
        """Data key ``key_id`` at ``version`` (the newest if None); never creates one.

        Raises:
            KeyShreddedError: ``key_id`` was shredded.
            UnknownKeyError: no such key id or version exists here.
            KeyStoreError: the store is closed or the file fails.
        """
        with self._lock, self._sqlite_errors():
            conn, _, _ = self._connection()
            if (shredded_at := self._tombstone(conn, key_id)) is not None:
                raise KeyShreddedError(key_id, shredded_at)
            key = self._data_key(conn, key_id, version)
        if key is None:
            raise UnknownKeyError(key_id, version)
        return key

    def is_shredded(self, key_id: str) -> bool:
        """Whether ``key_id`` has a shred tombstone."""
        with self._lock, self._sqlite_errors():
            return self._tombstone(self._connection()[0], key_id) is not None

    def pseudonym_key(self) -> bytes:
        """The region's 32-byte pseudonymisation key (``security.pseudonym``)."""
        with self._lock, self._sqlite_errors():
            conn, _, _ = self._connection()
            if self._pseudonym is None:
                stored = self._stored(conn, "pseudonym", PSEUDONYM_KEY_ID, None)
                if stored is None:
                    raise KeyStoreError(self.path, "holds no pseudonym key")
                self._pseudonym = stored[1]
            return self._pseudonym

    def rotate_kek(self, *, by: str = "unknown") -> KekRotation:
        """Make a new KEK current, re-wrap every stored key under it, and destroy the old one.

        Sealed values are untouched and keep opening: only the wraps change. ``by``
        names who asked, for the ``kek_rotated`` event (and so the audit log).

        Raises:
            KeyStoreError: the store is closed, a stored key does not unwrap,
                or the file fails (then nothing changed).
        """
        with self._lock, self._sqlite_errors():
            conn, old_version, _ = self._connection()
            new_version, new_kek = old_version + 1, _primitives.new_key()
            now = self._wall_ms()
            rewrapped = 0
            with _transaction(conn):
                rows = conn.execute(
                    "SELECT purpose, key_id, version, kek_version, nonce, wrapped FROM wrapped_keys"
                )
                for purpose, key_id, version, *wrap in rows.fetchall():
                    key = self._unwrap(
                        purpose, key_id, version, (int(wrap[0]), bytes(wrap[1]), bytes(wrap[2]))
                    )
                    aad = _wrap_aad(purpose, self.region, key_id, version, new_version)
                    nonce, wrapped = _primitives.aead_encrypt(new_kek, key, aad)
                    conn.execute(
                        "UPDATE wrapped_keys SET kek_version = ?, nonce = ?, wrapped = ? "
                        "WHERE purpose = ? AND key_id = ? AND version = ?",
                        (new_version, nonce, wrapped, purpose, key_id, version),
                    )
                    rewrapped += purpose == "dek"
                conn.execute("INSERT INTO keks VALUES (?, ?, ?)", (new_version, new_kek, now))
                conn.execute("DELETE FROM keks WHERE version != ?", (new_version,))
            self._kek = (new_version, new_kek)
            self._forget_unwrapped()
            self._checkpoint(conn)
        detail = MappingProxyType({"old_version": old_version, "rewrapped": rewrapped, "by": by})
        self._emit([KeyEvent("kek_rotated", KEK_KEY_ID, new_version, now, detail)])
        log.info(
            "key store %s: KEK v%d replaced v%d, re-wrapped %d data keys",
            self.path,
            new_version,
            old_version,
            rewrapped,
        )
        return KekRotation(old_version, new_version, rewrapped)

    def shred(self, key_id: str, *, reason: str) -> bool:
        """Destroy data key ``key_id`` (every version) and leave a tombstone so it is never recreated.

        Args:
            key_id: The data key to destroy.
            reason: Why, for the audit log (ids only, never personal data).

        Returns:
            True if a key was destroyed; False if none existed (the tombstone
            is still recorded) or it was already shredded.

        Raises:
            KeyStoreError: the store is closed or the file fails.
        """
        events: list[KeyEvent] = []
        with self._lock, self._sqlite_errors():
            conn, _, _ = self._connection()
            now = self._wall_ms()
            with _transaction(conn):
                already = self._tombstone(conn, key_id) is not None
                version = int(
                    conn.execute(
                        "SELECT max(version) FROM wrapped_keys WHERE purpose = 'dek' AND key_id = ?",
                        (key_id,),
                    ).fetchone()[0]
                    or 0
                )
                conn.execute("DELETE FROM wrapped_keys WHERE purpose = 'dek' AND key_id = ?", (key_id,))
                if not already:
                    conn.execute("INSERT INTO shredded VALUES (?, ?, ?)", (key_id, now, reason))
                    detail = MappingProxyType({"reason": reason, "existed": version > 0})
                    events.append(KeyEvent("data_key_shredded", key_id, version, now, detail))
            for cached in [k for k in self._dek_cache if k[0] == key_id]:
                del self._dek_cache[cached]
            self._latest.pop(key_id, None)
            self._checkpoint(conn)
        self._emit(events)
        return version > 0

    # --- audit --------------------------------------------------------------------------------

    def inventory(self) -> KeyInventory:
        """Counts, fingerprints and tombstones; never key bytes."""
        pseudonym = self.pseudonym_key()
        with self._lock, self._sqlite_errors():
            conn, _, _ = self._connection()
            keks = tuple(
                KekInfo(int(v), int(at), key_fingerprint(bytes(k)))
                for v, k, at in conn.execute("SELECT version, key, created_at_ms FROM keks ORDER BY version")
            )
            active = conn.execute("SELECT count(DISTINCT key_id) FROM wrapped_keys WHERE purpose = 'dek'")
            shredded = tuple(
                ShreddedKey(str(k), int(at), str(r))
                for k, at, r in conn.execute("SELECT * FROM shredded ORDER BY shredded_at_ms, key_id")
            )
            return KeyInventory(
                region=self.region,
                location=str(self.path),
                keks=keks,
                data_keys_active=int(active.fetchone()[0]),
                data_keys_shredded=len(shredded),
                shredded=shredded,
                pseudonym_key_fingerprint=key_fingerprint(pseudonym),
            )

    def key_material_for_audit(self) -> list[bytes]:
        """Every raw key this store can produce now: KEKs, unwrapped live data keys, the pseudonym key.

        This exists so custody tests can search other machines (the hub, other
        regions, logs, backups) for these exact bytes and find none. Never log
        or send its result.
        """
        pseudonym = self.pseudonym_key()
        with self._lock, self._sqlite_errors():
            conn, _, _ = self._connection()
            keys = [bytes(k) for (k,) in conn.execute("SELECT key FROM keks ORDER BY version")]
            ids = conn.execute("SELECT key_id, version FROM wrapped_keys WHERE purpose = 'dek' ORDER BY 1, 2")
            for key_id, version in ids.fetchall():
                if (dek := self._data_key(conn, str(key_id), int(version))) is not None:
                    keys.append(dek.key)
        return [*keys, pseudonym]

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise KeyStoreError(self.path, f"database error: {exc}") from exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


__all__ = [
    "KEK_KEY_ID",
    "PSEUDONYM_KEY_ID",
    "SCHEMA_VERSION",
    "KeyStore",
]
