"""Hub merge throughput (operations/s) next to a raw batched SQLite upsert of the same rows.

Run: ``.venv/bin/python -m bench.hub_merge [--ops 100000] [--ops-per-tx 1000] [--profile] [--json]``

1. Build ``--ops`` ticket operations of one node in memory, as the node's change log would
   ship them: creates (the full record ``edge_node.core.tickets.create`` makes: 22-26 fields,
   every register with its version, the two set fields as OR-set deltas) and, for
   ``--update-share`` of the ops, 3-field updates (status, assignee, updated_at) of a ticket
   created earlier. Records come from a pool of real ``tickets.create`` results with a fresh
   ULID and fresh timestamps each. HLC stamps are an hour old (never ahead of the hub's clock).
   The ops go through the wire codec (``split_batches`` + ``encode_batch``, as the node
   publishes them); decoding them back (what the hub does per JetStream message) is timed
   on its own.
2. **ours**: ``cloud_hub.service.Hub.merge(region, {node: ops})``, the code the hub's consumer
   calls, on a fresh hub data dir: one transaction (one ``Store.write`` job, synchronous=FULL,
   WAL) per ``--ops-per-tx`` ops, awaited one after the other. Then a second pass of the very
   same ops: all stale (idempotent re-delivery after a hub crash), nothing should change.
3. **raw**: the same final column values (what ``merge_op`` materializes) into a table with
   the same columns, primary key and declared indexes as the hub's ``tickets`` table,
   ``executemany`` of ``INSERT ... ON CONFLICT(id) DO UPDATE SET`` (unconditional),
   ``--ops-per-tx`` rows per ``BEGIN``/``COMMIT``, WAL, synchronous=FULL, stdlib sqlite3, one
   thread. Also a second pass and a variant without secondary indexes.

Both end states are compared row by row (must be equal). The ratio is ours / raw. Order:
raw, raw pass 2, ours, ours pass 2, raw without indexes, [profile]. ``--profile`` adds one
more merge of ``--profile-ops`` ops into a fresh hub under cProfile, enabled on the store's
writer thread (where the merge runs), and prints where the time goes; the measured passes
are not profiled. No processes are started; the hub store's writer thread is stopped at
the end, also on error.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvloop

from bench.replication_common import (
    REGION,
    LoadMeter,
    command,
    emit_json,
    machine,
    print_machine,
    ratio,
    rnd,
    ticket_record,
    utc_now,
)
from cloud_hub.service import Hub
from edge_node.ids import ulid
from edge_node.store import Reader
from sync.adapters.replica import contiguous_seq
from sync.crdt import FieldChange, Op, ORSet, Register, Version, set_delta
from sync.entities import TICKET
from sync.entity import MergeKind, StorageValue, Value, sqlite_columns, to_storage
from sync.hlc import HLCTimestamp
from sync.transport.codec import decode_batch, encode_batch, split_batches

NODE_ID = "eu-de-bench0001"
HUB_ID = "hub-bench"
POOL = 1000
UPDATE_STATUSES = ("assigned", "in_progress", "pending_customer", "resolved")


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    ops: list[Op]  # decoded from the wire, what Hub.merge gets
    rows: list[dict[str, StorageValue]]  # per op: the columns merge_op materializes
    creates: int
    updates: int
    wire_batches: list[bytes]
    build_s: float
    encode_s: float
    decode_s: float

    @property
    def register_fields(self) -> int:
        return sum(1 for op in self.ops for c in op.changes.values() if c.kind is MergeKind.REGISTER)

    @property
    def set_fields(self) -> int:
        return sum(1 for op in self.ops for c in op.changes.values() if c.kind is MergeKind.SET)


def changes_of(values: dict[str, Value], version: Version) -> dict[str, FieldChange]:
    """What ``record_local`` records for a write of ``values`` on a record without set state."""
    changes: dict[str, FieldChange] = {}
    for name, value in values.items():
        f = TICKET.field(name)
        if f.merge is MergeKind.SET:
            wanted = value if isinstance(value, frozenset) else frozenset()
            changes[name] = FieldChange(MergeKind.SET, delta=set_delta(ORSet(), wanted, version))
        else:
            changes[name] = FieldChange(MergeKind.REGISTER, register=Register(to_storage(f, value), version))
    return changes


def materialized(op: Op) -> dict[str, StorageValue]:
    """The column values merging ``op`` into an empty or older record writes."""
    row: dict[str, StorageValue] = {"id": op.record_id}
    for name, change in op.changes.items():
        if change.kind is MergeKind.SET and change.delta is not None:
            row[name] = to_storage(TICKET.field(name), ORSet().apply(change.delta).value())
        elif change.register is not None:
            value = change.register.value
            row[name] = value.hex() if isinstance(value, bytes) else value
    return row


def build_workload(total: int, update_share: float, seed: int) -> Workload:
    t0 = time.perf_counter()
    rng = random.Random(seed)
    start = utc_now() - timedelta(hours=1)
    pool = [ticket_record(rng, start) for _ in range(POOL)]
    wall0 = int(start.timestamp() * 1000)
    ops: list[Op] = []
    ids: list[str] = []
    creates = updates = 0
    for seq in range(1, total + 1):
        hlc = HLCTimestamp(wall0 + seq // 8, seq % 8).encode()  # ~8 ops per ms, strictly increasing
        version = Version(hlc, NODE_ID)
        at = start + timedelta(milliseconds=seq // 8)
        if ids and rng.random() < update_share:
            values: dict[str, Value] = {
                "status": rng.choice(UPDATE_STATUSES),
                "assignee": f"agent-{rng.randrange(200):03d}",
                "updated_at": at,
            }
            record_id = rng.choice(ids)
            updates += 1
        else:
            record_id = ulid(wall0 + seq // 8, rng.randbytes(10))
            values = {**pool[seq % POOL], "id": record_id, "created_at": at, "updated_at": at}
            ids.append(record_id)
            creates += 1
        ops.append(Op(TICKET.name, record_id, NODE_ID, seq, hlc, changes_of(values, version)))
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    wire = [encode_batch(b) for b in split_batches(REGION, NODE_ID, ops)]  # node defaults: 1000 ops, 256 KB
    encode_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    decoded = [op for data in wire for op in decode_batch(data).ops]
    decode_s = time.perf_counter() - t2
    if decoded != ops:
        raise RuntimeError("the wire round trip changed the operations")
    rows = [materialized(op) for op in decoded]
    return Workload(decoded, rows, creates, updates, wire, build_s, encode_s, decode_s)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- ours: Hub.merge ------------------------------------------------------------------------


@dataclass
class Pass:
    name: str
    ops: int
    transactions: int
    wall_s: float
    cpu_s: float  # this process, every thread (the store's writer thread included)
    tx_ms: list[float]
    counters: dict[str, Any]
    other_cores: float = 0.0  # CPU other users' processes used meanwhile (2 shared cores)

    @property
    def rate(self) -> float:
        return self.ops / self.wall_s

    def summary(self) -> dict[str, Any]:
        tx = sorted(self.tx_ms)
        return {
            "ops": self.ops,
            "transactions": self.transactions,
            "seconds": round(self.wall_s, 3),
            "ops_per_s": round(self.rate),
            "cpu_cores": round(self.cpu_s / self.wall_s, 2),
            "other_processes_cores": self.other_cores,
            "tx_ms_p50": rnd(tx[len(tx) // 2], 2) if tx else None,
            "tx_ms_max": rnd(tx[-1], 2) if tx else None,
            **self.counters,
        }


async def merge_pass(hub: Hub, name: str, ops: Sequence[Op], per_tx: int) -> Pass:
    before = (hub.counters.ops_merged, hub.counters.ops_stale, dict(hub.counters.refused))
    batches = chunks(ops, per_tx)
    tx_ms: list[float] = []
    meter = LoadMeter()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for batch in batches:
        s = time.perf_counter()
        await hub.merge(REGION, {NODE_ID: batch})
        tx_ms.append((time.perf_counter() - s) * 1000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = hub.counters
    refused = {k: v - before[2].get(k, 0) for k, v in c.refused.items() if v != before[2].get(k, 0)}
    counters = {
        "ops_merged": c.ops_merged - before[0],
        "ops_all_fields_stale": c.ops_stale - before[1],
        "refused": refused,
    }
    other = meter.result()["other_processes_cores"]
    return Pass(name, len(ops), len(batches), wall, cpu, tx_ms, counters, other)


async def run_ours(
    data_dir: Path, work: Workload, per_tx: int
) -> tuple[Pass, Pass, dict[str, Any], tuple[int, str]]:
    hub = Hub(data_dir, hub_id=HUB_ID)
    try:
        store = hub.store(REGION)  # open (and migrate) before timing
        first = await merge_pass(hub, "ours: Hub.merge, fresh", work.ops, per_tx)
        progress(f"ours pass 1: {first.rate:,.0f} ops/s")
        second = await merge_pass(hub, "ours: Hub.merge, all stale", work.ops, per_tx)
        progress(f"ours pass 2 (stale): {second.rate:,.0f} ops/s")

        def sizes(r: Reader) -> dict[str, Any]:
            count = {
                t: r.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("tickets", "field_versions", "set_states", "replication_seen")
            }
            return {"rows": count, "contiguous_seq": contiguous_seq(r.conn, NODE_ID)}

        info = await store.read(sizes)
        state = await store.read(lambda r: table_digest(r.conn))
    finally:
        hub.close()
    info["db_mb"] = db_mb(data_dir, "**/*.db*")
    return first, second, info, state


def db_mb(folder: Path, pattern: str) -> float:
    return round(sum(p.stat().st_size for p in folder.glob(pattern)) / 1e6, 1)


# --- raw: executemany upsert -------------------------------------------------------------------


COLUMNS = list(sqlite_columns(TICKET))


def raw_schema(conn: sqlite3.Connection, indexes: bool) -> None:
    cols = ", ".join(
        f"{n} {t}" + (" PRIMARY KEY" if n == "id" else "") for n, t in sqlite_columns(TICKET).items()
    )
    conn.execute(f"CREATE TABLE tickets ({cols})")
    if indexes:
        for f in TICKET.fields:
            if f.indexed:
                conn.execute(f"CREATE INDEX idx_tickets_{f.name} ON tickets ({f.name})")


def upsert_sql(cols: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
    return (
        f"INSERT INTO tickets ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "  # noqa: S608 - declared names
        f"ON CONFLICT(id) DO UPDATE SET {sets}"
    )


def prepare_raw(
    rows: Sequence[dict[str, StorageValue]], per_tx: int
) -> list[list[tuple[str, list[tuple[Any, ...]]]]]:
    """Per transaction: (statement, parameter rows) groups, creates before updates.

    Every update comes after its create in the op stream, and creates are of distinct
    records, so running all create shapes of a batch before its updates keeps per-record order.
    """
    plan = []
    for batch in chunks(rows, per_tx):
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in batch:
            cols = tuple(row)
            groups.setdefault(cols, []).append(tuple(row.values()))
        ordered = sorted(groups.items(), key=lambda kv: len(kv[0]) <= 4)  # id + 3 columns: an update
        plan.append([(upsert_sql(cols), params) for cols, params in ordered])
    return plan


def raw_pass(
    conn: sqlite3.Connection, name: str, plan: list[list[tuple[str, list[tuple[Any, ...]]]]]
) -> Pass:
    tx_ms = []
    rows = sum(len(p) for tx in plan for _, p in tx)
    meter = LoadMeter()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for tx in plan:
        s = time.perf_counter()
        conn.execute("BEGIN")
        for sql, params in tx:
            conn.executemany(sql, params)
        conn.execute("COMMIT")
        tx_ms.append((time.perf_counter() - s) * 1000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Pass(name, rows, len(plan), wall, cpu, tx_ms, {}, meter.result()["other_processes_cores"])


def open_raw(path: Path, indexes: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    raw_schema(conn, indexes)
    return conn


def table_digest(conn: sqlite3.Connection) -> tuple[int, str]:
    """(row count, sha256) of every ticket's columns in a fixed order, sorted by id."""
    h = hashlib.sha256()
    n = 0
    for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM tickets ORDER BY id"):  # noqa: S608 - declared names
        h.update(repr(row).encode())
        n += 1
    return n, h.hexdigest()


# --- profile ---------------------------------------------------------------------------------------


async def profile_merge(data_dir: Path, ops: Sequence[Op], per_tx: int, top: int) -> str:
    hub = Hub(data_dir, hub_id=HUB_ID)
    prof = cProfile.Profile()
    try:
        store = hub.store(REGION)
        await store.write(lambda tx: prof.enable(), actor="bench")  # runs on the writer thread
        t0 = time.perf_counter()
        for batch in chunks(ops, per_tx):
            await hub.merge(REGION, {NODE_ID: batch})
        wall = time.perf_counter() - t0
        await store.write(lambda tx: prof.disable(), actor="bench")
    finally:
        hub.close()
    buf = io.StringIO()
    print(
        f"cProfile of Hub.merge on the store's writer thread: {len(ops):,} ops in {wall:.2f} s "
        f"({len(ops) / wall:,.0f} ops/s under the profiler)",
        file=buf,
    )
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000, help="operations to merge")
    parser.add_argument("--ops-per-tx", type=int, default=1000, help="operations per merge transaction")
    parser.add_argument(
        "--update-share", type=float, default=0.25, help="share of ops that are 3-field updates"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile a merge of --profile-ops ops")
    parser.add_argument("--profile-ops", type=int, default=20_000)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.ops_per_tx < 1 or not 0 <= args.update_share < 1:
        parser.error("--ops and --ops-per-tx must be >= 1, --update-share in [0, 1)")
    info = machine()
    t_total = time.perf_counter()
    progress(f"building {args.ops:,} ops")
    work = build_workload(args.ops, args.update_share, args.seed)
    wire_bytes = sum(len(b) for b in work.wire_batches)
    plan = prepare_raw(work.rows, args.ops_per_tx)
    profile_text = None
    with tempfile.TemporaryDirectory(prefix="edgecare-bench-merge-") as tmp_name:
        tmp = Path(tmp_name)
        conn = open_raw(tmp / "raw.db", indexes=True)
        try:
            raw1 = raw_pass(conn, "raw upsert, fresh", plan)
            progress(f"raw pass 1: {raw1.rate:,.0f} rows/s")
            raw2 = raw_pass(conn, "raw upsert, same rows again", plan)
            raw_state = table_digest(conn)
        finally:
            conn.close()
        raw_mb = db_mb(tmp, "raw.db*")
        first, second, ours_info, ours_state = uvloop.run(run_ours(tmp / "hub", work, args.ops_per_tx))
        conn = open_raw(tmp / "raw-noidx.db", indexes=False)
        try:
            raw_noidx = raw_pass(conn, "raw upsert, fresh, no secondary indexes", plan)
        finally:
            conn.close()
        if args.profile:
            progress(f"profiling a merge of {args.profile_ops:,} ops")
            profile_text = uvloop.run(
                profile_merge(
                    tmp / "hub-prof", work.ops[: args.profile_ops], args.ops_per_tx, args.profile_top
                )
            )
    total_s = time.perf_counter() - t_total

    fields = Counter(len(op.changes) for op in work.ops if len(op.changes) > 3)
    out: dict[str, Any] = {
        "command": command("bench.hub_merge"),
        "settings": {
            "ops": args.ops,
            "creates": work.creates,
            "updates": work.updates,
            "ops_per_tx": args.ops_per_tx,
            "update_share": args.update_share,
            "fields_per_create": {str(k): v for k, v in sorted(fields.items())},
            "register_fields": work.register_fields,
            "set_fields": work.set_fields,
            "wire_bytes_per_op": round(wire_bytes / args.ops),
            "wire_messages": len(work.wire_batches),
            "origins": 1,
            "store": "WAL, synchronous=FULL (Store default), one Store.write job per transaction",
            "raw": "stdlib sqlite3, same columns/PK/indexes as the hub's tickets table, executemany "
            "INSERT .. ON CONFLICT(id) DO UPDATE SET (unconditional), BEGIN/COMMIT per batch, "
            "WAL, synchronous=FULL",
        },
        "machine": info,
        "prep": {
            "build_s": round(work.build_s, 2),
            "wire_encode_ops_per_s": round(args.ops / work.encode_s),
            "wire_decode_ops_per_s": round(args.ops / work.decode_s),
        },
        "results": {p.name: p.summary() for p in (raw1, raw2, first, second, raw_noidx)},
        "ours_end_state": ours_info,
        "raw_db_mb": raw_mb,
        "end_states_equal": ours_state == raw_state,
        "end_state_rows": ours_state[0],
        "ratios": {
            "ours_over_raw": ratio(first.rate, raw1.rate),
            "ours_over_raw_no_indexes": ratio(first.rate, raw_noidx.rate),
            "ours_stale_over_raw_second_pass": ratio(second.rate, raw2.rate),
            "ours_stale_over_ours_fresh": ratio(second.rate, first.rate),
            "decode_plus_merge_ops_per_s": round(1 / (1 / first.rate + work.decode_s / args.ops)),
        },
        "total_s": round(total_s, 1),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print_report(out)
    if profile_text:
        print()
        print(profile_text)
    if args.json:
        emit_json(out)
    return 0 if out["end_states_equal"] else 1


def print_report(out: dict[str, Any]) -> None:
    s, p = out["settings"], out["prep"]
    print(f"command: {out['command']}")
    print_machine(out["machine"])
    print(
        f"settings: {s['ops']:,} ops from 1 node = {s['creates']:,} creates "
        f"(fields per create: {s['fields_per_create']}) + {s['updates']:,} updates of 3 fields; "
        f"{s['ops_per_tx']} ops per transaction"
    )
    print(
        f"  {s['register_fields']:,} register + {s['set_fields']:,} set field changes; "
        f"{s['wire_bytes_per_op']} wire bytes/op in {s['wire_messages']} messages (node defaults)"
    )
    print(f"  ours: Hub.merge, {s['store']}")
    print(f"  raw:  {s['raw']}")
    print(
        f"prep (not in the rates): build {p['build_s']} s; wire encode {p['wire_encode_ops_per_s']:,} ops/s, "
        f"decode {p['wire_decode_ops_per_s']:,} ops/s (the hub decodes each message before merging)"
    )
    print()
    header = (
        f"{'pass':<42} {'ops/s':>10} {'seconds':>8} {'tx':>5} {'tx p50 ms':>10} {'tx max ms':>10} "
        f"{'cpu':>5} {'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, r in out["results"].items():
        print(
            f"{name:<42} {r['ops_per_s']:>10,} {r['seconds']:>8.2f} {r['transactions']:>5} "
            f"{r['tx_ms_p50']:>10.2f} {r['tx_ms_max']:>10.2f} {r['cpu_cores']:>5.2f} "
            f"{r['other_processes_cores']:>6.2f}"
        )
    print(
        "(cpu: cores used by this process, all threads, during the pass; other: cores used by other\n"
        " users' processes on the same 2 cores meanwhile, from /proc/stat)"
    )
    for name, r in out["results"].items():
        if "ops_merged" in r:
            print(
                f"  {name}: counters ops_merged {r['ops_merged']:,}, all-fields-stale "
                f"{r['ops_all_fields_stale']:,}, refused {r['refused'] or 0}"
            )
    e = out["ours_end_state"]
    print(
        f"  hub store after both passes: {e['rows']} rows, contiguous_seq {e['contiguous_seq']:,}, "
        f"{e['db_mb']} MB on disk (raw table: {out['raw_db_mb']} MB)"
    )
    print(
        f"end states equal (hub tickets table vs raw table, {out['end_state_rows']:,} rows): "
        f"{out['end_states_equal']}"
    )
    print()
    q = out["ratios"]
    print(f"ours / raw (fresh):                    {q['ours_over_raw']}")
    print(f"ours / raw without secondary indexes:  {q['ours_over_raw_no_indexes']}")
    print(f"ours stale pass / raw second pass:     {q['ours_stale_over_raw_second_pass']}")
    print(f"ours stale pass / ours fresh pass:     {q['ours_stale_over_ours_fresh']}")
    print(f"wire decode + merge, combined:         {q['decode_plus_merge_ops_per_s']:,} ops/s")
    print(f"total bench time: {out['total_s']} s; load avg at end {out['loadavg_at_end']}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
