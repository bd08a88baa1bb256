"""The ``edgecare`` command line: parse arguments, configure logging, run."""

from __future__ import annotations

import getpass
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
import uvloop

from cloud_hub.config import HubConfig
from cloud_hub.errors import HubError
from edge_node import __version__
from edge_node.cli_audit import audit_app
from edge_node.cli_init import init_app
from edge_node.cli_keys import keys_app
from edge_node.cli_routing import routing_app, staffing_app
from edge_node.config import ConfigError, NodeConfig, load_config, parse_hostport
from edge_node.errors import EdgeNodeError
from security.errors import SecurityError
from security.roles import Role
from security.tokens import Principal, issue_token, load_or_create_secret
from sync.errors import SyncError

app = typer.Typer(
    name="edgecare",
    help="EdgeCare: telecom customer service on regional edge nodes with cloud sync.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
node_app = typer.Typer(help="Run and manage a regional node.", no_args_is_help=True)
app.add_typer(node_app, name="node")
hub_app = typer.Typer(help="Run and manage the central hub.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(routing_app, name="routing")
app.add_typer(staffing_app, name="staffing")
app.add_typer(init_app, name="init")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")

log = logging.getLogger("edgecare")

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the node keeps its database and secrets. [default: ./data]"),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"edgecare {__version__}")
        raise typer.Exit


@node_app.command("run")
def node_run(
    region: Annotated[
        str | None, typer.Option(help="Region code this node serves, e.g. eu-de. [default: eu-de]")
    ] = None,
    data_dir: DataDirOption = None,
    http: Annotated[
        str | None,
        typer.Option(help="HOST:PORT for the HTTP API; port 0 picks a free one. [default: 127.0.0.1:8080]"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML configuration file. [default: <data-dir>/node.toml if present]"),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR. [default: INFO]")
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(help="The hub's leaf-node URL, e.g. nats-leaf://hub:7422; omitted: standalone."),
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of the node's own nats-server; port 0 picks one. [default: 127.0.0.1:0]"
        ),
    ] = None,
    grpc: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT for the CallControl gRPC service the switch uses; port 0 picks one. "
            "[default: off, or [routing] in the config]"
        ),
    ] = None,
    enroll: Annotated[
        str | None,
        typer.Option(
            "--enroll",
            metavar="TOKEN",
            help="One-time token from `edgecare hub enroll-token`; needed only until the hub has "
            "registered this node's key.",
            envvar="EDGECARE_ENROLL_TOKEN",
        ),
    ] = None,
) -> None:
    """Start a regional node: the ticket API over HTTP, SQLite in the data directory.

    Secrets, the node's Ed25519 identity and the region's keys are generated on
    first run. Stop it with Ctrl-C or SIGTERM; writes in flight finish first.
    """
    overrides: dict[str, Any] = {}
    if region is not None:
        overrides["region"] = region
    if log_level is not None:
        overrides["log_level"] = log_level.upper()
    try:
        if http is not None:
            host, port = parse_hostport(http)
            overrides["http.host"], overrides["http.port"] = host, port
        if nats is not None:
            host, port = parse_hostport(nats, source="--nats")
            overrides["sync.nats_host"], overrides["sync.nats_port"] = host, port
        if hub is not None:
            overrides["sync.hub"] = hub
        if grpc is not None:
            host, port = parse_hostport(grpc, source="--grpc")
            overrides["routing.grpc_host"], overrides["routing.grpc_port"] = host, port
            overrides["routing.grpc_enabled"] = True
        cfg = load_config(config_file=config, data_dir=data_dir, overrides=overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _configure_logging(cfg.log_level)
    from edge_node.app import serve  # after logging: importing the app pulls in litestar

    _run_service(
        lambda: serve(
            cfg,
            on_ready=lambda url: _announce(cfg, url),
            on_grpc_ready=lambda address: typer.echo(f"  grpc: {address}"),  # before the ready line
            enroll_token=enroll,
        )
    )


def _run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service on uvloop; our own errors end it with their message, not a traceback."""
    ours_types = (EdgeNodeError, SecurityError, SyncError, HubError)
    try:
        uvloop.run(main())
    except ours_types as exc:
        raise _fail(str(exc), code=1) from None
    except BaseExceptionGroup as group:
        ours, rest = group.split(ours_types)
        if ours is None or rest is not None:
            raise
        raise _fail("; ".join(str(e) for e in ours.exceptions), code=1) from None


def _announce(cfg: NodeConfig, url: str) -> None:
    program = sys.argv[0] if sys.argv[0].endswith("edgecare") else "edgecare"
    typer.echo(
        f"EdgeCare node for region {cfg.region} ready at {url}\n"
        f"  API docs:    {url}/schema/swagger\n"
        f"  get a token: {program} node token --data-dir {cfg.data_dir} --role agent\n"
        f"  then:        curl -H 'Authorization: Bearer <token>' {url}/api/v1/tickets"
    )


@node_app.command("token")
def node_token(
    role: Annotated[Role, typer.Option(help="The role the token grants.", case_sensitive=False)],
    data_dir: DataDirOption = None,
    name: Annotated[
        str | None,
        typer.Option(help="Who the token is for; shown in the change log. [default: the role]"),
    ] = None,
    ttl_hours: Annotated[
        int, typer.Option(min=0, help="Hours until the token expires; 0 never expires.")
    ] = 24 * 30,
) -> None:
    """Print a bearer token for this node's API (local bootstrap and tests)."""
    try:
        cfg = load_config(data_dir=data_dir)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    principal = _print_token(cfg.secret_path, role, name, ttl_hours, "start the node once with --data-dir")
    from edge_node.admin_audit import audit_token_issued

    try:  # granting a role is an admin action the node's audit log records
        audit_token_issued(
            cfg.data_dir, role=role.value, name=principal.name, expires_at=principal.expires_at
        )
    except SecurityError as exc:
        raise _fail(f"the token was printed but could not be audited: {exc}", code=1) from None


def _print_token(secret_path: Path, role: Role, name: str | None, ttl_hours: int, hint: str) -> Principal:
    if not secret_path.exists():
        raise _fail(f"no secret at {secret_path}; {hint} {secret_path.parent.parent} (or check the path)")
    try:
        secret = load_or_create_secret(secret_path)
        now = int(time.time())
        principal = Principal(
            role=role,
            name=name or role.value,
            issued_at=now,
            expires_at=None if ttl_hours == 0 else now + ttl_hours * 3600,
        )
        typer.echo(issue_token(secret, principal))
    except SecurityError as exc:
        raise _fail(str(exc)) from None
    return principal


@hub_app.command("run")
def hub_run(
    data_dir: Annotated[Path, typer.Option(help="Where the hub keeps its stores and secrets.")] = Path(
        "./hub-data"
    ),
    nats: Annotated[
        str, typer.Option(help="HOST:PORT of the hub's NATS client listener; 0 picks a port.")
    ] = "127.0.0.1:4222",
    leaf: Annotated[
        str, typer.Option(help="HOST:PORT where regional nodes connect as leaf nodes.")
    ] = "127.0.0.1:7422",
    http: Annotated[str, typer.Option(help="HOST:PORT of the hub's HTTP API.")] = "127.0.0.1:8090",
    down_after_s: Annotated[float, typer.Option(help="A node silent this long is shown down.")] = 10.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Start the hub: JetStream with a leaf listener, the merge of every region, the fleet API."""
    try:
        config = HubConfig(
            data_dir=data_dir,
            nats=parse_hostport(nats, source="--nats"),
            leaf=parse_hostport(leaf, source="--leaf"),
            http=parse_hostport(http, source="--http"),
            down_after_s=down_after_s,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _configure_logging(log_level.upper())
    from cloud_hub.app import serve_hub

    def announce(urls: dict[str, str]) -> None:
        typer.echo(  # the ready line comes last, so whoever waits for it has the URLs too
            f"  nats: {urls['nats']}\n"
            f"  leaf: {urls['leaf']}  (nodes: edgecare node run --hub {urls['leaf']} --enroll TOKEN)\n"
            f"  enroll a node: edgecare hub enroll-token --data-dir {data_dir} --region REGION\n"
            f"  get a token: edgecare hub token --data-dir {data_dir} --role central_ops\n"
            f"EdgeCare hub ready at {urls['http']}"
        )

    _run_service(lambda: serve_hub(config, on_ready=announce))


@hub_app.command("enroll-token")
def hub_enroll_token(
    region: Annotated[str, typer.Option(help="The region the token enrolls one node into, e.g. eu-de.")],
    data_dir: Annotated[Path, typer.Option(help="The hub's data directory.")] = Path("./hub-data"),
    ttl_hours: Annotated[float, typer.Option(min=0.01, help="Hours until the token expires.")] = 24.0,
) -> None:
    """Print a one-time token that enrolls one node of REGION (`edgecare node run --enroll TOKEN`).

    The hub stores only the token's hash; hand the token to the region's operator out of band.
    """
    from cloud_hub.registry import Registry
    from cloud_hub.service import issue_enroll_token

    if not (data_dir / "hub-id").exists():
        raise _fail(f"{data_dir} is not a hub data directory; start the hub once with --data-dir {data_dir}")
    registry = Registry(data_dir / "hub.db")
    try:
        token = issue_enroll_token(registry, region, ttl_s=ttl_hours * 3600, now_ms=int(time.time() * 1000))
    except HubError as exc:
        raise _fail(str(exc)) from None
    finally:
        registry.close()
    typer.echo(token.encode())


@hub_app.command("residency-floor")
def hub_residency_floor(
    region: Annotated[str, typer.Option(help="The region the floor applies to, e.g. eu-de.")],
    data_dir: Annotated[Path, typer.Option(help="The hub's data directory.")] = Path("./hub-data"),
    public: Annotated[str | None, typer.Option(help="Weakest form for public data.")] = None,
    operational: Annotated[str | None, typer.Option(help="Weakest form for operational data.")] = None,
    personal: Annotated[str | None, typer.Option(help="Weakest form for personal data.")] = None,
    media: Annotated[str | None, typer.Option(help="Weakest form for media.")] = None,
) -> None:
    """Show or set the weakest form each data class may take in REGION.

    Forms from weakest: plain < pseudonymised < sealed < local.

    The hub refuses a node policy below the floor, and every batch made under one,
    from the node's next message on; the node keeps its data and resends once its
    policy meets the floor. Without class options, prints the floor in force.
    """
    from cloud_hub.registry import Registry
    from sync.residency import Form

    if not (data_dir / "hub-id").exists():
        raise _fail(f"{data_dir} is not a hub data directory; start the hub once with --data-dir {data_dir}")
    wanted = {"public": public, "operational": operational, "personal": personal, "media": media}
    try:
        changes = {cls: Form(form).value for cls, form in wanted.items() if form is not None}
    except ValueError as exc:
        raise _fail(f"{exc}; forms are {', '.join(f.value for f in Form)}") from None
    registry = Registry(data_dir / "hub.db")
    try:
        if changes:
            who = f"cli:{getpass.getuser()}"
            registry.set_floor(region, changes, by=who, at_ms=int(time.time() * 1000))
        floor = registry.floor(region)
    finally:
        registry.close()
    typer.echo(
        f"residency floor of {region}: "
        + (", ".join(f"{c}>={f}" for c, f in sorted(floor.items())) or "none")
    )


@hub_app.command("token")
def hub_token(
    role: Annotated[Role, typer.Option(help="The role the token grants.", case_sensitive=False)],
    data_dir: Annotated[Path, typer.Option(help="The hub's data directory.")] = Path("./hub-data"),
    name: Annotated[str | None, typer.Option(help="Who the token is for. [default: the role]")] = None,
    ttl_hours: Annotated[int, typer.Option(min=0, help="Hours until expiry; 0 never expires.")] = 24 * 30,
) -> None:
    """Print a bearer token for the hub's API."""
    _print_token(
        data_dir / "secrets" / "api-token.key", role, name, ttl_hours, "start the hub once with --data-dir"
    )


def main() -> None:
    """Console-script entry point."""
    app()
