"""``edgecare init``: the certificates and NATS credentials that secure the links between regions and hub.

``init hub`` makes the hub's CA, its server certificate and one NATS user per
region whose permissions cover only that region's subjects, and writes one
bundle per region (``bundles/<region>.json``: the region's user, password and
the CA certificate). The bundle travels to the region's operator out of band;
``init node`` installs it in the node's data directory and makes the node's own
local CA and certificate. Both are idempotent: running ``init hub`` again with
another region adds it and keeps everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from security.errors import SecurityError
from security.provisioning import DEFAULT_HOSTNAMES, init_hub, init_node

init_app = typer.Typer(
    help="Make the CA, certificates and per-region NATS credentials that secure hub and node links.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


@init_app.command("hub")
def init_hub_command(
    region: Annotated[
        list[str], typer.Option("--region", help="A region to provision; repeat for several, e.g. eu-de.")
    ],
    data_dir: Annotated[Path, typer.Option(help="The hub's data directory.")] = Path("./hub-data"),
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="A name or IP nodes use to reach the hub (certificate SAN); repeat for several. "
            f"[default: {', '.join(DEFAULT_HOSTNAMES)}]",
        ),
    ] = None,
) -> None:
    """Make the hub's CA and certificate and a NATS user and bundle per region.

    Start (or restart) the hub afterwards: it serves TLS only, and each region's
    credentials may publish and subscribe on that region's subjects alone.
    """
    try:
        done = init_hub(data_dir, region, hostnames=tuple(hostname or DEFAULT_HOSTNAMES))
    except SecurityError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"hub CA:          {done.ca_cert}")
    typer.echo(f"hub certificate: {done.server_cert}")
    typer.echo(f"regions:         {', '.join(done.regions)}")
    for bundle in done.bundles:
        typer.echo(f"new bundle:      {bundle}")
    if done.bundles:
        typer.echo(
            "Hand each bundle to its region's operator over a secure channel (it holds the region's NATS "
            "password), then on the node: edgecare init node --data-dir DIR --region R --bundle FILE"
        )
    else:
        typer.echo("nothing new: every region was provisioned already")


@init_app.command("node")
def init_node_command(
    region: Annotated[str, typer.Option(help="The region this node serves; the bundle must be for it.")],
    bundle: Annotated[Path, typer.Option(help="The region's bundle from `edgecare init hub`.")],
    data_dir: Annotated[Path, typer.Option(help="The node's data directory.")] = Path("./data"),
    hostname: Annotated[
        list[str] | None,
        typer.Option("--hostname", help="Names local clients use for the node's nats-server; repeat."),
    ] = None,
) -> None:
    """Install the region's bundle and make the node's local CA and certificate.

    The node then links to the hub over TLS with the region's credentials, and
    local clients reach its nats-server over TLS with a password.
    """
    try:
        done = init_node(
            data_dir, region=region, bundle=bundle, hostnames=tuple(hostname or DEFAULT_HOSTNAMES)
        )
    except SecurityError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"hub link:        {done.hub_link}")
    typer.echo(f"node CA:         {done.ca_cert}")
    typer.echo(f"node certificate: {done.server_cert}")
    typer.echo(
        f"start the node:  edgecare node run --data-dir {data_dir} --region {region} --hub tls://HUB:7422"
    )
