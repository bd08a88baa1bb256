"""Roles of the HTTP API and the permissions each one grants.

Theory of operation
-------------------
Every caller of a node's (or the hub's) API acts in exactly one ``Role``, read
from its bearer token. Handlers never test roles themselves: they name the
``Permission`` the operation needs and call ``require``, so the whole access
policy is the one ``PERMISSIONS`` table below and can be reviewed and tested
as data.

The table is built up in layers so that the inclusions the business relies on
hold by construction: a supervisor can do everything an agent can, a regional
admin everything a supervisor can. Central operations at the hub is a separate
branch: it may read and move work between departments (central reassignment)
but not create tickets or touch customer or department records. A compliance
auditor only reads: the records, and the compliance views (key inventory).

Three permissions guard the region's data protection duties and belong to the
regional admin alone (supervisors and agents do not inherit them):
``ERASE_PERSONAL_DATA`` (crypto-shredding erasure of a customer, GDPR Art. 17)
and ``MANAGE_KEYS`` (rotating the region's key-encryption key) change what can
ever be read again; ``READ_COMPLIANCE`` (the key inventory) is shared with the
compliance auditor.

Denials raise ``ForbiddenError`` naming the role and the permission: unlike a
failed authentication, a refused authorisation tells the caller nothing they
did not already know, and it helps them ask for the right role.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from security.errors import SecurityError


class Role(StrEnum):
    """Who a caller is acting as."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    REGIONAL_ADMIN = "regional_admin"
    CENTRAL_OPS = "central_ops"
    COMPLIANCE_AUDITOR = "compliance_auditor"


class Permission(StrEnum):
    """What an API operation needs the caller's role to grant."""

    READ = "read"
    """Read tickets, customers and departments."""
    CREATE_TICKET = "create_ticket"
    UPDATE_TICKET = "update_ticket"
    """Edit fields, transition, comment on and escalate a ticket."""
    ASSIGN_IN_DEPARTMENT = "assign_in_department"
    REASSIGN_ACROSS_DEPARTMENTS = "reassign_across_departments"
    CHANGE_PRIORITY = "change_priority"
    MANAGE_CUSTOMERS = "manage_customers"
    MANAGE_DEPARTMENTS = "manage_departments"
    ARCHIVE_TICKET = "archive_ticket"
    ERASE_PERSONAL_DATA = "erase_personal_data"
    """Erase a customer: blank their personal fields and shred their data key (GDPR Art. 17)."""
    MANAGE_KEYS = "manage_keys"
    """Rotate the region's key-encryption key."""
    READ_COMPLIANCE = "read_compliance"
    """Read compliance views: the key inventory (ids, versions, fingerprints; never key bytes)."""


class ForbiddenError(SecurityError):
    """The caller's role does not grant the permission an operation needs."""

    def __init__(self, role: Role, permission: Permission) -> None:
        self.role, self.permission = role, permission
        super().__init__(f"role {role.value!r} may not {permission.value}")


class UnknownRoleError(SecurityError):
    """A string names no role."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.valid = tuple(Role)
        super().__init__(f"unknown role {value!r}; expected one of {', '.join(r.value for r in self.valid)}")


_AGENT: Final = frozenset(
    {
        Permission.READ,
        Permission.CREATE_TICKET,
        Permission.UPDATE_TICKET,
        Permission.ASSIGN_IN_DEPARTMENT,
        Permission.CHANGE_PRIORITY,
        Permission.MANAGE_CUSTOMERS,
    }
)
_SUPERVISOR: Final = _AGENT | {Permission.REASSIGN_ACROSS_DEPARTMENTS, Permission.ARCHIVE_TICKET}
_REGIONAL_ADMIN: Final = _SUPERVISOR | {
    Permission.MANAGE_DEPARTMENTS,
    Permission.ERASE_PERSONAL_DATA,
    Permission.MANAGE_KEYS,
    Permission.READ_COMPLIANCE,
}

PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        Role.AGENT: _AGENT,
        Role.SUPERVISOR: _SUPERVISOR,
        Role.REGIONAL_ADMIN: _REGIONAL_ADMIN,
        Role.CENTRAL_OPS: frozenset(
            {
                Permission.READ,
                Permission.UPDATE_TICKET,
                Permission.ASSIGN_IN_DEPARTMENT,
                Permission.REASSIGN_ACROSS_DEPARTMENTS,
                Permission.CHANGE_PRIORITY,
            }
        ),
        Role.COMPLIANCE_AUDITOR: frozenset({Permission.READ, Permission.READ_COMPLIANCE}),
    }
)
"""The access policy: the permissions each role grants, and nothing else."""


def allows(role: Role, permission: Permission) -> bool:
    """Tell whether ``role`` grants ``permission``, for shaping responses (e.g. menus).

    Use ``require`` to guard an operation: it cannot be ignored by mistake.
    """
    return permission in PERMISSIONS[role]


def require(role: Role, permission: Permission) -> None:
    """Guard an operation: return if ``role`` grants ``permission``, else raise.

    Raises:
        ForbiddenError: The role does not grant the permission.
    """
    if not allows(role, permission):
        raise ForbiddenError(role, permission)


def parse_role(value: str) -> Role:
    """Read a role from its wire or config spelling, e.g. ``"regional_admin"``.

    Raises:
        UnknownRoleError: ``value`` is not exactly one role's value.
    """
    try:
        return Role(value)
    except ValueError:
        raise UnknownRoleError(value) from None
