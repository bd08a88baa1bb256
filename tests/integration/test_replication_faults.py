"""Replication under faults, with a real hub and a real node: partitions, SIGKILLs, concurrent edits.

Each test injects one fault into a converged pair, heals it, and checks what the
design promises:

* the acknowledgement chain (``edge_node/replication.py``, ``cloud_hub/bus.py``):
  a node write is answered after its commit and stays in the change log until
  the hub has merged it; a crash of either side at any point loses no
  operation and applies none twice. "Applied once" is read from the hub's own
  region database: ``replication_progress`` counts *distinct* sequence numbers
  per origin, so ``contiguous_seq == max_seq == ops_merged == the node's last
  seq`` with nothing left in ``replication_seen`` means every operation arrived
  exactly once as far as state is concerned;
* the merge rule (``sync/crdt.py``): per field, the last writer by
  ``(HLC, node id)`` wins, whichever side wrote it.

A restarted hub binds the ports of its first run (the node's leaf connection
knows only that address) on the same data directory; a restarted node keeps
its data directory and HTTP port, so clients and tokens stay valid. Waiting
always polls a condition with a deadline; every process is killed when a test
ends, also when it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from security.envelope import looks_sealed
from sync.entities import TICKET
from sync.entity import DataClass
from tests.integration.faults import (
    HubAddress,
    Processes,
    all_tickets,
    crash,
    field_version,
    hostport,
    hub_progress,
    merger_ack_pending,
    node_confirmed_seq,
    node_id,
    poll,
    replication,
    shut_down,
    write_lock,
)
from tests.integration.nodeproc import HubProcess, NodeProcess
from tests.integration.replication_harness import create_tickets, digests

pytestmark = pytest.mark.slow

T = TypeVar("T")
REGION = "eu-de"
HEAL_S = 30.0  # heartbeat (2 s) + leaf reconnect + drain + confirm, with a wide margin on 2 cores
# Some faults leave a message delivered to a consumer that died before acking it, and after a
# hub restart only JetStream's redelivery brings it back, after the consumer's ack_wait of 30 s:
# a hub SIGKILLed mid-merge (the merger, cloud_hub/bus.py), and a central edit published while
# the node's last pull request outlives the node (its down consumer, edge_node/replication.py).
# Redelivery after ack_wait is the slow path; the node's resend (new message id) heals sooner.
REDELIVERY_HEAL_S = 60.0
# What the node's resend should achieve after a stalled watermark: resend_after_s (5 s)
# + confirm interval + heartbeat (2 s), with margin (edge_node/replication.py).
RESEND_HEAL_S = 15.0
FAULT_POLL_S = 0.005  # to land a kill inside a drain or a merge, not after it
DESCRIPTION = "x" * 8000  # big operations: a backlog drains in several batches and transactions


@dataclass
class Pair:
    """A hub and one node of REGION, with clients that outlive restarts of either."""

    procs: Processes
    tmp: Path
    hub: HubProcess
    node: NodeProcess
    at: HubAddress
    node_http: str
    node_api: httpx.Client
    hub_api: httpx.Client

    @property
    def hub_dir(self) -> Path:
        return self.tmp / "hub"

    @property
    def node_dir(self) -> Path:
        return self.tmp / "node"

    @property
    def node_id(self) -> str:
        return node_id(self.node_dir)

    @property
    def hub_id(self) -> str:
        return (self.hub_dir / "hub-id").read_text(encoding="utf-8").strip()

    def restart_hub(self) -> None:
        self.hub = self.procs.hub(self.hub_dir, at=self.at)
        assert HubAddress.of(self.hub) == self.at

    def restart_node(self) -> None:
        self.node = self.procs.node(self.node_dir, hub=self.at.leaf_url, http=self.node_http)
        assert hostport(self.node.url) == self.node_http

    def wait(
        self,
        probe: Callable[[], T],
        ready: Callable[[T], bool],
        *,
        timeout_s: float,
        what: str,
        interval_s: float = 0.1,
    ) -> T:
        """Poll with a deadline; a failure message carries every process's output."""
        try:
            return poll(probe, ready, timeout_s=timeout_s, what=what, interval_s=interval_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.procs.logs()}") from None

    def node_status(self) -> dict[str, Any]:
        return replication(self.node_api)

    def converged(self, *, timeout_s: float = HEAL_S) -> dict[str, Any]:
        """Wait until the node has nothing pending and both serve equal digests; return them."""
        self.wait(
            self.node_status,
            lambda s: s["connected_to_hub"] and s["backlog_ops"] == 0,
            timeout_s=timeout_s,
            what="the node's backlog to be confirmed by the hub",
        )
        both = self.wait(
            lambda: (digests(self.node_api, REGION), digests(self.hub_api, REGION)),
            lambda pair: "entities" in pair[0] and pair[0] == pair[1],
            timeout_s=timeout_s,
            what=f"digests of {REGION} to match between node and hub",
        )
        status = self.node_status()
        assert status["backlog_ops"] == 0, status
        assert status["confirmed_seq"] == status["changelog_last_seq"], status
        return both[0]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with Processes() as procs:
        hub = procs.hub(tmp_path / "hub")
        node = procs.node(tmp_path / "node", hub=hub.leaf_url)
        p = Pair(
            procs=procs,
            tmp=tmp_path,
            hub=hub,
            node=node,
            at=HubAddress.of(hub),
            node_http=hostport(node.url),
            node_api=procs.client(node.url, node.token("supervisor")),
            hub_api=procs.client(hub.url, hub.token("central_ops")),
        )
        yield p


# --- checks ------------------------------------------------------------------------------


def assert_same_tickets(p: Pair, expected_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The node holds exactly the expected tickets, and the hub holds them field for field."""
    at_node = all_tickets(p.node_api)
    at_hub = all_tickets(p.hub_api, region=REGION)
    assert set(at_node) == expected_ids, (
        f"node: {len(set(at_node) - expected_ids)} unexpected, {len(expected_ids - set(at_node))} missing"
    )
    assert set(at_hub) == set(at_node), (
        f"hub: {len(set(at_hub) - set(at_node))} extra, {len(set(at_node) - set(at_hub))} missing"
    )
    differing = {
        tid: {
            k: (at_node[tid].get(k), at_hub[tid].get(k))
            for k in at_node[tid]
            if not _same_at_hub(k, at_node[tid][k], at_hub[tid].get(k))
        }
        for tid in at_node
    }
    differing = {tid: d for tid, d in differing.items() if d}
    assert not differing, f"{len(differing)} tickets differ, e.g. {next(iter(differing.items()))}"
    return at_node


def _same_at_hub(name: str, at_node: object, at_hub: object) -> bool:
    """Plain fields arrive as they are; personal ones (sealed by default) arrive as envelopes."""
    if TICKET.has(name) and TICKET.field(name).data_class is DataClass.PERSONAL and at_node is not None:
        return looks_sealed(at_hub)
    return at_node == at_hub


def assert_applied_exactly_once(p: Pair) -> None:
    """The hub's region database merged every op of the node's change log once, without gaps."""
    last = p.node_status()["changelog_last_seq"]
    progress = hub_progress(p.hub_dir, REGION, p.node_id)
    assert progress is not None, "the hub has no merge progress for the node"
    assert progress.contiguous_seq == progress.max_seq == progress.ops_merged == last, (progress, last)
    assert progress.out_of_order == 0, progress
    counters = replication(p.hub_api)
    assert counters["refused"] == {}, counters


def backlog(p: Pair) -> int:
    value: int = p.node_status()["backlog_ops"]
    return value


def create_big_tickets(api: httpx.Client, count: int, *, prefix: str) -> list[str]:
    ids = []
    for i in range(count):
        response = api.post(
            "/api/v1/tickets",
            json={"type": "consult", "subject": f"{prefix} {i}", "description": DESCRIPTION},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def partition_backlog(p: Pair, count: int) -> tuple[dict[str, str], int]:
    """Converge, stop the hub, create ``count`` big tickets while it is away.

    Returns the reference (every ticket id the node answered 201 for, with its
    subject) and the node's last change-log seq.
    """
    ids = create_tickets(p.node_api, 5, prefix="before")
    reference = {tid: f"before {i}" for i, tid in enumerate(ids)}
    p.converged()
    # so that nothing fetched before the partition is redelivered after it
    p.wait(
        lambda: merger_ack_pending(p.hub.nats_url),
        lambda pending: pending == 0,
        timeout_s=HEAL_S,
        what="the hub to have acknowledged every batch it fetched",
    )
    shut_down(p.hub)
    offline = create_big_tickets(p.node_api, count, prefix="offline")
    reference |= {tid: f"offline {i}" for i, tid in enumerate(offline)}
    last: int = p.node_status()["changelog_last_seq"]
    assert backlog(p) >= count
    return reference, last


def assert_matches_reference(p: Pair, reference: dict[str, str]) -> None:
    """Node and hub hold exactly the acknowledged tickets, with the content that was sent."""
    tickets = assert_same_tickets(p, set(reference))
    wrong = [
        tid
        for tid, subject in reference.items()
        if tickets[tid]["subject"] != subject
        or tickets[tid]["description"] != (DESCRIPTION if subject.startswith("offline") else None)
    ]
    assert not wrong, f"{len(wrong)} tickets differ from what was created, e.g. {tickets[wrong[0]]}"


# --- a. partition ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_partition_node_keeps_serving_and_everything_arrives_after_the_heal(pair: Pair) -> None:
    p = pair
    before = create_tickets(p.node_api, 20, prefix="before")
    p.converged()

    shut_down(p.hub)
    p.wait(
        p.node_status, lambda s: not s["connected_to_hub"], timeout_s=15, what="the node to see the hub gone"
    )
    backlog_at_cut = backlog(p)

    # the node keeps taking writes of every kind, answered as usual
    during = create_tickets(p.node_api, 100, prefix="during")
    edited = before[:20:2] + during[:60:2]
    for i, tid in enumerate(edited):
        response = p.node_api.patch(
            f"/api/v1/tickets/{tid}", json={"subject": f"edited {i}", "priority": "P3"}
        )
        assert response.status_code == 200, response.text
    for tid in during[:20]:
        response = p.node_api.post(f"/api/v1/tickets/{tid}/comments", json={"body": "while the hub was away"})
        assert response.status_code == 201, response.text
    for tid in before[:5]:
        response = p.node_api.post(f"/api/v1/tickets/{tid}/transition", json={"status": "in_progress"})
        assert response.status_code == 200, response.text
    writes = len(during) + len(edited) + 20 + 5
    status = p.node_status()
    assert not status["connected_to_hub"], status
    assert status["backlog_ops"] >= backlog_at_cut + writes, (backlog_at_cut, writes, status)
    assert status["confirmed_seq"] + status["backlog_ops"] == status["changelog_last_seq"], status

    p.restart_hub()
    final = p.converged()

    assert final["entities"]["ticket"]["count"] == 120
    assert final["entities"]["comment"]["count"] == 20
    tickets = assert_same_tickets(p, set(before) | set(during))
    assert all(
        tickets[tid]["priority"] == "P3" and tickets[tid]["subject"].startswith("edited") for tid in edited
    )
    assert all(tickets[tid]["status"] == "in_progress" for tid in before[:5])
    assert_applied_exactly_once(p)
    fleet = p.hub_api.get("/api/v1/fleet").json()["nodes"]
    assert [(n["node_id"], n["state"]) for n in fleet] == [(p.node_id, "up")]


# --- b. node crash -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_node_sigkilled_while_draining_resends_and_nothing_is_lost_or_doubled(pair: Pair) -> None:
    p = pair
    reference, last = partition_backlog(p, 300)
    confirmed_before = node_confirmed_seq(p.node_dir)

    p.restart_hub()
    base = hub_progress(p.hub_dir, REGION, p.node_id)
    assert base is not None
    # the drain has begun once the hub merges past where it stood: kill the node right then
    p.wait(
        lambda: hub_progress(p.hub_dir, REGION, p.node_id),
        lambda pr: pr is not None and pr.max_seq > base.max_seq,
        timeout_s=HEAL_S,
        what="the hub to start merging the node's backlog",
        interval_s=FAULT_POLL_S,
    )
    crash(p.node)
    confirmed_at_crash = node_confirmed_seq(p.node_dir)
    assert confirmed_before <= confirmed_at_crash < last, (
        f"the node had the whole backlog confirmed ({confirmed_at_crash}/{last}) before the kill"
    )

    p.restart_node()
    p.converged()

    assert_matches_reference(p, reference)
    assert_applied_exactly_once(p)
    fleet = p.hub_api.get("/api/v1/fleet").json()["nodes"]
    assert [(n["node_id"], n["state"]) for n in fleet] == [(p.node_id, "up")]


# --- c. hub crash ------------------------------------------------------------------------


def crash_hub_mid_merge(p: Pair, last: int) -> None:
    """Restart the hub on the backlog, SIGKILL it as soon as it merges, check the merge was cut."""
    p.restart_hub()
    p.wait(
        lambda: replication(p.hub_api)["ops_merged"],
        lambda merged: merged > 0,  # counted inside the merge transaction, before its commit
        timeout_s=HEAL_S,
        what="the hub to start merging the node's backlog",
        interval_s=FAULT_POLL_S,
    )
    crash(p.hub)
    progress = hub_progress(p.hub_dir, REGION, p.node_id)
    assert progress is not None
    assert progress.contiguous_seq < last, f"the hub had merged everything ({progress}) before the kill"


@pytest.mark.timeout(150)
def test_hub_sigkilled_mid_merge_recovers_and_nothing_is_lost_or_doubled(pair: Pair) -> None:
    p = pair
    reference, last = partition_backlog(p, 300)
    crash_hub_mid_merge(p, last)

    p.restart_hub()
    p.converged(timeout_s=REDELIVERY_HEAL_S)

    assert_matches_reference(p, reference)
    assert_applied_exactly_once(p)


class GapNotHealedError(AssertionError):
    """The hub's merge watermark stayed behind the node's change log."""


@pytest.mark.timeout(120)
def test_hub_sigkilled_mid_merge_heals_within_the_nodes_resend_interval(pair: Pair) -> None:
    p = pair
    _, last = partition_backlog(p, 100)
    base = hub_progress(p.hub_dir, REGION, p.node_id)
    assert base is not None
    # Deterministically mid-merge: hold the region database's write lock, so the merger fetches
    # the node's batches and cannot commit them; SIGKILL the hub while they are fetched, unacked.
    with write_lock(p.hub_dir / "regions" / f"{REGION}.db"):
        p.restart_hub()
        # every batch fetched now is the node's backlog: none was left unacked before the partition
        p.wait(
            lambda: merger_ack_pending(p.hub.nats_url),
            lambda pending: pending > 0,
            timeout_s=HEAL_S,
            what="the hub's merger to fetch the node's batches",
            interval_s=FAULT_POLL_S,
        )
        crash(p.hub)  # well within the store's busy timeout (10 s), which starts at the fetch
    assert hub_progress(p.hub_dir, REGION, p.node_id) == base, "nothing of the backlog may have committed"

    p.restart_hub()
    try:
        p.wait(
            lambda: hub_progress(p.hub_dir, REGION, p.node_id),
            lambda pr: pr is not None and pr.contiguous_seq == last,
            timeout_s=RESEND_HEAL_S,
            what=f"the hub to merge the node's change log up to {last} without a gap",
        )
    except AssertionError as exc:
        raise GapNotHealedError(str(exc)) from None
    p.converged()


# --- d. concurrent edits -----------------------------------------------------------------


def winner(*versions: tuple[int, str]) -> tuple[int, str]:
    """The documented rule: the higher (HLC, node id) wins."""
    return max(versions)


def assert_priority_everywhere(p: Pair, tid: str, priority: str, version: tuple[int, str]) -> dict[str, Any]:
    at_node = p.node_api.get(f"/api/v1/tickets/{tid}").json()
    at_hub = p.hub_api.get(f"/api/v1/tickets/{REGION}/{tid}").json()
    differing = {k: (v, at_hub.get(k)) for k, v in at_node.items() if not _same_at_hub(k, v, at_hub.get(k))}
    assert not differing
    assert set(at_node) == set(at_hub)
    assert at_node["priority"] == priority
    assert at_node["sla"]["priority"] == priority, "the region re-derives the SLA of the winning priority"
    assert field_version(p.node_dir / "edgecare.db", "ticket", tid, "priority") == version
    assert field_version(p.hub_dir / "regions" / f"{REGION}.db", "ticket", tid, "priority") == version
    return at_node


@pytest.mark.timeout(120)
def test_concurrent_priority_edits_the_later_region_edit_wins(pair: Pair) -> None:
    p = pair
    [tid] = create_tickets(p.node_api, 1, prefix="contested")
    p.converged()

    # the node is away; central ops sets P3 and assigns the ticket
    shut_down(p.node)
    response = p.hub_api.patch(
        f"/api/v1/tickets/{REGION}/{tid}", json={"priority": "P3", "assignee": "central-1"}
    )
    assert response.status_code == 200, response.text
    hub_version = field_version(p.hub_dir / "regions" / f"{REGION}.db", "ticket", tid, "priority")
    # now the hub is away; the node, not having seen the hub's edit, sets P1 (later in wall time)
    shut_down(p.hub)
    p.restart_node()
    response = p.node_api.patch(f"/api/v1/tickets/{tid}", json={"priority": "P1"})
    assert response.status_code == 200, response.text
    assert response.json()["assignee"] is None, "the node must not have seen the hub's edit yet"
    node_version = field_version(p.node_dir / "edgecare.db", "ticket", tid, "priority")
    assert node_version[1] == p.node_id
    assert hub_version[1] == p.hub_id
    assert winner(hub_version, node_version) == node_version, "a region edit later in wall time"

    p.restart_hub()
    p.wait(
        lambda: p.node_api.get(f"/api/v1/tickets/{tid}").json(),
        lambda t: t["assignee"] == "central-1",
        timeout_s=REDELIVERY_HEAL_S,  # the edit may have gone to the stopped node's last pull request
        what="the hub's edit to reach the node",
    )
    p.converged()

    ticket = assert_priority_everywhere(p, tid, "P1", node_version)
    assert ticket["assignee"] == "central-1", "per field: the hub's assignee is not part of the conflict"


@pytest.mark.timeout(120)
def test_concurrent_priority_edits_the_later_hub_edit_wins(pair: Pair) -> None:
    p = pair
    [tid] = create_tickets(p.node_api, 1, prefix="contested")
    p.converged()

    # the hub is away; the node sets P1 and renames the ticket, and keeps both pending
    shut_down(p.hub)
    response = p.node_api.patch(f"/api/v1/tickets/{tid}", json={"priority": "P1", "subject": "renamed"})
    assert response.status_code == 200, response.text
    node_version = field_version(p.node_dir / "edgecare.db", "ticket", tid, "priority")
    assert backlog(p) > 0
    # now the node is away; the hub, not having seen the node's edit, sets P3 (later in wall time)
    shut_down(p.node)
    p.restart_hub()
    response = p.hub_api.patch(f"/api/v1/tickets/{REGION}/{tid}", json={"priority": "P3"})
    assert response.status_code == 200, response.text
    assert response.json()["subject"] != "renamed", "the hub must not have seen the node's edit yet"
    hub_version = field_version(p.hub_dir / "regions" / f"{REGION}.db", "ticket", tid, "priority")
    assert node_version[1] == p.node_id
    assert hub_version[1] == p.hub_id
    assert winner(hub_version, node_version) == hub_version, "a hub edit later in wall time"

    p.restart_node()
    p.converged()

    ticket = assert_priority_everywhere(p, tid, "P3", hub_version)
    assert ticket["subject"] == "renamed", "per field: the node's subject is not part of the conflict"
