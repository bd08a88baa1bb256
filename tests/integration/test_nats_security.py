"""Region isolation and TLS on EdgeCare's NATS links, against real nats-server processes.

The hub and the eu-de node are provisioned with ``security.provisioning``
(``init_hub(["eu-de", "us-east"])`` + ``init_node`` for eu-de); the hub runs
its nats-server with TLS on both listeners, the users from provisioning and
JetStream domain ``hub``; the eu-de node's server is a leaf of it (domain
``edge-eu-de``) logged in as the eu-de region user over TLS. A client of the
eu-de server (``inbox_prefix=_INBOX.eu-de``) must be able to do everything a
node does, and nothing on us-east's subjects. Refusals are proved with a
barrier: an allowed message sent after the refused one on the same path has
arrived, so the refused one would have too. Waiting is always on a condition
with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from security.links import HubSecurity, NodeSecurity, load_hub_security, load_node_security
from security.nats_access import region_user_name
from security.pki import issue, make_ca, write_cert_key
from security.provisioning import init_hub, init_node
from sync import subjects
from sync.transport.natsd import (
    LeafRemoteTLS,
    NatsServer,
    NatsServerConfig,
    TLSFiles,
    client_tls_context,
    find_binary,
    render_config,
)

pytestmark = pytest.mark.timeout(60)

HUB_DOMAIN = "hub"
REGION, OTHER = "eu-de", "us-east"
NODE = "n1"
DEADLINE_S = 10.0
T = TypeVar("T")


async def eventually(attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Retry ``attempt`` until it returns, or fail with its last error after the deadline."""
    last: BaseException | None = None
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                try:
                    return await attempt()
                except (nats.errors.Error, OSError, AssertionError) as exc:
                    last = exc
                await asyncio.sleep(0.02)  # poll interval between attempts, not a wait for readiness
    except TimeoutError:
        pytest.fail(f"{what} did not succeed within {DEADLINE_S} s; last error: {last!r}")


@dataclass
class Topology:
    hub: NatsServer
    leaf: NatsServer
    hub_sec: HubSecurity
    node_sec: NodeSecurity
    on_hub: Client  # the hub process's own connection (hub user)
    on_node: Client  # a node process's connection to its own server
    bundle_password: str  # eu-de's plain password, as a thief of the bundle would have it

    @property
    def hub_js(self) -> JetStreamContext:
        return self.on_hub.jetstream()

    @property
    def node_js(self) -> JetStreamContext:
        return self.on_node.jetstream(domain=HUB_DOMAIN, timeout=2)

    async def monitor(self, endpoint: str) -> dict[str, Any]:
        assert self.hub.monitor_url is not None
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.hub.monitor_url}/{endpoint}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


@contextlib.asynccontextmanager
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    """Provision, start the hub and the eu-de leaf, connect a hub and a node client; stop all after."""
    hub_dir, node_dir = tmp_path / "hub", tmp_path / "node"
    prov = init_hub(hub_dir, [REGION, OTHER], bcrypt_rounds=6)
    bundle = hub_dir / "bundles" / f"{REGION}.json"
    bundle_password = load_bundle_password(bundle)
    init_node(node_dir, region=REGION, bundle=bundle, bcrypt_rounds=6)
    assert prov.added_regions == (REGION, OTHER)
    hub_sec, node_sec = load_hub_security(hub_dir), load_node_security(node_dir)
    assert hub_sec is not None
    assert node_sec is not None

    async with contextlib.AsyncExitStack() as stack:
        hub_cfg = NatsServerConfig(
            store_dir=tmp_path / "hub-js",
            server_name="hub",
            domain=HUB_DOMAIN,
            leaf_listen=("127.0.0.1", 0),
            monitor_port=0,
        )
        hub = await stack.enter_async_context(NatsServer(hub_sec.configure(hub_cfg)))
        assert hub.leaf_url is not None
        on_hub = await nats.connect(hub.client_url, connect_timeout=5, **hub_sec.connect_options())
        stack.push_async_callback(on_hub.close)
        hub_js = on_hub.jetstream()
        await hub_js.add_stream(name=subjects.HUB_OPS_STREAM, subjects=[subjects.OPS_WILDCARD])
        for region in (REGION, OTHER):
            await hub_js.add_stream(
                name=subjects.down_stream(region), subjects=[subjects.down_subject(region)]
            )

        leaf_cfg = NatsServerConfig(
            store_dir=tmp_path / "leaf-js",
            server_name=f"edge-{REGION}",
            domain=f"edge-{REGION}",
            leaf_remote=hub.leaf_url,
            leaf_reconnect_s=0.25,
        )
        leaf = await stack.enter_async_context(NatsServer(node_sec.configure(leaf_cfg)))
        on_node = await nats.connect(leaf.client_url, connect_timeout=5, **node_sec.connect_options())
        stack.push_async_callback(on_node.close)
        yield Topology(hub, leaf, hub_sec, node_sec, on_hub, on_node, bundle_password)


def load_bundle_password(bundle: Path) -> str:
    password: str = json.loads(bundle.read_text(encoding="utf-8"))["password"]
    return password


async def wait_for_link(t: Topology) -> None:
    """Until a JetStream publish from the node reaches the hub's EC_OPS (leaf up, interest known)."""
    await eventually(
        lambda: t.node_js.publish(subjects.ops_subject(REGION, "warmup"), b"warmup", timeout=1),
        what="publishing through the leaf link",
    )


class Collector:
    """A subscription callback that records subjects and wakes waiters on each message."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)
        self._changed.set()

    async def wait_for(self, subject: str) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while subject not in self.subjects:
                self._changed.clear()
                await self._changed.wait()


# -- allowed ------------------------------------------------------------------------------


async def test_a_region_does_what_a_node_needs_through_its_leaf(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        await wait_for_link(t)

        ack = await t.node_js.publish(subjects.ops_subject(REGION, NODE), b"op-1")
        assert (ack.stream, ack.domain) == (subjects.HUB_OPS_STREAM, HUB_DOMAIN)
        stored = await t.hub_js.get_msg(subjects.HUB_OPS_STREAM, seq=ack.seq)
        assert (stored.subject, stored.data) == (subjects.ops_subject(REGION, NODE), b"op-1")

        async def answer(msg: Msg) -> None:
            await msg.respond(b"seen " + msg.subject.encode())

        await t.on_hub.subscribe(subjects.HEARTBEAT_WILDCARD, cb=answer)
        await t.on_hub.subscribe(subjects.ACK_WILDCARD, cb=answer)
        await t.on_hub.flush()
        reply = await eventually(
            lambda: t.on_node.request(subjects.heartbeat_subject(REGION, NODE), b"hb", timeout=1),
            what="a heartbeat request answered by the hub",
        )
        assert reply.data == f"seen {subjects.heartbeat_subject(REGION, NODE)}".encode()
        assert reply.subject.startswith(subjects.inbox_prefix(REGION) + ".")
        reply = await t.on_node.request(subjects.ack_subject(REGION, NODE), b"", timeout=2)
        assert reply.data == f"seen {subjects.ack_subject(REGION, NODE)}".encode()

        await t.hub_js.publish(subjects.down_subject(REGION), b"edit-1")
        sub = await t.node_js.pull_subscribe(
            subjects.down_subject(REGION),
            durable=subjects.down_consumer(NODE),
            stream=subjects.down_stream(REGION),
        )
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.data == b"edit-1"
        await msg.ack_sync(timeout=2)
        info = await t.hub_js.consumer_info(subjects.down_stream(REGION), subjects.down_consumer(NODE))
        assert (info.ack_floor.stream_seq, info.num_ack_pending) == (1, 0)


# -- refused ------------------------------------------------------------------------------


async def test_a_region_cannot_publish_or_request_as_another(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        await wait_for_link(t)
        seen = Collector()

        async def answer(msg: Msg) -> None:
            await msg.respond(b"answered")

        await t.on_hub.subscribe("ec.>", cb=seen.on_msg)
        await t.on_hub.subscribe(subjects.HEARTBEAT_WILDCARD, cb=answer)
        await t.on_hub.flush()
        barrier = subjects.audit_subject(REGION, NODE)
        await eventually(  # from here on the leaf knows the hub's interest in ec.>
            lambda: _publish_and_wait(t.on_node, barrier, seen), what="a first barrier reaching the hub"
        )

        # Refused at the leaf link: the leaf learns of no hub interest it may serve (no responders), or
        # the hub drops what crosses (time-out); either way nothing arrives and nothing is stored.
        with pytest.raises((nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError)):
            await t.node_js.publish(subjects.ops_subject(OTHER, NODE), b"forged", timeout=1)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await t.on_node.request(subjects.heartbeat_subject(OTHER, "x"), b"forged", timeout=1)
        for subject in (
            subjects.ops_subject(OTHER, NODE),
            subjects.heartbeat_subject(OTHER, "x"),
            subjects.enroll_subject(OTHER),
            subjects.down_subject(OTHER),
            subjects.down_subject(REGION),  # only the hub writes a region's down subject
        ):
            await t.on_node.publish(subject, b"forged")
        # same connection and link as the refused messages, so once it is in, they would be too
        await _publish_and_wait(t.on_node, barrier + "2", seen, timeout_s=DEADLINE_S)

        assert all(subject.split(".")[2] == REGION for subject in seen.subjects), seen.subjects
        assert subjects.down_subject(REGION) not in seen.subjects
        ops = await t.hub_js.stream_info(subjects.HUB_OPS_STREAM, subjects_filter=">")
        assert set(ops.state.subjects or {}) == {subjects.ops_subject(REGION, "warmup")}
        for region in (REGION, OTHER):
            down = await t.hub_js.stream_info(subjects.down_stream(region))
            assert down.state.messages == 0


async def _publish_and_wait(nc: Client, subject: str, seen: Collector, *, timeout_s: float = 0.25) -> None:
    """Publish ``subject`` and wait until ``seen`` has it (a short wait: callers retry or pass more)."""
    await nc.publish(subject, b"barrier")
    async with asyncio.timeout(timeout_s):
        await seen.wait_for(subject)


async def test_a_region_cannot_use_another_regions_down_stream(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        await wait_for_link(t)
        other_stream = subjects.down_stream(OTHER)
        await t.hub_js.publish(subjects.down_subject(OTHER), b"us-east edit")
        # the hub's own consumer for a us-east node: eu-de must not be able to read from it
        await t.hub_js.pull_subscribe(
            subjects.down_subject(OTHER), durable=subjects.down_consumer("u1"), stream=other_stream
        )

        with pytest.raises(nats.js.errors.ServiceUnavailableError):
            await t.node_js.pull_subscribe(
                subjects.down_subject(OTHER), durable=subjects.down_consumer(NODE), stream=other_stream
            )
        with pytest.raises(nats.js.errors.ServiceUnavailableError):
            await t.node_js.consumer_info(other_stream, subjects.down_consumer("u1"))
        next_subject = f"$JS.{HUB_DOMAIN}.API.CONSUMER.MSG.NEXT.{other_stream}.{subjects.down_consumer('u1')}"
        with pytest.raises(nats.errors.NoRespondersError):
            await t.on_node.request(next_subject, b'{"batch": 1, "no_wait": true}', timeout=1)

        names = [c.name for c in await t.hub_js.consumers_info(other_stream)]
        assert names == [subjects.down_consumer("u1")]
        info = await t.hub_js.consumer_info(other_stream, subjects.down_consumer("u1"))
        assert (info.delivered.stream_seq, info.num_pending) == (0, 1)


async def test_the_hub_forwards_only_the_regions_own_replies(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        await wait_for_link(t)
        got = Collector()
        await t.on_node.subscribe("_INBOX.>", cb=got.on_msg)
        await t.on_node.subscribe("ec.>", cb=got.on_msg)
        await t.on_node.subscribe(f"{subjects.inbox_prefix(OTHER)}.>", queue="q", cb=got.on_msg)
        await t.on_node.flush()
        barrier = f"{subjects.inbox_prefix(REGION)}.barrier"
        await eventually(
            lambda: _publish_and_wait(t.on_hub, barrier, got), what="the hub's reply reaching eu-de"
        )

        await t.on_hub.publish(subjects.down_subject(OTHER), b"us-east secret")
        await t.on_hub.publish(f"{subjects.inbox_prefix(OTHER)}.x", b"us-east reply")
        await t.on_hub.publish(subjects.ops_subject(OTHER, "u1"), b"us-east op")
        await t.on_hub.publish(barrier + "2", b"barrier")
        await got.wait_for(barrier + "2")

        assert set(got.subjects) == {barrier, barrier + "2"}


# -- the links themselves -----------------------------------------------------------------


async def test_direct_connections_to_the_hub_need_tls_and_hub_credentials(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        await wait_for_link(t)
        tls = {"tls": client_tls_context(t.hub_sec.ca_file), "tls_handshake_first": True}
        region_creds = {"user": region_user_name(REGION), "password": t.bundle_password}

        for options in (tls | region_creds, tls, tls | {"user": "edgecare-hub", "password": "wrong"}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(t.hub.client_url, connect_timeout=2, allow_reconnect=False, **options)
        # Plain text: the server expects a TLS ClientHello first and hangs up on anything else.
        host, port = t.hub.client_url.removeprefix("tls://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            answer = await reader.read()  # until the server closes
        writer.close()
        assert b"PONG" not in answer
        assert b"INFO" not in answer

        # Every connection the hub has or had ran TLS, except the plain-text one, closed at the handshake.
        open_conns = (await t.monitor("connz?auth=true"))["connections"]
        closed = (await t.monitor("connz?state=closed&auth=true"))["connections"]
        assert {(c["kind"], c.get("authorized_user")) for c in open_conns} == {
            ("Client", "edgecare-hub"),
            ("Leafnode", region_user_name(REGION)),
        }
        assert all(c.get("tls_version") in ("1.2", "1.3") for c in open_conns), open_conns
        assert [c["reason"] for c in closed if "tls_version" not in c] == ["TLS Handshake Failure"]
        assert [c["reason"] for c in closed if "tls_version" in c] == ["Authentication Failure"] * 3
        leafz = await t.monitor("leafz")
        assert [(leaf["name"], leaf["account"]) for leaf in leafz["leafs"]] == [(f"edge-{REGION}", "$G")]
        log = "\n".join(t.hub.log_tail())
        assert "TLS required for client connections" in log
        assert f'authentication error - User "{region_user_name(REGION)}"' in log
        assert log.count("Leafnode connection created") == 1


async def wait_for_log(server: NatsServer, text: str) -> str:
    """The first log line of ``server`` containing ``text``, waiting for it up to the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            if found := [line for line in server.log_tail() if text in line]:
                return found[0]
            await asyncio.sleep(0.02)  # poll interval; the condition is a log line


async def test_a_leaf_with_the_wrong_password_or_ca_never_links(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        assert t.hub.leaf_url is not None
        base = t.leaf.config
        wrong_password = dataclasses.replace(
            base,
            store_dir=tmp_path / "wrong-pw",
            server_name="wrong-pw",
            port=0,
            leaf_remote_password="nope",  # noqa: S106 - a wrong one on purpose
        )
        wrong_ca = dataclasses.replace(
            base,
            store_dir=tmp_path / "wrong-ca",
            server_name="wrong-ca",
            port=0,
            leaf_remote_tls=LeafRemoteTLS(ca=t.node_sec.ca_file, handshake_first=True),  # not the hub's CA
        )
        async with NatsServer(wrong_password), NatsServer(wrong_ca) as impostor:
            refused = await wait_for_log(t.hub, "authentication error")
            assert "lid:" in refused, refused  # a leaf connection (client connections are cid:)
            assert "unknown authority" in await wait_for_log(impostor, "x509")
            assert t.bundle_password not in "\n".join(impostor.log_tail())  # its remote URL holds it

            leafz = await t.monitor("leafz")
            assert [leaf["name"] for leaf in leafz["leafs"]] == [f"edge-{REGION}"]


async def test_the_node_server_refuses_strangers(tmp_path: Path) -> None:
    async with topology(tmp_path) as t:
        tls = {"tls": client_tls_context(t.node_sec.ca_file), "tls_handshake_first": True}
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(t.leaf.client_url, connect_timeout=2, allow_reconnect=False, **tls)
        assert t.leaf.client_url.startswith("tls://")


def test_secured_configs_pass_nats_server_own_check(tmp_path: Path) -> None:
    init_hub(tmp_path / "hub", [REGION], bcrypt_rounds=4)
    init_node(
        tmp_path / "node",
        region=REGION,
        bundle=tmp_path / "hub" / "bundles" / f"{REGION}.json",
        bcrypt_rounds=4,
    )
    hub_sec, node_sec = load_hub_security(tmp_path / "hub"), load_node_security(tmp_path / "node")
    assert hub_sec is not None
    assert node_sec is not None
    configs = {
        "hub": hub_sec.configure(
            NatsServerConfig(
                store_dir=tmp_path / "a", domain="hub", leaf_listen=("127.0.0.1", 0), monitor_port=0
            )
        ),
        "leaf": node_sec.configure(
            NatsServerConfig(
                store_dir=tmp_path / "b", domain="edge-eu-de", leaf_remote="nats-leaf://127.0.0.1:7422"
            )
        ),
    }
    for name, cfg in configs.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(render_config(cfg), encoding="utf-8")
        check = subprocess.run(
            [find_binary(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=20, check=False
        )
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"


async def test_verify_demands_a_client_certificate_from_the_ca(tmp_path: Path) -> None:
    ca = make_ca("test ca")
    server = issue(
        ca, "server", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True, client=False
    )
    client = issue(ca, "node-1", server=False, client=True)
    stranger = issue(make_ca("other ca"), "node-2", server=False, client=True)
    for name, ck in (("ca", ca), ("server", server), ("client", client), ("stranger", stranger)):
        write_cert_key(ck, tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    tls = TLSFiles(tmp_path / "server.crt", tmp_path / "server.key", ca=tmp_path / "ca.crt", verify=True)

    async with NatsServer(NatsServerConfig(store_dir=tmp_path / "js", tls=tls)) as srv:
        good = client_tls_context(tmp_path / "ca.crt", tmp_path / "client.crt", tmp_path / "client.key")
        nc = await nats.connect(srv.client_url, tls=good, connect_timeout=2, allow_reconnect=False)
        try:
            assert nc.is_connected
        finally:
            await nc.close()
        for ctx in (
            client_tls_context(tmp_path / "ca.crt"),
            client_tls_context(tmp_path / "ca.crt", tmp_path / "stranger.crt", tmp_path / "stranger.key"),
        ):
            with pytest.raises((nats.errors.Error, OSError)):
                await nats.connect(srv.client_url, tls=ctx, connect_timeout=2, allow_reconnect=False)
