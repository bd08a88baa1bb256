"""Serving an ASGI app over HTTP: bind, run uvicorn, announce readiness, stop on signals.

The node and the hub serve the same way: we bind the socket ourselves (so a busy
port is a clear error and port 0 works), uvicorn does not install its own signal
handlers (the service owns shutdown: SIGINT/SIGTERM let requests in flight
finish), and the caller learns the URL only once the server really accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from edge_node.errors import EdgeNodeError

log = logging.getLogger(__name__)


class ListenError(EdgeNodeError):
    """The HTTP listener cannot bind."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host, self.port, self.reason = host, port, reason
        super().__init__(f"cannot listen on {host}:{port}: {reason}; choose another --http HOST:PORT")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling, with a ready event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.ready.set()


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening socket, naming the address and the reason when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(host, port, str(exc)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(host, port, exc.strerror or str(exc)) from None
    return sock


class HttpServer:
    """One ASGI app on one bound socket, served until SIGINT or SIGTERM."""

    def __init__(self, app: Any, host: str, port: int, *, graceful_s: int = 10) -> None:
        self._sock = bind(host, port)
        self._server = _Server(
            uvicorn.Config(
                app,
                loop="none",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_config=None,
                server_header=False,
                timeout_graceful_shutdown=graceful_s,
            )
        )

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def serve(self, on_started: Callable[[str], None]) -> None:
        """Serve; call ``on_started`` with the URL once accepting; return after a signal stops it."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_exit)
        serving = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="http")
        ready = asyncio.create_task(self._server.ready.wait(), name="http-ready")
        try:
            await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                on_started(self.url)
            await serving
        finally:
            ready.cancel()
            if not serving.done():
                self._server.should_exit = True
                await serving

    def _request_exit(self) -> None:
        log.info("shutdown requested; finishing requests in flight")
        self._server.should_exit = True
