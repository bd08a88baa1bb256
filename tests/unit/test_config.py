"""Layered configuration: defaults < TOML file < environment < command line, validated at startup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_node.config import (
    DEFAULT_DATA_DIR,
    ConfigError,
    NodeConfig,
    PriorityConfig,
    load_config,
    parse_hostport,
)

NO_ENV: dict[str, str] = {}
TARGETS = "first_response_min = 10\nnext_update_min = 20\nresolution_min = 30\n"


def toml_file(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> NodeConfig:
    kwargs.setdefault("environ", NO_ENV)
    return load_config(config_file=toml_file(tmp_path, text), **kwargs)


def config_error(tmp_path: Path, text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return info.value


# --- defaults ----------------------------------------------------------------------------------


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data/node.toml here
    config = load_config(environ=NO_ENV)
    assert config == NodeConfig()
    assert config.region == "eu-de"
    assert config.data_dir == DEFAULT_DATA_DIR
    assert config.log_level == "INFO"
    assert (config.http.host, config.http.port, config.http.max_body_bytes) == ("127.0.0.1", 8080, 65536)
    assert (config.storage.synchronous, config.storage.max_batch) == ("FULL", 256)
    assert config.calendar.timezone == "Europe/Berlin"
    assert config.tickets.default_priority == "P2"
    assert config.tickets.escalate_on_breach is True
    assert sorted(config.tickets.priorities) == ["P1", "P2", "P3", "P4"]
    assert config.tickets.priorities["P1"] == PriorityConfig(
        first_response_min=15, next_update_min=60, resolution_min=240, always_open=True
    )
    assert config.db_path == DEFAULT_DATA_DIR / "edgecare.db"


def test_derived_paths_follow_the_data_dir(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path, environ=NO_ENV)
    assert config.data_dir == tmp_path
    assert config.db_path == tmp_path / "edgecare.db"
    assert config.secret_path == tmp_path / "secrets" / "api-token.key"
    assert config.node_id_path == tmp_path / "node-id"


# --- the TOML layer ----------------------------------------------------------------------------


def test_toml_file_layer(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
region = "ap-sg"
data_dir = "/var/lib/edgecare"
log_level = "DEBUG"

[http]
port = 9000

[storage]
synchronous = "NORMAL"

[calendar]
timezone = "Asia/Singapore"
closed_dates = [2026-01-01]

[tickets]
default_priority = "P3"
escalate_on_breach = false

[[tickets.dispatch]]
department = "roaming"
keywords = ["roaming"]
""",
    )
    assert config.region == "ap-sg"
    assert config.data_dir == Path("/var/lib/edgecare")
    assert config.log_level == "DEBUG"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9000)  # untouched keys keep defaults
    assert config.storage.synchronous == "NORMAL"
    assert config.calendar.timezone == "Asia/Singapore"
    assert [d.isoformat() for d in config.calendar.closed_dates] == ["2026-01-01"]
    assert config.tickets.default_priority == "P3"
    assert config.tickets.escalate_on_breach is False
    assert config.tickets.dispatch[0].department == "roaming"
    assert config.tickets.dispatch[0].keywords == ("roaming",)


def test_node_toml_in_the_data_dir_is_read_by_default(tmp_path: Path) -> None:
    toml_file(tmp_path, 'region = "eu-fr"\n', name="node.toml")
    assert load_config(data_dir=tmp_path, environ=NO_ENV).region == "eu-fr"
    assert load_config(environ={"EDGECARE_DATA_DIR": str(tmp_path)}).region == "eu-fr"


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found$") as info:
        load_config(config_file=tmp_path / "nope.toml", environ=NO_ENV)
    assert info.value.source == str(tmp_path / "nope.toml")


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    error = config_error(tmp_path, "region = \n")
    assert error.problem.startswith("not valid TOML: ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("regoin = 'eu-de'\n", "Object contains unknown field `regoin`"),
        ("[http]\nprot = 9000\n", "Object contains unknown field `prot` - at `$.http`"),
        (
            "[tickets.priorities.P1]\n" + TARGETS + "always = true\n",
            "Object contains unknown field `always` - at `$.tickets.priorities[...]`",
        ),
        (
            "[[tickets.dispatch]]\ndepartment = 'x'\nkeyword = ['a']\n",
            "Object contains unknown field `keyword` - at `$.tickets.dispatch[0]`",
        ),
    ],
)
def test_an_unknown_key_names_its_path(tmp_path: Path, text: str, problem: str) -> None:
    error = config_error(tmp_path, text)
    assert error.problem == problem
    assert error.source == str(tmp_path / "custom.toml")
    assert str(error) == f"configuration error in {error.source}: {error.problem}"


def test_a_value_of_the_wrong_type_names_its_path(tmp_path: Path) -> None:
    error = config_error(tmp_path, '[storage]\nsynchronous = "OFF"\n')
    assert "`$.storage.synchronous`" in error.problem


# --- the environment layer ---------------------------------------------------------------------


def test_environment_layer(tmp_path: Path) -> None:
    config = load_config(
        environ={
            "EDGECARE_REGION": "eu-fr",
            "EDGECARE_LOG_LEVEL": "warning",
            "EDGECARE_HTTP": "0.0.0.0:9100",
            "EDGECARE_DATA_DIR": str(tmp_path),
            "EDGECARE_UNRELATED": "ignored",
        }
    )
    assert config.region == "eu-fr"
    assert config.log_level == "WARNING"
    assert (config.http.host, config.http.port) == ("0.0.0.0", 9100)  # noqa: S104 - a bind address under test
    assert config.data_dir == tmp_path


# --- precedence ----------------------------------------------------------------------------------

FILE = 'region = "ap-sg"\nlog_level = "ERROR"\n[http]\nhost = "10.0.0.1"\nport = 9000\n'
ENV = {"EDGECARE_REGION": "eu-fr", "EDGECARE_HTTP": "10.0.0.2:9100"}
CLI = {"region": "us-east", "http.host": "10.0.0.3", "http.port": 9200}


def test_env_beats_file(tmp_path: Path) -> None:
    config = load(tmp_path, FILE, environ=ENV)
    assert (config.region, config.http.host, config.http.port) == ("eu-fr", "10.0.0.2", 9100)
    assert config.log_level == "ERROR"  # the environment did not set it


def test_cli_beats_env(tmp_path: Path) -> None:
    config = load(tmp_path, FILE, environ=ENV, overrides=CLI)
    assert (config.region, config.http.host, config.http.port) == ("us-east", "10.0.0.3", 9200)


def test_cli_beats_file(tmp_path: Path) -> None:
    config = load(tmp_path, FILE, overrides={"http.port": 9300})
    assert (config.region, config.http.host, config.http.port) == ("ap-sg", "10.0.0.1", 9300)


def test_data_dir_argument_beats_env_and_file(tmp_path: Path) -> None:
    cli_dir, env_dir = tmp_path / "cli", tmp_path / "env"
    config = load(
        tmp_path, 'data_dir = "/from/file"\n', data_dir=cli_dir, environ={"EDGECARE_DATA_DIR": str(env_dir)}
    )
    assert config.data_dir == cli_dir
    assert (
        load(tmp_path, 'data_dir = "/from/file"\n', environ={"EDGECARE_DATA_DIR": str(env_dir)}).data_dir
        == env_dir
    )


def test_overrides_reach_nested_sections(tmp_path: Path) -> None:
    config = load(tmp_path, "", overrides={"storage.max_batch": 8, "tickets.warn_share": 0.5})
    assert config.storage.max_batch == 8
    assert config.tickets.warn_share == 0.5


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["EU-DE", "e", "1eu", "-eu", "eu_de", "x" * 33, ""])
def test_bad_region(tmp_path: Path, region: str) -> None:
    with pytest.raises(
        ConfigError, match="must be 2-32 lowercase letters, digits or '-', starting with a letter"
    ):
        load_config(data_dir=tmp_path, environ={"EDGECARE_REGION": region})


@pytest.mark.parametrize("region", ["eu", "eu-de", "ap-southeast-1", "x" * 32])
def test_good_region(tmp_path: Path, region: str) -> None:
    assert load_config(data_dir=tmp_path, environ={"EDGECARE_REGION": region}).region == region


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("node.example:443", ("node.example", 443)),
    ],
)
def test_parse_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value) == expected


@pytest.mark.parametrize(
    "value", ["8080", "host", "host:", ":8080", "host:http", "host:-1", "host:65536", ""]
)
def test_bad_hostport(value: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^configuration error in --http: expected HOST:PORT with a port 0-65535"
    ):
        parse_hostport(value)


def test_a_bad_hostport_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^configuration error in EDGECARE_HTTP: .*got 'nohost'$"):
        load_config(data_dir=tmp_path, environ={"EDGECARE_HTTP": "nohost"})


def test_bad_log_level_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`\$\.log_level`"):
        load_config(data_dir=tmp_path, environ={"EDGECARE_LOG_LEVEL": "verbose"})


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_in_the_file_is_refused(tmp_path: Path, port: int) -> None:
    with pytest.raises(ConfigError, match="port"):
        load(tmp_path, f"[http]\nport = {port}\n")


def test_priorities_p1_to_p4_are_always_defined(tmp_path: Path) -> None:
    # A file may override some priorities; the others keep their default targets.
    config = load(tmp_path, "".join(f"[tickets.priorities.{p}]\n{TARGETS}" for p in ("P2", "P3")))
    priorities = config.tickets.priorities
    assert sorted(priorities) == ["P1", "P2", "P3", "P4"]
    assert priorities["P2"] == PriorityConfig(first_response_min=10, next_update_min=20, resolution_min=30)
    assert priorities["P1"] == NodeConfig().tickets.priorities["P1"]
    assert priorities["P4"] == NodeConfig().tickets.priorities["P4"]


def test_priorities_must_not_define_others(tmp_path: Path) -> None:
    error = config_error(tmp_path, f"[tickets.priorities.P5]\n{TARGETS}")
    assert (
        error.problem == "tickets.priorities must define exactly P1, P2, P3, P4 (missing [], unknown ['P5'])"
    )


def test_a_partial_priority_keeps_its_other_default_targets(tmp_path: Path) -> None:
    config = load(tmp_path, "[tickets.priorities.P1]\nfirst_response_min = 5\n")
    assert config.tickets.priorities["P1"] == PriorityConfig(
        first_response_min=5, next_update_min=60, resolution_min=240, always_open=True
    )


def test_a_complete_set_of_priorities_replaces_the_defaults(tmp_path: Path) -> None:
    text = "".join(f"[tickets.priorities.{p}]\n{TARGETS}" for p in ("P1", "P2", "P3", "P4"))
    config = load(tmp_path, text)
    assert config.tickets.priorities["P2"] == PriorityConfig(
        first_response_min=10, next_update_min=20, resolution_min=30
    )
    assert config.tickets.priorities["P1"].always_open  # a flag the file did not set keeps its default


def test_priority_targets_must_be_positive(tmp_path: Path) -> None:
    text = "".join(f"[tickets.priorities.{p}]\n{TARGETS}" for p in ("P1", "P2", "P3"))
    text += "[tickets.priorities.P4]\nfirst_response_min = 10\nnext_update_min = 0\nresolution_min = 30\n"
    error = config_error(tmp_path, text)
    assert error.problem == "tickets.priorities.P4: every target must be positive minutes"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_priority_targets_must_be_finite(tmp_path: Path, value: str) -> None:
    text = (
        f"[tickets.priorities.P4]\nfirst_response_min = {value}\nnext_update_min = 20\nresolution_min = 30\n"
    )
    with pytest.raises(ConfigError, match=r"tickets\.priorities\.P4"):
        load(tmp_path, text)


def test_the_default_priority_needs_targets(tmp_path: Path) -> None:
    error = config_error(tmp_path, '[tickets]\ndefault_priority = "P7"\n')
    assert error.problem == "tickets.default_priority 'P7' has no targets"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[http]\nmax_body_bytes = 1023\n", "http.max_body_bytes must be at least 1024"),
        ("[storage]\nmax_batch = 0\n", "storage.max_batch must be between 1 and 10000"),
        ("[storage]\nmax_batch = 10001\n", "storage.max_batch must be between 1 and 10000"),
    ],
)
def test_limits(tmp_path: Path, text: str, problem: str) -> None:
    assert config_error(tmp_path, text).problem == problem
