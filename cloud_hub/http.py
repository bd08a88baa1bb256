"""The hub's HTTP API (litestar): fleet, tickets across regions, digests, central edits."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from litestar import Litestar, MediaType, Request, Response, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.params import FromPath, Parameter, QueryParameter

from cloud_hub.compliance import hub_report
from cloud_hub.errors import HubError
from cloud_hub.service import Hub, UnknownRegionError
from edge_node import __version__
from edge_node.errors import EdgeNodeError
from edge_node.http_common import (
    STATUS_BY_ERROR,
    authenticate,
    domain_error,
    http_error,
    read_json_object,
    unexpected_error,
)
from edge_node.service import public
from security.errors import SecurityError
from security.report import ReportInputError, parse_period, to_json
from security.report_render import to_html
from security.roles import Permission, require
from security.tokens import Principal
from sync.entities import TICKET
from sync.entity import ValidationError
from sync.errors import SyncError

API = "/api/v1"
HUB_ERRORS = (
    (UnknownRegionError, 404, "unknown region"),
    (HubError, 409, "refused"),
    (SyncError, 422, "invalid input"),
)


def _hub(state: State) -> Hub:
    hub: Hub = state.hub
    return hub


def _error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    for error_type, status, title in HUB_ERRORS:
        if isinstance(exc, error_type) and not isinstance(exc, tuple(t for t, _, _ in STATUS_BY_ERROR)):
            return Response(
                {"status": status, "title": title, "detail": str(exc)},
                status_code=status,
                media_type="application/problem+json",
            )
    return domain_error(request, exc)


@get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"])
async def readyz(state: State) -> dict[str, object]:
    hub = _hub(state)
    return {"status": "ready", "hub_id": hub.hub_id, "version": __version__, "regions": hub.regions()}


@get(f"{API}/fleet", tags=["fleet"], summary="Every node: region, state, heartbeat, backlog, lag")
async def fleet(state: State, principal: Principal) -> dict[str, object]:
    require(principal.role, Permission.READ)
    hub = _hub(state)
    return {"nodes": hub.fleet.as_json(int(time.time() * 1000)), "down_after_s": hub.fleet.down_after_s}


@get(f"{API}/replication", tags=["fleet"], summary="Merge counters and refusals by reason")
async def replication(state: State, principal: Principal) -> dict[str, object]:
    require(principal.role, Permission.READ)
    c = _hub(state).counters
    return {
        "batches": c.batches,
        "frames_accepted": c.frames_accepted,
        "ops_merged": c.ops_merged,
        "ops_stale": c.ops_stale,
        "ops_quarantined": c.ops_quarantined,
        "refused": c.refused,
        "ops_refused": c.ops_refused,
    }


@get(f"{API}/tickets", tags=["tickets"], summary="Tickets across regions, newest first")
async def list_tickets(
    state: State,
    principal: Principal,
    region: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, object]:
    items, next_cursor = await _hub(state).list_tickets(principal, region=region, limit=limit, cursor=cursor)
    return {"items": [public(TICKET, t) for t in items], "next_cursor": next_cursor}


@get(f"{API}/tickets/{{region:str}}/{{ticket_id:str}}", tags=["tickets"], summary="One ticket of a region")
async def get_ticket(state: State, principal: Principal, region: str, ticket_id: str) -> dict[str, object]:
    return public(TICKET, await _hub(state).get_ticket(principal, region, ticket_id))


@patch(
    f"{API}/tickets/{{region:str}}/{{ticket_id:str}}",
    tags=["tickets"],
    summary="Central edit: priority, department or assignee; flows back to the region",
)
async def edit_ticket(
    request: Request[Any, Any, Any], state: State, principal: Principal, region: str, ticket_id: str
) -> dict[str, object]:
    body = await read_json_object(request)
    return public(TICKET, await _hub(state).edit_ticket(principal, region, ticket_id, body))


@get(f"{API}/digests", tags=["replication"], summary="State digests of a region, as nodes serve them")
async def digests(state: State, principal: Principal, region: str) -> dict[str, object]:
    require(principal.role, Permission.READ)
    return await _hub(state).digests(region)


# A report page needs its inline style and nothing else: no scripts, frames, fetches or forms.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@get(
    f"{API}/compliance/{{region:str}}",
    tags=["compliance"],
    summary="The data residency report of a region for a period, as JSON evidence or an HTML page",
)
async def compliance_report(
    state: State,
    principal: NamedDependency[Principal],
    region: FromPath[str],
    since: Annotated[
        str, QueryParameter(description="Start (included): 2026-11-01, 2026-11-01T10:00Z or epoch ms")
    ],
    until: Annotated[str, QueryParameter(description="End (excluded), in the same forms as since")],
    format: Annotated[  # the query's name, so a bad value is reported as 'format'
        Literal["json", "html"], QueryParameter(description="json: the evidence; html: a page for people")
    ] = "json",
) -> Response[Any]:
    """The evidence about a region needs the same right as reading it (central ops, auditors)."""
    require(principal.role, Permission.READ)
    try:
        since_ms, until_ms = parse_period(since, until)
    except ReportInputError as exc:
        raise ValidationException(
            detail=str(exc), extra=[{"key": exc.parameter, "message": exc.problem}]
        ) from None
    report = await asyncio.to_thread(
        hub_report, _hub(state), region=region, since_ms=since_ms, until_ms=until_ms
    )
    if format == "html":
        return Response(
            to_html(report), media_type=MediaType.HTML, headers={"Content-Security-Policy": REPORT_CSP}
        )
    return Response(to_json(report), media_type=MediaType.JSON)


def create_hub_app(hub: Hub, *, token_secret: bytes, max_body_bytes: int = 65536) -> Litestar:
    """The litestar application of the hub."""
    return Litestar(
        route_handlers=[
            healthz,
            readyz,
            fleet,
            replication,
            list_tickets,
            get_ticket,
            edit_ticket,
            digests,
            compliance_report,
        ],
        dependencies={"principal": Provide(authenticate)},
        exception_handlers={
            EdgeNodeError: _error,
            SecurityError: _error,
            ValidationError: _error,
            HubError: _error,
            SyncError: _error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        state=State({"hub": hub, "token_secret": token_secret}),
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="EdgeCare hub",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
        ),
        logging_config=None,
    )
