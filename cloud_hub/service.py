"""The hub's application service: one replica store per region, the fleet, central edits.

Each region's data lives in its own SQLite file (``regions/<region>.db``) with
the same schema as the region's node, so a region's replica at the hub is the
node's database merged with the hub's own edits, and the two can be compared
table by table (digests). Central edits are local writes of the hub in that
region's store: they get the hub's node id and a clock that has seen every
merged operation of the region, and they flow down to the region.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from cloud_hub.core.enrollment import DEFAULT_TTL_S, EnrollClaim, EnrollToken, TokenRecord, decide, new_token
from cloud_hub.core.fleet import Fleet, Heartbeat, NodeStatus, UnknownNodeError
from cloud_hub.errors import HubError
from cloud_hub.registry import NodeRecord, PolicyRecord, QuarantinedOp, Registry
from edge_node.store import NotFoundError, Reader, Store, Tx
from security.audit_chain import Checkpoint, checkpoint_valid
from security.envelope import looks_sealed
from security.frames import EnrolledKey
from security.identity import NodeIdentity
from security.pseudonym import looks_pseudonym
from security.roles import Permission, require
from security.tokens import Principal
from sync import subjects
from sync.adapters.replica import contiguous_seq, mark_handled, region_digests
from sync.crdt import Op
from sync.entities import BY_NAME, CENTRAL_TICKET_FIELDS, TICKET
from sync.entity import DataClass, FieldProblem, ValidationError, Value, validate
from sync.hlc import ClockDriftError
from sync.residency import (
    FloorBreach,
    Form,
    FormViolation,
    ResidencyPolicy,
    below_floor,
    check_op,
    entity_forms,
)

log = logging.getLogger(__name__)


class UnknownRegionError(HubError):
    """No node of that region has ever reported."""

    def __init__(self, region: str, known: Sequence[str]) -> None:
        self.region, self.known = region, tuple(known)
        super().__init__(f"unknown region {region!r}; known: {', '.join(known) or 'none'}")


class PolicyUnknownError(HubError):
    """A node sent operations before registering the residency policy they were made under."""

    def __init__(self, node_id: str, version: int) -> None:
        self.node_id, self.version = node_id, version
        super().__init__(f"node {node_id!r} has not registered residency policy version {version}")


@dataclass(slots=True)
class MergeCounters:
    """Operations merged and refused, by reason."""

    batches: int = 0
    ops_merged: int = 0
    ops_stale: int = 0
    ops_quarantined: int = 0
    frames_accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # frames and requests, by reason
    ops_refused: dict[str, int] = field(default_factory=dict)  # operations inside accepted frames

    def refuse(self, reason: str, count: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + count

    def refuse_op(self, reason: str) -> None:
        self.ops_refused[reason] = self.ops_refused.get(reason, 0) + 1


class Hub:
    """Region replicas, the fleet registry and central edits."""

    def __init__(
        self,
        data_dir: Path,
        *,
        hub_id: str,
        down_after_s: float = 10.0,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.hub_id = hub_id
        self.wall_ms = wall_ms or (lambda: int(datetime.now(UTC).timestamp() * 1000))
        # signs the central edits going down, so a region merges only what this hub sent
        self.identity = NodeIdentity.load_or_create(data_dir / "identity")
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()
        self.registry = Registry(data_dir / "hub.db")
        enrolled = [n for n in self.registry.nodes() if n.public_key is not None]
        self._keys = {n.node_id: EnrolledKey(n.node_id, n.region, n.public_key or b"") for n in enrolled}
        self.fleet = Fleet(
            [NodeStatus(n.node_id, n.region, n.version, n.first_seen_ms, 0, 0, 0, 0, None) for n in enrolled],
            down_after_s=down_after_s,
        )
        self._policies: dict[str, ResidencyPolicy] = {}
        for record in self.registry.policies():
            self._policies[record.node_id] = _policy(record)
        self.counters = MergeCounters()
        self.on_local_write: Callable[[str], None] = lambda region: None
        self.on_new_region: Callable[[str], None] = lambda region: None
        for path in sorted((data_dir / "regions").glob("*.db")):
            self.store(path.stem)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self.registry.close()

    # --- regions ----------------------------------------------------------------------

    def store(self, region: str) -> Store:
        """The region's replica store, opened on first use."""
        subjects.check_token(region, "region")
        with self._lock:
            store = self._stores.get(region)
            if store is None:
                store = Store(self.data_dir / "regions" / f"{region}.db", node_id=self.hub_id)
                store.open()
                self._stores[region] = store
            return store

    def regions(self) -> list[str]:
        return sorted(set(self._stores) | set(self.fleet.regions()))

    def known_store(self, region: str) -> Store:
        """The store of a region the hub knows; refuse others (no file is created)."""
        if region not in self.regions():
            raise UnknownRegionError(region, self.regions())
        return self.store(region)

    # --- fleet ------------------------------------------------------------------------

    def heartbeat(self, beat: Heartbeat, now_ms: int) -> NodeStatus:
        """Refresh an enrolled node's status (heartbeats no longer register anyone).

        Raises:
            UnknownNodeError: the node is not enrolled.
        """
        if not self.fleet.knows(beat.node_id):
            raise UnknownNodeError(beat.node_id)
        return self.fleet.heartbeat(beat, now_ms=now_ms)

    # --- enrollment, keys and policies ------------------------------------------------------

    def issue_enroll_token(self, region: str, *, ttl_s: float = DEFAULT_TTL_S) -> EnrollToken:
        """A one-time token enrolling one node into ``region``; only its hash is stored."""
        return issue_enroll_token(self.registry, region, ttl_s=ttl_s, now_ms=self.wall_ms())

    def enroll(self, claim: EnrollClaim, *, version: str) -> None:
        """Register a node's key for its region, consuming the token.

        Raises:
            EnrollmentError: naming why the token or claim was refused.
        """
        now = self.wall_ms()
        known = self._keys.get(claim.node_id)
        decide(
            self.registry.token(claim.token.token_id),
            claim,
            now_ms=now,
            registered_region=None if known is None else known.region,
            registered_key=None if known is None else known.public_key,
        )
        record = NodeRecord(claim.node_id, claim.region, version, now, claim.public_key, now)
        self.registry.enroll(claim.token.token_id, record)
        new_region = claim.region not in self.regions()
        self._keys[claim.node_id] = EnrolledKey(claim.node_id, claim.region, claim.public_key)
        if not self.fleet.knows(claim.node_id):
            self.fleet.heartbeat(
                Heartbeat(claim.node_id, claim.region, version, 0, 0, 0, None, now), now_ms=now
            )
        self.store(claim.region)
        log.info(
            "node %s enrolled for region %s (token %s)", claim.node_id, claim.region, claim.token.token_id
        )
        if new_region:
            self.on_new_region(claim.region)

    def enrolled_key(self, node_id: str) -> EnrolledKey | None:
        return self._keys.get(node_id)

    def register_policy(self, node_id: str, version: int, forms: Mapping[str, str]) -> bool:
        """Record a node's residency policy version; True if it is new.

        Raises:
            PolicyError: the forms are not a valid policy.
            PolicyBelowFloorError: the policy lets a class out in a weaker form than the region's floor.
            UnknownNodeError: the node is not enrolled.
        """
        key = self._keys.get(node_id)
        if key is None:
            raise UnknownNodeError(node_id)
        policy = ResidencyPolicy.from_dict(forms, version=version)
        self._check_floor(key.region, node_id, policy)
        current = self._policies.get(node_id)
        if current is not None and version < current.version:
            raise PolicyVersionError(node_id, version, current.version)
        record = PolicyRecord(node_id, key.region, version, policy.as_dict(), self.wall_ms())
        new = self.registry.register_policy(record)  # raises if the version is known with other forms
        if current is None or version >= current.version:
            self._policies[node_id] = policy
        if new:
            log.info(
                "node %s registered residency policy v%d for %s: %s", node_id, version, key.region, forms
            )
        return new

    def policy_of(self, node_id: str, version: int) -> ResidencyPolicy:
        """The policy a node's operations are checked against.

        Raises:
            PolicyUnknownError: the node has not registered that version (the latest).
            PolicyBelowFloorError: the region's floor was raised above it since.
        """
        policy = self._policies.get(node_id)
        if policy is None or policy.version != version:
            raise PolicyUnknownError(node_id, version)
        self._check_floor(self._keys[node_id].region, node_id, policy)
        return policy

    def floor(self, region: str) -> dict[DataClass, Form]:
        """The weakest form each class may take in ``region`` (central ops' minimum; empty: none)."""
        return {DataClass(c): Form(f) for c, f in self.registry.floor(region).items()}

    def set_floor(self, region: str, floor: Mapping[DataClass, Form], *, by: str) -> None:
        """Raise (or lower) a region's floor; nodes below it are refused from their next message on."""
        subjects.check_token(region, "region")
        self.registry.set_floor(
            region, {c.value: f.value for c, f in floor.items()}, by=by, at_ms=self.wall_ms()
        )
        log.info(
            "residency floor of %s set by %s: %s", region, by, {c.value: f.value for c, f in floor.items()}
        )

    def _check_floor(self, region: str, node_id: str, policy: ResidencyPolicy) -> None:
        breaches = below_floor(policy, self.floor(region))
        if breaches:
            raise PolicyBelowFloorError(node_id, region, policy.version, breaches)

    def region_forms(self, region: str) -> dict[str, dict[str, Form]] | None:
        """Field forms of the region's newest registered policy (for digests); None if none is."""
        records = self.registry.policies(region=region)
        if not records:
            return None
        return entity_forms(_policy(records[-1]))

    async def merged_seq(self, node_id: str) -> int:
        """How far the hub has merged a node's change log, without gaps."""
        store = self.store(self.fleet.region_of(node_id))
        return await store.read(lambda r: contiguous_seq(r.conn, node_id))

    def receive_checkpoint(self, node_id: str, region: str, payload: Mapping[str, object]) -> str | None:
        """Keep a node's signed audit checkpoint (and the erasures and key inventory it reports).

        Returns a problem (and raises an alarm) when the checkpoint's signature
        fails, or it contradicts one received before: the same size with another
        head (a forked log) or a smaller size than already seen (a rolled-back log).
        """
        key = self._keys.get(node_id)
        raw = payload.get("checkpoint")
        if key is None or not isinstance(raw, Mapping):
            return "no enrolled key or no checkpoint"
        checkpoint = Checkpoint.from_dict(raw)
        now = self.wall_ms()
        problem = None
        if not checkpoint_valid(checkpoint, key.public_key):
            problem = "checkpoint signature does not verify with the node's enrolled key"
        else:
            for seen in self.registry.checkpoints(node_id):
                if int(str(seen["size"])) == checkpoint.size and seen["head"] != checkpoint.to_dict()["head"]:
                    problem = f"fork: two checkpoints of size {checkpoint.size} with different heads"
                elif int(str(seen["size"])) > checkpoint.size and problem is None:
                    problem = (
                        f"rollback: checkpoint of size {checkpoint.size} after one of size {seen['size']}"
                    )
        if problem is not None:
            self.registry.raise_alarm(region, node_id, "audit", problem, at_ms=now)
            log.error("audit checkpoint of node %s refused: %s", node_id, problem)
            return problem
        self.registry.add_checkpoint(node_id, region, checkpoint.to_dict(), received_ms=now)
        erasures = payload.get("erasures")
        if isinstance(erasures, list):
            self.registry.add_erasures(node_id, region, [e for e in erasures if isinstance(e, Mapping)])
        inventory = payload.get("key_inventory")
        if isinstance(inventory, Mapping):
            self.registry.set_key_inventory(node_id, region, inventory, received_ms=now)
        return None

    # --- merging ----------------------------------------------------------------------

    async def merge(
        self,
        region: str,
        ops_by_node: Mapping[str, Sequence[Op]],
        policies: Mapping[str, ResidencyPolicy] | None = None,
        quarantined_out: set[tuple[str, int]] | None = None,
    ) -> dict[str, int]:
        """Merge one region's operations in one transaction; return each node's merged seq.

        With ``policies`` (each sending node's registered policy) every operation
        is checked first: one with a field in a form its policy forbids is not
        merged but quarantined (ids and field names recorded, never values), and
        counted as handled so the node's watermark moves on. ``quarantined_out``
        receives ``(node id, seq)`` of each, so the caller can erase the message
        that carried it (its values must not stay at the hub).
        """
        counters = self.counters
        now = self.wall_ms()
        check = _Admission(region, now, quarantined_out)
        quarantined, arrived = check.quarantined, check.arrived

        def write(tx: Tx) -> dict[str, int]:
            for node_id, ops in ops_by_node.items():
                policy = None if policies is None else policies.get(node_id)
                for op in ops:
                    entity = BY_NAME.get(op.entity)
                    if entity is None:
                        counters.refuse_op("unknown_entity")
                        log.warning("refused op %s:%d for unknown entity %r", node_id, op.seq, op.entity)
                        continue
                    if policy is not None and not _admit(tx, op, policy, check):
                        continue
                    try:
                        outcome = tx.merge(entity, op)
                    except ClockDriftError as exc:
                        counters.refuse_op("clock_drift")
                        log.warning("refused op %s:%d: %s", node_id, op.seq, exc)
                        continue
                    counters.ops_merged += 1
                    counters.ops_stale += outcome.stale_fields > 0 and outcome.applied_fields == 0
            return {node_id: contiguous_seq(tx.conn, node_id) for node_id in ops_by_node}

        merged = await self.store(region).write(write, actor="replication")
        counters.batches += 1
        if quarantined or arrived:
            self.registry.record_batch(
                at_ms=now,
                refusals=[(region, "policy_violation")] * len(quarantined),
                egress=arrived,
                quarantined=quarantined,
            )
        for _ in quarantined:  # counted once recorded, so the API never shows one hub.db lacks
            counters.refuse_op("policy_violation")
            counters.ops_quarantined += 1
        for node_id, seq in merged.items():
            self.fleet.confirmed(node_id, seq)
        return merged

    # --- reading and central edits --------------------------------------------------------

    async def list_tickets(
        self, principal: Principal, *, region: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Value]], str | None]:
        """Tickets of one or every region, newest first, one page at a time."""
        require(principal.role, Permission.READ)
        if not 1 <= limit <= 200:
            raise ValidationError([FieldProblem("limit", f"must be between 1 and 200; got {limit}")])
        regions = [region] if region is not None else self.regions()
        rows: list[dict[str, Value]] = []
        for name in regions:
            store = self.known_store(name)
            page = await store.read(partial(_newest_tickets, cursor, limit + 1))
            for row in page:
                row.setdefault("region", name)
            rows.extend(page)
        rows.sort(key=lambda r: str(r["id"]), reverse=True)
        more = len(rows) > limit
        items = rows[:limit]
        return items, (str(items[-1]["id"]) if more and items else None)

    async def get_ticket(self, principal: Principal, region: str, ticket_id: str) -> dict[str, Value]:
        require(principal.role, Permission.READ)
        return await self.known_store(region).read(lambda r: r.require(TICKET, ticket_id))

    async def edit_ticket(
        self, principal: Principal, region: str, ticket_id: str, payload: Mapping[str, object]
    ) -> dict[str, Value]:
        """Central ops changes priority, department or assignee; the change flows to the region."""
        changes = validate(TICKET, payload, allowed=CENTRAL_TICKET_FIELDS)
        if not changes:
            raise ValidationError([FieldProblem("body", "no fields to change")])
        if "priority" in changes:
            require(principal.role, Permission.CHANGE_PRIORITY)
        if "department" in changes or "assignee" in changes:
            require(principal.role, Permission.REASSIGN_ACROSS_DEPARTMENTS)
        if changes.get("priority", "") is None or changes.get("department", "") is None:
            raise ValidationError([FieldProblem("body", "priority and department cannot be cleared")])
        now = datetime.now(UTC)

        def write(tx: Tx) -> dict[str, Value]:
            current = tx.require(TICKET, ticket_id)
            values = {k: v for k, v in changes.items() if current.get(k) != v}
            if values:
                values["updated_at"] = now
                tx.update(TICKET, ticket_id, values)
            return {**current, **values}

        record = await self.known_store(region).write(write, actor=f"{principal.role.value}:{principal.name}")
        log.info(
            "central edit of ticket %s in %s by %s: %s", ticket_id, region, principal.name, sorted(changes)
        )
        self.on_local_write(region)
        return record

    async def digests(self, region: str) -> dict[str, object]:
        """The region's state digests, in the JSON shape nodes serve too (under its residency policy)."""
        store = self.known_store(region)
        forms = self.region_forms(region)
        return await store.read(lambda r: region_digests(r.conn, region, forms))


def _newest_tickets(cursor: str | None, limit: int, reader: Reader) -> list[dict[str, Value]]:
    where, params = ("id < ?", (cursor,)) if cursor else ("1", ())
    return reader.select(TICKET, where, params, tail=f"ORDER BY id DESC LIMIT {limit}")


def issue_enroll_token(registry: Registry, region: str, *, ttl_s: float, now_ms: int) -> EnrollToken:
    """A one-time token enrolling one node into ``region``; only its hash is stored."""
    token = new_token(region, os.urandom(8).hex(), os.urandom(24))
    registry.add_token(
        TokenRecord(token.token_id, region, token.secret_hash, now_ms, now_ms + int(ttl_s * 1000))
    )
    log.info("enrollment token %s issued for region %s", token.token_id, region)
    return token


@dataclass(slots=True)
class _Admission:
    """What the residency check of one merge found: quarantined ops, and arrivals by class and form."""

    region: str
    now_ms: int
    out: set[tuple[str, int]] | None
    quarantined: list[QuarantinedOp] = field(default_factory=list)
    arrived: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _admit(tx: Tx, op: Op, policy: ResidencyPolicy, check: _Admission) -> bool:
    """Whether ``op`` may be merged under its node's policy; quarantine it (once) if not."""
    problems = check_op(op, policy, is_sealed=looks_sealed, is_pseudonym=looks_pseudonym)
    if problems:
        if mark_handled(tx.conn, op):  # a redelivered one was recorded already
            check.quarantined.append(_quarantined(check.region, op, problems, check.now_ms))
            log.warning("quarantined op %s:%d: %s", op.origin, op.seq, "; ".join(map(str, problems)))
        if check.out is not None:
            check.out.add((op.origin, op.seq))
        return False
    entity = BY_NAME[op.entity]
    for name in op.changes:
        if entity.has(name):
            data_class = entity.field(name).data_class
            k = (check.region, data_class.value, policy.forms[data_class].value)
            check.arrived[k] = check.arrived.get(k, 0) + 1
    return True


def _policy(record: PolicyRecord) -> ResidencyPolicy:
    return ResidencyPolicy.from_dict(record.forms, version=record.version)


def _quarantined(region: str, op: Op, problems: Sequence[FormViolation], at_ms: int) -> QuarantinedOp:
    fields = tuple(sorted({p.field for p in problems}))
    return QuarantinedOp(
        region, op.origin, op.seq, op.entity, op.record_id, fields, "; ".join(map(str, problems)), at_ms
    )


class PolicyBelowFloorError(HubError):
    """A node's policy lets a class out in a weaker form than central ops allow in its region."""

    def __init__(self, node_id: str, region: str, version: int, breaches: Sequence[FloorBreach]) -> None:
        self.node_id, self.region, self.version, self.breaches = node_id, region, version, tuple(breaches)
        super().__init__(
            f"residency policy v{version} of node {node_id!r} is below the floor of {region}: "
            + "; ".join(map(str, breaches))
        )


class PolicyVersionError(HubError):
    """A node registered an older policy version than one it registered before."""

    def __init__(self, node_id: str, version: int, current: int) -> None:
        self.node_id, self.version, self.current = node_id, version, current
        super().__init__(f"node {node_id!r} registered policy v{version}, older than its v{current}")


__all__ = ["Hub", "NotFoundError", "UnknownRegionError", "region_digests"]
