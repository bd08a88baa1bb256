"""Composition root: configuration -> store -> service -> HTTP server, SLA timer and call control."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import holidays

from edge_node import __version__
from edge_node.calls import CallRecorder
from edge_node.config import CallRoutingConfig, ConfigError, NodeConfig
from edge_node.core.calendar import BusinessCalendar, parse_hours
from edge_node.core.dispatch import DEFAULT_RULES, DispatchRule, DispatchRules
from edge_node.core.ivr import Flow, FlowError, load_flow
from edge_node.core.routing import RoutingEngine
from edge_node.core.sla import PriorityTargets, SLAPolicy
from edge_node.core.tickets import TicketSettings
from edge_node.errors import EdgeNodeError
from edge_node.http import create_app
from edge_node.node_security import NodeSecurity, open_node_security
from edge_node.replication import NodeReplicator, ReplicationSettings
from edge_node.roster import Roster, load_roster
from edge_node.rpc import CallControlServer, serve_grpc
from edge_node.service import NodeService
from edge_node.serving import HttpServer
from edge_node.store import Store
from security.links import load_node_security
from security.tokens import load_or_create_secret
from sync.transport.natsd import NatsServer, NatsServerConfig

log = logging.getLogger(__name__)

HOLIDAY_YEARS_BACK, HOLIDAY_YEARS_AHEAD = 1, 5
MAX_TIMER_SLEEP_S = 60.0  # re-check at least this often, in case the wall clock jumps
RECORDS_FLUSH_TIMEOUT_S = 10.0  # on shutdown, how long the last call records may take to commit


class RegionMismatchError(EdgeNodeError):
    """The data directory belongs to another region."""

    def __init__(self, data_dir: Path, stored: str, requested: str) -> None:
        self.data_dir, self.stored, self.requested = data_dir, stored, requested
        super().__init__(
            f"data directory {data_dir} belongs to region {stored!r}, not {requested!r}; "
            "use another --data-dir or the region it was created for"
        )


def build_calendar(config: NodeConfig, today: date) -> BusinessCalendar:
    """The region's business calendar, with public holidays from the ``holidays`` package."""
    cal = config.calendar
    closed = set(cal.closed_dates)
    if cal.holiday_country:
        years = range(today.year - HOLIDAY_YEARS_BACK, today.year + HOLIDAY_YEARS_AHEAD + 1)
        try:
            public = holidays.country_holidays(
                cal.holiday_country, subdiv=cal.holiday_subdivision, years=years
            )
        except NotImplementedError as exc:
            raise EdgeNodeError(f"calendar.holiday_country: {exc}") from None
        closed.update(public.keys())
    return BusinessCalendar(cal.timezone, parse_hours(cal.hours), frozenset(closed))


def build_settings(config: NodeConfig, today: date) -> TicketSettings:
    """Ticket rules from configuration."""
    t = config.tickets
    policy = SLAPolicy(
        {
            name: PriorityTargets(
                _seconds(p.first_response_min),
                _seconds(p.next_update_min),
                _seconds(p.resolution_min),
                always_open=p.always_open,
            )
            for name, p in t.priorities.items()
        },
        warn_share=t.warn_share,
    )
    dispatch = DEFAULT_RULES
    if t.dispatch:
        dispatch = DispatchRules(
            tuple(
                DispatchRule(r.department, frozenset(r.types), tuple(r.keywords), frozenset(r.vip_tiers))
                for r in t.dispatch
            ),
            default_department=t.default_department,
        )
    return TicketSettings(
        business_calendar=build_calendar(config, today),
        policy=policy,
        dispatch=dispatch,
        default_priority=t.default_priority,
        escalate_on_breach=t.escalate_on_breach,
    )


def _seconds(minutes: float) -> int:
    return max(1, round(minutes * 60))


def prepare_data_dir(config: NodeConfig) -> tuple[str, bytes]:
    """Create the data directory on first run; return the node id and the API token secret."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.secret_path.parent.mkdir(exist_ok=True, mode=0o700)
    secret = load_or_create_secret(config.secret_path)
    region_file = config.data_dir / "region"
    if region_file.exists():
        stored = region_file.read_text(encoding="utf-8").strip()
        if stored != config.region:
            raise RegionMismatchError(config.data_dir, stored, config.region)
    else:
        region_file.write_text(config.region + "\n", encoding="utf-8")
    if config.node_id_path.exists():
        node_id = config.node_id_path.read_text(encoding="utf-8").strip()
    else:
        node_id = f"{config.region}-{os.urandom(4).hex()}"
        config.node_id_path.write_text(node_id + "\n", encoding="utf-8")
        log.info("new node %s created in %s", node_id, config.data_dir)
    return node_id, secret


async def run_sla_timer(service: NodeService, wake: asyncio.Event) -> None:
    """Sleep until the next SLA deadline (or a write moves it), then fire what is due."""
    while True:
        deadline = service.schedule.next_deadline()
        timeout = MAX_TIMER_SLEEP_S
        if deadline is not None:
            timeout = min(timeout, max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()
        wake.clear()
        await service.fire_due_sla()


def load_routing(config: CallRoutingConfig) -> tuple[Roster, dict[str, Flow]]:
    """The roster (empty without one) and the IVR flows, each flow checked against its queues."""
    roster = Roster((), ()) if config.roster is None else load_roster(config.roster)
    queues = [q.queue_id for q in roster.queues]
    flows = {}
    for name, path in config.ivr_flows.items():
        source = f"routing.ivr_flows.{name} ({path})"
        try:
            flows[name] = load_flow(path.read_text(encoding="utf-8"), known_queues=queues)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, f"cannot read the file: {exc}") from None
        except FlowError as exc:
            raise ConfigError(source, str(exc)) from None
    return roster, flows


async def start_call_control(
    config: CallRoutingConfig, store: Store
) -> tuple[CallControlServer, CallRecorder, str]:
    """The routing engine from the roster, the call recorder and the gRPC server; and its address."""
    roster, flows = load_routing(config)
    recorder = CallRecorder(store)
    server, port = await serve_grpc(
        RoutingEngine(roster.queues),
        recorder,
        config.grpc_host,
        config.grpc_port,
        agents=roster.agents,
        flows=flows,
    )
    log.info(
        "call control: %d agents, %d queues, %d ivr flows",
        len(roster.agents),
        len(roster.queues),
        len(flows),
    )
    host = f"[{config.grpc_host}]" if ":" in config.grpc_host else config.grpc_host
    return server, recorder, f"{host}:{port}"


async def serve(
    config: NodeConfig,
    *,
    on_ready: Callable[[str], None],
    on_grpc_ready: Callable[[str], None] | None = None,
    enroll_token: str | None = None,
) -> None:
    """Run one node until SIGINT or SIGTERM.

    Args:
        config: The validated configuration.
        on_ready: Called with the HTTP URL once the node serves.
        on_grpc_ready: Called with the gRPC HOST:PORT just before `on_ready`, if gRPC is enabled.
        enroll_token: The hub's one-time enrollment token, needed on the first contact only.
    """
    node_id, secret = prepare_data_dir(config)
    store = Store(
        config.db_path,
        node_id=node_id,
        synchronous=config.storage.synchronous,
        max_batch=config.storage.max_batch,
    )
    store.open()
    link = load_node_security(config.data_dir)  # TLS and credentials from `edgecare init node`
    nats_config = NatsServerConfig(
        store_dir=config.data_dir / "jetstream",
        host=config.sync.nats_host,
        port=config.sync.nats_port,
        domain=f"edge-{config.region}",
        leaf_remote=config.sync.hub,
        leaf_reconnect_s=0.5,  # heal fast after a WAN outage (the server's default is 1-2 s)
        server_name=node_id,
    )
    if link is None:
        if config.sync.hub:
            log.warning(
                "the link to the hub is not secured (no TLS, no region credentials); "
                "run `edgecare init node` with the region bundle from `edgecare init hub`"
            )
    else:
        nats_config = link.configure(nats_config)
    nats_server = NatsServer(nats_config)
    call_control: CallControlServer | None = None
    security: NodeSecurity | None = None
    try:
        security = await open_node_security(config, node_id=node_id, store=store)
        await nats_server.start()
        settings = build_settings(config, datetime.now(UTC).date())
        service = NodeService(store, settings, region=config.region)
        await service.bootstrap()
        wake = asyncio.Event()
        service.on_schedule_change = wake.set
        replicator = NodeReplicator(
            store,
            region=config.region,
            nats_url=nats_server.client_url,
            egress=security.egress,
            enroll_token=enroll_token,
            hub_configured=config.sync.hub is not None,
            connect_options=None if link is None else link.connect_options(),
            settings=ReplicationSettings(
                heartbeat_interval_s=config.sync.heartbeat_interval_s,
                checkpoint_interval_s=config.security.checkpoint_interval_s,
            ),
            on_merged=service.reconcile_after_merge,
        )
        store.add_commit_listener(asyncio.get_running_loop(), replicator.wake)
        app = create_app(
            service,
            token_secret=secret,
            max_body_bytes=config.http.max_body_bytes,
            replicator=replicator,
            security=security,
        )
        recorder: CallRecorder | None = None
        grpc_address = ""
        if config.routing.grpc_enabled:
            call_control, recorder, grpc_address = await start_call_control(config.routing, store)
        http = HttpServer(app, config.http.host, config.http.port)
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(run_sla_timer(service, wake), name="sla-timer")
            supervisor = tg.create_task(nats_server.supervise(), name="nats-server")
            replication = tg.create_task(replicator.run(), name="replication")
            routing: list[asyncio.Task[None]] = []
            if call_control is not None and recorder is not None:
                routing.append(tg.create_task(recorder.run(), name="call-records"))
                routing.append(tg.create_task(call_control.run_timer(), name="routing-timer"))

            def started(url: str) -> None:
                log.info(
                    "local nats-server %s (%s)",
                    nats_server.client_url,
                    f"leaf of {config.sync.hub}" if config.sync.hub else "standalone: no hub configured",
                )
                log.info(
                    "node %s (region %s, edgecare %s) serving %s; data in %s; sync=%s",
                    node_id,
                    config.region,
                    __version__,
                    url,
                    config.data_dir,
                    config.storage.synchronous,
                )
                if call_control is not None and on_grpc_ready is not None:
                    on_grpc_ready(grpc_address)
                on_ready(url)

            await http.serve(started)
            if call_control is not None and recorder is not None:
                await call_control.stop()
                call_control = None
                async with asyncio.timeout(RECORDS_FLUSH_TIMEOUT_S):
                    await recorder.wait_flushed()  # the last call records reach the store
            for task in (timer, supervisor, replication, *routing):
                task.cancel()
    finally:
        if call_control is not None:
            await call_control.stop()
        await nats_server.stop()
        store.close()
        if security is not None:
            security.close()
        log.info("node %s stopped; store closed", node_id)
