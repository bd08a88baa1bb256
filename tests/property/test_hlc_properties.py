"""Laws of the hybrid logical clock, under arbitrary wall clocks and remote stamps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.hlc import (
    COUNTER_LIMIT,
    ENCODED_LIMIT,
    WALL_LIMIT,
    ClockDriftError,
    ClockOverflowError,
    HLCTimestamp,
    HybridLogicalClock,
)

# Small walls and counters near the limit make same-millisecond collisions,
# backward jumps and overflow common; the full range covers the encoding.
walls = st.one_of(st.integers(0, 30), st.integers(0, WALL_LIMIT - 1))
counters = st.one_of(st.integers(0, 5), st.integers(COUNTER_LIMIT - 3, COUNTER_LIMIT - 1))
timestamps = st.builds(HLCTimestamp, walls, counters)


@dataclass(frozen=True)
class Now:
    wall_ms: int


@dataclass(frozen=True)
class Receive:
    remote: HLCTimestamp
    wall_ms: int


@st.composite
def near_receives(draw: st.DrawFn) -> Receive:
    """A remote stamp a few ms either side of the wall clock, so drift limits bite."""
    wall_ms = draw(walls)
    remote_wall_ms = min(max(wall_ms + draw(st.integers(-25, 25)), 0), WALL_LIMIT - 1)
    return Receive(HLCTimestamp(remote_wall_ms, draw(counters)), wall_ms)


events = st.lists(
    st.one_of(st.builds(Now, walls), st.builds(Receive, timestamps, walls), near_receives()),
    max_size=40,
)


def least_after(wall_ms: int, *before: HLCTimestamp | None) -> HLCTimestamp | None:
    """The least timestamp at wall_ms above all of before; None if none fits 16 bits."""
    counter = 0
    for ts in before:
        if ts is not None and ts.wall_ms == wall_ms:
            counter = max(counter, ts.counter + 1)
    return HLCTimestamp(wall_ms, counter) if counter < COUNTER_LIMIT else None


@given(
    last=st.none() | timestamps,
    max_drift_ms=st.integers(0, 20),
    script=events,
)
def test_every_event_is_the_least_timestamp_after_all_before_it(
    last: HLCTimestamp | None, max_drift_ms: int, script: list[Now | Receive]
) -> None:
    """Monotonic, past every remote, close to physical time, and refusals change nothing.

    The expected stamp is the least one whose wall time is the largest wall
    time seen so far and which is above the previous stamp and the remote one.
    """
    clock = HybridLogicalClock(max_drift_ms=max_drift_ms, last=last)
    max_wall_seen = -1 if last is None else last.wall_ms
    for event in script:
        before = clock.last
        match event:
            case Now(wall_ms):
                wall = max(max_wall_seen, wall_ms)
                expected = least_after(wall, before)
                try:
                    issued = clock.now(wall_ms)
                except ClockOverflowError:
                    assert expected is None
                    assert clock.last == before
                    continue
            case Receive(remote, wall_ms):
                if remote.wall_ms - wall_ms > max_drift_ms:
                    try:
                        clock.receive(remote, wall_ms)
                    except ClockDriftError:
                        assert clock.last == before
                        continue
                    raise AssertionError("drift beyond the limit was accepted")
                wall = max(max_wall_seen, wall_ms, remote.wall_ms)
                expected = least_after(wall, before, remote)
                try:
                    issued = clock.receive(remote, wall_ms)
                except ClockOverflowError:
                    assert expected is None
                    assert clock.last == before
                    continue
                assert issued > remote
        assert issued == expected
        assert before is None or issued > before
        assert issued.wall_ms == wall
        assert clock.last == issued
        max_wall_seen = wall


@given(walls=st.lists(walls, min_size=1, max_size=60), restart_at=st.integers(0, 60))
def test_a_clock_restored_from_its_last_timestamp_keeps_increasing(walls: list[int], restart_at: int) -> None:
    clock = HybridLogicalClock()
    issued: list[HLCTimestamp] = []
    for i, wall_ms in enumerate(walls):
        if i == restart_at:
            clock = HybridLogicalClock(last=clock.last)
        issued.append(clock.now(wall_ms))
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)


@given(
    a_walls=st.lists(walls, min_size=1, max_size=20),
    b_walls=st.lists(walls, min_size=1, max_size=20),
)
def test_a_reply_is_later_than_the_message_it_answers(a_walls: list[int], b_walls: list[int]) -> None:
    """Two peers with unrelated clocks pass one message back and forth per turn."""
    a, b = HybridLogicalClock(max_drift_ms=WALL_LIMIT), HybridLogicalClock(max_drift_ms=WALL_LIMIT)
    message = a.now(a_walls[0])
    for a_wall, b_wall in zip(a_walls, b_walls, strict=False):
        received = b.receive(message, b_wall)
        reply = b.now(b_wall)
        answered = a.receive(reply, a_wall)
        assert message < received < reply < answered
        message = a.now(a_wall)


@given(
    last=st.none() | timestamps,
    wall_ms=st.integers(0, WALL_LIMIT - 2_002),
    max_drift_ms=st.integers(0, 1000),
    excess_ms=st.integers(1, 1000),
    counter=counters,
)
def test_drift_beyond_the_limit_is_always_refused(
    last: HLCTimestamp | None, wall_ms: int, max_drift_ms: int, excess_ms: int, counter: int
) -> None:
    remote = HLCTimestamp(wall_ms + max_drift_ms + excess_ms, counter)
    clock = HybridLogicalClock(max_drift_ms=max_drift_ms, last=last)
    with pytest.raises(ClockDriftError) as info:
        clock.receive(remote, wall_ms)
    assert info.value.drift_ms == max_drift_ms + excess_ms
    assert clock.last == last


@given(ts=timestamps)
def test_encode_decode_round_trip(ts: HLCTimestamp) -> None:
    encoded = ts.encode()
    assert 0 <= encoded < ENCODED_LIMIT
    assert HLCTimestamp.decode(encoded) == ts


@given(value=st.integers(0, ENCODED_LIMIT - 1))
def test_decode_encode_round_trip(value: int) -> None:
    assert HLCTimestamp.decode(value).encode() == value


@given(a=timestamps, b=timestamps)
def test_encoding_preserves_order(a: HLCTimestamp, b: HLCTimestamp) -> None:
    assert (a < b) == (a.encode() < b.encode())
    assert (a == b) == (a.encode() == b.encode())
