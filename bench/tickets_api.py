"""HTTP load on a real node's ticket API, next to a bare litestar + SQLite baseline.

Run: ``.venv/bin/python -m bench.tickets_api [--duration-s 10] [--concurrency 64] [--json]``

For each target, one after the other (only one server runs at a time):

1. the node: ``python -m edge_node node run`` in a temp dir (``tests.integration.nodeproc``),
   an agent token, then ``POST /api/v1/tickets`` and ``GET /api/v1/tickets/{id}``;
2. the baseline: ``python -m bench.bare_app`` (bare litestar on uvicorn, served like the node),
   ``POST /tickets`` = decode + ONE autocommit SQLite INSERT (WAL, synchronous=FULL, so one
   fsync per request: no group commit) and ``GET /tickets/{id}`` = one SELECT by primary key.

Each op gets a warm-up (not measured), then ``--duration-s`` of closed-loop load with
``--concurrency`` keep-alive HTTP/1.1 connections. The load generator runs in this process on
uvloop with asyncio streams and hand-written request bytes (status line + Content-Length
parsing only), to leave as much of the machine's CPU as possible to the server. The GETs ask for
ids created in the same run (random choice). Latency is ``perf_counter_ns`` from writing the
request to having read the whole response; under closed-loop load it is mostly queueing
(p50 ~ concurrency / throughput), not service time.

Every process started here is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

from tests.integration.nodeproc import NodeProcess, start_node

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(r"ready at http://(?P<host>[^:\s]+):(?P<port>\d+)")
STARTUP_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
CREATE_BODY_BYTES = 160
SAMPLE_ERRORS = 3


# --- request bytes -----------------------------------------------------------------------------


def ticket_body(i: int) -> bytes:
    """A create body of exactly CREATE_BODY_BYTES bytes; the counter keeps subjects distinct."""
    head = f'{{"type": "consult", "subject": "Router drops the DSL line #{i:08d}", "description": "'
    tail = '"}'
    filler = "Drops every evening around 20:00, back after minutes. Modem restarted, same. "
    room = CREATE_BODY_BYTES - len(head) - len(tail)
    return (head + (filler * 3)[:room] + tail).encode()


@dataclass(frozen=True)
class Target:
    """Where and how to send the two kinds of request."""

    name: str
    host: str
    port: int
    create_path: str
    get_prefix: str
    auth: str

    def _headers(self) -> bytes:
        auth = f"Authorization: Bearer {self.auth}\r\n" if self.auth else ""
        return f"Host: {self.host}:{self.port}\r\n{auth}".encode()

    def create_request(self) -> Callable[[int], bytes]:
        start = f"POST {self.create_path} HTTP/1.1\r\n".encode() + self._headers()
        length = len(ticket_body(0))
        start += f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()

        def build(i: int) -> bytes:
            return start + ticket_body(i)

        return build

    def get_request(self, ids: list[bytes]) -> Callable[[int], bytes]:
        start = f"GET {self.get_prefix}".encode()
        end = b" HTTP/1.1\r\n" + self._headers() + b"\r\n"
        choice = random.choice

        def build(_: int) -> bytes:
            return start + choice(ids) + end

        return build


# --- load generator ----------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """One op against one target."""

    op: str
    requests: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    loadgen_cpu_s: float = 0.0
    server_cpu_s: float | None = None

    def sample(self, text: str) -> None:
        if len(self.error_samples) < SAMPLE_ERRORS:
            self.error_samples.append(text)

    def transport_error(self, text: str) -> None:
        self.transport_errors += 1
        self.sample(text)

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300) + self.transport_errors

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] / 1e6

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ns)
        return {
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "max_ms": round(lat[-1] / 1e6, 3) if lat else math.nan,
            "mean_ms": round(sum(lat) / len(lat) / 1e6, 3) if lat else math.nan,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
            "error_samples": self.error_samples,
            "loadgen_cpu_cores": round(self.loadgen_cpu_s / self.elapsed_s, 2) if self.elapsed_s else None,
            "server_cpu_cores": (
                round(self.server_cpu_s / self.elapsed_s, 2)
                if self.server_cpu_s is not None and self.elapsed_s
                else None
            ),
        }


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one HTTP/1.1 response; header names are matched case-insensitively."""
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    status = int(head[9:12])
    at = low.find(b"\r\ncontent-length:")
    if at >= 0:
        end = head.index(b"\r\n", at + 2)
        return status, head, await reader.readexactly(int(head[at + 17 : end]))
    if b"\r\ntransfer-encoding: chunked" in low:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, head, b"".join(chunks)
            chunks.append(data[:-2])
    return status, head, b""


def location_id(head: bytes, prefix: bytes) -> bytes | None:
    """The id in the ``Location: <prefix><id>`` header (name matched case-insensitively, id kept as sent)."""
    at = head.lower().find(b"\r\nlocation: " + prefix.lower())
    if at < 0:
        return None
    start = at + 12 + len(prefix)
    return head[start : head.index(b"\r\n", start)]


class Load:
    """Closed-loop load: each connection sends its next request when the previous response is in."""

    def __init__(self, target: Target, concurrency: int) -> None:
        self.target = target
        self.concurrency = concurrency
        self.created_ids: list[bytes] = []
        self._counter = 0
        self._prefix = target.get_prefix.encode()

    async def run(
        self,
        op: str,
        build: Callable[[int], bytes],
        duration_s: float,
        *,
        record: bool,
        collect_ids: bool,
        server_pid: int | None,
    ) -> PhaseResult:
        result = PhaseResult(op)
        cpu0, srv0 = time.process_time(), process_cpu_s(server_pid)
        start = time.perf_counter_ns()
        deadline = start + int(duration_s * 1e9)
        try:  # one watchdog for the phase instead of a timer per request
            async with asyncio.timeout(duration_s + REQUEST_TIMEOUT_S):
                await asyncio.gather(
                    *(
                        self._connection(result, build, deadline, record, collect_ids)
                        for _ in range(self.concurrency)
                    )
                )
        except TimeoutError:
            raise RuntimeError(
                f"{self.target.name} {op}: a response took more than {REQUEST_TIMEOUT_S} s"
            ) from None
        result.elapsed_s = (time.perf_counter_ns() - start) / 1e9
        result.loadgen_cpu_s = time.process_time() - cpu0
        srv1 = process_cpu_s(server_pid)
        result.server_cpu_s = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        result.requests = sum(result.statuses.values())
        return result

    async def _connection(
        self,
        result: PhaseResult,
        build: Callable[[int], bytes],
        deadline: int,
        record: bool,
        collect_ids: bool,
    ) -> None:
        """One keep-alive connection sending requests back to back until the deadline."""
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        latencies, statuses, clock = result.latencies_ns, result.statuses, time.perf_counter_ns
        try:
            while clock() < deadline:
                if reader is None or writer is None:
                    try:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(self.target.host, self.target.port), CONNECT_TIMEOUT_S
                        )
                    except (OSError, TimeoutError) as exc:  # server gone: this connection stops
                        result.transport_error(f"connect: {type(exc).__name__}: {exc}")
                        return
                self._counter += 1
                request = build(self._counter)
                t0 = clock()
                try:
                    writer.write(request)
                    status, head, body = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.transport_error(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader = writer = None
                    continue
                t1 = clock()
                if record:
                    latencies.append(t1 - t0)
                statuses[status] += 1
                if 200 <= status < 300:
                    if collect_ids and (new_id := location_id(head, self._prefix)):
                        self.created_ids.append(new_id)
                else:
                    result.sample(f"{status}: {body[:200].decode(errors='replace')}")
                if b"\r\nconnection: close" in head.lower():
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def process_cpu_s(pid: int | None) -> float | None:
    """user+system CPU seconds of a whole process (all its threads), from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_target(
    target: Target, args: argparse.Namespace, server: subprocess.Popen[str], log: list[str]
) -> dict[str, PhaseResult]:
    """Warm up and measure create, then get (on the ids created so far)."""
    load = Load(target, args.concurrency)

    async def phase(op: str, build: Callable[[int], bytes], seconds: float, *, record: bool) -> PhaseResult:
        result = await load.run(
            op, build, seconds, record=record, collect_ids=op == "create", server_pid=server.pid
        )
        if server.poll() is not None:
            tail = "".join(log[-20:])
            raise RuntimeError(f"{target.name} exited ({server.returncode}) during {op}:\n{tail}")
        return result

    create = target.create_request()
    warm = await phase("create", create, args.warmup_s, record=False)
    if not load.created_ids:
        raise RuntimeError(f"{target.name}: warm-up created no tickets; samples: {warm.error_samples}")
    results = {"create": await phase("create", create, args.duration_s, record=True)}
    get = target.get_request(load.created_ids)
    await phase("get", get, args.warmup_s, record=False)
    results["get"] = await phase("get", get, args.duration_s, record=True)
    return results


# --- processes ---------------------------------------------------------------------------------


@dataclass
class BareProcess:
    proc: subprocess.Popen[str]
    host: str
    port: int
    output: list[str]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def start_bare(db: Path) -> BareProcess:
    """Start ``bench.bare_app`` on 127.0.0.1 port 0; return once it printed its ready line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_app", "--db", str(db), "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    found: list[re.Match[str]] = []
    ready = threading.Event()

    def pump() -> None:  # keep reading so the pipe never fills
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if not found and (m := READY.search(line)):
                found.append(m)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(STARTUP_TIMEOUT_S) or not found:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError("bare app did not become ready:\n" + "".join(output))
    return BareProcess(proc, found[0]["host"], int(found[0]["port"]), output)


def run_node(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, PhaseResult], dict[str, Any]]:
    node: NodeProcess | None = None
    try:
        t0 = time.perf_counter()
        node = start_node(tmp / "node")
        token = node.token("agent", name="bench-agent")
        startup_s = time.perf_counter() - t0
        url = urlsplit(node.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        target = Target("node", host, port, "/api/v1/tickets", "/api/v1/tickets/", token)
        results = uvloop.run(load_target(target, args, node.proc, node.output))
    finally:
        exit_code = node.stop() if node is not None else None
    return results, {"url": node.url, "startup_s": round(startup_s, 2), "exit_code": exit_code}


def run_bare(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, PhaseResult], dict[str, Any]]:
    bare: BareProcess | None = None
    try:
        t0 = time.perf_counter()
        bare = start_bare(tmp / "bare.db")
        startup_s = time.perf_counter() - t0
        target = Target("baseline", bare.host, bare.port, "/tickets", "/tickets/", "")
        results = uvloop.run(load_target(target, args, bare.proc, bare.output))
    finally:
        exit_code = bare.stop() if bare is not None else None
    url = f"http://{bare.host}:{bare.port}"
    return results, {"url": url, "startup_s": round(startup_s, 2), "exit_code": exit_code}


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("litestar", "uvicorn", "uvloop", "httptools", "msgspec"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and not math.isnan(a) and not math.isnan(b) else None


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    results: dict[str, dict[str, PhaseResult]],
    procs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "bench.tickets_api"])
        + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""),
        "settings": {
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "concurrency": args.concurrency,
            "create_body_bytes": len(ticket_body(0)),
            "loadgen": "closed loop, asyncio streams on uvloop, raw HTTP/1.1 keep-alive, 1 process",
            "node": "python -m edge_node node run --http 127.0.0.1:0 (defaults: sync=FULL, group commit)",
            "baseline": "python -m bench.bare_app (litestar+uvicorn, uvloop, httptools, 1 worker, "
            "no access log; 1 autocommit INSERT per POST, WAL, sync=FULL; no auth)",
            "order": "node create, node get, then node stopped; baseline create, baseline get",
        },
        "machine": info,
        "processes": procs,
        "results": {t: {op: r.summary() for op, r in ops.items()} for t, ops in results.items()},
        "ratios": {},
    }
    if "node" in results and "baseline" in results:
        for op in ("create", "get"):
            n, b = out["results"]["node"][op], out["results"]["baseline"][op]
            out["ratios"][op] = {
                "throughput_node_over_baseline": ratio(n["rps"], b["rps"]),
                "p99_node_over_baseline": ratio(n["p99_ms"], b["p99_ms"]),
            }
    return out


def print_report(out: dict[str, Any]) -> None:
    m, s = out["machine"], out["settings"]
    print(f"command: {out['command']}")
    print(
        f"machine: {m['cores']} cores ({m['cores_usable']} usable), {m['cpu_model']}; "
        f"{m['implementation']} {m['python']}; sqlite {m['sqlite']}; "
        f"load avg at start {m['loadavg_at_start']}"
    )
    print("packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    print(
        f"settings: duration {s['duration_s']} s per op, warm-up {s['warmup_s']} s per op, "
        f"concurrency {s['concurrency']}, create body {s['create_body_bytes']} B"
    )
    for key in ("loadgen", "node", "baseline", "order"):
        print(f"  {key}: {s[key]}")
    for name, p in out["processes"].items():
        print(f"  {name}: {p['url']}, started in {p['startup_s']} s, exit code {p['exit_code']}")
    print()
    header = (
        f"{'target':<9} {'op':<7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'requests':>9} {'errors':>7} {'srv cpu':>8} {'gen cpu':>8}"
    )
    print(header)
    print("-" * len(header))
    for op in ("create", "get"):
        for target, ops in out["results"].items():
            r = ops[op]
            srv = "-" if r["server_cpu_cores"] is None else f"{r['server_cpu_cores']:.2f}"
            print(
                f"{target:<9} {op:<7} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['max_ms']:>8.2f} {r['requests']:>9,} {r['errors']:>7,} {srv:>8} "
                f"{r['loadgen_cpu_cores']:>8.2f}"
            )
    print(
        "(req/s: 2xx responses per second; requests: responses received; errors: non-2xx responses\n"
        " plus connection errors; srv cpu / gen cpu: cores used by the server process (all threads)\n"
        " and by this load generator process)"
    )
    for target, ops in out["results"].items():
        for op, r in ops.items():
            if r["errors"]:
                print(f"  {target} {op} errors: statuses {r['statuses']}, samples {r['error_samples']}")
    if out["ratios"]:
        print()
        for op, q in out["ratios"].items():
            print(
                f"node/baseline {op:<6}: throughput {q['throughput_node_over_baseline']}, "
                f"p99 {q['p99_node_over_baseline']}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per op and target")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds before each op")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C
    if args.duration_s <= 0 or args.warmup_s <= 0 or args.concurrency < 1:
        parser.error("--duration-s and --warmup-s must be > 0, --concurrency >= 1")
    info = machine()
    results: dict[str, dict[str, PhaseResult]] = {}
    procs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgecare-bench-") as tmp:
        results["node"], procs["node"] = run_node(args, Path(tmp))
        results["baseline"], procs["baseline"] = run_bare(args, Path(tmp))
    out = report(args, info, results, procs)
    print_report(out)
    if args.json:
        print(json.dumps(out, sort_keys=False))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; started processes were stopped", file=sys.stderr)
        sys.exit(130)
