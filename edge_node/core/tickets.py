"""The ticket (work order, 工单) lifecycle, pure.

Theory of operation
-------------------
A ticket is a record of declared fields (``sync.entities.TICKET``). Every
command here takes the current record, the input and ``now``, and returns a
:class:`Change`: the fields to set and the events that happened. Nothing is
written here; the caller stores the change and its change-log operation in one
transaction, so a refused command leaves no trace.

Status workflow::

    new ──► assigned ──► in_progress ──► pending_customer ──► resolved ──► closed
     │          ▲  │          ▲ │  ▲            │                 │  ▲        │
     └──────────┴──┴──────────┘ └──┴────────────┘                 │  └ reopen ┘
                                   (resolved/closed ──► in_progress is a reopen)

Any open status may go straight to ``resolved``; ``closed`` only follows
``resolved``; a closed ticket may be archived, after which it is read-only.

SLA: three clocks (first response, next update, resolution) from
``edge_node.core.sla``. They pause while the ticket waits on the customer
(``pending_customer``); a public agent comment is a response; resolving meets
every clock; a reopen resumes the resolution clock where it stopped. A breach
escalates tier 1 to tier 2 when the region asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from edge_node.core.calendar import BusinessCalendar
from edge_node.core.dispatch import DEFAULT_RULES, DispatchRules
from edge_node.core.sla import DEFAULT_POLICY, SLABreached, SLAEvent, SLAPolicy, TicketSLA
from edge_node.errors import EdgeNodeError
from sync.entities import TICKET
from sync.entity import FieldProblem, ValidationError, Value

Record = Mapping[str, Value]

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "new": frozenset({"assigned", "in_progress", "pending_customer", "resolved"}),
    "assigned": frozenset({"new", "in_progress", "pending_customer", "resolved"}),
    "in_progress": frozenset({"assigned", "pending_customer", "resolved"}),
    "pending_customer": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "closed": frozenset({"in_progress"}),
}
OPEN_STATUSES = frozenset({"new", "assigned", "in_progress", "pending_customer"})
REQUIRED_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "consult": (),
    "fault": ("location", "symptom", "impact_scope"),
    "complaint": (),
    "service_request": (),
}
EDITABLE = frozenset(TICKET.writable_names)


class TicketError(EdgeNodeError):
    """Base for refusals of ticket commands."""


class InvalidTransitionError(TicketError):
    """The workflow does not allow this status change."""

    def __init__(self, ticket_id: str, current: str, requested: str) -> None:
        self.ticket_id, self.current, self.requested = ticket_id, current, requested
        self.allowed = tuple(sorted(TRANSITIONS.get(current, ())))
        allowed = ", ".join(self.allowed) or "none"
        super().__init__(
            f"ticket {ticket_id} cannot go from {current!r} to {requested!r}; "
            f"allowed from {current!r}: {allowed}"
        )


class TicketReadOnlyError(TicketError):
    """The ticket is archived (or closed, for edits) and refuses changes."""

    def __init__(self, ticket_id: str, state: str, action: str) -> None:
        self.ticket_id, self.state, self.action = ticket_id, state, action
        super().__init__(f"ticket {ticket_id} is {state} and cannot be {action}")


class AlreadyEscalatedError(TicketError):
    """Tier 2 is the top tier."""

    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"ticket {ticket_id} is already at tier 2")


@dataclass(frozen=True, slots=True)
class TicketSettings:
    """Everything the ticket rules need from a region's configuration."""

    business_calendar: BusinessCalendar
    policy: SLAPolicy = DEFAULT_POLICY
    dispatch: DispatchRules = DEFAULT_RULES
    default_priority: str = "P2"
    escalate_on_breach: bool = True


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketCreated:
    ticket_id: str
    department: str
    dispatched: bool  # chosen by the rules rather than given


@dataclass(frozen=True, slots=True)
class StatusChanged:
    ticket_id: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class TicketEscalated:
    ticket_id: str
    department: str
    on_breach: bool


@dataclass(frozen=True, slots=True)
class SLAFired:
    ticket_id: str
    event: SLAEvent


TicketEvent = TicketCreated | StatusChanged | TicketEscalated | SLAFired


@dataclass(frozen=True, slots=True)
class Change:
    """Fields to set on the ticket and the events behind them."""

    values: dict[str, Value]
    events: list[TicketEvent] = field(default_factory=list)


# --- commands -------------------------------------------------------------------------


def create(
    settings: TicketSettings,
    *,
    ticket_id: str,
    region: str,
    values: Record,
    vip_tier: str | None,
    departments: Mapping[str, str | None],
    created_by: str,
    now: datetime,
) -> Change:
    """A new ticket from validated client fields.

    Args:
        settings: the region's ticket rules.
        ticket_id: the id the adapter generated.
        region: the node's region.
        values: client fields, already validated against the declaration.
        vip_tier: the customer's tier, for dispatch (None without a customer).
        departments: known department ids and their tier-2 department.
        created_by: the principal's name.
        now: the current instant.

    Raises:
        ValidationError: a field the type needs is missing, or the department is unknown.
    """
    ticket_type = str(values["type"])
    _check_type_fields(ticket_type, values)
    priority = str(values.get("priority") or settings.default_priority)
    department = values.get("department")
    dispatched = department is None
    if department is None:
        department = settings.dispatch.choose(
            ticket_type=ticket_type,
            texts=(
                _text(values, "subject"),
                _text(values, "description"),
                _text(values, "symptom"),
            ),
            vip_tier=vip_tier,
        )
    if department not in departments:
        raise _unknown_department(str(department), departments)
    sla = TicketSLA.open(settings.policy, priority, settings.business_calendar, now)
    record: dict[str, Value] = {
        **values,
        "id": ticket_id,
        "region": region,
        "priority": priority,
        "department": department,
        "status": "new",
        "tier": 1,
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
        "reopen_count": 0,
        "archived": False,
        "call_ids": values.get("call_ids") or frozenset(),
        "tags": values.get("tags") or frozenset(),
        **_sla_fields(sla),
    }
    return Change(record, [TicketCreated(ticket_id, str(department), dispatched)])


def update(
    settings: TicketSettings,
    current: Record,
    changes: Record,
    *,
    departments: Mapping[str, str | None],
    now: datetime,
) -> Change:
    """Edit client fields: re-checks the type's required fields and re-targets the SLA."""
    ticket_id = str(current["id"])
    _refuse_if_archived(current, "edited")
    if current["status"] == "closed":
        raise TicketReadOnlyError(ticket_id, "closed", "edited; reopen it first")
    if "department" in changes and changes["department"] is None:
        raise ValidationError([FieldProblem("department", "cannot be cleared; name a department")])
    merged = {**current, **changes}
    _check_type_fields(str(merged["type"]), merged)
    if "department" in changes and changes["department"] not in departments:
        raise _unknown_department(str(changes["department"]), departments)
    if "priority" in changes and changes["priority"] is None:
        changes = {**changes, "priority": settings.default_priority}
    values: dict[str, Value] = {k: v for k, v in changes.items() if current.get(k) != v}
    new_priority = values.get("priority")
    if isinstance(new_priority, str) and new_priority != current["priority"]:
        sla = _sla(current).reprioritised(settings.policy, new_priority, settings.business_calendar, now)
        values.update(_sla_fields(sla))
    if values:
        values["updated_at"] = now
    return Change(values)


def transition(settings: TicketSettings, current: Record, to: str, *, now: datetime) -> Change:
    """Move the ticket along the workflow, with the SLA effects of each step.

    Raises:
        InvalidTransitionError: naming the statuses allowed from the current one.
    """
    ticket_id, old = str(current["id"]), str(current["status"])
    _refuse_if_archived(current, "moved")
    if to not in TRANSITIONS.get(old, ()):
        raise InvalidTransitionError(ticket_id, old, to)
    if to == "assigned" and not current.get("assignee"):
        raise ValidationError([FieldProblem("status", "assign the ticket to someone first")])
    calendar = settings.business_calendar
    sla = _sla(current)
    values: dict[str, Value] = {"status": to, "updated_at": now}
    if to == "new":
        values["assignee"] = None  # back to the department's queue
    if old == "pending_customer":
        sla = sla.resume(settings.policy, calendar, now)
    if to == "pending_customer":
        sla = sla.pause(calendar, now)
    elif to == "resolved":
        sla = sla.resolved(calendar, now)
        values["resolved_at"] = now
        if current.get("first_responded_at") is None:
            values["first_responded_at"] = now
    elif to == "closed":
        values["closed_at"] = now
    elif old in ("resolved", "closed"):
        sla = sla.reopened(settings.policy, calendar, now)
        values.update(resolved_at=None, closed_at=None)
        count = current.get("reopen_count")
        values["reopen_count"] = (count if isinstance(count, int) else 0) + 1
    values.update(_sla_fields(sla))
    return Change(values, [StatusChanged(ticket_id, old, to)])


def assign(
    settings: TicketSettings,
    current: Record,
    assignee: str,
    *,
    department: str | None,
    departments: Mapping[str, str | None],
    now: datetime,
) -> Change:
    """Give the ticket to an agent (and maybe a department); a new ticket becomes assigned."""
    _refuse_if_archived(current, "assigned")
    if current["status"] in ("resolved", "closed"):
        raise TicketReadOnlyError(str(current["id"]), str(current["status"]), "assigned")
    values: dict[str, Value] = {"assignee": assignee, "updated_at": now}
    if department is not None and department != current["department"]:
        if department not in departments:
            raise _unknown_department(department, departments)
        values["department"] = department
    events: list[TicketEvent] = []
    if current["status"] == "new":
        values["status"] = "assigned"
        events.append(StatusChanged(str(current["id"]), "new", "assigned"))
    return Change(values, events)


def escalate(
    settings: TicketSettings,
    current: Record,
    *,
    reason: str,
    departments: Mapping[str, str | None],
    now: datetime,
    on_breach: bool = False,
) -> Change:
    """Tier 1 to tier 2, moving to the department's tier-2 team when it names one."""
    ticket_id = str(current["id"])
    _refuse_if_archived(current, "escalated")
    if current.get("tier") == 2:
        raise AlreadyEscalatedError(ticket_id)
    if current["status"] in ("resolved", "closed"):
        raise TicketReadOnlyError(ticket_id, str(current["status"]), "escalated")
    target = departments.get(str(current["department"])) or str(current["department"])
    values: dict[str, Value] = {
        "tier": 2,
        "department": target,
        "escalation_reason": reason,
        "updated_at": now,
    }
    events: list[TicketEvent] = [TicketEscalated(ticket_id, target, on_breach)]
    if target != current["department"]:
        values["assignee"] = None
        if current["status"] == "assigned":
            values["status"] = "new"
            events.append(StatusChanged(ticket_id, "assigned", "new"))
    return Change(values, events)


def comment(settings: TicketSettings, current: Record, *, internal: bool, now: datetime) -> Change:
    """An agent's comment; a public one is a response to the customer for the SLA."""
    _refuse_if_archived(current, "commented on")
    values: dict[str, Value] = {"updated_at": now}
    if internal or current["status"] in ("resolved", "closed"):
        return Change(values)
    sla = _sla(current).agent_responded(settings.policy, settings.business_calendar, now)
    values.update(_sla_fields(sla))
    if current.get("first_responded_at") is None:
        values["first_responded_at"] = now
    return Change(values)


def archive(current: Record, *, now: datetime) -> Change:
    """Archive a closed ticket: it leaves the working lists and becomes read-only."""
    ticket_id = str(current["id"])
    _refuse_if_archived(current, "archived again")
    if current["status"] != "closed":
        raise TicketReadOnlyError(ticket_id, str(current["status"]), "archived before it is closed")
    return Change({"archived": True, "updated_at": now})


def check_sla(
    settings: TicketSettings,
    current: Record,
    *,
    departments: Mapping[str, str | None],
    now: datetime,
) -> Change:
    """Fire due SLA warnings and breaches; escalate on a breach when configured."""
    ticket_id = str(current["id"])
    sla, fired = _sla(current).check(now)
    if not fired:
        return Change({})
    values: dict[str, Value] = _sla_fields(sla)
    events: list[TicketEvent] = [SLAFired(ticket_id, e) for e in fired]
    breached = any(isinstance(e, SLABreached) for e in fired)
    escalate_now = settings.escalate_on_breach and current.get("tier") == 1
    if breached and escalate_now and current["status"] in OPEN_STATUSES and not current.get("archived"):
        escalation = escalate(
            settings,
            {**current, **values},
            reason="SLA breached",
            departments=departments,
            now=now,
            on_breach=True,
        )
        values.update(escalation.values)
        events.extend(escalation.events)
    return Change(values, events)


def next_deadline(current: Record) -> datetime | None:
    """When the ticket's SLA next needs a look, or None."""
    if current.get("archived"):
        return None
    return _sla(current).next_deadline()


# --- helpers --------------------------------------------------------------------------


def _sla(current: Record) -> TicketSLA:
    doc = current.get("sla")
    if not isinstance(doc, Mapping):
        raise ValidationError([FieldProblem("sla", "ticket has no SLA state")])
    return TicketSLA.from_doc(doc)


def _sla_fields(sla: TicketSLA) -> dict[str, Value]:
    return {
        "sla": sla.to_doc(),
        "first_response_due_at": sla.first_response.due_at,
        "next_update_due_at": sla.next_update.due_at,
        "resolution_due_at": sla.resolution.due_at,
        "breached": sla.breached,
    }


def _check_type_fields(ticket_type: str, values: Record) -> None:
    missing = [
        FieldProblem(name, f"is required for {ticket_type} tickets")
        for name in REQUIRED_BY_TYPE.get(ticket_type, ())
        if not values.get(name)
    ]
    if missing:
        raise ValidationError(missing)


def _text(values: Record, name: str) -> str | None:
    value = values.get(name)
    return value if isinstance(value, str) else None


def _unknown_department(name: str, departments: Mapping[str, str | None]) -> ValidationError:
    known = ", ".join(sorted(departments)) or "none"
    return ValidationError([FieldProblem("department", f"unknown department {name!r}; known: {known}")])


def _refuse_if_archived(current: Record, action: str) -> None:
    if current.get("archived"):
        raise TicketReadOnlyError(str(current["id"]), "archived", action)
