"""``edgecare keys``: list a node's region keys, and rotate its key-encryption key while it is stopped.

A running node rotates through its API (``POST /api/v1/keys/rotate``); these
commands work on the data directory directly and write the same audit entries
(``edge_node.admin_audit``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge_node.admin_audit import inventory_json, inventory_offline, rotate_kek_offline
from edge_node.errors import EdgeNodeError
from security.errors import SecurityError

keys_app = typer.Typer(
    help="Inspect and rotate a node's region keys (key store in <data-dir>/keys/keys.db).",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="The node's data directory.", file_okay=False, resolve_path=True),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir) -> None:
    """Rotate the key-encryption key of the STOPPED node in --data-dir; data keys are re-wrapped.

    Sealed data is not re-encrypted and keeps opening. The old KEK is destroyed;
    a `kek_rotated` entry goes to the node's audit log.
    """
    try:
        rotation = rotate_kek_offline(data_dir)
    except (EdgeNodeError, SecurityError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"KEK v{rotation.old_version} -> v{rotation.new_version}; "
        f"re-wrapped {rotation.rewrapped} data keys; audited in {data_dir / 'audit' / 'audit.db'}"
    )


@keys_app.command("list")
def keys_list(data_dir: DataDir) -> None:
    """Print the key inventory of the node in --data-dir as JSON: versions, fingerprints, tombstones."""
    try:
        inventory = inventory_offline(data_dir)
    except (EdgeNodeError, SecurityError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(inventory_json(inventory), indent=2, sort_keys=True))
