"""The pure ticket lifecycle: create, update, the status workflow, SLA effects and escalation.

Every test works on plain records and a fixed ``now``; SLA clocks run on a 24x7 UTC
calendar unless a test is about business hours (Mon-Fri 09:00-18:00 UTC). Default
P2 targets: first response 2 h, next update 8 h, resolution 24 h, warning at 80 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from edge_node.core.calendar import BusinessCalendar, parse_hours
from edge_node.core.dispatch import DEFAULT_DEPARTMENTS
from edge_node.core.sla import SLABreached, SLAMetric, SLAWarning
from edge_node.core.tickets import (
    TRANSITIONS,
    AlreadyEscalatedError,
    Change,
    InvalidTransitionError,
    SLAFired,
    StatusChanged,
    TicketCreated,
    TicketError,
    TicketEscalated,
    TicketReadOnlyError,
    TicketSettings,
    archive,
    assign,
    check_sla,
    comment,
    create,
    escalate,
    next_deadline,
    transition,
    update,
)
from sync.entities import TICKET, TICKET_STATUSES
from sync.entity import FieldProblem, ValidationError, Value, encode_fields, from_storage

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
SETTINGS = TicketSettings(BusinessCalendar.always_open("UTC"))
OFFICE = BusinessCalendar("UTC", parse_hours("mon-fri 09:00-18:00"))
DEPARTMENTS: dict[str, str | None] = {dept: tier2 for dept, _, tier2 in DEFAULT_DEPARTMENTS}
KNOWN = "billing, complaints, general, network-l2, network-ops, service-desk, tier2, vip-care"
FAULT = {"type": "fault", "location": "Hauptstr. 1", "symptom": "no sync", "impact_scope": "one line"}

Record = dict[str, Value]

# The workflow of the module docstring, written out independently of TRANSITIONS.
WORKFLOW = {
    "new": {"assigned", "in_progress", "pending_customer", "resolved"},
    "assigned": {"new", "in_progress", "pending_customer", "resolved"},
    "in_progress": {"assigned", "pending_customer", "resolved"},
    "pending_customer": {"in_progress", "resolved"},
    "resolved": {"closed", "in_progress"},
    "closed": {"in_progress"},
}
ALLOWED = sorted((old, new) for old, targets in WORKFLOW.items() for new in targets)
REFUSED = sorted(
    (old, new)
    for old in TICKET_STATUSES
    for new in (*TICKET_STATUSES, "archived")
    if new not in WORKFLOW[old]
)


def apply(record: Mapping[str, Value], change: Change) -> Record:
    return {**record, **change.values}


def new_ticket(
    settings: TicketSettings = SETTINGS,
    *,
    now: datetime = NOW,
    vip_tier: str | None = None,
    departments: Mapping[str, str | None] = DEPARTMENTS,
    **values: Value,
) -> Record:
    return create_change(settings, now=now, vip_tier=vip_tier, departments=departments, **values).values


def create_change(
    settings: TicketSettings = SETTINGS,
    *,
    now: datetime = NOW,
    vip_tier: str | None = None,
    departments: Mapping[str, str | None] = DEPARTMENTS,
    **values: Value,
) -> Change:
    return create(
        settings,
        ticket_id="T1",
        region="eu-de",
        values={"type": "consult", "subject": "Question", **values},
        vip_tier=vip_tier,
        departments=departments,
        created_by="ana",
        now=now,
    )


def move(record: Record, *statuses: str, now: datetime = NOW, settings: TicketSettings = SETTINGS) -> Record:
    for status in statuses:
        record = apply(record, transition(settings, record, status, now=now))
    return record


PATHS: dict[str, tuple[str, ...]] = {
    "new": (),
    "in_progress": ("in_progress",),
    "pending_customer": ("in_progress", "pending_customer"),
    "resolved": ("in_progress", "resolved"),
    "closed": ("in_progress", "resolved", "closed"),
}


def ticket_in(status: str, **values: Value) -> Record:
    record = new_ticket(**values)
    if status == "assigned":
        return apply(
            record, assign(SETTINGS, record, "bob", department=None, departments=DEPARTMENTS, now=NOW)
        )
    return move(record, *PATHS[status])


def archived_ticket() -> Record:
    closed = ticket_in("closed")
    return apply(closed, archive(closed, now=NOW + HOUR))


# --- create -------------------------------------------------------------------------------------


def test_create_builds_the_whole_record() -> None:
    change = create_change(tags=frozenset({"dsl"}))
    record = change.values
    assert change.events == [TicketCreated("T1", "general", dispatched=True)]
    assert {k: record[k] for k in ("id", "region", "type", "subject", "status", "tier")} == {
        "id": "T1",
        "region": "eu-de",
        "type": "consult",
        "subject": "Question",
        "status": "new",
        "tier": 1,
    }
    assert record["created_by"] == "ana"
    assert record["created_at"] == record["updated_at"] == NOW
    assert record["reopen_count"] == 0
    assert record["archived"] is False
    assert record["breached"] is False
    assert record["tags"] == frozenset({"dsl"})
    assert record["call_ids"] == frozenset()
    assert record["first_response_due_at"] == NOW + 2 * HOUR
    assert record["next_update_due_at"] is None  # starts with the first agent reply
    assert record["resolution_due_at"] == NOW + 24 * HOUR
    assert next_deadline(record) == NOW + 96 * MIN


def test_created_record_fits_the_declaration_and_its_storage_form() -> None:
    record = new_ticket(**FAULT, tags=frozenset({"a"}))
    encoded = encode_fields(TICKET, record)  # raises on an undeclared field or a wrong kind
    assert {name: from_storage(TICKET.field(name), v) for name, v in encoded.items()} == record


def test_a_fault_needs_location_symptom_and_impact_scope_named_in_one_error() -> None:
    with pytest.raises(ValidationError) as info:
        new_ticket(type="fault")
    assert info.value.problems == (
        FieldProblem("location", "is required for fault tickets"),
        FieldProblem("symptom", "is required for fault tickets"),
        FieldProblem("impact_scope", "is required for fault tickets"),
    )


def test_an_empty_fault_field_counts_as_missing() -> None:
    with pytest.raises(ValidationError, match=r"^invalid input: symptom: is required for fault tickets$"):
        new_ticket(**{**FAULT, "symptom": ""})


@pytest.mark.parametrize("ticket_type", ["consult", "complaint", "service_request"])
def test_other_types_need_no_extra_fields(ticket_type: str) -> None:
    assert new_ticket(type=ticket_type)["status"] == "new"


def test_priority_defaults_to_the_settings() -> None:
    assert new_ticket()["priority"] == "P2"
    assert new_ticket(TicketSettings(SETTINGS.business_calendar, default_priority="P3"))["priority"] == "P3"
    assert new_ticket(priority=None)["priority"] == "P2"


def test_an_explicit_priority_sets_its_targets() -> None:
    record = new_ticket(priority="P1")
    assert record["priority"] == "P1"
    assert record["first_response_due_at"] == NOW + 15 * MIN
    assert record["resolution_due_at"] == NOW + 4 * HOUR


@pytest.mark.parametrize(
    ("values", "vip_tier", "department"),
    [
        (FAULT, None, "network-ops"),
        ({"description": "my INVOICE is wrong"}, None, "billing"),
        ({"type": "complaint"}, None, "complaints"),
        ({"type": "service_request"}, None, "service-desk"),
        (FAULT, "platinum", "vip-care"),
        ({}, "gold", "general"),
    ],
)
def test_without_a_department_the_rules_dispatch(
    values: dict[str, Value], vip_tier: str | None, department: str
) -> None:
    change = create_change(vip_tier=vip_tier, **values)
    assert change.values["department"] == department
    assert change.events == [TicketCreated("T1", department, dispatched=True)]


def test_an_explicit_department_beats_the_rules() -> None:
    change = create_change(**FAULT, department="billing", vip_tier="platinum")
    assert change.values["department"] == "billing"
    assert change.events == [TicketCreated("T1", "billing", dispatched=False)]


def test_an_unknown_department_names_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        new_ticket(department="nowhere")
    assert info.value.problems == (
        FieldProblem("department", f"unknown department 'nowhere'; known: {KNOWN}"),
    )


def test_a_dispatched_department_the_node_does_not_know_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"unknown department 'network-ops'; known: general$"):
        new_ticket(**FAULT, departments={"general": None})
    with pytest.raises(ValidationError, match=r"unknown department 'general'; known: none$"):
        new_ticket(departments={})


# --- update -------------------------------------------------------------------------------------


def test_update_sets_only_changed_fields() -> None:
    record = new_ticket()
    change = update(
        SETTINGS,
        record,
        {"subject": "New subject", "type": "consult"},
        departments=DEPARTMENTS,
        now=NOW + MIN,
    )
    assert change.values == {"subject": "New subject", "updated_at": NOW + MIN}
    assert change.events == []


def test_an_update_that_changes_nothing_is_empty() -> None:
    record = new_ticket()
    assert (
        update(SETTINGS, record, {"subject": "Question"}, departments=DEPARTMENTS, now=NOW + MIN).values == {}
    )


def test_update_rechecks_the_type_fields() -> None:
    with pytest.raises(ValidationError) as info:
        update(SETTINGS, new_ticket(), {"type": "fault", "symptom": "slow"}, departments=DEPARTMENTS, now=NOW)
    assert [p.field for p in info.value.problems] == ["location", "impact_scope"]


def test_update_refuses_an_unknown_department() -> None:
    with pytest.raises(ValidationError, match=rf"unknown department 'x'; known: {KNOWN}$"):
        update(SETTINGS, new_ticket(), {"department": "x"}, departments=DEPARTMENTS, now=NOW)


def test_a_new_priority_retargets_the_clocks_keeping_consumed_time() -> None:
    record = new_ticket()  # P2
    change = update(SETTINGS, record, {"priority": "P1"}, departments=DEPARTMENTS, now=NOW + 5 * MIN)
    assert change.values["priority"] == "P1"
    assert change.values["first_response_due_at"] == NOW + 15 * MIN
    assert change.values["resolution_due_at"] == NOW + 4 * HOUR


def test_a_null_priority_means_the_default() -> None:
    record = new_ticket(priority="P1")
    change = update(SETTINGS, record, {"priority": None}, departments=DEPARTMENTS, now=NOW)
    assert change.values["priority"] == "P2"
    assert change.values["first_response_due_at"] == NOW + 2 * HOUR


def test_a_closed_ticket_cannot_be_edited() -> None:
    with pytest.raises(
        TicketReadOnlyError, match=r"^ticket T1 is closed and cannot be edited; reopen it first$"
    ):
        update(SETTINGS, ticket_in("closed"), {"subject": "x"}, departments=DEPARTMENTS, now=NOW)


# --- the status workflow ----------------------------------------------------------------------


def test_the_transition_table_is_the_documented_workflow() -> None:
    assert {old: set(new) for old, new in TRANSITIONS.items()} == WORKFLOW
    assert set(TRANSITIONS) == set(TICKET_STATUSES)


@pytest.mark.parametrize(("old", "new"), ALLOWED)
def test_every_allowed_transition(old: str, new: str) -> None:
    record = ticket_in(old)
    if new == "assigned":
        record["assignee"] = "bob"
    change = transition(SETTINGS, record, new, now=NOW + HOUR)
    assert change.values["status"] == new
    assert change.values["updated_at"] == NOW + HOUR
    assert change.events == [StatusChanged("T1", old, new)]


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_refused_transitions_name_the_allowed_ones(old: str, new: str) -> None:
    with pytest.raises(InvalidTransitionError) as info:
        transition(SETTINGS, ticket_in(old), new, now=NOW + HOUR)
    allowed = tuple(sorted(WORKFLOW[old]))
    assert info.value.allowed == allowed
    assert (info.value.ticket_id, info.value.current, info.value.requested) == ("T1", old, new)
    assert str(info.value) == (
        f"ticket T1 cannot go from {old!r} to {new!r}; allowed from {old!r}: {', '.join(allowed)}"
    )


def test_assigned_needs_an_assignee() -> None:
    with pytest.raises(ValidationError, match=r"^invalid input: status: assign the ticket to someone first$"):
        transition(SETTINGS, new_ticket(), "assigned", now=NOW)


def test_pending_customer_pauses_the_running_clocks() -> None:
    record = ticket_in("in_progress")
    assert record["first_response_due_at"] == NOW + 2 * HOUR
    paused = move(record, "pending_customer", now=NOW + 30 * MIN)
    assert paused["first_response_due_at"] is None
    assert paused["next_update_due_at"] is None
    assert paused["resolution_due_at"] is None
    assert next_deadline(paused) is None
    sla = paused["sla"]
    assert isinstance(sla, dict)
    assert [sla[m]["status"] for m in ("first_response", "next_update", "resolution")] == [
        "paused",
        "pending",
        "paused",
    ]
    # Paused clocks neither warn nor breach, however long the customer takes.
    assert check_sla(SETTINGS, paused, departments=DEPARTMENTS, now=NOW + 48 * HOUR) == Change({})


def test_resuming_moves_the_due_times_later_by_the_pause() -> None:
    paused = move(ticket_in("in_progress"), "pending_customer", now=NOW + 30 * MIN)
    resumed = move(paused, "in_progress", now=NOW + 2 * HOUR + 30 * MIN)  # paused for 2 h
    assert resumed["first_response_due_at"] == NOW + 4 * HOUR
    assert resumed["resolution_due_at"] == NOW + 26 * HOUR
    assert next_deadline(resumed) == NOW + 96 * MIN + 2 * HOUR  # the first-response warning


def test_resolving_a_paused_ticket_meets_its_clocks() -> None:
    paused = move(ticket_in("in_progress"), "pending_customer", now=NOW + 30 * MIN)
    resolved = move(paused, "resolved", now=NOW + 10 * HOUR)
    assert resolved["resolved_at"] == NOW + 10 * HOUR
    assert resolved["breached"] is False  # the 10 h wait on the customer does not count
    assert next_deadline(resolved) is None


def test_resolving_sets_resolved_at_and_meets_every_clock() -> None:
    record = ticket_in("in_progress")
    change = transition(SETTINGS, record, "resolved", now=NOW + HOUR)
    assert change.values["resolved_at"] == NOW + HOUR
    assert change.values["first_responded_at"] == NOW + HOUR  # resolving answers the customer
    resolved = apply(record, change)
    sla = resolved["sla"]
    assert isinstance(sla, dict)
    assert {sla[m]["status"] for m in ("first_response", "resolution")} == {"met"}
    assert resolved["breached"] is False
    assert next_deadline(resolved) is None


def test_resolving_keeps_an_earlier_first_response() -> None:
    record = ticket_in("in_progress")
    record = apply(record, comment(SETTINGS, record, internal=False, now=NOW + 10 * MIN))
    change = transition(SETTINGS, record, "resolved", now=NOW + HOUR)
    assert "first_responded_at" not in change.values
    assert apply(record, change)["first_responded_at"] == NOW + 10 * MIN


def test_closing_sets_closed_at() -> None:
    closed = move(ticket_in("resolved"), "closed", now=NOW + 2 * HOUR)
    assert closed["closed_at"] == NOW + 2 * HOUR
    assert closed["status"] == "closed"


def test_reopening_counts_and_resumes_the_resolution_clock() -> None:
    resolved = move(ticket_in("in_progress"), "resolved", now=NOW + HOUR)  # 1 h of 24 consumed
    reopened = move(resolved, "in_progress", now=NOW + 5 * HOUR)
    assert reopened["reopen_count"] == 1
    assert reopened["resolved_at"] is None
    assert reopened["closed_at"] is None
    assert reopened["resolution_due_at"] == NOW + 5 * HOUR + 23 * HOUR
    assert reopened["next_update_due_at"] == NOW + 5 * HOUR + 8 * HOUR

    closed = move(reopened, "resolved", now=NOW + 6 * HOUR)  # another hour consumed
    closed = move(closed, "closed", now=NOW + 7 * HOUR)
    again = move(closed, "in_progress", now=NOW + 8 * HOUR)
    assert again["reopen_count"] == 2
    assert again["closed_at"] is None
    assert again["resolution_due_at"] == NOW + 8 * HOUR + 22 * HOUR


# --- assign and escalate -----------------------------------------------------------------------


def test_assigning_a_new_ticket_makes_it_assigned() -> None:
    change = assign(SETTINGS, new_ticket(), "bob", department=None, departments=DEPARTMENTS, now=NOW + MIN)
    assert change.values == {"assignee": "bob", "updated_at": NOW + MIN, "status": "assigned"}
    assert change.events == [StatusChanged("T1", "new", "assigned")]


def test_assigning_a_ticket_in_progress_keeps_its_status() -> None:
    change = assign(
        SETTINGS, ticket_in("in_progress"), "bob", department="billing", departments=DEPARTMENTS, now=NOW
    )
    assert change.values == {"assignee": "bob", "updated_at": NOW, "department": "billing"}
    assert change.events == []


def test_assigning_to_an_unknown_department_is_refused() -> None:
    with pytest.raises(ValidationError, match=rf"unknown department 'nowhere'; known: {KNOWN}$"):
        assign(SETTINGS, new_ticket(), "bob", department="nowhere", departments=DEPARTMENTS, now=NOW)


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_a_finished_ticket_cannot_be_assigned(status: str) -> None:
    with pytest.raises(TicketReadOnlyError, match=rf"^ticket T1 is {status} and cannot be assigned$"):
        assign(SETTINGS, ticket_in(status), "bob", department=None, departments=DEPARTMENTS, now=NOW)


def test_escalation_moves_to_tier_2_and_the_tier_2_department() -> None:
    record = ticket_in("assigned", **FAULT)
    assert (record["department"], record["assignee"]) == ("network-ops", "bob")
    change = escalate(SETTINGS, record, reason="needs an engineer", departments=DEPARTMENTS, now=NOW + HOUR)
    assert change.values == {
        "tier": 2,
        "department": "network-l2",
        "escalation_reason": "needs an engineer",
        "updated_at": NOW + HOUR,
        "assignee": None,
        "status": "new",  # assigned to nobody in the new team
    }
    assert change.events == [
        TicketEscalated("T1", "network-l2", on_breach=False),
        StatusChanged("T1", "assigned", "new"),
    ]


def test_escalating_twice_is_refused() -> None:
    record = ticket_in("in_progress", **FAULT)
    record = apply(record, escalate(SETTINGS, record, reason="r", departments=DEPARTMENTS, now=NOW))
    with pytest.raises(AlreadyEscalatedError, match=r"^ticket T1 is already at tier 2$") as info:
        escalate(SETTINGS, record, reason="again", departments=DEPARTMENTS, now=NOW)
    assert isinstance(info.value, TicketError)


def test_a_department_without_a_tier_2_team_keeps_the_ticket_and_assignee() -> None:
    record = {**ticket_in("in_progress"), "department": "tier2", "assignee": "bob"}
    change = escalate(SETTINGS, record, reason="r", departments=DEPARTMENTS, now=NOW)
    assert change.values == {"tier": 2, "department": "tier2", "escalation_reason": "r", "updated_at": NOW}


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_a_finished_ticket_cannot_be_escalated(status: str) -> None:
    with pytest.raises(TicketReadOnlyError, match=rf"^ticket T1 is {status} and cannot be escalated$"):
        escalate(SETTINGS, ticket_in(status), reason="r", departments=DEPARTMENTS, now=NOW)


# --- comments ---------------------------------------------------------------------------------


def test_a_public_comment_is_the_first_response() -> None:
    record = new_ticket()
    change = comment(SETTINGS, record, internal=False, now=NOW + 10 * MIN)
    assert change.values["first_responded_at"] == NOW + 10 * MIN
    assert change.values["next_update_due_at"] == NOW + 10 * MIN + 8 * HOUR
    assert change.values["updated_at"] == NOW + 10 * MIN
    sla = change.values["sla"]
    assert isinstance(sla, dict)
    assert sla["first_response"]["status"] == "met"


def test_a_later_public_comment_restarts_next_update_only() -> None:
    record = new_ticket()
    record = apply(record, comment(SETTINGS, record, internal=False, now=NOW + 10 * MIN))
    change = comment(SETTINGS, record, internal=False, now=NOW + 3 * HOUR)
    assert "first_responded_at" not in change.values
    assert change.values["next_update_due_at"] == NOW + 3 * HOUR + 8 * HOUR


def test_an_internal_comment_is_not_a_response() -> None:
    change = comment(SETTINGS, new_ticket(), internal=True, now=NOW + 10 * MIN)
    assert change == Change({"updated_at": NOW + 10 * MIN})


def test_a_comment_on_a_resolved_ticket_touches_only_updated_at() -> None:
    assert comment(SETTINGS, ticket_in("resolved"), internal=False, now=NOW + HOUR) == Change(
        {"updated_at": NOW + HOUR}
    )


def test_a_public_comment_to_a_waiting_customer_starts_no_clock() -> None:
    paused = ticket_in("pending_customer")
    change = comment(SETTINGS, paused, internal=False, now=NOW + HOUR)
    assert change.values["first_responded_at"] == NOW + HOUR
    assert change.values["next_update_due_at"] is None
    assert next_deadline(apply(paused, change)) is None


# --- archive ----------------------------------------------------------------------------------


def test_archiving_a_closed_ticket() -> None:
    closed = ticket_in("closed")
    assert archive(closed, now=NOW + HOUR) == Change({"archived": True, "updated_at": NOW + HOUR})


@pytest.mark.parametrize("status", ["new", "assigned", "in_progress", "pending_customer", "resolved"])
def test_only_closed_tickets_can_be_archived(status: str) -> None:
    with pytest.raises(
        TicketReadOnlyError, match=rf"^ticket T1 is {status} and cannot be archived before it is closed$"
    ):
        archive(ticket_in(status), now=NOW)


@pytest.mark.parametrize(
    ("action", "verb"),
    [
        (lambda r: transition(SETTINGS, r, "in_progress", now=NOW), "moved"),
        (lambda r: update(SETTINGS, r, {"subject": "x"}, departments=DEPARTMENTS, now=NOW), "edited"),
        (lambda r: assign(SETTINGS, r, "bob", department=None, departments=DEPARTMENTS, now=NOW), "assigned"),
        (lambda r: escalate(SETTINGS, r, reason="r", departments=DEPARTMENTS, now=NOW), "escalated"),
        (lambda r: comment(SETTINGS, r, internal=True, now=NOW), "commented on"),
        (lambda r: archive(r, now=NOW), "archived again"),
    ],
    ids=["transition", "update", "assign", "escalate", "comment", "archive"],
)
def test_an_archived_ticket_refuses_everything(action: object, verb: str) -> None:
    record = archived_ticket()
    with pytest.raises(TicketReadOnlyError, match=rf"^ticket T1 is archived and cannot be {verb}$") as info:
        action(record)  # type: ignore[operator]  # the lambdas above
    assert info.value.state == "archived"


def test_an_archived_ticket_has_no_deadline_and_no_sla_events() -> None:
    record = archived_ticket()
    assert next_deadline(record) is None
    assert check_sla(SETTINGS, record, departments=DEPARTMENTS, now=NOW + 1000 * HOUR) == Change({})


# --- check_sla --------------------------------------------------------------------------------


def check(record: Record, at: datetime, settings: TicketSettings = SETTINGS) -> Change:
    return check_sla(settings, record, departments=DEPARTMENTS, now=at)


def test_nothing_fires_before_the_warning() -> None:
    assert check(new_ticket(**FAULT), NOW + 95 * MIN) == Change({})


def test_warning_then_breach_at_the_right_instants_and_the_breach_escalates() -> None:
    record = new_ticket(**FAULT)
    assert next_deadline(record) == NOW + 96 * MIN

    warned = check(record, NOW + 96 * MIN)
    assert warned.events == [
        SLAFired("T1", SLAWarning(SLAMetric.FIRST_RESPONSE, due_at=NOW + 2 * HOUR, at=NOW + 96 * MIN))
    ]
    assert warned.values["breached"] is False
    assert "tier" not in warned.values
    record = apply(record, warned)
    assert check(record, NOW + 96 * MIN) == Change({})  # each event fires once
    assert next_deadline(record) == NOW + 2 * HOUR

    breached = check(record, NOW + 2 * HOUR)
    assert breached.events == [
        SLAFired("T1", SLABreached(SLAMetric.FIRST_RESPONSE, due_at=NOW + 2 * HOUR, at=NOW + 2 * HOUR)),
        TicketEscalated("T1", "network-l2", on_breach=True),
    ]
    assert breached.values["breached"] is True
    assert breached.values["tier"] == 2
    assert breached.values["department"] == "network-l2"
    assert breached.values["escalation_reason"] == "SLA breached"
    record = apply(record, breached)
    assert next_deadline(record) == NOW + 19 * HOUR + 12 * MIN  # the resolution warning


def test_a_later_breach_on_tier_2_does_not_escalate_again() -> None:
    record = new_ticket(**FAULT)
    record = apply(record, check(record, NOW + 2 * HOUR))
    assert record["tier"] == 2
    change = check(record, NOW + 24 * HOUR)
    assert [e.event for e in change.events if isinstance(e, SLAFired)] == [
        SLAWarning(SLAMetric.RESOLUTION, due_at=NOW + 24 * HOUR, at=NOW + 19 * HOUR + 12 * MIN),
        SLABreached(SLAMetric.RESOLUTION, due_at=NOW + 24 * HOUR, at=NOW + 24 * HOUR),
    ]
    assert not any(isinstance(e, TicketEscalated) for e in change.events)


def test_a_late_check_reports_warning_and_breach_in_order() -> None:
    change = check(new_ticket(**FAULT), NOW + 3 * HOUR)
    assert [type(e.event) for e in change.events if isinstance(e, SLAFired)] == [SLAWarning, SLABreached]
    assert [e.event.at for e in change.events if isinstance(e, SLAFired)] == [NOW + 96 * MIN, NOW + 2 * HOUR]
    assert change.events[-1] == TicketEscalated("T1", "network-l2", on_breach=True)


def test_no_escalation_on_breach_when_disabled() -> None:
    settings = TicketSettings(SETTINGS.business_calendar, escalate_on_breach=False)
    record = new_ticket(settings, **FAULT)
    change = check(record, NOW + 2 * HOUR, settings)
    assert [type(e) for e in change.events] == [SLAFired, SLAFired]
    assert change.values["breached"] is True
    assert "tier" not in change.values
    assert "department" not in change.values


def test_business_hours_decide_when_a_p2_clock_fires() -> None:
    office = TicketSettings(OFFICE)
    friday_5pm = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)
    monday = datetime(2026, 3, 9, tzinfo=UTC)
    record = new_ticket(office, now=friday_5pm, **FAULT)
    assert record["first_response_due_at"] == monday + 10 * HOUR  # 1 h on Friday, 1 h on Monday
    assert record["resolution_due_at"] == datetime(2026, 3, 11, 14, 0, tzinfo=UTC)  # 1 + 9 + 9 + 5 h
    assert check(record, datetime(2026, 3, 7, 12, 0, tzinfo=UTC), office) == Change({})  # Saturday
    assert check(record, monday + 9 * HOUR + 35 * MIN, office) == Change({})
    warned = check(record, monday + 9 * HOUR + 36 * MIN, office)
    assert [e.event for e in warned.events if isinstance(e, SLAFired)] == [
        SLAWarning(SLAMetric.FIRST_RESPONSE, due_at=monday + 10 * HOUR, at=monday + 9 * HOUR + 36 * MIN)
    ]
    breached = check(apply(record, warned), monday + 10 * HOUR, office)
    assert isinstance(breached.events[0], SLAFired)
    assert breached.events[0].event == SLABreached(
        SLAMetric.FIRST_RESPONSE, monday + 10 * HOUR, monday + 10 * HOUR
    )


def test_p1_clocks_ignore_business_hours() -> None:
    friday_5pm = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)
    record = new_ticket(TicketSettings(OFFICE), now=friday_5pm, priority="P1")
    assert record["first_response_due_at"] == friday_5pm + 15 * MIN
    assert record["resolution_due_at"] == friday_5pm + 4 * HOUR
