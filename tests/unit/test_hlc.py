"""Worked examples, limits and messages of the hybrid logical clock."""

from __future__ import annotations

import datetime as dt

import pytest

from sync.errors import SyncError
from sync.hlc import (
    ClockDriftError,
    ClockOverflowError,
    HLCTimestamp,
    HybridLogicalClock,
    TimestampRangeError,
    format_wall_ms,
)

T = HLCTimestamp
NOON_MS = 1_795_435_200_000  # 2026-11-23T12:00:00Z


def test_now_takes_wall_time_and_counts_within_a_millisecond() -> None:
    clock = HybridLogicalClock()
    assert clock.last is None
    assert clock.now(1000) == T(1000, 0)
    assert clock.now(1000) == T(1000, 1)
    assert clock.now(1001) == T(1001, 0)
    assert clock.last == T(1001, 0)


def test_now_keeps_increasing_when_the_wall_clock_goes_back() -> None:
    clock = HybridLogicalClock()
    clock.now(5000)
    assert clock.now(4000) == T(5000, 1)
    assert clock.now(4999) == T(5000, 2)
    assert clock.now(5000) == T(5000, 3)
    assert clock.now(5001) == T(5001, 0)


@pytest.mark.parametrize(
    ("last", "remote", "wall_ms", "expected"),
    [
        pytest.param(None, T(500, 3), 400, T(500, 4), id="first-event-remote-ahead"),
        pytest.param(None, T(500, 3), 600, T(600, 0), id="first-event-wall-ahead"),
        pytest.param(T(1001, 0), T(1005, 3), 1002, T(1005, 4), id="remote-ahead"),
        pytest.param(T(1005, 4), T(1003, 9), 1002, T(1005, 5), id="local-ahead"),
        pytest.param(T(1005, 5), T(1005, 7), 1002, T(1005, 8), id="same-ms-remote-counter-higher"),
        pytest.param(T(1005, 9), T(1005, 7), 1002, T(1005, 10), id="same-ms-local-counter-higher"),
        pytest.param(T(1005, 9), T(900, 0), 2000, T(2000, 0), id="wall-ahead-of-both"),
    ],
)
def test_receive_follows_the_kulkarni_rules(
    last: HLCTimestamp | None, remote: HLCTimestamp, wall_ms: int, expected: HLCTimestamp
) -> None:
    clock = HybridLogicalClock(last=last)
    assert clock.receive(remote, wall_ms) == expected
    assert clock.last == expected


def test_a_restored_clock_continues_after_its_last_timestamp() -> None:
    clock = HybridLogicalClock(last=T(5000, 7))
    assert clock.now(4000) == T(5000, 8)


def test_messages_between_peers_are_ordered_causally() -> None:
    edge, hub = HybridLogicalClock(), HybridLogicalClock()
    sent = edge.now(10_000)
    # The hub's wall clock is 3 s behind; its receive still follows the send.
    received = hub.receive(sent, 7_000)
    reply = hub.now(7_001)
    answered = edge.receive(reply, 10_000)
    assert sent < received < reply < answered
    assert [sent, received, reply, answered] == [T(10_000, 0), T(10_000, 1), T(10_000, 2), T(10_000, 3)]


def test_drift_up_to_the_limit_is_accepted() -> None:
    clock = HybridLogicalClock(max_drift_ms=100)
    assert clock.receive(T(1100, 0), 1000) == T(1100, 1)


def test_drift_beyond_the_limit_is_refused_and_leaves_the_clock_unchanged() -> None:
    clock = HybridLogicalClock(max_drift_ms=100, last=T(900, 2))
    with pytest.raises(ClockDriftError) as info:
        clock.receive(T(1101, 0), 1000)
    assert clock.last == T(900, 2)
    assert isinstance(info.value, SyncError)
    assert (info.value.remote, info.value.wall_ms) == (T(1101, 0), 1000)
    assert (info.value.max_drift_ms, info.value.drift_ms) == (100, 101)


def test_drift_message_names_both_times_and_the_limit() -> None:
    clock = HybridLogicalClock()
    with pytest.raises(ClockDriftError) as info:
        clock.receive(T(NOON_MS + 60_001, 4), NOON_MS)
    assert str(info.value) == (
        "remote timestamp 2026-11-23T12:01:00.001Z/4 is 60001 ms ahead of local wall clock "
        "2026-11-23T12:00:00.000Z, beyond the 60000 ms drift limit"
    )


def test_drift_is_measured_against_the_wall_clock_not_the_last_timestamp() -> None:
    clock = HybridLogicalClock(max_drift_ms=100, last=T(5000, 0))
    assert clock.receive(T(5050, 0), 5000) == T(5050, 1)
    with pytest.raises(ClockDriftError):
        clock.receive(T(5050, 0), 4000)


def test_counter_overflow_on_now_is_backpressure() -> None:
    clock = HybridLogicalClock(last=T(1000, 65_535))
    with pytest.raises(ClockOverflowError) as info:
        clock.now(1000)
    assert clock.last == T(1000, 65_535)
    assert info.value.wall_ms == 1000
    assert str(info.value) == (
        "hlc counter would exceed 65535 within millisecond 1970-01-01T00:00:01.000Z; "
        "retry once the wall clock has moved on"
    )
    assert clock.now(1001) == T(1001, 0)


def test_counter_overflow_on_receive_leaves_the_clock_unchanged() -> None:
    clock = HybridLogicalClock(last=T(1000, 3))
    with pytest.raises(ClockOverflowError):
        clock.receive(T(1000, 65_535), 999)
    assert clock.last == T(1000, 3)


def test_negative_drift_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_drift_ms must be non-negative, got -1"):
        HybridLogicalClock(max_drift_ms=-1)


@pytest.mark.parametrize("wall_ms", [-1, 2**48])
def test_wall_clock_readings_out_of_range_are_refused(wall_ms: int) -> None:
    clock = HybridLogicalClock(last=T(1000, 0))
    with pytest.raises(TimestampRangeError):
        clock.now(wall_ms)
    with pytest.raises(TimestampRangeError):
        clock.receive(T(0, 0), wall_ms)
    assert clock.last == T(1000, 0)


@pytest.mark.parametrize(
    ("wall_ms", "counter", "message"),
    [
        (-1, 0, "hlc wall_ms must be in [0, 281474976710656), got -1"),
        (2**48, 0, "hlc wall_ms must be in [0, 281474976710656), got 281474976710656"),
        (0, -1, "hlc counter must be in [0, 65536), got -1"),
        (0, 2**16, "hlc counter must be in [0, 65536), got 65536"),
    ],
)
def test_timestamp_fields_are_range_checked(wall_ms: int, counter: int, message: str) -> None:
    with pytest.raises(TimestampRangeError) as info:
        HLCTimestamp(wall_ms, counter)
    assert str(info.value) == message
    assert isinstance(info.value, SyncError)


def test_encode_packs_wall_above_counter() -> None:
    assert T(0, 0).encode() == 0
    assert T(1, 2).encode() == 65_538
    assert T(2**48 - 1, 2**16 - 1).encode() == 2**64 - 1


def test_decode_inverts_encode_at_the_extremes() -> None:
    assert HLCTimestamp.decode(0) == T(0, 0)
    assert HLCTimestamp.decode(65_538) == T(1, 2)
    assert HLCTimestamp.decode(2**64 - 1) == T(2**48 - 1, 2**16 - 1)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_decode_refuses_values_encode_cannot_produce(value: int) -> None:
    with pytest.raises(TimestampRangeError) as info:
        HLCTimestamp.decode(value)
    assert info.value.field == "encoded value"
    assert str(info.value) == f"hlc encoded value must be in [0, 18446744073709551616), got {value}"


def test_timestamps_order_by_wall_then_counter() -> None:
    assert T(1000, 9) < T(1001, 0) < T(1001, 1)
    assert sorted([T(2, 0), T(1, 5), T(1, 0)]) == [T(1, 0), T(1, 5), T(2, 0)]


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (T(0, 0), "1970-01-01T00:00:00.000Z/0"),
        (T(NOON_MS + 123, 5), "2026-11-23T12:00:00.123Z/5"),
        (T(2**48 - 1, 65_535), "10889-08-02T05:31:50.655Z/65535"),
    ],
)
def test_str_is_iso_utc_with_milliseconds_and_counter(timestamp: HLCTimestamp, text: str) -> None:
    assert str(timestamp) == text


def test_format_wall_ms_agrees_with_datetime() -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for wall_ms in (1, 86_399_999, 951_782_400_000, 253_402_300_799_999):  # ..., 9999-12-31
        moment = epoch + dt.timedelta(milliseconds=wall_ms)
        assert format_wall_ms(wall_ms) == moment.isoformat(timespec="milliseconds")[:-6] + "Z"
