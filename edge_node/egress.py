"""The node's egress: what leaves the region, in which form, signed, and written to the audit log.

Theory of operation
-------------------
Nothing reaches the hub except through :class:`Egress`. For a run of change
log operations it

1. rewrites each operation by the region's residency policy
   (:func:`sync.residency.egress_op`): plain fields as they are, personal
   fields sealed under the data key of the customer they belong to, tokens for
   pseudonymised fields, local fields dropped;
2. signs every outgoing message with the node's Ed25519 key
   (:func:`security.frames.sign_frame`), binding it to its subject, region,
   time, a fresh nonce and the policy version it was made under;
3. appends an ``egress_batch`` entry to the hash-chained audit log (sequence
   range, operations, records by entity, values by data class and form,
   policy version, bytes) *before* the batch is published, so the log never
   shows less than what may have left.

A value whose customer was erased (its key shredded) is withheld (sent as
empty) rather than sealed under a fresh key: an erased subject's data must
not become readable again, and a shredded id never gets a new key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from security.audit_log import AuditLog
from security.envelope import FieldContext, Sealer
from security.frames import sign_frame
from security.identity import NodeIdentity
from security.keys import KeyEvent, KeyShreddedError
from security.keystore import KeyStore
from security.pseudonym import pseudonymise
from sync.crdt import Op, StorageValue
from sync.entities import BY_NAME
from sync.residency import EgressTally, ResidencyPolicy, egress_op, entity_forms, key_id_for
from sync.residency import Form as Form

log = logging.getLogger(__name__)

POLICY_META_KEY = "residency_policy"


@dataclass(frozen=True, slots=True)
class PreparedOps:
    """Operations in their egress form, with what left in which form."""

    ops: list[Op]
    tally: EgressTally
    withheld: int


class Egress:
    """Seal, sign and audit everything the node sends to the hub."""

    def __init__(
        self,
        *,
        region: str,
        node_id: str,
        identity: NodeIdentity,
        keys: KeyStore,
        audit: AuditLog,
        policy: ResidencyPolicy,
    ) -> None:
        self.region = region
        self.node_id = node_id
        self.identity = identity
        self.keys = keys
        self.audit = audit
        self.policy = policy
        self._sealer = Sealer(keys, region)
        self.withheld = 0

    @property
    def forms(self) -> dict[str, dict[str, Form]]:
        return entity_forms(self.policy)

    def prepare(self, ops: Sequence[Op], customers: Mapping[tuple[str, str], str | None]) -> PreparedOps:
        """The egress form of ``ops``; ``customers`` maps (entity, record id) to its customer, if known."""
        tally = EgressTally()
        withheld = 0
        pseudonym_key = self.keys.pseudonym_key()
        # every data key this run needs, made in one key-store commit (new customers and records)
        self.keys.data_keys(self._key_ids(ops, customers))

        def seal(entity: str, record_id: str, field: str, key_id: str, value: StorageValue) -> str | None:
            nonlocal withheld
            try:
                return self._sealer.seal(FieldContext(self.region, entity, record_id, field), key_id, value)
            except KeyShreddedError:
                withheld += 1
                return None

        out = []
        for op in ops:
            prepared = egress_op(
                op,
                self.policy,
                seal=seal,
                pseudonymise=lambda scope, value: str(pseudonymise(pseudonym_key, scope, value)),
                customer_id=customers.get((op.entity, op.record_id)),
                tally=tally,
            )
            out.append(prepared)
        if withheld:
            self.withheld += withheld
            log.warning("withheld %d value(s) of erased customers from the hub", withheld)
        return PreparedOps(out, tally, withheld)

    def _key_ids(self, ops: Sequence[Op], customers: Mapping[tuple[str, str], str | None]) -> set[str]:
        ids = set()
        for op in ops:
            entity = BY_NAME.get(op.entity)
            if entity is None:
                continue
            for name, change in op.changes.items():
                if (
                    entity.has(name)
                    and self.policy.field_form(entity, name) is Form.SEALED
                    and change.register is not None
                    and change.register.value is not None
                ):
                    ids.add(key_id_for(op.entity, op.record_id, customers.get((op.entity, op.record_id))))
                    break
        return ids

    def sign(self, subject: str, kind: str, payload: bytes, now_ms: int) -> bytes:
        """A signed frame of ``payload`` for ``subject``."""
        return sign_frame(
            self.identity.sign,
            self.identity.fingerprint,
            subject,
            kind=kind,
            node_id=self.node_id,
            region=self.region,
            payload=payload,
            now_ms=now_ms,
            policy_version=self.policy.version,
        )

    def record_batch(self, first_seq: int, last_seq: int, prepared: PreparedOps, *, size_bytes: int) -> None:
        """Append the ``egress_batch`` audit entry of operations about to be published."""
        body: dict[str, object] = {
            "first_seq": first_seq,
            "last_seq": last_seq,
            "policy_version": self.policy.version,
            "bytes": size_bytes,
            "withheld": prepared.withheld,
            **prepared.tally.as_dict(),
        }
        self.audit.append("egress_batch", body)

    def key_inventory(self) -> dict[str, object]:
        """The key inventory as the hub and reports see it: ids, versions, fingerprints; no key bytes."""
        return _jsonable_tree(dataclasses.asdict(self.keys.inventory()))

    def on_key_event(self, event: KeyEvent) -> None:
        """Every key event goes to the audit log (key ids and versions, never key bytes)."""
        self.on_key_events([event])

    def on_key_events(self, events: Sequence[KeyEvent]) -> None:
        """The events of one key-store commit, as audit entries written in one transaction."""
        self.audit.append_many([key_event_entry(e) for e in events])


def key_event_entry(event: KeyEvent) -> tuple[str, dict[str, object]]:
    """The audit entry of a key event: its kind, key id, version and details; never key bytes."""
    body = {
        "key_id": event.key_id,
        "version": event.version,
        **{k: _jsonable(v) for k, v in event.detail.items()},
    }
    return event.kind, body


def _jsonable_tree(value: object) -> dict[str, object]:
    return json.loads(json.dumps(value, default=str))  # type: ignore[no-any-return]  # a dict in, a dict out


def _jsonable(value: object) -> object:
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def adopt_policy(
    stored: str | None, configured: ResidencyPolicy
) -> tuple[ResidencyPolicy, dict[str, object] | None]:
    """The policy in force and, when it differs from the stored one, the change to audit.

    ``stored`` is the node's last policy (``{"version", "forms"}`` JSON in node
    metadata). The configured forms keep the stored version when equal; a change
    gets the next version, so the hub can tell batches made under each apart.
    """
    if stored is None:
        policy = ResidencyPolicy(configured.forms, 1)
        return policy, {"version": 1, "forms": policy.as_dict(), "previous": None}
    raw = json.loads(stored)
    previous = ResidencyPolicy.from_dict(raw["forms"], version=int(raw["version"]))
    if previous.same_forms(configured):
        return previous, None
    policy = ResidencyPolicy(configured.forms, previous.version + 1)
    return policy, {"version": policy.version, "forms": policy.as_dict(), "previous": previous.as_dict()}


def policy_meta(policy: ResidencyPolicy) -> str:
    return json.dumps({"version": policy.version, "forms": policy.as_dict()}, sort_keys=True)
