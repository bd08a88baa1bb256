"""Call detail records as Asterisk queue_log lines: `epoch|callid|queuename|agent|event|data...`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge_node.calls import CallRecord
from edge_node.queuelog import queue_log, record_lines

T0 = datetime.fromtimestamp(1_700_000_000, UTC)
E0 = 1_700_000_000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lines(record: CallRecord) -> list[str]:
    return [str(line) for line in record_lines(record)]


def answered(**kw: object) -> CallRecord:
    fields: dict[str, object] = {
        "id": "1700000000.42",
        "queue_id": "billing",
        "agent_id": "ann",
        "arrived_at": T0,
        "offered_at": at(10),
        "answered_at": at(15),
        "ended_at": at(75.9),
        "outcome": "answered",
        "entry_position": 2,
    }
    return CallRecord(**(fields | kw))  # type: ignore[arg-type]  # test data by keyword


def test_an_answered_call_the_agent_ends() -> None:
    assert lines(answered(ended_by="agent")) == [
        f"{E0}|1700000000.42|billing|NONE|ENTERQUEUE|||2",
        f"{E0 + 15}|1700000000.42|billing|ann|CONNECT|15|ann|5",
        f"{E0 + 75}|1700000000.42|billing|ann|COMPLETEAGENT|15|60|2",
    ]


def test_the_caller_ending_it_is_completecaller() -> None:
    assert (
        lines(answered(ended_by="caller"))[-1]
        == f"{E0 + 75}|1700000000.42|billing|ann|COMPLETECALLER|15|60|2"
    )


def test_a_transfer_names_the_target_hold_and_talk_time() -> None:
    record = answered(transferred_to="8001", ended_by=None)
    assert lines(record)[-1] == f"{E0 + 75}|1700000000.42|billing|ann|TRANSFER|8001||15|60|2"


def test_a_call_still_connected_has_no_end_line() -> None:
    assert [line.event for line in record_lines(answered(ended_at=None))] == ["ENTERQUEUE", "CONNECT"]


def test_an_abandoned_call_has_position_origposition_and_waittime() -> None:
    record = CallRecord(
        "c2",
        queue_id="billing",
        arrived_at=T0,
        ended_at=at(40),
        outcome="abandoned",
        entry_position=3,
        exit_position=1,
        agent_id="bob",  # it was ringing at bob: ABANDON still names no member, as app_queue does
    )
    assert lines(record) == [
        f"{E0}|c2|billing|NONE|ENTERQUEUE|||3",
        f"{E0 + 40}|c2|billing|NONE|ABANDON|1|3|40",
    ]


def test_a_callback_offer_is_an_exit_with_timeout_at_the_original_position_when_unobserved() -> None:
    record = CallRecord(
        "c3", queue_id="billing", arrived_at=T0, ended_at=at(120), outcome="callback", entry_position=4
    )
    assert lines(record)[-1] == f"{E0 + 120}|c3|billing|NONE|EXITWITHTIMEOUT|4|4|120"


def test_a_refused_caller_never_entered_the_queue() -> None:
    record = CallRecord("c4", queue_id="billing", arrived_at=T0, ended_at=T0, outcome="refused")
    assert lines(record) == [f"{E0}|c4|billing|NONE|FULL"]


def test_an_overflow_leaves_the_first_queue_and_enters_the_second() -> None:
    record = answered(
        queue_id="overflow",
        overflowed_from="billing",
        overflowed_at=at(60),
        offered_at=at(70),
        answered_at=at(72),
        ended_at=at(100),
        entry_position=1,
        ended_by="agent",
    )
    assert lines(record) == [
        f"{E0}|1700000000.42|billing|NONE|ENTERQUEUE|||1",
        f"{E0 + 60}|1700000000.42|billing|NONE|EXITWITHTIMEOUT|1|1|60",
        f"{E0 + 60}|1700000000.42|overflow|NONE|ENTERQUEUE|||1",
        f"{E0 + 72}|1700000000.42|overflow|ann|CONNECT|12|ann|2",  # holdtime from entering overflow
        f"{E0 + 100}|1700000000.42|overflow|ann|COMPLETEAGENT|12|28|1",
    ]


def test_a_contact_that_never_reached_a_queue_has_no_lines() -> None:
    record = CallRecord("c5", arrived_at=T0, ended_at=at(30), outcome="self_service")
    assert record_lines(record) == []


def test_separators_in_ids_cannot_break_the_line_format() -> None:
    record = CallRecord("a|b", queue_id="q\nx", arrived_at=T0, entry_position=1)
    assert lines(record) == [f"{E0}|a_b|q x|NONE|ENTERQUEUE|||1"]


def test_the_export_interleaves_records_in_time_order_and_honours_since() -> None:
    first = answered(ended_by="agent")
    second = CallRecord("c2", queue_id="billing", arrived_at=at(20), ended_at=at(30), outcome="abandoned")
    out = list(queue_log([first, second]))
    assert [line.split("|")[4] for line in out] == [
        "ENTERQUEUE",
        "CONNECT",
        "ENTERQUEUE",
        "ABANDON",
        "COMPLETEAGENT",
    ]
    assert all(line.endswith("\n") for line in out)
    assert [line.split("|")[0] for line in queue_log([first, second], since=at(20))] == [
        str(E0 + 20),
        str(E0 + 30),
        str(E0 + 75),
    ]


@pytest.mark.parametrize("missing", ["arrived_at", "queue_id"])
def test_a_record_without_arrival_or_queue_has_no_lines(missing: str) -> None:
    record = answered(**{missing: None})
    assert record_lines(record) == []
