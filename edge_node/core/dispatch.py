"""Auto-dispatch: which department a new ticket goes to.

Theory of operation
-------------------
A region configures an ordered list of rules. Each rule names a department and
up to three conditions: ticket types, keywords, and customer VIP tiers. An
empty condition matches anything; a rule matches when all of its conditions
do; the first matching rule wins, else the default department. Keywords match
case-insensitively as substrings of the ticket's subject, description and
symptom, which works for Chinese (no word boundaries) as well as for English.
An explicit department on the ticket always beats the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_node.errors import EdgeNodeError


class DispatchConfigError(EdgeNodeError):
    """A dispatch rule is unusable as configured."""

    def __init__(self, index: int, problem: str) -> None:
        self.index, self.problem = index, problem
        super().__init__(f"dispatch rule {index}: {problem}")


@dataclass(frozen=True, slots=True)
class DispatchRule:
    """Send matching tickets to ``department``."""

    department: str
    types: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    vip_tiers: frozenset[str] = frozenset()

    def matches(self, *, ticket_type: str, text: str, vip_tier: str | None) -> bool:
        """Whether every condition of the rule holds; ``text`` is already casefolded."""
        if self.types and ticket_type not in self.types:
            return False
        if self.vip_tiers and vip_tier not in self.vip_tiers:
            return False
        return not self.keywords or any(k.casefold() in text for k in self.keywords)


@dataclass(frozen=True, slots=True)
class DispatchRules:
    """An ordered rule list with a fallback department."""

    rules: tuple[DispatchRule, ...]
    default_department: str

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if not rule.department:
                raise DispatchConfigError(i, "names no department")
            if any(not k.strip() for k in rule.keywords):
                raise DispatchConfigError(i, "has an empty keyword")

    @property
    def departments(self) -> frozenset[str]:
        """Every department the rules can choose."""
        return frozenset({self.default_department, *(r.department for r in self.rules)})

    def choose(self, *, ticket_type: str, texts: Iterable[str | None], vip_tier: str | None) -> str:
        """The department for a new ticket; the first matching rule wins."""
        text = "\n".join(t for t in texts if t).casefold()
        for rule in self.rules:
            if rule.matches(ticket_type=ticket_type, text=text, vip_tier=vip_tier):
                return rule.department
        return self.default_department


DEFAULT_DEPARTMENTS: tuple[tuple[str, str, str | None], ...] = (
    # (id, name, tier-2 department)
    ("general", "General enquiries", "tier2"),
    ("network-ops", "Network operations", "network-l2"),
    ("billing", "Billing", "tier2"),
    ("complaints", "Complaints", "tier2"),
    ("service-desk", "Service requests", "tier2"),
    ("vip-care", "VIP care", "tier2"),
    ("network-l2", "Network engineering (tier 2)", None),
    ("tier2", "Tier-2 support", None),
)

DEFAULT_RULES = DispatchRules(
    rules=(
        DispatchRule("vip-care", vip_tiers=frozenset({"platinum"})),
        DispatchRule("network-ops", types=frozenset({"fault"})),
        DispatchRule(
            "billing",
            keywords=("bill", "invoice", "charge", "refund", "账单", "话费", "扣费", "退款"),
        ),
        DispatchRule("complaints", types=frozenset({"complaint"})),
        DispatchRule("service-desk", types=frozenset({"service_request"})),
    ),
    default_department="general",
)
