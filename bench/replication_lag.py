"""Node-to-hub replication lag at a fixed offered rate, next to raw JetStream e2e latency.

Run: ``.venv/bin/python -m bench.replication_lag [--rate 1000] [--duration-s 20] [--observe db|http]``

1. Start a hub and a node (real processes, ``tests.integration.nodeproc``; the node is a
   leaf of the hub's nats-server) and wait until the node's heartbeat reached the hub.
2. Offer ``--rate`` ticket creates/s for ``--duration-s`` (after ``--warmup-s`` not measured)
   over HTTP: open loop, request ``i`` is due at ``t0 + i/rate`` whether or not earlier ones
   were answered, on a pool of keep-alive connections (raw HTTP/1.1 on uvloop). A create
   is one change-log operation. For each create the send time, the 201 time and the
   ticket id (``Location``) are kept.
3. Watch when each ticket becomes visible at the hub:
   * ``--observe db`` (default): a thread in this process polls the hub's region store
     (``<hub>/regions/eu-de.db``, read-only connection, WAL) every ``--poll-ms`` for rows
     with a rowid above the last seen. A row is there once the hub's merge transaction has
     committed, which is when the hub's API would show it. Costs the hub nothing.
   * ``--observe http``: poll ``GET /api/v1/tickets?region=eu-de&limit=N`` every
     ``--poll-ms`` (newest first), paging with the cursor while unseen tickets may be older.
   The first poll that shows a ticket gives its seen time, so every lag is overstated by up
   to one poll interval (the real intervals are printed: that is the error bar).
   lag from send = seen - request written; lag from 201 = seen - response read (the node
   had committed by then, so this is replication alone: drain, publish through the leaf
   link, JetStream fsync, hub fetch, decode, merge, commit).
4. Baseline in the same run, with the same hub and node still up: a nats-py publisher on the
   node's leaf nats-server publishes ``--rate`` msgs/s (payload ``--payload-bytes``, about one
   create op on the wire) to a stream on the hub (``domain=hub``, the hub's server runs
   ``sync_interval: always`` like for the node's ops), and a durable pull consumer on the
   hub's server fetches like the hub does (``fetch(64, timeout=1)``) and acks each message.
   Latency = receipt - publish, both stamped in this process (one clock).

Ratios are ours / baseline. Every process started here (hub, node and their nats-servers)
is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import uvloop
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StorageType, StreamConfig

from bench.replication_common import (
    REGION,
    CpuMeter,
    LoadMeter,
    api,
    command,
    create_body,
    emit_json,
    machine,
    node_nats_url,
    percentile,
    print_machine,
    ratio,
    rnd,
    stop_quietly,
)
from bench.tickets_api import location_id, read_response
from tests.integration.nodeproc import HubProcess, NodeProcess, start_hub, start_node

CONNECT_TIMEOUT_S = 10.0
IDLE_MAX_S = 2.0  # drop idle keep-alive connections before uvicorn's 5 s timeout does
BASELINE_STREAM = "BENCH_LAG"
BASELINE_SUBJECT = "bench.lag"
HUB_FETCH_BATCH = 64  # cloud_hub.bus.HubBus default


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(ns: float) -> float:
    return ns / 1e6


# --- load: open loop creates ----------------------------------------------------------------


@dataclass
class Sample:
    due_ns: int
    sent_ns: int = 0
    done_ns: int = 0
    status: int = 0
    ticket_id: str | None = None
    error: str | None = None


class OpenLoop:
    """Creates due at fixed times on a pool of keep-alive connections; never waits for answers."""

    def __init__(self, url: str, token: str, max_connections: int, seed: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (
            f"POST /api/v1/tickets HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.open = 0
        self.max_connections = max_connections
        self.slot = asyncio.Condition()
        self.rng = random.Random(seed)
        self.peak_connections = 0
        self.retries = 0

    async def _conn(self, *, fresh: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection and whether it was reused. Idle ones are dropped before the server's
        keep-alive timeout (uvicorn: 5 s) can close them under us."""
        async with self.slot:
            now = time.monotonic()
            while self.idle and now - self.idle[0][2] > IDLE_MAX_S:
                self.idle.pop(0)[1].close()
                self.open -= 1
            while not (self.idle and not fresh) and self.open >= self.max_connections:
                if fresh and self.idle:  # make room for a new connection
                    self.idle.pop(0)[1].close()
                    self.open -= 1
                    break
                await self.slot.wait()
            if self.idle and not fresh:
                reader, writer, _ = self.idle.pop()
                return reader, writer, True
            self.open += 1
            self.peak_connections = max(self.peak_connections, self.open)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
        except BaseException:
            async with self.slot:
                self.open -= 1
                self.slot.notify()
            raise
        return reader, writer, False

    async def _release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        async with self.slot:
            if conn is None:
                self.open -= 1
            else:
                self.idle.append((conn[0], conn[1], time.monotonic()))
            self.slot.notify()

    async def one(self, sample: Sample) -> None:
        body = create_body(self.rng)
        request = self.head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        fresh = False
        while True:
            try:
                reader, writer, reused = await self._conn(fresh=fresh)
            except (OSError, TimeoutError) as exc:
                sample.error = f"connect: {type(exc).__name__}: {exc}"
                return
            try:
                sample.sent_ns = time.perf_counter_ns()
                writer.write(request)
                status, head, payload = await read_response(reader)
                break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                await self._release(None)
                nothing_read = isinstance(exc, ConnectionError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                )
                if reused and nothing_read and not fresh:  # the server closed an idle keep-alive: retry
                    self.retries += 1
                    fresh = True
                    continue
                sample.error = f"{type(exc).__name__}: {exc}"
                return
        sample.done_ns = time.perf_counter_ns()
        sample.status = status
        if status == 201 and (rid := location_id(head, b"/api/v1/tickets/")) is not None:
            sample.ticket_id = rid.decode()
        elif status != 201:
            sample.error = f"{status}: {payload[:200]!r}"
        await self._release((reader, writer))

    async def run(self, rate: float, duration_s: float) -> list[Sample]:
        total = round(rate * duration_s)
        interval_ns = 1e9 / rate
        samples: list[Sample] = []
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter_ns()
        for i in range(total):
            due = start + round(i * interval_ns)
            wait = (due - time.perf_counter_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            sample = Sample(due)
            samples.append(sample)
            task = asyncio.create_task(self.one(sample))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        return samples

    async def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


# --- observing the hub ---------------------------------------------------------------------------


@dataclass
class Observer:
    """First-seen times of ticket ids at the hub, and the times of every poll."""

    seen: dict[str, int] = field(default_factory=dict)
    polls: list[int] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def intervals_ms(self) -> list[float]:
        return sorted(ms(b - a) for a, b in zip(self.polls, self.polls[1:], strict=False))


def poll_db(obs: Observer, path: Path, poll_s: float) -> None:
    """Thread: new rows of the hub's tickets table, by rowid; seen time = the poll's start."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5)
    try:
        last = conn.execute("SELECT coalesce(max(rowid), 0) FROM tickets").fetchone()[0]
        while not obs.stop.is_set():
            t = time.perf_counter_ns()
            try:
                rows = conn.execute(
                    "SELECT rowid, id FROM tickets WHERE rowid > ? ORDER BY rowid", (last,)
                ).fetchall()
            except sqlite3.OperationalError:
                obs.errors += 1
                rows = []
            obs.polls.append(t)
            for rowid, ticket_id in rows:
                obs.seen.setdefault(ticket_id, t)
                last = rowid
            time.sleep(poll_s)
    finally:
        conn.close()


async def poll_http(
    obs: Observer, url: str, token: str, poll_s: float, limit: int, pending: set[str]
) -> None:
    """Task: the hub's newest tickets; page on while an unseen ticket we created may be older."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        while not obs.stop.is_set():
            t = time.perf_counter_ns()
            oldest_unseen = min(pending, default=None)
            cursor = None
            try:
                for _ in range(100):
                    params: dict[str, Any] = {"region": REGION, "limit": limit}
                    if cursor:
                        params["cursor"] = cursor
                    body = (await c.get("/api/v1/tickets", params=params)).json()
                    items = body.get("items", [])
                    for item in items:
                        if obs.seen.setdefault(item["id"], t) == t:
                            pending.discard(item["id"])
                    cursor = body.get("next_cursor")
                    if not cursor or not items or oldest_unseen is None or items[-1]["id"] < oldest_unseen:
                        break
            except (httpx.HTTPError, ValueError, KeyError):
                obs.errors += 1
            obs.polls.append(t)
            await asyncio.sleep(max(0.0, poll_s - (time.perf_counter_ns() - t) / 1e9))


# --- baseline: JetStream e2e through the leaf link -----------------------------------------------


async def _consume(sub: Any, total: int, latencies: list[float], done: asyncio.Event) -> None:
    """Fetch like the hub's merger does and note receipt - publish stamp for each message."""
    while len(latencies) < total:
        try:
            msgs = await sub.fetch(HUB_FETCH_BATCH, timeout=1)
        except NatsTimeoutError:
            if done.is_set():
                return
            continue
        now = time.perf_counter_ns()
        for m in msgs:
            latencies.append(now - int.from_bytes(m.data[:8], "big"))
            await m.ack()


async def _publish_paced(js: Any, rate: float, total: int, pad: bytes) -> tuple[float, int]:
    """Publish ``total`` stamped messages at ``rate``/s without waiting for acks; (seconds, failures)."""
    pubs: list[asyncio.Task[Any]] = []
    start = time.perf_counter_ns()
    for i in range(total):
        wait = (start + round(i * 1e9 / rate) - time.perf_counter_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        data = time.perf_counter_ns().to_bytes(8, "big") + pad
        pubs.append(asyncio.create_task(js.publish(BASELINE_SUBJECT, data)))
    elapsed = (time.perf_counter_ns() - start) / 1e9
    results = await asyncio.gather(*pubs, return_exceptions=True)
    return elapsed, sum(isinstance(r, BaseException) for r in results)


async def js_baseline(
    leaf_url: str, hub_url: str, rate: float, duration_s: float, payload_bytes: int
) -> dict[str, Any]:
    hub_nc = await nats.connect(hub_url, name="bench-baseline-consumer")
    leaf_nc = await nats.connect(leaf_url, name="bench-baseline-publisher")
    try:
        hjs = hub_nc.jetstream()
        await hjs.add_stream(
            StreamConfig(name=BASELINE_STREAM, subjects=[BASELINE_SUBJECT], storage=StorageType.FILE)
        )
        sub = await hjs.pull_subscribe(
            BASELINE_SUBJECT,
            durable="bench-lag",
            stream=BASELINE_STREAM,
            config=ConsumerConfig(ack_wait=30.0, max_ack_pending=10_000),
        )
        ljs = leaf_nc.jetstream(domain="hub", timeout=5)
        pad = b"x" * max(0, payload_bytes - 8)
        for _ in range(100):  # interest in the subject has to cross the leaf link first
            try:
                await ljs.publish(BASELINE_SUBJECT, (0).to_bytes(8, "big") + pad)
                break
            except Exception:  # noqa: BLE001 - no responders yet; retry
                await asyncio.sleep(0.1)
        for m in await sub.fetch(10, timeout=2):
            await m.ack()
        total = round(rate * duration_s)
        latencies: list[float] = []
        done = asyncio.Event()
        cpu0 = time.process_time()
        consumer = asyncio.create_task(_consume(sub, total, latencies, done))
        elapsed, failures = await _publish_paced(ljs, rate, total, pad)
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer, 30)
        cpu = time.process_time() - cpu0
        lat = sorted(ms(x) for x in latencies)
        return {
            "messages": total,
            "received": len(lat),
            "publish_failures": failures,
            "achieved_rate": round(total / elapsed, 1),
            "p50_ms": rnd(percentile(lat, 50), 3),
            "p99_ms": rnd(percentile(lat, 99), 3),
            "max_ms": rnd(lat[-1], 3) if lat else None,
            "bench_cpu_cores": round(cpu / elapsed, 2),
        }
    finally:
        with contextlib.suppress(Exception):
            await hub_nc.jetstream().delete_stream(BASELINE_STREAM)
        await leaf_nc.close()
        await hub_nc.close()


# --- the run -----------------------------------------------------------------------------------------


def wait_connected(node_api: httpx.Client, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = node_api.get("/api/v1/replication").json()
        if status.get("connected_to_hub"):
            return dict(status)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not reach the hub within {timeout_s} s: {status}")
        time.sleep(0.2)


async def measure(
    args: argparse.Namespace, node: NodeProcess, hub: HubProcess, tokens: dict[str, str]
) -> dict[str, Any]:
    region_db = hub.node.data_dir / "regions" / f"{REGION}.db"
    load = OpenLoop(node.url, tokens["agent"], args.max_connections, args.seed)
    obs = Observer()
    pending: set[str] = set()
    poll_s = args.poll_ms / 1000
    if args.observe == "db":
        watcher: Any = threading.Thread(target=poll_db, args=(obs, region_db, poll_s), daemon=True)
        watcher.start()
    else:
        watcher = asyncio.create_task(
            poll_http(obs, hub.url, tokens["hub"], poll_s, args.poll_limit, pending), name="poll"
        )
    node_api = httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {tokens['supervisor']}"}, timeout=30
    )
    hub_api = httpx.AsyncClient(
        base_url=hub.url, headers={"Authorization": f"Bearer {tokens['hub']}"}, timeout=30
    )
    try:
        if args.warmup_s > 0:
            progress(f"warm-up: {args.warmup_s} s at {args.rate}/s")
            warm = await load.run(args.rate, args.warmup_s)
            await wait_seen(obs, pending, warm, args.drain_timeout_s)
        rep0 = (await node_api.get("/api/v1/replication")).json()
        hub0 = (await hub_api.get("/api/v1/replication")).json()
        progress(f"measuring: {args.duration_s} s at {args.rate}/s")
        cpu_node, cpu_hub = CpuMeter(node.proc.pid), CpuMeter(hub.node.proc.pid)
        cpu_bench0 = time.process_time()
        machine_load = LoadMeter(node.proc.pid, hub.node.proc.pid)
        t0 = time.perf_counter_ns()
        samples = await load.run(args.rate, args.duration_s)
        send_s = (max(s.sent_ns for s in samples) - t0) / 1e9 if samples else math.nan
        load_s = (time.perf_counter_ns() - t0) / 1e9
        cpu = {
            "node_cores": round(cpu_node.used_s() / load_s, 2),
            "hub_cores": round(cpu_hub.used_s() / load_s, 2),
            "bench_cores": round((time.process_time() - cpu_bench0) / load_s, 2),
            **machine_load.result(),
        }
        unseen = await wait_seen(obs, pending, samples, args.drain_timeout_s)
        rep1 = (await node_api.get("/api/v1/replication")).json()
        hub1 = (await hub_api.get("/api/v1/replication")).json()
    finally:
        obs.stop.set()
        if isinstance(watcher, threading.Thread):
            watcher.join(timeout=5)
        else:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await load.close()
        await node_api.aclose()
        await hub_api.aclose()

    ok = [s for s in samples if s.ticket_id]
    lag_send = sorted(ms(obs.seen[s.ticket_id] - s.sent_ns) for s in ok if s.ticket_id in obs.seen)
    lag_ack = sorted(ms(obs.seen[s.ticket_id] - s.done_ns) for s in ok if s.ticket_id in obs.seen)
    http_ms = sorted(ms(s.done_ns - s.sent_ns) for s in ok)
    slip = sorted(ms(s.sent_ns - s.due_ns) for s in samples if s.sent_ns)
    errors = [s.error for s in samples if s.error]
    gaps = obs.intervals_ms()
    merged = hub1["ops_merged"] - hub0["ops_merged"]
    batches = hub1["batches"] - hub0["batches"]
    sent_batches = rep1["batches_sent"] - rep0["batches_sent"]
    ops_sent = rep1["published_seq"] - rep0["published_seq"]
    return {
        "offered": len(samples),
        "created": len(ok),
        "errors": len(errors),
        "error_samples": errors[:3],
        "send_phase_s": round(send_s, 3),
        "achieved_rate": round(len(ok) / send_s, 1) if send_s else None,
        "send_slip_ms_p99": rnd(percentile(slip, 99), 2),
        "peak_connections": load.peak_connections,
        "keepalive_retries": load.retries,
        "seen": len(lag_send),
        "unseen": unseen,
        "lag_from_send_ms": summarize(lag_send),
        "lag_from_201_ms": summarize(lag_ack),
        "http_create_ms": summarize(http_ms),
        "poll": {
            "mode": args.observe,
            "requested_ms": args.poll_ms,
            "interval_ms_p50": rnd(percentile(gaps, 50), 2),
            "interval_ms_p99": rnd(percentile(gaps, 99), 2),
            "interval_ms_max": rnd(gaps[-1], 2) if gaps else None,
            "errors": obs.errors,
        },
        "cpu": cpu,
        "replication": {
            "node_messages_sent": sent_batches,
            "ops_per_message": round(ops_sent / sent_batches, 1) if sent_batches else None,
            "hub_merge_transactions": batches,
            "ops_per_merge_transaction": round(merged / batches, 1) if batches else None,
            "hub_refused": hub1["refused"],
        },
    }


def summarize(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": rnd(percentile(values, 50), 2),
        "p90": rnd(percentile(values, 90), 2),
        "p99": rnd(percentile(values, 99), 2),
        "max": rnd(values[-1], 2) if values else None,
        "min": rnd(values[0], 2) if values else None,
    }


async def wait_seen(obs: Observer, pending: set[str], samples: list[Sample], timeout_s: float) -> int:
    """Wait until every created ticket was seen at the hub; return how many never were."""
    ids = {s.ticket_id for s in samples if s.ticket_id}
    pending.update(i for i in ids if i not in obs.seen)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [i for i in ids if i not in obs.seen]
        if not missing or time.monotonic() > deadline:
            return len(missing)
        await asyncio.sleep(0.05)


def run(
    args: argparse.Namespace, tmp: Path, stopped: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    hub: HubProcess | None = None
    node: NodeProcess | None = None
    try:
        progress("starting hub and node")
        hub = start_hub(tmp / "hub")
        node = start_node(tmp / "node", hub=hub.leaf_url)
        tokens = {
            "agent": node.token("agent", name="bench-agent"),
            "supervisor": node.token("supervisor"),
            "hub": hub.token("central_ops"),
        }
        with api(node.url, tokens["supervisor"]) as node_api:
            wait_connected(node_api)
        procs = {"hub": hub.url, "hub_nats": hub.nats_url, "node": node.url, "node_nats": node_nats_url(node)}
        result = uvloop.run(measure(args, node, hub, tokens))
        progress(f"baseline: JetStream leaf -> hub at {args.rate}/s for {args.baseline_s} s")
        machine_load = LoadMeter(node.proc.pid, hub.node.proc.pid)
        baseline = uvloop.run(
            js_baseline(procs["node_nats"], procs["hub_nats"], args.rate, args.baseline_s, args.payload_bytes)
        )
        baseline["cpu"] = machine_load.result()
        return result, baseline, procs
    finally:
        stopped.update(stop_quietly(node=node, hub=hub))
        progress(f"stopped: {stopped}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered creates (ops) per second")
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--observe", choices=("db", "http"), default="db", help="how to see tickets at the hub"
    )
    parser.add_argument("--poll-ms", type=float, default=None, help="poll interval [db: 5, http: 20]")
    parser.add_argument("--poll-limit", type=int, default=200, help="page size of the http poll (max 200)")
    parser.add_argument("--baseline-s", type=float, default=None, help="baseline seconds [= --duration-s]")
    parser.add_argument(
        "--payload-bytes", type=int, default=2200, help="baseline message size (~1 create op)"
    )
    parser.add_argument("--max-connections", type=int, default=256, help="client connection cap")
    parser.add_argument("--drain-timeout-s", type=float, default=120.0, help="wait for stragglers this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.poll_ms is None:
        args.poll_ms = 5.0 if args.observe == "db" else 20.0
    args.baseline_s = args.baseline_s or args.duration_s
    if args.rate <= 0 or args.duration_s <= 0 or not 1 <= args.poll_limit <= 200:
        parser.error("--rate and --duration-s must be > 0, --poll-limit in [1, 200]")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    info = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecare-bench-lag-") as tmp:
        stopped: dict[str, Any] = {}
        result, baseline, procs = run(args, Path(tmp), stopped)
    out = {
        "command": command("bench.replication_lag"),
        "settings": {
            "rate": args.rate,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "observe": args.observe,
            "poll_ms": args.poll_ms,
            "poll_limit": args.poll_limit if args.observe == "http" else None,
            "baseline_s": args.baseline_s,
            "payload_bytes": args.payload_bytes,
            "node": "python -m edge_node node run --hub <hub leaf> (defaults: sync=FULL, group commit)",
            "hub": "python -m edge_node hub run (JetStream sync_interval: always, fetch 64, Hub.merge)",
        },
        "machine": info,
        "processes": procs,
        "stopped": stopped,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "ours": result,
        "baseline_jetstream": baseline,
        "ratios": {
            "p50_ours_from_send_over_baseline": ratio(result["lag_from_send_ms"]["p50"], baseline["p50_ms"]),
            "p99_ours_from_send_over_baseline": ratio(result["lag_from_send_ms"]["p99"], baseline["p99_ms"]),
            "p50_ours_from_201_over_baseline": ratio(result["lag_from_201_ms"]["p50"], baseline["p50_ms"]),
            "p99_ours_from_201_over_baseline": ratio(result["lag_from_201_ms"]["p99"], baseline["p99_ms"]),
        },
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print_report(out)
    if args.json:
        emit_json(out)
    return 0 if result["unseen"] == 0 and result["errors"] == 0 else 1


def print_report(out: dict[str, Any]) -> None:
    s, r, b, q = out["settings"], out["ours"], out["baseline_jetstream"], out["ratios"]
    print(f"command: {out['command']}")
    print_machine(out["machine"])
    print(
        f"settings: {s['rate']:g} creates/s offered (open loop) for {s['duration_s']:g} s after "
        f"{s['warmup_s']:g} s warm-up; observe={s['observe']} every {s['poll_ms']:g} ms"
        + (f" (limit {s['poll_limit']})" if s["poll_limit"] else "")
    )
    print(f"  node: {s['node']}")
    print(f"  hub:  {s['hub']}")
    print(
        f"  baseline: nats-py publish on the node's leaf server -> hub stream (file, sync always) -> "
        f"pull fetch(64)+ack on the hub's server, {s['rate']:g} msgs/s x {s['baseline_s']:g} s, "
        f"{s['payload_bytes']} B"
    )
    print("  processes: " + ", ".join(f"{k} {v}" for k, v in out["processes"].items()))
    print()
    print(
        f"creates: offered {r['offered']:,}, created {r['created']:,}, errors {r['errors']} "
        f"{r['error_samples'] or ''}; achieved {r['achieved_rate']}/s over {r['send_phase_s']} s; "
        f"send slip p99 {r['send_slip_ms_p99']} ms; peak connections {r['peak_connections']} "
        f"(stale keep-alive retries {r['keepalive_retries']})"
    )
    print(f"seen at the hub: {r['seen']:,}; never seen within the drain timeout: {r['unseen']}")
    header = f"{'ms':<34} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'min':>8}"
    print(header)
    print("-" * len(header))
    rows = (
        ("lag node->hub, from send", r["lag_from_send_ms"]),
        ("lag node->hub, from 201", r["lag_from_201_ms"]),
        ("HTTP create (send->201)", r["http_create_ms"]),
    )
    for name, v in rows:
        print(f"{name:<34} {v['p50']:>8} {v['p90']:>8} {v['p99']:>8} {v['max']:>8} {v['min']:>8}")
    print(
        f"{'baseline JetStream leaf->hub e2e':<34} {b['p50_ms']:>8} {'':>8} {b['p99_ms']:>8} {b['max_ms']:>8}"
    )
    p = r["poll"]
    print(
        f"error bar: lags are overstated by up to one poll interval: {p['mode']} poll interval "
        f"p50 {p['interval_ms_p50']} ms, p99 {p['interval_ms_p99']} ms, max {p['interval_ms_max']} ms "
        f"(poll errors {p['errors']})"
    )
    c, rep = r["cpu"], r["replication"]
    print(
        f"cpu during the measured load (cores): node+its nats-server {c['node_cores']}, "
        f"hub+its nats-server {c['hub_cores']}, this bench {c['bench_cores']}; whole machine busy "
        f"{c['machine_busy_cores']} of 2, of which other users' processes {c['other_processes_cores']}"
    )
    print(
        f"replication: node sent {rep['node_messages_sent']} messages ({rep['ops_per_message']} ops each); "
        f"hub merged in {rep['hub_merge_transactions']} transactions "
        f"({rep['ops_per_merge_transaction']} ops each); hub refused {rep['hub_refused'] or 0}"
    )
    print(
        f"baseline: {b['received']:,}/{b['messages']:,} received, achieved {b['achieved_rate']}/s, "
        f"publish failures {b['publish_failures']}, bench cpu {b['bench_cpu_cores']} cores; machine busy "
        f"{b['cpu']['machine_busy_cores']}, other users' processes {b['cpu']['other_processes_cores']} cores"
    )
    print(
        "stopped: "
        + ", ".join(f"{k} exit {v['exit_code']} after {v['stop_s']} s" for k, v in out["stopped"].items())
        + f"; load avg at end {out['loadavg_at_end']}"
    )
    print()
    for p in ("p50", "p99"):
        print(
            f"ours/baseline {p}: lag from send {q[f'{p}_ours_from_send_over_baseline']}, "
            f"lag from 201 {q[f'{p}_ours_from_201_over_baseline']}"
        )
    print(f"total bench time: {out['total_s']} s")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes were stopped", file=sys.stderr)
        sys.exit(130)
