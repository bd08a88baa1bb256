"""The node's application service: permissions, validation, core rules, one transaction.

Every write method validates its input against the entity declarations, checks
the caller's role, then hands one function to the store's writer. That function
reads the current records, asks the pure core for the change and writes it with
its change-log operation; if anything raises, the savepoint rolls back and the
client sees the error with no partial write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from edge_node.core import tickets as core
from edge_node.core.dispatch import DEFAULT_DEPARTMENTS
from edge_node.core.schedule import DeadlineSchedule
from edge_node.core.tickets import TicketEvent, TicketSettings
from edge_node.errors import EdgeNodeError
from edge_node.ids import ulid
from edge_node.store import Reader, Store, Tx
from security.roles import Permission, require
from security.tokens import Principal
from sync.entities import COMMENT, CUSTOMER, DEPARTMENT, TICKET
from sync.entity import (
    Entity,
    Field,
    FieldProblem,
    FieldValueError,
    ValidationError,
    Value,
    convert,
    to_json,
    validate,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Payload = Mapping[str, object]

MAX_PAGE = 200
TICKET_FILTERS = ("status", "type", "priority", "department", "customer_id", "assignee")


class IdempotencyConflictError(EdgeNodeError):
    """An Idempotency-Key came back with a different request body."""

    def __init__(self, key: str, record_id: str) -> None:
        self.key, self.record_id = key, record_id
        super().__init__(
            f"idempotency key {key!r} was already used for a different request "
            f"(it created {record_id}); use a new key for a new request"
        )


class DuplicateRecordError(EdgeNodeError):
    """A client-chosen id is already taken."""

    def __init__(self, entity: str, record_id: str) -> None:
        self.entity, self.record_id = entity, record_id
        super().__init__(f"{entity} {record_id!r} already exists")


@dataclass(frozen=True, slots=True)
class Created:
    """A created record, and whether it was created earlier by the same request."""

    record: dict[str, Value]
    replayed: bool = False
    events: Sequence[TicketEvent] = ()


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """List filters; None means any."""

    status: str | None = None
    type: str | None = None
    priority: str | None = None
    department: str | None = None
    customer_id: str | None = None
    assignee: str | None = None
    breached: bool | None = None
    archived: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of records and the cursor for the next (None at the end)."""

    items: list[dict[str, Value]]
    next_cursor: str | None


def public(entity: Entity, record: Mapping[str, Value]) -> dict[str, object]:
    """A record in its JSON form, as the API shows it."""
    return {name: to_json(entity.field(name), value) for name, value in record.items()}


class NodeService:
    """Tickets, customers and departments of one regional node."""

    def __init__(
        self,
        store: Store,
        settings: TicketSettings,
        *,
        region: str,
        clock: Clock | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.settings = settings
        self.region = region
        self.clock = clock or (lambda: datetime.now(UTC))
        self._entropy = entropy
        self.schedule = DeadlineSchedule()
        self.on_schedule_change: Callable[[], None] = lambda: None

    def _new_id(self, now: datetime) -> str:
        return ulid(int(now.timestamp() * 1000), self._entropy(10))

    # --- startup ----------------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Seed default departments on a new node and load SLA deadlines."""
        now = self.clock()

        def seed(tx: Tx) -> int:
            if tx.conn.execute("SELECT count(*) FROM departments").fetchone()[0]:
                return 0
            for dept_id, name, escalates_to in DEFAULT_DEPARTMENTS:
                tx.insert(
                    DEPARTMENT,
                    {
                        "id": dept_id,
                        "name": name,
                        "escalates_to": escalates_to,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
            return len(DEFAULT_DEPARTMENTS)

        seeded = await self.store.write(seed, actor="system")
        if seeded:
            log.info("seeded %d default departments", seeded)
        open_tickets = await self.store.read(
            lambda r: r.select(
                TICKET,
                "archived = 0 AND status IN ('new','assigned','in_progress','pending_customer')",
                (),
            )
        )
        for ticket in open_tickets:
            self.schedule.set(str(ticket["id"]), core.next_deadline(ticket))
        log.info("SLA schedule loaded: %d open tickets watched", len(self.schedule))

    # --- tickets ----------------------------------------------------------------------

    async def create_ticket(
        self, principal: Principal, payload: Payload, *, idempotency_key: str | None = None
    ) -> Created:
        """Create a ticket; a repeated Idempotency-Key returns the first ticket."""
        require(principal.role, Permission.CREATE_TICKET)
        values = validate(TICKET, payload, require=("type", "subject"))
        digest = _digest(payload)
        now = self.clock()
        ticket_id = self._new_id(now)

        def write(tx: Tx) -> Created:
            if idempotency_key is not None:
                earlier = _idempotent_replay(tx, _scope(principal), idempotency_key, digest)
                if earlier is not None:
                    return Created(tx.require(TICKET, earlier), replayed=True)
            vip_tier = None
            customer_id = values.get("customer_id")
            if customer_id is not None:
                customer = tx.get(CUSTOMER, str(customer_id))
                if customer is None:
                    raise ValidationError([FieldProblem("customer_id", f"unknown customer {customer_id!r}")])
                vip_tier = str(customer.get("vip_tier") or "standard")
            change = core.create(
                self.settings,
                ticket_id=ticket_id,
                region=self.region,
                values=values,
                vip_tier=vip_tier,
                departments=_departments(tx),
                created_by=principal.name,
                now=now,
            )
            tx.insert(TICKET, change.values)
            if idempotency_key is not None:
                tx.conn.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        _scope(principal),
                        idempotency_key,
                        digest,
                        TICKET.name,
                        ticket_id,
                        now.isoformat(),
                    ),
                )
            return Created(tx.require(TICKET, ticket_id), events=change.events)

        created = await self.store.write(write, actor=principal.name)
        _log_events(created.events)
        if not created.replayed:
            self._reschedule(created.record)
        return created

    async def get_ticket(self, principal: Principal, ticket_id: str) -> dict[str, Value]:
        """One ticket."""
        require(principal.role, Permission.READ)
        return await self.store.read(lambda r: r.require(TICKET, ticket_id))

    async def list_tickets(
        self, principal: Principal, flt: TicketFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """Tickets newest first, filtered, one page at a time."""
        require(principal.role, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError([FieldProblem("limit", f"must be between 1 and {MAX_PAGE}; got {limit}")])
        validate(
            TICKET,
            {k: getattr(flt, k) for k in ("status", "type", "priority") if getattr(flt, k) is not None},
            allowed=("status", "type", "priority"),
        )
        clauses: list[str] = ["archived = ?"]
        params: list[object] = [int(flt.archived)]
        for name in TICKET_FILTERS:
            value = getattr(flt, name)
            if value is not None:
                clauses.append(f"{name} = ?")
                params.append(value)
        if flt.breached is not None:
            clauses.append("breached = ?")
            params.append(int(flt.breached))
        if cursor is not None:
            clauses.append("id < ?")
            params.append(cursor)
        where = " AND ".join(clauses)
        rows = await self.store.read(
            lambda r: r.select(TICKET, where, params, tail=f"ORDER BY id DESC LIMIT {limit + 1}")
        )
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items, str(items[-1]["id"]) if more and items else None)

    async def update_ticket(self, principal: Principal, ticket_id: str, payload: Payload) -> dict[str, Value]:
        """Edit client fields of a ticket."""
        require(principal.role, Permission.UPDATE_TICKET)
        changes = validate(TICKET, payload)
        if not changes:
            raise ValidationError([FieldProblem("body", "no fields to change")])
        if "type" in changes and changes["type"] is None:
            raise ValidationError([FieldProblem("type", "must not be null")])
        if "subject" in changes and not changes["subject"]:
            raise ValidationError([FieldProblem("subject", "must not be empty")])
        now = self.clock()

        def write(tx: Tx) -> dict[str, Value]:
            current = tx.require(TICKET, ticket_id)
            if "department" in changes and changes["department"] != current["department"]:
                require(principal.role, Permission.REASSIGN_ACROSS_DEPARTMENTS)
            if "priority" in changes and changes["priority"] != current["priority"]:
                require(principal.role, Permission.CHANGE_PRIORITY)
            change = core.update(self.settings, current, changes, departments=_departments(tx), now=now)
            tx.update(TICKET, ticket_id, change.values)
            return {**current, **change.values}

        return self._after(await self.store.write(write, actor=principal.name))

    async def transition(self, principal: Principal, ticket_id: str, body: Payload) -> dict[str, Value]:
        """Move a ticket to another status: ``{"status": ...}``."""
        require(principal.role, Permission.UPDATE_TICKET)
        status = str(_action_body(body, {"status": (TICKET.field("status"), True)})["status"])
        return await self._apply(
            principal,
            ticket_id,
            lambda current, tx: core.transition(self.settings, current, status, now=self.clock()),
        )

    async def assign(self, principal: Principal, ticket_id: str, body: Payload) -> dict[str, Value]:
        """Assign a ticket to an agent, optionally in another department: ``{"assignee", "department"?}``."""
        require(principal.role, Permission.ASSIGN_IN_DEPARTMENT)
        values = _action_body(
            body,
            {"assignee": (TICKET.field("assignee"), True), "department": (TICKET.field("department"), False)},
        )
        assignee = str(values["assignee"])
        department = values.get("department")

        def decide(current: Mapping[str, Value], tx: Tx) -> core.Change:
            if department is not None and department != current["department"]:
                require(principal.role, Permission.REASSIGN_ACROSS_DEPARTMENTS)
            return core.assign(
                self.settings,
                current,
                assignee,
                department=None if department is None else str(department),
                departments=_departments(tx),
                now=self.clock(),
            )

        return await self._apply(principal, ticket_id, decide)

    async def escalate(self, principal: Principal, ticket_id: str, body: Payload) -> dict[str, Value]:
        """Escalate a tier-1 ticket to tier 2: ``{"reason": ...}``."""
        require(principal.role, Permission.UPDATE_TICKET)
        reason = str(_action_body(body, {"reason": (TICKET.field("escalation_reason"), True)})["reason"])
        return await self._apply(
            principal,
            ticket_id,
            lambda current, tx: core.escalate(
                self.settings, current, reason=reason, departments=_departments(tx), now=self.clock()
            ),
        )

    async def archive(self, principal: Principal, ticket_id: str) -> dict[str, Value]:
        """Archive a closed ticket."""
        require(principal.role, Permission.ARCHIVE_TICKET)
        return await self._apply(
            principal, ticket_id, lambda current, tx: core.archive(current, now=self.clock())
        )

    async def add_comment(self, principal: Principal, ticket_id: str, payload: Payload) -> dict[str, Value]:
        """Comment on a ticket; a public comment counts as a response for the SLA."""
        require(principal.role, Permission.UPDATE_TICKET)
        values = validate(COMMENT, payload, require=("body",))
        internal = bool(values.get("internal"))
        now = self.clock()
        comment_id = self._new_id(now)

        def write(tx: Tx) -> tuple[dict[str, Value], dict[str, Value]]:
            current = tx.require(TICKET, ticket_id)
            change = core.comment(self.settings, current, internal=internal, now=now)
            record: dict[str, Value] = {
                **values,
                "id": comment_id,
                "ticket_id": ticket_id,
                "author": principal.name,
                "author_role": principal.role.value,
                "internal": internal,
                "created_at": now,
            }
            tx.insert(COMMENT, record)
            tx.update(TICKET, ticket_id, change.values)
            return record, {**current, **change.values}

        record, ticket = await self.store.write(write, actor=principal.name)
        self._after(ticket)
        return record

    async def list_comments(self, principal: Principal, ticket_id: str) -> list[dict[str, Value]]:
        """A ticket's comments, oldest first."""
        require(principal.role, Permission.READ)

        def read(r: Reader) -> list[dict[str, Value]]:
            r.require(TICKET, ticket_id)
            return r.select(COMMENT, "ticket_id = ?", (ticket_id,), tail="ORDER BY id")

        return await self.store.read(read)

    async def fire_due_sla(self) -> list[TicketEvent]:
        """Apply SLA warnings and breaches that are due now."""
        now = self.clock()
        due = self.schedule.due(now)
        if not due:
            return []

        def write(tx: Tx) -> tuple[list[TicketEvent], list[dict[str, Value]]]:
            events: list[TicketEvent] = []
            touched: list[dict[str, Value]] = []
            departments = _departments(tx)
            for ticket_id in due:
                current = tx.get(TICKET, ticket_id)
                if current is None:
                    continue
                change = core.check_sla(self.settings, current, departments=departments, now=now)
                tx.update(TICKET, ticket_id, change.values)
                events.extend(change.events)
                touched.append({**current, **change.values})
            return events, touched

        events, touched = await self.store.write(write, actor="sla-timer")
        for ticket in touched:
            self._reschedule(ticket)
        _log_events(events)
        return events

    async def reconcile_after_merge(self, ticket_ids: Sequence[str]) -> None:
        """Re-derive what the region owns after the hub's edits arrive.

        A priority changed centrally needs new SLA targets on the region's
        calendar; that is a local write like any other, so it replicates back.
        """
        now = self.clock()

        def write(tx: Tx) -> list[dict[str, Value]]:
            touched = []
            for ticket_id in dict.fromkeys(ticket_ids):
                current = tx.get(TICKET, ticket_id)
                if current is None:
                    continue
                sla = current.get("sla")
                open_ = current.get("status") in core.OPEN_STATUSES and not current.get("archived")
                if open_ and isinstance(sla, dict) and sla.get("priority") != current.get("priority"):
                    previous = sla.get("priority")
                    stale: dict[str, Value] = {
                        **current,
                        "priority": previous if isinstance(previous, str) else None,
                    }
                    change = core.update(
                        self.settings,
                        stale,
                        {"priority": current["priority"]},
                        departments=_departments(tx),
                        now=now,
                    )
                    tx.update(TICKET, ticket_id, {k: v for k, v in change.values.items() if k != "priority"})
                    current = {**current, **change.values}
                touched.append(current)
            return touched

        for ticket in await self.store.write(write, actor="replication"):
            self._reschedule(ticket)

    async def _apply(
        self,
        principal: Principal,
        ticket_id: str,
        decide: Callable[[Mapping[str, Value], Tx], core.Change],
    ) -> dict[str, Value]:
        def write(tx: Tx) -> tuple[dict[str, Value], list[TicketEvent]]:
            current = tx.require(TICKET, ticket_id)
            change = decide(current, tx)
            tx.update(TICKET, ticket_id, change.values)
            return {**current, **change.values}, change.events

        ticket, events = await self.store.write(write, actor=principal.name)
        _log_events(events)
        return self._after(ticket)

    def _after(self, ticket: dict[str, Value]) -> dict[str, Value]:
        self._reschedule(ticket)
        return ticket

    def _reschedule(self, ticket: Mapping[str, Value]) -> None:
        open_ = ticket.get("status") in core.OPEN_STATUSES and not ticket.get("archived")
        self.schedule.set(str(ticket["id"]), core.next_deadline(ticket) if open_ else None)
        self.on_schedule_change()

    # --- customers and departments ------------------------------------------------------

    async def create_customer(self, principal: Principal, payload: Payload) -> dict[str, Value]:
        """Create a customer; the id is the CRM's when given, else generated."""
        require(principal.role, Permission.MANAGE_CUSTOMERS)
        values = validate(CUSTOMER, payload, require=("name", "phone"))
        now = self.clock()
        record: dict[str, Value] = {
            "language": "en",
            "vip_tier": "standard",
            **{k: v for k, v in values.items() if v is not None},
            "region": self.region,
            "created_at": now,
            "updated_at": now,
        }
        record.setdefault("id", self._new_id(now))
        return await self.store.write(lambda tx: _insert_new(tx, CUSTOMER, record), actor=principal.name)

    async def get_customer(self, principal: Principal, customer_id: str) -> dict[str, Value]:
        """One customer."""
        require(principal.role, Permission.READ)
        return await self.store.read(lambda r: r.require(CUSTOMER, customer_id))

    async def create_department(self, principal: Principal, payload: Payload) -> dict[str, Value]:
        """Create a department."""
        require(principal.role, Permission.MANAGE_DEPARTMENTS)
        values = validate(DEPARTMENT, payload, require=("id", "name"))
        now = self.clock()
        record: dict[str, Value] = {**values, "created_at": now, "updated_at": now}

        def write(tx: Tx) -> dict[str, Value]:
            target = values.get("escalates_to")
            if target is not None and tx.get(DEPARTMENT, str(target)) is None:
                raise ValidationError([FieldProblem("escalates_to", f"unknown department {target!r}")])
            return _insert_new(tx, DEPARTMENT, record)

        return await self.store.write(write, actor=principal.name)

    async def list_departments(self, principal: Principal) -> list[dict[str, Value]]:
        """Every department."""
        require(principal.role, Permission.READ)
        return await self.store.read(lambda r: r.select(DEPARTMENT, "1", (), tail="ORDER BY id"))


def _insert_new(tx: Tx, entity: Entity, record: dict[str, Value]) -> dict[str, Value]:
    if tx.get(entity, str(record["id"])) is not None:
        raise DuplicateRecordError(entity.name, str(record["id"]))
    tx.insert(entity, record)
    return record


def _departments(tx: Reader) -> dict[str, str | None]:
    rows = tx.conn.execute("SELECT id, escalates_to FROM departments").fetchall()
    return {str(dept_id): (None if target is None else str(target)) for dept_id, target in rows}


def _idempotent_replay(tx: Tx, principal: str, key: str, digest: str) -> str | None:
    row = tx.conn.execute(
        "SELECT request_digest, record_id FROM idempotency_keys WHERE principal = ? AND key = ?",
        (principal, key),
    ).fetchone()
    if row is None:
        return None
    if row[0] != digest:
        raise IdempotencyConflictError(key, str(row[1]))
    return str(row[1])


def _digest(payload: Payload) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _scope(principal: Principal) -> str:
    """Idempotency keys belong to one caller: the token's role and name together."""
    return f"{principal.role.value}:{principal.name}"


def _action_body(body: Payload, spec: Mapping[str, tuple[Field, bool]]) -> dict[str, Value]:
    """Check a small action body against the declared fields it sets; name every problem."""
    problems = [FieldProblem(key, "unknown field") for key in body if key not in spec]
    values: dict[str, Value] = {}
    for key, (f, required) in spec.items():
        raw = body.get(key)
        if raw is None:
            if required:
                problems.append(FieldProblem(key, "is required"))
            continue
        try:
            value = convert(f, raw)
        except FieldValueError as exc:
            problems.append(FieldProblem(key, exc.problem))
            continue
        if required and value == "":
            problems.append(FieldProblem(key, "must not be empty"))
        values[key] = value
    if problems:
        raise ValidationError(problems)
    return values


def _log_events(events: Sequence[TicketEvent]) -> None:
    for event in events:
        log.info("ticket event: %s", event)
