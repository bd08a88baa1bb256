"""SQLite adapter for CRDT replicas: field versions, set states, merge progress.

Every replica (a regional node, and the hub's copy of each region) keeps the
same tables: one per entity with the materialized values, plus the merge
metadata here. A local write records the version of every field it sets and
returns the operation's field changes; a remote operation is merged field by
field with the rules of :mod:`sync.crdt`, so the order and repetition of
deliveries never matter. Nothing here commits: callers run these functions
inside their own transaction, together with the writes they belong to.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from sync.crdt import Counter, FieldChange, Op, ORSet, Register, StorageValue, Version, set_delta
from sync.digest import DigestReport, digest, digests_json
from sync.entities import ENTITIES
from sync.entity import Entity, Kind, MergeKind, Value, to_storage
from sync.residency import Form
from sync.transport.codec import decode_orset, encode_orset

REPLICA_TABLES = (
    """CREATE TABLE field_versions (
        entity TEXT NOT NULL, record_id TEXT NOT NULL, field TEXT NOT NULL,
        hlc INTEGER NOT NULL, node TEXT NOT NULL,
        PRIMARY KEY (entity, record_id, field)
    ) WITHOUT ROWID""",
    """CREATE TABLE set_states (
        entity TEXT NOT NULL, record_id TEXT NOT NULL, field TEXT NOT NULL, state BLOB NOT NULL,
        PRIMARY KEY (entity, record_id, field)
    ) WITHOUT ROWID""",
    """CREATE TABLE replication_progress (
        origin TEXT PRIMARY KEY, contiguous_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL,
        ops_merged INTEGER NOT NULL DEFAULT 0, last_hlc INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE replication_seen (
        origin TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID""",
)

_NO_VERSION = Version(-1, "")


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """What merging one operation did."""

    applied_fields: int  # fields whose value changed
    stale_fields: int  # fields where this replica already had a newer write
    unknown_fields: int  # fields this program does not declare (a newer peer): kept out
    duplicate: bool  # this origin's sequence number had been merged before


def record_local(
    conn: sqlite3.Connection,
    entity: Entity,
    record_id: str,
    values: Mapping[str, Value],
    version: Version,
    *,
    stored: Mapping[str, StorageValue] | None = None,
) -> dict[str, FieldChange]:
    """Note the versions of a local write's fields; return its CRDT field changes.

    ``stored`` is the storage form of ``values`` when the caller has it already.
    """
    changes: dict[str, FieldChange] = {}
    registers: list[str] = []
    for name, value in values.items():
        f = entity.field(name)
        if f.merge is MergeKind.SET:
            before = load_set(conn, entity.name, record_id, name)
            wanted = value if isinstance(value, frozenset) else frozenset()
            delta = set_delta(before, wanted, version)
            save_set(conn, entity.name, record_id, name, before.apply(delta))
            changes[name] = FieldChange(MergeKind.SET, delta=delta)
        else:
            registers.append(name)
            value_stored = stored[name] if stored is not None else to_storage(f, value)
            changes[name] = FieldChange(MergeKind.REGISTER, register=Register(value_stored, version))
    _set_versions(conn, entity.name, record_id, {name: version for name in registers})
    return changes


def merge_op(conn: sqlite3.Connection, entity: Entity, op: Op) -> MergeOutcome:
    """Merge one remote operation into the entity table and the merge metadata."""
    duplicate = not _note_seq(conn, op.origin, op.seq, op.hlc)
    applied = stale = unknown = 0
    columns: dict[str, StorageValue] = {}
    # One read of every field version of the record, one batched write back:
    # a per-field SELECT and upsert made merging ten times slower than a raw upsert.
    versions = _versions(conn, entity.name, op.record_id)
    newer: dict[str, Version] = {}
    for name, change in op.changes.items():
        if not entity.has(name):
            unknown += 1
            continue
        f = entity.field(name)
        if change.kind is MergeKind.SET and change.delta is not None:
            before = load_set(conn, entity.name, op.record_id, name)
            after = before.apply(change.delta)
            # Always write the column: a replica that first hears of the record
            # must show the (maybe empty) set the origin shows.
            columns[name] = to_storage(f, after.value())
            if after != before:
                save_set(conn, entity.name, op.record_id, name, after)
                applied += 1
            else:
                stale += 1
        elif change.kind is MergeKind.REGISTER and change.register is not None:
            if change.register.version > versions.get(name, _NO_VERSION):
                newer[name] = change.register.version
                columns[name] = _column_value(f.kind, change.register.value)
                applied += 1
            else:
                stale += 1
        elif change.kind is MergeKind.COUNTER and change.counter is not None:
            unknown += 1  # no declared entity uses counters yet; refuse rather than guess
    _set_versions(conn, entity.name, op.record_id, newer)
    if columns:
        conn.execute(f"INSERT OR IGNORE INTO {entity.table} (id) VALUES (?)", (op.record_id,))  # noqa: S608 - declared name
        assignments = ", ".join(f"{c} = ?" for c in columns)
        conn.execute(
            f"UPDATE {entity.table} SET {assignments} WHERE id = ?",  # noqa: S608 - declared names
            [*columns.values(), op.record_id],
        )
    return MergeOutcome(applied, stale, unknown, duplicate)


def _column_value(kind: Kind, value: StorageValue) -> StorageValue:
    if isinstance(value, bytes):  # no declared column holds bytes; keep the column text
        return value.hex() if kind is not Kind.DOCUMENT else None
    return value


def contiguous_seq(conn: sqlite3.Connection, origin: str) -> int:
    """The highest sequence number up to which every operation of ``origin`` is merged."""
    row = conn.execute(
        "SELECT contiguous_seq FROM replication_progress WHERE origin = ?", (origin,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def progress(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int]]:
    """Every origin's (contiguous seq, max seq, ops merged)."""
    rows = conn.execute("SELECT origin, contiguous_seq, max_seq, ops_merged FROM replication_progress")
    return {str(o): (int(c), int(m), int(n)) for o, c, m, n in rows}


def _note_seq(conn: sqlite3.Connection, origin: str, seq: int, hlc: int) -> bool:
    """Record that ``origin``'s op ``seq`` is merged; False if it already was."""
    row = conn.execute(
        "SELECT contiguous_seq, max_seq FROM replication_progress WHERE origin = ?", (origin,)
    ).fetchone()
    contiguous, max_seq = (0, 0) if row is None else (int(row[0]), int(row[1]))
    if seq <= contiguous:
        return False
    if seq != contiguous + 1:
        cur = conn.execute("INSERT OR IGNORE INTO replication_seen VALUES (?, ?)", (origin, seq))
        new = cur.rowcount == 1
        if row is None:
            conn.execute("INSERT INTO replication_progress VALUES (?, 0, ?, 1, ?)", (origin, seq, hlc))
        elif new:
            conn.execute(
                "UPDATE replication_progress SET max_seq = max(max_seq, ?), ops_merged = ops_merged + 1, "
                "last_hlc = max(last_hlc, ?) WHERE origin = ?",
                (seq, hlc, origin),
            )
        return new
    contiguous = seq
    while conn.execute(
        "DELETE FROM replication_seen WHERE origin = ? AND seq = ?", (origin, contiguous + 1)
    ).rowcount:
        contiguous += 1
    conn.execute(
        "INSERT INTO replication_progress VALUES (?, ?, ?, 1, ?) ON CONFLICT(origin) DO UPDATE SET "
        "contiguous_seq = excluded.contiguous_seq, max_seq = max(max_seq, excluded.max_seq), "
        "ops_merged = ops_merged + 1, last_hlc = max(last_hlc, excluded.last_hlc)",
        (origin, contiguous, max(max_seq, contiguous), hlc),
    )
    return True


def _versions(conn: sqlite3.Connection, entity: str, record_id: str) -> dict[str, Version]:
    rows = conn.execute(
        "SELECT field, hlc, node FROM field_versions WHERE entity = ? AND record_id = ?",
        (entity, record_id),
    )
    return {str(f): Version(int(h), str(n)) for f, h, n in rows}


def _set_versions(
    conn: sqlite3.Connection, entity: str, record_id: str, versions: Mapping[str, Version]
) -> None:
    if versions:
        conn.executemany(
            "INSERT INTO field_versions VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity, record_id, field) "
            "DO UPDATE SET hlc = excluded.hlc, node = excluded.node",
            [(entity, record_id, f, v.hlc, v.node) for f, v in versions.items()],
        )


def load_set(conn: sqlite3.Connection, entity: str, record_id: str, field: str) -> ORSet:
    """The OR-set state of one set field (empty when never written)."""
    row = conn.execute(
        "SELECT state FROM set_states WHERE entity = ? AND record_id = ? AND field = ?",
        (entity, record_id, field),
    ).fetchone()
    return ORSet() if row is None else decode_orset(row[0])


def save_set(conn: sqlite3.Connection, entity: str, record_id: str, field: str, state: ORSet) -> None:
    """Store one set field's OR-set state."""
    conn.execute(
        "INSERT INTO set_states VALUES (?, ?, ?, ?) ON CONFLICT(entity, record_id, field) "
        "DO UPDATE SET state = excluded.state",
        (entity, record_id, field, encode_orset(state)),
    )


def region_digests(
    conn: sqlite3.Connection, region: str, forms: Mapping[str, Mapping[str, Form]] | None = None
) -> dict[str, object]:
    """Digests of every entity table of one region's replica, in the shape node and hub serve.

    Null columns are left out, so a column a replica never heard of and a null
    one digest alike. With ``forms`` (the region's residency policy per field)
    the digest covers what both sides of the egress hold: a sealed or
    pseudonymised field counts by its version (the node has the plaintext, the
    hub a ciphertext or token of the same write), a local field not at all.
    """
    reports = []
    for entity in ENTITIES:
        field_forms = forms.get(entity.name, {}) if forms is not None else {}
        hidden = {n for n, f in field_forms.items() if f is not Form.PLAIN}
        cur = conn.execute(f"SELECT * FROM {entity.table}")  # noqa: S608 - declared table names
        names = [d[0] for d in cur.description]
        rows = []
        for values in cur.fetchall():
            record = {n: v for n, v in zip(names, values, strict=True) if v is not None}
            if hidden:
                versions = _versions(conn, entity.name, str(record["id"])) if hidden & record.keys() else {}
                for name in hidden & record.keys():
                    version = versions.get(name)
                    if field_forms[name] is Form.LOCAL or version is None:
                        del record[name]
                    else:
                        record[name] = f"version:{version.hlc}:{version.node}"
            rows.append((str(record["id"]), record))
        reports.append(DigestReport(region, entity.name, len(rows), digest(rows)))
    return digests_json(region, reports)


def mark_handled(conn: sqlite3.Connection, op: Op) -> bool:
    """Count ``op`` as dealt with without merging it (refused and quarantined); False if it was already.

    The origin's gap-free watermark moves past it, so the origin does not send it forever.
    """
    return _note_seq(conn, op.origin, op.seq, op.hlc)


__all__ = [
    "REPLICA_TABLES",
    "Counter",
    "MergeOutcome",
    "contiguous_seq",
    "load_set",
    "mark_handled",
    "merge_op",
    "progress",
    "record_local",
    "region_digests",
    "save_set",
]
