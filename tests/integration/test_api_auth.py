"""Authentication and authorisation at a real node's API, and what it serves without a token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from security.roles import Role
from security.tokens import Principal, issue_token, new_secret
from tests.integration.conftest import as_role
from tests.integration.nodeproc import NodeProcess, running_node

API = "/api/v1"


@pytest.fixture
def anonymous(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, timeout=30) as c:
        yield c


@pytest.fixture
def ticket(client: httpx.Client) -> dict[str, Any]:
    response = client.post(f"{API}/tickets", json={"type": "consult", "subject": "whose is it?"})
    assert response.status_code == 201, response.text
    assert response.json()["department"] == "general"
    stored = client.get(f"{API}/tickets/{response.json()['id']}")
    body: dict[str, Any] = stored.json()
    return body


def last_seq(client: httpx.Client) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    return int(response.json()["changelog_last_seq"])


def node_secret(node: NodeProcess) -> bytes:
    secret = (node.data_dir / "secrets" / "api-token.key").read_bytes()
    assert len(secret) == 32
    return secret


def assert_unauthenticated(response: httpx.Response, *, opaque: bool = False) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["status"] == 401
    if opaque:  # a refused token says nothing about why it was refused
        assert response.json()["detail"] == "invalid or expired token"


# --- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/whoami"),
        ("GET", f"{API}/tickets"),
        ("POST", f"{API}/tickets"),
        ("GET", f"{API}/tickets/anything"),
        ("GET", f"{API}/departments"),
        ("POST", f"{API}/customers"),
    ],
)
def test_no_token_is_401(anonymous: httpx.Client, method: str, path: str) -> None:
    seq = last_seq(anonymous)

    response = anonymous.request(method, path, json={"type": "consult", "subject": "anonymous"})

    assert_unauthenticated(response)
    assert last_seq(anonymous) == seq


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer", id="no-token"),
        pytest.param("Token not-a-token", id="other-scheme"),
        pytest.param("Basic YWdlbnQ6c2VjcmV0", id="basic"),
        pytest.param("Bearer not-a-token", id="garbage"),
        pytest.param("Bearer ec1.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id="garbage-ec1"),
    ],
)
def test_a_missing_or_garbage_token_is_401(node: NodeProcess, authorization: str) -> None:
    with httpx.Client(base_url=node.url, headers={"Authorization": authorization}, timeout=30) as c:
        assert_unauthenticated(c.get(f"{API}/whoami"))


def test_a_token_from_another_node_is_401(node: NodeProcess, tokens: dict[str, str], tmp_path: Path) -> None:
    with running_node(tmp_path / "other-node") as other:
        foreign = other.token("regional_admin", "admin-elsewhere")
        with httpx.Client(base_url=other.url, headers={"Authorization": f"Bearer {foreign}"}) as there:
            assert there.get(f"{API}/whoami").status_code == 200  # good where it was issued
        with httpx.Client(
            base_url=other.url, headers={"Authorization": f"Bearer {tokens['agent']}"}
        ) as there:
            assert_unauthenticated(there.get(f"{API}/whoami"), opaque=True)

    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {foreign}"}, timeout=30) as c:
        assert_unauthenticated(c.get(f"{API}/whoami"), opaque=True)
        assert_unauthenticated(c.get(f"{API}/tickets"), opaque=True)


def _signed(secret: bytes, *, expires_in_s: int | None) -> str:
    now = int(time.time())
    issued = now - 3600
    principal = Principal(Role.AGENT, "agent-x", issued, None if expires_in_s is None else now + expires_in_s)
    return issue_token(secret, principal)


def test_a_token_signed_with_another_secret_is_401(node: NodeProcess) -> None:
    token = _signed(new_secret(), expires_in_s=None)

    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        assert_unauthenticated(c.get(f"{API}/whoami"), opaque=True)


def test_an_expired_or_tampered_token_of_this_node_is_401(node: NodeProcess) -> None:
    secret = node_secret(node)
    good = _signed(secret, expires_in_s=3600)
    expired = _signed(secret, expires_in_s=-60)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")

    def whoami(token: str) -> httpx.Response:
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}) as c:
            return c.get(f"{API}/whoami")

    assert whoami(good).status_code == 200  # the way these tokens are made is sound
    assert whoami(good).json()["name"] == "agent-x"
    assert_unauthenticated(whoami(expired), opaque=True)
    assert_unauthenticated(whoami(tampered), opaque=True)


def test_whoami_names_the_caller(node: NodeProcess, tokens: dict[str, str]) -> None:
    for role in tokens:
        with as_role(node, tokens, role) as c:
            response = c.get(f"{API}/whoami")
            assert response.status_code == 200, response.text
            assert (response.json()["role"], response.json()["name"]) == (role, f"{role}-1")


# --- authorisation --------------------------------------------------------------------------


@pytest.fixture
def auditor(node: NodeProcess, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with as_role(node, tokens, "compliance_auditor") as c:
        yield c


def test_the_compliance_auditor_reads_everything(
    auditor: httpx.Client, client: httpx.Client, ticket: dict[str, Any]
) -> None:
    tid = ticket["id"]
    customer = client.post(f"{API}/customers", json={"name": "Read Me", "phone": "+4930123456"}).json()
    assert client.post(f"{API}/tickets/{tid}/comments", json={"body": "hello"}).status_code == 201

    reads = {
        "list": auditor.get(f"{API}/tickets"),
        "ticket": auditor.get(f"{API}/tickets/{tid}"),
        "comments": auditor.get(f"{API}/tickets/{tid}/comments"),
        "customer": auditor.get(f"{API}/customers/{customer['id']}"),
        "departments": auditor.get(f"{API}/departments"),
        "whoami": auditor.get(f"{API}/whoami"),
    }

    assert {name: r.status_code for name, r in reads.items()} == dict.fromkeys(reads, 200)
    assert reads["ticket"].json()["id"] == tid
    assert [c["body"] for c in reads["comments"].json()["items"]] == ["hello"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/tickets", {"type": "consult", "subject": "audit"}, id="create-ticket"),
        pytest.param("PATCH", "/tickets/{tid}", {"subject": "edited"}, id="edit"),
        pytest.param("POST", "/tickets/{tid}/transition", {"status": "in_progress"}, id="transition"),
        pytest.param("POST", "/tickets/{tid}/assign", {"assignee": "agent-1"}, id="assign"),
        pytest.param("POST", "/tickets/{tid}/escalate", {"reason": "audit"}, id="escalate"),
        pytest.param("POST", "/tickets/{tid}/archive", None, id="archive"),
        pytest.param("POST", "/tickets/{tid}/comments", {"body": "audit"}, id="comment"),
        pytest.param("POST", "/customers", {"name": "Audit", "phone": "+4930123456"}, id="customer"),
        pytest.param("POST", "/departments", {"id": "audit", "name": "Audit"}, id="department"),
    ],
)
def test_the_compliance_auditor_may_not_write(
    auditor: httpx.Client,
    client: httpx.Client,
    ticket: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    seq = last_seq(auditor)

    response = auditor.request(method, API + path.format(tid=ticket["id"]), json=body)

    assert response.status_code == 403, response.text
    assert "compliance_auditor" in response.json()["detail"]
    assert last_seq(auditor) == seq
    assert client.get(f"{API}/tickets/{ticket['id']}").json() == ticket


def test_an_agent_cannot_move_a_ticket_to_another_department(
    client: httpx.Client, ticket: dict[str, Any]
) -> None:
    tid = ticket["id"]
    seq = last_seq(client)

    patched = client.patch(f"{API}/tickets/{tid}", json={"department": "billing"})
    assigned = client.post(
        f"{API}/tickets/{tid}/assign", json={"assignee": "agent-1", "department": "billing"}
    )

    assert patched.status_code == 403, patched.text
    assert assigned.status_code == 403, assigned.text
    assert last_seq(client) == seq
    after = client.get(f"{API}/tickets/{tid}").json()
    assert (after["department"], after["assignee"], after["status"]) == ("general", None, "new")


def test_an_agent_assigns_within_the_department(client: httpx.Client, ticket: dict[str, Any]) -> None:
    response = client.post(
        f"{API}/tickets/{ticket['id']}/assign", json={"assignee": "agent-2", "department": "general"}
    )

    assert response.status_code == 200, response.text
    assert (response.json()["assignee"], response.json()["department"]) == ("agent-2", "general")


@pytest.mark.parametrize("role", ["supervisor", "regional_admin", "central_ops"])
def test_supervisors_and_central_ops_move_tickets_between_departments(
    node: NodeProcess, tokens: dict[str, str], client: httpx.Client, role: str
) -> None:
    first = client.post(f"{API}/tickets", json={"type": "consult", "subject": "move me"}).json()
    second = client.post(f"{API}/tickets", json={"type": "consult", "subject": "move me too"}).json()

    with as_role(node, tokens, role) as c:
        patched = c.patch(f"{API}/tickets/{first['id']}", json={"department": "billing"})
        assigned = c.post(
            f"{API}/tickets/{second['id']}/assign", json={"assignee": "agent-9", "department": "complaints"}
        )

    assert patched.status_code == 200, patched.text
    assert patched.json()["department"] == "billing"
    assert assigned.status_code == 200, assigned.text
    assert (assigned.json()["department"], assigned.json()["assignee"]) == ("complaints", "agent-9")
    assert client.get(f"{API}/tickets/{first['id']}").json()["department"] == "billing"
    assert client.get(f"{API}/tickets/{second['id']}").json()["department"] == "complaints"


def test_central_ops_reassigns_but_does_not_create_tickets(
    node: NodeProcess, tokens: dict[str, str], ticket: dict[str, Any]
) -> None:
    with as_role(node, tokens, "central_ops") as ops:
        created = ops.post(f"{API}/tickets", json={"type": "consult", "subject": "from the hub"})
        moved = ops.post(
            f"{API}/tickets/{ticket['id']}/assign", json={"assignee": "agent-3", "department": "service-desk"}
        )

    assert created.status_code == 403, created.text
    assert moved.status_code == 200, moved.text
    assert moved.json()["department"] == "service-desk"


def test_only_supervisors_archive(
    node: NodeProcess, tokens: dict[str, str], client: httpx.Client, ticket: dict[str, Any]
) -> None:
    tid = ticket["id"]
    for status in ("resolved", "closed"):
        assert client.post(f"{API}/tickets/{tid}/transition", json={"status": status}).status_code == 200

    refused = client.post(f"{API}/tickets/{tid}/archive")
    with as_role(node, tokens, "supervisor") as supervisor:
        archived = supervisor.post(f"{API}/tickets/{tid}/archive")

    assert refused.status_code == 403, refused.text
    assert archived.status_code == 200, archived.text


# --- open endpoints -----------------------------------------------------------------------


def test_health_and_readiness_need_no_token(anonymous: httpx.Client) -> None:
    health = anonymous.get("/healthz")
    ready = anonymous.get("/readyz")

    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert isinstance(ready.json()["changelog_last_seq"], int)


def test_the_openapi_document_describes_the_ticket_api(anonymous: httpx.Client) -> None:
    response = anonymous.get("/schema/openapi.json")

    assert response.status_code == 200, response.text
    doc = response.json()
    paths = doc["paths"]
    for path in (
        f"{API}/tickets",
        f"{API}/tickets/{{ticket_id}}",
        f"{API}/tickets/{{ticket_id}}/transition",
        f"{API}/tickets/{{ticket_id}}/assign",
        f"{API}/tickets/{{ticket_id}}/escalate",
        f"{API}/tickets/{{ticket_id}}/archive",
        f"{API}/tickets/{{ticket_id}}/comments",
    ):
        assert path in paths, sorted(paths)
    assert {"get", "post"} <= set(paths[f"{API}/tickets"])
    assert {"get", "patch"} <= set(paths[f"{API}/tickets/{{ticket_id}}"])

    create = paths[f"{API}/tickets"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["type"] == "object"
    assert create["required"] == ["subject", "type"]
    assert create["additionalProperties"] is False
    assert {"type", "subject", "priority", "customer_id", "location", "department"} <= set(
        create["properties"]
    )
    assert not {"id", "status", "tier", "sla", "created_at"} & set(create["properties"])
    type_schema = create["properties"]["type"]
    assert type_schema["enum"] == ["consult", "fault", "complaint", "service_request"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
