"""A matrix of bad requests against a real node: each is a 4xx naming the field, never a 5xx,
and never a partial write.

"No partial write" is checked two ways: the node's change-log sequence
(``/readyz`` ``changelog_last_seq``) is the same after the request as before, and
a ticket the request targeted reads the same as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.integration.conftest import as_role
from tests.integration.nodeproc import NodeProcess

API = "/api/v1"
MISSING = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"  # a well-formed id no ticket has
FAULT_FIELDS = ("location", "symptom", "impact_scope")


def j(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Bad:
    """One bad request and what the node must answer.

    ``path`` may name ``{tid}`` (a fresh ticket made for the case) or ``{missing}``.
    """

    method: str
    path: str
    status: int
    fields: tuple[str, ...] = ()
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    role: str = "agent"
    allowed: tuple[str, ...] = ()


def ticket(**fields: object) -> bytes:
    return j({"type": "consult", "subject": "help", **fields})


CASES = [
    # --- create: field types, unknown and missing fields
    pytest.param(Bad("POST", "/tickets", 422, ("priority",), ticket(priority=5)), id="priority-number"),
    pytest.param(Bad("POST", "/tickets", 422, ("priority",), ticket(priority="P9")), id="priority-unknown"),
    pytest.param(Bad("POST", "/tickets", 422, ("subject",), ticket(subject=123)), id="subject-number"),
    pytest.param(Bad("POST", "/tickets", 422, ("subject",), ticket(subject="  ")), id="subject-blank"),
    pytest.param(Bad("POST", "/tickets", 422, ("subject",), ticket(subject="a\x00b")), id="subject-nul"),
    pytest.param(
        Bad("POST", "/tickets", 422, ("subject",), ticket(subject="s" * 201)), id="subject-too-long"
    ),
    pytest.param(Bad("POST", "/tickets", 422, ("call_ids",), ticket(call_ids="x")), id="call_ids-string"),
    pytest.param(Bad("POST", "/tickets", 422, ("tags",), ticket(tags=[1])), id="tags-number-item"),
    pytest.param(Bad("POST", "/tickets", 422, ("channel",), ticket(channel="fax")), id="channel-unknown"),
    pytest.param(Bad("POST", "/tickets", 422, ("colour",), ticket(colour="red")), id="unknown-field"),
    pytest.param(Bad("POST", "/tickets", 422, ("status",), ticket(status="closed")), id="server-field"),
    pytest.param(
        Bad(
            "POST",
            "/tickets",
            422,
            ("priority", "subject", "call_ids", "colour"),
            j({"type": "consult", "priority": 5, "subject": 123, "call_ids": "x", "colour": "red"}),
        ),
        id="every-problem-at-once",
    ),
    pytest.param(Bad("POST", "/tickets", 422, ("type",), j({"subject": "no type"})), id="missing-type"),
    pytest.param(Bad("POST", "/tickets", 422, ("subject",), j({"type": "consult"})), id="missing-subject"),
    pytest.param(Bad("POST", "/tickets", 422, ("type", "subject"), j({})), id="empty-object"),
    pytest.param(Bad("POST", "/tickets", 422, ("type",), ticket(type="outage")), id="type-unknown"),
    pytest.param(Bad("POST", "/tickets", 422, ("type",), ticket(type=None)), id="type-null"),
    pytest.param(Bad("POST", "/tickets", 422, FAULT_FIELDS, ticket(type="fault")), id="fault-without-fields"),
    pytest.param(
        Bad("POST", "/tickets", 422, ("symptom",), ticket(type="fault", location="here", impact_scope="me")),
        id="fault-without-symptom",
    ),
    pytest.param(
        Bad("POST", "/tickets", 422, ("customer_id",), ticket(customer_id="nobody-here")),
        id="unknown-customer",
    ),
    pytest.param(
        Bad("POST", "/tickets", 422, ("customer_id",), ticket(customer_id="not an id!")), id="bad-customer-id"
    ),
    pytest.param(
        Bad("POST", "/tickets", 422, ("department",), ticket(department="nowhere")), id="unknown-department"
    ),
    # --- create: bodies that are not a JSON object
    pytest.param(Bad("POST", "/tickets", 400, ("body",), b'{"type": "consult",'), id="malformed-json"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), b"\xff\xfe{}"), id="not-utf8"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), j([{"type": "consult"}])), id="json-array"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), j("consult")), id="json-string"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), b"null"), id="json-null"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), b""), id="empty-body"),
    pytest.param(Bad("POST", "/tickets", 400, ("body",), b"  \n"), id="blank-body"),
    pytest.param(
        Bad("POST", "/tickets", 413, ("body",), ticket(description="x" * (64 * 1024 + 1))), id="oversized"
    ),
    pytest.param(
        Bad("POST", "/tickets", 400, ("body",), b"[" * 30_000 + b"]" * 30_000),
        id="deeply-nested",
    ),
    # --- per-ticket routes on a ticket that exists
    pytest.param(Bad("PATCH", "/tickets/{tid}", 422, ("body",), j({})), id="patch-nothing"),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 400, ("body",), b""), id="patch-empty-body"),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 400, ("body",), j(["subject"])), id="patch-array"),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 422, ("priority",), j({"priority": 1})), id="patch-priority"),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 422, ("type",), j({"type": None})), id="patch-type-null"),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 422, ("subject",), j({"subject": ""})), id="patch-subject"),
    pytest.param(
        Bad("PATCH", "/tickets/{tid}", 422, ("status",), j({"status": "closed"})), id="patch-status"
    ),
    pytest.param(Bad("PATCH", "/tickets/{tid}", 422, ("tier",), j({"tier": 2})), id="patch-tier"),
    pytest.param(
        Bad("PATCH", "/tickets/{tid}", 422, FAULT_FIELDS, j({"type": "fault"})), id="patch-to-fault"
    ),
    pytest.param(
        Bad("PATCH", "/tickets/{tid}", 422, ("department",), j({"department": "nowhere"}), role="supervisor"),
        id="patch-unknown-department",
    ),
    pytest.param(
        Bad(
            "POST",
            "/tickets/{tid}/transition",
            409,
            body=j({"status": "closed"}),
            allowed=("assigned", "in_progress", "pending_customer", "resolved"),
        ),
        id="transition-invalid",
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/transition", 422, ("status",), j({"status": "bogus"})),
        id="transition-unknown-status",
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/transition", 422, ("status",), j({"status": 5})), id="transition-number"
    ),
    pytest.param(Bad("POST", "/tickets/{tid}/transition", 422, ("status",), j({})), id="transition-missing"),
    pytest.param(
        Bad("POST", "/tickets/{tid}/transition", 422, ("status",), j({"status": "assigned"})),
        id="transition-assigned-without-assignee",
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/transition", 422, ("note",), j({"status": "in_progress", "note": "x"})),
        id="transition-unknown-field",
    ),
    pytest.param(Bad("POST", "/tickets/{tid}/transition", 400, ("body",), b""), id="transition-empty-body"),
    pytest.param(Bad("POST", "/tickets/{tid}/assign", 422, ("assignee",), j({})), id="assign-missing"),
    pytest.param(
        Bad("POST", "/tickets/{tid}/assign", 422, ("assignee",), j({"assignee": " "})), id="assign-blank"
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/assign", 422, ("assignee",), j({"assignee": 7})), id="assign-number"
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/assign", 422, ("assignee",), j({"assignee": "a" * 65})),
        id="assign-too-long",
    ),
    pytest.param(
        Bad(
            "POST",
            "/tickets/{tid}/assign",
            422,
            ("department",),
            j({"assignee": "agent-1", "department": "nowhere"}),
            role="supervisor",
        ),
        id="assign-unknown-department",
    ),
    pytest.param(Bad("POST", "/tickets/{tid}/escalate", 422, ("reason",), j({})), id="escalate-no-reason"),
    pytest.param(
        Bad("POST", "/tickets/{tid}/escalate", 422, ("reason",), j({"reason": ""})),
        id="escalate-empty-reason",
    ),
    pytest.param(Bad("POST", "/tickets/{tid}/comments", 422, ("body",), j({})), id="comment-missing-body"),
    pytest.param(
        Bad("POST", "/tickets/{tid}/comments", 422, ("body",), j({"body": ""})), id="comment-empty-body"
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/comments", 422, ("internal",), j({"body": "x", "internal": "yes"})),
        id="comment-internal-string",
    ),
    pytest.param(
        Bad("POST", "/tickets/{tid}/comments", 422, ("author",), j({"body": "x", "author": "ceo"})),
        id="comment-server-field",
    ),
    pytest.param(Bad("POST", "/tickets/{tid}/archive", 409, role="supervisor"), id="archive-open-ticket"),
    # --- every per-ticket route on a ticket that does not exist
    pytest.param(Bad("GET", "/tickets/{missing}", 404), id="get-unknown"),
    pytest.param(Bad("PATCH", "/tickets/{missing}", 404, body=j({"subject": "x"})), id="patch-unknown"),
    pytest.param(
        Bad("POST", "/tickets/{missing}/transition", 404, body=j({"status": "resolved"})),
        id="transition-unknown",
    ),
    pytest.param(
        Bad("POST", "/tickets/{missing}/assign", 404, body=j({"assignee": "agent-1"})), id="assign-unknown"
    ),
    pytest.param(
        Bad("POST", "/tickets/{missing}/escalate", 404, body=j({"reason": "x"})), id="escalate-unknown"
    ),
    pytest.param(Bad("POST", "/tickets/{missing}/archive", 404, role="supervisor"), id="archive-unknown"),
    pytest.param(
        Bad("POST", "/tickets/{missing}/comments", 404, body=j({"body": "x"})), id="comment-unknown"
    ),
    pytest.param(Bad("GET", "/tickets/{missing}/comments", 404), id="comments-of-unknown"),
    # --- list queries
    pytest.param(Bad("GET", "/tickets", 400, ("limit",), params={"limit": "ten"}), id="limit-word"),
    pytest.param(Bad("GET", "/tickets", 400, ("limit",), params={"limit": "2.5"}), id="limit-float"),
    pytest.param(Bad("GET", "/tickets", 400, ("limit",), params={"limit": "0"}), id="limit-zero"),
    pytest.param(Bad("GET", "/tickets", 400, ("limit",), params={"limit": "201"}), id="limit-too-big"),
    pytest.param(
        Bad("GET", "/tickets", 400, ("breached",), params={"breached": "maybe"}), id="breached-word"
    ),
    pytest.param(
        Bad("GET", "/tickets", 422, ("customer",), params={"customer": "a", "customer_id": "b"}),
        id="customer-conflict",
    ),
    # --- customers
    pytest.param(
        Bad("POST", "/customers", 422, ("phone",), j({"name": "N", "phone": "030123456"})),
        id="phone-not-e164",
    ),
    pytest.param(
        Bad("POST", "/customers", 422, ("name",), j({"phone": "+4930123456"})), id="customer-no-name"
    ),
    pytest.param(
        Bad(
            "POST",
            "/customers",
            422,
            ("language",),
            j({"name": "N", "phone": "+4930123456", "language": "?"}),
        ),
        id="customer-language",
    ),
    pytest.param(
        Bad(
            "POST",
            "/customers",
            422,
            ("vip_tier",),
            j({"name": "N", "phone": "+4930123456", "vip_tier": "x"}),
        ),
        id="customer-vip-tier",
    ),
    pytest.param(Bad("GET", "/customers/{missing}", 404), id="customer-unknown"),
]


@pytest.fixture
def clients(node: NodeProcess, tokens: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    with as_role(node, tokens, "agent") as agent, as_role(node, tokens, "supervisor") as supervisor:
        yield {"agent": agent, "supervisor": supervisor}


def last_seq(client: httpx.Client) -> int:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    return int(response.json()["changelog_last_seq"])


@pytest.mark.parametrize("case", CASES)
def test_bad_request_is_refused_without_a_trace(clients: dict[str, httpx.Client], case: Bad) -> None:
    agent = clients["agent"]
    tid = ""
    if "{tid}" in case.path:
        made = agent.post(f"{API}/tickets", json={"type": "consult", "subject": "target of a bad request"})
        assert made.status_code == 201, made.text
        tid = made.json()["id"]
    before = agent.get(f"{API}/tickets/{tid}").json() if tid else None
    seq = last_seq(agent)

    response = clients[case.role].request(
        case.method,
        API + case.path.format(tid=tid, missing=MISSING),
        content=case.body,
        params=case.params,
        headers={"Content-Type": "application/json"} if case.body is not None else {},
    )

    assert response.status_code < 500, f"server error {response.status_code}: {response.text}"
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == case.status
    named = {e["field"] for e in problem.get("errors", [])}
    assert named == set(case.fields), f"expected errors naming {case.fields}, got {sorted(named)}"
    if case.allowed:
        assert problem["allowed"] == list(case.allowed)
    if case.status == 404:
        assert "not found" in problem["detail"]
    assert last_seq(agent) == seq, "a refused request wrote to the change log"
    if tid:
        assert agent.get(f"{API}/tickets/{tid}").json() == before


def test_an_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "consult", "subject": "big", "description": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    seq = last_seq(client)

    response = client.post(f"{API}/tickets", content=chunks(), headers={"Content-Type": "application/json"})

    assert response.status_code == 413, response.text
    assert {e["field"] for e in response.json()["errors"]} == {"body"}
    assert last_seq(client) == seq


def test_the_node_still_serves_after_the_matrix(client: httpx.Client) -> None:
    response = client.post(f"{API}/tickets", json={"type": "consult", "subject": "still fine?"})

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=bogus", "status"), ("priority=P9", "priority"), ("type=question", "type")],
)
def test_list_filters_are_checked_against_the_declared_choices(
    client: httpx.Client, query: str, field: str
) -> None:
    response = client.get(f"/api/v1/tickets?{query}")
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_a_token_of_another_role_with_the_same_name_does_not_replay_a_create(
    node: NodeProcess, tokens: dict[str, str]
) -> None:
    agent = node.token("agent", name="shared-name")
    supervisor = node.token("supervisor", name="shared-name")
    body = {"type": "consult", "subject": "two callers, one name"}
    key = {"Idempotency-Key": "same-key-two-roles"}
    with httpx.Client(base_url=node.url, timeout=30) as c:
        first = c.post("/api/v1/tickets", json=body, headers={**key, "Authorization": f"Bearer {agent}"})
        second = c.post(
            "/api/v1/tickets", json=body, headers={**key, "Authorization": f"Bearer {supervisor}"}
        )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
