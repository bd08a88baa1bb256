"""CallControl over real gRPC on 127.0.0.1:0, in process, with a real SQLite store for the records.

A grpc.aio client talks to `serve_grpc` exactly as a switch would: offers contacts, reports
what happened, changes agent states and watches figures and routing updates; the call detail
records are then read back from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edge_node.calls import CallRecord, CallRecorder
from edge_node.core.ivr import load_flow
from edge_node.core.routing import AgentProfile, Channel, QueueConfig, RoutingEngine
from edge_node.rpc import CallControlServer, serve_grpc
from edge_node.store import Store
from proto import callcontrol_pb2 as pb
from proto import callcontrol_pb2_grpc as pb_grpc
from sync.entities import CALL_RECORD

AGENTS = (
    AgentProfile("ann", {"billing": 3}, frozenset({"en", "de"}), {Channel.VOICE: 1}),
    AgentProfile("bob", {"billing": 2, "sales": 4}, frozenset({"en"}), {Channel.VOICE: 1}),
)
QUEUES = (
    QueueConfig("billing", "billing", max_length=1),
    QueueConfig("sales", "sales"),
    QueueConfig("support", "support", max_wait_s=0.2),  # nobody has the skill: callbacks
)
FLOW = """
start = "main"
languages = ["en"]

[nodes.main]
type = "menu"
prompt.en = "For billing press 1."
on_timeout = "bye"
on_invalid = "bye"

[[nodes.main.options]]
digit = "1"
next = "billing"

[nodes.billing]
type = "transfer"
queue = "billing"

[nodes.billing.attributes]
inquiry_type = "bill_query"

[nodes.bye]
type = "hangup"
prompt.en = "Goodbye."
"""
BERLIN = "+4930123456"
SERVICE = "edgecare.callcontrol.v1.CallControl"


@dataclass
class CallControl:
    stub: pb_grpc.CallControlStub
    channel: grpc.aio.Channel
    recorder: CallRecorder
    store: Store
    server: CallControlServer

    async def record(self, contact_id: str) -> CallRecord:
        await self.recorder.wait_flushed()
        values = await self.store.read(lambda r: r.get(CALL_RECORD, contact_id))
        assert values is not None, f"no call record for {contact_id}"
        return CallRecord.from_values(values)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "node.db", node_id="eu-de-test", synchronous="NORMAL")
    store.open()
    yield store
    store.close()


@pytest.fixture
async def cc(store: Store) -> AsyncIterator[CallControl]:
    recorder = CallRecorder(store)
    flows = {"hotline": load_flow(FLOW, known_queues=[q.queue_id for q in QUEUES])}
    server, port = await serve_grpc(
        RoutingEngine(QUEUES), recorder, "127.0.0.1", 0, agents=AGENTS, flows=flows
    )
    timer, writer = asyncio.create_task(server.run_timer()), asyncio.create_task(recorder.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield CallControl(pb_grpc.CallControlStub(channel), channel, recorder, store, server)
    finally:
        await channel.close()
        await server.stop(0)
        timer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await timer  # a task that died of an error raises that error here instead
        await recorder.wait_flushed()  # no write in flight when the store closes
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer


def offer(contact_id: str, queue_id: str = "billing", **kw: object) -> pb.OfferContactRequest:
    fields: dict[str, object] = {
        "contact_id": contact_id,
        "channel": pb.CHANNEL_VOICE,
        "caller_number": BERLIN,
        "language": "en",
        "inquiry_type": "bill_query",
        "queue_id": queue_id,
    }
    return pb.OfferContactRequest(**(fields | kw))


async def login(cc: CallControl, agent_id: str) -> pb.AgentStatus:
    request = pb.SetAgentStateRequest(agent_id=agent_id, state=pb.AGENT_STATE_AVAILABLE)
    response = await cc.stub.SetAgentState(request)
    return response.agent


async def report(cc: CallControl, *events: pb.ContactEvent) -> pb.ReportEventsResponse:
    async def stream() -> AsyncIterator[pb.ContactEvent]:
        for event in events:
            yield event

    response: pb.ReportEventsResponse = await cc.stub.ReportEvents(stream())
    return response


# --- OfferContact -----------------------------------------------------------------------------


async def test_a_contact_goes_to_a_free_agent(cc: CallControl) -> None:
    await login(cc, "ann")
    response = await cc.stub.OfferContact(offer("c1"))
    assert response.contact_id == "c1"
    assert response.decision.WhichOneof("outcome") == "agent"
    assert response.decision.agent == pb.AgentAssigned(queue_id="billing", agent_id="ann")
    record = await cc.record("c1")
    assert (record.queue_id, record.agent_id, record.entry_position) == ("billing", "ann", 1)
    assert (record.channel, record.caller_country, record.inquiry_type) == ("voice", "DE", "bill_query")
    assert record.arrived_at is not None
    assert record.offered_at == record.arrived_at


async def test_a_contact_waits_with_its_position_and_expected_wait_then_the_next_is_refused(
    cc: CallControl,
) -> None:
    await login(cc, "ann")
    await cc.stub.OfferContact(offer("c1"))  # ann is now ringing for c1
    queued = (await cc.stub.OfferContact(offer("c2"))).decision
    assert queued.WhichOneof("outcome") == "queued"
    assert queued.queued.queue_id == "billing"
    assert queued.queued.position == 1
    assert queued.queued.HasField("expected_wait_s")
    assert queued.queued.expected_wait_s == pytest.approx(180.0)  # 1 in line x 180 s / 1 staffed slot
    refused = (await cc.stub.OfferContact(offer("c3"))).decision
    assert refused.WhichOneof("outcome") == "refused"
    assert refused.refused.reason == pb.REFUSAL_REASON_QUEUE_FULL
    assert "1 of 1 places taken" in refused.refused.detail
    assert (await cc.record("c3")).outcome == "refused"
    assert (await cc.record("c2")).entry_position == 1


async def test_without_a_staffed_agent_there_is_no_expected_wait(cc: CallControl) -> None:
    queued = (await cc.stub.OfferContact(offer("c1", "sales"))).decision.queued
    assert queued.position == 1
    assert not queued.HasField("expected_wait_s")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": pb.CHANNEL_UNSPECIFIED}, "channel"),
        ({"caller_number": "030 123456"}, "caller_number"),
        ({"caller_number": "+12"}, "caller_number"),
        ({"contact_id": ""}, "contact_id"),
        ({"contact_id": "has space"}, "contact_id"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    cc: CallControl, change: dict[str, object], field: str
) -> None:
    request = offer("c1")
    for name, value in change.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cc.stub.OfferContact(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"invalid {field}:" in (caught.value.details() or "")


async def test_an_unknown_queue_is_not_found(cc: CallControl) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cc.stub.OfferContact(offer("c1", "nowhere"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "unknown queue 'nowhere'" in (caught.value.details() or "")


async def test_an_ivr_flow_plays_collects_and_transfers_then_the_queue_keeps_its_arrival(
    cc: CallControl,
) -> None:
    def step(**ivr: object) -> pb.OfferContactRequest:
        request = offer("c9", queue_id="")
        request.ClearField("queue_id")
        request.ivr.CopyFrom(pb.IvrEntry(flow="hotline", **ivr))
        return request

    play = (await cc.stub.OfferContact(step())).decision.ivr_step
    assert play.play == pb.PlayPrompt(text="For billing press 1.", language="en")
    collect = (await cc.stub.OfferContact(step())).decision.ivr_step
    assert collect.collect.max_digits == 1
    transfer = (await cc.stub.OfferContact(step(digit="1"))).decision.ivr_step.transfer
    assert transfer.queue_id == "billing"
    assert dict(transfer.attributes) == {"inquiry_type": "bill_query"}
    started = (await cc.record("c9")).arrived_at
    decision = (await cc.stub.OfferContact(offer("c9", transfer.queue_id))).decision
    assert decision.WhichOneof("outcome") == "queued"
    record = await cc.record("c9")
    assert record.arrived_at == started
    assert record.queue_id == "billing"


async def test_an_unknown_ivr_flow_is_not_found(cc: CallControl) -> None:
    request = offer("c9", queue_id="")
    request.ivr.CopyFrom(pb.IvrEntry(flow="nope"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cc.stub.OfferContact(request)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


# --- SetAgentState ----------------------------------------------------------------------------


async def test_a_legal_state_change_answers_with_the_new_state(cc: CallControl) -> None:
    agent = await login(cc, "ann")
    assert agent.agent_id == "ann"
    assert (agent.state, agent.presence) == (pb.AGENT_STATE_AVAILABLE, pb.AGENT_STATE_AVAILABLE)
    request = pb.SetAgentStateRequest(agent_id="ann", state=pb.AGENT_STATE_BREAK, break_reason="lunch")
    agent = (await cc.stub.SetAgentState(request)).agent
    assert (agent.state, agent.break_reason) == (pb.AGENT_STATE_BREAK, "lunch")


async def test_an_illegal_state_change_is_a_failed_precondition(cc: CallControl) -> None:
    request = pb.SetAgentStateRequest(agent_id="bob", state=pb.AGENT_STATE_OFFLINE)  # offline already
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cc.stub.SetAgentState(request)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot move from offline to offline" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("agent_id", "state", "code", "text"),
    [
        ("zed", pb.AGENT_STATE_AVAILABLE, "NOT_FOUND", "zed"),
        ("ann", pb.AGENT_STATE_BREAK, "INVALID_ARGUMENT", "reason"),
        ("ann", pb.AGENT_STATE_ON_CONTACT, "INVALID_ARGUMENT", "state"),
        ("", pb.AGENT_STATE_AVAILABLE, "INVALID_ARGUMENT", "agent_id"),
    ],
)
async def test_state_requests_the_node_cannot_take(
    cc: CallControl, agent_id: str, state: pb.AgentState, code: str, text: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cc.stub.SetAgentState(pb.SetAgentStateRequest(agent_id=agent_id, state=state))
    assert caught.value.code().name == code
    assert text in (caught.value.details() or "")


# --- ReportEvents -----------------------------------------------------------------------------


async def test_reported_events_complete_the_call_record(cc: CallControl) -> None:
    await login(cc, "ann")
    await cc.stub.OfferContact(offer("c1"))
    summary = await report(
        cc,
        pb.ContactEvent(contact_id="c1", agent_id="ann", ringing=pb.Ringing()),
        pb.ContactEvent(contact_id="c1", agent_id="ann", answered=pb.Answered()),
        pb.ContactEvent(contact_id="c1", agent_id="ann", ended=pb.Ended(hung_up_by=pb.PARTY_CALLER)),
        pb.ContactEvent(contact_id="c404", agent_id="ann", answered=pb.Answered()),
        pb.ContactEvent(contact_id="c1"),
    )
    assert (summary.received, summary.applied) == (5, 3)
    assert [(r.index, r.contact_id, r.status) for r in summary.rejected] == [
        (3, "c404", "FAILED_PRECONDITION"),
        (4, "c1", "INVALID_ARGUMENT"),
    ]
    record = await cc.record("c1")
    assert record.outcome == "answered"
    assert record.ended_by == "caller"
    assert record.answered_at is not None
    assert record.ended_at is not None
    assert record.arrived_at is not None
    assert record.arrived_at <= record.answered_at <= record.ended_at
    assert record.wait_s == pytest.approx((record.answered_at - record.arrived_at).total_seconds())
    assert record.talk_s == pytest.approx((record.ended_at - record.answered_at).total_seconds(), abs=1e-3)
    assert record.wrap_up_s is None  # ann wraps up until she asks for another state
    await login(cc, "ann")
    final = await cc.record("c1")
    assert final.wrap_up_s is not None
    assert final.wrap_up_s >= 0


async def test_an_abandoned_contact_records_its_position_and_wait(cc: CallControl) -> None:
    await cc.stub.OfferContact(offer("c1", "sales"))
    await cc.stub.OfferContact(offer("c2", "sales"))
    summary = await report(cc, pb.ContactEvent(contact_id="c2", abandoned=pb.Abandoned()))
    assert summary.applied == 1
    record = await cc.record("c2")
    assert (record.outcome, record.entry_position, record.exit_position) == ("abandoned", 2, 2)
    assert record.wait_s is not None
    assert record.wait_s >= 0


# --- watching ---------------------------------------------------------------------------------


async def test_watch_queues_yields_figures_for_each_queue_each_round(cc: CallControl) -> None:
    await login(cc, "bob")
    await cc.stub.OfferContact(offer("c1", "sales"))  # bob rings
    await cc.stub.OfferContact(offer("c2", "sales"))  # waits
    call = cc.stub.WatchQueues(pb.WatchQueuesRequest(interval_s=0.1, queue_ids=["billing", "sales"]))
    figures = []
    async with asyncio.timeout(10):
        async for message in call:
            figures.append(message)
            if len(figures) == 4:
                break
    call.cancel()
    assert [f.queue_id for f in figures] == ["billing", "sales", "billing", "sales"]
    sales = figures[1]
    assert (sales.waiting, sales.staffed_agents, sales.answered) == (1, 1, 0)
    assert sales.service_level_threshold_s == 20.0
    assert not sales.HasField("service_level")
    assert figures[0].staffed_agents == 1  # bob has billing too
    assert figures[3].at.ToDatetime() > figures[1].at.ToDatetime()


async def test_watch_queues_refuses_a_bad_interval(cc: CallControl) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in cc.stub.WatchQueues(pb.WatchQueuesRequest(interval_s=0)):
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "interval_s" in (caught.value.details() or "")


async def test_watch_routing_tells_the_switch_when_a_waiting_contact_gets_an_agent(cc: CallControl) -> None:
    await cc.stub.OfferContact(offer("c1", "sales"))
    call = cc.stub.WatchRouting(pb.WatchRoutingRequest())
    async with asyncio.timeout(10):
        await call.initial_metadata()  # sent once the subscription is in place
        assert (await login(cc, "bob")).state == pb.AGENT_STATE_RESERVED
        update = await call.read()
    call.cancel()
    assert update.contact_id == "c1"
    assert update.agent == pb.AgentAssigned(queue_id="sales", agent_id="bob")


async def test_the_routing_timer_offers_a_callback_after_the_maximum_wait(cc: CallControl) -> None:
    call = cc.stub.WatchRouting(pb.WatchRoutingRequest())
    async with asyncio.timeout(10):
        await call.initial_metadata()
        queued = (await cc.stub.OfferContact(offer("c7", "support"))).decision
        assert queued.WhichOneof("outcome") == "queued"
        update = await call.read()  # 0.2 s later, with no call from the switch in between
    call.cancel()
    assert update.contact_id == "c7"
    assert update.callback_offered.queue_id == "support"
    record = await cc.record("c7")
    assert record.outcome == "callback"
    assert record.wait_s == pytest.approx(0.2, abs=0.1)


# --- health and reflection --------------------------------------------------------------------


async def test_health_reports_serving(cc: CallControl) -> None:
    stub = health_pb2_grpc.HealthStub(cc.channel)
    for service in ("", SERVICE):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(cc: CallControl) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(cc.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)

    answers = [answer async for answer in stub.ServerReflectionInfo(ask())]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto
