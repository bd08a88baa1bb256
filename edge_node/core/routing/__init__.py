"""Pure ACD routing: agents, queues, contacts, and the engine that matches them.

Nothing here reads a clock, does I/O or logs: callers pass `now` and get back
decisions and events (STYLE.md section 4). Start with `RoutingEngine`; the
module comments of engine.py, matching.py, contacts.py, agents.py, queues.py
and stats.py explain the rules.
"""

from __future__ import annotations

from edge_node.core.routing.agents import REQUESTABLE, AgentProfile, AgentState, AgentStatus
from edge_node.core.routing.config import RoutingConfig
from edge_node.core.routing.contacts import DEFAULT_VIP_CREDIT_S, Channel, Contact, VipTier, order_key
from edge_node.core.routing.engine import RoutingEngine
from edge_node.core.routing.errors import (
    BreakReasonError,
    ClockWentBackwardsError,
    ContactStateError,
    DuplicateIdError,
    IllegalTransitionError,
    RoutingConfigError,
    RoutingError,
    UnknownAgentError,
    UnknownQueueError,
)
from edge_node.core.routing.events import (
    AgentStateChanged,
    Assigned,
    CallbackOffered,
    ContactAbandoned,
    ContactAssigned,
    ContactCallbackOffered,
    ContactDeclined,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactRelaxed,
    ContactReleased,
    Decision,
    Overflowed,
    Queued,
    RefusalReason,
    Refused,
    RoutingEvent,
)
from edge_node.core.routing.queues import QueueConfig, RelaxationStep, Strategy, WaitingContact
from edge_node.core.routing.stats import (
    QueueStatistics,
    RoutingStatistics,
    abandon_rate,
    expected_wait_s,
    service_level,
)

__all__ = [
    "DEFAULT_VIP_CREDIT_S",
    "REQUESTABLE",
    "AgentProfile",
    "AgentState",
    "AgentStateChanged",
    "AgentStatus",
    "Assigned",
    "BreakReasonError",
    "CallbackOffered",
    "Channel",
    "ClockWentBackwardsError",
    "Contact",
    "ContactAbandoned",
    "ContactAssigned",
    "ContactCallbackOffered",
    "ContactDeclined",
    "ContactOverflowed",
    "ContactQueued",
    "ContactRefused",
    "ContactRelaxed",
    "ContactReleased",
    "ContactStateError",
    "Decision",
    "DuplicateIdError",
    "IllegalTransitionError",
    "Overflowed",
    "QueueConfig",
    "QueueStatistics",
    "Queued",
    "RefusalReason",
    "Refused",
    "RelaxationStep",
    "RoutingConfig",
    "RoutingConfigError",
    "RoutingEngine",
    "RoutingError",
    "RoutingEvent",
    "RoutingStatistics",
    "Strategy",
    "UnknownAgentError",
    "UnknownQueueError",
    "VipTier",
    "WaitingContact",
    "abandon_rate",
    "expected_wait_s",
    "order_key",
    "service_level",
]
