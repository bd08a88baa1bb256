"""sync.transport.natsd against real nats-server processes on free loopback ports.

Covers the rendered config, a standalone JetStream server, the hub + leaf
topology with JetStream domains (a client on the leaf publishes into the hub's
stream), a partition (hub killed) and its healing (hub restarted on the same
ports and store), and the supervisor restarting a server killed behind its
back. Waiting is always on a condition with a deadline, never a fixed sleep.
Every server a test starts is stopped by the ``servers`` fixture, also when the
test fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import PubAck

from sync.transport.natsd import (
    NatsConfigError,
    NatsServer,
    NatsServerConfig,
    NatsServerError,
    find_binary,
    render_config,
)

pytestmark = pytest.mark.timeout(60)
LOG = logging.getLogger(__name__)

HUB_DOMAIN = "hub"
LEAF_DOMAIN = "edge-eu-de"
OPS_STREAM = "OPS"
OPS_SUBJECTS = ["ec.ops.>"]
OPS_SUBJECT = "ec.ops.eu-de.n1"
DEADLINE_S = 10.0
LEAF_RECONNECT_S = 0.25

Servers = Callable[[NatsServerConfig], Awaitable[NatsServer]]
T = TypeVar("T")


async def eventually(attempt: Callable[[], Awaitable[T]], *, what: str, deadline_s: float = DEADLINE_S) -> T:
    """Retry ``attempt`` until it returns, or fail with its last error after the deadline."""
    last: BaseException | None = None
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                try:
                    return await attempt()
                except (nats.errors.Error, OSError) as exc:
                    last = exc
                await asyncio.sleep(0.02)  # poll interval between attempts, not a wait for readiness
    except TimeoutError:
        pytest.fail(f"{what} did not succeed within {deadline_s} s; last error: {last!r}")


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Start servers for a test; all of them are stopped afterwards, pass or fail."""
    started: list[NatsServer] = []

    async def start(cfg: NatsServerConfig) -> NatsServer:
        server = NatsServer(cfg)
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        async with asyncio.timeout(30):
            for server in reversed(started):
                await server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """NATS connections that are closed after the test."""
    opened: list[Client] = []

    async def connect(url: str, **options: object) -> Client:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=True, **options)
        opened.append(nc)
        return nc

    try:
        yield connect
    finally:
        for nc in opened:
            await nc.close()


def hub_config(store: Path) -> NatsServerConfig:
    return NatsServerConfig(
        store_dir=store,
        server_name="hub",
        domain=HUB_DOMAIN,
        leaf_listen=("127.0.0.1", 0),
        sync_always=True,
    )


def leaf_config(store: Path, hub: NatsServer) -> NatsServerConfig:
    return NatsServerConfig(
        store_dir=store,
        server_name="edge-eu-de",
        domain=LEAF_DOMAIN,
        leaf_remote=hub.leaf_url,
        leaf_reconnect_s=LEAF_RECONNECT_S,
    )


# -- render_config -------------------------------------------------------------


def test_render_standalone_asks_for_a_free_port_and_jetstream(tmp_path: Path) -> None:
    text = render_config(NatsServerConfig(store_dir=tmp_path / "js"))

    assert 'server_name: "edgecare"' in text
    assert 'host: "127.0.0.1"' in text
    assert "port: -1" in text
    assert "max_payload: 1048576" in text
    assert f"store_dir: {str(tmp_path / 'js')!r}".replace("'", '"') in text
    assert "domain" not in text
    assert "sync_interval" not in text
    assert "leafnodes" not in text


def test_render_hub_has_domain_leaf_listener_and_sync_always(tmp_path: Path) -> None:
    text = render_config(hub_config(tmp_path))

    jetstream = text.split("jetstream {", 1)[1].split("}", 1)[0]
    assert 'domain: "hub"' in jetstream
    assert "sync_interval: always" in jetstream
    leafnodes = text.split("leafnodes {", 1)[1].split("}", 1)[0]
    assert 'host: "127.0.0.1"' in leafnodes
    assert "port: -1" in leafnodes
    assert "remotes" not in leafnodes


def test_render_leaf_has_domain_remote_and_reconnect(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        store_dir=tmp_path,
        domain=LEAF_DOMAIN,
        leaf_remote="nats-leaf://127.0.0.1:7422",
        leaf_reconnect_s=0.25,
        port=4222,
    )
    text = render_config(cfg)

    assert "port: 4222" in text
    assert 'domain: "edge-eu-de"' in text
    assert 'remotes: [{url: "nats-leaf://127.0.0.1:7422"}]' in text
    assert 'reconnect: "250ms"' in text
    assert "sync_interval" not in text


def test_rendered_configs_pass_nats_server_own_check(tmp_path: Path) -> None:
    configs = {
        "standalone": NatsServerConfig(store_dir=tmp_path / "a"),
        "hub": hub_config(tmp_path / "b"),
        "leaf": NatsServerConfig(
            store_dir=tmp_path / "c",
            domain=LEAF_DOMAIN,
            leaf_remote="nats-leaf://127.0.0.1:7422",
            leaf_reconnect_s=0.25,
        ),
    }
    binary = find_binary()
    for name, cfg in configs.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(render_config(cfg), encoding="utf-8")
        check = subprocess.run(
            [binary, "-t", "-c", str(path)], capture_output=True, text=True, timeout=20, check=False
        )
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("domain", "eu.de"),
        ("domain", ""),
        ("server_name", "a b"),
        ("port", 70000),
        ("leaf_remote", "http://hub:7422"),
        ("max_payload", 0),
        ("leaf_reconnect_s", 0.0),
    ],
)
def test_config_refuses_values_nats_server_would_reject(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(NatsConfigError, match=field) as info:
        NatsServerConfig(store_dir=tmp_path, **{field: value})  # type: ignore[arg-type]  # field names vary per case
    assert info.value.field == field


def test_find_binary_finds_an_executable() -> None:
    binary = find_binary()
    assert binary.is_file()
    assert os.access(binary, os.X_OK)


# -- standalone -----------------------------------------------------------------


async def test_standalone_server_serves_jetstream_on_free_ports(
    tmp_path: Path, servers: Servers, clients: Callable[..., Awaitable[Client]]
) -> None:
    a = await servers(NatsServerConfig(store_dir=tmp_path / "a", server_name="a"))
    b = await servers(NatsServerConfig(store_dir=tmp_path / "b", server_name="b"))

    assert a.config.port != 0
    assert b.config.port != 0
    assert a.config.port != b.config.port
    assert a.client_url == f"nats://127.0.0.1:{a.config.port}"
    assert a.leaf_url is None
    assert (tmp_path / "a" / "nats.conf").read_text(encoding="utf-8") == render_config(a.config)

    nc = await clients(a.client_url)
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    ack = await js.publish("t.1", b"hello", timeout=5)
    assert (ack.stream, ack.seq) == ("T", 1)
    await nc.close()

    pid = a.pid
    assert pid is not None
    assert a.statistics().running
    await a.stop()
    await a.stop()  # idempotent
    assert a.pid is None
    assert not a.statistics().running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError, match="refused"):
        socket.create_connection(("127.0.0.1", a.config.port), timeout=2).close()


async def test_start_failure_names_the_port_and_the_log_tail(tmp_path: Path, servers: Servers) -> None:
    first = await servers(NatsServerConfig(store_dir=tmp_path / "a", server_name="a"))
    clash = NatsServer(NatsServerConfig(store_dir=tmp_path / "b", server_name="b", port=first.config.port))

    with pytest.raises(NatsServerError, match="before it was ready") as info:
        await clash.start()

    assert str(first.config.port) in str(info.value)
    assert "address already in use" in str(info.value)
    assert info.value.log_tail
    assert clash.pid is None
    await clash.stop()


async def test_start_timeout_stops_the_process_and_says_so(tmp_path: Path) -> None:
    server = NatsServer(NatsServerConfig(store_dir=tmp_path), start_timeout_s=0.001)

    with pytest.raises(NatsServerError, match=r"not ready within 0\.001 s"):
        await server.start()

    assert server.pid is None


# -- hub and leaf ---------------------------------------------------------------


async def publish_via_leaf(nc: Client, payload: bytes) -> PubAck:
    return await nc.jetstream(domain=HUB_DOMAIN).publish(OPS_SUBJECT, payload, timeout=1)


async def expect_no_responders(nc: Client) -> None:
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await nc.jetstream(domain=HUB_DOMAIN).publish(OPS_SUBJECT, b"lost", timeout=0.5)


async def test_leaf_client_publishes_into_the_hub_domain(
    tmp_path: Path, servers: Servers, clients: Callable[..., Awaitable[Client]]
) -> None:
    hub = await servers(hub_config(tmp_path / "hub"))
    assert hub.leaf_url is not None
    assert hub.leaf_url.startswith("nats-leaf://127.0.0.1:")
    leaf = await servers(leaf_config(tmp_path / "leaf", hub))

    on_leaf = await clients(leaf.client_url)
    hub_js_via_leaf = on_leaf.jetstream(domain=HUB_DOMAIN)
    info = await eventually(
        lambda: hub_js_via_leaf.add_stream(name=OPS_STREAM, subjects=OPS_SUBJECTS),
        what="creating the hub stream through the leaf connection",
    )
    assert info.config.name == OPS_STREAM

    ack = await eventually(lambda: publish_via_leaf(on_leaf, b"op-1"), what="publishing via the leaf")
    assert (ack.stream, ack.seq, ack.domain) == (OPS_STREAM, 1, HUB_DOMAIN)

    on_hub = await clients(hub.client_url)
    msg = await on_hub.jetstream().get_msg(OPS_STREAM, seq=1)
    assert (msg.subject, msg.data) == (OPS_SUBJECT, b"op-1")


async def test_partition_and_heal_keeps_the_hub_stream(
    tmp_path: Path, servers: Servers, clients: Callable[..., Awaitable[Client]]
) -> None:
    hub = await servers(hub_config(tmp_path / "hub"))
    leaf = await servers(leaf_config(tmp_path / "leaf", hub))
    hub_client_url, hub_leaf_url = hub.client_url, hub.leaf_url
    on_leaf = await clients(leaf.client_url)
    await eventually(
        lambda: on_leaf.jetstream(domain=HUB_DOMAIN).add_stream(name=OPS_STREAM, subjects=OPS_SUBJECTS),
        what="creating the hub stream through the leaf connection",
    )
    for i in range(3):
        await eventually(partial(publish_via_leaf, on_leaf, b"before-%d" % i), what="publishing via the leaf")

    hub.kill()

    # Until the leaf notices the hub is gone, a publish times out (its outcome unknown to the client);
    # from then on it fails at once: the hub's stream has no responder on the leaf side.
    await eventually(partial(expect_no_responders, on_leaf), what="the leaf noticing the partition")
    # The leaf still works on its own: core NATS and its own JetStream domain.
    sub = await on_leaf.subscribe("ec.local.ping")
    await on_leaf.publish("ec.local.ping", b"still here")
    assert (await sub.next_msg(timeout=2)).data == b"still here"
    leaf_js = on_leaf.jetstream(domain=LEAF_DOMAIN)
    await leaf_js.add_stream(name="LOCAL", subjects=["ec.local.buf.>"])
    assert (await leaf_js.publish("ec.local.buf.1", b"buffered", timeout=2)).domain == LEAF_DOMAIN

    await hub.start()  # same ports, same store
    healed_at = asyncio.get_running_loop().time()

    assert (hub.client_url, hub.leaf_url) == (hub_client_url, hub_leaf_url)
    ack = await eventually(lambda: publish_via_leaf(on_leaf, b"after"), what="publishing after the heal")
    LOG.info(
        "leaf published to the hub %.3f s after the hub restarted",
        asyncio.get_running_loop().time() - healed_at,
    )
    assert (ack.stream, ack.seq) == (OPS_STREAM, 4)
    on_hub = await clients(hub.client_url)
    hub_js = on_hub.jetstream()
    state = (await hub_js.stream_info(OPS_STREAM)).state
    assert (state.messages, state.last_seq) == (4, 4)
    assert [(await hub_js.get_msg(OPS_STREAM, seq=s)).data for s in range(1, 5)] == [
        b"before-0",
        b"before-1",
        b"before-2",
        b"after",
    ]


# -- supervise --------------------------------------------------------------------


async def test_supervise_restarts_a_killed_server_on_the_same_port(
    tmp_path: Path, servers: Servers, clients: Callable[..., Awaitable[Client]]
) -> None:
    server = await servers(NatsServerConfig(store_dir=tmp_path / "s", server_name="s"))
    url, old_pid = server.client_url, server.pid
    assert old_pid is not None
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await clients(url, reconnected_cb=on_reconnect, max_reconnect_attempts=-1, reconnect_time_wait=1)
    js = nc.jetstream()
    await js.add_stream(name="S", subjects=["s.>"])
    await js.publish("s.1", b"one", timeout=5)

    supervisor = asyncio.create_task(server.supervise())
    try:
        os.kill(old_pid, signal.SIGKILL)  # behind the supervisor's back
        async with asyncio.timeout(DEADLINE_S):
            await reconnected.wait()
        assert server.client_url == url
        assert server.pid not in (None, old_pid)
        assert server.statistics().restarts == 1
        ack = await eventually(
            lambda: js.publish("s.2", b"two", timeout=1), what="publishing after the restart"
        )
        assert ack.seq == 2  # the store survived the SIGKILL
    finally:
        await server.stop()
        async with asyncio.timeout(DEADLINE_S):
            await supervisor  # stop() ends supervise()
    assert server.pid is None


async def test_supervise_adopts_a_manual_restart_and_ends_on_stop(
    tmp_path: Path, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sync.transport.natsd")
    server = await servers(NatsServerConfig(store_dir=tmp_path / "s", server_name="s"))
    supervisor = asyncio.create_task(server.supervise())
    server.kill()
    await server.start()  # races the supervisor's own restart, which must not spawn a second server
    pid = server.pid

    async with asyncio.timeout(DEADLINE_S):
        while "started meanwhile" not in caplog.text:  # noqa: ASYNC110 - the condition is a log record
            await asyncio.sleep(0.05)  # poll interval; the supervisor looks after its 0.5 s backoff
    assert server.pid == pid
    assert server.statistics().restarts == 0
    await server.stop()
    async with asyncio.timeout(DEADLINE_S):
        await supervisor
