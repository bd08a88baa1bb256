"""Erasure of a customer, offline key administration and audited tokens, without a node process.

The pure parts (what to blank, the scrub of one change-log row, the request body)
run on plain values; the store transaction, the key store and the audit log run
on real files in ``tmp_path``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgpack
import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.testing import TestClient
from typer.testing import CliRunner

from edge_node.admin_audit import (
    NodeNotStartedError,
    NodeRunningError,
    audit_token_issued,
    ensure_stopped,
    inventory_json,
    inventory_offline,
    rotate_kek_offline,
)
from edge_node.cli_keys import keys_app
from edge_node.egress import key_event_entry
from edge_node.erasure import (
    DEFAULT_REASON,
    blanking,
    erase_customer,
    erase_records,
    parse_reason,
    personal_fields,
    scrub_row,
)
from edge_node.http_admin import ADMIN_ROUTES
from edge_node.http_common import authenticate, domain_error, http_error
from edge_node.node_security import open_audit_log
from edge_node.store import NotFoundError, Store, Tx
from security.audit_log import AuditLog, verify_data_dir
from security.errors import SecurityError
from security.identity import NodeIdentity
from security.keys import KekInfo, KeyEvent, KeyInventory, KeyShreddedError, ShreddedKey, keystore_path
from security.keystore import KeyStore
from security.roles import ForbiddenError, Role
from security.tokens import Principal, issue_token, new_secret
from sync.crdt import FieldChange, Register, SetDelta, Version
from sync.entities import COMMENT, CUSTOMER, DEPARTMENT, TICKET
from sync.entity import DataClass, Entity, Field, Kind, MergeKind, ValidationError, Value
from sync.transport.codec import decode_changes

REGION = "eu-de"
NODE = "eu-de-0001"
CANARY = "Zebulon-Canary"
ADMIN = Principal(Role.REGIONAL_ADMIN, "admin-1", issued_at=0, expires_at=None)
V1 = Version(100, "n1")
V2 = Version(200, "n1")


def reg(value: str | int | None, version: Version = V1) -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, version))


# --- pure: what to blank ---------------------------------------------------------------------


def test_the_personal_fields_come_from_the_declarations() -> None:
    assert personal_fields(CUSTOMER) == ("name", "phone", "email", "address")
    assert personal_fields(TICKET) == ("subject", "description", "location", "symptom", "escalation_reason")
    assert personal_fields(COMMENT) == ("body",)
    assert personal_fields(DEPARTMENT) == ()


def test_blanking_sets_each_personal_value_to_none_and_skips_empty_ones() -> None:
    record: dict[str, Value] = {"id": "C1", "name": "Ann", "phone": "+4930123456", "email": None}
    assert blanking(CUSTOMER, record) == {"name": None, "phone": None}
    assert blanking(CUSTOMER, {**record, "name": None, "phone": None}) == {}


def test_scrub_row_blanks_personal_values_in_both_maps_and_keeps_versions() -> None:
    fields = {"id": "T1", "subject": CANARY, "type": "fault", "description": None, "customer_id": "C1"}
    changes = {
        "subject": reg(CANARY, V2),
        "type": reg("fault"),
        "description": reg(None),
        "tags": FieldChange(MergeKind.SET, delta=SetDelta({"vip": V1})),
    }

    row = scrub_row(TICKET, fields, changes)

    assert row.fields == {**fields, "subject": None}
    assert row.changes == {**changes, "subject": reg(None, V2)}
    assert row.changes["tags"] is changes["tags"]  # operational: untouched
    assert row.blanked == 2


def test_scrub_row_is_idempotent() -> None:
    once = scrub_row(COMMENT, {"body": CANARY, "internal": 0}, {"body": reg(CANARY)})
    twice = scrub_row(COMMENT, once.fields, once.changes)
    assert (twice.fields, twice.changes, twice.blanked) == (once.fields, once.changes, 0)


def test_scrub_row_keeps_a_missing_changes_column_missing_and_undeclared_names() -> None:
    row = scrub_row(CUSTOMER, {"name": CANARY, "from_a_newer_peer": "x"}, None)
    assert (row.fields, row.changes, row.blanked) == ({"name": None, "from_a_newer_peer": "x"}, None, 1)


def test_scrub_row_empties_a_personal_set() -> None:
    entity = Entity(
        "contact",
        "contacts",
        (
            Field("id", Kind.ID, DataClass.OPERATIONAL),
            Field("aliases", Kind.TEXT_SET, DataClass.PERSONAL, merge=MergeKind.SET),
        ),
    )
    delta = SetDelta({CANARY: V1}, {"old": frozenset({V1})})
    row = scrub_row(
        entity, {"aliases": json.dumps([CANARY])}, {"aliases": FieldChange(MergeKind.SET, delta=delta)}
    )
    assert row.changes == {"aliases": FieldChange(MergeKind.SET, delta=SetDelta())}
    assert row.fields == {"aliases": None}
    assert row.blanked == 2


def test_parse_reason_defaults_and_strips() -> None:
    assert parse_reason({}) == DEFAULT_REASON
    assert parse_reason({"reason": None}) == DEFAULT_REASON
    assert parse_reason({"reason": "  DSR-2026-0042 "}) == "DSR-2026-0042"
    assert parse_reason({"reason": "x" * 200}) == "x" * 200


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"reason": "x" * 201}, "reason", "longer than 200 characters"),
        ({"reason": 42}, "reason", "expected a string, got int"),
        ({"reason": "  "}, "reason", "must not be empty; omit it for the default"),
        ({"reason": "a\nb"}, "reason", "contains control characters"),
        ({"why": "x"}, "why", "unknown field; send only 'reason'"),
    ],
)
def test_parse_reason_names_the_problem(body: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_reason(body)
    assert [(p.field, p.problem) for p in info.value.problems] == [(field, problem)]


# --- the store transaction -----------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "edgecare.db", node_id="n1")
    s.open()
    try:
        yield s
    finally:
        s.close()


async def seed(store: Store, customer_id: str = "C1", *, canary: str = CANARY) -> None:
    def write(tx: Tx) -> None:
        tx.insert(CUSTOMER, {"id": customer_id, "name": canary, "phone": "+4930123456", "language": "en"})
        tx.update(CUSTOMER, customer_id, {"email": f"{canary}@example.org"})
        for n in (1, 2):
            ticket = f"{customer_id}-T{n}"
            tx.insert(
                TICKET,
                {
                    "id": ticket,
                    "type": "consult",
                    "subject": canary,
                    "customer_id": customer_id,
                    "tags": frozenset({"billing"}),
                },
            )
            tx.insert(COMMENT, {"id": f"{ticket}-K", "ticket_id": ticket, "body": canary, "internal": False})

    await store.write(write, actor="agent-1")


def raw_changelog(store: Store) -> list[tuple[str, str, bytes, bytes]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            "SELECT entity, record_id, fields, changes FROM changelog ORDER BY seq"
        ).fetchall()


async def test_erase_records_blanks_the_tables_and_the_change_log(store: Store) -> None:
    await seed(store, "C1")
    await seed(store, "C2", canary="Other-Person")
    before = await store.read(lambda r: r.crdt_ops())

    erased = await store.write(lambda tx: erase_records(tx, "C1"), actor="admin-1")

    assert (erased.tickets, erased.comments) == (2, 2)
    assert erased.fields_blanked == 3 + 2 + 2  # name, phone, email + 2 subjects + 2 bodies
    assert erased.changelog_rows_scrubbed == 2 + 2 + 2  # customer insert+update, 2 tickets, 2 comments
    customer = await store.read(lambda r: r.require(CUSTOMER, "C1"))
    assert (customer["name"], customer["phone"], customer["email"], customer["language"]) == (
        None,
        None,
        None,
        "en",
    )
    tickets = await store.read(lambda r: r.select(TICKET, "customer_id = ?", ("C1",)))
    assert [(t["subject"], t["tags"]) for t in tickets] == [(None, frozenset({"billing"}))] * 2
    comments = await store.read(lambda r: r.select(COMMENT, "ticket_id LIKE 'C1-%'", ()))
    assert [c["body"] for c in comments] == [None, None]
    rows = raw_changelog(store)
    assert not [r for r in rows if CANARY.encode() in r[2] or CANARY.encode() in r[3]]
    assert [r for r in rows if b"Other-Person" in r[2] and b"Other-Person" in r[3]]  # C2 untouched
    after = {op.seq: op for op in await store.read(lambda r: r.crdt_ops())}
    for op in before:  # same sequence numbers and versions; only personal values are gone
        scrubbed = after[op.seq]
        assert scrubbed.changes.keys() == op.changes.keys()
        for name, change in op.changes.items():
            if change.register is not None:
                assert scrubbed.changes[name].register is not None
                assert scrubbed.changes[name].register.version == change.register.version  # type: ignore[union-attr]  # checked above
    erasure_ops = [op for op in after.values() if op.seq > max(o.seq for o in before)]
    assert {(op.entity, op.record_id) for op in erasure_ops} == {
        ("customer", "C1"),
        ("ticket", "C1-T1"),
        ("ticket", "C1-T2"),
        ("comment", "C1-T1-K"),
        ("comment", "C1-T2-K"),
    }
    assert all(
        c.register is not None and c.register.value is None for op in erasure_ops for c in op.changes.values()
    )


async def test_the_operations_keep_decoding_after_the_scrub(store: Store) -> None:
    await seed(store)
    await store.write(lambda tx: erase_records(tx, "C1"), actor="admin-1")
    operations = await store.read(lambda r: r.operations())
    assert all(op.fields.get("name") is None for op in operations if op.entity == "customer")
    for _, _, fields, changes in raw_changelog(store):
        msgpack.unpackb(fields)
        decode_changes(changes)


async def test_erasing_again_writes_nothing(store: Store) -> None:
    await seed(store)
    await store.write(lambda tx: erase_records(tx, "C1"), actor="admin-1")
    seq = store.statistics().last_seq

    again = await store.write(lambda tx: erase_records(tx, "C1"), actor="admin-1")

    assert (again.fields_blanked, again.changelog_rows_scrubbed, again.tickets) == (0, 0, 2)
    assert store.statistics().last_seq == seq


async def test_an_unknown_customer_changes_nothing(store: Store) -> None:
    await seed(store)
    seq = store.statistics().last_seq
    with pytest.raises(NotFoundError, match=r"^customer 'nobody' not found$"):
        await store.write(lambda tx: erase_records(tx, "nobody"), actor="admin-1")
    assert store.statistics().last_seq == seq


async def test_secure_delete_is_restored_after_the_transaction(store: Store) -> None:
    await seed(store)

    def erase_with_delete_off(tx: Tx) -> int:
        tx.conn.execute("PRAGMA secure_delete = OFF")
        erase_records(tx, "C1")
        return int(tx.conn.execute("PRAGMA secure_delete").fetchone()[0])

    assert await store.write(erase_with_delete_off, actor="admin-1") == 0


# --- the whole erasure with keys and the audit log -------------------------------------------------


@pytest.fixture
def identity(tmp_path: Path) -> NodeIdentity:
    return NodeIdentity.load_or_create(tmp_path / "identity")


@pytest.fixture
def audit(tmp_path: Path, identity: NodeIdentity) -> Iterator[AuditLog]:
    with open_audit_log(tmp_path, identity, node_id=NODE, region=REGION) as log:
        yield log


@pytest.fixture
def keys(tmp_path: Path, audit: AuditLog) -> Iterator[KeyStore]:
    def record(event: KeyEvent) -> None:
        audit.append(*key_event_entry(event))

    with KeyStore(keystore_path(tmp_path), region=REGION, on_event=record) as k:
        yield k


async def test_erase_customer_blanks_shreds_and_audits(store: Store, keys: KeyStore, audit: AuditLog) -> None:
    await seed(store)
    keys.data_key("customer:C1")

    summary = await erase_customer(store, keys, audit, ADMIN, "C1", reason="DSR-42")

    assert summary.as_dict() == {
        "customer_id": "C1",
        "key_id": "customer:C1",
        "already_erased": False,
        "key_destroyed": True,
        "tickets": 2,
        "comments": 2,
        "fields_blanked": 7,
        "changelog_rows_scrubbed": 6,
        "wal_checkpointed": True,
        "reason": "DSR-42",
        "by": {"name": "admin-1", "role": "regional_admin"},
    }
    with pytest.raises(KeyShreddedError):
        keys.data_key("customer:C1")
    kinds = [e.kind for e in audit.entries()]
    assert kinds[-2:] == ["data_key_shredded", "erasure"]
    shredded, erasure = audit.entries()[-2:]
    assert (shredded.body["key_id"], shredded.body["reason"]) == ("customer:C1", "DSR-42")
    assert (erasure.body["customer_id"], erasure.body["key_id"]) == ("C1", "customer:C1")
    assert (store.path.with_name("edgecare.db-wal")).stat().st_size == 0  # truncated by the checkpoint


async def test_erasing_twice_is_idempotent(store: Store, keys: KeyStore, audit: AuditLog) -> None:
    await seed(store)
    await erase_customer(store, keys, audit, ADMIN, "C1")

    again = await erase_customer(store, keys, audit, ADMIN, "C1")

    assert (again.already_erased, again.key_destroyed, again.fields_blanked) == (True, False, 0)
    assert keys.is_shredded("customer:C1")
    assert [e.kind for e in audit.entries()].count("data_key_shredded") == 1


async def test_only_the_regional_admin_may_erase(store: Store, keys: KeyStore, audit: AuditLog) -> None:
    await seed(store)
    seq, entries = store.statistics().last_seq, audit.statistics().entries
    supervisor = Principal(Role.SUPERVISOR, "sup-1", issued_at=0, expires_at=None)

    with pytest.raises(ForbiddenError, match="erase_personal_data"):
        await erase_customer(store, keys, audit, supervisor, "C1")

    assert (store.statistics().last_seq, audit.statistics().entries) == (seq, entries)
    assert not keys.is_shredded("customer:C1")


# --- key administration from the data directory ------------------------------------------------------


def test_key_event_entry_has_the_egress_shape() -> None:
    event = KeyEvent("kek_rotated", "kek", 3, 1, {"old_version": 2, "rewrapped": 5, "odd": b"x"})
    assert key_event_entry(event) == (
        "kek_rotated",
        {"key_id": "kek", "version": 3, "old_version": 2, "rewrapped": 5, "odd": "b'x'"},
    )


def test_inventory_json_names_versions_and_tombstones() -> None:
    inventory = KeyInventory(
        region=REGION,
        location="/d/keys/keys.db",
        keks=(KekInfo(2, 10, "ab" * 8),),
        data_keys_active=3,
        data_keys_shredded=1,
        shredded=(ShreddedKey("customer:C1", 20, "DSR-42"),),
        pseudonym_key_fingerprint="cd" * 8,
    )
    assert inventory_json(inventory) == {
        "region": REGION,
        "location": "/d/keys/keys.db",
        "kek_version": 2,
        "keks": [{"version": 2, "created_at_ms": 10, "fingerprint": "ab" * 8}],
        "data_keys_active": 3,
        "data_keys_shredded": 1,
        "shredded": [{"key_id": "customer:C1", "shredded_at_ms": 20, "reason": "DSR-42"}],
        "pseudonym_key_fingerprint": "cd" * 8,
    }


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A data directory as a node leaves it after its first start and stop."""
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "node-id").write_text(NODE + "\n")
    (data_dir / "region").write_text(REGION + "\n")
    identity = NodeIdentity.load_or_create(data_dir / "identity")
    with KeyStore(keystore_path(data_dir), region=REGION) as keys:
        keys.data_key("customer:C1")
    with open_audit_log(data_dir, identity, node_id=NODE, region=REGION):
        pass
    return data_dir


def audit_kinds(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "audit" / "audit.db") as conn:
        return [k for (k,) in conn.execute("SELECT kind FROM entries ORDER BY seq")]


def test_rotate_offline_rewraps_and_audits(node_dir: Path) -> None:
    rotation = rotate_kek_offline(node_dir)

    assert (rotation.old_version, rotation.new_version, rotation.rewrapped) == (1, 2, 1)
    assert audit_kinds(node_dir) == ["kek_rotated"]
    assert verify_data_dir(node_dir).ok
    with KeyStore(keystore_path(node_dir), region=REGION) as keys:
        assert keys.kek_version == 2
        keys.existing_data_key("customer:C1")  # still unwraps


def test_rotate_offline_refuses_a_running_node(node_dir: Path) -> None:
    with KeyStore(keystore_path(node_dir), region=REGION) as running:
        with pytest.raises(NodeRunningError, match=r"in use by a running node; stop the node before"):
            rotate_kek_offline(node_dir)
        assert running.kek_version == 1
    ensure_stopped(keystore_path(node_dir), "rotating")  # free again once closed


def test_rotate_offline_refuses_a_directory_without_keys(node_dir: Path) -> None:
    keys_db = keystore_path(node_dir)
    keys_db.unlink()
    with pytest.raises(NodeNotStartedError) as info:
        rotate_kek_offline(node_dir)
    assert str(keys_db) in str(info.value)
    assert not keys_db.exists()


def test_the_cli_rotates_and_lists(node_dir: Path) -> None:
    runner = CliRunner()

    rotated = runner.invoke(keys_app, ["rotate", "--data-dir", str(node_dir)])
    listed = runner.invoke(keys_app, ["list", "--data-dir", str(node_dir)])

    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout.startswith("KEK v1 -> v2; re-wrapped 1 data keys")
    assert listed.exit_code == 0, listed.output
    inventory = json.loads(listed.stdout)
    assert (inventory["kek_version"], inventory["data_keys_active"]) == (2, 1)
    assert inventory == inventory_json(inventory_offline(node_dir))


def test_the_cli_refuses_an_empty_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(keys_app, ["rotate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"holds no started node: {tmp_path / 'keys' / 'keys.db'} is missing" in result.stderr
    assert "start the node once with --data-dir" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_token_issued_is_audited(node_dir: Path) -> None:
    audit_token_issued(node_dir, role=Role.SUPERVISOR, name="sup-1", expires_at=1_800_000_000)
    audit_token_issued(node_dir, role="agent", name="agent-1", expires_at=None)

    with sqlite3.connect(node_dir / "audit" / "audit.db") as conn:
        rows = conn.execute("SELECT kind, body FROM entries ORDER BY seq").fetchall()
    assert [(k, json.loads(b)) for k, b in rows] == [
        ("token_issued", {"role": "supervisor", "name": "sup-1", "expires_at": 1_800_000_000}),
        ("token_issued", {"role": "agent", "name": "agent-1", "expires_at": None}),
    ]
    assert verify_data_dir(node_dir).ok


def test_a_token_for_a_never_started_node_is_not_audited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_node.admin_audit"):
        audit_token_issued(tmp_path, role="agent", name="agent-1", expires_at=None)
    assert "token for agent-1 (agent) not audited" in caplog.text
    assert list(tmp_path.iterdir()) == []


# --- the HTTP adapter without security -------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[tuple[TestClient[Litestar], bytes]]:
    secret = new_secret()
    app = Litestar(
        route_handlers=ADMIN_ROUTES,
        dependencies={"principal": Provide(authenticate)},
        exception_handlers={SecurityError: domain_error, HTTPException: http_error},
        state=State({"token_secret": secret, "security": None, "service": None}),
    )
    with TestClient(app) as test_client:
        yield test_client, secret


def bearer(secret: bytes, role: Role) -> dict[str, str]:
    token = issue_token(secret, Principal(role, f"{role.value}-1", issued_at=0, expires_at=None))
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/customers/C1/erasure"), ("POST", "/api/v1/keys/rotate"), ("GET", "/api/v1/keys")],
)
def test_without_security_the_routes_answer_503_after_the_permission_check(
    api: tuple[TestClient[Litestar], bytes], method: str, path: str
) -> None:
    test_client, secret = api

    denied = test_client.request(method, path, headers=bearer(secret, Role.AGENT))
    unavailable = test_client.request(method, path, headers=bearer(secret, Role.REGIONAL_ADMIN))

    assert denied.status_code == 403, denied.text
    assert unavailable.status_code == 503, unavailable.text
    assert unavailable.json()["detail"] == "security is not initialised"
