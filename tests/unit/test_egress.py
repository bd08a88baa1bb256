"""The node's egress with a real key store and audit log: sealing per customer, audit entries, erasure."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_node.egress import Egress, PreparedOps, adopt_policy, policy_meta
from security.audit_chain import thaw_body
from security.audit_log import AuditLog
from security.envelope import FieldContext, SealedValue, Sealer, UnsealError, looks_sealed
from security.frames import verify_frame_with_key
from security.identity import NodeIdentity
from security.keys import KeyEvent, KeyShreddedError, keystore_path
from security.keystore import KeyStore
from security.pseudonym import looks_pseudonym, pseudonymise
from security.replay import ReplayGuard
from sync.crdt import FieldChange, Op, Register, SetDelta, StorageValue, Version
from sync.entity import DataClass, MergeKind
from sync.residency import DEFAULT_FORMS, Form, PolicyError, ResidencyPolicy, check_op, entity_forms
from sync.subjects import ops_subject

REGION = "eu"
NODE = "node-1"
V = Version(1_000, NODE)


def reg(value: StorageValue) -> FieldChange:
    return FieldChange(MergeKind.REGISTER, register=Register(value, V))


def op(entity: str, record_id: str, seq: int, **fields: StorageValue | FieldChange) -> Op:
    changes = {k: v if isinstance(v, FieldChange) else reg(v) for k, v in fields.items()}
    return Op(entity, record_id, NODE, seq, 1_000 + seq, changes)


def forms(**changed: Form) -> ResidencyPolicy:
    return ResidencyPolicy({**DEFAULT_FORMS, **{DataClass(k): v for k, v in changed.items()}})


@dataclass
class Node:
    identity: NodeIdentity
    keys: KeyStore
    audit: AuditLog
    egress: Egress

    def use(self, policy: ResidencyPolicy) -> Egress:
        """Replace the egress by one under ``policy`` (same keys and log)."""
        self.egress = Egress(
            region=REGION,
            node_id=NODE,
            identity=self.identity,
            keys=self.keys,
            audit=self.audit,
            policy=policy,
        )
        return self.egress

    def entries(self, *kinds: str) -> list[tuple[str, dict[str, object]]]:
        return [(e.kind, thaw_body(e.body)) for e in self.audit.entries(kinds=kinds or None)]

    def open(self, entity: str, record_id: str, name: str, sealed: StorageValue) -> StorageValue:
        assert isinstance(sealed, str)
        return Sealer(self.keys, REGION).open(FieldContext(REGION, entity, record_id, name), sealed)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    identity = NodeIdentity.generate()
    audit = AuditLog(
        tmp_path / "audit" / "audit.db",
        origin=NODE,
        region=REGION,
        sign=identity.sign,
        fingerprint=identity.fingerprint,
    )
    audit.open()
    pending: list[KeyEvent] = []
    sink: list[Callable[[KeyEvent], None]] = [pending.append]
    keys = KeyStore(keystore_path(tmp_path), region=REGION, on_event=lambda event: sink[0](event))
    try:
        keys.open()
        egress = Egress(
            region=REGION, node_id=NODE, identity=identity, keys=keys, audit=audit, policy=ResidencyPolicy()
        )
        n = Node(identity, keys, audit, egress)
        for event in pending:  # as node_security does: keys made on first open reach the log too
            egress.on_key_event(event)
        sink[0] = lambda event: n.egress.on_key_event(event)  # the current egress, after Node.use too
        yield n
    finally:
        keys.close()
        audit.close()


def key_id_of(sealed: StorageValue) -> str:
    return SealedValue.parse(sealed).key_id


def value(prepared: PreparedOps, index: int, name: str) -> StorageValue:
    register = prepared.ops[index].changes[name].register
    assert register is not None
    return register.value


# --- the policy in force --------------------------------------------------------------------------


def test_the_first_run_adopts_version_one_whatever_the_config_says() -> None:
    configured = ResidencyPolicy(forms(personal=Form.PSEUDONYMISED).forms, 7)
    policy, change = adopt_policy(None, configured)
    assert policy.version == 1
    assert policy.same_forms(configured)
    assert change == {"version": 1, "forms": configured.as_dict(), "previous": None}


def test_unchanged_forms_keep_the_stored_version_and_audit_nothing() -> None:
    stored = policy_meta(ResidencyPolicy(DEFAULT_FORMS, 3))
    policy, change = adopt_policy(stored, ResidencyPolicy())
    assert (policy.version, change) == (3, None)
    assert policy.same_forms(ResidencyPolicy())


def test_changed_forms_get_the_next_version_and_name_the_previous_forms() -> None:
    stored = policy_meta(ResidencyPolicy(DEFAULT_FORMS, 3))
    configured = forms(personal=Form.LOCAL)
    policy, change = adopt_policy(stored, configured)
    assert policy.version == 4
    assert policy.same_forms(configured)
    assert change == {"version": 4, "forms": configured.as_dict(), "previous": ResidencyPolicy().as_dict()}
    assert adopt_policy(policy_meta(policy), configured) == (policy, None)  # and it sticks


def test_policy_meta_round_trips() -> None:
    p = ResidencyPolicy(forms(media=Form.PLAIN, operational=Form.PSEUDONYMISED).forms, 12)
    assert json.loads(policy_meta(p)) == {"version": 12, "forms": p.as_dict()}
    assert adopt_policy(policy_meta(p), p) == (p, None)


def test_a_stored_policy_that_no_longer_reads_is_refused() -> None:
    stored = json.dumps({"version": 2, "forms": {"personal": "shredded"}})
    with pytest.raises(PolicyError, match="unknown form 'shredded'"):
        adopt_policy(stored, ResidencyPolicy())


# --- prepare --------------------------------------------------------------------------------------


def test_personal_fields_are_sealed_under_their_customers_key_and_open_again(node: Node) -> None:
    ops = [
        op("ticket", "T1", 1, subject="no signal", priority="P1", description=None),
        op("comment", "K1", 2, body="called back", internal=0),
        op("customer", "C1", 3, name="Ada", phone="+4930123456", language="en"),
        op("ticket", "T2", 4, subject="walk-in", tags=FieldChange(MergeKind.SET, delta=SetDelta({"vip": V}))),
    ]
    customers = {("ticket", "T1"): "C1", ("comment", "K1"): "C1", ("customer", "C1"): None}
    prepared = node.egress.prepare(ops, customers)

    assert prepared.withheld == 0
    assert [(o.entity, o.record_id, o.seq) for o in prepared.ops] == [
        (o.entity, o.record_id, o.seq) for o in ops
    ]
    sealed = {
        (0, "subject", "customer:C1", "no signal"),
        (1, "body", "customer:C1", "called back"),
        (2, "name", "customer:C1", "Ada"),
        (2, "phone", "customer:C1", "+4930123456"),
        (3, "subject", "ticket:T2", "walk-in"),  # no known customer: the record's own key
    }
    for index, name, key_id, original in sealed:
        out = value(prepared, index, name)
        assert isinstance(out, str)
        assert out.startswith("ecs1.")
        assert key_id_of(out) == key_id
        assert node.open(ops[index].entity, ops[index].record_id, name, out) == original
    assert value(prepared, 0, "description") is None
    assert value(prepared, 0, "priority") == "P1"
    assert value(prepared, 1, "internal") == 0
    assert value(prepared, 2, "language") == "en"
    assert prepared.ops[3].changes["tags"] == ops[3].changes["tags"]
    assert prepared.tally.as_dict() == {
        "ops": 4,
        "records": {"comment": 1, "customer": 1, "ticket": 2},
        "values": {"operational:plain": 4, "personal:sealed": 6},
        "dropped_local": 0,
    }


def test_a_sealed_value_does_not_open_in_another_place(node: Node) -> None:
    prepared = node.egress.prepare([op("customer", "C1", 1, name="Ada")], {})
    sealed = value(prepared, 0, "name")
    assert node.open("customer", "C1", "name", sealed) == "Ada"
    with pytest.raises(UnsealError):
        node.open("customer", "C2", "name", sealed)


def test_pseudonymised_fields_leave_as_the_regions_tokens(node: Node) -> None:
    egress = node.use(forms(personal=Form.PSEUDONYMISED))
    prepared = egress.prepare(
        [
            op("customer", "C1", 1, phone="+4930123456"),
            op("customer", "C2", 2, phone="+4930123456", email=None),
        ],
        {},
    )
    token = value(prepared, 0, "phone")
    assert looks_pseudonym(token)
    assert token == pseudonymise(node.keys.pseudonym_key(), "customer.phone", "+4930123456")
    assert value(prepared, 1, "phone") == token  # the hub can count one phone number twice
    assert value(prepared, 1, "email") is None
    assert prepared.tally.values == {("personal", "pseudonymised"): 3}
    assert node.entries("data_key_created") == []  # nothing was sealed, so no data key was made


def test_local_fields_stay_home(node: Node) -> None:
    egress = node.use(forms(personal=Form.LOCAL))
    prepared = egress.prepare([op("customer", "C1", 1, name="Ada", language="de")], {})
    assert set(prepared.ops[0].changes) == {"language"}
    assert prepared.tally.dropped_local == 1
    assert egress.forms == entity_forms(egress.policy)
    assert egress.forms["customer"]["name"] is Form.LOCAL


def test_the_egress_output_passes_the_hubs_check(node: Node) -> None:
    for policy in (ResidencyPolicy(), forms(personal=Form.PSEUDONYMISED, operational=Form.PSEUDONYMISED)):
        egress = node.use(policy)
        prepared = egress.prepare(
            [
                op(
                    "ticket",
                    "T1",
                    1,
                    subject="s",
                    tier=2,
                    tags=FieldChange(MergeKind.SET, delta=SetDelta({"a": V})),
                ),
                op("call_record", "R1", 2, transferred_to="+4930999", wait_s=1.5),
            ],
            {("ticket", "T1"): "C1"},
        )
        for o in prepared.ops:
            assert check_op(o, policy, is_sealed=looks_sealed, is_pseudonym=looks_pseudonym) == []


# --- the audit log --------------------------------------------------------------------------------


def test_record_batch_appends_the_tally_to_the_audit_log(node: Node) -> None:
    prepared = node.egress.prepare(
        [op("ticket", "T1", 7, subject="x", priority="P2"), op("ticket", "T1", 8, priority="P3")],
        {("ticket", "T1"): "C1"},
    )
    node.egress.record_batch(7, 8, prepared, size_bytes=321)
    assert node.entries("egress_batch") == [
        (
            "egress_batch",
            {
                "first_seq": 7,
                "last_seq": 8,
                "policy_version": 1,
                "bytes": 321,
                "withheld": 0,
                "ops": 2,
                "records": {"ticket": 2},
                "values": {"operational:plain": 2, "personal:sealed": 1},
                "dropped_local": 0,
            },
        )
    ]


def test_every_key_event_reaches_the_audit_log_without_key_bytes(node: Node) -> None:
    node.egress.prepare([op("customer", "C1", 1, name="Ada"), op("customer", "C1", 2, name="Ada L.")], {})
    node.keys.rotate_kek()
    node.keys.shred("customer:C1", reason="erasure request 42")
    node.keys.shred("customer:C9", reason="never had a key")
    kinds = [kind for kind, _ in node.entries()]
    assert kinds == [
        "kek_created",
        "pseudonym_key_created",
        "data_key_created",
        "kek_rotated",
        "data_key_shredded",
        "data_key_shredded",
    ]
    bodies = dict(node.entries("data_key_created", "kek_rotated"))
    assert bodies["data_key_created"] == {"key_id": "customer:C1", "version": 1}
    assert bodies["kek_rotated"] == {
        "key_id": "kek",
        "version": 2,
        "old_version": 1,
        "rewrapped": 1,
        "by": "unknown",
    }
    shredded = [body for _, body in node.entries("data_key_shredded")]
    assert shredded == [
        {"key_id": "customer:C1", "version": 1, "reason": "erasure request 42", "existed": True},
        {"key_id": "customer:C9", "version": 0, "reason": "never had a key", "existed": False},
    ]
    dump = json.dumps([body for _, body in node.entries()])
    for key in node.keys.key_material_for_audit():
        assert key.hex() not in dump
        assert base64.b64encode(key).decode() not in dump


def test_on_key_event_writes_odd_details_as_text(node: Node) -> None:
    node.egress.on_key_event(KeyEvent("data_key_created", "ticket:T1", 1, 5, {"at": Path("/x"), "n": 3}))
    assert node.entries("data_key_created")[-1][1] == {
        "key_id": "ticket:T1",
        "version": 1,
        "at": "/x",
        "n": 3,
    }


# --- erasure --------------------------------------------------------------------------------------


def test_values_of_an_erased_customer_are_withheld_not_resealed(node: Node) -> None:
    node.egress.prepare([op("customer", "C1", 1, name="Ada")], {})
    node.keys.shred("customer:C1", reason="erasure")
    ops = [
        op("ticket", "T1", 2, subject="again", description="more", priority="P1"),
        op("customer", "C1", 3, name="Ada", language="en"),
        op("customer", "C2", 4, name="Bob"),
    ]
    prepared = node.egress.prepare(ops, {("ticket", "T1"): "C1"})
    assert prepared.withheld == 3
    assert value(prepared, 0, "subject") is None
    assert value(prepared, 0, "description") is None
    assert value(prepared, 0, "priority") == "P1"
    assert value(prepared, 1, "name") is None
    assert value(prepared, 1, "language") == "en"
    assert key_id_of(value(prepared, 2, "name")) == "customer:C2"  # other customers are unaffected
    assert prepared.tally.values[("personal", "sealed")] == 4  # withheld values still count as sent sealed
    with pytest.raises(KeyShreddedError):
        node.keys.existing_data_key("customer:C1")  # no fresh key was made for the erased customer

    again = node.egress.prepare([op("comment", "K1", 5, body="hello")], {("comment", "K1"): "C1"})
    assert again.withheld == 1
    assert node.egress.withheld == 4
    node.egress.record_batch(2, 4, prepared, size_bytes=10)
    assert node.entries("egress_batch")[-1][1]["withheld"] == 3


# --- signing --------------------------------------------------------------------------------------


def test_frames_are_signed_with_the_node_key_and_the_policy_version(node: Node) -> None:
    egress = node.use(ResidencyPolicy(DEFAULT_FORMS, 5))
    subject = ops_subject(REGION, NODE)
    frame = egress.sign(subject, "ops", b"payload", now_ms=1_700_000_000_000)
    verified = verify_frame_with_key(
        frame,
        subject,
        public_key=node.identity.public_key,
        expected_kind="ops",
        subject_region=REGION,
        now_ms=1_700_000_000_000,
        guard=ReplayGuard(),
    )
    assert (verified.node_id, verified.region, verified.policy_version, verified.payload) == (
        NODE,
        REGION,
        5,
        b"payload",
    )
