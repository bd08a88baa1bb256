"""Auto-dispatch: ordered rules, all conditions of a rule must hold, first match wins."""

from __future__ import annotations

import pytest

from edge_node.core.dispatch import (
    DEFAULT_DEPARTMENTS,
    DEFAULT_RULES,
    DispatchConfigError,
    DispatchRule,
    DispatchRules,
)
from edge_node.errors import EdgeNodeError


def choose(
    ticket_type: str = "consult",
    *texts: str | None,
    vip_tier: str | None = None,
    rules: DispatchRules = DEFAULT_RULES,
) -> str:
    return rules.choose(ticket_type=ticket_type, texts=texts, vip_tier=vip_tier)


# --- the default rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ticket_type", "department"),
    [
        ("fault", "network-ops"),
        ("complaint", "complaints"),
        ("service_request", "service-desk"),
        ("consult", "general"),
    ],
)
def test_default_rules_route_by_type(ticket_type: str, department: str) -> None:
    assert choose(ticket_type, "hello", None) == department


@pytest.mark.parametrize(
    "text",
    [
        "Wrong BILL this month",
        "where is my invoice",
        "double charge",
        "Refund please",
        "本月话费异常",
        "账单有误",
    ],
)
def test_billing_keywords_match_case_insensitively_in_english_and_chinese(text: str) -> None:
    assert choose("consult", text) == "billing"


def test_keywords_are_found_in_any_of_the_texts() -> None:
    assert choose("consult", "question", None, "they want a REFUND") == "billing"
    assert choose("consult", None, None, None) == "general"


def test_keywords_match_as_substrings() -> None:
    assert choose("consult", "billing address") == "billing"  # "bill" inside "billing"


def test_platinum_customers_go_to_vip_care_before_anything_else() -> None:
    assert choose("fault", "refund", vip_tier="platinum") == "vip-care"
    assert choose("fault", vip_tier="gold") == "network-ops"


def test_rule_order_decides_between_matching_rules() -> None:
    # A fault about a bill matches both the fault rule and the billing rule; faults come first.
    assert choose("fault", "bill is wrong") == "network-ops"
    # A complaint about a refund: the billing rule comes before the complaints rule.
    assert choose("complaint", "refund") == "billing"


def test_default_departments_cover_the_rules_and_their_tier2_targets() -> None:
    ids = {dept for dept, _, _ in DEFAULT_DEPARTMENTS}
    assert DEFAULT_RULES.departments <= ids
    assert {target for _, _, target in DEFAULT_DEPARTMENTS if target is not None} <= ids
    assert len(ids) == len(DEFAULT_DEPARTMENTS)


# --- rules -------------------------------------------------------------------------------------


def test_a_rule_without_conditions_matches_everything() -> None:
    rule = DispatchRule("anything")
    assert rule.matches(ticket_type="fault", text="", vip_tier=None)


def test_a_rule_matches_only_when_every_condition_holds() -> None:
    rule = DispatchRule("x", types=frozenset({"fault"}), keywords=("fiber",), vip_tiers=frozenset({"gold"}))
    assert rule.matches(ticket_type="fault", text="fiber cut", vip_tier="gold")
    assert not rule.matches(ticket_type="consult", text="fiber cut", vip_tier="gold")
    assert not rule.matches(ticket_type="fault", text="copper cut", vip_tier="gold")
    assert not rule.matches(ticket_type="fault", text="fiber cut", vip_tier="silver")
    assert not rule.matches(ticket_type="fault", text="fiber cut", vip_tier=None)


def test_any_keyword_of_a_rule_is_enough() -> None:
    rule = DispatchRule("x", keywords=("fiber", "光纤"))
    assert rule.matches(ticket_type="fault", text="光纤中断", vip_tier=None)


def test_custom_rules_fall_back_to_the_default_department() -> None:
    rules = DispatchRules(
        rules=(
            DispatchRule("roaming", keywords=("Roaming",)),
            DispatchRule("gold-desk", vip_tiers=frozenset({"gold"})),
        ),
        default_department="front-desk",
    )
    assert choose("consult", "ROAMING abroad", vip_tier="gold", rules=rules) == "roaming"
    assert choose("consult", "hello", vip_tier="gold", rules=rules) == "gold-desk"
    assert choose("consult", "hello", rules=rules) == "front-desk"
    assert rules.departments == {"roaming", "gold-desk", "front-desk"}


def test_no_rules_means_the_default_department() -> None:
    rules = DispatchRules(rules=(), default_department="general")
    assert choose("fault", "anything", vip_tier="platinum", rules=rules) == "general"
    assert rules.departments == {"general"}


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (DispatchRule(""), "names no department"),
        (DispatchRule("x", keywords=("ok", "")), "has an empty keyword"),
        (DispatchRule("x", keywords=("  ",)), "has an empty keyword"),
    ],
)
def test_unusable_rules_are_refused_naming_their_index(rule: DispatchRule, problem: str) -> None:
    with pytest.raises(DispatchConfigError, match=rf"^dispatch rule 1: {problem}$") as info:
        DispatchRules(rules=(DispatchRule("fine"), rule), default_department="general")
    assert (info.value.index, info.value.problem) == (1, problem)
    assert isinstance(info.value, EdgeNodeError)
