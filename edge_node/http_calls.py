"""HTTP routes for call detail records: the records as JSON, and the Asterisk queue_log export.

Included in the node's API by ``edge_node.http`` (see `ROUTES` there); errors go through its
one status table. Translates only: reading is ``edge_node.calls``, formatting ``edge_node.queuelog``.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Annotated

from litestar import Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.params import Parameter
from litestar.types import ControllerRouterHandler

from edge_node.calls import CallRecord, calls_active_since, list_calls
from edge_node.queuelog import queue_log
from edge_node.store import Store
from security.roles import Permission, require
from security.tokens import Principal
from sync.entities import CALL_RECORD
from sync.entity import FieldProblem, ValidationError, to_json

API = "/api/v1"

Since = Annotated[
    datetime | None,
    Parameter(description="ISO-8601 instant with a UTC offset, e.g. 2026-01-31T09:00:00Z"),
]


def _store(state: State) -> Store:
    store: Store = state.service.store
    return store


def _check_since(since: datetime | None) -> None:
    if since is not None and since.tzinfo is None:
        raise ValidationError([FieldProblem("since", "needs a UTC offset, e.g. 2026-01-31T09:00:00Z")])


def call_json(record: CallRecord) -> dict[str, object]:
    """A record in its JSON form, as the API shows it."""
    return {f.name: to_json(CALL_RECORD.field(f.name), getattr(record, f.name)) for f in fields(record)}


@get(f"{API}/calls", tags=["calls"], summary="Call detail records, oldest arrival first")
async def list_call_records(
    state: State,
    principal: Principal,
    since: Since = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> dict[str, object]:
    require(principal.role, Permission.READ)
    _check_since(since)
    records = await list_calls(_store(state), since=since, limit=limit)
    return {"items": [call_json(r) for r in records]}


@get(
    f"{API}/calls/queue_log",
    tags=["calls"],
    summary="Call detail records as an Asterisk queue_log",
    description="Lines `epoch|callid|queuename|agent|event|data...` at or after `since`, in time order.",
    media_type=MediaType.TEXT,
)
async def export_queue_log(state: State, principal: Principal, since: Since = None) -> Response[str]:
    require(principal.role, Permission.READ)
    _check_since(since)
    records = await calls_active_since(_store(state), since)
    return Response("".join(queue_log(records, since=since)), media_type=MediaType.TEXT)


ROUTES: list[ControllerRouterHandler] = [list_call_records, export_queue_log]
