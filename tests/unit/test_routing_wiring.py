"""The node's [routing] configuration: roster and IVR flows load together, or fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.app import load_routing
from edge_node.config import ConfigError, load_config
from edge_node.roster import RosterError

ROOT = Path(__file__).resolve().parents[2]
FLOW = """
start = "hello"
languages = ["en"]

[nodes.hello]
type = "transfer"
queue = "{queue}"
"""


def test_routing_is_off_by_default_and_the_section_is_read(tmp_path: Path) -> None:
    assert load_config(environ={}, data_dir=tmp_path).routing.grpc_enabled is False
    config = tmp_path / "node.toml"
    config.write_text(
        '[routing]\nroster = "r.toml"\ngrpc_enabled = true\ngrpc_port = 0\n'
        '[routing.ivr_flows]\nhotline = "ivr.toml"\n',
        encoding="utf-8",
    )
    routing = load_config(config_file=config, environ={}, data_dir=tmp_path).routing
    assert (routing.roster, routing.grpc_enabled, routing.grpc_host, routing.grpc_port) == (
        Path("r.toml"),
        True,
        "127.0.0.1",
        0,
    )
    assert routing.ivr_flows == {"hotline": Path("ivr.toml")}


def test_a_bad_grpc_port_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routing\.grpc_port must be 0-65535"):
        load_config(overrides={"routing.grpc_port": 70000}, environ={}, data_dir=tmp_path)


def test_the_example_roster_loads_for_call_control(tmp_path: Path) -> None:
    config = load_config(
        overrides={"routing.roster": str(ROOT / "deploy" / "roster.example.toml")}, environ={}
    )
    roster, flows = load_routing(config.routing)
    assert roster.agents
    assert roster.queues
    assert flows == {}


def test_flows_are_checked_against_the_roster_queues(tmp_path: Path) -> None:
    roster = tmp_path / "roster.toml"
    roster.write_text('[[queues]]\nid = "billing"\nskill = "billing"\n', encoding="utf-8")
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(FLOW.format(queue="billing"), encoding="utf-8")
    bad.write_text(FLOW.format(queue="nowhere"), encoding="utf-8")
    overrides = {"routing.roster": str(roster), "routing.ivr_flows": {"good": str(good)}}
    _, flows = load_routing(load_config(overrides=overrides, environ={}, data_dir=tmp_path).routing)
    assert list(flows) == ["good"]
    overrides["routing.ivr_flows"] = {"bad": str(bad)}
    with pytest.raises(ConfigError, match=r"routing\.ivr_flows\.bad .*unknown queue 'nowhere'"):
        load_routing(load_config(overrides=overrides, environ={}, data_dir=tmp_path).routing)
    overrides["routing.ivr_flows"] = {"gone": str(tmp_path / "gone.toml")}
    with pytest.raises(ConfigError, match=r"routing\.ivr_flows\.gone .*cannot read the file"):
        load_routing(load_config(overrides=overrides, environ={}, data_dir=tmp_path).routing)


def test_a_missing_roster_names_the_file(tmp_path: Path) -> None:
    config = load_config(
        overrides={"routing.roster": str(tmp_path / "none.toml")}, environ={}, data_dir=tmp_path
    )
    with pytest.raises(RosterError, match=r"none\.toml"):
        load_routing(config.routing)
