"""Fault injection for replication tests: crash and restart real hubs and nodes where they were.

A :class:`Processes` group owns every hub and node a test starts, also the
ones it restarts, and kills whatever still runs when the test ends, passed or
failed. :func:`crash` is SIGKILL; it then waits (with a deadline) until the
nats-server the dead process had spawned is gone too, so a restart can bind the
same ports and a leaked child fails the test instead of haunting the next one.
:func:`shut_down` is SIGTERM with a bounded grace period (see there).

:func:`write_lock` holds a region database's write lock from outside, so a
merge the hub has fetched cannot commit: the way to crash a hub *during* a
merge every time rather than by luck. :func:`merger_ack_pending` asks the
hub's nats-server how many fetched operation batches await the merger's ack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import nats

from cloud_hub.bus import MERGER_DURABLE
from sync.subjects import HUB_OPS_STREAM
from tests.integration.nodeproc import HubProcess, NodeProcess, start_hub, start_node

log = logging.getLogger(__name__)
T = TypeVar("T")

CHILD_EXIT_TIMEOUT_S = 15.0
# A clean SIGTERM shutdown of a hub or node takes well under a second. A stop waits
# this long, then kills: a shutdown that hangs (as ``nc.drain()`` on a pull
# subscription did, up to nats-py's 30 s drain_timeout) costs seconds, not 15 s.
STOP_GRACE_S = 5.0


def poll(
    probe: Callable[[], T],
    ready: Callable[[T], bool],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
) -> T:
    """Like ``replication_harness.wait_for``, with a choice of interval.

    Fault injection that must land *during* something (a drain, a merge) polls
    every few milliseconds; plain waiting polls every 100 ms.
    """
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not ready(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last value: {value!r}")
        time.sleep(interval_s)
        value = probe()
    return value


def hostport(url: str) -> str:
    """``scheme://host:port`` to ``host:port``, as ``--http``/``--nats``/``--leaf`` take it."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"no host:port in {url!r}")
    return f"{parts.hostname}:{parts.port}"


@dataclass(frozen=True)
class HubAddress:
    """Where a hub listens, so a restart can bind the very same ports."""

    nats: str
    leaf: str
    http: str
    leaf_url: str

    @classmethod
    def of(cls, hub: HubProcess) -> HubAddress:
        return cls(hostport(hub.nats_url), hostport(hub.leaf_url), hostport(hub.url), hub.leaf_url)


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields follow the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_children_gone(pids: set[int], what: str) -> None:
    deadline = time.monotonic() + CHILD_EXIT_TIMEOUT_S
    while alive := {p for p in pids if _alive(p)}:
        if time.monotonic() > deadline:
            for pid in alive:  # ours: spawned by the process this test started
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"{what}: child processes {sorted(alive)} outlived it")
        time.sleep(0.05)


def _process(proc: NodeProcess | HubProcess) -> NodeProcess:
    return proc.node if isinstance(proc, HubProcess) else proc


def crash(proc: NodeProcess | HubProcess) -> None:
    """SIGKILL the process; wait until its nats-server (which gets SIGTERM on parent death) is gone."""
    pid = _process(proc).proc.pid
    children = descendants(pid)
    proc.kill()
    _wait_children_gone(children, f"SIGKILLed pid {pid}")


def shut_down(proc: NodeProcess | HubProcess) -> bool:
    """SIGTERM; SIGKILL if it has not exited after STOP_GRACE_S. True if it stopped by itself.

    Either way the process and its nats-server are gone afterwards; for the
    tests here a stop is a partition, whichever way it ends.
    """
    node = _process(proc)
    children = descendants(node.proc.pid)
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
    try:
        node.proc.wait(timeout=STOP_GRACE_S)
        clean = node.proc.returncode == 0
    except subprocess.TimeoutExpired:
        log.warning("pid %d still running %.0f s after SIGTERM; killing it", node.proc.pid, STOP_GRACE_S)
        clean = False
    node.kill()  # SIGKILL if it is still running; closes the pipe either way
    _wait_children_gone(children, f"stopped pid {node.proc.pid}")
    return clean


@dataclass
class Processes:
    """Every hub and node of one test; whatever still runs is killed on exit."""

    started: list[NodeProcess | HubProcess] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def hub(self, data_dir: Path, at: HubAddress | None = None) -> HubProcess:
        """Start a hub; ``at`` pins it to the ports of an earlier run."""
        ports = {} if at is None else {"nats": at.nats, "leaf": at.leaf, "http": at.http}
        hub = start_hub(data_dir, **ports)
        self.started.append(hub)
        return hub

    def node(self, data_dir: Path, *, hub: str, http: str = "127.0.0.1:0") -> NodeProcess:
        node = start_node(data_dir, hub=hub, http=http)
        self.started.append(node)
        return node

    def client(self, url: str, token: str) -> httpx.Client:
        """An authenticated HTTP client, closed on exit; tokens outlive restarts (the key is on disk)."""
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.clients.append(c)
        return c

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Kill what still runs (the test is over; its data is not needed) and wait for the children."""
        for c in self.clients:
            c.close()
        children: set[int] = set()
        for proc in reversed(self.started):
            node = _process(proc)
            if node.proc.poll() is None:
                children |= descendants(node.proc.pid)
            proc.kill()  # also closes the pipes of the ones already dead
        _wait_children_gone(children, "test teardown")

    def logs(self) -> str:
        """Every process's output, for failure messages."""
        parts = []
        for proc in self.started:
            node = _process(proc)
            parts.append(f"--- {' '.join(node.proc.args[2:5])} (pid {node.proc.pid})\n{node.log[-4000:]}")
        return "\n".join(parts)


def replication(c: httpx.Client) -> dict[str, Any]:
    """``GET /api/v1/replication`` of a node or a hub."""
    response = c.get("/api/v1/replication")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def all_tickets(c: httpx.Client, path: str = "/api/v1/tickets", **params: str) -> dict[str, dict[str, Any]]:
    """Every ticket a list endpoint serves, following the cursor, by id."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        query = {**params, "limit": "200", **({"cursor": cursor} if cursor else {})}
        response = c.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        for item in page["items"]:
            found[item["id"]] = item
        cursor = page["next_cursor"]
        if not cursor:
            return found


def node_id(data_dir: Path) -> str:
    return (data_dir / "node-id").read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class Progress:
    """A hub's merge progress for one origin, from ``replication_progress``."""

    contiguous_seq: int
    max_seq: int
    ops_merged: int  # distinct sequence numbers merged: a redelivery does not count again
    out_of_order: int  # rows left in ``replication_seen``: merged beyond a gap


def hub_progress(hub_dir: Path, region: str, origin: str) -> Progress | None:
    """Read the hub's region database directly (read-only), bypassing its API."""
    conn = _read_only(hub_dir / "regions" / f"{region}.db")
    try:
        row = conn.execute(
            "SELECT contiguous_seq, max_seq, ops_merged FROM replication_progress WHERE origin = ?", (origin,)
        ).fetchone()
        seen = conn.execute("SELECT count(*) FROM replication_seen WHERE origin = ?", (origin,)).fetchone()
    finally:
        conn.close()
    return None if row is None else Progress(int(row[0]), int(row[1]), int(row[2]), int(seen[0]))


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def field_version(db: Path, entity: str, record_id: str, name: str) -> tuple[int, str]:
    """The (HLC, writer node) a replica's database holds for one field: what LWW compares."""
    conn = _read_only(db)
    try:
        row = conn.execute(
            "SELECT hlc, node FROM field_versions WHERE entity = ? AND record_id = ? AND field = ?",
            (entity, record_id, name),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"{db} has no version of {entity}/{record_id}.{name}"
    return int(row[0]), str(row[1])


def node_confirmed_seq(node_dir: Path) -> int:
    """The hub confirmation a node has persisted (``hub_acked_seq``): where it resends from after a crash."""
    conn = _read_only(node_dir / "edgecare.db")
    try:
        row = conn.execute("SELECT value FROM node_meta WHERE key = 'hub_acked_seq'").fetchone()
    finally:
        conn.close()
    return 0 if row is None else int(row[0])


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold ``db``'s write lock (``BEGIN IMMEDIATE``) for the block: the owner's writes wait.

    Each write of the store waits up to its busy timeout (10 s) and then fails;
    end the block (or the owner) within that time of the first blocked write.
    """
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def merger_ack_pending(nats_url: str) -> int:
    """Operation batches the hub's merger has fetched and not yet acknowledged (JetStream's count)."""

    async def ask() -> int:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
        try:
            info = await nc.jetstream(timeout=5).consumer_info(HUB_OPS_STREAM, MERGER_DURABLE)
            return int(info.num_ack_pending or 0)
        finally:
            await nc.close()

    return asyncio.run(ask())
