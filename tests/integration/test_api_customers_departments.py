"""Customers and departments on a real node: defaults, ids, validation, who may create what."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import as_role
from tests.integration.nodeproc import NodeProcess

API = "/api/v1"
SEEDED = {
    "general": "tier2",
    "network-ops": "network-l2",
    "billing": "tier2",
    "complaints": "tier2",
    "service-desk": "tier2",
    "vip-care": "tier2",
    "network-l2": None,
    "tier2": None,
}


@pytest.fixture
def admin(node: NodeProcess, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with as_role(node, tokens, "regional_admin") as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def last_seq(client: httpx.Client) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    return int(response.json()["changelog_last_seq"])


def problem_fields(response: httpx.Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


# --- customers ----------------------------------------------------------------------------


def test_create_customer_fills_defaults_and_the_node_region(client: httpx.Client) -> None:
    region = client.get("/readyz").json()["region"]

    response = client.post(f"{API}/customers", json={"name": "Erika Muster", "phone": "+4930123456"})

    assert response.status_code == 201, response.text
    customer = response.json()
    assert customer["id"]
    assert response.headers["Location"] == f"{API}/customers/{customer['id']}"
    assert (customer["language"], customer["vip_tier"], customer["region"]) == ("en", "standard", region)
    assert customer["created_at"] == customer["updated_at"]
    stored = client.get(f"{API}/customers/{customer['id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["name"] == "Erika Muster"
    assert stored.json()["region"] == region


def test_create_customer_keeps_given_values(client: httpx.Client) -> None:
    body = {
        "name": "王小明",
        "phone": "+8613800138000",
        "language": "zh-CN",
        "vip_tier": "gold",
        "email": "xm@example.com",
    }

    response = client.post(f"{API}/customers", json=body)

    assert response.status_code == 201, response.text
    stored = client.get(f"{API}/customers/{response.json()['id']}").json()
    assert {k: stored[k] for k in body} == body


def test_a_client_chosen_id_is_kept_and_cannot_be_taken_twice(client: httpx.Client) -> None:
    customer_id = unique("crm")

    first = client.post(f"{API}/customers", json={"id": customer_id, "name": "First", "phone": "+4930123456"})
    assert first.status_code == 201, first.text
    assert first.json()["id"] == customer_id
    seq = last_seq(client)

    second = client.post(
        f"{API}/customers", json={"id": customer_id, "name": "Second", "phone": "+4930654321"}
    )

    assert second.status_code == 409, second.text
    assert customer_id in second.json()["detail"]
    assert last_seq(client) == seq
    assert client.get(f"{API}/customers/{customer_id}").json()["name"] == "First"


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("030123456", id="no-plus"),
        pytest.param("+030123456", id="leading-zero"),
        pytest.param("+49 30 123456", id="spaces"),
        pytest.param("+4930123456789012", id="too-long"),
        pytest.param("+12345", id="too-short"),
        pytest.param(4930123456, id="number"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
    ],
)
def test_a_phone_that_is_not_e164_is_refused(client: httpx.Client, phone: object) -> None:
    seq = last_seq(client)

    response = client.post(f"{API}/customers", json={"name": "Bad Phone", "phone": phone})

    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"phone"}
    assert last_seq(client) == seq


def test_the_region_is_the_nodes_not_the_clients(client: httpx.Client) -> None:
    response = client.post(
        f"{API}/customers", json={"name": "Elsewhere", "phone": "+4930123456", "region": "us-east"}
    )

    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"region"}


def test_an_unknown_customer_is_404(client: httpx.Client) -> None:
    response = client.get(f"{API}/customers/{unique('nobody')}")

    assert response.status_code == 404, response.text
    assert response.json()["status"] == 404


# --- departments ----------------------------------------------------------------------------


def test_departments_list_has_the_seeded_ones(client: httpx.Client) -> None:
    response = client.get(f"{API}/departments")

    assert response.status_code == 200, response.text
    listed = {d["id"]: d["escalates_to"] for d in response.json()["items"]}
    assert {k: listed.get(k) for k in SEEDED} == SEEDED
    assert set(SEEDED) <= set(listed)
    ids = [d["id"] for d in response.json()["items"]]
    assert ids == sorted(ids)


@pytest.mark.parametrize("role", ["agent", "supervisor", "central_ops", "compliance_auditor"])
def test_only_a_regional_admin_creates_departments(
    node: NodeProcess, tokens: dict[str, str], role: str
) -> None:
    with as_role(node, tokens, role) as c:
        seq = last_seq(c)
        response = c.post(f"{API}/departments", json={"id": unique("roaming"), "name": "Roaming"})

        assert response.status_code == 403, response.text
        assert last_seq(c) == seq


def test_a_regional_admin_creates_a_department_tickets_can_use(
    admin: httpx.Client, client: httpx.Client
) -> None:
    dept = unique("roaming")

    response = admin.post(
        f"{API}/departments", json={"id": dept, "name": "Roaming", "escalates_to": "network-l2"}
    )

    assert response.status_code == 201, response.text
    assert (response.json()["id"], response.json()["escalates_to"]) == (dept, "network-l2")
    listed = {d["id"]: d for d in client.get(f"{API}/departments").json()["items"]}
    assert listed[dept]["name"] == "Roaming"
    ticket = client.post(f"{API}/tickets", json={"type": "consult", "subject": "abroad", "department": dept})
    assert ticket.status_code == 201, ticket.text
    assert ticket.json()["department"] == dept
    escalated = client.post(f"{API}/tickets/{ticket.json()['id']}/escalate", json={"reason": "tier 2"})
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["department"] == "network-l2"


def test_a_department_id_cannot_be_taken_twice(admin: httpx.Client) -> None:
    seq = last_seq(admin)

    response = admin.post(f"{API}/departments", json={"id": "billing", "name": "Billing again"})

    assert response.status_code == 409, response.text
    assert last_seq(admin) == seq
    names = {d["id"]: d["name"] for d in admin.get(f"{API}/departments").json()["items"]}
    assert names["billing"] == "Billing"


def test_escalates_to_must_name_a_known_department(admin: httpx.Client) -> None:
    dept = unique("roaming")
    seq = last_seq(admin)

    response = admin.post(
        f"{API}/departments", json={"id": dept, "name": "Roaming", "escalates_to": unique("nowhere")}
    )

    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"escalates_to"}
    assert last_seq(admin) == seq
    assert dept not in {d["id"] for d in admin.get(f"{API}/departments").json()["items"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": "No id"}, "id", id="missing-id"),
        pytest.param({"id": "nameless"}, "name", id="missing-name"),
        pytest.param({"id": "-starts-badly", "name": "X"}, "id", id="bad-id"),
        pytest.param(
            {"id": "ok-id", "name": "X", "created_at": "2026-01-01T00:00:00Z"}, "created_at", id="server"
        ),
    ],
)
def test_a_bad_department_is_refused_naming_the_field(
    admin: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = admin.post(f"{API}/departments", json=body)

    assert response.status_code == 422, response.text
    assert problem_fields(response) == {field}
