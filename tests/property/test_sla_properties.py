"""Laws of business calendars and SLA clocks, over random calendars, zones and instants."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.core.calendar import BusinessCalendar
from edge_node.core.sla import ALWAYS_OPEN, DEFAULT_POLICY, ClockStatus, TicketSLA

# Strategies live here rather than in tests/strategies.py until another module needs them.

ZONES = (
    "UTC",
    "Europe/Berlin",  # DST at 02:00/03:00
    "America/New_York",
    "Asia/Shanghai",  # no DST
    "America/Sao_Paulo",  # DST abolished in 2019
    "Australia/Lord_Howe",  # half-hour DST shift
    "Asia/Kathmandu",  # +05:45
)
FIRST = datetime(2024, 1, 1, tzinfo=UTC)
LAST = datetime(2030, 12, 31, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
MAX_TARGET_S = 5 * 24 * 3600
POLICY = DEFAULT_POLICY
FAST = settings(max_examples=150, deadline=None)

minutes = st.one_of(st.integers(0, 96).map(lambda quarter: quarter * 15), st.integers(0, 1440))


@st.composite
def weekly_hours(draw: st.DrawFn) -> tuple[tuple[int, int, int], ...]:
    hours: list[tuple[int, int, int]] = []
    for day in range(7):
        points = sorted(draw(st.lists(minutes, max_size=4, unique=True)))
        hours.extend((day, start, end) for start, end in zip(points[::2], points[1::2], strict=False))
    if not hours:  # a calendar without hours is a separate, tested error case
        hours.append((draw(st.integers(0, 6)), 540, 1080))
    return tuple(hours)


@st.composite
def closed_dates(draw: st.DrawFn) -> frozenset[date]:
    singles = draw(st.lists(st.dates(date(2024, 1, 1), date(2031, 6, 30)), max_size=20))
    runs = draw(
        st.lists(st.tuples(st.dates(date(2024, 1, 1), date(2031, 6, 30)), st.integers(1, 20)), max_size=3)
    )
    return frozenset(
        [*singles, *(first + timedelta(days=n) for first, length in runs for n in range(length))]
    )


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    if draw(st.integers(0, 9)) == 0:
        return BusinessCalendar.always_open(draw(st.sampled_from(ZONES)))
    return BusinessCalendar(draw(st.sampled_from(ZONES)), draw(weekly_hours()), draw(closed_dates()))


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    span_us = (LAST - FIRST) // ONE_US
    if draw(st.booleans()):
        at = FIRST + timedelta(microseconds=draw(st.integers(0, span_us)))
    else:  # whole minutes hit opening and closing instants exactly
        at = FIRST + timedelta(minutes=draw(st.integers(0, span_us // 60_000_000)))
    return at.astimezone(ZoneInfo(draw(st.sampled_from(ZONES))))


business_seconds = st.one_of(
    st.just(0), st.integers(0, MAX_TARGET_S), st.floats(0, MAX_TARGET_S, allow_nan=False)
)
gaps = st.integers(0, 20 * 24 * 3600).map(lambda s: timedelta(seconds=s))


def in_business_hours(calendar: BusinessCalendar, at: datetime) -> bool:
    """Inside an open interval, its closing instant included."""
    return calendar.is_open(at) or calendar.is_open(at - ONE_US)


# --- calendar laws -------------------------------------------------------------------


@FAST
@given(calendar=calendars(), start=instants(), seconds=business_seconds)
def test_a_due_time_lies_in_business_hours(
    calendar: BusinessCalendar, start: datetime, seconds: float
) -> None:
    due = calendar.add_business_seconds(start, seconds)
    assert due.tzinfo is UTC
    assert due >= start
    assert in_business_hours(calendar, due)


@FAST
@given(calendar=calendars(), start=instants(), a=business_seconds, b=business_seconds)
def test_a_longer_target_is_never_due_earlier(
    calendar: BusinessCalendar, start: datetime, a: float, b: float
) -> None:
    short, long = sorted((a, b))
    assert calendar.add_business_seconds(start, short) <= calendar.add_business_seconds(start, long)


@FAST
@given(calendar=calendars(), start=instants(), seconds=business_seconds)
def test_adding_then_measuring_gives_the_seconds_back(
    calendar: BusinessCalendar, start: datetime, seconds: float
) -> None:
    due = calendar.add_business_seconds(start, seconds)
    assert abs(calendar.business_seconds_between(start, due) - seconds) <= 1e-6


@FAST
@given(calendar=calendars(), start=instants(), gap=gaps)
def test_measuring_then_adding_lands_on_or_before_the_end(
    calendar: BusinessCalendar, start: datetime, gap: timedelta
) -> None:
    end = start + gap
    elapsed = calendar.business_seconds_between(start, end)
    back = calendar.add_business_seconds(start, elapsed)
    if elapsed > 0:
        assert back <= end
        assert calendar.business_seconds_between(back, end) == 0.0


@FAST
@given(calendar=calendars(), start=instants(), first=gaps, second=gaps)
def test_business_time_is_additive_over_a_split_point(
    calendar: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    middle, end = start + first, start + first + second
    whole = calendar.business_seconds_between(start, end)
    parts = calendar.business_seconds_between(start, middle)
    parts += calendar.business_seconds_between(middle, end)
    assert abs(whole - parts) <= 1e-6


@FAST
@given(calendar=calendars(), at=instants())
def test_next_open_is_open_and_skips_no_business_time(calendar: BusinessCalendar, at: datetime) -> None:
    opening = calendar.next_open(at)
    assert calendar.is_open(opening)
    assert (opening == at.astimezone(UTC)) == calendar.is_open(at)
    assert calendar.business_seconds_between(at, opening) == 0.0


# --- SLA laws ------------------------------------------------------------------------

priorities = st.sampled_from(sorted(POLICY.targets))
operations = st.lists(
    st.tuples(
        st.sampled_from(["pause", "resume", "respond", "resolve", "reopen", "check", "P1", "P3"]),
        st.integers(0, 3 * 24 * 3600),
    ),
    max_size=8,
)


@st.composite
def tickets(draw: st.DrawFn) -> tuple[TicketSLA, BusinessCalendar, datetime]:
    """A ticket after a random history of operations, its calendar and the last instant."""
    calendar, now = draw(calendars()), draw(instants())
    sla = TicketSLA.open(POLICY, draw(priorities), calendar, now)
    for operation, step_s in draw(operations):
        now += timedelta(seconds=step_s)
        match operation:
            case "pause":
                sla = sla.pause(calendar, now)
            case "resume":
                sla = sla.resume(POLICY, calendar, now)
            case "respond":
                sla = sla.agent_responded(POLICY, calendar, now)
            case "resolve":
                sla = sla.resolved(calendar, now)
            case "reopen":
                sla = sla.reopened(POLICY, calendar, now)
            case "check":
                sla, _ = sla.check(now)
            case priority:
                sla = sla.reprioritised(POLICY, priority, calendar, now)
    return sla, calendar, now


@settings(max_examples=100, deadline=None)
@given(ticket=tickets())
def test_running_clocks_are_due_in_business_hours_after_their_warning(
    ticket: tuple[TicketSLA, BusinessCalendar, datetime],
) -> None:
    sla, calendar, _ = ticket
    clock_calendar = ALWAYS_OPEN if sla.always_open else calendar
    for clock in sla.clocks:
        if clock.status is ClockStatus.RUNNING:
            assert clock.warn_at is not None
            assert clock.due_at is not None
            assert clock.warn_at <= clock.due_at
            assert in_business_hours(clock_calendar, clock.due_at)


@FAST
@given(calendar=calendars(), opened=instants(), priority=priorities, paused=gaps, waited=gaps)
def test_a_pause_never_makes_a_due_time_earlier(
    calendar: BusinessCalendar,
    opened: datetime,
    priority: str,
    paused: timedelta,
    waited: timedelta,
) -> None:
    sla = TicketSLA.open(POLICY, priority, calendar, opened)
    pause_at = opened + paused
    resumed = sla.pause(calendar, pause_at).resume(POLICY, calendar, pause_at + waited)
    for before, after in zip(sla.clocks, resumed.clocks, strict=True):
        if before.due_at is not None:
            assert after.due_at is not None
            assert after.due_at >= before.due_at


@settings(max_examples=100, deadline=None)
@given(ticket=tickets())
def test_documents_round_trip_through_json(
    ticket: tuple[TicketSLA, BusinessCalendar, datetime],
) -> None:
    sla, _, _ = ticket
    assert TicketSLA.from_doc(json.loads(json.dumps(sla.to_doc()))) == sla


@settings(max_examples=100, deadline=None)
@given(ticket=tickets(), later=gaps)
def test_check_is_idempotent_and_leaves_no_overdue_deadline(
    ticket: tuple[TicketSLA, BusinessCalendar, datetime], later: timedelta
) -> None:
    sla, _, last = ticket
    now = last + later
    checked, events = sla.check(now)
    assert all(event.at <= now for event in events)
    assert checked.check(now) == (checked, [])
    deadline = checked.next_deadline()
    assert deadline is None or deadline > now
