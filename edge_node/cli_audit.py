"""``edgecare audit``: check a node's audit record and produce the compliance report.

Both commands are for people who hold evidence, not keys: ``verify`` needs
only the node's public key (and, better, the hub's copy of a checkpoint), and
``report`` reads a stopped node's data directory or asks the hub. Mistakes in
the input exit with 2, a record that fails verification with 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import httpx
import typer

from edge_node.compliance import node_report
from edge_node.errors import EdgeNodeError
from security.audit_chain import Checkpoint
from security.audit_log import read_public_key, render_chain_report, verify_data_dir
from security.errors import SecurityError
from security.report import ComplianceReport, from_json, parse_period, to_json
from security.report_render import to_html, to_text

audit_app = typer.Typer(
    help="Check a node's tamper-evident audit record and report on data residency.",
    no_args_is_help=True,
)

HUB_TIMEOUT_S = 60.0
Format = Literal["json", "html", "text"]


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Write ``error: message`` to stderr; the caller raises the returned Exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _hub_checkpoints(path: Path) -> list[Checkpoint]:
    """Checkpoints from a JSON file: one ``Checkpoint.to_dict()`` object or a list of them."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"--hub-checkpoint {path} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise _fail(f"--hub-checkpoint {path} is not JSON: {exc}") from None
    items = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(item, dict) for item in items):
        raise _fail(f"--hub-checkpoint {path} must hold a checkpoint object or a list of them")
    try:
        return [Checkpoint.from_dict(item) for item in items]
    except SecurityError as exc:
        raise _fail(f"--hub-checkpoint {path}: {exc}") from None


@audit_app.command("verify")
def verify(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The node's data directory (only read, never written).")
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            metavar="FILE",
            help="The node's public key file (ed25519:<base64>), from a source you trust. "
            "(default: <data-dir>/identity/node.pub)",
        ),
    ] = None,
    hub_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--hub-checkpoint",
            metavar="FILE",
            help="A checkpoint the hub holds for this node (JSON of Checkpoint.to_dict, or a list); "
            "catches a log cut short together with its own checkpoints.",
        ),
    ] = None,
) -> None:
    """Check that a node's audit record is intact, using public keys only.

    Every entry must hash to its stored hash and link to the one before, and
    every signed checkpoint (the node's and the hub's) must match the record.
    Exits 0 when intact, 1 when problems were found, 2 on unusable input.
    """
    try:
        key = None if public_key is None else read_public_key(public_key)
        external = () if hub_checkpoint is None else _hub_checkpoints(hub_checkpoint)
        report = verify_data_dir(data_dir, public_key=key, external=external)
    except SecurityError as exc:
        raise _fail(str(exc)) from None
    typer.echo(render_chain_report(report), nl=False)
    if not report.ok:
        raise typer.Exit(1)


def _from_hub(hub: str, token: str | None, region: str, since_ms: int, until_ms: int) -> ComplianceReport:
    if not token:
        raise _fail("--hub needs --token (a hub token of a role that may read, e.g. compliance_auditor)")
    url = f"{hub.rstrip('/')}/api/v1/compliance/{region}"
    params = {"since": str(since_ms), "until": str(until_ms), "format": "json"}
    try:
        response = httpx.get(
            url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=HUB_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the hub at {hub}: {exc}", code=1) from None
    if response.status_code != 200:
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text[:500]
        code = 2 if 400 <= response.status_code < 500 else 1
        raise _fail(f"the hub answered {response.status_code}: {detail}", code=code)
    try:
        return from_json(response.content)
    except SecurityError as exc:
        raise _fail(f"the hub's answer at {url}: {exc}", code=1) from None


def _render(report: ComplianceReport, output_format: Format) -> str:
    if output_format == "json":
        return to_json(report).decode("utf-8")
    return to_html(report) if output_format == "html" else to_text(report)


@audit_app.command("report")
def report(
    region: Annotated[str, typer.Option(help="The region reported on, e.g. eu-de.")],
    since: Annotated[
        str, typer.Option(help="Start of the period (included): 2026-11-01, 2026-11-01T10:00Z or epoch ms.")
    ],
    until: Annotated[str, typer.Option(help="End of the period (excluded), in the same forms.")],
    output_format: Annotated[
        Format,
        typer.Option(
            "--format",
            help="text: a summary for the terminal; json: the evidence; html: a page for a non-engineer.",
        ),
    ] = "text",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Report from this node's data directory (the node's own records)."),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(help="Report from the hub's records instead: its HTTP URL, e.g. http://hub:8090."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token for --hub (`edgecare hub token --role compliance_auditor`).",
            envvar="EDGECARE_TOKEN",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write the report to FILE instead of stdout.")
    ] = None,
) -> None:
    """The data residency report of a region for a period: from a node's data directory or from the hub.

    It states what the residency policy lets leave the region and its history,
    what left by kind of data and form, what was refused, who holds the keys,
    erasures, and whether the audit record is intact. Give exactly one of
    --data-dir and --hub.
    """
    if (data_dir is None) == (hub is None):
        raise _fail("give exactly one of --data-dir (a node's records) and --hub (the hub's records)")
    try:
        since_ms, until_ms = parse_period(since, until)
        if data_dir is not None:
            result = node_report(data_dir, region=region, since_ms=since_ms, until_ms=until_ms)
        else:
            result = _from_hub(hub or "", token, region, since_ms, until_ms)
    except (SecurityError, EdgeNodeError) as exc:
        raise _fail(str(exc)) from None
    text = _render(result, output_format)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"--output {output} cannot be written: {exc.strerror}") from None


__all__ = ["audit_app"]
