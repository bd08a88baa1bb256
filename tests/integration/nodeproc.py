"""Start and stop real node processes for integration tests and benchmarks.

A node is started as ``python -m edge_node node run`` on 127.0.0.1 port 0;
readiness and the chosen port come from the line the node prints when it is
ready, never from a sleep. Every process is stopped by the context manager,
also when the test fails.
"""

from __future__ import annotations

import os
import re
import signal
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


def start_node(data_dir: Path, *, region: str = "eu-de", extra: tuple[str, ...] = ()) -> NodeProcess:
    """Start a node and return once it is ready; raise with its output if it is not."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _command(
            "node", "run", "--region", region, "--data-dir", str(data_dir), "--http", "127.0.0.1:0", *extra
        ),
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
            if not found and (m := READY.search(line)):
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
        raise NodeStartError("node did not become ready:\n" + "".join(output))
    return NodeProcess(proc, found[0], data_dir, output, reader)


@contextmanager
def running_node(data_dir: Path, **kw: object) -> Iterator[NodeProcess]:
    """A node for the duration of the block, stopped afterwards whatever happens."""
    node = start_node(data_dir, **kw)  # type: ignore[arg-type]  # forwarded keywords
    try:
        yield node
    finally:
        node.stop()
