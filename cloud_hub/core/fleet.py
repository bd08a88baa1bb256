"""The fleet: which nodes exist, in which region, and how they are doing. Pure.

Theory of operation
-------------------
A node says hello with every heartbeat (its id, region, version, change-log
position and the position the hub has confirmed). The first heartbeat
registers the node for its region; a later heartbeat claiming another region
for the same node id is refused, so a node cannot wander between regions and
merge data into the wrong one. A node is ``up`` while its last heartbeat is
younger than ``down_after_s`` and ``down`` afterwards. Replication lag is the
node's backlog (operations the hub has not confirmed) and the age of the
oldest of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from cloud_hub.errors import HubError


class RegionClaimError(HubError):
    """A known node claimed another region."""

    def __init__(self, node_id: str, registered: str, claimed: str) -> None:
        self.node_id, self.registered, self.claimed = node_id, registered, claimed
        super().__init__(f"node {node_id!r} is registered for region {registered!r}, not {claimed!r}")


class UnknownNodeError(HubError):
    """A node the hub has never heard from."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id!r} is not registered; it must send a heartbeat first")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a node reports about itself."""

    node_id: str
    region: str
    version: str
    last_seq: int
    acked_seq: int
    backlog_ops: int
    oldest_pending_hlc: int | None
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The hub's view of one node."""

    node_id: str
    region: str
    version: str
    first_seen_ms: int
    last_heartbeat_ms: int
    last_seq: int
    acked_seq: int
    backlog_ops: int
    oldest_pending_wall_ms: int | None

    def state(self, now_ms: int, down_after_s: float) -> str:
        return "up" if now_ms - self.last_heartbeat_ms <= down_after_s * 1000 else "down"

    def lag_s(self, now_ms: int) -> float:
        if self.backlog_ops == 0 or self.oldest_pending_wall_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_pending_wall_ms) / 1000)


class Fleet:
    """Registered nodes and their latest heartbeats."""

    def __init__(self, nodes: Iterable[NodeStatus] = (), *, down_after_s: float = 10.0) -> None:
        self._nodes = {n.node_id: n for n in nodes}
        self.down_after_s = down_after_s

    def heartbeat(self, beat: Heartbeat, *, now_ms: int) -> NodeStatus:
        """Register or refresh a node; refuse a region change."""
        known = self._nodes.get(beat.node_id)
        if known is not None and known.region != beat.region:
            raise RegionClaimError(beat.node_id, known.region, beat.region)
        oldest = None if beat.oldest_pending_hlc is None else beat.oldest_pending_hlc >> 16
        status = NodeStatus(
            node_id=beat.node_id,
            region=beat.region,
            version=beat.version,
            first_seen_ms=now_ms if known is None else known.first_seen_ms,
            last_heartbeat_ms=now_ms,
            last_seq=beat.last_seq,
            acked_seq=beat.acked_seq,
            backlog_ops=beat.backlog_ops,
            oldest_pending_wall_ms=oldest,
        )
        self._nodes[beat.node_id] = status
        return status

    def region_of(self, node_id: str) -> str:
        """The region a node is registered for."""
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNodeError(node_id)
        return node.region

    def knows(self, node_id: str) -> bool:
        return node_id in self._nodes

    def confirmed(self, node_id: str, merged_seq: int) -> None:
        """The hub merged up to ``merged_seq``; shrink the node's reported backlog now."""
        node = self._nodes.get(node_id)
        if node is not None and merged_seq > node.acked_seq:
            backlog = max(0, node.last_seq - merged_seq)
            self._nodes[node_id] = replace(
                node,
                # the node's last heartbeat may predate ops the hub has merged since
                last_seq=max(node.last_seq, merged_seq),
                acked_seq=merged_seq,
                backlog_ops=backlog,
                oldest_pending_wall_ms=None if backlog == 0 else node.oldest_pending_wall_ms,
            )

    def nodes(self) -> list[NodeStatus]:
        return sorted(self._nodes.values(), key=lambda n: (n.region, n.node_id))

    def regions(self) -> list[str]:
        return sorted({n.region for n in self._nodes.values()})

    def as_json(self, now_ms: int) -> list[Mapping[str, object]]:
        """The fleet as ``GET /api/v1/fleet`` shows it."""
        return [
            {
                "node_id": n.node_id,
                "region": n.region,
                "version": n.version,
                "state": n.state(now_ms, self.down_after_s),
                "last_heartbeat_ms": n.last_heartbeat_ms,
                "last_heartbeat_age_s": round((now_ms - n.last_heartbeat_ms) / 1000, 3),
                "changelog_last_seq": n.last_seq,
                "confirmed_seq": n.acked_seq,
                "backlog_ops": n.backlog_ops,
                "lag_s": round(n.lag_s(now_ms), 3),
            }
            for n in self.nodes()
        ]
