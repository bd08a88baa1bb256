"""Call detail records from the switchboard: a fixed routing clock, the real engine, SQLite in tmp_path.

Each test drives the switchboard as the gRPC adapter would and reads the record back from the
store, so it checks what the recorder writes, field by field, with exact times.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_node.calls import CallRecord, CallRecorder
from edge_node.clock import RoutingClock
from edge_node.core.ivr import Digit, Hangup, Play, load_flow
from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    Assigned,
    CallbackOffered,
    Channel,
    ContactAssigned,
    QueueConfig,
    Queued,
    RoutingEngine,
)
from edge_node.rpc import CallControlServicer
from edge_node.store import Store
from edge_node.switchboard import Arrival, Switchboard
from proto import callcontrol_pb2 as pb
from sync.entities import CALL_RECORD

WALL0 = 1_700_000_000.0
T0 = datetime.fromtimestamp(WALL0, UTC)
AGENTS = (
    AgentProfile("ann", {"x": 3}, frozenset({"en"}), {Channel.VOICE: 1}),
    AgentProfile("yan", {"y": 3}, frozenset({"en"}), {Channel.VOICE: 1}),
    AgentProfile("cat", {"chat": 3}, frozenset({"en"}), {Channel.CHAT: 2}),
)
QUEUES = (
    QueueConfig("second", "y"),
    QueueConfig("first", "x", max_wait_s=30, overflow_to="second"),
    QueueConfig("chats", "chat"),
    QueueConfig("nobody", "z", max_wait_s=10, divert_on_entry=True),
)
FLOW = """
start = "menu"
languages = ["en"]

[nodes.menu]
type = "menu"
prompt.en = "Press 1 to hear the opening hours."
on_timeout = "bye"
on_invalid = "bye"

[[nodes.menu.options]]
digit = "1"
next = "bye"

[nodes.bye]
type = "hangup"
prompt.en = "We are open from 8 to 8. Goodbye."
"""


@dataclass
class Desk:
    board: Switchboard
    clock: RoutingClock
    recorder: CallRecorder
    store: Store

    def at(self, seconds: float) -> None:
        """Move the routing clock to `seconds` after the start."""
        self.clock.advance(1000.0 + seconds - self.clock.now())

    async def record(self, contact_id: str) -> CallRecord:
        await self.recorder.wait_flushed()
        values = await self.store.read(lambda r: r.get(CALL_RECORD, contact_id))
        assert values is not None
        return CallRecord.from_values(values)


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    store = Store(tmp_path / "node.db", node_id="eu-de-unit", synchronous="NORMAL")
    store.open()
    clock = RoutingClock(monotonic=1000.0, wall=WALL0)
    recorder = CallRecorder(store, clock)
    writer = asyncio.create_task(recorder.run())
    flows = {"info": load_flow(FLOW)}
    board = Switchboard(RoutingEngine(QUEUES), recorder, agents=AGENTS, flows=flows)
    try:
        yield Desk(board, clock, recorder, store)
    finally:
        await recorder.wait_flushed()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        store.close()


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def voice(contact_id: str, **kw: object) -> Arrival:
    return Arrival(contact_id, Channel.VOICE, language="en", caller_country="DE", **kw)  # type: ignore[arg-type]


async def test_an_overflowed_contact_answered_in_the_second_queue(desk: Desk) -> None:
    board = desk.board
    board.set_agent_state("yan", AgentState.AVAILABLE, None)
    board.set_agent_state("yan", AgentState.BREAK, "coffee")
    assert isinstance(board.offer(voice("c1", inquiry_type="plan"), "first"), Queued)
    desk.at(30)
    board.tick()  # the maximum wait: over to "second", where nobody is free yet
    desk.at(31)
    board.set_agent_state("yan", AgentState.AVAILABLE, None)  # yan takes it at once
    desk.at(33)
    board.ringing("c1", "yan")
    desk.at(35)
    board.answered("c1", "yan")
    desk.at(95)
    board.ended("c1", "yan", by="caller")
    desk.at(100)
    board.set_agent_state("yan", AgentState.AVAILABLE, None)  # ends wrap-up
    record = await desk.record("c1")
    assert record == CallRecord(
        id="c1",
        channel="voice",
        queue_id="second",
        agent_id="yan",
        arrived_at=s(0),
        offered_at=s(33),
        answered_at=s(35),
        ended_at=s(95),
        outcome="answered",
        wait_s=35.0,
        talk_s=60.0,
        wrap_up_s=5.0,
        caller_country="DE",
        inquiry_type="plan",
        entry_position=1,
        overflowed_from="first",
        overflowed_at=s(30),
        ended_by="caller",
    )


async def test_a_declined_offer_goes_back_in_line_and_to_the_next_free_agent(desk: Desk) -> None:
    board = desk.board
    board.set_agent_state("yan", AgentState.AVAILABLE, None)
    decision = board.offer(voice("c1"), "second")
    assert decision == Assigned("c1", "second", "yan", by_affinity=False)
    with board.watch_routing() as watch:
        desk.at(20)
        board.declined("c1", "yan", "no_answer")  # yan goes on break, c1 waits again
        assert board.engine.agent("yan").state is AgentState.BREAK
        board.set_agent_state("yan", AgentState.AVAILABLE, None)
        updates = [await anext(watch), await anext(watch)]
    assert [(type(u).__name__, at) for at, u in updates] == [
        ("ContactQueued", s(20)),
        ("ContactAssigned", s(20)),
    ]
    assert isinstance(updates[1][1], ContactAssigned)
    record = await desk.record("c1")
    assert (record.agent_id, record.offered_at, record.outcome, record.entry_position) == (
        "yan",
        s(20),
        None,
        1,
    )


async def test_chat_wrap_up_belongs_to_the_last_chat(desk: Desk) -> None:
    board = desk.board
    board.set_agent_state("cat", AgentState.AVAILABLE, None)
    for cid in ("m1", "m2"):
        assert isinstance(board.offer(Arrival(cid, Channel.CHAT, language="en"), "chats"), Assigned)
        board.answered(cid, "cat")
    desk.at(10)
    board.ended("m1", "cat")
    desk.at(20)
    board.ended("m2", "cat")
    desk.at(27)
    board.set_agent_state("cat", AgentState.AVAILABLE, None)
    first, second = await desk.record("m1"), await desk.record("m2")
    assert (first.talk_s, first.wrap_up_s, first.ended_by) == (10.0, 0.0, "agent")
    assert (second.talk_s, second.wrap_up_s) == (20.0, 7.0)


async def test_diverted_on_entry_a_contact_is_offered_a_callback_at_once(desk: Desk) -> None:
    decision = desk.board.offer(voice("c1"), "nobody")
    assert isinstance(decision, CallbackOffered)
    record = await desk.record("c1")
    assert (record.outcome, record.ended_at, record.wait_s, record.queue_id) == (
        "callback",
        s(0),
        0.0,
        "nobody",
    )


async def test_a_contact_id_offered_again_starts_a_fresh_record(desk: Desk) -> None:
    board = desk.board
    board.offer(voice("c1"), "nobody")  # callback offered: the record is final
    desk.at(600)
    board.set_agent_state("ann", AgentState.AVAILABLE, None)
    assert isinstance(board.offer(voice("c1"), "first"), Assigned)  # the callback, routed
    record = await desk.record("c1")
    assert (record.arrived_at, record.outcome, record.ended_at, record.wait_s) == (s(600), None, None, None)
    assert (record.queue_id, record.agent_id) == ("first", "ann")


async def test_an_ivr_hangup_is_self_service(desk: Desk) -> None:
    board = desk.board
    assert isinstance(board.ivr(voice("c1"), "info", None), Play)
    board.ivr(voice("c1"), "info", None)  # the prompt played: collect
    desk.at(4)
    assert isinstance(board.ivr(voice("c1"), "info", Digit("1")), Play)
    desk.at(9)
    assert isinstance(board.ivr(voice("c1"), "info", None), Hangup)
    record = await desk.record("c1")
    assert (record.outcome, record.arrived_at, record.ended_at, record.queue_id) == (
        "self_service",
        s(0),
        s(9),
        None,
    )


async def test_hanging_up_in_the_ivr_is_an_abandon(desk: Desk) -> None:
    desk.board.ivr(voice("c1"), "info", None)
    desk.at(3)
    desk.board.abandoned("c1")
    record = await desk.record("c1")
    assert (record.outcome, record.wait_s) == ("abandoned", 3.0)


@pytest.mark.parametrize(("reported", "used"), [(-50, 10), (15, 15), (99, 20)])
async def test_switch_timestamps_count_only_between_the_last_instant_and_now(
    desk: Desk, reported: float, used: float
) -> None:
    board = desk.board
    board.set_agent_state("yan", AgentState.AVAILABLE, None)
    board.offer(voice("c1"), "second")
    desk.at(10)
    board.tick()
    desk.at(20)
    board.answered("c1", "yan", occurred_at=s(reported))
    assert (await desk.record("c1")).answered_at == s(used)


# --- recordings, reported over CallControl.ReportEvents --------------------------------------------

NO_CONTEXT: Any = None  # ReportEvents answers with a summary and never touches its context


async def report(board: Switchboard, *events: pb.ContactEvent) -> pb.ReportEventsResponse:
    async def stream() -> AsyncIterator[pb.ContactEvent]:
        for event in events:
            yield event

    return await CallControlServicer(board).ReportEvents(stream(), NO_CONTEXT)


async def test_a_reported_recording_uri_reaches_the_call_record(desk: Desk) -> None:
    board = desk.board
    board.set_agent_state("yan", AgentState.AVAILABLE, None)
    board.offer(voice("c1"), "second")
    uri = "s3://recordings-eu-de/2026/03/02/c1.opus"
    summary = await report(
        board,
        pb.ContactEvent(contact_id="c1", agent_id="yan", answered=pb.Answered(), recording_uri=""),
        pb.ContactEvent(contact_id="c1", agent_id="yan", ended=pb.Ended(), recording_uri=uri),
    )
    assert (summary.applied, list(summary.rejected)) == (2, [])
    record = await desk.record("c1")
    assert (record.outcome, record.ended_by, record.recording_uri) == ("answered", "agent", uri)
    desk.at(5)
    board.set_agent_state("yan", AgentState.AVAILABLE, None)  # wrap-up ends: the record is final
    assert (await desk.record("c1")).recording_uri == uri
    board.offer(voice("c1"), "second")  # offered again: a fresh record has no recording yet
    assert (await desk.record("c1")).recording_uri is None


async def test_a_recording_uri_longer_than_declared_refuses_its_event(desk: Desk) -> None:
    board = desk.board
    board.set_agent_state("yan", AgentState.AVAILABLE, None)
    board.offer(voice("c1"), "second")
    limit = CALL_RECORD.field("recording_uri").max_length
    too_long = "s3://r/" + "x" * (limit - 6)
    summary = await report(
        board,
        pb.ContactEvent(contact_id="c1", agent_id="yan", answered=pb.Answered()),
        pb.ContactEvent(contact_id="c1", agent_id="yan", ended=pb.Ended(), recording_uri=too_long),
    )
    assert summary.applied == 1
    assert list(summary.rejected) == [
        pb.RejectedEvent(
            index=1,
            contact_id="c1",
            status="INVALID_ARGUMENT",
            detail=f"invalid recording_uri: longer than {limit} characters",
        )
    ]
    record = await desk.record("c1")
    assert (record.ended_at, record.recording_uri) == (None, None)  # nothing of the event applied
    assert board.engine.agent("yan").state is AgentState.ON_CONTACT
    longest = too_long[:limit]
    ended = pb.ContactEvent(contact_id="c1", agent_id="yan", ended=pb.Ended(), recording_uri=longest)
    assert (await report(board, ended)).applied == 1
    assert (await desk.record("c1")).recording_uri == longest
