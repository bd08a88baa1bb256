"""The replicated entities of EdgeCare, each declared once.

Schema, change log, API validation and residency filtering all read these
declarations; a field is added here and nowhere else. Data classes follow
DESIGN.md: anything a customer typed or that identifies a person is
``personal``; workflow state is ``operational``; call recordings (and where
they are kept) are ``media``, which by default never leaves the region.
"""

from __future__ import annotations

from sync.entity import DataClass, Entity, Field, Kind, MergeKind

OPS = DataClass.OPERATIONAL
PERSONAL = DataClass.PERSONAL
PUBLIC = DataClass.PUBLIC
MEDIA = DataClass.MEDIA

TICKET_TYPES = ("consult", "fault", "complaint", "service_request")
PRIORITIES = ("P1", "P2", "P3", "P4")
TICKET_STATUSES = ("new", "assigned", "in_progress", "pending_customer", "resolved", "closed")
CHANNELS = ("voice", "chat", "email", "sms", "app", "web")
VIP_TIERS = ("standard", "silver", "gold", "platinum")


def _server(
    name: str,
    kind: Kind,
    data_class: DataClass = OPS,
    *,
    required: bool = False,
    choices: tuple[str, ...] = (),
    max_length: int = 1000,
    minimum: float | None = None,
    maximum: float | None = None,
    indexed: bool = False,
    description: str = "",
) -> Field:
    """A field only the node sets; clients read it but cannot write it."""
    return Field(
        name,
        kind,
        data_class,
        writable=False,
        required=required,
        choices=choices,
        max_length=max_length,
        minimum=minimum,
        maximum=maximum,
        indexed=indexed,
        description=description,
    )


TICKET = Entity(
    name="ticket",
    table="tickets",
    description="A support ticket (work order): one customer problem, worked to resolution.",
    fields=(
        _server("id", Kind.ID, required=True),
        _server("region", Kind.TEXT, max_length=32, indexed=True),
        Field(
            "type",
            Kind.ENUM,
            OPS,
            required=True,
            choices=TICKET_TYPES,
            indexed=True,
            description="consult, fault, complaint or service_request",
        ),
        Field(
            "priority",
            Kind.ENUM,
            OPS,
            choices=PRIORITIES,
            indexed=True,
            description="P1 (urgent) to P4 (low); sets the SLA targets; default P2",
        ),
        Field("subject", Kind.TEXT, PERSONAL, required=True, max_length=200),
        Field("description", Kind.TEXT, PERSONAL, max_length=10_000),
        Field("customer_id", Kind.ID, OPS, indexed=True),
        Field("channel", Kind.ENUM, OPS, choices=CHANNELS),
        Field(
            "location",
            Kind.TEXT,
            PERSONAL,
            max_length=500,
            description="where the fault is; required for faults",
        ),
        Field(
            "symptom",
            Kind.TEXT,
            PERSONAL,
            max_length=2000,
            description="what the customer experiences; required for faults",
        ),
        Field(
            "impact_scope",
            Kind.TEXT,
            OPS,
            max_length=200,
            description="who is affected (a line, a building, a district); required for faults",
        ),
        Field(
            "department",
            Kind.ID,
            OPS,
            indexed=True,
            description="owning department; chosen by the dispatch rules when omitted",
        ),
        Field(
            "call_ids",
            Kind.TEXT_SET,
            OPS,
            merge=MergeKind.SET,
            max_length=128,
            description="linked call ids",
        ),
        Field("tags", Kind.TEXT_SET, OPS, merge=MergeKind.SET, max_length=64),
        _server("status", Kind.ENUM, choices=TICKET_STATUSES, indexed=True),
        _server(
            "tier",
            Kind.INT,
            minimum=1,
            maximum=2,
            description="support tier: 1, or 2 after escalation",
        ),
        _server("assignee", Kind.TEXT, max_length=64, indexed=True),
        _server("created_by", Kind.TEXT, max_length=64),
        _server("created_at", Kind.INSTANT, indexed=True),
        _server("updated_at", Kind.INSTANT),
        _server("first_responded_at", Kind.INSTANT),
        _server("resolved_at", Kind.INSTANT),
        _server("closed_at", Kind.INSTANT),
        _server("first_response_due_at", Kind.INSTANT),
        _server("next_update_due_at", Kind.INSTANT),
        _server("resolution_due_at", Kind.INSTANT),
        _server("breached", Kind.BOOL, indexed=True, description="any SLA target was missed"),
        _server("sla", Kind.DOCUMENT, description="the three SLA clocks"),
        _server("escalation_reason", Kind.TEXT, PERSONAL, max_length=1000),
        _server("reopen_count", Kind.INT, minimum=0),
        _server("archived", Kind.BOOL, indexed=True),
    ),
)

COMMENT = Entity(
    name="comment",
    table="ticket_comments",
    description="A note on a ticket: a reply to the customer, or internal when marked so.",
    fields=(
        _server("id", Kind.ID, required=True),
        _server("ticket_id", Kind.ID, required=True, indexed=True),
        _server("author", Kind.TEXT, max_length=64),
        _server("author_role", Kind.TEXT, max_length=32),
        Field("body", Kind.TEXT, PERSONAL, required=True, max_length=10_000),
        Field("internal", Kind.BOOL, OPS, description="hidden from the customer"),
        _server("created_at", Kind.INSTANT),
    ),
)

CUSTOMER = Entity(
    name="customer",
    table="customers",
    description="A subscriber of the operator, as far as the contact centre needs one.",
    fields=(
        Field("id", Kind.ID, OPS, description="the CRM id; generated when omitted"),
        Field("name", Kind.TEXT, PERSONAL, required=True, max_length=200),
        Field(
            "phone",
            Kind.PHONE,
            PERSONAL,
            required=True,
            indexed=True,
            description="E.164, e.g. +4930123456",
        ),
        Field(
            "language",
            Kind.LANGUAGE,
            OPS,
            max_length=35,
            description="preferred language tag, e.g. en, de, zh-CN; default en",
        ),
        Field("vip_tier", Kind.ENUM, OPS, choices=VIP_TIERS, description="default standard"),
        Field("email", Kind.TEXT, PERSONAL, max_length=254),
        Field("address", Kind.TEXT, PERSONAL, max_length=500),
        _server("region", Kind.TEXT, max_length=32, indexed=True),
        _server("created_at", Kind.INSTANT),
        _server("updated_at", Kind.INSTANT),
    ),
)

DEPARTMENT = Entity(
    name="department",
    table="departments",
    description="A team tickets are dispatched to; tier-1 teams name their tier-2 team.",
    fields=(
        Field("id", Kind.ID, OPS, required=True, description="short name, e.g. network-ops"),
        Field("name", Kind.TEXT, OPS, required=True, max_length=200),
        Field("escalates_to", Kind.ID, OPS, description="the tier-2 department for escalations"),
        _server("created_at", Kind.INSTANT),
        _server("updated_at", Kind.INSTANT),
    ),
)

CALL_OUTCOMES = ("answered", "abandoned", "overflowed", "callback", "refused", "self_service")
CALL_PARTIES = ("caller", "agent")

CALL_RECORD = Entity(
    name="call_record",
    table="call_records",
    description=(
        "A call detail record: one contact's way through the node, from arrival to the end of the "
        "agent's wrap-up. Written by routing only; instants are UTC, durations seconds."
    ),
    fields=(
        _server("id", Kind.ID, required=True, description="the switch's contact id"),
        _server("channel", Kind.ENUM, choices=CHANNELS),
        _server("queue_id", Kind.TEXT, max_length=64, indexed=True, description="the queue it was in last"),
        _server("agent_id", Kind.TEXT, max_length=64, indexed=True, description="the agent offered it last"),
        _server("arrived_at", Kind.INSTANT, indexed=True, description="reached the node (IVR or queue)"),
        _server("offered_at", Kind.INSTANT, description="offered to (rung at) the agent"),
        _server("answered_at", Kind.INSTANT),
        _server(
            "ended_at", Kind.INSTANT, indexed=True, description="left the node: hung up, refused, diverted"
        ),
        _server(
            "outcome",
            Kind.ENUM,
            choices=CALL_OUTCOMES,
            indexed=True,
            description="the latest fate; none while the contact waits for the first one",
        ),
        _server("wait_s", Kind.FLOAT, minimum=0, description="arrival to answer, or to leaving unanswered"),
        _server("talk_s", Kind.FLOAT, minimum=0, description="answer to end"),
        _server("wrap_up_s", Kind.FLOAT, minimum=0, description="end to the agent leaving wrap-up"),
        _server("caller_country", Kind.TEXT, max_length=2, description="ISO 3166 region of the number"),
        _server("inquiry_type", Kind.TEXT, max_length=64),
        _server(
            "entry_position",
            Kind.INT,
            minimum=1,
            description="place in line on entering the queue (1 = next); queue_log origposition",
        ),
        _server("exit_position", Kind.INT, minimum=1, description="place in line on leaving unanswered"),
        _server("overflowed_from", Kind.TEXT, max_length=64, description="the first queue, if it overflowed"),
        _server("overflowed_at", Kind.INSTANT, description="when it left the first queue"),
        _server("ended_by", Kind.ENUM, choices=CALL_PARTIES, description="who hung up a connected call"),
        _server(
            "transferred_to",
            Kind.TEXT,
            PERSONAL,
            max_length=128,
            description="where the agent transferred the call (may be an outside number)",
        ),
        _server(
            "recording_uri",
            Kind.TEXT,
            MEDIA,
            max_length=512,
            description=(
                "where the region's recording store keeps the call's recording; "
                "never leaves the region under the default policy"
            ),
        ),
    ),
)

ENTITIES: tuple[Entity, ...] = (TICKET, COMMENT, CUSTOMER, DEPARTMENT, CALL_RECORD)

# What central ops may change in a region (the hub's PATCH), and so all a hub batch down may touch.
CENTRAL_TICKET_FIELDS: tuple[str, ...] = ("priority", "department", "assignee")
CENTRAL_EDITS: dict[str, frozenset[str]] = {TICKET.name: frozenset({*CENTRAL_TICKET_FIELDS, "updated_at"})}
BY_NAME = {e.name: e for e in ENTITIES}
