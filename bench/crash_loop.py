"""Crash loop: SIGKILL a node under concurrent creates; no answered write may be lost.

Each cycle starts a node on the same data directory, fires concurrent
``POST /api/v1/tickets`` requests (each with its own ``Idempotency-Key``) and,
a random delay after the load started, kills the node with SIGKILL while
requests are in flight. With the process dead, the SQLite file is opened
directly and checked: ``PRAGMA integrity_check`` is ``ok``, every create
answered 201 so far is in ``tickets`` with the subject it was sent with and has
its ``changelog`` operation, and the change-log sequence is exactly 1..max.
Requests that failed with a connection error were never acknowledged: they may
or may not have been applied, and either is correct. After the last cycle the
node is started once more and a sample of the acknowledged tickets is read
back over HTTP.

    .venv/bin/python -m bench.crash_loop --cycles 30

``tests/integration/test_crash.py`` runs the same functions with fewer cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from edge_node.config import NodeConfig
from tests.integration.nodeproc import NodeProcess, issue_token, start_node

API = "/api/v1"
TOKEN_NAME = "crash-loop"  # noqa: S105 - the principal's name, not a secret
REQUEST_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 15.0  # after SIGKILL the kernel resets every connection at once
MAX_LISTED = 20  # ids and seq numbers quoted in a failure report


class CrashLoopError(RuntimeError):
    """The experiment itself could not run (not a durability finding)."""


# --- the node process ---------------------------------------------------------------


@contextlib.contextmanager
def node_process(data_dir: Path, *, graceful: bool = False) -> Iterator[NodeProcess]:
    """A started node; on exit it is stopped (SIGTERM if ``graceful``, else SIGKILL), whatever happened."""
    node = start_node(data_dir)
    try:
        yield node
    finally:
        if graceful:
            node.stop()
        else:
            node.kill()


# --- load and kill ------------------------------------------------------------------


@dataclass
class LoadResult:
    """What the clients saw in one cycle."""

    acked: dict[str, str] = field(default_factory=dict)  # ticket id -> subject, answered 201
    sent: int = 0
    in_flight: int = 0
    in_flight_at_kill: int = 0  # sent, not yet answered when SIGKILL went out
    kill_after_ms: float = 0.0  # measured from the start of the load
    errors_before_kill: int = 0
    errors_after_kill: int = 0  # cut by the kill: never acknowledged
    replayed: int = 0
    other_statuses: Counter[int] = field(default_factory=Counter)


async def load_until_killed(
    node: NodeProcess,
    token: str,
    *,
    cycle: int,
    concurrency: int,
    kill_after_s: float,
    key_prefix: str,
) -> LoadResult:
    """Run ``concurrency`` create loops; SIGKILL the node ``kill_after_s`` after they start.

    Returns once every request in flight at the kill has ended, answered or not;
    a response fully received before the process died still counts as answered.
    """
    result = LoadResult()
    numbers = itertools.count()
    killed = asyncio.Event()

    async def creates(client: httpx.AsyncClient) -> None:
        while not killed.is_set():
            n = next(numbers)
            subject = f"crash {cycle}-{n}"
            result.sent += 1
            result.in_flight += 1
            try:
                response = await client.post(
                    f"{API}/tickets",
                    json={"type": "consult", "subject": subject},
                    headers={"Idempotency-Key": f"{key_prefix}-{cycle}-{n}"},
                )
            except httpx.TransportError:  # connection refused, reset or cut mid-answer: not acknowledged
                if killed.is_set():
                    result.errors_after_kill += 1
                else:
                    result.errors_before_kill += 1
                continue
            finally:
                result.in_flight -= 1
            if response.status_code != 201:
                result.other_statuses[response.status_code] += 1
                continue
            body = response.json()
            if body.get("subject") != subject:
                raise CrashLoopError(f"create {subject!r} was answered with another ticket: {body}")
            result.acked[str(body["id"])] = subject
            if response.headers.get("Idempotent-Replayed") == "true":
                result.replayed += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        asyncio.timeout(kill_after_s + DRAIN_TIMEOUT_S),
        httpx.AsyncClient(
            base_url=node.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT_S,
            limits=limits,
        ) as client,
        asyncio.TaskGroup() as workers,
    ):
        started = time.monotonic()
        for _ in range(concurrency):
            workers.create_task(creates(client))
        # Fault injection: the delay *is* the experiment, not a wait for readiness.
        await asyncio.sleep(max(0.0, started + kill_after_s - time.monotonic()))
        if node.proc.poll() is not None:
            raise CrashLoopError(
                f"cycle {cycle}: the node exited by itself (code {node.proc.returncode}) "
                f"before the kill:\n{node.log}"
            )
        node.proc.send_signal(signal.SIGKILL)
        result.kill_after_ms = (time.monotonic() - started) * 1000
        result.in_flight_at_kill = result.in_flight
        killed.set()
    await asyncio.to_thread(node.kill)  # reap the process
    return result


# --- verification on the dead node's file -------------------------------------------


@dataclass(frozen=True)
class DbCheck:
    """The database file of a stopped node, against the acknowledged creates."""

    integrity: str
    tickets: int
    changelog_rows: int
    last_seq: int
    sequence_counter: int  # sqlite_sequence for changelog: the next seq is this + 1
    missing_seqs: tuple[int, ...]  # numbers in 1..last_seq with no changelog row
    lost: tuple[str, ...]  # acknowledged ids not in tickets
    unlogged: tuple[str, ...]  # acknowledged ids without a 'ticket' changelog operation
    altered: tuple[str, ...]  # acknowledged ids stored with another subject

    @property
    def integrity_ok(self) -> bool:
        return self.integrity == "ok"

    @property
    def seq_ok(self) -> bool:
        return not self.missing_seqs and self.sequence_counter == self.last_seq

    @property
    def ok(self) -> bool:
        return self.integrity_ok and self.seq_ok and not (self.lost or self.unlogged or self.altered)

    def problems(self) -> list[str]:
        """Each failed check, with the first few offending ids or numbers."""
        out: list[str] = []
        if not self.integrity_ok:
            out.append(f"integrity_check: {self.integrity}")
        if self.missing_seqs:
            out.append(
                f"{len(self.missing_seqs)} changelog seq gaps in 1..{self.last_seq}: "
                f"{list(self.missing_seqs[:MAX_LISTED])}"
            )
        if self.sequence_counter != self.last_seq:
            out.append(
                f"changelog sequence counter {self.sequence_counter} != max(seq) {self.last_seq} "
                "(the next write would leave a gap)"
            )
        for name, ids in (
            ("acknowledged tickets missing from tickets", self.lost),
            ("acknowledged tickets without a changelog operation", self.unlogged),
            ("acknowledged tickets stored with another subject", self.altered),
        ):
            if ids:
                out.append(f"{len(ids)} {name}: {list(ids[:MAX_LISTED])}")
        return out


def db_path(data_dir: Path) -> Path:
    """The node's SQLite file in a data directory."""
    return NodeConfig(data_dir=data_dir).db_path


def check_database(path: Path, acked: Mapping[str, str]) -> DbCheck:
    """Open the file of a dead node directly and check it against the acknowledged creates.

    Read-only, so the WAL is left as the crash left it: recovering it is the
    next node start's job, and that is part of what the loop exercises.
    """
    if not path.exists():
        raise CrashLoopError(f"no database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
        stored = dict(conn.execute("SELECT id, subject FROM tickets").fetchall())
        logged = {r[0] for r in conn.execute("SELECT record_id FROM changelog WHERE entity = 'ticket'")}
        seqs = [r[0] for r in conn.execute("SELECT seq FROM changelog ORDER BY seq")]
        counter = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'").fetchone()
    finally:
        conn.close()
    last_seq = seqs[-1] if seqs else 0
    present = set(seqs)
    return DbCheck(
        integrity=integrity,
        tickets=len(stored),
        changelog_rows=len(seqs),
        last_seq=last_seq,
        sequence_counter=int(counter[0]) if counter else 0,
        missing_seqs=tuple(s for s in range(1, last_seq + 1) if s not in present),
        lost=tuple(i for i in acked if i not in stored),
        unlogged=tuple(i for i in acked if i not in logged),
        altered=tuple(i for i, s in acked.items() if i in stored and stored[i] != s),
    )


# --- the loop -----------------------------------------------------------------------


@dataclass(frozen=True)
class CycleReport:
    """One start-load-kill-check cycle."""

    cycle: int
    startup_s: float
    load: LoadResult
    check: DbCheck  # cumulative: every create acknowledged in this and earlier cycles
    total_acked: int

    def line(self, cycles: int) -> str:
        c, ld = self.check, self.load
        width = len(str(cycles))
        others = f"  other answers {dict(ld.other_statuses)}" if ld.other_statuses else ""
        return (
            f"cycle {self.cycle + 1:>{width}}/{cycles}  start {self.startup_s:4.2f}s  "
            f"kill at {ld.kill_after_ms:3.0f} ms  sent {ld.sent:4d}  acked {len(ld.acked):4d} "
            f"(total {self.total_acked})  in flight at kill {ld.in_flight_at_kill:3d}  "
            f"cut {ld.errors_after_kill:3d}  "
            f"integrity {c.integrity}  seq 1..{c.last_seq}  lost {len(c.lost)}{others}"
        )


@dataclass
class CrashLoopResult:
    """The whole experiment."""

    seed: int
    data_dir: Path
    reports: list[CycleReport] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> DbCheck:
        if not self.reports:
            raise CrashLoopError("no cycle ran")
        return self.reports[-1].check

    @property
    def integrity_failures(self) -> int:
        return sum(not r.check.integrity_ok for r in self.reports)

    @property
    def cycles_with_loss(self) -> list[int]:
        return [r.cycle for r in self.reports if r.check.lost]

    @property
    def ok(self) -> bool:
        return self.integrity_failures == 0 and self.final.ok

    def summary(self) -> str:
        f = self.final
        errors = sum(r.load.errors_before_kill for r in self.reports)
        in_flight = sum(r.load.in_flight_at_kill for r in self.reports)
        cut = sum(r.load.errors_after_kill for r in self.reports)
        others: Counter[int] = sum((r.load.other_statuses for r in self.reports), Counter())
        lines = [
            f"crash loop summary (seed {self.seed}, data dir {self.data_dir})",
            f"  cycles                                  {len(self.reports)}",
            f"  acknowledged creates                    {len(self.acked)}",
            f"  requests sent                           {sum(r.load.sent for r in self.reports)}",
            f"  requests in flight at a kill            {in_flight}",
            f"  requests cut by a kill (unanswered)     {cut}",
            f"  connection errors before a kill         {errors}",
            f"  answers other than 201                  {dict(others) or 0}",
            f"  lost acknowledged writes                {len(f.lost)}",
            f"  acknowledged without changelog op       {len(f.unlogged)}",
            f"  acknowledged with another subject       {len(f.altered)}",
            f"  seq gaps                                {len(f.missing_seqs)} "
            f"(changelog seq 1..{f.last_seq}, {f.changelog_rows} rows, counter {f.sequence_counter})",
            f"  integrity failures                      {self.integrity_failures}",
            f"  tickets in the database                 {f.tickets} "
            f"({f.tickets - len(self.acked) + len(f.lost)} committed but never answered: allowed)",
        ]
        lines += [f"  FAILED: {p}" for p in f.problems()]
        if self.cycles_with_loss:
            lines.append(f"  first loss seen after cycle {self.cycles_with_loss[0] + 1}")
        return "\n".join(lines)


def kill_delays(rng: random.Random, min_ms: float, max_ms: float) -> Iterator[float]:
    """Seconds from the start of the load to the kill, one per cycle."""
    while True:
        yield rng.uniform(min_ms, max_ms) / 1000


def run_crash_loop(
    data_dir: Path,
    *,
    cycles: int,
    concurrency: int,
    seed: int,
    min_ms: float = 150,
    max_ms: float = 400,
    on_cycle: Callable[[CycleReport], None] | None = None,
) -> CrashLoopResult:
    """Start, load and SIGKILL a node ``cycles`` times on one data directory, checking after each kill.

    The node is never left running, also when a cycle raises.
    """
    delays = kill_delays(random.Random(seed), min_ms, max_ms)
    key_prefix = f"crash-{uuid.uuid4().hex[:12]}"  # a rerun on the same directory sends new keys
    result = CrashLoopResult(seed, data_dir)
    token: str | None = None
    for cycle in range(cycles):
        started = time.monotonic()
        with node_process(data_dir) as node:
            startup_s = time.monotonic() - started
            if token is None:  # the secret is on disk: one token serves every restart
                token = issue_token(data_dir, "agent", TOKEN_NAME)
            load = asyncio.run(
                load_until_killed(
                    node,
                    token,
                    cycle=cycle,
                    concurrency=concurrency,
                    kill_after_s=next(delays),
                    key_prefix=key_prefix,
                )
            )
        result.acked.update(load.acked)
        report = CycleReport(
            cycle, startup_s, load, check_database(db_path(data_dir), result.acked), len(result.acked)
        )
        result.reports.append(report)
        if on_cycle is not None:
            on_cycle(report)
    return result


# --- reading back over HTTP ---------------------------------------------------------


@dataclass(frozen=True)
class HttpCheck:
    """A restarted node answering for a sample of acknowledged tickets."""

    checked: int
    failures: tuple[str, ...]  # "id: status" for each ticket not answered 200 with its subject
    readyz_last_seq: int

    @property
    def ok(self) -> bool:
        return not self.failures


def check_over_http(
    data_dir: Path, acked: Mapping[str, str], *, sample: int, rng: random.Random
) -> HttpCheck:
    """Start the node once more (it recovers the last crash) and GET a sample of acknowledged tickets."""
    ids: Sequence[str] = rng.sample(sorted(acked), min(sample, len(acked)))
    token = issue_token(data_dir, "agent", TOKEN_NAME)
    failures: list[str] = []
    with (
        node_process(data_dir, graceful=True) as node,
        httpx.Client(
            base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S
        ) as client,
    ):
        for ticket_id in ids:
            response = client.get(f"{API}/tickets/{ticket_id}")
            if response.status_code != 200:
                failures.append(f"{ticket_id}: {response.status_code}")
            elif response.json().get("subject") != acked[ticket_id]:
                failures.append(f"{ticket_id}: subject {response.json().get('subject')!r}")
        ready = client.get("/readyz")
        ready.raise_for_status()
    return HttpCheck(len(ids), tuple(failures), int(ready.json()["changelog_last_seq"]))


# --- command line -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.crash_loop",
        description="SIGKILL a node under concurrent creates; check that no answered write is lost.",
    )
    p.add_argument("--cycles", type=int, default=100, help="start-load-kill cycles (default 100)")
    p.add_argument("--concurrency", type=int, default=24, help="concurrent create loops (default 24)")
    p.add_argument("--seed", type=int, default=None, help="seed for the kill delays (default: random)")
    p.add_argument("--data-dir", type=Path, default=None, help="node data directory (default: a temp dir)")
    p.add_argument("--min-ms", type=float, default=150, help="earliest kill after the load starts (ms)")
    p.add_argument("--max-ms", type=float, default=400, help="latest kill after the load starts (ms)")
    p.add_argument("--sample", type=int, default=200, help="acknowledged tickets read back over HTTP")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cycles < 1 or args.concurrency < 1 or not 0 <= args.min_ms <= args.max_ms:
        _parser().error("need --cycles >= 1, --concurrency >= 1 and 0 <= --min-ms <= --max-ms")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with contextlib.ExitStack() as stack:
        data_dir = (
            args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-"))) / "node"
        )
        print(
            f"crash loop: {args.cycles} cycles, {args.concurrency} concurrent creates, "
            f"kill {args.min_ms:g}-{args.max_ms:g} ms after load starts, seed {seed}, data dir {data_dir}",
            flush=True,
        )
        started = time.monotonic()
        result = run_crash_loop(
            data_dir,
            cycles=args.cycles,
            concurrency=args.concurrency,
            seed=seed,
            min_ms=args.min_ms,
            max_ms=args.max_ms,
            on_cycle=lambda r: print(r.line(args.cycles), flush=True),
        )
        http = check_over_http(data_dir, result.acked, sample=args.sample, rng=random.Random(seed))
        print(result.summary())
        answered = http.checked - len(http.failures)
        print(f"  http read-back after restart            {answered}/{http.checked} answered 200")
        print(f"  /readyz changelog_last_seq              {http.readyz_last_seq}")
        print(f"  elapsed                                 {time.monotonic() - started:.1f} s")
        # the restarted node may only add operations (e.g. SLA timers on an old directory), never miss any
        ok = result.ok and http.ok and http.readyz_last_seq >= result.final.last_seq
        for failure in http.failures[:MAX_LISTED]:
            print(f"  FAILED over http: {failure}")
        print("RESULT: " + ("no acknowledged write lost" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
