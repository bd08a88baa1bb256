"""A recording TCP proxy: every byte between a client and a server, kept for searching.

Theory of operation
-------------------
Residency tests must show what actually crossed a link, not what the code
meant to send. :class:`Wiretap` listens on ``127.0.0.1:0`` and forwards each
accepted connection to a fixed target (a hub's leaf listener), appending every
chunk it forwards to one of two buffers: ``to_target`` (what the server
received) and ``from_target`` (what it sent back). Connections are forwarded
untouched, so the two ends cannot tell the tap is there; reconnects go through
it too, because the client only ever knows the tap's address.

The proxy runs its own asyncio loop in a daemon thread, so synchronous tests
can use it; :func:`running_wiretap` starts it, waits until it listens (no
sleeps) and stops it, closing every forwarded connection, when the block ends,
also on failure. Pumps end quietly on connection errors: a peer hanging up is
the normal end of a forwarded connection, not a test failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

START_TIMEOUT_S = 10.0
CHUNK_BYTES = 65536
_HANGUPS = (ConnectionError, OSError, asyncio.IncompleteReadError)


class Wiretap:
    """A TCP proxy to ``host:port`` that records both directions.

    Args:
        host: The target's host.
        port: The target's port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.target_port = host, port
        self.port = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._to_target = bytearray()
        self._from_target = bytearray()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._failure: BaseException | None = None
        self.errors: list[BaseException] = []  # what broke a pump, other than a hang-up

    @property
    def leaf_url(self) -> str:
        """The URL a leaf node dials to reach the target through the tap."""
        return f"nats-leaf://127.0.0.1:{self.port}"

    def to_target(self) -> bytes:
        """Every byte the target received through the tap so far."""
        with self._lock:
            return bytes(self._to_target)

    def from_target(self) -> bytes:
        """Every byte the target sent back through the tap so far."""
        with self._lock:
            return bytes(self._from_target)

    def start(self) -> None:
        """Start listening; return once the port is bound.

        Raises:
            RuntimeError: the proxy did not come up within ``START_TIMEOUT_S``.
        """
        self._thread = threading.Thread(target=self._run, name=f"wiretap->{self.target_port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.port == 0:
            raise RuntimeError(f"wiretap to {self.host}:{self.target_port} did not start: {self._failure!r}")

    def stop(self) -> None:
        """Close the listener and every forwarded connection; wait for the thread. Idempotent.

        Raises:
            RuntimeError: the proxy itself failed while it ran, so what it recorded
                may be incomplete.
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished on its own meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._failure is not None or self.errors:
            raise RuntimeError(f"wiretap to port {self.target_port} failed: {self._failure or self.errors!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start(); a thread must not raise
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_writer)
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                return  # the target is down (a stopped hub): the client sees a closed connection
            self._writers.add(server_writer)
            self.connections += 1
            try:
                pumps = [
                    asyncio.create_task(self._pump(client_reader, server_writer, self._to_target)),
                    asyncio.create_task(self._pump(server_reader, client_writer, self._from_target)),
                ]
                done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                self.errors += [e for t in done if (e := t.exception()) is not None]
            finally:
                self._writers.discard(server_writer)
                await _close(server_writer)
        finally:
            self._writers.discard(client_writer)
            await _close(client_writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, buffer: bytearray
    ) -> None:
        with contextlib.suppress(*_HANGUPS):
            while chunk := await reader.read(CHUNK_BYTES):
                with self._lock:
                    buffer.extend(chunk)
                writer.write(chunk)
                await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(*_HANGUPS):
        await writer.wait_closed()


def target_of(url: str) -> tuple[str, int]:
    """``(host, port)`` of a URL such as ``nats-leaf://127.0.0.1:7422``."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r} names no host and port")
    return parts.hostname, parts.port


@contextlib.contextmanager
def running_wiretap(target_url: str) -> Iterator[Wiretap]:
    """A wiretap to ``target_url``'s host and port for the block, stopped afterwards whatever happens."""
    tap = Wiretap(*target_of(target_url))
    try:
        tap.start()
        yield tap
    finally:
        tap.stop()
