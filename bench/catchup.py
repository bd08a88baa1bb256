"""Catch-up after a partition: a node's backlog of operations drains into a restarted hub.

Run: ``.venv/bin/python -m bench.catchup [--ops 200000] [--write-batch 5000] [--json]``

1. Start a hub and a node (real processes, ``tests.integration.nodeproc``) and wait until the
   node's heartbeat registered it at the hub (the hub refuses ops of nodes it does not know).
2. Partition: stop the hub, then stop the node.
3. Build the backlog FAST, without HTTP: with the node stopped, open its database in this
   process through the node's own code (``edge_node.store.Store(<node>/edgecare.db,
   node_id=<node>/node-id)``) and insert ``--ops`` tickets with ``Tx.insert(TICKET, values)``,
   ``--write-batch`` per transaction. The values are what ``edge_node.core.tickets.create``
   makes (22-26 fields with the SLA document; a pool of real results, each insert with a
   fresh ULID and the current time). Each insert is one change-log operation.
4. Start the node again (the hub is still down) and check its backlog.
5. Heal: start the hub on the same data directory and the same ports. From that moment,
   poll the node's ``/api/v1/replication`` (published / confirmed seq, backlog) and the hub's
   ``/api/v1/replication`` (``ops_merged``) every ``--poll-s``, until the node's backlog is 0;
   then compare the node's and the hub's ``/api/v1/digests?region=eu-de`` (repeated until
   equal). Times are from the hub's spawn.

Printed: the catch-up time and rate (ops / seconds to backlog 0 and to equal digests), the
node's drain (publish) rate and the hub's merge rate from the two counters over time, a
timeline, the CPU each side used, and the total bench time. Every process started here is
stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.replication_common import (
    REGION,
    CpuMeter,
    LoadMeter,
    api,
    command,
    emit_json,
    hostport,
    machine,
    print_machine,
    rnd,
    stop_quietly,
    ticket_record,
    utc_now,
)
from edge_node.ids import ulid
from edge_node.store import Store, Tx
from sync.entities import TICKET
from sync.entity import Value
from tests.integration.nodeproc import HubProcess, NodeProcess, start_hub, start_node

POOL = 1000


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the backlog, written through the node's own store ------------------------------------------------


def build_backlog(db: Path, node_id: str, total: int, per_tx: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = [ticket_record(rng, utc_now(), customers=False) for _ in range(POOL)]
    store = Store(db, node_id=node_id)
    store.open()
    try:
        before = store.statistics().last_seq

        def insert_many(count: int, offset: int, tx: Tx) -> int:
            now = utc_now()
            ms = int(now.timestamp() * 1000)
            for i in range(count):
                at = now + timedelta(microseconds=i)
                values: dict[str, Value] = {
                    **pool[(offset + i) % POOL],
                    "id": ulid(ms, rng.randbytes(10)),
                    "created_at": at,
                    "updated_at": at,
                }
                tx.insert(TICKET, values)
            return count

        async def write_all() -> None:
            done = 0
            while done < total:
                n = min(per_tx, total - done)
                await store.write(lambda tx, n=n, done=done: insert_many(n, done, tx), actor="bench-backlog")
                done += n
                if done % (per_tx * 10) == 0 or done == total:
                    progress(f"backlog: {done:,}/{total:,} ops written")

        t0 = time.perf_counter()
        asyncio.run(write_all())
        seconds = time.perf_counter() - t0
        after = store.statistics().last_seq
    finally:
        store.close()
    return {
        "ops": after - before,
        "changelog_last_seq": after,
        "seconds": round(seconds, 2),
        "ops_per_s": round((after - before) / seconds),
        "db_mb": round(sum(p.stat().st_size for p in db.parent.glob("edgecare.db*")) / 1e6, 1),
    }


# --- watching the catch-up -----------------------------------------------------------------------------


@dataclass
class Tick:
    t: float  # seconds since the hub was spawned
    published: int
    confirmed: int
    backlog: int
    merged: int | None  # hub ops_merged since its start; None while the hub's API is not up


def get_json(c: httpx.Client, path: str, **params: Any) -> dict[str, Any] | None:
    try:
        r = c.get(path, params=params)
    except httpx.HTTPError:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def watch(
    node_api: httpx.Client, hub_api: httpx.Client, t0: float, poll_s: float, timeout_s: float
) -> tuple[list[Tick], float | None]:
    """Poll both sides until the node's backlog is 0; return the ticks and when it hit 0."""
    ticks: list[Tick] = []
    last_report = 0.0
    while True:
        now = time.perf_counter() - t0
        node = get_json(node_api, "/api/v1/replication")
        hub = get_json(hub_api, "/api/v1/replication")
        if node is not None:
            tick = Tick(
                now,
                node["published_seq"],
                node["confirmed_seq"],
                node["backlog_ops"],
                None if hub is None else hub["ops_merged"],
            )
            ticks.append(tick)
            if now - last_report >= 10:
                last_report = now
                progress(
                    f"t={now:6.1f}s published {tick.published:,} merged {tick.merged} "
                    f"confirmed {tick.confirmed:,} backlog {tick.backlog:,}"
                )
            if tick.backlog == 0:
                return ticks, now
        if now > timeout_s:
            return ticks, None
        time.sleep(poll_s)


def digests_equal(
    node_api: httpx.Client, hub_api: httpx.Client, t0: float, timeout_s: float
) -> dict[str, Any]:
    """Compare both sides' digests until equal (or timeout); each call's time is recorded."""
    tries = []
    while True:
        a = time.perf_counter()
        node = get_json(node_api, "/api/v1/digests", region=REGION)
        b = time.perf_counter()
        hub = get_json(hub_api, "/api/v1/digests", region=REGION)
        c = time.perf_counter()
        tries.append({"node_s": round(b - a, 2), "hub_s": round(c - b, 2)})
        equal = node is not None and node == hub and "entities" in node
        if equal or c - t0 > timeout_s:
            counts = {k: v.get("count") for k, v in (node or {}).get("entities", {}).items()}
            return {"equal": equal, "at_s": round(c - t0, 2), "tries": tries, "counts": counts}
        time.sleep(1.0)


def rate_between(ticks: list[Tick], value: str, start: int, end: int) -> dict[str, Any]:
    """From the first tick where ``value`` moved past ``start`` to the first where it reached ``end``."""
    series = [(t.t, getattr(t, value)) for t in ticks if getattr(t, value) is not None]
    first = next(((t, v) for t, v in series if v > start), None)
    last = next(((t, v) for t, v in series if v >= end), None)
    before_first = None
    if first is not None:
        before_first = max(((t, v) for t, v in series if t < first[0]), default=None)
    if first is None or last is None:
        return {"start_s": None, "end_s": None, "ops_per_s": None}
    begin = before_first if before_first is not None else first  # the move began after this tick
    span = last[0] - begin[0]
    peak = 0.0
    for i in range(len(series)):  # best 5 s window
        j = i
        while j < len(series) and series[j][0] - series[i][0] < 5.0:
            j += 1
        if j < len(series):
            peak = max(peak, (series[j][1] - series[i][1]) / (series[j][0] - series[i][0]))
    return {
        "start_s": round(begin[0], 2),
        "end_s": round(last[0], 2),
        "ops_per_s": round((last[1] - begin[1]) / span) if span > 0 else None,
        "peak_5s_ops_per_s": round(peak) if peak else None,
    }


# --- the run ---------------------------------------------------------------------------------------------


def wait_registered(node_api: httpx.Client, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not (get_json(node_api, "/api/v1/replication") or {}).get("connected_to_hub"):
        if time.monotonic() > deadline:
            raise RuntimeError("the node did not reach the hub")
        time.sleep(0.2)


def run(args: argparse.Namespace, tmp: Path, out: dict[str, Any]) -> None:
    hub: HubProcess | None = None
    node: NodeProcess | None = None
    phases: dict[str, float] = {}
    out["phases_s"] = phases
    try:
        t = time.perf_counter()
        progress("starting hub and node")
        hub = start_hub(tmp / "hub")
        node = start_node(tmp / "node", hub=hub.leaf_url)
        ports = {"nats": hostport(hub.nats_url), "leaf": hostport(hub.leaf_url), "http": hostport(hub.url)}
        leaf_url = hub.leaf_url
        with api(node.url, node.token("supervisor")) as node_api:
            wait_registered(node_api)
        phases["start_and_register"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        progress("partition: stopping the hub, then the node")
        out["stopped_first"] = stop_quietly(hub=hub, node=node)
        hub = node = None
        phases["partition_stop"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        node_dir = tmp / "node"
        node_id = (node_dir / "node-id").read_text(encoding="utf-8").strip()
        progress(f"writing {args.ops:,} ops into {node_dir / 'edgecare.db'} as node {node_id}")
        out["backlog"] = build_backlog(
            node_dir / "edgecare.db", node_id, args.ops, args.write_batch, args.seed
        )
        phases["backlog_build"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        progress("starting the node again (hub still down)")
        node = start_node(node_dir, hub=leaf_url)
        phases["node_restart"] = round(time.perf_counter() - t, 1)
        node_api = api(node.url, node.token("supervisor"))
        node_api.timeout = httpx.Timeout(600)
        before = get_json(node_api, "/api/v1/replication") or {}
        out["node_before_heal"] = before
        backlog = int(before.get("backlog_ops", 0))

        progress(f"heal: starting the hub on {ports}; backlog {backlog:,} ops")
        t0 = time.perf_counter()
        load = LoadMeter(node.proc.pid)
        node_cpu = CpuMeter(node.proc.pid)
        hub = start_hub(tmp / "hub", **ports)
        hub_ready_s = time.perf_counter() - t0
        hub_cpu = CpuMeter(hub.node.proc.pid)  # from ready: the hub's spawn cost is not catch-up work
        hub_api = api(hub.url, hub.token("central_ops"))
        hub_api.timeout = httpx.Timeout(600)
        try:
            ticks, zero_s = watch(node_api, hub_api, t0, args.poll_s, args.timeout_s)
            cpu_window = time.perf_counter() - t0
            machine_load = load.result()
            machine_load["hub_cores"] = round(hub_cpu.used_s() / (cpu_window - hub_ready_s), 2)
            machine_load["node_cores"] = round(node_cpu.used_s() / cpu_window, 2)
            progress(f"backlog 0 at {zero_s} s; comparing digests")
            digests = digests_equal(node_api, hub_api, t0, args.timeout_s + 600)
            after_node = get_json(node_api, "/api/v1/replication") or {}
            after_hub = get_json(hub_api, "/api/v1/replication") or {}
        finally:
            node_api.close()
            hub_api.close()
        phases["catch_up_and_digests"] = round(time.perf_counter() - t0, 1)
        last_seq = int(before.get("changelog_last_seq", 0))
        first_seq = int(before.get("confirmed_seq", 0))
        out["catchup"] = {
            "backlog_ops": backlog,
            "hub_ready_s": round(hub_ready_s, 2),
            "backlog_zero_s": rnd(zero_s, 2),
            "ops_per_s_to_backlog_zero": round(backlog / zero_s) if zero_s else None,
            "digests": digests,
            "ops_per_s_to_equal_digests": round(backlog / digests["at_s"]) if digests["equal"] else None,
            "drain": rate_between(ticks, "published", first_seq, last_seq),
            "merge": rate_between(ticks, "merged", 0, backlog),
            "confirm": rate_between(ticks, "confirmed", first_seq, last_seq),
            "cpu_until_backlog_zero": machine_load,
            "node_after": after_node,
            "hub_after": after_hub,
            "ticks": len(ticks),
        }
        out["timeline"] = [
            {"t": round(k.t, 1), "published": k.published, "merged": k.merged, "confirmed": k.confirmed}
            for k in thin(ticks, 20)
        ]
    finally:
        t = time.perf_counter()
        out["stopped"] = stop_quietly(node=node, hub=hub)
        phases["final_stop"] = round(time.perf_counter() - t, 1)


def thin(ticks: list[Tick], n: int) -> list[Tick]:
    if len(ticks) <= n:
        return ticks
    step = (len(ticks) - 1) / (n - 1)
    return [ticks[round(i * step)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000, help="backlog operations (ticket creates)")
    parser.add_argument("--write-batch", type=int, default=5000, help="backlog inserts per transaction")
    parser.add_argument("--poll-s", type=float, default=0.5, help="how often both sides are asked")
    parser.add_argument("--timeout-s", type=float, default=3600, help="give up on the catch-up after this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.write_batch < 1 or args.poll_s <= 0:
        parser.error("--ops and --write-batch must be >= 1, --poll-s > 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out: dict[str, Any] = {
        "command": command("bench.catchup"),
        "settings": {
            "ops": args.ops,
            "write_batch": args.write_batch,
            "poll_s": args.poll_s,
            "node": "python -m edge_node node run --hub <hub leaf> (defaults: sync=FULL; drain 1000 ops "
            "per read, batches <= 256 KB, one awaited JetStream publish per batch)",
            "hub": "python -m edge_node hub run on the same data dir and ports (JetStream sync_interval: "
            "always; merger fetch(64) -> one Hub.merge transaction per fetch)",
        },
        "machine": machine(),
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecare-bench-catchup-") as tmp:
        run(args, Path(tmp), out)
    out["total_s"] = round(time.perf_counter() - t0, 1)
    out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(out)
    if args.json:
        emit_json(out)
    return 0 if out["catchup"]["digests"]["equal"] else 1


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,}{unit}"


def print_report(out: dict[str, Any]) -> None:
    s, b, c = out["settings"], out["backlog"], out["catchup"]
    print(f"command: {out['command']}")
    print_machine(out["machine"])
    print(
        f"settings: backlog {s['ops']:,} ticket creates, {s['write_batch']} per transaction; "
        f"poll {s['poll_s']} s"
    )
    print(f"  node: {s['node']}")
    print(f"  hub:  {s['hub']}")
    print()
    print(
        f"backlog written through Store/Tx.insert with the node stopped: {b['ops']:,} ops in "
        f"{b['seconds']} s "
        f"({b['ops_per_s']:,} ops/s); node db {b['db_mb']} MB"
    )
    nb = out["node_before_heal"]
    print(
        f"node restarted with the hub down in {out['phases_s']['node_restart']} s: changelog_last_seq "
        f"{fmt(nb.get('changelog_last_seq'))}, confirmed {fmt(nb.get('confirmed_seq'))}, "
        f"backlog {fmt(nb.get('backlog_ops'))}, "
        f"connected_to_hub {nb.get('connected_to_hub')}"
    )
    print()
    print(f"heal (t = 0 at the hub's spawn; hub ready after {c['hub_ready_s']} s):")
    d = c["digests"]
    print(
        f"  backlog 0 at {fmt(c['backlog_zero_s'], ' s')}: "
        f"{fmt(c['ops_per_s_to_backlog_zero'])} ops/s overall"
    )
    print(
        f"  digests equal: {d['equal']} at {d['at_s']} s ({fmt(c['ops_per_s_to_equal_digests'])} ops/s); "
        f"digest calls {d['tries']}; counts {d['counts']}"
    )
    for name, what in (
        ("drain", "node published_seq (PubAck'd by the hub's JetStream)"),
        ("merge", "hub ops_merged"),
        ("confirm", "node confirmed_seq"),
    ):
        r = c[name]
        print(
            f"  {name:<8} {what}: from {fmt(r['start_s'], ' s')} to {fmt(r['end_s'], ' s')}: "
            f"{fmt(r['ops_per_s'])} ops/s (best 5 s window {fmt(r.get('peak_5s_ops_per_s'))} ops/s)"
        )
    cpu = c["cpu_until_backlog_zero"]
    print(
        f"  cpu until backlog 0 (cores): node+nats-server {cpu['node_cores']}, "
        f"hub+nats-server {cpu['hub_cores']} "
        f"(from ready); machine busy {cpu['machine_busy_cores']} of 2, other users' processes "
        f"{cpu['other_processes_cores']}"
    )
    ha = c["hub_after"]
    print(
        f"  hub after: batches {ha.get('batches')}, ops_merged {fmt(ha.get('ops_merged'))}, "
        f"ops_stale {fmt(ha.get('ops_stale'))}, refused {ha.get('refused')}"
    )
    na = c["node_after"]
    print(
        f"  node after: batches_sent {na.get('batches_sent')}, confirmed {fmt(na.get('confirmed_seq'))}, "
        f"backlog {na.get('backlog_ops')}"
    )
    print()
    print(f"{'t s':>7} {'published':>10} {'merged':>10} {'confirmed':>10}")
    for k in out["timeline"]:
        print(f"{k['t']:>7} {k['published']:>10,} {fmt(k['merged']):>10} {k['confirmed']:>10,}")
    print()
    print("phases (s): " + ", ".join(f"{k} {v}" for k, v in out["phases_s"].items()))
    stops = {**{f"first {k}": v for k, v in out.get("stopped_first", {}).items()}, **out["stopped"]}
    print("stops: " + ", ".join(f"{k} exit {v['exit_code']} in {v['stop_s']} s" for k, v in stops.items()))
    verdict = "more than 10 minutes" if out["total_s"] > 600 else "under 10 minutes"
    print(f"total bench time: {out['total_s']} s ({verdict}); load avg at end {out['loadavg_at_end']}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes were stopped", file=sys.stderr)
        sys.exit(130)
