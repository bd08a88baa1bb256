"""What sealing and signing cost replication: the same work with them on and off, in one run.

Run: ``.venv/bin/python -m bench.residency_overhead [--ops 10000] [--rate 100] [--duration-s 10]``

**A. Pipeline, in process** (no network, no other process: isolates the crypto).

1. Make ``--ops`` change-log operations the way the node makes them: a node ``Store`` in a
   temp dir and the node's ``NodeService`` create customers (name, phone, email and address:
   personal), tickets (60% of a known customer), comments and assignments. They are read
   back as the drainer reads them (``Reader.crdt_ops`` + ``customers_of``) in drain batches
   of ``--batch-ops``.
2. **on**, per drain batch, the node's half through the node's own ``Egress`` (opened by
   ``open_node_security``, default residency policy: personal sealed): ``prepare`` (seal,
   ``egress_op``), ``split_batches`` + ``encode_batch``, ``sign`` (``sign_frame``, Ed25519),
   ``record_batch`` (the ``egress_batch`` audit entry, written before publishing); then the
   hub's half as ``cloud_hub.bus`` runs it: ``verify_frame`` against the key enrolled with
   ``Hub.enroll`` (token from ``Hub.issue_enroll_token``), ``decode_batch``, ``policy_of``,
   ``Hub.merge`` with the registered policy (``check_op`` on every op, the egress tally in
   hub.db), and the replay record (``ReplayGuard.remember`` + ``Registry.remember_frames``).
3. **off**: what an all-plain policy without signing would leave: no egress step at all,
   ``split_batches`` + ``encode_batch`` -> ``decode_batch`` -> ``Hub.merge`` without a policy.
4. **on, keys exist**: **on** again over the same ops (into another fresh hub) now that the
   data keys exist: sealing without creating keys (each new key id is a ``keys.db`` and an
   ``audit.db`` transaction, both ``synchronous=FULL``).

Each pass merges into a fresh hub data dir; a warm-up over a few other batches runs both
paths first. Printed: ops/s, per-batch latency (node egress start -> hub merge committed),
time per stage and its share, the ratios on/off, and whether the end states agree (the
region digests of the on and off hubs, sealed fields compared by version, must be equal).
``check_op`` runs inside ``Hub.merge``; it is also timed on its own over the same ops.

**B. End to end, real processes** (``tests.integration.nodeproc``: a hub and one node,
enrolled with a token), twice: the default policy (personal sealed), then a fresh hub and
node with ``node.toml`` setting ``[residency] personal = "plain"``. Signing cannot be
switched off in the product, so B's "plain" run still signs, verifies and audits every
batch: B compares sealing only. Each run:

1. the open-loop load and the lag measurement of ``bench.replication_lag`` (``measure``):
   ``--rate`` creates/s over HTTP for ``--duration-s`` after ``--warmup-s``; lag from the
   201 to the first poll of the hub's region store that shows the ticket;
2. catch-up: stop the node, write ``--backlog-ops`` tickets into its store with
   ``bench.catchup.build_backlog`` (no customer: one data key each, as over HTTP), start it
   again (the hub stays up) and time from ready to backlog 0 (``bench.catchup.watch``).

Ratios are sealed / plain (B) and on / off (A); no timing is asserted. The exit status is 1
only when data went missing or arrived in the wrong form (unequal end states in A, a ticket
never seen, a backlog not drained, or a subject at the hub in the other run's form in B).
Every process started here is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from bench.catchup import build_backlog, get_json, rate_between, watch
from bench.replication_common import (
    REGION,
    SETTINGS,
    CpuMeter,
    LoadMeter,
    api,
    client_values,
    command,
    emit_json,
    machine,
    percentile,
    print_machine,
    ratio,
    rnd,
    stop_quietly,
)
from bench.replication_lag import measure, wait_connected
from cloud_hub.bus import MAX_FRAME_BYTES
from cloud_hub.core.enrollment import EnrollClaim
from cloud_hub.service import Hub
from edge_node.config import CONFIG_FILE_NAME, NodeConfig
from edge_node.egress import Egress
from edge_node.node_security import NodeSecurity, open_node_security
from edge_node.replication import ReplicationSettings, customers_of
from edge_node.service import NodeService
from edge_node.store import Reader, Store
from security.envelope import looks_sealed
from security.frames import verify_frame
from security.pseudonym import looks_pseudonym
from security.replay import ReplayGuard
from security.roles import Role
from security.tokens import Principal
from sync import subjects
from sync.adapters.replica import region_digests
from sync.crdt import Op
from sync.residency import ResidencyPolicy, check_op, entity_forms
from sync.transport.codec import decode_batch, encode_batch, split_batches
from tests.integration.nodeproc import HubProcess, NodeProcess, start_hub, start_node

NODE_ID = "eu-de-bench0001"
HUB_ID = "hub-bench"
AGENT = Principal(Role.AGENT, "bench-agent", issued_at=0, expires_at=None)
MAX_BYTES = ReplicationSettings().batch_max_bytes
STAGES_ON = ("seal", "encode", "sign", "audit", "verify", "decode", "merge", "replay_record")
STAGES_OFF = ("encode", "decode", "merge")
PLAIN_TOML = '[residency]\npersonal = "plain"\n'


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- A. workload: real ops from the node's store and service ------------------------------------


@dataclass
class Workload:
    batches: list[tuple[list[Op], dict[tuple[str, str], str | None]]]  # drain batches + customers
    entities: Counter[str]
    build_s: float


def customer_payload(rng: random.Random, n: int) -> dict[str, object]:
    return {
        "name": f"{rng.choice(('Anna', 'Jonas', 'Mia', 'Lukas', 'Lea'))} Bench-{n}",
        "phone": f"+4930{rng.randrange(10**7, 10**8)}",
        "email": f"customer{n}@example.org",
        "address": f"{rng.randint(1, 300)} Bench Street, Berlin",
        "language": "de",
    }


async def _one_step(
    service: NodeService, rng: random.Random, customers: Sequence[str], tickets: Sequence[str]
) -> tuple[str, str]:
    """One API action of the mix: customer 10%, ticket 50%, comment 20%, assignment 20%.

    Returns what was created (``customer`` or ``ticket`` and its id) for later rounds.
    """
    roll = rng.random()
    if roll < 0.1:
        customer = await service.create_customer(AGENT, customer_payload(rng, rng.randrange(10**9)))
        return "customer", str(customer["id"])
    if roll < 0.6 or not tickets:
        values: dict[str, object] = dict(client_values(rng, customers=False))
        if customers and rng.random() < 0.6:
            values["customer_id"] = rng.choice(customers)
        created = await service.create_ticket(AGENT, values)
        return "ticket", str(created.record["id"])
    ticket_id = rng.choice(tickets)
    if roll < 0.8:
        await service.add_comment(AGENT, ticket_id, {"body": client_values(rng)["description"]})
    else:
        await service.assign(AGENT, ticket_id, {"assignee": f"agent-{rng.randrange(200):03d}"})
    return "update", ticket_id


def _ops_after(seq: int, limit: int, reader: Reader) -> list[Op]:
    return reader.crdt_ops(after_seq=seq, limit=limit)


def _customers(ops: list[Op], reader: Reader) -> dict[tuple[str, str], str | None]:
    return customers_of(reader.conn, ops)


async def build_workload(folder: Path, total: int, per_batch: int, seed: int) -> Workload:
    """``total`` ops made by the node's service (group commits of 200 concurrent actions)."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    store = Store(folder / "edgecare.db", node_id=NODE_ID, synchronous="NORMAL")
    store.open()
    try:
        service = NodeService(store, SETTINGS, region=REGION, entropy=rng.randbytes)
        await service.bootstrap()
        start = store.statistics().last_seq
        made: dict[str, list[str]] = {"customer": [], "ticket": [], "update": []}
        while store.statistics().last_seq - start < total:
            # the steps of one round refer to records of earlier rounds only
            customers, tickets = list(made["customer"]), list(made["ticket"])
            steps = (_one_step(service, rng, customers, tickets) for _ in range(200))
            for kind, record_id in await asyncio.gather(*steps):
                made[kind].append(record_id)
        batches = []
        entities: Counter[str] = Counter()
        seq = start
        while seq < start + total:
            limit = min(per_batch, start + total - seq)
            ops = await store.read(partial(_ops_after, seq, limit))
            found = await store.read(partial(_customers, ops))
            batches.append((ops, found))
            entities.update(op.entity for op in ops)
            seq = ops[-1].seq
    finally:
        store.close()
    return Workload(batches, entities, time.perf_counter() - t0)


# --- A. the pipeline, on and off ---------------------------------------------------------------------


@dataclass
class PassResult:
    name: str
    ops: int
    wall_s: float
    batch_ms: list[float]
    stage_s: dict[str, float]
    messages: int = 0
    wire_bytes: int = 0
    data_keys_created: int = 0
    counters: dict[str, Any] = field(default_factory=dict)
    other_cores: float = 0.0

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.wall_s

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.batch_ms)
        total = sum(self.stage_s.values())
        return {
            "ops": self.ops,
            "seconds": round(self.wall_s, 3),
            "ops_per_s": round(self.ops_per_s),
            "batch_ms_p50": rnd(percentile(lat, 50), 3),
            "batch_ms_p99": rnd(percentile(lat, 99), 3),
            "batch_ms_max": rnd(lat[-1], 3) if lat else None,
            "stage_us_per_op": {k: round(v / self.ops * 1e6, 1) for k, v in self.stage_s.items()},
            "stage_share": {k: round(v / total, 4) for k, v in self.stage_s.items()} if total else {},
            "messages": self.messages,
            "wire_bytes_per_op": round(self.wire_bytes / self.ops) if self.ops else None,
            "data_keys_created": self.data_keys_created,
            "other_processes_cores": self.other_cores,
            **self.counters,
        }


class StageTimer:
    """Adds the time since the last call to a named stage."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages = stages
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.t
        self.t = now


def enroll(hub: Hub, security: NodeSecurity) -> None:
    """Enroll the node's key and register its policy, as the hub's bus does on the node's requests."""
    token = hub.issue_enroll_token(REGION)
    hub.enroll(EnrollClaim(token, NODE_ID, REGION, security.identity.public_key), version="bench")
    policy = security.egress.policy
    hub.register_policy(NODE_ID, policy.version, policy.as_dict())


async def pass_on(hub: Hub, egress: Egress, batches: Sequence[tuple[list[Op], Any]], name: str) -> PassResult:
    """Node egress -> hub verify/decode/check/merge, batch after batch; every stage timed."""
    subject = subjects.ops_subject(REGION, NODE_ID)
    guard = ReplayGuard()
    stages = dict.fromkeys(STAGES_ON, 0.0)
    batch_ms: list[float] = []
    messages = wire = 0
    keys0 = egress.keys.inventory().data_keys_active
    c0 = (hub.counters.ops_merged, dict(hub.counters.refused))
    meter = LoadMeter()
    delivery = 0
    t0 = time.perf_counter()
    for ops, customers in batches:
        start = time.perf_counter()
        clock = StageTimer(stages)
        prepared = egress.prepare(ops, customers)
        clock.lap("seal")
        payloads = [
            encode_batch(b) for b in split_batches(REGION, NODE_ID, prepared.ops, max_bytes=MAX_BYTES)
        ]
        clock.lap("encode")
        frames = [egress.sign(subject, "ops", p, hub.wall_ms()) for p in payloads]
        clock.lap("sign")
        egress.record_batch(ops[0].seq, ops[-1].seq, prepared, size_bytes=sum(map(len, frames)))
        clock.lap("audit")
        verified = []
        for frame in frames:
            delivery += 1
            verified.append(
                (
                    delivery,
                    verify_frame(
                        frame,
                        subject,
                        expected_kind="ops",
                        subject_region=REGION,
                        subject_node=NODE_ID,
                        lookup=hub.enrolled_key,
                        now_ms=hub.wall_ms(),
                        guard=guard,
                        delivery=delivery,
                        max_bytes=MAX_FRAME_BYTES,
                    ),
                )
            )
        clock.lap("verify")
        arrived = [op for _, v in verified for op in decode_batch(v.payload).ops]
        policy = hub.policy_of(NODE_ID, verified[0][1].policy_version)
        clock.lap("decode")
        await hub.merge(REGION, {NODE_ID: arrived}, {NODE_ID: policy})
        clock.lap("merge")
        now = hub.wall_ms()
        seen = [(v.node_id, v.nonce, v.signed_at_ms, d) for d, v in verified]
        for entry in seen:
            guard.remember(*entry)
        guard.prune(now)
        hub.registry.remember_frames(seen, prune_before_ms=now - guard.window_ms)
        clock.lap("replay_record")
        batch_ms.append((time.perf_counter() - start) * 1000)
        messages += len(frames)
        wire += sum(map(len, frames))
    wall = time.perf_counter() - t0
    return PassResult(
        name,
        sum(len(ops) for ops, _ in batches),
        wall,
        batch_ms,
        stages,
        messages,
        wire,
        egress.keys.inventory().data_keys_active - keys0,
        _counters(hub, c0),
        meter.result()["other_processes_cores"],
    )


async def pass_off(hub: Hub, batches: Sequence[tuple[list[Op], Any]], name: str) -> PassResult:
    """Encode -> decode -> merge: what replication does with sealing, signing and checks off."""
    stages = dict.fromkeys(STAGES_OFF, 0.0)
    batch_ms: list[float] = []
    messages = wire = 0
    c0 = (hub.counters.ops_merged, dict(hub.counters.refused))
    meter = LoadMeter()
    t0 = time.perf_counter()
    for ops, _ in batches:
        start = time.perf_counter()
        clock = StageTimer(stages)
        payloads = [encode_batch(b) for b in split_batches(REGION, NODE_ID, ops, max_bytes=MAX_BYTES)]
        clock.lap("encode")
        arrived = [op for p in payloads for op in decode_batch(p).ops]
        clock.lap("decode")
        await hub.merge(REGION, {NODE_ID: arrived})
        clock.lap("merge")
        batch_ms.append((time.perf_counter() - start) * 1000)
        messages += len(payloads)
        wire += sum(map(len, payloads))
    wall = time.perf_counter() - t0
    return PassResult(
        name,
        sum(len(ops) for ops, _ in batches),
        wall,
        batch_ms,
        stages,
        messages,
        wire,
        0,
        _counters(hub, c0),
        meter.result()["other_processes_cores"],
    )


def _counters(hub: Hub, before: tuple[int, dict[str, int]]) -> dict[str, Any]:
    c = hub.counters
    refused = {k: v - before[1].get(k, 0) for k, v in c.refused.items() if v != before[1].get(k, 0)}
    return {"ops_merged": c.ops_merged - before[0], "refused": refused, "quarantined": c.ops_quarantined}


async def region_state(hub: Hub, policy: ResidencyPolicy) -> dict[str, object]:
    """The region's digests with sealed fields compared by version (the shape the hub serves)."""
    forms = entity_forms(policy)
    return await hub.store(REGION).read(lambda r: region_digests(r.conn, REGION, forms))


def time_check_op(batches: Sequence[tuple[list[Op], Any]], egress: Egress) -> float:
    """Seconds ``check_op`` takes over the sealed form of every op (it runs inside ``Hub.merge``)."""
    sealed = [op for ops, customers in batches for op in egress.prepare(ops, customers).ops]
    t0 = time.perf_counter()
    for op in sealed:
        check_op(op, egress.policy, is_sealed=looks_sealed, is_pseudonym=looks_pseudonym)
    return time.perf_counter() - t0


async def run_pipeline(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    progress(f"A: making {args.ops:,} ops through the node's service")
    work = await build_workload(tmp / "source", args.ops + args.warmup_ops, args.batch_ops, args.seed)
    split = 0
    warm: list[tuple[list[Op], Any]] = []
    while split < len(work.batches) and sum(len(o) for o, _ in warm) < args.warmup_ops:
        warm.append(work.batches[split])
        split += 1
    measured = work.batches[split:]
    config = NodeConfig(region=REGION, data_dir=tmp / "node")
    store = Store(tmp / "node" / "edgecare.db", node_id=NODE_ID)
    store.open()
    hubs: list[Hub] = []

    def new_hub(name: str) -> Hub:
        hubs.append(Hub(tmp / name, hub_id=HUB_ID))
        hubs[-1].store(REGION)  # open and migrate before timing
        return hubs[-1]

    security = await open_node_security(config, node_id=NODE_ID, store=store)
    try:
        egress = security.egress
        progress(f"A: warm-up over {sum(len(o) for o, _ in warm):,} other ops, both paths")
        await pass_off(new_hub("warm-off"), warm, "warm-up off")
        warm_hub = new_hub("warm-on")
        enroll(warm_hub, security)
        await pass_on(warm_hub, egress, warm, "warm-up on")
        progress("A: off")
        off_hub = new_hub("hub-off")
        off = await pass_off(off_hub, measured, "off: plain, unsigned, unchecked")
        progress(f"A: off {off.ops_per_s:,.0f} ops/s; on")
        on_hub = new_hub("hub-on")
        enroll(on_hub, security)
        on = await pass_on(on_hub, egress, measured, "on: sealed + signed + checked")
        progress(f"A: on {on.ops_per_s:,.0f} ops/s; on again, data keys existing")
        again_hub = new_hub("hub-on-again")
        enroll(again_hub, security)
        again = await pass_on(again_hub, egress, measured, "on, data keys already exist")
        progress(f"A: on (keys exist) {again.ops_per_s:,.0f} ops/s")
        check_s = time_check_op(measured, egress)
        states = [await region_state(h, egress.policy) for h in (off_hub, on_hub, again_hub)]
    finally:
        security.close()
        store.close()
        for hub in hubs:
            hub.close()
    return {
        "ops": on.ops,
        "batches": len(measured),
        "batch_ops": args.batch_ops,
        "warmup_ops": sum(len(o) for o, _ in warm),
        "entities": dict(work.entities),
        "build_s": round(work.build_s, 1),
        "passes": {p.name: p.summary() for p in (off, on, again)},
        "check_op_us_per_op": round(check_s / on.ops * 1e6, 2),
        "check_op_share_of_on": round(check_s / on.wall_s, 4),
        "end_states_equal": states[0] == states[1] == states[2],
        "ratios": {
            "throughput_on_over_off": ratio(on.ops_per_s, off.ops_per_s),
            "p50_on_over_off": ratio(
                percentile(sorted(on.batch_ms), 50), percentile(sorted(off.batch_ms), 50)
            ),
            "p99_on_over_off": ratio(
                percentile(sorted(on.batch_ms), 99), percentile(sorted(off.batch_ms), 99)
            ),
            "throughput_on_keys_exist_over_off": ratio(again.ops_per_s, off.ops_per_s),
            "p50_on_keys_exist_over_off": ratio(
                percentile(sorted(again.batch_ms), 50), percentile(sorted(off.batch_ms), 50)
            ),
            "p99_on_keys_exist_over_off": ratio(
                percentile(sorted(again.batch_ms), 99), percentile(sorted(off.batch_ms), 99)
            ),
        },
    }


# --- B. end to end, real processes ---------------------------------------------------------------------


def hub_subject_forms(hub: HubProcess) -> dict[str, int]:
    """How the tickets' subjects (personal) are stored at the hub: how many sealed, how many plain."""
    db = hub.node.data_dir / "regions" / f"{REGION}.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT subject FROM tickets WHERE subject IS NOT NULL").fetchall()
    sealed = sum(1 for (subject,) in rows if looks_sealed(subject))
    return {"sealed": sealed, "plain": len(rows) - sealed}


def lag_args(args: argparse.Namespace) -> argparse.Namespace:
    """The settings ``bench.replication_lag.measure`` reads, from ours."""
    return argparse.Namespace(
        rate=args.rate,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        observe="db",
        poll_ms=args.poll_ms,
        poll_limit=200,
        max_connections=64,
        drain_timeout_s=args.drain_timeout_s,
        seed=args.seed,
    )


def catch_up(node: NodeProcess, hub: HubProcess, tokens: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """From the restarted node's ready line until its backlog is 0, with the hub up all along."""
    t0 = time.perf_counter()
    cpu = CpuMeter(node.proc.pid)
    with api(node.url, tokens["supervisor"]) as node_api, api(hub.url, tokens["hub"]) as hub_api:
        before = get_json(node_api, "/api/v1/replication") or {}
        merged0 = int((get_json(hub_api, "/api/v1/replication") or {}).get("ops_merged", 0))
        ticks, zero_s = watch(node_api, hub_api, t0, 0.1, timeout_s)
        node_cores = round(cpu.used_s() / (time.perf_counter() - t0), 2)
    backlog = int(before.get("backlog_ops", 0))
    first, last = int(before.get("confirmed_seq", 0)), int(before.get("changelog_last_seq", 0))
    return {
        "backlog_ops": backlog,
        "backlog_zero_s": rnd(zero_s, 2),
        "ops_per_s": round(backlog / zero_s) if zero_s else None,
        "merge": rate_between(ticks, "merged", merged0, merged0 + backlog),
        "drain": rate_between(ticks, "published", first, last),
        "node_cores": node_cores,
    }


def run_end_to_end(args: argparse.Namespace, tmp: Path, *, personal_plain: bool) -> dict[str, Any]:
    label = "plain" if personal_plain else "sealed"
    hub: HubProcess | None = None
    node: NodeProcess | None = None
    out: dict[str, Any] = {}
    try:
        progress(f"B ({label}): starting a hub and an enrolled node")
        hub = start_hub(tmp / "hub")
        node_dir = tmp / "node"
        if personal_plain:
            node_dir.mkdir(parents=True)
            (node_dir / CONFIG_FILE_NAME).write_text(PLAIN_TOML, encoding="utf-8")
        node = start_node(node_dir, hub=hub)
        tokens = {
            "agent": node.token("agent", name="bench-agent"),
            "supervisor": node.token("supervisor"),
            "hub": hub.token("central_ops"),
        }
        with api(node.url, tokens["supervisor"]) as node_api:
            wait_connected(node_api)
        out["lag"] = uvloop.run(measure(lag_args(args), node, hub, tokens))
        progress(f"B ({label}): stopping the node, writing a backlog of {args.backlog_ops:,} ops")
        out["stopped_node"] = stop_quietly(node=node)
        node = None
        node_id = (node_dir / "node-id").read_text(encoding="utf-8").strip()
        out["backlog"] = build_backlog(node_dir / "edgecare.db", node_id, args.backlog_ops, 1000, args.seed)
        node = start_node(node_dir, hub=hub)
        progress(f"B ({label}): catch-up")
        out["catchup"] = catch_up(node, hub, tokens, args.drain_timeout_s)
        out["subjects_at_hub"] = hub_subject_forms(hub)
    finally:
        out["stopped"] = stop_quietly(node=node, hub=hub)
    return out


# --- main and report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="A: operations per measured pass")
    parser.add_argument("--batch-ops", type=int, default=100, help="A: operations per drain batch")
    parser.add_argument("--warmup-ops", type=int, default=1000, help="A: other operations run first")
    parser.add_argument("--rate", type=float, default=100.0, help="B: offered creates per second")
    parser.add_argument("--duration-s", type=float, default=10.0, help="B: measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="B: unmeasured seconds first")
    parser.add_argument("--backlog-ops", type=int, default=2000, help="B: catch-up backlog per run")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="B: hub store poll interval")
    parser.add_argument("--drain-timeout-s", type=float, default=120.0, help="B: wait this long at most")
    parser.add_argument("--skip-a", action="store_true", help="run part B only")
    parser.add_argument("--skip-b", action="store_true", help="run part A only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = parser.parse_args(argv)
    if min(args.ops, args.batch_ops, args.backlog_ops) < 1 or args.warmup_ops < 0:
        parser.error("--ops, --batch-ops and --backlog-ops must be >= 1, --warmup-ops >= 0")
    if args.rate <= 0 or args.duration_s <= 0:
        parser.error("--rate and --duration-s must be > 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out: dict[str, Any] = {"command": command("bench.residency_overhead"), "machine": machine()}
    out["settings"] = {k: v for k, v in vars(args).items() if k != "json"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecare-bench-residency-") as name:
        tmp = Path(name)
        if not args.skip_a:
            out["pipeline"] = uvloop.run(run_pipeline(args, tmp / "a"))
        if not args.skip_b:
            sealed = run_end_to_end(args, tmp / "b-sealed", personal_plain=False)
            plain = run_end_to_end(args, tmp / "b-plain", personal_plain=True)
            out["end_to_end"] = {"sealed": sealed, "plain": plain, "ratios": e2e_ratios(sealed, plain)}
    out["total_s"] = round(time.perf_counter() - t0, 1)
    out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(out)
    if args.json:
        emit_json(out)
    return 0 if healthy(out) else 1


def e2e_ratios(sealed: dict[str, Any], plain: dict[str, Any]) -> dict[str, float | None]:
    s, p = sealed["lag"], plain["lag"]
    return {
        "lag_p50_sealed_over_plain": ratio(s["lag_from_201_ms"]["p50"], p["lag_from_201_ms"]["p50"]),
        "lag_p99_sealed_over_plain": ratio(s["lag_from_201_ms"]["p99"], p["lag_from_201_ms"]["p99"]),
        "catchup_sealed_over_plain": ratio(sealed["catchup"]["ops_per_s"], plain["catchup"]["ops_per_s"]),
        "node_cpu_under_load_sealed_over_plain": ratio(s["cpu"]["node_cores"], p["cpu"]["node_cores"]),
    }


def healthy(out: dict[str, Any]) -> bool:
    """Everything arrived as configured: A merged every op unrefused into equal end states; B saw
    every ticket at the hub, drained the backlog, and the hub holds the subjects in the run's form."""
    a = out.get("pipeline")
    ok = a is None or (
        a["end_states_equal"]
        and all(p["ops_merged"] == p["ops"] and not p["refused"] for p in a["passes"].values())
    )
    for name, other in (("sealed", "plain"), ("plain", "sealed")):
        run = out.get("end_to_end", {}).get(name)
        if run is not None:
            ok = ok and run["lag"]["unseen"] == 0 and run["lag"]["errors"] == 0
            ok = ok and run["catchup"]["backlog_zero_s"] is not None
            ok = ok and run["subjects_at_hub"][other] == 0 and run["subjects_at_hub"][name] > 0
    return bool(ok)


def print_report(out: dict[str, Any]) -> None:
    print(f"command: {out['command']}")
    print_machine(out["machine"])
    if "pipeline" in out:
        print()
        print_pipeline(out["pipeline"])
    if "end_to_end" in out:
        print()
        print_end_to_end(out["end_to_end"], out["settings"])
    print()
    print(f"total bench time: {out['total_s']} s; load avg at end {out['loadavg_at_end']}")


def print_pipeline(a: dict[str, Any]) -> None:
    print(
        f"A. pipeline in one process, no network: {a['ops']:,} ops in {a['batches']} drain batches of "
        f"{a['batch_ops']} (after a warm-up of {a['warmup_ops']:,} other ops); ops by entity {a['entities']}"
    )
    print(
        "  on:  node Egress.prepare (seal) + split/encode + Egress.sign (Ed25519) + audit entry -> hub "
        "verify_frame + decode + policy_of + Hub.merge(policy: check_op) + replay record"
    )
    print("  off: split/encode -> decode -> Hub.merge without policy; nothing sealed, signed or checked")
    header = (
        f"{'pass':<32} {'ops/s':>8} {'s':>7} {'batch p50 ms':>13} {'p99 ms':>9} {'B/op':>6} "
        f"{'new keys':>9} {'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, r in a["passes"].items():
        print(
            f"{name:<32} {r['ops_per_s']:>8,} {r['seconds']:>7.2f} {r['batch_ms_p50']:>13.2f} "
            f"{r['batch_ms_p99']:>9.2f} {r['wire_bytes_per_op']:>6} {r['data_keys_created']:>9,} "
            f"{r['other_processes_cores']:>6.2f}"
        )
    print("(B/op: wire bytes per op; other: cores other processes used meanwhile, of 2)")
    for name, r in a["passes"].items():
        stages = ", ".join(
            f"{k} {r['stage_us_per_op'][k]:g} us ({r['stage_share'][k]:.1%})" for k in r["stage_share"]
        )
        print(f"  {name}: per op {stages}; merged {r['ops_merged']:,}, refused {r['refused'] or 0}")
    print(
        f"  check_op alone (runs inside merge): {a['check_op_us_per_op']} us/op, "
        f"{a['check_op_share_of_on']:.1%} of the on pass"
    )
    on = next(iter(v for k, v in a["passes"].items() if k.startswith("on:")))
    share = on["stage_share"]
    print(
        f"  share of the on pass: seal {share['seal']:.1%}, sign {share['sign']:.1%}, "
        f"verify {share['verify']:.1%} (audit entry {share['audit']:.1%}, replay record "
        f"{share['replay_record']:.1%})"
    )
    again = a["passes"]["on, data keys already exist"]
    if on["data_keys_created"]:
        key_ms = (on["stage_us_per_op"]["seal"] - again["stage_us_per_op"]["seal"]) * on["ops"] / 1000
        print(
            f"  new data keys: {on['data_keys_created']:,} in the on pass (a customer's, or a record's own "
            f"when it has no customer); seal on - seal keys-exist = {key_ms / on['data_keys_created']:.2f} "
            "ms per new key (a keys.db and an audit.db transaction, both synchronous=FULL)"
        )
    print(
        "  end states equal (region digests of the three hubs, sealed fields by version): "
        f"{a['end_states_equal']}"
    )
    q = a["ratios"]
    print(
        f"  on/off: throughput {q['throughput_on_over_off']}, batch latency p50 {q['p50_on_over_off']}, "
        f"p99 {q['p99_on_over_off']}"
    )
    print(
        f"  on (data keys exist)/off: throughput {q['throughput_on_keys_exist_over_off']}, "
        f"p50 {q['p50_on_keys_exist_over_off']}, p99 {q['p99_on_keys_exist_over_off']}"
    )


def print_end_to_end(b: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"B. end to end, real processes (hub + one enrolled node): {s['rate']:g} creates/s over HTTP for "
        f"{s['duration_s']:g} s after {s['warmup_s']:g} s warm-up (bench.replication_lag, hub store polled "
        f"every {s['poll_ms']:g} ms); then a backlog of {s['backlog_ops']:,} tickets written into the "
        "stopped node's store, drained after its restart"
    )
    print(
        '  sealed: default policy (personal sealed); plain: node.toml [residency] personal = "plain". '
        "Signing, verifying and the audit log cannot be switched off in the product: both runs sign."
    )
    header = (
        f"{'run':<8} {'created':>8} {'lag p50':>8} {'p90':>8} {'p99':>8} {'max':>8} "
        f"{'node cpu':>9} {'catch-up ops/s':>15} {'merge ops/s':>12} {'cpu':>5}"
    )
    print(header)
    print("-" * len(header))
    for name in ("sealed", "plain"):
        run = b[name]
        lag, c = run["lag"], run["catchup"]
        v = lag["lag_from_201_ms"]
        print(
            f"{name:<8} {lag['created']:>8,} {v['p50']:>8} {v['p90']:>8} "
            f"{v['p99']:>8} {v['max']:>8} {lag['cpu']['node_cores']:>9} {c['ops_per_s'] or '-':>15} "
            f"{c['merge']['ops_per_s'] or '-':>12} {c['node_cores']:>5}"
        )
    print(
        "(lag in ms from the 201 to the first hub-store poll showing the ticket; node cpu: cores of the node "
        "and its nats-server under load;\n catch-up: backlog / seconds from the restarted node's ready line "
        "to backlog 0; merge: the hub's rate between first and last merge; cpu: node cores meanwhile)"
    )
    for name in ("sealed", "plain"):
        run = b[name]
        lag, cpu = run["lag"], run["lag"]["cpu"]
        print(
            f"  {name}: offered {lag['offered']:,}, errors {lag['errors']}, unseen {lag['unseen']}, "
            f"achieved {lag['achieved_rate']}/s; poll interval p99 {lag['poll']['interval_ms_p99']} ms; "
            f"hub cpu {cpu['hub_cores']}; machine busy {cpu['machine_busy_cores']} cores, other processes "
            f"{cpu['other_processes_cores']}; hub refused {lag['replication']['hub_refused'] or 0}"
        )
        print(
            f"    backlog 0 after {run['catchup']['backlog_zero_s']} s; ticket subjects at the hub at the "
            f"end: {run['subjects_at_hub']}"
        )
    q = b["ratios"]
    print(
        f"  sealed/plain: lag p50 {q['lag_p50_sealed_over_plain']}, p99 {q['lag_p99_sealed_over_plain']}; "
        f"catch-up throughput {q['catchup_sealed_over_plain']}; node cpu under load "
        f"{q['node_cpu_under_load_sealed_over_plain']}"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes were stopped", file=sys.stderr)
        sys.exit(130)
