"""The node's configuration: defaults < TOML file < environment < command line.

One frozen :class:`NodeConfig`, validated at startup; unknown keys are errors,
so a typo in ``node.toml`` stops the node with the key's path instead of being
ignored. Nothing outside this module reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import msgspec

from edge_node.errors import EdgeNodeError
from sync.entities import PRIORITIES
from sync.residency import PolicyError, ResidencyPolicy

REGION_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,31}")
DEFAULT_DATA_DIR = Path("./data")
CONFIG_FILE_NAME = "node.toml"
ENV_PREFIX = "EDGECARE_"


class ConfigError(EdgeNodeError):
    """The configuration cannot be used; the message names the key."""

    def __init__(self, source: str, problem: str) -> None:
        self.source, self.problem = source, problem
        super().__init__(f"configuration error in {source}: {problem}")


class HTTPConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # FULL: every answered write is fsync'd (survives power loss); NORMAL: survives a process crash only.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_batch: int = 256


class CalendarConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    timezone: str = "Europe/Berlin"
    hours: str = "mon-fri 08:00-20:00; sat 09:00-17:00"
    holiday_country: str | None = "DE"
    holiday_subdivision: str | None = None
    closed_dates: tuple[date, ...] = ()


class PriorityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Minutes of business time; fractions are allowed (0.5 = 30 s), whole seconds are used.
    first_response_min: float
    next_update_min: float
    resolution_min: float
    always_open: bool = False


class DispatchRuleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    department: str
    types: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    vip_tiers: tuple[str, ...] = ()


def _default_priorities() -> dict[str, PriorityConfig]:
    return {
        "P1": PriorityConfig(first_response_min=15, next_update_min=60, resolution_min=240, always_open=True),
        "P2": PriorityConfig(first_response_min=120, next_update_min=480, resolution_min=1440),
        "P3": PriorityConfig(first_response_min=480, next_update_min=1440, resolution_min=7200),
        "P4": PriorityConfig(first_response_min=1440, next_update_min=2880, resolution_min=14400),
    }


class TicketsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    default_priority: str = "P2"
    warn_share: float = 0.8
    escalate_on_breach: bool = True
    priorities: dict[str, PriorityConfig] = msgspec.field(default_factory=_default_priorities)
    # Empty: the built-in rules (faults to network-ops, billing keywords to billing, ...).
    dispatch: tuple[DispatchRuleConfig, ...] = ()
    default_department: str = "general"


class SyncConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # The hub's leaf-node listener, e.g. nats-leaf://hub.example:7422; none: the node runs standalone.
    hub: str | None = None
    # The node's own nats-server (client port for local services); port 0 picks a free one.
    nats_host: str = "127.0.0.1"
    nats_port: int = 0
    heartbeat_interval_s: float = 2.0


class CallRoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Agents and queues (deploy/roster.example.toml); none: no agents, no queues.
    roster: Path | None = None
    # IVR flows by name, e.g. hotline = "deploy/ivr.example.toml"; the switch names one in OfferContact.
    ivr_flows: dict[str, Path] = msgspec.field(default_factory=dict)
    # The CallControl gRPC service for the switch (--grpc HOST:PORT turns it on); port 0 picks one.
    grpc_enabled: bool = False
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051


class ResidencyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Per data class, how its fields may leave the region: plain, sealed, pseudonymised or local.
    public: str = "plain"
    operational: str = "plain"
    personal: str = "sealed"
    media: str = "local"

    def policy(self, version: int = 1) -> ResidencyPolicy:
        """The policy these settings declare (raises PolicyError naming a bad setting)."""
        return ResidencyPolicy.from_dict(msgspec.to_builtins(self), version=version)


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Seconds between signed audit checkpoints shipped to the hub.
    checkpoint_interval_s: float = 10.0
    # Audit entries between automatic checkpoints.
    checkpoint_every: int = 64


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    region: str = "eu-de"
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http: HTTPConfig = msgspec.field(default_factory=HTTPConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    tickets: TicketsConfig = msgspec.field(default_factory=TicketsConfig)
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    routing: CallRoutingConfig = msgspec.field(default_factory=CallRoutingConfig)
    residency: ResidencyConfig = msgspec.field(default_factory=ResidencyConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edgecare.db"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secrets" / "api-token.key"

    @property
    def node_id_path(self) -> Path:
        return self.data_dir / "node-id"

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / "identity"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys" / "keys.db"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit" / "audit.db"


def parse_hostport(value: str, *, source: str = "--http") -> tuple[str, int]:
    """'HOST:PORT' to a pair; port 0 asks the OS for a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(source, f"expected HOST:PORT with a port 0-65535, got {value!r}")
    return host.strip("[]"), int(port)


def load_config(
    *,
    config_file: Path | None = None,
    data_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Merge the layers and validate the result.

    Args:
        config_file: a TOML file; default ``<data-dir>/node.toml`` when it exists.
        data_dir: the data directory from the command line, if given.
        overrides: dotted keys from the command line, e.g. ``{"http.port": 9000}``.
        environ: the environment (``os.environ`` when None); ``EDGECARE_REGION``,
            ``EDGECARE_DATA_DIR``, ``EDGECARE_HTTP`` (HOST:PORT), ``EDGECARE_LOG_LEVEL``.

    Raises:
        ConfigError: naming the source and key of the first problem.
    """
    env = os.environ if environ is None else environ
    layered: dict[str, Any] = {}
    env_layer: dict[str, Any] = {}
    if "EDGECARE_REGION" in env:
        env_layer["region"] = env["EDGECARE_REGION"]
    if "EDGECARE_LOG_LEVEL" in env:
        env_layer["log_level"] = env["EDGECARE_LOG_LEVEL"].upper()
    if "EDGECARE_HUB" in env:
        env_layer["sync.hub"] = env["EDGECARE_HUB"]
    if "EDGECARE_HTTP" in env:
        host, port = parse_hostport(env["EDGECARE_HTTP"], source="EDGECARE_HTTP")
        env_layer["http.host"], env_layer["http.port"] = host, port
    resolved_dir = data_dir or (Path(env["EDGECARE_DATA_DIR"]) if "EDGECARE_DATA_DIR" in env else None)
    path = config_file
    if path is None:
        candidate = (resolved_dir or DEFAULT_DATA_DIR) / CONFIG_FILE_NAME
        path = candidate if candidate.exists() else None
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            layered = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, f"not valid TOML: {exc}") from None
    for key, value in {**env_layer, **(overrides or {})}.items():
        _set_dotted(layered, key, value)
    if resolved_dir is not None:
        layered["data_dir"] = str(resolved_dir)
    _fill_priorities(layered)
    try:
        config = msgspec.convert(layered, NodeConfig, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, str(exc)) from None
    _check(config, source)
    return config


def _fill_priorities(layered: dict[str, Any]) -> None:
    """A file may override some priorities; the others keep their default targets."""
    tickets = layered.get("tickets")
    if not isinstance(tickets, dict) or not isinstance(tickets.get("priorities"), dict):
        return
    defaults = msgspec.to_builtins(_default_priorities())
    merged = dict(defaults)
    for name, override in tickets["priorities"].items():
        base = defaults.get(name, {})
        merged[name] = {**base, **override} if isinstance(override, dict) else override
    tickets["priorities"] = merged


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def _check(config: NodeConfig, source: str) -> None:
    if not REGION_PATTERN.fullmatch(config.region):
        raise ConfigError(
            source,
            f"region {config.region!r} must be 2-32 lowercase letters, digits or '-', starting with a letter",
        )
    if not 0 <= config.http.port <= 65535:
        raise ConfigError(source, f"http.port must be 0-65535, got {config.http.port}")
    if config.http.max_body_bytes < 1024:
        raise ConfigError(source, "http.max_body_bytes must be at least 1024")
    if not 0 <= config.routing.grpc_port <= 65535:
        raise ConfigError(source, f"routing.grpc_port must be 0-65535, got {config.routing.grpc_port}")
    try:
        config.residency.policy()
    except PolicyError as exc:
        raise ConfigError(source, str(exc)) from None
    if not config.security.checkpoint_interval_s > 0 or config.security.checkpoint_every < 1:
        raise ConfigError(source, "security.checkpoint_interval_s and checkpoint_every must be positive")
    if not 1 <= config.storage.max_batch <= 10_000:
        raise ConfigError(source, "storage.max_batch must be between 1 and 10000")
    tickets = config.tickets
    if tickets.default_priority not in tickets.priorities:
        raise ConfigError(source, f"tickets.default_priority {tickets.default_priority!r} has no targets")
    missing = sorted(set(PRIORITIES) - set(tickets.priorities))
    unknown = sorted(set(tickets.priorities) - set(PRIORITIES))
    if missing or unknown:
        raise ConfigError(
            source,
            f"tickets.priorities must define exactly {', '.join(PRIORITIES)} "
            f"(missing {missing}, unknown {unknown})",
        )
    for name, p in tickets.priorities.items():
        targets = (p.first_response_min, p.next_update_min, p.resolution_min)
        if not all(math.isfinite(t) and t > 0 for t in targets):
            raise ConfigError(source, f"tickets.priorities.{name}: every target must be positive minutes")
