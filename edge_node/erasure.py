"""Erasure of a customer's personal data (GDPR Art. 17) by blanking and crypto-shredding.

Theory of operation
-------------------
A customer's personal data lives in three places on a node and one off it:

* the entity tables: the customer's personal fields, those of every ticket
  whose ``customer_id`` is the customer, and those of those tickets' comments
  (the data classes come from the declarations in :mod:`sync.entities`);
* the change log (the outbox): every local write keeps the values it set, once
  in ``fields`` (MessagePack of storage values) and once in ``changes`` (the
  CRDT form replication ships), so old plaintext survives there after the
  tables are blanked;
* SQLite's own copies: freed space inside pages and old page images in the WAL;
* the hub, which holds the same fields sealed under the data key
  ``customer:<id>`` (:func:`sync.residency.key_id_for`).

:func:`erase_customer` deals with each, in this order:

1. one store transaction sets every personal field of those records to None
   through :meth:`edge_node.store.Tx.update`, so the erasure is an ordinary
   newer write that replicates under the usual rules (None passes every
   residency form), and rewrites the personal values of every change-log row
   of those records to None, keeping versions and sequence numbers, so what
   replication has not shipped yet ships blank. ``PRAGMA secure_delete`` is on
   for the transaction, so SQLite zeroes the cells it frees instead of leaving
   the old values in free space; afterwards a ``TRUNCATE`` checkpoint moves the
   WAL into the database file and empties it, so old page images go too;
2. the data key ``customer:<id>`` is shredded (:meth:`KeyStore.shred`): every
   copy sealed under it, the hub's included, becomes unreadable at once, and
   the key store's event hook appends ``data_key_shredded`` to the audit log;
3. an ``erasure`` entry names what was done, why and by whom (never the data);
   the replicator ships it to the hub with the next audit checkpoint.

Every step is idempotent, so a failed erasure is retried by asking again, and
asking twice is harmless: the second answer says ``already_erased``. New
personal data written for the customer later stays local: the egress cannot
seal under a shredded key and withholds it (``Egress.prepare``); erasing again
blanks it.

Out of reach: copies SQLite left in free space by writes made while
``secure_delete`` was off for the store (builds differ in the default), tickets
that belonged to the customer once but were moved to another customer, and
backups and disk blocks the file system has not reused yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from edge_node.store import Reader, Store, Tx
from security.audit_log import AuditLog
from security.keystore import KeyStore
from security.roles import Permission, require
from security.tokens import Principal
from sync.crdt import FieldChange, Register, SetDelta, StorageValue
from sync.entities import COMMENT, CUSTOMER, TICKET
from sync.entity import DataClass, Entity, FieldProblem, MergeKind, ValidationError, Value
from sync.residency import key_id_for
from sync.transport.codec import decode_changes, encode_changes

log = logging.getLogger(__name__)

DEFAULT_REASON: Final = "erasure requested"
MAX_REASON_CHARS: Final = 200
_CHUNK: Final = 500  # ids per IN (...) list, well under SQLite's bound-variable limit


# --- pure: what to blank ---------------------------------------------------------------------


def personal_fields(entity: Entity) -> tuple[str, ...]:
    """The names of ``entity``'s personal fields, in declaration order."""
    return tuple(f.name for f in entity.fields if f.data_class is DataClass.PERSONAL)


def blanking(entity: Entity, record: Mapping[str, Value]) -> dict[str, Value]:
    """The update that erases ``record``: each personal field that holds a value, set to None.

    Fields already None are left out, so erasing twice writes nothing the second time.
    """
    return {name: None for name in personal_fields(entity) if record.get(name) is not None}


@dataclass(frozen=True, slots=True)
class ScrubbedRow:
    """A change-log row's decoded maps with the personal values set to None.

    Attributes:
        fields: the ``fields`` map (storage values).
        changes: the ``changes`` map (CRDT field changes), or None if the row has none.
        blanked: how many values were replaced; 0 means the row can stay as it is.
    """

    fields: dict[str, object]
    changes: dict[str, FieldChange] | None
    blanked: int


def scrub_row(
    entity: Entity, fields: Mapping[str, object], changes: Mapping[str, FieldChange] | None
) -> ScrubbedRow:
    """Blank the personal values of one change-log row; keep versions, other fields and undeclared names.

    A register keeps its version with a None value, as if the write had set None. A
    personal set (none is declared today) loses its elements: an empty delta.
    """
    personal = set(personal_fields(entity))
    blanked = 0
    new_fields: dict[str, object] = {}
    for name, value in fields.items():
        if name in personal and value is not None:
            value = None
            blanked += 1
        new_fields[name] = value
    if changes is None:
        return ScrubbedRow(new_fields, None, blanked)
    new_changes: dict[str, FieldChange] = {}
    for name, change in changes.items():
        if name in personal:
            scrubbed = _scrub_change(change)
            if scrubbed is not change:
                blanked += 1
            change = scrubbed
        new_changes[name] = change
    return ScrubbedRow(new_fields, new_changes, blanked)


def _scrub_change(change: FieldChange) -> FieldChange:
    """The change with its personal payload removed; the same object if there is none."""
    if change.register is not None and change.register.value is not None:
        return FieldChange(MergeKind.REGISTER, register=Register(None, change.register.version))
    if change.delta is not None and (change.delta.add or change.delta.remove):
        return FieldChange(MergeKind.SET, delta=SetDelta())
    return change  # counters hold counts, not personal values


def parse_reason(body: Mapping[str, object]) -> str:
    """The reason of an erasure request body ``{"reason"?: str}``; the default when absent.

    The reason goes to the key store's tombstone and the audit log, so it must
    name a ticket or request id, never personal data.

    Raises:
        ValidationError: naming each unknown field, or a reason that is not a
            non-empty string of at most 200 characters.
    """
    problems = [FieldProblem(name, "unknown field; send only 'reason'") for name in body if name != "reason"]
    raw = body.get("reason")
    reason = DEFAULT_REASON
    if raw is not None:
        if not isinstance(raw, str):
            problems.append(FieldProblem("reason", f"expected a string, got {type(raw).__name__}"))
        elif not raw.strip():
            problems.append(FieldProblem("reason", "must not be empty; omit it for the default"))
        elif len(raw.strip()) > MAX_REASON_CHARS:
            problems.append(FieldProblem("reason", f"longer than {MAX_REASON_CHARS} characters"))
        elif not raw.isprintable():
            problems.append(FieldProblem("reason", "contains control characters"))
        else:
            reason = raw.strip()
    if problems:
        raise ValidationError(problems)
    return reason


# --- the store transaction -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErasedRecords:
    """What the store transaction of an erasure touched."""

    tickets: int
    comments: int
    fields_blanked: int
    changelog_rows_scrubbed: int


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _marks(ids: Sequence[str]) -> str:
    return ", ".join("?" * len(ids))


def erase_records(tx: Tx, customer_id: str) -> ErasedRecords:
    """Blank the customer's personal data and scrub it from the change log, in the caller's transaction.

    Raises:
        NotFoundError: no customer has that id (nothing is written).
    """
    customer = tx.require(CUSTOMER, customer_id)
    tickets = tx.select(TICKET, "customer_id = ?", (customer_id,))
    ticket_ids = [str(t["id"]) for t in tickets]
    comments = [
        c
        for chunk in _chunks(ticket_ids)
        for c in tx.select(COMMENT, f"ticket_id IN ({_marks(chunk)})", chunk)
    ]
    targets = [(CUSTOMER, customer), *((TICKET, t) for t in tickets), *((COMMENT, c) for c in comments)]
    (previous,) = tx.conn.execute("PRAGMA secure_delete").fetchone()
    tx.conn.execute("PRAGMA secure_delete = ON")  # freed cells are zeroed, not left readable
    try:
        blanked = 0
        for entity, record in targets:
            changes = blanking(entity, record)
            if changes:
                tx.update(entity, str(record["id"]), changes)
                blanked += len(changes)
        scrubbed = sum(
            _scrub_changelog(tx, entity, [str(r["id"]) for e, r in targets if e is entity])
            for entity in (CUSTOMER, TICKET, COMMENT)
        )
        for entity in (CUSTOMER, TICKET, COMMENT):
            _forget_idempotency(tx, entity, [str(r["id"]) for e, r in targets if e is entity])
    finally:
        tx.conn.execute(f"PRAGMA secure_delete = {int(previous)}")
    return ErasedRecords(len(tickets), len(comments), blanked, scrubbed)


def _scrub_changelog(tx: Tx, entity: Entity, record_ids: Sequence[str]) -> int:
    """Rewrite the change-log rows of ``record_ids`` without personal values; return how many changed."""
    rewritten = 0
    for chunk in _chunks(record_ids):
        sql = "SELECT seq, fields, changes FROM changelog WHERE entity = ? AND record_id IN ({})"
        rows = tx.conn.execute(sql.format(_marks(chunk)), (entity.name, *chunk)).fetchall()
        for seq, fields_blob, changes_blob in rows:
            fields: dict[str, StorageValue] = msgpack.unpackb(fields_blob)
            changes = None if changes_blob is None else decode_changes(changes_blob)
            row = scrub_row(entity, fields, changes)
            if row.blanked:
                tx.conn.execute(
                    "UPDATE changelog SET fields = ?, changes = ? WHERE seq = ?",
                    (
                        msgpack.packb(row.fields),
                        None if row.changes is None else encode_changes(row.changes),
                        seq,
                    ),
                )
                rewritten += 1
    return rewritten


def _forget_idempotency(tx: Tx, entity: Entity, record_ids: Sequence[str]) -> None:
    """Drop the idempotency keys that created these records: each holds a digest of the request body."""
    for chunk in _chunks(record_ids):
        tx.conn.execute(
            f"DELETE FROM idempotency_keys WHERE entity = ? AND record_id IN ({_marks(chunk)})",  # noqa: S608
            (entity.name, *chunk),
        )


def checkpoint_wal(reader: Reader) -> bool:
    """Copy the WAL into the database file and truncate it; False if readers or a writer kept it busy."""
    busy, _, _ = reader.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


# --- the whole erasure -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErasureSummary:
    """The outcome of one erasure request, as the API answers and the audit log records it.

    Attributes:
        customer_id: the erased customer.
        key_id: the shredded data key, ``customer:<id>``.
        already_erased: the key had been shredded by an earlier erasure.
        key_destroyed: this request destroyed key material (False if none existed or it was gone).
        tickets: the customer's tickets, whose personal fields were blanked.
        comments: those tickets' comments, likewise.
        fields_blanked: personal field values set to None in the tables now.
        changelog_rows_scrubbed: change-log rows rewritten without personal values.
        wal_checkpointed: the WAL was emptied into the database file right away.
        reason: why, as the caller gave it (ids, never personal data).
        by_name: who asked (the token's name).
        by_role: in which role.
    """

    customer_id: str
    key_id: str
    already_erased: bool
    key_destroyed: bool
    tickets: int
    comments: int
    fields_blanked: int
    changelog_rows_scrubbed: int
    wal_checkpointed: bool
    reason: str
    by_name: str
    by_role: str

    def as_dict(self) -> dict[str, object]:
        """The JSON form: the audit entry's body and the API's answer."""
        return {
            "customer_id": self.customer_id,
            "key_id": self.key_id,
            "already_erased": self.already_erased,
            "key_destroyed": self.key_destroyed,
            "tickets": self.tickets,
            "comments": self.comments,
            "fields_blanked": self.fields_blanked,
            "changelog_rows_scrubbed": self.changelog_rows_scrubbed,
            "wal_checkpointed": self.wal_checkpointed,
            "reason": self.reason,
            "by": {"name": self.by_name, "role": self.by_role},
        }


async def erase_customer(
    store: Store,
    keys: KeyStore,
    audit: AuditLog,
    principal: Principal,
    customer_id: str,
    *,
    reason: str = DEFAULT_REASON,
) -> ErasureSummary:
    """Erase a customer's personal data on this node and shred their data key; see the module docstring.

    Raises:
        ForbiddenError: the caller's role does not grant ``erase_personal_data``.
        NotFoundError: no customer has that id (nothing changes).
        KeyStoreError, AuditLogUnavailableError, StoreError: a step failed; the
            steps before it stay done and asking again finishes the erasure.
    """
    require(principal.role, Permission.ERASE_PERSONAL_DATA)
    key_id = key_id_for(CUSTOMER.name, customer_id, None)
    already = await asyncio.to_thread(keys.is_shredded, key_id)
    erased = await store.write(lambda tx: erase_records(tx, customer_id), actor=principal.name)
    checkpointed = await store.read(checkpoint_wal)
    if not checkpointed:
        log.warning("erasure of %s: WAL checkpoint blocked; old page images stay until the next one", key_id)
    destroyed = await asyncio.to_thread(keys.shred, key_id, reason=reason)
    summary = ErasureSummary(
        customer_id=customer_id,
        key_id=key_id,
        already_erased=already,
        key_destroyed=destroyed,
        tickets=erased.tickets,
        comments=erased.comments,
        fields_blanked=erased.fields_blanked,
        changelog_rows_scrubbed=erased.changelog_rows_scrubbed,
        wal_checkpointed=checkpointed,
        reason=reason,
        by_name=principal.name,
        by_role=principal.role.value,
    )
    await asyncio.to_thread(audit.append, "erasure", summary.as_dict())
    log.info(
        "erased customer %s for %s (%s): %d tickets, %d comments, %d values, %d change-log rows",
        customer_id,
        principal.name,
        principal.role.value,
        erased.tickets,
        erased.comments,
        erased.fields_blanked,
        erased.changelog_rows_scrubbed,
    )
    return summary
