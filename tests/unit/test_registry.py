"""hub.db: tokens and nodes, the legacy migration, policies, replay nonces and the compliance evidence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_hub.core.enrollment import TokenRecord, secret_hash
from cloud_hub.registry import NodeRecord, PolicyConflictError, PolicyRecord, QuarantinedOp, Registry, day_of

DAY_MS = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TOKEN_ID = "0123456789abcdef"  # noqa: S105 - a token id is public
FORMS = {"public": "plain", "operational": "plain", "personal": "sealed", "media": "local"}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hub" / "hub.db"


@pytest.fixture
def registry(path: Path) -> Iterator[Registry]:
    reg = Registry(path)
    try:
        yield reg
    finally:
        reg.close()


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows as another process would read them (WAL lets it read beside the registry's connection)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def reopen(reg: Registry) -> Registry:
    reg.close()
    return Registry(reg.path)


def token(token_id: str = TOKEN_ID, region: str = "eu", created_ms: int = T0) -> TokenRecord:
    return TokenRecord(token_id, region, secret_hash(token_id.encode()), created_ms, created_ms + DAY_MS)


def node(node_id: str = "node-1", region: str = "eu", key: bytes = b"K" * 32, at_ms: int = T0) -> NodeRecord:
    return NodeRecord(node_id, region, "1.2.0", at_ms, key, at_ms)


def quarantined(region: str = "eu", seq: int = 1, at_ms: int = T0) -> QuarantinedOp:
    return QuarantinedOp(region, "node-1", seq, "ticket", f"T{seq}", ("subject", "tags"), "not sealed", at_ms)


def test_day_of_is_the_utc_calendar_day() -> None:
    assert day_of(0) == "1970-01-01"
    assert day_of(DAY_MS - 1) == "1970-01-01"
    assert day_of(DAY_MS) == "1970-01-02"
    assert day_of(T0) == "2023-11-14"


def test_the_database_is_created_with_its_directory_in_wal_mode(registry: Registry, path: Path) -> None:
    assert path.is_file()
    assert read(path, "PRAGMA journal_mode") == [("wal",)]


# --- tokens and nodes -----------------------------------------------------------------------------


def test_a_token_is_stored_as_issued_and_unknown_ids_read_as_none(registry: Registry) -> None:
    rec = token()
    registry.add_token(rec)
    assert registry.token(rec.token_id) == rec
    assert registry.token("ffffffffffffffff") is None


def test_a_token_id_is_issued_once(registry: Registry) -> None:
    registry.add_token(token())
    with pytest.raises(sqlite3.IntegrityError):
        registry.add_token(token(region="us"))
    assert registry.token("0123456789abcdef") == token()  # the failed insert rolled back, the lock is free


def test_tokens_list_by_creation_and_filter_by_region(registry: Registry) -> None:
    registry.add_token(token("bbbbbbbbbbbbbbbb", "us", T0 + 2))
    registry.add_token(token("aaaaaaaaaaaaaaaa", "eu", T0 + 1))
    registry.add_token(token("cccccccccccccccc", "eu", T0 + 3))
    assert [t.token_id for t in registry.tokens()] == [
        "aaaaaaaaaaaaaaaa",
        "bbbbbbbbbbbbbbbb",
        "cccccccccccccccc",
    ]
    assert [t.token_id for t in registry.tokens("eu")] == ["aaaaaaaaaaaaaaaa", "cccccccccccccccc"]
    assert registry.tokens("ap") == []


def test_enrolling_uses_the_token_and_registers_the_key(registry: Registry) -> None:
    registry.add_token(token())
    n = node(at_ms=T0 + 5)
    registry.enroll("0123456789abcdef", n)
    used = registry.token("0123456789abcdef")
    assert used is not None
    assert (used.used_ms, used.used_by, used.used_key) == (T0 + 5, "node-1", b"K" * 32)
    assert registry.nodes() == [n]


def test_enrolled_nodes_and_used_tokens_survive_a_reopen(registry: Registry) -> None:
    registry.add_token(token("aaaaaaaaaaaaaaaa"))
    registry.add_token(token("bbbbbbbbbbbbbbbb", "us"))
    registry.enroll("aaaaaaaaaaaaaaaa", node("node-1", "eu", b"1" * 32))
    registry.enroll("bbbbbbbbbbbbbbbb", node("node-2", "us", b"2" * 32))
    before_nodes, before_tokens = registry.nodes(), registry.tokens()
    again = reopen(registry)
    try:
        assert sorted(again.nodes(), key=lambda n: n.node_id) == sorted(before_nodes, key=lambda n: n.node_id)
        assert again.tokens() == before_tokens
        assert {n.node_id: n.public_key for n in again.nodes()} == {"node-1": b"1" * 32, "node-2": b"2" * 32}
    finally:
        again.close()


def test_re_enrolling_replaces_key_and_version_but_keeps_first_seen(registry: Registry) -> None:
    registry.add_token(token("aaaaaaaaaaaaaaaa"))
    registry.add_token(token("bbbbbbbbbbbbbbbb"))
    registry.enroll("aaaaaaaaaaaaaaaa", node(key=b"1" * 32, at_ms=T0))
    later = NodeRecord("node-1", "eu", "1.3.0", T0 + 99, b"2" * 32, T0 + 99)
    registry.enroll("bbbbbbbbbbbbbbbb", later)
    assert registry.nodes() == [NodeRecord("node-1", "eu", "1.3.0", T0, b"2" * 32, T0 + 99)]


def test_a_legacy_nodes_table_gains_the_key_columns(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, region TEXT NOT NULL, version TEXT NOT NULL, "
        "first_seen_ms INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO nodes VALUES ('old-1', 'eu', '0.9.0', ?)", (T0,))
    conn.commit()
    conn.close()

    reg = Registry(path)
    try:
        assert reg.nodes() == [NodeRecord("old-1", "eu", "0.9.0", T0, None, None)]
        reg.add_token(token())
        reg.enroll("0123456789abcdef", NodeRecord("old-1", "eu", "1.0.0", T0 + 7, b"K" * 32, T0 + 7))
        assert reg.nodes() == [NodeRecord("old-1", "eu", "1.0.0", T0, b"K" * 32, T0 + 7)]
        reg = reopen(reg)  # migrating twice must not add the columns again
        assert reg.nodes() == [NodeRecord("old-1", "eu", "1.0.0", T0, b"K" * 32, T0 + 7)]
        columns = [row[1] for row in read(path, "PRAGMA table_info(nodes)")]
        assert columns == ["node_id", "region", "version", "first_seen_ms", "public_key", "enrolled_ms"]
    finally:
        reg.close()


# --- policies -------------------------------------------------------------------------------------


def test_a_policy_version_is_registered_once(registry: Registry) -> None:
    first = PolicyRecord("node-1", "eu", 1, FORMS, T0)
    assert registry.register_policy(first)
    assert not registry.register_policy(first)
    assert registry.policies() == [first]


def test_a_known_version_with_other_forms_is_not_silently_ignored(registry: Registry) -> None:
    registry.register_policy(PolicyRecord("node-1", "eu", 1, FORMS, T0))
    conflicting = PolicyRecord("node-1", "eu", 1, {**FORMS, "personal": "plain"}, T0 + 1)
    with pytest.raises(PolicyConflictError, match="v1 before with other forms"):
        registry.register_policy(conflicting)
    assert [p.forms for p in registry.policies(node_id="node-1")] == [FORMS]


def test_policy_history_by_node_and_region(registry: Registry) -> None:
    records = [
        PolicyRecord("node-1", "eu", 1, FORMS, T0),
        PolicyRecord("node-2", "us", 1, FORMS, T0 + 1),
        PolicyRecord("node-1", "eu", 2, {**FORMS, "personal": "pseudonymised"}, T0 + 2),
    ]
    for r in records:
        assert registry.register_policy(r)
    assert registry.policies() == records
    assert registry.policies(node_id="node-1") == [records[0], records[2]]
    assert registry.policies(region="us") == [records[1]]
    assert registry.policies(region="us", node_id="node-1") == []
    again = reopen(registry)
    try:
        assert again.policies(region="eu")[-1].forms["personal"] == "pseudonymised"
    finally:
        again.close()


# --- replay nonces --------------------------------------------------------------------------------


def test_seen_frames_are_remembered_and_pruned(registry: Registry) -> None:
    registry.remember_frames(
        [("node-1", b"n1", T0, 1), ("node-1", b"n2", T0 + 10, None), ("node-2", b"n1", T0 + 20, 3)],
        prune_before_ms=0,
    )
    assert sorted(registry.seen_frames(0)) == [
        ("node-1", b"n1", T0, 1),
        ("node-1", b"n2", T0 + 10, None),
        ("node-2", b"n1", T0 + 20, 3),
    ]
    assert sorted(registry.seen_frames(T0 + 10)) == [
        ("node-1", b"n2", T0 + 10, None),
        ("node-2", b"n1", T0 + 20, 3),
    ]

    registry.remember_frames([("node-3", b"n9", T0 + 30, 4)], prune_before_ms=T0 + 10)
    assert sorted(registry.seen_frames(0)) == [
        ("node-1", b"n2", T0 + 10, None),
        ("node-2", b"n1", T0 + 20, 3),
        ("node-3", b"n9", T0 + 30, 4),
    ]
    again = reopen(registry)
    try:
        assert len(again.seen_frames(0)) == 3
    finally:
        again.close()


def test_remembering_a_nonce_again_replaces_it(registry: Registry) -> None:
    registry.remember_frames([("node-1", b"n1", T0, None)], prune_before_ms=0)
    registry.remember_frames([("node-1", b"n1", T0, 7)], prune_before_ms=0)
    assert registry.seen_frames(0) == [("node-1", b"n1", T0, 7)]


def test_a_nonce_older_than_the_prune_line_is_dropped_in_the_same_call(registry: Registry) -> None:
    registry.remember_frames([("node-1", b"old", T0 - 1, None)], prune_before_ms=T0)
    assert registry.seen_frames(0) == []


# --- evidence -------------------------------------------------------------------------------------


def test_refusals_add_up_per_region_reason_and_day(registry: Registry) -> None:
    registry.record_batch(at_ms=T0, refusals=[("eu", "replayed"), ("eu", "replayed"), ("us", "forged")])
    registry.record_batch(at_ms=T0 + 1, refusals=[("eu", "replayed"), ("eu", "policy_violation")])
    registry.record_batch(at_ms=T0 + DAY_MS, refusals=[("eu", "replayed")])
    assert registry.refusals() == {"replayed": 4, "forged": 1, "policy_violation": 1}
    assert registry.refusals(region="eu") == {"replayed": 4, "policy_violation": 1}
    assert registry.refusals(region="eu", since_day="2023-11-15") == {"replayed": 1}
    assert registry.refusals(region="eu", until_day="2023-11-14") == {"replayed": 3, "policy_violation": 1}
    assert registry.refusals(since_day="2023-11-14", until_day="2023-11-14") == {
        "replayed": 3,
        "forged": 1,
        "policy_violation": 1,
    }
    assert registry.refusals(region="ap") == {}
    rows = read(registry.path, "SELECT region, reason, day, count FROM refusals ORDER BY 1, 2, 3")
    assert rows == [
        ("eu", "policy_violation", "2023-11-14", 1),
        ("eu", "replayed", "2023-11-14", 3),
        ("eu", "replayed", "2023-11-15", 1),
        ("us", "forged", "2023-11-14", 1),
    ]


def test_arrivals_add_up_per_region_day_class_and_form(registry: Registry) -> None:
    registry.record_batch(
        at_ms=T0, egress={("eu", "personal", "sealed"): 3, ("eu", "operational", "plain"): 5}
    )
    registry.record_batch(
        at_ms=T0 + 1, egress={("eu", "personal", "sealed"): 2, ("us", "personal", "plain"): 1}
    )
    registry.record_batch(at_ms=T0 + DAY_MS, egress={("eu", "personal", "sealed"): 10})
    assert registry.egress_received("eu") == {("personal", "sealed"): 15, ("operational", "plain"): 5}
    assert registry.egress_received("eu", until_day="2023-11-14") == {
        ("personal", "sealed"): 5,
        ("operational", "plain"): 5,
    }
    assert registry.egress_received("eu", since_day="2023-11-15") == {("personal", "sealed"): 10}
    assert registry.egress_received("us") == {("personal", "plain"): 1}
    assert registry.egress_received("ap") == {}


def test_quarantined_ops_keep_ids_and_field_names_in_arrival_order(registry: Registry) -> None:
    a, b, c = quarantined("eu", 1, T0), quarantined("us", 2, T0 + 5), quarantined("eu", 3, T0 + 10)
    registry.record_batch(at_ms=T0, quarantined=[a, b])
    registry.record_batch(at_ms=T0 + 10, quarantined=[c], refusals=[("eu", "policy_violation")])
    assert registry.quarantine() == [a, b, c]
    assert registry.quarantine(region="eu") == [a, c]
    assert registry.quarantine(since_ms=T0 + 1) == [b, c]
    assert registry.quarantine(region="eu", since_ms=T0 + 1, until_ms=T0 + 10) == [c]
    assert registry.quarantine(until_ms=T0 + 4) == [a]
    assert a.fields == ("subject", "tags")


def test_a_batch_is_recorded_whole_or_not_at_all(registry: Registry) -> None:
    bad = QuarantinedOp("eu", "node-1", 1, "ticket", "T1", (object(),), "x", T0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.record_batch(
            at_ms=T0,
            refusals=[("eu", "replayed")],
            egress={("eu", "personal", "sealed"): 1},
            quarantined=[bad],
        )
    assert registry.refusals() == {}
    assert registry.egress_received("eu") == {}
    registry.record_batch(at_ms=T0, refusals=[("eu", "replayed")])  # and the lock was released
    assert registry.refusals() == {"replayed": 1}


def checkpoint(size: int, head: str, signed_at_ms: int) -> dict[str, object]:
    return {"size": size, "head": head, "signed_at_ms": signed_at_ms, "signature": f"sig-{size}-{head}"}


def test_checkpoints_are_kept_in_order_and_the_latest_per_node_wins(registry: Registry) -> None:
    registry.add_checkpoint("node-1", "eu", checkpoint(64, "aa", T0 + 2), received_ms=T0 + 3)
    registry.add_checkpoint("node-1", "eu", checkpoint(10, "bb", T0), received_ms=T0 + 1)
    registry.add_checkpoint(
        "node-1", "eu", checkpoint(64, "aa", T0 + 2), received_ms=T0 + 9
    )  # again: ignored
    registry.add_checkpoint("node-2", "eu", checkpoint(5, "cc", T0), received_ms=T0)
    registry.add_checkpoint("node-3", "us", checkpoint(99, "dd", T0), received_ms=T0)
    assert registry.checkpoints("node-1") == [checkpoint(10, "bb", T0), checkpoint(64, "aa", T0 + 2)]
    assert registry.latest_checkpoints("eu") == {
        "node-1": checkpoint(64, "aa", T0 + 2),
        "node-2": checkpoint(5, "cc", T0),
    }
    assert registry.latest_checkpoints("us") == {"node-3": checkpoint(99, "dd", T0)}
    assert registry.checkpoints("node-9") == []


def test_a_fork_keeps_both_checkpoints_and_shows_the_newer_as_latest(registry: Registry) -> None:
    registry.add_checkpoint("node-1", "eu", checkpoint(64, "aa", T0), received_ms=T0)
    registry.add_checkpoint("node-1", "eu", checkpoint(64, "ff", T0 + 1), received_ms=T0 + 1)
    assert registry.checkpoints("node-1") == [checkpoint(64, "aa", T0), checkpoint(64, "ff", T0 + 1)]
    assert registry.latest_checkpoints("eu") == {"node-1": checkpoint(64, "ff", T0 + 1)}


def test_erasures_are_kept_once_per_node_and_key(registry: Registry) -> None:
    e1 = {"key_id": "customer:C1", "at_ms": T0 + 5, "reason": "gdpr-17"}
    e2 = {"key_id": "customer:C2", "at_ms": T0, "reason": "gdpr-17"}
    registry.add_erasures("node-1", "eu", [e1, e2])
    registry.add_erasures("node-1", "eu", [{**e1, "reason": "again"}])
    registry.add_erasures("node-2", "eu", [e1])
    registry.add_erasures("node-3", "us", [e2])
    assert registry.erasures("eu") == [
        {"node_id": "node-1", **e2},
        {"node_id": "node-1", **e1},
        {"node_id": "node-2", **e1},
    ]
    assert registry.erasures("eu", since_ms=T0 + 1) == [
        {"node_id": "node-1", **e1},
        {"node_id": "node-2", **e1},
    ]
    assert registry.erasures("eu", until_ms=T0) == [{"node_id": "node-1", **e2}]
    assert registry.erasures("us") == [{"node_id": "node-3", **e2}]


def test_a_nodes_key_inventory_is_replaced_by_its_newest(registry: Registry) -> None:
    registry.set_key_inventory("node-1", "eu", {"data_keys_active": 1}, received_ms=T0)
    registry.set_key_inventory(
        "node-1", "eu", {"data_keys_active": 2, "keks": [{"version": 2}]}, received_ms=T0 + 1
    )
    registry.set_key_inventory("node-2", "us", {"data_keys_active": 7}, received_ms=T0)
    assert registry.key_inventories("eu") == {"node-1": {"data_keys_active": 2, "keks": [{"version": 2}]}}
    assert registry.key_inventories("us") == {"node-2": {"data_keys_active": 7}}
    assert registry.key_inventories("ap") == {}


def test_alarms_are_listed_per_region_in_order_raised(registry: Registry) -> None:
    registry.raise_alarm("eu", "node-1", "checkpoint_fork", "two heads at 64", at_ms=T0 + 9)
    registry.raise_alarm("us", "node-2", "checkpoint_shrank", "64 -> 10", at_ms=T0)
    registry.raise_alarm("eu", "node-1", "checkpoint_fork", "again", at_ms=T0)
    assert registry.alarms("eu") == [
        {"node_id": "node-1", "kind": "checkpoint_fork", "detail": "two heads at 64", "at_ms": T0 + 9},
        {"node_id": "node-1", "kind": "checkpoint_fork", "detail": "again", "at_ms": T0},
    ]
    assert [a["kind"] for a in registry.alarms("us")] == ["checkpoint_shrank"]
    again = reopen(registry)
    try:
        assert len(again.alarms("eu")) == 2
    finally:
        again.close()


def test_a_region_floor_is_set_per_class_and_kept(registry: Registry) -> None:
    assert registry.floor("eu") == {}
    registry.set_floor("eu", {"personal": "sealed", "media": "local"}, by="cli:ops", at_ms=T0)
    registry.set_floor("eu", {"personal": "local"}, by="cli:ops", at_ms=T0 + 1)
    assert registry.floor("eu") == {"personal": "local", "media": "local"}
    assert registry.floor("ap") == {}
