"""The compliance report: model, renderings, time parsing, and both builders on real files."""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from cloud_hub.compliance import hub_report
from cloud_hub.registry import NodeRecord, PolicyRecord
from cloud_hub.registry import QuarantinedOp as HubQuarantinedOp
from cloud_hub.service import Hub, UnknownRegionError
from edge_node.compliance import NodeReportError, node_report
from security.audit_log import AuditLog, audit_db_path
from security.identity import NodeIdentity
from security.keys import keystore_path
from security.keystore import KeyStore
from security.report import (
    Alarm,
    Chain,
    CheckpointHead,
    ComplianceReport,
    EgressRow,
    EgressTotals,
    Erasure,
    KeyCustody,
    KeyRow,
    Period,
    PolicyChange,
    PolicyInForce,
    Quarantine,
    ReportFormatError,
    ReportInputError,
    findings,
    from_json,
    parse_instant,
    parse_period,
    to_json,
)
from security.report_render import to_html, to_text

DAY_MS = 86_400_000
NOV_1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
FORMS = {"public": "plain", "operational": "plain", "personal": "sealed", "media": "local"}


def sample(
    *, region: str = "eu-de", customer: str = "C1", problems: tuple[str, ...] = ()
) -> ComplianceReport:
    return ComplianceReport(
        region=region,
        source="node",
        generated_at="2026-11-02T08:00:00.000Z",
        period=Period(since="2026-11-01T00:00:00.000Z", until="2026-11-02T00:00:00.000Z"),
        policy_in_force=(PolicyInForce(node="n1", version=1, forms=FORMS, since="2026-10-01T00:00:00.000Z"),),
        policy_history=(
            PolicyChange(node="n1", version=1, forms=FORMS, at="2026-10-01T00:00:00.000Z", by="config"),
        ),
        egress=(EgressRow(data_class="personal", form="sealed", values=7),),
        totals=EgressTotals(batches=2, ops=3, bytes=900, withheld=0),
        refusals=None,
        quarantined=None,
        key_custody=KeyCustody(
            rows=(
                KeyRow(
                    kind="pseudonymisation key", where="node n1", count=1, state="active", fingerprint="ab"
                ),
            ),
            hub_holds_region_keys=None,
            evidence="keys stay here",
        ),
        key_events=(),
        erasures=(
            Erasure(
                customer_id=customer,
                key_id=f"customer:{customer}",
                at="2026-11-01T09:00:00.000Z",
                node="n1",
                key_destroyed=True,
            ),
        ),
        chain=Chain(
            verified=not problems,
            entries=12,
            head="00" * 32,
            problems=problems,
            checkpoints=(
                CheckpointHead(node="n1", size=12, head="00" * 32, signed_at="2026-11-01T10:00:00.000Z"),
            ),
        ),
        alarms=(),
        notes=("sealed values stay readable to the region only",),
    )


# --- model and renderings -------------------------------------------------------------------------


def test_json_round_trips_with_every_key_in_a_stable_order() -> None:
    report = sample()
    data = to_json(report)
    assert from_json(data) == report
    assert to_json(from_json(data)) == data
    decoded = json.loads(data)
    assert list(decoded) == [
        "region", "source", "generated_at", "period", "policy_in_force", "policy_history", "egress",
        "totals", "refusals", "quarantined", "key_custody", "key_events", "erasures", "chain", "alarms",
        "notes",
    ]  # fmt: skip
    assert decoded["egress"] == [{"data_class": "personal", "form": "sealed", "values": 7}]
    assert decoded["key_custody"]["hub_holds_region_keys"] is None
    assert list(decoded["chain"]) == ["verified", "entries", "head", "problems", "checkpoints"]


@pytest.mark.parametrize("data", [b"", b"[]", b'{"region": "eu-de"}', b"not json"])
def test_from_json_refuses_what_is_not_a_report(data: bytes) -> None:
    with pytest.raises(ReportFormatError, match="not a compliance report"):
        from_json(data)


def test_html_escapes_every_value() -> None:
    page = to_html(sample(region="<script>alert(1)</script>", customer='"><script>x</script>'))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;script&gt;x&lt;/script&gt;" in page


def test_html_is_one_page_with_plain_headings_and_a_green_banner() -> None:
    page = to_html(sample())
    assert page.startswith("<!DOCTYPE html>")
    assert 'class="verdict ok">Evidence intact' in page
    for heading in ("What may leave eu-de", "What left eu-de between 1 Nov 2026, 00:00:00 UTC and 2 Nov 2026",
                    "Who holds the keys", "Erasures", "Is the record intact?"):  # fmt: skip
        assert heading in page
    assert "encrypted under a key only this region holds" in page  # forms explained
    assert "<link" not in page
    assert "src=" not in page


def test_the_banner_turns_red_and_names_chain_problems() -> None:
    report = sample(problems=("entry 3 does not hash to its stored hash",))
    page = to_html(report)
    assert 'class="verdict bad">Problems found: the audit record failed verification (1 problem(s))' in page
    assert "Evidence intact" not in page
    assert "entry 3 does not hash to its stored hash" in page
    assert "PROBLEMS FOUND" in to_text(report)
    assert "verdict: evidence intact" in to_text(sample())


def test_findings_cover_alarms_quarantine_keys_at_the_hub_and_undestroyed_keys() -> None:
    base = sample()
    bad = msgspec.structs.replace(
        base,
        alarms=(Alarm(node="n1", kind="audit", detail="fork", at="2026-11-01T00:00:00.000Z"),),
        quarantined=Quarantine(count=2, rows=()),
        key_custody=msgspec.structs.replace(base.key_custody, hub_holds_region_keys=True),
        erasures=(msgspec.structs.replace(base.erasures[0], key_destroyed=False),),
    )
    found = findings(bad)
    assert len(found) == 4
    assert any("alarm" in f for f in found)
    assert any("2 operation(s)" in f for f in found)
    assert any("hub holds" in f for f in found)
    assert any("C1" in f and "still exists" in f for f in found)
    assert findings(base) == ()


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-01", NOV_1),
        ("2026-11-01T10:00Z", NOV_1 + 10 * 3_600_000),
        ("2026-11-01T11:00:00+01:00", NOV_1 + 10 * 3_600_000),
        (str(NOV_1), NOV_1),
        (NOV_1, NOV_1),
        (" 2026-11-01 ", NOV_1),
    ],
)
def test_parse_instant_reads_dates_zoned_times_and_epoch_ms(value: str | int, expected: int) -> None:
    assert parse_instant(value, parameter="since") == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("yesterday", "is not a time"),
        ("2026-13-01", "is not a time"),
        ("2026-11-01T10:00", "has no time zone"),
        (True, "is not a time"),
        (-1, "outside the years"),
        ("99999999999999999", "outside the years"),
    ],
)
def test_parse_instant_errors_name_the_parameter(value: str | int, problem: str) -> None:
    with pytest.raises(ReportInputError, match=problem) as caught:
        parse_instant(value, parameter="until")
    assert caught.value.parameter == "until"
    assert str(caught.value).startswith("until ")


def test_parse_period_needs_until_after_since() -> None:
    assert parse_period("2026-11-01", "2026-11-02") == (NOV_1, NOV_1 + DAY_MS)
    with pytest.raises(ReportInputError, match="must be after since") as caught:
        parse_period("2026-11-02", "2026-11-01")
    assert caught.value.parameter == "until"


# --- the node's view, from a data directory ----------------------------------------------------------


class Clock:
    """Wall milliseconds that tick by one per read and can be moved forward."""

    def __init__(self, start: int) -> None:
        self.jump(start)

    def jump(self, to: int) -> None:
        self._ticks = itertools.count(to)

    def __call__(self) -> int:
        return next(self._ticks)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A node data directory: policy before the period, egress in and after it, one erasure."""
    data_dir = tmp_path / "node"
    identity = NodeIdentity.load_or_create(data_dir / "identity")
    (data_dir / "region").write_text("eu-de\n", encoding="utf-8")
    clock = Clock(NOV_1 - DAY_MS)
    log = AuditLog(audit_db_path(data_dir), origin="eu-de-n1", region="eu-de", sign=identity.sign,
                   fingerprint=identity.fingerprint, wall_ms=clock, checkpoint_every=3)  # fmt: skip
    with log, KeyStore(keystore_path(data_dir), region="eu-de") as keys:
        log.append("policy_changed", {"version": 1, "forms": FORMS, "previous": None, "by": "config"})
        keys.data_key("customer:C1")
        keys.data_key("customer:C2")
        clock.jump(NOV_1 + 1000)
        batch = {
            "ops": 2,
            "bytes": 500,
            "withheld": 0,
            "values": {"personal:sealed": 3, "operational:plain": 4},
        }
        log.append("egress_batch", batch)
        log.append("egress_batch", {**batch, "withheld": 1, "values": {"personal:sealed": 2}})
        keys.shred("customer:C1", reason="erasure")
        log.append("erasure", {"customer_id": "C1", "key_id": "customer:C1"})
        log.append("data_key_shredded", {"key_id": "customer:C1", "version": 1})
        clock.jump(NOV_1 + 2 * DAY_MS)
        log.append("egress_batch", batch)  # after the period
        log.checkpoint()
    return data_dir


def test_node_report_counts_the_period_and_shows_the_policy_from_before_it(node_dir: Path) -> None:
    report = node_report(node_dir, region="eu-de", since_ms=NOV_1, until_ms=NOV_1 + DAY_MS, now_ms=NOV_1)
    assert report.source == "node"
    assert [(r.data_class, r.form, r.values) for r in report.egress] == [
        ("operational", "plain", 4),
        ("personal", "sealed", 5),
    ]
    assert report.totals == EgressTotals(batches=2, ops=4, bytes=1000, withheld=1)
    assert report.policy_in_force[0].version == 1
    assert report.policy_in_force[0].forms["personal"] == "sealed"
    assert report.policy_in_force[0].node == "eu-de-n1"
    assert [(e.customer_id, e.key_id, e.key_destroyed) for e in report.erasures] == [
        ("C1", "customer:C1", True)
    ]
    assert [(k.event, k.count) for k in report.key_events] == [("customer data key destroyed", 1)]
    assert report.chain.verified is True
    assert report.chain.entries == 6
    assert report.chain.checkpoints[0].size == 6
    kinds = {(k.kind, k.state): k.count for k in report.key_custody.rows}
    assert kinds[("data keys (per customer, or per record without one)", "active")] == 1
    assert kinds[("data keys (per customer, or per record without one)", "shredded")] == 1
    assert kinds[("region key-encryption key v1", "active")] == 1
    assert report.refusals is None
    assert report.quarantined is None
    assert findings(report) == ()


def test_node_report_never_shows_key_bytes(node_dir: Path) -> None:
    evidence = to_json(node_report(node_dir, region="eu-de", since_ms=0, until_ms=NOV_1 * 2)).lower()
    with KeyStore(keystore_path(node_dir), region="eu-de") as keys:
        material = keys.key_material_for_audit()
    assert len(material) >= 3
    for key in material:
        assert key.hex().encode() not in evidence
        assert base64.b64encode(key).lower() not in evidence


def test_node_report_shows_a_tampered_log(node_dir: Path) -> None:
    conn = sqlite3.connect(audit_db_path(node_dir))
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET body = ? WHERE seq = 2", ('{"ops":0,"values":{}}',))
    conn.commit()
    conn.close()
    report = node_report(node_dir, region="eu-de", since_ms=0, until_ms=NOV_1 * 2)
    assert report.chain.verified is False
    assert findings(report)[0].startswith("the audit record failed verification")
    assert "Problems found" in to_html(report)


def test_node_report_refuses_another_regions_directory(node_dir: Path) -> None:
    with pytest.raises(NodeReportError, match="region 'eu-de', not 'us-east'; pass --region eu-de"):
        node_report(node_dir, region="us-east", since_ms=0, until_ms=NOV_1)
    with pytest.raises(NodeReportError, match="not a directory"):
        node_report(node_dir / "missing", region="eu-de", since_ms=0, until_ms=NOV_1)


# --- the hub's view, from hub.db ---------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub_dir = tmp_path / "hub"
    (hub_dir / "secrets").mkdir(parents=True)
    (hub_dir / "secrets" / "api-token.key").write_bytes(b"x" * 32)
    hub = Hub(hub_dir, hub_id="hub-1", wall_ms=lambda: NOV_1 + 5000)
    identity = NodeIdentity.generate()
    registry = hub.registry
    registry.enroll("t1", NodeRecord("eu-de-n1", "eu-de", "1", NOV_1, identity.public_key, NOV_1))
    hub.store("eu-de")
    registry.register_policy(PolicyRecord("eu-de-n1", "eu-de", 1, FORMS, NOV_1 - DAY_MS))
    registry.record_batch(
        at_ms=NOV_1 + 1000,
        refusals=[("eu-de", "bad_signature"), ("eu-de", "policy_violation")],
        egress={("eu-de", "personal", "sealed"): 5, ("us-east", "personal", "plain"): 9},
        quarantined=[
            HubQuarantinedOp("eu-de", "eu-de-n1", 4, "customer", "C9", ("name",), "plain name", NOV_1)
        ],
    )
    registry.record_batch(at_ms=NOV_1 + 3 * DAY_MS, egress={("eu-de", "personal", "sealed"): 100})
    registry.set_key_inventory(
        "eu-de-n1", "eu-de",
        {"location": "/data/keys/keys.db", "keks": [{"version": 2, "fingerprint_hex": "aa"}],
         "data_keys_active": 3, "data_keys_shredded": 1, "shredded": [["customer:C1", NOV_1, "erasure"]],
         "pseudonym_key_fingerprint": "bb"},
        received_ms=NOV_1,
    )  # fmt: skip
    registry.add_erasures(
        "eu-de-n1", "eu-de", [{"key_id": "customer:C1", "customer_id": "C1", "at_ms": NOV_1 + 9}]
    )
    registry.add_checkpoint(
        "eu-de-n1", "eu-de", {"size": 9, "head": "AAAA", "signed_at_ms": NOV_1 + 10}, received_ms=NOV_1
    )
    try:
        yield hub
    finally:
        hub.close()


def test_hub_report_shows_its_evidence_for_the_region_only(hub: Hub) -> None:
    report = hub_report(hub, region="eu-de", since_ms=NOV_1, until_ms=NOV_1 + DAY_MS)
    assert report.source == "hub"
    assert report.generated_at == "2026-11-01T00:00:05.000Z"
    assert [(r.data_class, r.form, r.values) for r in report.egress] == [("personal", "sealed", 5)]
    assert report.refusals == {"bad_signature": 1, "policy_violation": 1}
    assert report.quarantined is not None
    assert report.quarantined.count == 1
    assert report.quarantined.rows[0].record_id == "C9"
    assert [(p.node, p.version, p.forms["personal"]) for p in report.policy_in_force] == [
        ("eu-de-n1", 1, "sealed")
    ]
    assert [(e.customer_id, e.key_destroyed) for e in report.erasures] == [("C1", True)]
    assert report.chain.verified is None
    assert report.chain.checkpoints == (
        CheckpointHead(node="eu-de-n1", size=9, head="000000", signed_at="2026-11-01T00:00:00.010Z"),
    )
    custody = report.key_custody
    assert custody.hub_holds_region_keys is False
    assert "secrets/api-token.key" in custody.evidence
    assert "hub.db" in custody.evidence
    assert ("region key-encryption key v2", "aa") in {(k.kind, k.fingerprint) for k in custody.rows}
    assert any(k.where == "hub" and k.kind.startswith("node signing keys") for k in custody.rows)
    assert findings(report) == ("1 operation(s) broke the residency policy and were held back",)


def test_hub_report_flags_key_files_in_its_data_directory(hub: Hub) -> None:
    (hub.data_dir / "regions" / "keys.db").write_bytes(b"")
    (hub.data_dir / "stray.key").write_bytes(b"")
    custody = hub_report(hub, region="eu-de", since_ms=NOV_1, until_ms=NOV_1 + 1).key_custody
    assert custody.hub_holds_region_keys is True
    assert "regions/keys.db" in custody.evidence
    assert "stray.key" in custody.evidence


def test_hub_report_refuses_an_unknown_region(hub: Hub) -> None:
    with pytest.raises(UnknownRegionError, match="unknown region 'mars'; known: eu-de"):
        hub_report(hub, region="mars", since_ms=0, until_ms=1)
