"""Residency policies: reading and refusing them, rewriting operations at egress, the hub's check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from sync.crdt import Counter, FieldChange, Op, Register, SetDelta, StorageValue, Version
from sync.entities import ENTITIES, TICKET
from sync.entity import DataClass, Entity, Field, Kind, MergeKind
from sync.residency import (
    DEFAULT_FORMS,
    FORM_STRENGTH,
    EgressTally,
    Form,
    FormViolation,
    PolicyError,
    ResidencyPolicy,
    below_floor,
    check_op,
    egress_op,
    entity_forms,
    key_id_for,
    pseudonym_scope,
)

V = Version(1_000, "node-a")
SEALED = "SEALED<"  # what the fake sealer prefixes; the fake checks below recognise it
TOKEN = "TOKEN<"  # noqa: S105 - a fake pseudonym prefix, not a secret


def reg(value: StorageValue, version: Version = V) -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, version))


def delta(
    add: Mapping[str, Version] | None = None, remove: Mapping[str, frozenset[Version]] | None = None
) -> FieldChange:
    return FieldChange(MergeKind.SET, delta=SetDelta(dict(add or {}), dict(remove or {})))


def op(entity: str, record_id: str, changes: Mapping[str, FieldChange], **kw: object) -> Op:
    return Op(entity, record_id, "node-a", 7, 1_000, dict(changes), **kw)  # type: ignore[arg-type]


def policy(**forms: Form) -> ResidencyPolicy:
    """DEFAULT_FORMS with some classes changed (bypassing check_supported on purpose)."""
    return ResidencyPolicy({**DEFAULT_FORMS, **{DataClass(k): v for k, v in forms.items()}})


@dataclass
class FakeSeal:
    """Records every call; answers a readable fake envelope, or None for the key ids in ``withhold``."""

    calls: list[tuple[str, str, str, str, StorageValue]] = field(default_factory=list)
    withhold: frozenset[str] = frozenset()

    def __call__(
        self, entity: str, record_id: str, name: str, key_id: str, value: StorageValue
    ) -> str | None:
        self.calls.append((entity, record_id, name, key_id, value))
        return None if key_id in self.withhold else f"{SEALED}{key_id}|{value!r}>"


@dataclass
class FakePseudonymise:
    calls: list[tuple[str, StorageValue]] = field(default_factory=list)

    def __call__(self, scope: str, value: StorageValue) -> str:
        self.calls.append((scope, value))
        return f"{TOKEN}{scope}|{value!r}>"


def is_fake_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED)


def is_fake_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN)


def check(o: Op, p: ResidencyPolicy) -> list[FormViolation]:
    return check_op(o, p, is_sealed=is_fake_sealed, is_pseudonym=is_fake_token)


# --- the policy ----------------------------------------------------------------------------------


def test_default_forms_seal_personal_data_and_keep_media_home() -> None:
    assert dict(DEFAULT_FORMS) == {
        DataClass.PUBLIC: Form.PLAIN,
        DataClass.OPERATIONAL: Form.PLAIN,
        DataClass.PERSONAL: Form.SEALED,
        DataClass.MEDIA: Form.LOCAL,
    }
    p = ResidencyPolicy()
    assert p.version == 1
    assert p.forms == DEFAULT_FORMS
    assert p.form(DataClass.PERSONAL) is Form.SEALED
    assert p.field_form(TICKET, "subject") is Form.SEALED
    assert p.field_form(TICKET, "priority") is Form.PLAIN


def test_a_policy_must_name_a_form_for_every_class() -> None:
    with pytest.raises(PolicyError, match="no form for data class") as info:
        ResidencyPolicy({DataClass.PUBLIC: Form.PLAIN, DataClass.PERSONAL: Form.SEALED})
    assert info.value.where == "forms"
    assert "operational" in info.value.problem
    assert "media" in info.value.problem
    assert "public" not in info.value.problem


@pytest.mark.parametrize("version", [0, -3])
def test_a_policy_version_starts_at_one(version: int) -> None:
    with pytest.raises(PolicyError, match=f"got {version}") as info:
        ResidencyPolicy(DEFAULT_FORMS, version)
    assert info.value.where == "version"
    assert str(info.value).startswith("residency policy version: ")


def test_a_policy_does_not_follow_later_changes_to_the_mapping_it_was_given() -> None:
    forms = dict(DEFAULT_FORMS)
    p = ResidencyPolicy(forms)
    forms[DataClass.PERSONAL] = Form.PLAIN
    assert p.form(DataClass.PERSONAL) is Form.SEALED
    with pytest.raises(TypeError):
        p.forms[DataClass.PERSONAL] = Form.PLAIN  # type: ignore[index]


def test_from_dict_overrides_named_classes_and_keeps_the_others() -> None:
    p = ResidencyPolicy.from_dict({"personal": "pseudonymised", "media": "plain"}, version=4)
    assert p.version == 4
    assert p.as_dict() == {
        "public": "plain",
        "operational": "plain",
        "personal": "pseudonymised",
        "media": "plain",
    }
    assert ResidencyPolicy.from_dict({}) == ResidencyPolicy()


def test_from_dict_names_an_unknown_class_and_the_choices() -> None:
    with pytest.raises(PolicyError) as info:
        ResidencyPolicy.from_dict({"secret": "plain"}, where="config.residency")
    assert info.value.where == "config.residency.secret"
    assert "unknown data class" in info.value.problem
    for c in DataClass:
        assert c.value in info.value.problem


def test_from_dict_names_an_unknown_form_and_the_choices() -> None:
    with pytest.raises(PolicyError) as info:
        ResidencyPolicy.from_dict({"personal": "encrypted"})
    assert info.value.where == "residency.personal"
    assert "'encrypted'" in info.value.problem
    for f in Form:
        assert f.value in info.value.problem
    assert str(info.value) == f"residency policy residency.personal: {info.value.problem}"


def test_from_dict_refuses_to_seal_the_class_that_holds_set_fields() -> None:
    with pytest.raises(PolicyError) as info:
        ResidencyPolicy.from_dict({"operational": "sealed"})
    assert info.value.where == "operational"
    assert "ticket.call_ids is a set field and cannot be sealed" in info.value.problem
    assert "pseudonymised or local" in info.value.problem
    for form in ("plain", "pseudonymised", "local"):
        assert ResidencyPolicy.from_dict({"operational": form}).form(DataClass.OPERATIONAL) == form


def test_check_supported_looks_only_at_set_and_counter_fields() -> None:
    sealed_all = ResidencyPolicy(dict.fromkeys(DataClass, Form.SEALED))
    registers_only = Entity(
        name="note",
        table="notes",
        fields=(Field("id", Kind.ID, DataClass.OPERATIONAL), Field("text", Kind.TEXT, DataClass.PERSONAL)),
    )
    sealed_all.check_supported([registers_only])  # no set field: anything may be sealed
    with_personal_set = Entity(
        name="note",
        table="notes",
        fields=(
            Field("id", Kind.ID, DataClass.OPERATIONAL),
            Field("labels", Kind.TEXT_SET, DataClass.PERSONAL, merge=MergeKind.SET),
        ),
    )
    ResidencyPolicy().check_supported([registers_only])
    with pytest.raises(PolicyError, match=r"note\.labels is a set field") as info:
        ResidencyPolicy().check_supported([with_personal_set])
    assert info.value.where == "personal"
    ResidencyPolicy.from_dict({"personal": "pseudonymised"}).check_supported([with_personal_set])


def test_same_forms_ignores_the_version() -> None:
    a = ResidencyPolicy(DEFAULT_FORMS, 1)
    assert a.same_forms(ResidencyPolicy(DEFAULT_FORMS, 9))
    assert not a.same_forms(policy(personal=Form.LOCAL))
    assert list(a.as_dict()) == [c.value for c in DataClass]


def test_entity_forms_cover_every_declared_field() -> None:
    forms = entity_forms(policy(personal=Form.LOCAL))
    assert set(forms) == {e.name for e in ENTITIES}
    for e in ENTITIES:
        assert set(forms[e.name]) == {f.name for f in e.fields}
    assert forms["ticket"]["subject"] is Form.LOCAL
    assert forms["customer"]["phone"] is Form.LOCAL
    assert forms["call_record"]["transferred_to"] is Form.LOCAL
    assert forms["ticket"]["tags"] is Form.PLAIN
    assert entity_forms(ResidencyPolicy())["comment"]["body"] is Form.SEALED


# --- keys and scopes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "record_id", "customer_id", "key_id"),
    [
        ("customer", "C1", None, "customer:C1"),
        ("customer", "C1", "C2", "customer:C1"),  # a customer's own key, whatever the map says
        ("ticket", "T1", "C1", "customer:C1"),
        ("comment", "K1", "C1", "customer:C1"),
        ("ticket", "T1", None, "ticket:T1"),
        ("ticket", "T1", "", "ticket:T1"),
        ("call_record", "R1", None, "call_record:R1"),
    ],
)
def test_key_id_for(entity: str, record_id: str, customer_id: str | None, key_id: str) -> None:
    assert key_id_for(entity, record_id, customer_id) == key_id


def test_pseudonym_scope_is_per_field() -> None:
    assert pseudonym_scope("customer", "phone") == "customer.phone"
    assert pseudonym_scope("customer", "phone") != pseudonym_scope("customer", "email")


# --- egress --------------------------------------------------------------------------------------


def test_egress_keeps_plain_seals_personal_and_tallies() -> None:
    original = op(
        "ticket",
        "T1",
        {"priority": reg("P1"), "subject": reg("no signal"), "tags": delta({"vip": V})},
    )
    seal, pseud, tally = FakeSeal(), FakePseudonymise(), EgressTally()
    out = egress_op(original, ResidencyPolicy(), seal=seal, pseudonymise=pseud, customer_id="C9", tally=tally)

    assert (out.entity, out.record_id, out.origin, out.seq, out.hlc) == ("ticket", "T1", "node-a", 7, 1_000)
    assert out.changes["priority"] is original.changes["priority"]
    assert out.changes["tags"] is original.changes["tags"]
    assert out.changes["subject"] == reg("SEALED<customer:C9|'no signal'>")
    assert seal.calls == [("ticket", "T1", "subject", "customer:C9", "no signal")]
    assert pseud.calls == []
    assert original.changes["subject"] == reg("no signal")  # the input op is untouched
    assert tally.as_dict() == {
        "ops": 1,
        "records": {"ticket": 1},
        "values": {"operational:plain": 2, "personal:sealed": 1},
        "dropped_local": 0,
    }
    assert check(out, ResidencyPolicy()) == []


def test_sealing_keeps_the_version_and_passes_none_without_sealing() -> None:
    later = Version(5_000, "node-b")
    seal = FakeSeal()
    out = egress_op(
        op("customer", "C1", {"name": reg("Ada", later), "email": reg(None, later)}),
        ResidencyPolicy(),
        seal=seal,
        pseudonymise=FakePseudonymise(),
        customer_id=None,
    )
    assert out.changes["name"].register == Register("SEALED<customer:C1|'Ada'>", later)
    assert out.changes["email"].register == Register(None, later)
    assert [c[2] for c in seal.calls] == ["name"]


def test_a_seal_answering_none_withholds_the_value() -> None:
    seal = FakeSeal(withhold=frozenset({"customer:C1"}))
    tally = EgressTally()
    out = egress_op(
        op("ticket", "T1", {"subject": reg("mine"), "description": reg("also mine")}),
        ResidencyPolicy(),
        seal=seal,
        pseudonymise=FakePseudonymise(),
        customer_id="C1",
        tally=tally,
    )
    assert out.changes["subject"] == reg(None)
    assert out.changes["description"] == reg(None)
    assert len(seal.calls) == 2
    assert tally.values == {("personal", "sealed"): 2}
    assert check(out, ResidencyPolicy()) == []


def test_pseudonymising_maps_register_values_and_both_sides_of_set_deltas() -> None:
    old = Version(10, "node-z")
    p = policy(personal=Form.PSEUDONYMISED, operational=Form.PSEUDONYMISED)
    pseud = FakePseudonymise()
    out = egress_op(
        op(
            "ticket",
            "T1",
            {
                "subject": reg("x"),
                "tier": reg(2),
                "tags": delta({"a": V, "b": V}, {"c": frozenset({old}), "d": frozenset()}),
                "description": reg(None),
            },
        ),
        p,
        seal=FakeSeal(),
        pseudonymise=pseud,
        customer_id=None,
    )
    assert out.changes["subject"] == reg("TOKEN<ticket.subject|'x'>")
    assert out.changes["tier"] == reg("TOKEN<ticket.tier|2>")
    assert out.changes["description"] == reg(None)
    tags = out.changes["tags"].delta
    assert tags is not None
    assert dict(tags.add) == {"TOKEN<ticket.tags|'a'>": V, "TOKEN<ticket.tags|'b'>": V}
    assert dict(tags.remove) == {
        "TOKEN<ticket.tags|'c'>": frozenset({old}),
        "TOKEN<ticket.tags|'d'>": frozenset(),
    }
    assert ("ticket.tags", "c") in pseud.calls
    assert all(value is not None for _, value in pseud.calls)
    assert check(out, p) == []


def test_local_and_undeclared_fields_are_dropped() -> None:
    tally = EgressTally()
    p = policy(personal=Form.LOCAL)
    out = egress_op(
        op(
            "customer",
            "C1",
            {"name": reg("Ada"), "phone": reg(None), "vip_tier": reg("gold"), "shoe_size": reg(42)},
        ),
        p,
        seal=FakeSeal(),
        pseudonymise=FakePseudonymise(),
        customer_id=None,
        tally=tally,
    )
    assert set(out.changes) == {"vip_tier"}
    assert tally.dropped_local == 2
    assert tally.values == {("personal", "local"): 2, ("operational", "plain"): 1}
    assert tally.records == {"customer": 1}
    assert check(out, p) == []


def test_an_op_of_an_unknown_entity_leaves_without_fields_but_keeps_its_delete() -> None:
    tally = EgressTally()
    out = egress_op(
        op("gadget", "G1", {"name": reg("secret")}, delete=True),
        ResidencyPolicy(),
        seal=FakeSeal(),
        pseudonymise=FakePseudonymise(),
        customer_id=None,
        tally=tally,
    )
    assert out.changes == {}
    assert out.delete
    assert tally.as_dict() == {"ops": 1, "records": {"gadget": 1}, "values": {}, "dropped_local": 0}


def test_the_tally_adds_up_over_ops() -> None:
    tally = EgressTally()
    for record_id in ("C1", "C2"):
        egress_op(
            op("customer", record_id, {"name": reg("n"), "language": reg("en")}),
            ResidencyPolicy(),
            seal=FakeSeal(),
            pseudonymise=FakePseudonymise(),
            customer_id=None,
            tally=tally,
        )
    egress_op(
        op("comment", "K1", {"body": reg("hi"), "internal": reg(0)}),
        ResidencyPolicy(),
        seal=FakeSeal(),
        pseudonymise=FakePseudonymise(),
        customer_id="C1",
        tally=tally,
    )
    assert tally.as_dict() == {
        "ops": 3,
        "records": {"comment": 1, "customer": 2},
        "values": {"operational:plain": 3, "personal:sealed": 3},
        "dropped_local": 0,
    }


def test_egress_refuses_to_seal_a_set_change_under_an_unsupported_policy() -> None:
    unsupported = policy(operational=Form.SEALED)  # the constructor does not run check_supported
    with pytest.raises(PolicyError, match="a set change cannot be sealed"):
        egress_op(
            op("ticket", "T1", {"tags": delta({"a": V})}),
            unsupported,
            seal=FakeSeal(),
            pseudonymise=FakePseudonymise(),
            customer_id=None,
        )


def test_egress_refuses_to_pseudonymise_a_counter_change() -> None:
    # No declared field is a counter yet; a change of the wrong kind under a declared name reaches the branch.
    with pytest.raises(PolicyError, match="a counter change cannot be pseudonymised"):
        egress_op(
            op("ticket", "T1", {"subject": FieldChange(MergeKind.COUNTER, counter=Counter({"n": 1}))}),
            policy(personal=Form.PSEUDONYMISED),
            seal=FakeSeal(),
            pseudonymise=FakePseudonymise(),
            customer_id=None,
        )


# --- the hub's check -----------------------------------------------------------------------------


def test_plain_fields_pass_whatever_they_hold() -> None:
    p = policy(personal=Form.PLAIN)
    assert (
        check(op("ticket", "T1", {"subject": reg("readable"), "tags": delta({"x": V}), "tier": reg(1)}), p)
        == []
    )


def test_a_local_field_that_arrived_is_a_violation_even_when_empty() -> None:
    p = policy(personal=Form.LOCAL)
    problems = check(
        op("customer", "C1", {"name": reg(None), "phone": reg("+4930123456"), "language": reg("de")}), p
    )
    assert [(v.field, v.required, v.problem) for v in problems] == [
        ("name", Form.LOCAL, "a local field left its region"),
        ("phone", Form.LOCAL, "a local field left its region"),
    ]


def test_a_sealed_field_needs_an_envelope_or_none() -> None:
    p = ResidencyPolicy()
    assert check(op("ticket", "T1", {"subject": reg(None), "description": reg(SEALED + "x>")}), p) == []
    problems = check(op("ticket", "T1", {"subject": reg("plain text"), "description": reg(12)}), p)
    assert [v.field for v in problems] == ["subject", "description"]
    v = problems[0]
    assert v == FormViolation(
        "ticket", "T1", "subject", "personal", Form.SEALED, "the value is not a sealed envelope"
    )
    assert str(v) == "ticket.subject of T1 (personal, sealed): the value is not a sealed envelope"


def test_a_pseudonymised_field_needs_tokens_in_values_and_set_elements() -> None:
    p = policy(operational=Form.PSEUDONYMISED)
    good = TOKEN + "a>"
    assert (
        check(op("ticket", "T1", {"tags": delta({good: V}, {good: frozenset({V})}), "tier": reg(None)}), p)
        == []
    )
    problems = check(
        op(
            "ticket",
            "T1",
            {
                "tags": delta({good: V}, {"plain-remove": frozenset({V})}),
                "call_ids": delta({"plain-add": V}),
                "tier": reg(1),
            },
        ),
        p,
    )
    assert {v.field: v.problem for v in problems} == {
        "tags": "a set element is not a pseudonym token",
        "call_ids": "a set element is not a pseudonym token",
        "tier": "the value is not a pseudonym token",
    }
    assert all(v.required is Form.PSEUDONYMISED and v.data_class == "operational" for v in problems)


def test_the_check_skips_unknown_entities_and_undeclared_fields() -> None:
    p = policy(personal=Form.LOCAL)
    assert check(op("gadget", "G1", {"name": reg("x")}), p) == []
    assert check(op("customer", "C1", {"shoe_size": reg(42)}), p) == []


def test_the_check_refuses_a_counter_change_in_a_sealed_field() -> None:
    problems = check(
        op("ticket", "T1", {"subject": FieldChange(MergeKind.COUNTER, counter=Counter({"n": 1}))}),
        ResidencyPolicy(),
    )
    assert [v.problem for v in problems] == ["a counter change cannot be sealed"]


def test_the_check_uses_the_callables_it_is_given() -> None:
    seen: list[object] = []

    def is_sealed(value: object) -> bool:
        seen.append(value)
        return True

    assert (
        check_op(
            op("ticket", "T1", {"subject": reg("anything")}),
            ResidencyPolicy(),
            is_sealed=is_sealed,
            is_pseudonym=is_fake_token,
        )
        == []
    )
    assert seen == ["anything"]


# --- central ops' floor ---------------------------------------------------------------------------


def test_a_policy_meeting_the_floor_has_no_breach() -> None:
    floor = {DataClass.PERSONAL: Form.SEALED, DataClass.MEDIA: Form.LOCAL}
    assert below_floor(ResidencyPolicy(), floor) == []
    stronger = ResidencyPolicy.from_dict({"personal": "local", "operational": "pseudonymised"})
    assert below_floor(stronger, floor) == []


def test_every_class_below_the_floor_is_named_with_both_forms() -> None:
    weak = ResidencyPolicy.from_dict({"personal": "pseudonymised", "media": "sealed"})
    floor = {DataClass.PERSONAL: Form.SEALED, DataClass.MEDIA: Form.LOCAL, DataClass.PUBLIC: Form.PLAIN}
    breaches = below_floor(weak, floor)
    assert [(b.data_class, b.form, b.floor) for b in breaches] == [
        (DataClass.MEDIA, Form.SEALED, Form.LOCAL),
        (DataClass.PERSONAL, Form.PSEUDONYMISED, Form.SEALED),
    ]
    assert str(breaches[1]) == "personal is pseudonymised, the region requires at least sealed"


def test_form_strength_orders_what_the_hub_can_learn() -> None:
    assert sorted(Form, key=FORM_STRENGTH.__getitem__) == [
        Form.PLAIN,
        Form.PSEUDONYMISED,
        Form.SEALED,
        Form.LOCAL,
    ]
