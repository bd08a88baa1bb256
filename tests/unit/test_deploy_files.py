"""The files in deploy/ stay in step with the code they configure."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from edge_node.app import build_settings
from edge_node.config import NodeConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_matches_the_defaults_it_documents() -> None:
    cfg = load_config(config_file=ROOT / "deploy" / "node.example.toml", environ={})
    defaults = NodeConfig()
    assert cfg.http == defaults.http
    assert cfg.storage == defaults.storage
    assert cfg.tickets.priorities == defaults.tickets.priorities
    assert cfg.calendar.timezone == defaults.calendar.timezone
    assert cfg.calendar.hours == defaults.calendar.hours
    settings = build_settings(cfg, date(2026, 11, 23))
    assert date(2026, 12, 24) in settings.business_calendar.closed_dates  # custom closed date
    assert date(2026, 12, 25) in settings.business_calendar.closed_dates  # German public holiday


def test_container_file_copies_every_package() -> None:
    text = (ROOT / "deploy" / "Containerfile.node").read_text(encoding="utf-8")
    for package in ("edge_node", "cloud_hub", "sync", "security", "proto"):
        assert f"COPY {package} ./{package}" in text


def test_example_ivr_flow_transfers_only_to_queues_of_the_example_roster() -> None:
    from edge_node.core.ivr import load_flow
    from edge_node.roster import load_roster

    roster = load_roster(ROOT / "deploy" / "roster.example.toml")
    text = (ROOT / "deploy" / "ivr.example.toml").read_text(encoding="utf-8")
    load_flow(text, known_queues=frozenset(q.queue_id for q in roster.queues))
