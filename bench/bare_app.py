"""Baseline for ``bench.tickets_api``: a bare litestar app on uvicorn, one SQLite statement per request.

Served the way the node serves its API: uvicorn on uvloop with httptools, one worker,
no access log, no lifespan, no server header, on a socket we bind ourselves (port 0 works).
When it listens it prints ``bare app ready at http://HOST:PORT`` on stdout.

- ``POST /tickets`` decodes the JSON body (msgspec, like the node) and runs ONE autocommit
  ``INSERT`` through stdlib sqlite3 (WAL, ``synchronous=FULL``) directly in the handler, so
  every request pays its own commit and fsync: no group commit, no thread hop, no auth,
  no validation, no change log.
- ``GET /tickets/{id}`` runs one ``SELECT`` by primary key.

Run: ``python -m bench.bare_app --db /tmp/x/bare.db [--host 127.0.0.1] [--port 0]``.
Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import uvicorn
import uvloop
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException

SCHEMA = """CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    description TEXT,
    created_at INTEGER NOT NULL
)"""
INSERT = "INSERT INTO tickets (id, type, subject, description, created_at) VALUES (?, ?, ?, ?, ?)"
SELECT = "SELECT id, type, subject, description, created_at FROM tickets WHERE id = ?"


def open_db(path: str, synchronous: str) -> sqlite3.Connection:
    """Autocommit connection: each INSERT is its own transaction (one WAL commit, one fsync at FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"journal_mode is {mode!r}, expected 'wal'")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(SCHEMA)
    return conn


def _new_id() -> str:
    # Time-ordered like the node's ULIDs, so inserts append to the end of the primary-key B-tree.
    return f"{time.time_ns():016x}{os.urandom(5).hex()}"


@post("/tickets", status_code=201)
async def create_ticket(request: Request[Any, Any, Any], state: State) -> Response[dict[str, object]]:
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise ValidationException(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict) or "type" not in body or "subject" not in body:
        raise ValidationException("expected a JSON object with type and subject")
    row = (_new_id(), body["type"], body["subject"], body.get("description"), time.time_ns())
    conn: sqlite3.Connection = state.conn
    conn.execute(INSERT, row)
    record = dict(zip(("id", "type", "subject", "description", "created_at"), row, strict=True))
    return Response(record, status_code=201, headers={"Location": f"/tickets/{row[0]}"})


@get("/tickets/{ticket_id:str}")
async def get_ticket(ticket_id: str, state: State) -> dict[str, object]:
    conn: sqlite3.Connection = state.conn
    row = conn.execute(SELECT, (ticket_id,)).fetchone()
    if row is None:
        raise NotFoundException(f"ticket {ticket_id!r} not found")
    return dict(zip(("id", "type", "subject", "description", "created_at"), row, strict=True))


def create_app(conn: sqlite3.Connection) -> Litestar:
    return Litestar(
        route_handlers=[create_ticket, get_ticket],
        state=State({"conn": conn}),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


class _Server(uvicorn.Server):
    """uvicorn with our own signal handling (as in the node) and a ready event."""

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


async def serve(db: str, host: str, port: int, synchronous: str) -> None:
    conn = open_db(db, synchronous)
    try:
        server = _Server(
            uvicorn.Config(
                create_app(conn),
                host=host,
                port=port,
                loop="none",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_config=None,
                server_header=False,
                timeout_graceful_shutdown=10,
            )
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, setattr, server, "should_exit", True)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            bound_host, bound_port = sock.getsockname()[:2]
            print(f"bare app ready at http://{bound_host}:{bound_port}", flush=True)
        else:
            ready.cancel()
        await serving
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args()
    uvloop.run(serve(args.db, args.host, args.port, args.synchronous))


if __name__ == "__main__":
    main()
