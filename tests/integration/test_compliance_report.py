"""The compliance report from both vantage points, on a real hub and node of eu-de.

The node ships audit checkpoints every half second here (``node.toml``), so
the hub's report shows a checkpoint head without waiting the default 10 s.
The ``edgecare audit`` commands run in-process through typer's runner on
``audit_app``; the hub view goes over real HTTP.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from edge_node.cli_audit import audit_app
from security.audit_log import AuditLog, audit_db_path
from security.identity import NodeIdentity
from tests.integration.nodeproc import running_hub, running_node
from tests.integration.replication_harness import client, wait_converged, wait_for

REGION = "eu-de"
ALL_TIME = {"since": "2020-01-01", "until": "2100-01-01"}


def _sealed(egress: list[dict[str, Any]]) -> int:
    return sum(r["values"] for r in egress if (r["data_class"], r["form"]) == ("personal", "sealed"))


def _hub_report(hub_api: httpx.Client) -> dict[str, Any]:
    response = hub_api.get(f"/api/v1/compliance/{REGION}", params={**ALL_TIME, "format": "json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def _hub_checkpoints(hub_db: Path, node_id: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"file:{hub_db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT body FROM checkpoints WHERE node_id = ?", (node_id,)).fetchall()
    assert rows, f"the hub holds no checkpoint of {node_id}"
    return [json.loads(body) for (body,) in rows]


def test_hub_and_node_reports_agree_on_what_left_the_region(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "node.toml").write_text("[security]\ncheckpoint_interval_s = 0.5\n", encoding="utf-8")
    runner = CliRunner()
    with running_hub(tmp_path / "hub") as hub, running_node(node_dir, region=REGION, hub=hub) as node:
        node_id = (node_dir / "node-id").read_text(encoding="utf-8").strip()
        with (
            client(node.url, node.token("agent")) as node_api,
            client(hub.url, hub.token("central_ops")) as hub_api,
        ):
            customer = node_api.post(
                "/api/v1/customers", json={"name": "Erika Muster", "phone": "+4930123456"}
            )
            assert customer.status_code == 201, customer.text
            ticket = node_api.post(
                "/api/v1/tickets",
                json={"type": "consult", "subject": "roaming abroad", "customer_id": customer.json()["id"]},
            )
            assert ticket.status_code == 201, ticket.text
            wait_converged(node_api, hub_api, REGION)

            report = wait_for(
                lambda: _hub_report(hub_api),
                lambda r: any(c["node"] == node_id for c in r["chain"]["checkpoints"]),
                timeout_s=20,
                what="the node's audit checkpoint to reach the hub",
            )
            assert report["source"] == "hub"
            assert _sealed(report["egress"]) > 0
            assert not any(r["form"] == "plain" for r in report["egress"] if r["data_class"] == "personal")
            [policy] = report["policy_in_force"]
            assert (policy["node"], policy["version"], policy["forms"]["personal"]) == (node_id, 1, "sealed")
            assert report["key_custody"]["hub_holds_region_keys"] is False
            assert "api-token.key" in report["key_custody"]["evidence"]
            head = next(c for c in report["chain"]["checkpoints"] if c["node"] == node_id)
            assert head["size"] > 0
            assert len(head["head"]) == 64

            with client(hub.url, hub.token("compliance_auditor")) as auditor:
                page = auditor.get(f"/api/v1/compliance/{REGION}", params={**ALL_TIME, "format": "html"})
                assert page.status_code == 200, page.text
                assert page.headers["content-type"].startswith("text/html")
                assert "default-src 'none'" in page.headers["content-security-policy"]
                assert f"What may leave {REGION}" in page.text
                assert "<script" not in page.text

                bad = auditor.get(
                    f"/api/v1/compliance/{REGION}", params={"since": "soon", "until": "2100-01-01"}
                )
                assert bad.status_code == 400, bad.text
                assert bad.json()["errors"][0]["field"] == "since"
                assert "since 'soon' is not a time" in bad.json()["detail"]
                unknown = auditor.get("/api/v1/compliance/mars", params=ALL_TIME)
                assert unknown.status_code == 404, unknown.text

            assert node.stop() == 0
            hub_sealed = _sealed(_hub_report(hub_api)["egress"])

        verified = runner.invoke(audit_app, ["verify", "--data-dir", str(node_dir)])
        assert verified.exit_code == 0, verified.output
        assert "audit log: OK" in verified.stdout

        hub_copy = tmp_path / "hub-checkpoints.json"  # what the hub holds, as Checkpoint.to_dict JSON
        hub_copy.write_text(
            json.dumps(_hub_checkpoints(tmp_path / "hub" / "hub.db", node_id)), encoding="utf-8"
        )
        witnessed = runner.invoke(
            audit_app, ["verify", "--data-dir", str(node_dir), "--hub-checkpoint", str(hub_copy)]
        )
        assert witnessed.exit_code == 0, witnessed.output
        assert "audit log: OK" in witnessed.stdout

        args = ["report", "--region", REGION, "--since", ALL_TIME["since"], "--until", ALL_TIME["until"]]
        from_node = runner.invoke(audit_app, [*args, "--data-dir", str(node_dir), "--format", "json"])
        assert from_node.exit_code == 0, from_node.output
        node_view = json.loads(from_node.stdout)
        assert node_view["source"] == "node"
        assert node_view["chain"]["verified"] is True
        assert _sealed(node_view["egress"]) == hub_sealed
        assert node_view["totals"]["batches"] >= 1

        out = tmp_path / "hub-report.txt"
        from_hub = runner.invoke(
            audit_app,
            [*args, "--hub", hub.url, "--token", hub.token("compliance_auditor"), "--output", str(out)],
        )
        assert from_hub.exit_code == 0, from_hub.output
        text = out.read_text(encoding="utf-8")
        assert f"data residency report for {REGION} (hub view)" in text
        assert "hub holds region keys: no" in text


def test_audit_commands_refuse_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["report", "--region", REGION, "--since", "2026-11-01", "--until", "2026-11-02"]

    neither = runner.invoke(audit_app, base)
    assert neither.exit_code == 2
    assert "exactly one of --data-dir" in neither.stderr

    bad_time = runner.invoke(audit_app, [*base[:5], "--until", "tomorrow", "--data-dir", str(tmp_path)])
    assert bad_time.exit_code == 2
    assert "until 'tomorrow' is not a time" in bad_time.stderr

    no_token = runner.invoke(audit_app, [*base, "--hub", "http://127.0.0.1:9"], env={"EDGECARE_TOKEN": ""})
    assert no_token.exit_code == 2
    assert "--hub needs --token" in no_token.stderr

    missing = runner.invoke(audit_app, ["verify", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "no audit log at" in missing.stderr

    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text('{"v": 1, "origin": "n1"}', encoding="utf-8")
    malformed = runner.invoke(
        audit_app, ["verify", "--data-dir", str(tmp_path), "--hub-checkpoint", str(checkpoint)]
    )
    assert malformed.exit_code == 2
    assert "--hub-checkpoint" in malformed.stderr


def test_audit_verify_exits_1_on_an_edited_record(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path / "identity")
    with AuditLog(
        audit_db_path(tmp_path),
        origin="n1",
        region=REGION,
        sign=identity.sign,
        fingerprint=identity.fingerprint,
    ) as log:
        for n in range(3):
            log.append("egress_batch", {"ops": n})
        log.checkpoint()
    runner = CliRunner()
    assert runner.invoke(audit_app, ["verify", "--data-dir", str(tmp_path)]).exit_code == 0
    with contextlib.closing(sqlite3.connect(audit_db_path(tmp_path))) as conn:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET body = '{\"ops\":9}' WHERE seq = 2")
        conn.commit()
    failed = runner.invoke(audit_app, ["verify", "--data-dir", str(tmp_path)])
    assert failed.exit_code == 1
    assert "audit log: FAILED" in failed.stdout
    assert "problem edited at 2" in failed.stdout
