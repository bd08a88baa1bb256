"""Erasure of a customer and KEK rotation on a real, standalone node process.

The erasure test plants canary strings in every personal field a customer, its
ticket and a comment have, erases the customer through the API, and then looks
for the canaries in the node's raw database files (while it runs, and after it
stops), in the change log, in the key store and in the audit log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from typer.testing import CliRunner

from edge_node.admin_audit import audit_token_issued
from edge_node.cli_keys import keys_app
from security.audit_log import verify_data_dir
from security.keys import KeyShreddedError, keystore_path
from security.keystore import KeyStore
from sync.transport.codec import decode_changes
from tests.integration.nodeproc import NodeProcess, running_node

API = "/api/v1"
REGION = "eu-de"
CANARIES = {
    "name": "Canary-Name-7f3a",
    "phone": "+4915550123987",
    "email": "canary.7f3a@example.org",
    "address": "Canary Street 7f3a",
    "subject": "Canary-Subject-7f3a",
    "description": "Canary-Description-7f3a",
    "body": "Canary-Comment-7f3a",
}


def client(node: NodeProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def canaries_in(path: Path) -> list[str]:
    data = path.read_bytes()
    return [name for name, value in CANARIES.items() if value.encode() in data]


def db_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "edgecare.db", data_dir / "edgecare.db-wal") if p.exists()]


def audit_entries(data_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(f"file:{data_dir / 'audit' / 'audit.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT kind, body FROM entries ORDER BY seq").fetchall()
    return [(str(kind), json.loads(body)) for kind, body in rows]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def node(data_dir: Path) -> Iterator[NodeProcess]:
    with running_node(data_dir, region=REGION) as proc:
        yield proc


def test_erasure_leaves_no_plaintext_and_shreds_the_key(node: NodeProcess, data_dir: Path) -> None:
    admin = client(node, node.token("regional_admin", name="admin-1"))
    agent = client(node, node.token("agent", name="agent-1"))
    with admin, agent:
        customer = ok(
            agent.post(
                f"{API}/customers",
                json={k: CANARIES[k] for k in ("name", "phone", "email", "address")} | {"vip_tier": "gold"},
            ),
            201,
        )
        cid = customer["id"]
        ticket_body = {
            "type": "complaint",
            "subject": CANARIES["subject"],
            "description": CANARIES["description"],
            "customer_id": cid,
        }
        retry = {"Idempotency-Key": "dsr-ticket-1"}  # the key keeps a digest of the body until erased
        ticket = ok(agent.post(f"{API}/tickets", json=ticket_body, headers=retry), 201)
        tid = ticket["id"]
        ok(agent.post(f"{API}/tickets/{tid}/comments", json={"body": CANARIES["body"]}), 201)
        ok(agent.patch(f"{API}/tickets/{tid}", json={"description": CANARIES["description"] + "!"}))

        refused = agent.post(f"{API}/customers/{cid}/erasure", json={"reason": "DSR-1"})
        assert refused.status_code == 403, refused.text
        assert "erase_personal_data" in refused.json()["detail"]
        assert ok(agent.get(f"{API}/customers/{cid}"))["name"] == CANARIES["name"]

        summary = ok(admin.post(f"{API}/customers/{cid}/erasure", json={"reason": "DSR-1"}))

        assert summary == {
            "customer_id": cid,
            "key_id": f"customer:{cid}",
            "already_erased": False,
            "key_destroyed": False,  # standalone: nothing was ever sealed, so no key existed
            "tickets": 1,
            "comments": 1,
            "fields_blanked": 4 + 2 + 1,
            "changelog_rows_scrubbed": 4,  # customer, ticket insert and edit, comment
            "wal_checkpointed": True,
            "reason": "DSR-1",
            "by": {"name": "admin-1", "role": "regional_admin"},
        }
        shown = ok(agent.get(f"{API}/customers/{cid}"))
        assert {k: shown[k] for k in ("name", "phone", "email", "address")} == dict.fromkeys(
            ("name", "phone", "email", "address")
        )
        assert (shown["id"], shown["vip_tier"]) == (cid, "gold")
        shown_ticket = ok(agent.get(f"{API}/tickets/{tid}"))
        assert (shown_ticket["subject"], shown_ticket["description"]) == (None, None)
        assert (shown_ticket["customer_id"], shown_ticket["type"]) == (cid, "complaint")
        assert [c["body"] for c in ok(agent.get(f"{API}/tickets/{tid}/comments"))["items"]] == [None]
        assert ok(agent.get(f"{API}/tickets", params={"customer_id": cid}))["items"][0]["subject"] is None
        for path in db_files(data_dir):  # the checkpoint emptied the WAL while the node runs
            assert canaries_in(path) == [], path

        again = ok(admin.post(f"{API}/customers/{cid}/erasure"))
        assert (again["already_erased"], again["fields_blanked"], again["reason"]) == (
            True,
            0,
            "erasure requested",
        )
        missing = admin.post(f"{API}/customers/nobody-42/erasure")
        assert missing.status_code == 404, missing.text
        assert "nobody-42" in missing.json()["detail"]
        too_long = admin.post(f"{API}/customers/{cid}/erasure", json={"reason": "x" * 201})
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["errors"] == [{"field": "reason", "problem": "longer than 200 characters"}]

        later = ok(
            agent.post(f"{API}/tickets", json={"type": "consult", "subject": "new", "customer_id": cid}), 201
        )
        assert ok(agent.get(f"{API}/tickets/{later['id']}"))["subject"] == "new"  # local data still works
    assert node.stop() == 0

    leftovers = {p.name: canaries_in(p) for p in db_files(data_dir)}
    assert leftovers == {"edgecare.db": []}  # the WAL is gone after a clean stop
    everywhere = {str(p.relative_to(data_dir)): canaries_in(p) for p in data_dir.rglob("*") if p.is_file()}
    assert {name: found for name, found in everywhere.items() if found} == {}
    with sqlite3.connect(f"file:{data_dir / 'edgecare.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT entity, fields, changes FROM changelog").fetchall()
        kept = conn.execute("SELECT record_id FROM idempotency_keys").fetchall()
    assert (tid,) not in kept, "the erased ticket's idempotency key (a digest of its body) was kept"
    for entity, fields, changes in rows:
        for value in CANARIES.values():
            assert value.encode() not in fields, entity
            assert value.encode() not in changes, entity
        msgpack.unpackb(fields)
        decode_changes(changes)
    assert "Canary" not in node.log

    with KeyStore(keystore_path(data_dir), region=REGION) as keys:
        with pytest.raises(KeyShreddedError):
            keys.existing_data_key(f"customer:{cid}")
        with pytest.raises(KeyShreddedError):
            keys.data_key(f"customer:{cid}")
    assert verify_data_dir(data_dir).ok
    entries = audit_entries(data_dir)
    shredded = [b for k, b in entries if k == "data_key_shredded"]
    erasures = [b for k, b in entries if k == "erasure"]
    assert [(b["key_id"], b["reason"]) for b in shredded] == [(f"customer:{cid}", "DSR-1")]
    assert [(b["customer_id"], b["key_id"], b["already_erased"]) for b in erasures] == [
        (cid, f"customer:{cid}", False),
        (cid, f"customer:{cid}", True),
    ]
    assert not [k for k, b in entries if any(v in json.dumps(b) for v in CANARIES.values())]


def test_kek_rotation_through_the_api_and_the_cli(node: NodeProcess, data_dir: Path) -> None:
    admin = client(node, node.token("regional_admin", name="admin-1"))
    agent = client(node, node.token("agent", name="agent-1"))
    auditor = client(node, node.token("compliance_auditor", name="auditor-1"))
    with admin, agent, auditor:
        before = ok(auditor.get(f"{API}/keys"))
        assert (before["region"], before["kek_version"], len(before["keks"])) == (REGION, 1, 1)
        assert agent.get(f"{API}/keys").status_code == 403
        refused = agent.post(f"{API}/keys/rotate")
        assert refused.status_code == 403, refused.text
        assert "manage_keys" in refused.json()["detail"]
        assert auditor.post(f"{API}/keys/rotate").status_code == 403

        rotation = ok(admin.post(f"{API}/keys/rotate"))

        assert (rotation["old_version"], rotation["new_version"]) == (1, 2)
        after = ok(admin.get(f"{API}/keys"))
        assert (after["kek_version"], [k["version"] for k in after["keks"]]) == (2, [2])
        assert after["keks"][0]["fingerprint"] != before["keks"][0]["fingerprint"]
        assert after["pseudonym_key_fingerprint"] == before["pseudonym_key_fingerprint"]
        busy = CliRunner().invoke(keys_app, ["rotate", "--data-dir", str(data_dir)])
        assert busy.exit_code == 2
        assert "in use by a running node" in busy.stderr
        assert ok(admin.get(f"{API}/keys"))["kek_version"] == 2
    assert node.stop() == 0

    rotated = [b for k, b in audit_entries(data_dir) if k == "kek_rotated"]
    assert [(b["version"], b["old_version"], b["by"]) for b in rotated] == [(2, 1, "regional_admin:admin-1")]
    offline = CliRunner().invoke(keys_app, ["rotate", "--data-dir", str(data_dir)])
    assert offline.exit_code == 0, offline.output
    assert offline.stdout.startswith("KEK v2 -> v3;")
    audit_token_issued(data_dir, role="supervisor", name="sup-1", expires_at=None)
    kinds = [k for k, _ in audit_entries(data_dir)]
    assert kinds[-2:] == ["kek_rotated", "token_issued"]
    assert verify_data_dir(data_dir).ok

    # the offline rotation left a key store the node starts with
    with (
        running_node(data_dir, region=REGION) as restarted,
        client(restarted, restarted.token("compliance_auditor")) as c,
    ):
        assert ok(c.get(f"{API}/keys"))["kek_version"] == 3
