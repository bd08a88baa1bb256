"""The access policy: what each role may do, and how refusals read."""

from __future__ import annotations

import pytest

from security.errors import SecurityError
from security.roles import (
    PERMISSIONS,
    ForbiddenError,
    Permission,
    Role,
    UnknownRoleError,
    allows,
    parse_role,
    require,
)

P = Permission


def test_every_role_has_an_entry() -> None:
    assert set(PERMISSIONS) == set(Role)


@pytest.mark.parametrize("role", list(Role))
def test_every_role_can_read(role: Role) -> None:
    assert allows(role, P.READ)
    require(role, P.READ)


def test_the_table_as_specified() -> None:
    agent = {
        P.READ,
        P.CREATE_TICKET,
        P.UPDATE_TICKET,
        P.ASSIGN_IN_DEPARTMENT,
        P.CHANGE_PRIORITY,
        P.MANAGE_CUSTOMERS,
    }
    supervisor = agent | {P.REASSIGN_ACROSS_DEPARTMENTS, P.ARCHIVE_TICKET}
    assert dict(PERMISSIONS) == {
        Role.AGENT: agent,
        Role.SUPERVISOR: supervisor,
        Role.REGIONAL_ADMIN: supervisor
        | {P.MANAGE_DEPARTMENTS, P.ERASE_PERSONAL_DATA, P.MANAGE_KEYS, P.READ_COMPLIANCE},
        Role.CENTRAL_OPS: {
            P.READ,
            P.REASSIGN_ACROSS_DEPARTMENTS,
            P.ASSIGN_IN_DEPARTMENT,
            P.CHANGE_PRIORITY,
            P.UPDATE_TICKET,
        },
        Role.COMPLIANCE_AUDITOR: {P.READ, P.READ_COMPLIANCE},
    }


def test_supervisor_can_do_everything_an_agent_can_and_more() -> None:
    assert PERMISSIONS[Role.SUPERVISOR] > PERMISSIONS[Role.AGENT]


def test_regional_admin_can_do_everything_a_supervisor_can_and_more() -> None:
    assert PERMISSIONS[Role.REGIONAL_ADMIN] > PERMISSIONS[Role.SUPERVISOR]


def test_only_the_regional_admin_manages_departments() -> None:
    assert {r for r in Role if allows(r, P.MANAGE_DEPARTMENTS)} == {Role.REGIONAL_ADMIN}


def test_central_ops_moves_work_but_creates_and_archives_nothing() -> None:
    assert allows(Role.CENTRAL_OPS, P.REASSIGN_ACROSS_DEPARTMENTS)
    for permission in (P.CREATE_TICKET, P.ARCHIVE_TICKET, P.MANAGE_CUSTOMERS, P.MANAGE_DEPARTMENTS):
        assert not allows(Role.CENTRAL_OPS, permission)


@pytest.mark.parametrize("permission", [p for p in Permission if p not in {P.READ, P.READ_COMPLIANCE}])
def test_compliance_auditor_can_do_nothing_but_read(permission: Permission) -> None:
    assert not allows(Role.COMPLIANCE_AUDITOR, permission)
    with pytest.raises(ForbiddenError):
        require(Role.COMPLIANCE_AUDITOR, permission)


@pytest.mark.parametrize("permission", [P.ERASE_PERSONAL_DATA, P.MANAGE_KEYS])
def test_only_the_regional_admin_erases_and_manages_keys(permission: Permission) -> None:
    assert {r for r in Role if allows(r, permission)} == {Role.REGIONAL_ADMIN}
    for role in set(Role) - {Role.REGIONAL_ADMIN}:
        with pytest.raises(ForbiddenError):
            require(role, permission)


def test_the_key_inventory_is_for_the_regional_admin_and_the_compliance_auditor() -> None:
    assert {r for r in Role if allows(r, P.READ_COMPLIANCE)} == {
        Role.REGIONAL_ADMIN,
        Role.COMPLIANCE_AUDITOR,
    }


def test_refusing_an_erasure_names_the_permission() -> None:
    with pytest.raises(ForbiddenError, match=r"^role 'supervisor' may not erase_personal_data$"):
        require(Role.SUPERVISOR, P.ERASE_PERSONAL_DATA)


def test_permission_sets_are_immutable() -> None:
    with pytest.raises(TypeError):
        PERMISSIONS[Role.AGENT] = frozenset(Permission)  # type: ignore[index]  # proving it fails


def test_forbidden_names_the_role_and_the_permission() -> None:
    with pytest.raises(ForbiddenError) as info:
        require(Role.AGENT, P.REASSIGN_ACROSS_DEPARTMENTS)
    assert str(info.value) == "role 'agent' may not reassign_across_departments"
    assert (info.value.role, info.value.permission) == (Role.AGENT, P.REASSIGN_ACROSS_DEPARTMENTS)
    assert isinstance(info.value, SecurityError)


@pytest.mark.parametrize("role", list(Role))
def test_parse_role_reads_each_value(role: Role) -> None:
    assert parse_role(role.value) is role


@pytest.mark.parametrize("value", ["", "Agent", "admin", " agent", "agent\n"])
def test_parse_role_refuses_anything_else_and_lists_the_valid_roles(value: str) -> None:
    with pytest.raises(UnknownRoleError) as info:
        parse_role(value)
    assert str(info.value) == (
        f"unknown role {value!r}; expected one of agent, supervisor, regional_admin, "
        "central_ops, compliance_auditor"
    )
    assert info.value.value == value
    assert info.value.valid == tuple(Role)
    assert isinstance(info.value, SecurityError)
