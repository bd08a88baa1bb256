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
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from cloud_hub.core.fleet import Fleet, Heartbeat, NodeStatus
from cloud_hub.errors import HubError
from edge_node.store import NotFoundError, Reader, Store, Tx
from security.roles import Permission, require
from security.tokens import Principal
from sync import subjects
from sync.adapters.replica import contiguous_seq, region_digests
from sync.crdt import Op
from sync.entities import BY_NAME, TICKET
from sync.entity import FieldProblem, ValidationError, Value, validate
from sync.hlc import ClockDriftError

log = logging.getLogger(__name__)

CENTRAL_TICKET_FIELDS = ("priority", "department", "assignee")


class UnknownRegionError(HubError):
    """No node of that region has ever reported."""

    def __init__(self, region: str, known: Sequence[str]) -> None:
        self.region, self.known = region, tuple(known)
        super().__init__(f"unknown region {region!r}; known: {', '.join(known) or 'none'}")


@dataclass(slots=True)
class MergeCounters:
    """Operations merged and refused, by reason."""

    batches: int = 0
    ops_merged: int = 0
    ops_stale: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str, count: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + count


class Hub:
    """Region replicas, the fleet registry and central edits."""

    def __init__(self, data_dir: Path, *, hub_id: str, down_after_s: float = 10.0) -> None:
        self.data_dir = data_dir
        self.hub_id = hub_id
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()
        self._registry = _Registry(data_dir / "hub.db")
        self.fleet = Fleet(self._registry.load(), down_after_s=down_after_s)
        self.counters = MergeCounters()
        self.on_local_write: Callable[[str], None] = lambda region: None
        for path in sorted((data_dir / "regions").glob("*.db")):
            self.store(path.stem)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._registry.close()

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
        new = not self.fleet.knows(beat.node_id)
        status = self.fleet.heartbeat(beat, now_ms=now_ms)
        if new:
            self._registry.save(status)
            self.store(beat.region)
            log.info(
                "node %s registered for region %s (edgecare %s)", beat.node_id, beat.region, beat.version
            )
        return status

    async def merged_seq(self, node_id: str) -> int:
        """How far the hub has merged a node's change log, without gaps."""
        store = self.store(self.fleet.region_of(node_id))
        return await store.read(lambda r: contiguous_seq(r.conn, node_id))

    # --- merging ----------------------------------------------------------------------

    async def merge(self, region: str, ops_by_node: Mapping[str, Sequence[Op]]) -> dict[str, int]:
        """Merge one region's operations in one transaction; return each node's merged seq."""
        counters = self.counters

        def write(tx: Tx) -> dict[str, int]:
            for node_id, ops in ops_by_node.items():
                for op in ops:
                    entity = BY_NAME.get(op.entity)
                    if entity is None:
                        counters.refuse("unknown_entity")
                        log.warning("refused op %s:%d for unknown entity %r", node_id, op.seq, op.entity)
                        continue
                    try:
                        outcome = tx.merge(entity, op)
                    except ClockDriftError as exc:
                        counters.refuse("clock_drift")
                        log.warning("refused op %s:%d: %s", node_id, op.seq, exc)
                        continue
                    counters.ops_merged += 1
                    counters.ops_stale += outcome.stale_fields > 0 and outcome.applied_fields == 0
            return {node_id: contiguous_seq(tx.conn, node_id) for node_id in ops_by_node}

        merged = await self.store(region).write(write, actor="replication")
        counters.batches += 1
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
        """The region's state digests, in the JSON shape nodes serve too."""
        store = self.known_store(region)
        return await store.read(lambda r: region_digests(r.conn, region))


def _newest_tickets(cursor: str | None, limit: int, reader: Reader) -> list[dict[str, Value]]:
    where, params = ("id < ?", (cursor,)) if cursor else ("1", ())
    return reader.select(TICKET, where, params, tail=f"ORDER BY id DESC LIMIT {limit}")


class _Registry:
    """Registered nodes survive hub restarts, so their operations are not refused after one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, region TEXT NOT NULL, "
            "version TEXT NOT NULL, first_seen_ms INTEGER NOT NULL)"
        )
        self._lock = threading.Lock()

    def load(self) -> list[NodeStatus]:
        rows = self._conn.execute("SELECT node_id, region, version, first_seen_ms FROM nodes").fetchall()
        return [NodeStatus(n, r, v, f, 0, 0, 0, 0, None) for n, r, v, f in rows]

    def save(self, status: NodeStatus) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?)",
                (status.node_id, status.region, status.version, status.first_seen_ms),
            )

    def close(self) -> None:
        self._conn.close()


__all__ = ["Hub", "NotFoundError", "UnknownRegionError", "region_digests"]
