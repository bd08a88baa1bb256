"""The ticket API of a real node: create, idempotency, list, edit, workflow, escalation, comments.

Every test makes its own tickets (and, where it needs a closed set, its own
customer) on the module's shared node, so the tests do not depend on each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.conftest import as_role
from tests.integration.nodeproc import NodeProcess

API = "/api/v1"
Ticket = dict[str, Any]


# --- helpers --------------------------------------------------------------------------


def at(value: object) -> datetime:
    """An instant from the API's JSON form."""
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def create(client: httpx.Client, **fields: object) -> Ticket:
    response = client.post(f"{API}/tickets", json=fields)
    assert response.status_code == 201, response.text
    ticket: Ticket = response.json()
    return ticket


def get(client: httpx.Client, ticket_id: str) -> Ticket:
    response = client.get(f"{API}/tickets/{ticket_id}")
    assert response.status_code == 200, response.text
    ticket: Ticket = response.json()
    return ticket


def move(client: httpx.Client, ticket_id: str, status: str) -> httpx.Response:
    return client.post(f"{API}/tickets/{ticket_id}/transition", json={"status": status})


def moved(client: httpx.Client, ticket_id: str, status: str) -> Ticket:
    response = move(client, ticket_id, status)
    assert response.status_code == 200, response.text
    ticket: Ticket = response.json()
    assert ticket["status"] == status
    return ticket


def new_customer(client: httpx.Client, **fields: object) -> str:
    body = {"id": f"cust-{uuid.uuid4().hex[:12]}", "name": "Erika Muster", "phone": "+4930123456", **fields}
    response = client.post(f"{API}/customers", json=body)
    assert response.status_code == 201, response.text
    return str(body["id"])


def list_all(client: httpx.Client, **params: str) -> list[Ticket]:
    """Every ticket the filter matches, following cursors."""
    items: list[Ticket] = []
    cursor: str | None = None
    for _ in range(100):
        query: dict[str, str | int] = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{API}/tickets", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def ids(tickets: list[Ticket]) -> set[str]:
    return {t["id"] for t in tickets}


def problem_fields(response: httpx.Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


@pytest.fixture
def supervisor(node: NodeProcess, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with as_role(node, tokens, "supervisor") as c:
        yield c


FAULT = {"location": "Hauptstr. 1, Berlin", "symptom": "no dial tone", "impact_scope": "one line"}


# --- create and dispatch ----------------------------------------------------------------


def test_create_returns_a_new_tier_1_ticket_with_sla_due_times(client: httpx.Client) -> None:
    response = client.post(f"{API}/tickets", json={"type": "consult", "subject": "How do I roam?"})

    assert response.status_code == 201, response.text
    ticket = response.json()
    assert ticket["id"]
    assert response.headers["Location"] == f"{API}/tickets/{ticket['id']}"
    assert ticket["status"] == "new"
    assert ticket["tier"] == 1
    assert ticket["priority"] == "P2"
    assert ticket["reopen_count"] == 0
    assert ticket["archived"] is False
    assert ticket["created_by"] == "agent-1"
    created_at = at(ticket["created_at"])
    assert at(ticket["first_response_due_at"]) > created_at
    assert at(ticket["resolution_due_at"]) > at(ticket["first_response_due_at"])
    assert "next_update_due_at" in ticket
    assert ticket["next_update_due_at"] is None  # starts with the first agent reply
    assert get(client, ticket["id"])["subject"] == "How do I roam?"


def test_a_p1_ticket_runs_24x7_from_creation(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="urgent", priority="P1")

    created_at = at(ticket["created_at"])
    assert at(ticket["first_response_due_at"]) == created_at + timedelta(minutes=15)
    assert at(ticket["resolution_due_at"]) == created_at + timedelta(hours=4)


PLATINUM = "platinum"


@pytest.mark.parametrize(
    ("fields", "vip_tier", "department"),
    [
        pytest.param({"type": "fault", **FAULT}, None, "network-ops", id="fault-to-network-ops"),
        pytest.param({"type": "consult", "subject": "Question about my bill"}, None, "billing", id="bill"),
        pytest.param({"type": "consult"}, PLATINUM, "vip-care", id="platinum-to-vip-care"),
        pytest.param({"type": "fault", **FAULT}, PLATINUM, "vip-care", id="platinum-fault-to-vip-care"),
        pytest.param({"type": "complaint"}, None, "complaints", id="complaint"),
        pytest.param({"type": "consult"}, None, "general", id="default"),
        pytest.param(
            {"type": "fault", **FAULT, "department": "billing"}, None, "billing", id="explicit-beats-fault"
        ),
        pytest.param(
            {"type": "consult", "department": "general"}, PLATINUM, "general", id="explicit-beats-vip"
        ),
    ],
)
def test_dispatch_chooses_the_department(
    client: httpx.Client, fields: dict[str, object], vip_tier: str | None, department: str
) -> None:
    body: dict[str, object] = {"subject": "help", **fields}
    if vip_tier is not None:
        body["customer_id"] = new_customer(client, vip_tier=vip_tier)

    ticket = create(client, **body)

    assert ticket["department"] == department
    assert get(client, ticket["id"])["department"] == department


# --- idempotency ------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_ticket(client: httpx.Client) -> None:
    customer = new_customer(client)
    body = {"type": "consult", "subject": "retried", "customer_id": customer}
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    first = client.post(f"{API}/tickets", json=body, headers=key)
    second = client.post(f"{API}/tickets", json=dict(reversed(body.items())), headers=key)

    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert second.status_code == 201, second.text
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert ids(list_all(client, customer_id=customer)) == {first.json()["id"]}


def test_a_replay_answers_exactly_like_the_first_response(client: httpx.Client) -> None:
    body = {"type": "consult", "subject": "same answer twice"}
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    first = client.post(f"{API}/tickets", json=body, headers=key)
    second = client.post(f"{API}/tickets", json=body, headers=key)

    assert second.json() == first.json()


def test_same_idempotency_key_with_another_body_is_a_conflict(client: httpx.Client) -> None:
    customer = new_customer(client)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = client.post(
        f"{API}/tickets", json={"type": "consult", "subject": "one", "customer_id": customer}, headers=key
    )
    assert first.status_code == 201, first.text

    second = client.post(
        f"{API}/tickets", json={"type": "consult", "subject": "two", "customer_id": customer}, headers=key
    )

    assert second.status_code == 409, second.text
    assert first.json()["id"] in second.json()["detail"]
    assert ids(list_all(client, customer_id=customer)) == {first.json()["id"]}


# --- read and list ----------------------------------------------------------------------


def test_get_returns_every_field_of_the_ticket(client: httpx.Client) -> None:
    created = create(client, type="consult", subject="read me", description="details", tags=["b", "a"])

    ticket = get(client, created["id"])

    assert ticket["id"] == created["id"]
    assert ticket["description"] == "details"
    assert ticket["tags"] == ["a", "b"]
    assert ticket["assignee"] is None
    assert ticket["first_responded_at"] is None
    for name in ("first_response_due_at", "next_update_due_at", "resolution_due_at"):
        assert ticket[name] == created[name]


@dataclass(frozen=True)
class Catalogue:
    """Four distinct tickets; a customer and an assignee that only they use."""

    tickets: dict[str, Ticket]
    customer: str
    assignee: str

    def resolve(self, value: str) -> str:
        return {"<customer>": self.customer, "<assignee>": self.assignee}.get(value, value)


@pytest.fixture(scope="module")
def catalogue(node: NodeProcess, tokens: dict[str, str]) -> Catalogue:
    with as_role(node, tokens, "agent") as c:
        customer = new_customer(c)
        assignee = f"agent-{uuid.uuid4().hex[:8]}"
        made = {
            "fault": create(
                c, type="fault", subject="line down", priority="P1", customer_id=customer, **FAULT
            ),
            "bill": create(c, type="consult", subject="bill too high", priority="P3", customer_id=customer),
            "complaint": create(c, type="complaint", subject="rude", priority="P4"),
            "request": create(c, type="service_request", subject="new SIM"),
        }
        assigned = c.post(f"{API}/tickets/{made['complaint']['id']}/assign", json={"assignee": assignee})
        assert assigned.status_code == 200, assigned.text
        made["complaint"] = assigned.json()
        return Catalogue(made, customer, assignee)


ALL = frozenset({"fault", "bill", "complaint", "request"})


@pytest.mark.parametrize(
    ("query", "value", "field", "included"),
    [
        pytest.param("status", "assigned", "status", {"complaint"}, id="status"),
        pytest.param("status", "new", "status", {"fault", "bill", "request"}, id="status-new"),
        pytest.param("type", "fault", "type", {"fault"}, id="type"),
        pytest.param("priority", "P3", "priority", {"bill"}, id="priority"),
        pytest.param("department", "billing", "department", {"bill"}, id="department"),
        pytest.param("customer_id", "<customer>", "customer_id", {"fault", "bill"}, id="customer_id"),
        pytest.param("customer", "<customer>", "customer_id", {"fault", "bill"}, id="customer"),
        pytest.param("assignee", "<assignee>", "assignee", {"complaint"}, id="assignee"),
        pytest.param("breached", "false", "breached", ALL, id="not-breached"),
        pytest.param("breached", "true", "breached", set(), id="breached"),
    ],
)
def test_list_filters(
    client: httpx.Client, catalogue: Catalogue, query: str, value: str, field: str, included: set[str]
) -> None:
    value = catalogue.resolve(value)
    expected = {"true": True, "false": False}.get(value, value)
    mine = {name: t["id"] for name, t in catalogue.tickets.items()}

    listed = list_all(client, **{query: value})

    assert all(t[field] == expected for t in listed), [t[field] for t in listed]
    assert {mine[name] for name in included} <= ids(listed)
    assert not {mine[name] for name in ALL - included} & ids(listed)
    if value in (catalogue.customer, catalogue.assignee):  # used by nobody else: the result is exact
        assert ids(listed) == {mine[name] for name in included}


def test_cursor_pagination_walks_every_ticket_once_newest_first(client: httpx.Client) -> None:
    customer = new_customer(client)
    created = [
        create(client, type="consult", subject=f"page {i}", customer_id=customer)["id"] for i in range(5)
    ]

    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 2, "customer_id": customer}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"{API}/tickets", params=params)
        assert response.status_code == 200, response.text
        pages.append([t["id"] for t in response.json()["items"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == created[::-1]


def test_cursor_pagination_over_all_tickets_has_no_duplicates_or_gaps(client: httpx.Client) -> None:
    for i in range(3):
        create(client, type="consult", subject=f"more {i}")
    everything = client.get(f"{API}/tickets", params={"limit": 200}).json()
    assert everything["next_cursor"] is None

    walked: list[Ticket] = []
    cursor: str | None = None
    for _ in range(200):
        query: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/tickets", params=query).json()
        assert len(page["items"]) <= 2
        walked += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    walked_ids = [t["id"] for t in walked]
    assert len(walked_ids) == len(set(walked_ids))
    assert walked_ids == [t["id"] for t in everything["items"]]
    assert walked_ids == sorted(walked_ids, reverse=True)
    created = [at(t["created_at"]) for t in walked]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "2.5"])
def test_a_bad_limit_is_refused_naming_limit(client: httpx.Client, limit: str) -> None:
    response = client.get(f"{API}/tickets", params={"limit": limit})

    assert 400 <= response.status_code < 500, response.text
    assert "limit" in problem_fields(response)


# --- edit ---------------------------------------------------------------------------------


def test_patch_changes_client_fields(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="old subject")

    response = client.patch(
        f"{API}/tickets/{ticket['id']}",
        json={"subject": "new subject", "description": "more", "channel": "chat", "tags": ["x"]},
    )

    assert response.status_code == 200, response.text
    stored = get(client, ticket["id"])
    assert stored == response.json()
    assert (stored["subject"], stored["description"], stored["channel"], stored["tags"]) == (
        "new subject",
        "more",
        "chat",
        ["x"],
    )
    assert at(stored["updated_at"]) > at(ticket["updated_at"])


def test_raising_priority_to_p1_retargets_due_times_from_creation(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="getting worse", priority="P3")

    response = client.patch(f"{API}/tickets/{ticket['id']}", json={"priority": "P1"})

    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["priority"] == "P1"
    created_at, patched_at = at(ticket["created_at"]), at(patched["updated_at"])
    # P1 runs 24x7: the budget counts from creation; no more than the time the
    # ticket already spent can have been used up.
    first_due = at(patched["first_response_due_at"])
    assert created_at + timedelta(minutes=15) <= first_due <= patched_at + timedelta(minutes=15)
    resolution_due = at(patched["resolution_due_at"])
    assert created_at + timedelta(hours=4) <= resolution_due <= patched_at + timedelta(hours=4)
    assert first_due < at(ticket["first_response_due_at"])
    assert get(client, ticket["id"])["first_response_due_at"] == patched["first_response_due_at"]


def test_changing_type_to_fault_needs_the_fault_fields(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="is it broken?")

    refused = client.patch(f"{API}/tickets/{ticket['id']}", json={"type": "fault"})

    assert refused.status_code == 422, refused.text
    assert problem_fields(refused) == {"location", "symptom", "impact_scope"}
    assert get(client, ticket["id"])["type"] == "consult"

    accepted = client.patch(f"{API}/tickets/{ticket['id']}", json={"type": "fault", **FAULT})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["type"] == "fault"


# --- workflow -----------------------------------------------------------------------------


def test_workflow_from_new_to_closed_and_reopen(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="the whole way")
    tid = ticket["id"]

    assigned = client.post(f"{API}/tickets/{tid}/assign", json={"assignee": "agent-7"})
    assert assigned.status_code == 200, assigned.text
    assert (assigned.json()["status"], assigned.json()["assignee"]) == ("assigned", "agent-7")

    moved(client, tid, "in_progress")
    waiting = moved(client, tid, "pending_customer")
    assert waiting["resolution_due_at"] is None  # the clocks pause while the customer owes an answer
    working = moved(client, tid, "in_progress")
    assert at(working["resolution_due_at"]) >= at(ticket["resolution_due_at"])  # waiting is not counted
    resolved = moved(client, tid, "resolved")
    assert resolved["resolved_at"] is not None
    closed = moved(client, tid, "closed")
    assert closed["closed_at"] is not None
    assert closed["reopen_count"] == 0

    reopened = moved(client, tid, "in_progress")

    assert reopened["reopen_count"] == 1
    assert (reopened["resolved_at"], reopened["closed_at"]) == (None, None)
    assert reopened["resolution_due_at"] is not None
    assert get(client, tid) == reopened


def test_assigned_needs_an_assignee(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="nobody yet")

    response = move(client, ticket["id"], "assigned")

    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"status"}
    assert get(client, ticket["id"])["status"] == "new"


def test_an_invalid_transition_is_a_conflict_listing_the_allowed_ones(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="skip ahead")

    response = move(client, ticket["id"], "closed")

    assert response.status_code == 409, response.text
    assert response.json()["allowed"] == ["assigned", "in_progress", "pending_customer", "resolved"]
    assert get(client, ticket["id"])["status"] == "new"


def test_archive_only_after_closed_then_hidden_and_read_only(
    client: httpx.Client, supervisor: httpx.Client
) -> None:
    customer = new_customer(client)
    ticket = create(client, type="consult", subject="done and dusted", customer_id=customer)
    tid = ticket["id"]
    moved(client, tid, "resolved")

    early = supervisor.post(f"{API}/tickets/{tid}/archive")
    assert early.status_code == 409, early.text

    moved(client, tid, "closed")
    archived = supervisor.post(f"{API}/tickets/{tid}/archive")
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived"] is True

    assert tid not in ids(list_all(client, customer_id=customer))
    assert tid not in ids(list_all(client))
    assert ids(list_all(client, customer_id=customer, archived="true")) == {tid}
    assert get(client, tid)["archived"] is True

    refusals = {
        "patch": client.patch(f"{API}/tickets/{tid}", json={"subject": "changed"}),
        "reopen": move(client, tid, "in_progress"),
        "assign": client.post(f"{API}/tickets/{tid}/assign", json={"assignee": "agent-7"}),
        "escalate": client.post(f"{API}/tickets/{tid}/escalate", json={"reason": "late"}),
        "comment": client.post(f"{API}/tickets/{tid}/comments", json={"body": "hello?"}),
        "archive": supervisor.post(f"{API}/tickets/{tid}/archive"),
    }
    assert {name: r.status_code for name, r in refusals.items()} == dict.fromkeys(refusals, 409)
    after = get(client, tid)
    assert after["subject"] == "done and dusted"
    assert after["status"] == "closed"


# --- escalation ---------------------------------------------------------------------------


def test_escalation_moves_a_fault_to_tier_2_once(client: httpx.Client) -> None:
    ticket = create(client, type="fault", subject="exchange down", **FAULT)
    assert ticket["department"] == "network-ops"
    tid = ticket["id"]
    assigned = client.post(f"{API}/tickets/{tid}/assign", json={"assignee": "agent-7"})
    assert assigned.status_code == 200, assigned.text

    response = client.post(f"{API}/tickets/{tid}/escalate", json={"reason": "needs an engineer"})

    assert response.status_code == 200, response.text
    escalated = response.json()
    assert escalated["tier"] == 2
    assert escalated["department"] == "network-l2"
    assert escalated["escalation_reason"] == "needs an engineer"
    assert escalated["assignee"] is None  # the new team picks it up
    assert escalated["status"] == "new"
    assert get(client, tid) == escalated

    again = client.post(f"{API}/tickets/{tid}/escalate", json={"reason": "still broken"})
    assert again.status_code == 409, again.text
    assert get(client, tid)["escalation_reason"] == "needs an engineer"


# --- comments -----------------------------------------------------------------------------


def test_a_public_comment_is_the_first_response_and_starts_next_update(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="any news?", priority="P1")
    tid = ticket["id"]

    response = client.post(f"{API}/tickets/{tid}/comments", json={"body": "We are on it."})

    assert response.status_code == 201, response.text
    comment = response.json()
    assert (comment["ticket_id"], comment["body"], comment["internal"]) == (tid, "We are on it.", False)
    assert (comment["author"], comment["author_role"]) == ("agent-1", "agent")
    after = get(client, tid)
    assert after["first_responded_at"] == comment["created_at"]
    assert at(after["next_update_due_at"]) == at(comment["created_at"]) + timedelta(hours=1)  # P1, 24x7


def test_an_internal_comment_is_no_response(client: httpx.Client) -> None:
    ticket = create(client, type="consult", subject="quiet")
    tid = ticket["id"]

    response = client.post(f"{API}/tickets/{tid}/comments", json={"body": "note to self", "internal": True})

    assert response.status_code == 201, response.text
    assert response.json()["internal"] is True
    after = get(client, tid)
    assert after["first_responded_at"] is None
    assert after["next_update_due_at"] is None
    assert after["first_response_due_at"] == ticket["first_response_due_at"]


def test_comments_are_listed_oldest_first(client: httpx.Client) -> None:
    tid = create(client, type="consult", subject="chatty")["id"]
    posted = [
        client.post(f"{API}/tickets/{tid}/comments", json=body).json()
        for body in ({"body": "first", "internal": True}, {"body": "second"}, {"body": "third"})
    ]

    response = client.get(f"{API}/tickets/{tid}/comments")

    assert response.status_code == 200, response.text
    assert response.json()["items"] == posted
    other = create(client, type="consult", subject="silent")["id"]
    assert client.get(f"{API}/tickets/{other}/comments").json()["items"] == []
