"""Routing benchmarks: the pure engine at 10,000 agents, and OfferContact over gRPC next to a bare echo.

Run: ``.venv/bin/python -m bench.routing [--agents 10000] [--skills 200] [--contacts 60000] [--json]``
(``--make-trace [PATH]`` writes the committed sample trace instead; see `poisson_trace`).

1. **engine**: one `RoutingEngine` with ``--agents`` agents and one queue per skill (``--skills``).
   Agents hold 3-8 skills (levels 1-5, popular skills more often), speak 1-3 of six languages,
   take one voice call (a fifth also 2-3 chats) and wrap up 5-30 s. Queues need level 2-4 on
   entry, relax one level after 30 s and waive the skill after 60 s (any agent speaking the
   language), offer a callback after 300 s, and rotate through the four strategies. Contacts
   arrive as a Poisson stream sized for 90 % of the voice slots, pick a queue by a Zipf-like
   popularity, a language by weight, a VIP tier (10 % above standard), and hang up after an
   exponential patience (mean 180 s) if still waiting. Everything runs in virtual time, as
   ``edgecare routing replay`` does: offers are accepted at once, releases come after a
   lognormal handle time (mean 240 s), `tick` is driven by `next_deadline()`. After
   ``--warmup`` contacts (not measured) the next ``--contacts`` are measured. A *decision* is
   an `enqueue` (routes the arriving contact) or a `release` (routes the freed agent to the
   next waiting contact); each call is timed with ``perf_counter_ns``. Decisions per second =
   decisions / time spent inside those calls; the loop rate includes every engine call and
   the benchmark's own bookkeeping.
2. **grpc**: the node's call-control server (``edge_node.rpc.serve_grpc``) on 127.0.0.1 port 0
   with a small roster, and a bare ``grpc.aio`` unary echo (generic handler, bytes in and
   out, no protobuf) on another port of the same process. The load comes from a grpc.aio
   client in a child process (so it shares no event loop with the servers): ``--grpc-calls``
   unary calls at a fixed offered rate (``--grpc-rate`` per second, open loop: each call
   starts at its scheduled instant whether or not earlier ones returned), after
   ``--grpc-warmup`` unmeasured calls one at a time; latency runs from the start of a call to
   its response. Runs: echo, OfferContact, echo again; the ratio is OfferContact over both
   echo runs pooled. Both clients build and serialize the same OfferContactRequest per call
   (the echo sends its bytes back). The node's server is the real one: the switchboard, the
   engine (one queue, 8 agents who are busy after the first offers, so the rest queue: the
   full admission path with position and expected wait), and call records written to SQLite
   (synchronous FULL) by the recorder meanwhile. Skipped, with the reason, when the server
   module or the generated stubs are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import heapq
import io
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    Assigned,
    Channel,
    Contact,
    ContactAssigned,
    ContactCallbackOffered,
    ContactRefused,
    QueueConfig,
    RelaxationStep,
    RoutingEngine,
    RoutingEvent,
    Strategy,
    VipTier,
)
from edge_node.replay import TraceContact

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TRACE = ROOT / "bench" / "traces" / "sample_trace.csv"
LANGUAGES = (("en", 0.45), ("zh", 0.25), ("de", 0.12), ("es", 0.08), ("fr", 0.06), ("ar", 0.04))
STRATEGIES = tuple(Strategy)
TIERS = ((VipTier.STANDARD, 0.9), (VipTier.SILVER, 0.06), (VipTier.GOLD, 0.03), (VipTier.PLATINUM, 0.01))
INQUIRIES = {
    "billing": ("invoice", "payment_failed", "refund"),
    "tech": ("no_signal", "slow_data", "device"),
    "general": ("plan_change", "address", "other"),
}
SAMPLE_QUEUES = (("billing", 0.5), ("tech", 0.3), ("general", 0.2))
T = TypeVar("T")


# --- traces ---------------------------------------------------------------------------------


def poisson_trace(
    rng: random.Random,
    *,
    contacts: int,
    calls_per_hour: float,
    mean_handle_s: float,
    handle: str = "exponential",
    mean_patience_s: float | None = None,
    queues: Sequence[tuple[str, float]] = (),
    languages: Sequence[tuple[str, float]] = (("en", 1.0),),
    tiers: Sequence[tuple[VipTier, float]] = ((VipTier.STANDARD, 1.0),),
    chat_share: float = 0.0,
) -> list[TraceContact]:
    """A trace of Poisson arrivals, the assumptions of Erlang C when handle is exponential and patience None.

    Args:
        rng: The only source of randomness: the same seed gives the same trace.
        contacts: How many contacts.
        calls_per_hour: Arrival rate; gaps are exponential with mean 3600 / calls_per_hour.
        mean_handle_s: Mean handle time.
        handle: ``exponential`` (Erlang C's assumption) or ``lognormal`` (sigma 0.8, closer to
            real call centres: Brown et al., JASA 2005).
        mean_patience_s: Exponential patience with this mean; None never abandons.
        queues: (queue id, share) to fill the queue column and inquiry type; empty leaves both empty.
        languages: (language, share).
        tiers: (VIP tier, share).
        chat_share: Share of contacts on chat instead of voice.
    """
    sigma = 0.8
    mu = math.log(mean_handle_s) - sigma * sigma / 2
    rows, at = [], 0.0
    for i in range(contacts):
        at += rng.expovariate(calls_per_hour / 3600)
        handle_s = (
            rng.expovariate(1 / mean_handle_s) if handle == "exponential" else rng.lognormvariate(mu, sigma)
        )
        queue = _pick(rng, queues) if queues else None
        rows.append(
            TraceContact(
                line=i + 2,
                arrival_s=round(at, 3),
                handle_s=max(0.001, round(handle_s, 3)),
                channel=Channel.CHAT if rng.random() < chat_share else Channel.VOICE,
                language=_pick(rng, languages),
                tier=_pick(rng, tiers),
                inquiry_type=None if queue is None else rng.choice(INQUIRIES.get(queue, ("other",))),
                patience_s=math.inf
                if mean_patience_s is None
                else round(rng.expovariate(1 / mean_patience_s), 3),
                queue=queue,
            )
        )
    return rows


def trace_csv(rows: Sequence[TraceContact], *, comment: str = "") -> str:
    """The CSV text of a trace, in the format `edge_node.replay.parse_trace` reads."""
    out = io.StringIO()
    for line in comment.splitlines():
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ("arrival_s", "handle_s", "channel", "language", "tier", "inquiry_type", "patience_s", "queue")
    )
    for r in rows:
        patience = "" if r.patience_s == math.inf else f"{r.patience_s:g}"
        writer.writerow(
            (
                f"{r.arrival_s:.3f}",
                f"{r.handle_s:.3f}",
                r.channel,
                r.language or "",
                r.tier,
                r.inquiry_type or "",
                patience,
                r.queue or "",
            )
        )
    return out.getvalue()


def sample_trace_text() -> str:
    """The committed sample: 2,000 contacts for deploy/roster.example.toml (seed 20260523)."""
    rows = poisson_trace(
        random.Random(20260523),
        contacts=2000,
        calls_per_hour=150,
        mean_handle_s=200,
        handle="lognormal",
        mean_patience_s=240,
        queues=SAMPLE_QUEUES,
        languages=(("en", 0.7), ("zh", 0.3)),
        tiers=TIERS,
        chat_share=0.1,
    )
    comment = (
        "EdgeCare sample contact trace: 2,000 Poisson arrivals (150 per hour), lognormal handle\n"
        "times (mean 200 s), exponential patience (mean 240 s); queues billing/tech/general.\n"
        "Made by `python -m bench.routing --make-trace` (seed 20260523); replay it with\n"
        "edgecare routing replay bench/traces/sample_trace.csv --roster deploy/roster.example.toml"
    )
    return trace_csv(rows, comment=comment)


def make_sample_trace(path: Path) -> None:
    """Write the sample trace to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sample_trace_text(), encoding="utf-8")
    print(f"wrote the sample trace to {path}")


def _pick(rng: random.Random, weighted: Sequence[tuple[T, float]]) -> T:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


# --- 1. the pure engine ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineSettings:
    agents: int
    skills: int
    warmup: int
    contacts: int
    load: float
    mean_handle_s: float
    mean_patience_s: float
    seed: int


def build_engine(
    rng: random.Random, s: EngineSettings
) -> tuple[RoutingEngine, list[str], list[float], float]:
    """The engine with queues and logged-in agents; also the queue ids, their weights, the mean wrap-up."""
    skills = [f"s{k:03d}" for k in range(s.skills)]
    weights = [1 / (k + 1) ** 0.9 for k in range(s.skills)]  # Zipf-like: a few big queues, a long tail
    queues = []
    for k, skill in enumerate(skills):
        level = rng.randint(2, 4)
        queues.append(
            QueueConfig(
                queue_id=skill,
                skill=skill,
                min_level=level,
                strategy=STRATEGIES[k % len(STRATEGIES)],
                steps=(RelaxationStep(30.0, level - 1), RelaxationStep(60.0, None)),
                max_wait_s=300.0,
                overflow_to=skills[0] if k and k % 10 == 0 else None,
            )
        )
    engine = RoutingEngine(queues)
    wraps = []
    for i in range(s.agents):
        held: dict[str, int] = {}
        count = rng.randint(3, 8)
        while len(held) < count:
            held[rng.choices(skills, weights)[0]] = rng.randint(1, 5)
        langs = {_pick(rng, LANGUAGES)}
        while rng.random() < 0.4 and len(langs) < 3:
            langs.add(_pick(rng, LANGUAGES))
        capacity = {Channel.VOICE: 1}
        if rng.random() < 0.2:
            capacity[Channel.CHAT] = rng.randint(2, 3)
        wraps.append(rng.uniform(5, 30))
        agent_id = f"agent{i:05d}"
        engine.add_agent(AgentProfile(agent_id, held, frozenset(langs), capacity, wraps[-1]), 0.0)
        engine.set_agent_state(agent_id, AgentState.AVAILABLE, 0.0)
    return engine, skills, weights, statistics.fmean(wraps)


class EngineRun:
    """One run of the engine benchmark in virtual time (see the module docstring)."""

    def __init__(self, s: EngineSettings) -> None:
        self.s, self.rng = s, random.Random(s.seed)
        started = time.perf_counter()
        self.engine, self.queue_ids, self.weights, mean_wrap_s = build_engine(self.rng, s)
        self.setup_s = time.perf_counter() - started
        self.rate = s.load * s.agents / (s.mean_handle_s + mean_wrap_s)  # contacts per virtual second
        self.heap: list[tuple[float, int, int, str]] = []  # (at, 0 release / 1 abandon, contact, agent)
        self.handle: dict[int, float] = {}
        self.waiting: set[int] = set()
        self.timings: dict[str, list[int]] = {"enqueue": [], "release": [], "other": []}
        self.counts = {"assigned": 0, "abandoned": 0, "left": 0}
        self.measuring = False
        self.now = 0.0
        self.gc_started = 0.0
        self.gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)

    def call(self, kind: str, fn: Callable[..., T], *args: object) -> T:
        t0 = time.perf_counter_ns()
        out = fn(*args)
        if self.measuring:
            self.timings[kind].append(time.perf_counter_ns() - t0)
        return out

    def accept(self, number: int, agent_id: str) -> None:
        self.waiting.discard(number)
        self.counts["assigned"] += self.measuring
        self.handle_events(self.call("other", self.engine.accept, agent_id, f"c{number}", self.now))
        heapq.heappush(self.heap, (self.now + self.handle.pop(number), 0, number, agent_id))

    def handle_events(self, events: list[RoutingEvent]) -> None:
        for event in events:
            if isinstance(event, ContactAssigned):
                self.accept(int(event.contact_id[1:]), event.agent_id)
            elif isinstance(event, ContactCallbackOffered | ContactRefused):
                self.waiting.discard(int(event.contact_id[1:]))
                self.counts["left"] += self.measuring

    def advance(self, until: float) -> None:
        """Releases, abandons and engine deadlines before `until`, in time order."""
        while True:
            deadline = self.engine.next_deadline()
            at = min(self.heap[0][0] if self.heap else math.inf, math.inf if deadline is None else deadline)
            if at >= until:
                return
            self.now = at
            if deadline is not None and deadline <= at:
                self.handle_events(self.call("other", self.engine.tick, at))
                continue
            _, kind, number, agent_id = heapq.heappop(self.heap)
            if kind == 0:
                self.handle_events(self.call("release", self.engine.release, agent_id, f"c{number}", at))
            elif number in self.waiting:
                self.waiting.discard(number)
                self.counts["abandoned"] += self.measuring
                self.handle_events(self.call("other", self.engine.abandon, f"c{number}", at))

    def arrive(self, number: int, mu: float, sigma: float) -> None:
        rng = self.rng
        contact = Contact(
            f"c{number}",
            Channel.CHAT if rng.random() < 0.1 else Channel.VOICE,
            self.now,
            language=_pick(rng, LANGUAGES),
            vip=_pick(rng, TIERS),
        )
        self.handle[number] = rng.lognormvariate(mu, sigma)
        queue_id = rng.choices(self.queue_ids, self.weights)[0]
        decision = self.call("enqueue", self.engine.enqueue, contact, queue_id, self.now)
        if isinstance(decision, Assigned):
            self.accept(number, decision.agent_id)
        else:
            self.waiting.add(number)
            patience_s = rng.expovariate(1 / self.s.mean_patience_s)
            heapq.heappush(self.heap, (self.now + patience_s, 1, number, ""))
        self.handle_events(self.call("other", self.engine.tick, self.now))

    def run(self) -> dict[str, Any]:
        s, sigma = self.s, 0.8
        mu = math.log(s.mean_handle_s) - sigma * sigma / 2
        wall_started = time.perf_counter()
        virtual_started = 0.0
        gc.callbacks.append(self.on_gc)
        try:
            for number in range(s.warmup + s.contacts):
                if number == s.warmup:
                    self.measuring, wall_started, virtual_started = True, time.perf_counter(), self.now
                arrival = self.now + self.rng.expovariate(self.rate)
                self.advance(arrival)
                self.now = arrival
                self.arrive(number, mu, sigma)
        finally:
            gc.callbacks.remove(self.on_gc)
        wall_s = time.perf_counter() - wall_started
        return self.report(wall_s, self.now - virtual_started)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Collector pauses while measuring: they land in whichever engine call is running."""
        if phase == "start":
            self.gc_started = time.perf_counter()
        elif self.measuring:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self.gc_started))

    def report(self, wall_s: float, virtual_s: float) -> dict[str, Any]:
        s, t, c = self.s, self.timings, self.counts
        stats = self.engine.statistics(self.now)
        decisions = t["enqueue"] + t["release"]
        busy = sum(v for k, v in stats.agents_by_state.items() if k is not AgentState.AVAILABLE)
        latency = {
            "decision": decisions,
            "enqueue": t["enqueue"],
            "release": t["release"],
            "other": t["other"],
        }
        return {
            "settings": vars_of(s),
            "setup_s": round(self.setup_s, 2),
            "virtual_s": round(virtual_s, 1),
            "wall_s": round(wall_s, 2),
            "arrival_rate_per_s": round(self.rate, 2),
            "decisions": len(decisions),
            "enqueues": len(t["enqueue"]),
            "releases": len(t["release"]),
            "other_calls": len(t["other"]),
            "decisions_per_s": round(len(decisions) / (sum(decisions) / 1e9)),
            "loop_contacts_per_s": round(s.contacts / wall_s),
            "latency_us": {name: _percentiles(values) for name, values in latency.items()},
            "gc": {
                "collections": len(self.gc_pauses),
                "generation_2": sum(1 for gen, _ in self.gc_pauses if gen == 2),
                "longest_ms": round(max((d for _, d in self.gc_pauses), default=0.0) * 1000, 1),
                "total_ms": round(sum(d for _, d in self.gc_pauses) * 1000, 1),
            },
            "end_state": {
                "agents_not_available": busy,
                "waiting": stats.waiting,
                "answered_share": round(c["assigned"] / s.contacts, 3),
                "abandoned_share": round(c["abandoned"] / s.contacts, 3),
                "callback_or_refused_share": round(c["left"] / s.contacts, 3),
            },
        }


def _percentiles(ns: list[int]) -> dict[str, float]:
    if not ns:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(ns)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] / 1000, 1)

    return {"p50": rank(50), "p99": rank(99), "max": round(ordered[-1] / 1000, 1)}


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --- 2. gRPC ----------------------------------------------------------------------------------

ECHO_METHOD = "/bench.Echo/Echo"


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    rate_per_s: float
    calls: int
    warmup_calls: int


async def _open_loop(send: Any, s: GrpcSettings) -> list[float]:
    """Start `s.calls` calls of `send(i)` at a fixed rate; return each latency in seconds, sorted."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await send(i)
        latencies.append(time.perf_counter() - t0)

    for i in range(s.warmup_calls):  # connection set-up, first-call costs: one at a time, not measured
        await send(-1 - i)
    latencies.clear()
    start = loop.time()
    async with asyncio.TaskGroup() as tg:
        for i in range(s.calls):
            delay = start + i / s.rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(one(i))
    return sorted(latencies)


async def _echo_server() -> tuple[Any, int]:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def bench_grpc(s: GrpcSettings) -> dict[str, Any]:
    """OfferContact round trips next to a bare echo; raises ImportError when the node's server is missing."""
    from edge_node.calls import CallRecorder  # the node's adapters: imported here, so that part (a)
    from edge_node.rpc import serve_grpc  # runs even where they are missing
    from edge_node.store import Store

    engine = RoutingEngine([QueueConfig("bench", "bench")])
    agents = [
        AgentProfile(f"a{i}", {"bench": 3}, frozenset({"en"}), {Channel.VOICE: 1}, 10.0) for i in range(8)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        store = Store(Path(tmp) / "edgecare.db", node_id="bench-node")  # synchronous FULL: the default
        store.open()
        try:
            recorder = CallRecorder(store)
            node, node_port = await serve_grpc(engine, recorder, "127.0.0.1", 0, agents=agents)
            echo_server, echo_port = await _echo_server()
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(recorder.run()), tg.create_task(node.run_timer())]
                    for agent in agents:  # all busy after the first 8 offers; the rest queue (no max_length)
                        node.switchboard.set_agent_state(agent.agent_id, AgentState.AVAILABLE, None)
                    result = await _compare(s, node_port, echo_port)
                    await recorder.wait_flushed()
                    result["records_committed"] = recorder.statistics().committed
                    for task in tasks:
                        task.cancel()
            finally:
                await echo_server.stop(None)
                await node.stop(0)
        finally:
            store.close()
    return result


def offer_request(i: int) -> Any:
    """The OfferContactRequest both clients build and serialize: the node's call and the echo's payload."""
    from proto import callcontrol_pb2 as pb

    return pb.OfferContactRequest(
        contact_id=f"c{i}",
        channel=pb.CHANNEL_VOICE,
        caller_number="+4930123456",
        language="en",
        vip_tier=pb.VIP_TIER_STANDARD,
        inquiry_type="bill_query",
        queue_id="bench",
    )


async def grpc_client(kind: str, port: int, s: GrpcSettings) -> list[float]:
    """The load generator (a child process): `kind` is ``offer`` or ``echo``; sorted latencies in seconds."""
    import grpc

    from proto import callcontrol_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.CallControlStub(channel)  # type: ignore[no-untyped-call]  # generated, unannotated
        echo = channel.unary_unary(ECHO_METHOD)

        async def offer(i: int) -> None:
            await stub.OfferContact(offer_request(i), timeout=10)

        async def send_echo(i: int) -> None:  # the same client-side work: build and serialize a request
            await echo(offer_request(i).SerializeToString(), timeout=10)

        return await _open_loop(offer if kind == "offer" else send_echo, s)


async def _run_client(kind: str, port: int, s: GrpcSettings) -> list[float]:
    """Run `grpc_client` in a child process, so the load generator shares no event loop with the servers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.routing",
        "--grpc-client",
        kind,
        "--grpc-port",
        str(port),
        "--grpc-rate",
        str(s.rate_per_s),
        "--grpc-calls",
        str(s.calls),
        "--grpc-warmup",
        str(s.warmup_calls),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"grpc client ({kind}) exited with {proc.returncode}: {err.decode()[-2000:]}")
    latencies: list[float] = json.loads(out)["latencies_s"]
    return latencies


async def _compare(s: GrpcSettings, node_port: int, echo_port: int) -> dict[str, Any]:
    echo_before = await _run_client("echo", echo_port, s)
    node_lat = await _run_client("offer", node_port, s)
    echo_after = await _run_client("echo", echo_port, s)  # again after: drift between the runs
    node, base = _ms(node_lat), _ms(sorted(echo_before + echo_after))
    return {
        "settings": vars_of(s),
        "payload_bytes": len(offer_request(10**6).SerializeToString()),
        "echo_before": _ms(echo_before),
        "offer_contact": node,
        "echo_after": _ms(echo_after),
        "echo_pooled": base,
        "ratio_p50": _ratio(node["p50"], base["p50"]),
        "ratio_p99": _ratio(node["p99"], base["p99"]),
    }


def _ms(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}

    def rank(p: float) -> float:
        return round(latencies_s[max(0, math.ceil(p / 100 * len(latencies_s)) - 1)] * 1000, 3)

    return {"p50": rank(50), "p99": rank(99), "max": round(latencies_s[-1] * 1000, 3), "n": len(latencies_s)}


def _ratio(a: float, b: float) -> float | None:
    return None if not b or math.isnan(a) or math.isnan(b) else round(a / b, 2)


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("grpcio", "protobuf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def print_engine(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(
        f"engine: {s['agents']} agents, {s['skills']} skills and queues; 3-8 skills per agent, "
        "1-3 of 6 languages, voice 1 (+chat 2-3 for 20 %), wrap-up 5-30 s; "
        "ladder: entry level 2-4, one lower at 30 s, any agent at 60 s"
    )
    print(
        f"  traffic: Poisson {r['arrival_rate_per_s']}/s (offered load {s['load']:.0%} of voice slots), "
        f"lognormal handle mean {s['mean_handle_s']:g} s, patience mean {s['mean_patience_s']:g} s; "
        f"seed {s['seed']}"
    )
    print(
        f"  setup {r['setup_s']} s; warm-up {s['warmup']} contacts, measured {s['contacts']} contacts "
        f"= {r['virtual_s']} s virtual in {r['wall_s']} s wall"
    )
    print(
        f"  decisions: {r['decisions']} ({r['enqueues']} enqueue + {r['releases']} release) -> "
        f"{r['decisions_per_s']:,} decisions/s inside the engine; "
        f"loop {r['loop_contacts_per_s']:,} contacts/s incl. {r['other_calls']} accept/tick/abandon calls"
    )
    for name, p in r["latency_us"].items():
        print(f"  latency {name:<8} p50 {p['p50']:>7} us   p99 {p['p99']:>7} us   max {p['max']:>8} us")
    g = r["gc"]
    print(
        f"  gc while measuring: {g['collections']} collections ({g['generation_2']} of generation 2), "
        f"longest {g['longest_ms']} ms, total {g['total_ms']} ms (inside the timed calls)"
    )
    e = r["end_state"]
    print(
        f"  steady state: {e['agents_not_available']} agents busy at the end, {e['waiting']} waiting; "
        f"of measured contacts {e['answered_share']:.1%} answered, {e['abandoned_share']:.1%} abandoned, "
        f"{e['callback_or_refused_share']:.1%} callback"
    )


def print_grpc(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(
        f"grpc: {s['calls']} unary calls per run at {s['rate_per_s']:g}/s offered (open loop), "
        f"{s['warmup_calls']} warm-up calls; echo payload {r['payload_bytes']} bytes"
    )
    for name in ("echo_before", "offer_contact", "echo_after", "echo_pooled"):
        p = r[name]
        print(f"  {name:<14} p50 {p['p50']:>7.3f} ms   p99 {p['p99']:>7.3f} ms   max {p['max']:>7.3f} ms")
    print(f"  ratio OfferContact / echo (pooled): p50 {r['ratio_p50']}x, p99 {r['ratio_p99']}x")
    print(
        f"  the node's server: one queue, 8 agents (busy after the first offers, so the rest queue); "
        f"{r['records_committed']} call-record writes committed to SQLite (synchronous FULL) meanwhile"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--skills", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=40_000, help="contacts before measuring")
    parser.add_argument("--contacts", type=int, default=60_000, help="measured contacts")
    parser.add_argument("--load", type=float, default=0.9, help="offered load as a share of voice slots")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grpc-rate", type=float, default=500.0, help="offered calls per second")
    parser.add_argument("--grpc-calls", type=int, default=5000)
    parser.add_argument("--grpc-warmup", type=int, default=200, help="unmeasured calls, one at a time")
    parser.add_argument("--skip-grpc", action="store_true")
    parser.add_argument(
        "--grpc-client", choices=("offer", "echo"), help=argparse.SUPPRESS
    )  # the child process
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--make-trace",
        nargs="?",
        const=SAMPLE_TRACE,
        type=Path,
        metavar="PATH",
        help="write the sample trace and exit [default: bench/traces/sample_trace.csv]",
    )
    args = parser.parse_args(argv)
    if args.make_trace is not None:
        make_sample_trace(args.make_trace)
        return
    grpc_settings = GrpcSettings(args.grpc_rate, args.grpc_calls, args.grpc_warmup)
    if args.grpc_client is not None:
        latencies = asyncio.run(grpc_client(args.grpc_client, args.grpc_port, grpc_settings))
        print(json.dumps({"latencies_s": latencies}))
        return
    out: dict[str, Any] = {"machine": machine()}
    if not args.json:
        m = out["machine"]
        print(
            f"machine: {m['cores']} cores ({m['cores_usable']} usable), {m['cpu_model']}; "
            f"Python {m['python']}; {m['platform']}; load avg at start {m['loadavg_at_start']}; "
            + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        )
        print("note: one run on a shared machine; expect 10-30 % run-to-run noise")
    settings = EngineSettings(
        args.agents, args.skills, args.warmup, args.contacts, args.load, 240.0, 180.0, args.seed
    )
    out["engine"] = EngineRun(settings).run()
    if not args.json:
        print_engine(out["engine"])
    if args.skip_grpc:
        out["grpc"] = {"skipped": "--skip-grpc"}
    else:
        try:
            out["grpc"] = asyncio.run(bench_grpc(grpc_settings))
        except ImportError as exc:
            out["grpc"] = {"skipped": str(exc)}
    if args.json:
        print(json.dumps(out))
    elif "skipped" in out["grpc"]:
        print(f"gRPC part skipped: {out['grpc']['skipped']}")
    else:
        print_grpc(out["grpc"])


if __name__ == "__main__":
    main()
