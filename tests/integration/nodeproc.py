"""Start and stop real node processes for integration tests and benchmarks.

A node is started as ``python -m edge_node node run`` on 127.0.0.1 port 0;
readiness and the chosen port come from the line the node prints when it is
ready, never from a sleep. Every process is stopped by the context manager,
also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"ready at (?P<url>http://\S+)")
STARTUP_TIMEOUT_S = 30.0


class NodeStartError(RuntimeError):
    """The node exited or never said it was ready."""


@dataclass
class NodeProcess:
    """A running node: its URL, data directory and process handle."""

    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def token(self, role: str = "agent", name: str | None = None) -> str:
        """A bearer token from ``edgecare node token`` for this node."""
        return issue_token(self.data_dir, role, name)

    def kill(self) -> None:
        """SIGKILL: the crash the durability promises are about."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_pipe()

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_pipe()
        return self.proc.returncode

    def _close_pipe(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def log(self) -> str:
        return "".join(self.output)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_node", *args]


def issue_token(data_dir: Path, role: str = "agent", name: str | None = None) -> str:
    """Run ``edgecare node token`` and return the token it prints."""
    args = ["node", "token", "--data-dir", str(data_dir), "--role", role]
    if name:
        args += ["--name", name]
    done = subprocess.run(_command(*args), capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"node token failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


def start_node(
    data_dir: Path,
    *,
    region: str = "eu-de",
    hub: str | HubProcess | None = None,
    http: str = "127.0.0.1:0",
    extra: tuple[str, ...] = (),
    enroll: str | None = None,
) -> NodeProcess:
    """Start a node and return once it is ready; raise with its output if it is not.

    ``http`` may pin the port, so a restarted node keeps its address. With a hub
    this test session started (its process or its leaf URL), the node gets a fresh
    enrollment token from it unless ``enroll`` names one; an enrolled node ignores it.
    """
    args = ["node", "run", "--region", region, "--data-dir", str(data_dir), "--http", http, *extra]
    if hub is not None:
        leaf = hub.leaf_url if isinstance(hub, HubProcess) else hub
        started = hub if isinstance(hub, HubProcess) else _HUBS.get(leaf)
        if enroll is None and started is not None and not _enrolled(data_dir):
            enroll = started.enroll_token(region)
        args += ["--hub", leaf]
    if enroll is not None:
        args += ["--enroll", enroll]
    return _spawn(args, data_dir, READY)


def _enrolled(data_dir: Path) -> bool:
    """Whether the node in ``data_dir`` finished enrolling at its hub (it then needs no token)."""
    db = data_dir / "edgecare.db"
    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute("SELECT 1 FROM node_meta WHERE key = 'enrolled_at_hub'").fetchone()
        except sqlite3.OperationalError:
            return False
    return row is not None


def _spawn(args: list[str], data_dir: Path, ready_line: re.Pattern[str]) -> NodeProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    output: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # keeps reading so the pipe never fills and blocks the node
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if not found and (m := ready_line.search(line)):
                found.append(m["url"])
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if not ready.wait(STARTUP_TIMEOUT_S) or not found:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()
        raise NodeStartError(f"{' '.join(args[:2])} did not become ready:\n" + "".join(output))
    return NodeProcess(proc, found[0], data_dir, output, reader)


HUB_READY = re.compile(r"hub ready at (?P<url>http://\S+)")
HUB_LEAF = re.compile(r"leaf: (?P<url>nats\S*://\S+)")
HUB_NATS = re.compile(r"nats: (?P<url>(?:nats|tls)://\S+)")


@dataclass
class HubProcess:
    """A running hub and the URLs it printed."""

    node: NodeProcess

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def leaf_url(self) -> str:
        return _find(HUB_LEAF, self.node.log)

    @property
    def nats_url(self) -> str:
        return _find(HUB_NATS, self.node.log)

    def token(self, role: str = "central_ops") -> str:
        return _run_hub_command("token", "--data-dir", str(self.node.data_dir), "--role", role)

    def enroll_token(self, region: str) -> str:
        """A one-time enrollment token for a node of ``region`` (``edgecare hub enroll-token``)."""
        return _run_hub_command("enroll-token", "--data-dir", str(self.node.data_dir), "--region", region)

    def kill(self) -> None:
        self.node.kill()

    def stop(self) -> int:
        return self.node.stop()


_HUBS: dict[str, HubProcess] = {}  # leaf URL -> the hub this session started there


def _run_hub_command(*args: str) -> str:
    done = subprocess.run(_command("hub", *args), capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"hub {args[0]} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


def _find(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    if match is None:
        raise NodeStartError(f"no {pattern.pattern!r} in the output:\n{text}")
    return match["url"]


def start_hub(
    data_dir: Path, *, nats: str = "127.0.0.1:0", leaf: str = "127.0.0.1:0", http: str = "127.0.0.1:0"
) -> HubProcess:
    """Start a hub; pin ``nats``/``leaf``/``http`` to restart it where nodes expect it."""
    args = ["hub", "run", "--data-dir", str(data_dir), "--nats", nats, "--leaf", leaf, "--http", http]
    hub = HubProcess(_spawn(args, data_dir, HUB_READY))  # the URL lines come before the ready line
    _HUBS[hub.leaf_url] = hub
    return hub


@contextmanager
def running_hub(data_dir: Path, **kw: str) -> Iterator[HubProcess]:
    """A hub for the duration of the block, stopped afterwards whatever happens."""
    hub = start_hub(data_dir, **kw)
    try:
        yield hub
    finally:
        hub.stop()


@contextmanager
def running_node(data_dir: Path, **kw: object) -> Iterator[NodeProcess]:
    """A node for the duration of the block, stopped afterwards whatever happens."""
    node = start_node(data_dir, **kw)  # type: ignore[arg-type]  # forwarded keywords
    try:
        yield node
    finally:
        node.stop()
