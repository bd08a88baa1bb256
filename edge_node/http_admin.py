"""HTTP routes for the region's data protection duties: erasure of a customer, key rotation, key inventory.

Included in the node's API by ``edge_node.http`` (``*ADMIN_ROUTES`` in its
``ROUTES``); errors go through its one status table. Translates only: erasure
is ``edge_node.erasure``, keys are ``security.keystore`` behind the node's
:class:`~edge_node.node_security.NodeSecurity`. Every route names its
permission first, so a caller without it learns nothing about the node's state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.spec import Operation
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from edge_node.admin_audit import inventory_json
from edge_node.erasure import MAX_REASON_CHARS, erase_customer, parse_reason
from edge_node.http_common import read_json_object
from edge_node.node_security import NodeSecurity
from edge_node.service import NodeService
from security.roles import Permission, require
from security.tokens import Principal

log = logging.getLogger(__name__)

API = "/api/v1"

_ERASURE_BODY: dict[str, object] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "maxLength": MAX_REASON_CHARS,
            "description": "why, for the audit log: a request or ticket id, never personal data",
        }
    },
    "additionalProperties": False,
}


@dataclass
class _OptionalErasureBody(Operation):
    """Litestar documents bodies from the handler signature; this one is read by hand."""

    def to_schema(self) -> dict[str, Any]:
        out = super().to_schema()
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _ERASURE_BODY}},
        }
        return out


def _security(state: State) -> NodeSecurity:
    security: NodeSecurity | None = state.get("security")
    if security is None:
        raise HTTPException(status_code=503, detail="security is not initialised")
    return security


async def _optional_json_object(request: Request[Any, Any, Any]) -> dict[str, object]:
    """The body as a JSON object; an empty body is an empty object."""
    if not (await request.body()).strip():
        return {}
    return await read_json_object(request)


@post(
    f"{API}/customers/{{customer_id:str}}/erasure",
    tags=["compliance"],
    summary="Erase a customer's personal data (GDPR Art. 17)",
    description=(
        "Blanks the personal fields of the customer, its tickets and their comments (the change "
        "replicates), removes the old values from the node's change log, and shreds the data key "
        "`customer:<id>`, so every sealed copy, the hub's included, becomes unreadable. Idempotent: "
        "asking again answers `already_erased: true`. Needs the regional admin role."
    ),
    operation_class=_OptionalErasureBody,
    status_code=200,
)
async def erase_customer_data(
    request: Request[Any, Any, Any],
    state: State,
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> dict[str, object]:
    require(principal.role, Permission.ERASE_PERSONAL_DATA)
    security = _security(state)
    reason = parse_reason(await _optional_json_object(request))
    service: NodeService = state.service
    summary = await erase_customer(
        service.store, security.keys, security.audit, principal, customer_id, reason=reason
    )
    return summary.as_dict()


@post(
    f"{API}/keys/rotate",
    tags=["keys"],
    summary="Rotate the region's key-encryption key",
    description=(
        "Creates the next KEK version, re-wraps every data key under it and destroys the old one; "
        "sealed data is not re-encrypted. Audited as `kek_rotated`. Needs the regional admin role."
    ),
    status_code=200,
)
async def rotate_kek(state: State, principal: NamedDependency[Principal]) -> dict[str, object]:
    require(principal.role, Permission.MANAGE_KEYS)
    by = f"{principal.role.value}:{principal.name}"
    rotation = await asyncio.to_thread(partial(_security(state).keys.rotate_kek, by=by))
    log.info("KEK rotated to v%d by %s (%s)", rotation.new_version, principal.name, principal.role.value)
    return {
        "old_version": rotation.old_version,
        "new_version": rotation.new_version,
        "rewrapped": rotation.rewrapped,
    }


@get(
    f"{API}/keys",
    tags=["keys"],
    summary="The region's key inventory: versions, fingerprints, shredded keys; never key bytes",
)
async def key_inventory(state: State, principal: NamedDependency[Principal]) -> dict[str, object]:
    require(principal.role, Permission.READ_COMPLIANCE)
    return inventory_json(await asyncio.to_thread(_security(state).keys.inventory))


ADMIN_ROUTES: list[ControllerRouterHandler] = [erase_customer_data, rotate_kek, key_inventory]
