"""Composition root of the hub: nats-server (JetStream, leaf listener) -> stores -> bus -> HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from cloud_hub.bus import HubBus
from cloud_hub.config import HubConfig
from cloud_hub.http import create_hub_app
from cloud_hub.service import Hub
from edge_node import __version__
from edge_node.serving import HttpServer
from security.links import load_hub_security
from security.tokens import load_or_create_secret
from sync.transport.natsd import NatsServer, NatsServerConfig

log = logging.getLogger(__name__)


def prepare_hub_dir(config: HubConfig) -> tuple[str, bytes]:
    """Create the data directory on first run; return the hub id and the API token secret."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.secret_path.parent.mkdir(exist_ok=True, mode=0o700)
    secret = load_or_create_secret(config.secret_path)
    id_path = config.data_dir / "hub-id"
    if id_path.exists():
        hub_id = id_path.read_text(encoding="utf-8").strip()
    else:
        hub_id = f"hub-{os.urandom(4).hex()}"
        id_path.write_text(hub_id + "\n", encoding="utf-8")
    return hub_id, secret


async def serve_hub(config: HubConfig, *, on_ready: Callable[[dict[str, str]], None]) -> None:
    """Run the hub until SIGINT or SIGTERM."""
    hub_id, secret = prepare_hub_dir(config)
    link = load_hub_security(
        config.data_dir
    )  # TLS, users and per-region permissions from `edgecare init hub`
    nats_config = NatsServerConfig(
        store_dir=config.data_dir / "jetstream",
        host=config.nats[0],
        port=config.nats[1],
        domain="hub",
        leaf_listen=config.leaf,
        sync_always=True,
        server_name=hub_id,
    )
    if link is None:
        log.warning(
            "NATS links are not secured (no TLS, open leaf listener); run `edgecare init hub` to make a CA, "
            "certificates and per-region credentials"
        )
    else:
        nats_config = link.configure(nats_config)
    nats_server = NatsServer(nats_config)
    await nats_server.start()
    hub = Hub(config.data_dir, hub_id=hub_id, down_after_s=config.down_after_s)
    try:
        bus = HubBus(
            hub,
            nats_server.client_url,
            connect_options=None if link is None else link.connect_options(),
            regions=() if link is None else link.regions,
        )
        app = create_hub_app(hub, token_secret=secret)
        http = HttpServer(app, *config.http)

        def started(url: str) -> None:
            urls = {"http": url, "nats": nats_server.client_url, "leaf": nats_server.leaf_url or ""}
            log.info(
                "hub %s (edgecare %s) serving %s; nats %s; leaf %s",
                hub_id,
                __version__,
                urls["http"],
                urls["nats"],
                urls["leaf"],
            )
            on_ready(urls)

        async with asyncio.TaskGroup() as tg:
            supervisor = tg.create_task(nats_server.supervise(), name="nats-server")
            bus_task = tg.create_task(bus.run(), name="bus")
            await http.serve(started)
            bus_task.cancel()
            supervisor.cancel()
    finally:
        await nats_server.stop()
        hub.close()
        log.info("hub %s stopped", hub_id)
