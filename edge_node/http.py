"""HTTP adapter: the node's REST API on litestar. Translates only.

Bodies are read as bytes and decoded strictly here, then validated against the
entity declarations by the service, so every client mistake comes back as a
4xx problem document naming the field and the problem. Error types map to
status codes in one table, :data:`STATUS_BY_ERROR`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Operation, SecurityScheme
from litestar.params import Parameter
from litestar.types import ControllerRouterHandler

from edge_node import __version__, http_calls
from edge_node.errors import EdgeNodeError
from edge_node.http_admin import ADMIN_ROUTES
from edge_node.http_common import (
    authenticate,
    domain_error,
    http_error,
    read_json_object,
    unexpected_error,
)
from edge_node.node_security import NodeSecurity
from edge_node.replication import NodeReplicator, hlc_age_s
from edge_node.service import (
    NodeService,
    Page,
    TicketFilter,
    public,
)
from edge_node.store import NotFoundError
from security.errors import SecurityError
from security.roles import Permission, require
from security.tokens import Principal
from sync.adapters.replica import region_digests
from sync.entities import COMMENT, CUSTOMER, DEPARTMENT, TICKET
from sync.entity import Entity, FieldProblem, ValidationError, json_schema

log = logging.getLogger(__name__)

API = "/api/v1"


def _service(state: State) -> NodeService:
    service: NodeService = state.service
    return service


def _ticket(record: Mapping[str, Any]) -> dict[str, object]:
    return public(TICKET, record)


def _body_schema(
    entity: Entity, names: tuple[str, ...] | frozenset[str], required: tuple[str, ...] = ()
) -> type[Operation]:
    """An Operation whose request body is the schema derived from the entity declaration."""
    return _with_body(json_schema(entity, sorted(names), required=required))


def _action_schema(properties: dict[str, Any], required: tuple[str, ...]) -> type[Operation]:
    """An Operation whose request body is a small action object (status, assignee, reason)."""
    return _with_body(
        {
            "type": "object",
            "properties": properties,
            "required": list(required),
            "additionalProperties": False,
        }
    )


def _with_body(schema: dict[str, object]) -> type[Operation]:
    """Litestar documents bodies from the handler signature; ours are read by hand, so say it here."""

    @dataclass
    class _WithBody(Operation):
        def to_schema(self) -> dict[str, Any]:
            out = super().to_schema()
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            return out

    return _WithBody


# --- handlers -------------------------------------------------------------------------

Principal_ = Annotated[Principal, Parameter(description="the caller, from the bearer token")]


@get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"], summary="The node can serve: storage answers")
async def readyz(state: State) -> Response[dict[str, object]]:
    service = _service(state)
    await service.store.read(lambda r: r.conn.execute("SELECT 1").fetchone())
    stats = service.store.statistics()
    return Response(
        {
            "status": "ready",
            "region": service.region,
            "node_id": service.store.node_id,
            "version": __version__,
            "changelog_last_seq": stats.last_seq,
            "sla_watched": len(service.schedule),
        }
    )


@get(f"{API}/whoami", tags=["auth"], summary="The caller as the token names it")
async def whoami(principal: Principal) -> dict[str, object]:
    return {
        "name": principal.name,
        "role": principal.role.value,
        "expires_at": principal.expires_at,
    }


@post(
    f"{API}/tickets",
    tags=["tickets"],
    summary="Create a ticket",
    description="A retried request with the same Idempotency-Key returns the first ticket, never a second.",
    operation_class=_body_schema(TICKET, TICKET.writable_names, ("type", "subject")),
    status_code=201,
)
async def create_ticket(
    request: Request[Any, Any, Any],
    state: State,
    principal: Principal,
    idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key", max_length=200)] = None,
) -> Response[dict[str, object]]:
    created = await _service(state).create_ticket(
        principal, await read_json_object(request), idempotency_key=idempotency_key
    )
    headers = {"Location": f"{API}/tickets/{created.record['id']}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(_ticket(created.record), status_code=201, headers=headers)


@get(f"{API}/tickets", tags=["tickets"], summary="List tickets, newest first")
async def list_tickets(
    state: State,
    principal: Principal,
    status: str | None = None,
    type_: Annotated[str | None, Parameter(query="type")] = None,
    priority: str | None = None,
    department: str | None = None,
    customer_id: str | None = None,
    customer: str | None = None,
    assignee: str | None = None,
    breached: bool | None = None,
    archived: bool = False,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, object]:
    if customer is not None and customer_id is not None and customer != customer_id:
        raise ValidationError([FieldProblem("customer", "conflicts with customer_id; send one")])
    flt = TicketFilter(
        status=status,
        type=type_,
        priority=priority,
        department=department,
        customer_id=customer_id or customer,
        assignee=assignee,
        breached=breached,
        archived=archived,
    )
    page: Page = await _service(state).list_tickets(principal, flt, limit=limit, cursor=cursor)
    return {"items": [_ticket(t) for t in page.items], "next_cursor": page.next_cursor}


@get(f"{API}/tickets/{{ticket_id:str}}", tags=["tickets"], summary="Get one ticket")
async def get_ticket(state: State, principal: Principal, ticket_id: str) -> dict[str, object]:
    return _ticket(await _service(state).get_ticket(principal, ticket_id))


@patch(
    f"{API}/tickets/{{ticket_id:str}}",
    tags=["tickets"],
    summary="Change ticket fields",
    operation_class=_body_schema(TICKET, TICKET.writable_names),
)
async def update_ticket(
    request: Request[Any, Any, Any], state: State, principal: Principal, ticket_id: str
) -> dict[str, object]:
    body = await read_json_object(request)
    return _ticket(await _service(state).update_ticket(principal, ticket_id, body))


@post(
    f"{API}/tickets/{{ticket_id:str}}/transition",
    tags=["tickets"],
    summary="Move a ticket to another status",
    operation_class=_action_schema(
        {"status": {"type": "string", "enum": list(TICKET.field("status").choices)}}, ("status",)
    ),
    status_code=200,
)
async def transition_ticket(
    request: Request[Any, Any, Any], state: State, principal: Principal, ticket_id: str
) -> dict[str, object]:
    return _ticket(await _service(state).transition(principal, ticket_id, await read_json_object(request)))


@post(
    f"{API}/tickets/{{ticket_id:str}}/assign",
    tags=["tickets"],
    summary="Assign a ticket to an agent, optionally in another department",
    operation_class=_action_schema(
        {"assignee": {"type": "string"}, "department": {"type": "string"}}, ("assignee",)
    ),
    status_code=200,
)
async def assign_ticket(
    request: Request[Any, Any, Any], state: State, principal: Principal, ticket_id: str
) -> dict[str, object]:
    return _ticket(await _service(state).assign(principal, ticket_id, await read_json_object(request)))


@post(
    f"{API}/tickets/{{ticket_id:str}}/escalate",
    tags=["tickets"],
    summary="Escalate a tier-1 ticket to tier 2",
    operation_class=_action_schema({"reason": {"type": "string"}}, ("reason",)),
    status_code=200,
)
async def escalate_ticket(
    request: Request[Any, Any, Any], state: State, principal: Principal, ticket_id: str
) -> dict[str, object]:
    return _ticket(await _service(state).escalate(principal, ticket_id, await read_json_object(request)))


@post(
    f"{API}/tickets/{{ticket_id:str}}/archive",
    tags=["tickets"],
    summary="Archive a closed ticket",
    status_code=200,
)
async def archive_ticket(state: State, principal: Principal, ticket_id: str) -> dict[str, object]:
    return _ticket(await _service(state).archive(principal, ticket_id))


@post(
    f"{API}/tickets/{{ticket_id:str}}/comments",
    tags=["tickets"],
    summary="Comment on a ticket",
    operation_class=_body_schema(COMMENT, COMMENT.writable_names, ("body",)),
    status_code=201,
)
async def add_comment(
    request: Request[Any, Any, Any], state: State, principal: Principal, ticket_id: str
) -> dict[str, object]:
    body = await read_json_object(request)
    return public(COMMENT, await _service(state).add_comment(principal, ticket_id, body))


@get(
    f"{API}/tickets/{{ticket_id:str}}/comments",
    tags=["tickets"],
    summary="A ticket's comments, oldest first",
)
async def list_comments(state: State, principal: Principal, ticket_id: str) -> dict[str, object]:
    comments = await _service(state).list_comments(principal, ticket_id)
    return {"items": [public(COMMENT, c) for c in comments]}


@post(
    f"{API}/customers",
    tags=["customers"],
    summary="Create a customer",
    operation_class=_body_schema(CUSTOMER, CUSTOMER.writable_names, ("name", "phone")),
    status_code=201,
)
async def create_customer(
    request: Request[Any, Any, Any], state: State, principal: Principal
) -> Response[dict[str, object]]:
    record = await _service(state).create_customer(principal, await read_json_object(request))
    return Response(
        public(CUSTOMER, record),
        status_code=201,
        headers={"Location": f"{API}/customers/{record['id']}"},
    )


@get(f"{API}/customers/{{customer_id:str}}", tags=["customers"], summary="Get one customer")
async def get_customer(state: State, principal: Principal, customer_id: str) -> dict[str, object]:
    return public(CUSTOMER, await _service(state).get_customer(principal, customer_id))


@post(
    f"{API}/departments",
    tags=["departments"],
    summary="Create a department",
    operation_class=_body_schema(DEPARTMENT, DEPARTMENT.writable_names, ("id", "name")),
    status_code=201,
)
async def create_department(
    request: Request[Any, Any, Any], state: State, principal: Principal
) -> dict[str, object]:
    return public(
        DEPARTMENT, await _service(state).create_department(principal, await read_json_object(request))
    )


@get(f"{API}/departments", tags=["departments"], summary="Every department")
async def list_departments(state: State, principal: Principal) -> dict[str, object]:
    return {"items": [public(DEPARTMENT, d) for d in await _service(state).list_departments(principal)]}


@get(f"{API}/digests", tags=["replication"], summary="State digests of this node's region")
async def digests(state: State, principal: Principal, region: str) -> dict[str, object]:
    service = _service(state)
    require(principal.role, Permission.READ)
    if region != service.region:
        raise NotFoundError("region", region)
    security: NodeSecurity | None = state.get("security")
    forms = security.egress.forms if security is not None else None
    return await service.store.read(lambda r: region_digests(r.conn, region, forms))


@get(f"{API}/replication", tags=["replication"], summary="Replication to the hub: backlog, lag, refusals")
async def replication_status(state: State, principal: Principal) -> dict[str, object]:
    require(principal.role, Permission.READ)
    replicator: NodeReplicator | None = state.replicator
    if replicator is None:
        return {"enabled": False}
    stats = replicator.statistics()
    return {
        "enabled": True,
        "connected_to_hub": stats.connected_to_hub,
        "changelog_last_seq": stats.last_seq,
        "published_seq": stats.published_seq,
        "confirmed_seq": stats.acked_seq,
        "backlog_ops": stats.backlog_ops,
        "lag_s": hlc_age_s(stats.oldest_pending_hlc, int(time.time() * 1000)),
        "batches_sent": stats.batches_sent,
        "inbound_ops_merged": stats.inbound_ops_merged,
        "inbound_refused": stats.inbound_refused,
    }


ROUTES: list[ControllerRouterHandler] = [
    *ADMIN_ROUTES,
    healthz,
    readyz,
    whoami,
    create_ticket,
    list_tickets,
    get_ticket,
    update_ticket,
    transition_ticket,
    assign_ticket,
    escalate_ticket,
    archive_ticket,
    add_comment,
    list_comments,
    create_customer,
    get_customer,
    create_department,
    list_departments,
    digests,
    replication_status,
    *http_calls.ROUTES,
]


def create_app(
    service: NodeService,
    *,
    token_secret: bytes,
    max_body_bytes: int,
    replicator: NodeReplicator | None = None,
    security: NodeSecurity | None = None,
) -> Litestar:
    """The litestar application for one node."""
    return Litestar(
        route_handlers=ROUTES,
        dependencies={"principal": Provide(authenticate)},
        exception_handlers={
            EdgeNodeError: domain_error,
            SecurityError: domain_error,
            ValidationError: domain_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        state=State(
            {"service": service, "token_secret": token_secret, "replicator": replicator, "security": security}
        ),
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="EdgeCare regional node",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="ec1 token")
                }
            ),
            security=[{"bearer": []}],
        ),
        logging_config=None,
        debug=False,
    )
