"""HTTP pieces the node's and the hub's APIs share: problem documents, the error table,
strict JSON bodies and bearer-token authentication.

Every client mistake is answered as ``application/problem+json`` with ``status``,
``title``, ``detail`` and, for input mistakes, ``errors: [{field, problem}]``.
Error types map to status codes in one table, :data:`STATUS_BY_ERROR`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from edge_node.core.tickets import AlreadyEscalatedError, InvalidTransitionError, TicketReadOnlyError
from edge_node.errors import EdgeNodeError
from edge_node.service import DuplicateRecordError, IdempotencyConflictError
from edge_node.store import NotFoundError, StoreError
from security.roles import ForbiddenError
from security.tokens import InvalidTokenError, Principal, verify_token
from sync.entity import FieldProblem, ValidationError

log = logging.getLogger(__name__)


# --- errors ---------------------------------------------------------------------------


class MalformedBodyError(EdgeNodeError):
    """The body is not a JSON object."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"request body is not usable: {problem}")


class MissingTokenError(EdgeNodeError):
    """No bearer token came with the request."""

    def __init__(self) -> None:
        super().__init__("missing bearer token; send 'Authorization: Bearer <token>'")


STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str], ...] = (
    (MalformedBodyError, 400, "malformed request"),
    (ValidationError, 422, "invalid input"),
    (MissingTokenError, 401, "not authenticated"),
    (InvalidTokenError, 401, "not authenticated"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not found"),
    (InvalidTransitionError, 409, "invalid transition"),
    (TicketReadOnlyError, 409, "ticket is read-only"),
    (AlreadyEscalatedError, 409, "already escalated"),
    (IdempotencyConflictError, 409, "idempotency key reused"),
    (DuplicateRecordError, 409, "already exists"),
    (StoreError, 503, "storage unavailable"),
)


def problem(
    status: int, title: str, detail: str, problems: list[FieldProblem] | None = None
) -> Response[Any]:
    body: dict[str, object] = {"status": status, "title": title, "detail": detail}
    if problems:
        body["errors"] = [{"field": p.field, "problem": p.problem} for p in problems]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(body, status_code=status, headers=headers, media_type="application/problem+json")


def domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    for error_type, status, title in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            if status >= 500:
                log.error("%s %s failed: %s", request.method, request.url.path, exc)
            problems = list(exc.problems) if isinstance(exc, ValidationError) else None
            if isinstance(exc, MalformedBodyError):
                problems = [FieldProblem("body", exc.problem)]
            detail = "invalid or expired token" if isinstance(exc, InvalidTokenError) else str(exc)
            response = problem(status, title, detail, problems)
            if isinstance(exc, InvalidTransitionError):
                response.content["allowed"] = list(exc.allowed)
            return response
    return unexpected_error(request, exc)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    problems: list[FieldProblem] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, Mapping):
                problems.append(FieldProblem(str(item.get("key", "request")), str(item.get("message", ""))))
    detail = exc.detail
    if exc.status_code == 413:
        detail = "request body is larger than this node accepts"
        problems = [FieldProblem("body", detail)]
    return problem(exc.status_code, detail, detail, problems or None)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error", "the node failed to handle the request; see its log")


# --- request helpers --------------------------------------------------------------------


async def read_json_object(request: Request[Any, Any, Any]) -> dict[str, object]:
    raw = await request.body()
    if not raw.strip():
        raise MalformedBodyError("empty body; send a JSON object")
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedBodyError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise MalformedBodyError("JSON nested too deeply") from None
    if not isinstance(decoded, dict):
        raise MalformedBodyError("expected a JSON object")
    return decoded


async def authenticate(request: Request[Any, Any, Any]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingTokenError
    secret: bytes = request.app.state.token_secret
    return verify_token(secret, token.strip(), now_s=int(time.time()))
