"""Business calendars: when a support team works, and how much working time lies between."""

# Theory of operation
# -------------------
# A calendar is three facts an operator configures: an IANA time zone, a weekly
# pattern of opening hours in local wall time, and a set of local dates on which
# the office is closed (public holidays, computed by an adapter from the
# `holidays` package, plus custom closures). Nothing here reads the clock or the
# holiday feed; callers pass instants and dates in.
#
# Every question is answered by one walk: `_intervals(after)` visits local dates
# from the day before `after` onward, skips closed dates, turns each opening
# range into a pair of UTC instants with `datetime.combine(day, time, zone)`
# (an end of minute 1440 is the next local midnight), clips it to start no
# earlier than `after` and than the previous interval's end, and yields it.
# Building instants per local date is what makes daylight-saving changes come
# out right: a 00:00-24:00 Sunday lasts 23 or 25 hours on a transition weekend,
# and 09:00 stays 09:00 on both sides of it. After that, all arithmetic is in
# UTC and in whole microseconds, so adding and measuring business time are exact
# inverses and never drift by float rounding.
#
# Intervals are half-open for `is_open` (the office is closed at 18:00 sharp)
# but a due time may land on an interval's end: "due by 18:00" is a valid answer
# when the office closes at 18:00. Intervals that touch (12:00-13:00 and
# 13:00-14:00, or Monday 24:00 and Tuesday 00:00) need no merging: the walk
# simply moves on to the next one. The walk skips whole days, so a target of
# weeks costs a few hundred small steps; a calendar open around the clock with
# no closed dates skips the walk entirely. A walk that finds no opening within
# 730 days raises instead of looping forever.

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_node.errors import EdgeNodeError

MINUTES_PER_DAY = 1440
SEARCH_HORIZON_DAYS = 730
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_ONE_DAY = timedelta(days=1)
_ONE_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
_TIME = re.compile(r"(\d{1,2}):(\d{2})")

Hours = tuple[tuple[int, int, int], ...]


class CalendarError(EdgeNodeError):
    """Base for every error a business calendar raises."""


class CalendarValueError(CalendarError):
    """A calendar setting or argument breaks a rule; `what` names it, `reason` the rule."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"bad {what} {value!r}: {reason}")


class NaiveDatetimeError(CalendarError):
    """A datetime without a UTC offset reached the core, where it would be ambiguous."""

    def __init__(self, argument: str, value: datetime) -> None:
        self.argument, self.value = argument, value
        super().__init__(f"naive datetime for {argument}: {value.isoformat()} has no time zone")


class NoBusinessHoursError(CalendarError):
    """The calendar has no opening hours for so long that any due time would be meaningless."""

    def __init__(self, since: datetime, days: int) -> None:
        self.since, self.days = since, days
        super().__init__(f"calendar has no business hours within {days} days of {since.isoformat()}")


def as_utc(value: datetime, argument: str = "datetime") -> datetime:
    """Return `value` as an aware UTC datetime.

    Args:
        value: An aware datetime in any zone.
        argument: The parameter's name, for the error message.

    Raises:
        NaiveDatetimeError: If `value` has no UTC offset; guessing a zone would
            silently shift every SLA by hours.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(argument, value)
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Opening hours in one time zone, minus closed dates.

    Attributes:
        timezone: IANA zone name the hours and closed dates are expressed in.
        hours: `(weekday, start_minute, end_minute)` triples, weekday 0 = Monday,
            minutes of local wall time with `0 <= start < end <= 1440`. Stored
            sorted, so equal calendars compare equal however they were written.
        closed_dates: Local dates on which the office stays closed all day.
    """

    timezone: str
    hours: Hours
    closed_dates: frozenset[date] = frozenset()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _week: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, repr=False, compare=False)
    _continuous: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hours = _validate_hours(self.hours)
        closed = _validate_closed_dates(self.closed_dates)
        week = tuple(tuple((s, e) for d, s, e in hours if d == day) for day in range(7))
        object.__setattr__(self, "_zone", _load_zone(self.timezone))
        object.__setattr__(self, "hours", hours)
        object.__setattr__(self, "closed_dates", closed)
        object.__setattr__(self, "_week", week)
        around_the_clock = all(_covers_day(ranges) for ranges in week)
        object.__setattr__(self, "_continuous", around_the_clock and not closed)

    @classmethod
    def always_open(cls, timezone: str = "UTC") -> BusinessCalendar:
        """Return a 24x7 calendar without closed dates, for clocks that never stop."""
        return cls(timezone, tuple((day, 0, MINUTES_PER_DAY) for day in range(7)))

    def is_open(self, at: datetime) -> bool:
        """Tell whether the office is open at `at` (opening instant included, closing excluded)."""
        at = as_utc(at, "at")
        if self._continuous:
            return True
        for start, _ in self._intervals(at, until=at):
            return start == at
        return False

    def next_open(self, at: datetime) -> datetime:
        """Return the first open instant at or after `at` (`at` itself when open), in UTC.

        Raises:
            NoBusinessHoursError: If nothing opens within 730 days.
        """
        at = as_utc(at, "at")
        if self._continuous:
            return at
        start, _ = next(self._intervals(at))
        return start

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """Return the instant at which `seconds` of business time have elapsed since `start`.

        The result always lies in an open interval, its closing instant included,
        so a two-hour target set at 16:00 is due at 18:00 on the same day rather
        than at the next morning's opening. With `seconds == 0` the result is
        `start` if the office is open, else the next opening.

        Raises:
            CalendarValueError: If `seconds` is negative or not finite.
            NoBusinessHoursError: If the calendar stays closed for 730 days.
        """
        start = as_utc(start, "start")
        remaining_us = _to_micros(seconds)
        if self._continuous:
            return start + timedelta(microseconds=remaining_us)
        for opens, closes in self._intervals(start):
            available_us = (closes - opens) // _ONE_US
            if remaining_us <= available_us:
                return opens + timedelta(microseconds=remaining_us)
            remaining_us -= available_us
        raise AssertionError("unreachable: an unbounded interval walk never ends")

    def business_seconds_between(self, start: datetime, end: datetime) -> float:
        """Return the business seconds in `[start, end)`, or 0.0 if `end <= start`."""
        start, end = as_utc(start, "start"), as_utc(end, "end")
        if end <= start:
            return 0.0
        if self._continuous:
            return ((end - start) // _ONE_US) / _US_PER_S
        total_us = 0
        for opens, closes in self._intervals(start, until=end):
            if opens >= end:
                break
            total_us += (min(closes, end) - opens) // _ONE_US
        return total_us / _US_PER_S

    def _intervals(
        self, after: datetime, until: datetime | None = None
    ) -> Iterator[tuple[datetime, datetime]]:
        """Yield open `(start, end)` UTC intervals that end after `after`, in order.

        Each interval starts no earlier than `after` and than the previous end,
        so they never overlap, even where a DST transition bends local time. With
        `until` the walk stops after that instant's local date; without it, it
        goes on until the caller stops or 730 days pass without an opening.
        """
        zone = self._zone
        day = after.astimezone(zone).date() - _ONE_DAY
        last_day = None if until is None else until.astimezone(zone).date() + _ONE_DAY
        horizon = day + timedelta(days=SEARCH_HORIZON_DAYS + 1)
        since = floor = after
        while last_day is None or day <= last_day:
            if last_day is None and day > horizon:
                raise NoBusinessHoursError(since, SEARCH_HORIZON_DAYS)
            if day not in self.closed_dates:
                for start_min, end_min in self._week[day.weekday()]:
                    opens = max(_instant(day, start_min, zone), floor)
                    closes = _instant(day, end_min, zone)
                    if closes > opens:
                        yield opens, closes
                        since = floor = closes
                        horizon = day + timedelta(days=SEARCH_HORIZON_DAYS)
            day += _ONE_DAY


def parse_hours(spec: str) -> Hours:
    """Parse opening hours such as ``"mon-fri 09:00-12:00,13:00-18:00; sat 10:00-14:00"``.

    Clauses are separated by ``;``. Each names weekdays (``mon``, a range
    ``mon-fri`` that may wrap like ``fri-mon``, or a list ``mon,wed``) and one
    or more comma-separated ``HH:MM-HH:MM`` ranges; ``24:00`` ends a day.
    Overnight hours are written as two ranges, one on each side of midnight.

    Raises:
        CalendarValueError: Naming the clause and the part that is wrong, e.g.
            ``bad business hours 'mon-frx 09:00-18:00': unknown weekday 'frx'``.
    """
    clauses = [clause.strip() for clause in spec.split(";")]
    if not any(clauses):
        raise CalendarValueError("business hours", spec, "no days and hours given")
    entries = [entry for clause in clauses if clause for entry in _parse_clause(clause)]
    try:
        return _validate_hours(entries)
    except CalendarValueError as exc:
        raise CalendarValueError("business hours", spec, exc.reason) from None


def _parse_clause(clause: str) -> list[tuple[int, int, int]]:
    parts = clause.split(None, 1)
    if len(parts) != 2:
        raise CalendarValueError("business hours", clause, "expected '<days> <hh:mm-hh:mm>'")
    days = _parse_days(parts[0].lower(), clause)
    ranges = [_parse_range(text, clause) for text in re.sub(r"\s+", "", parts[1]).split(",")]
    return [(day, start, end) for day in days for start, end in ranges]


def _parse_days(text: str, clause: str) -> list[int]:
    days: list[int] = []
    for item in text.split(","):
        first, dash, last = item.partition("-")
        start = _weekday(first, clause)
        stop = _weekday(last, clause) if dash else start
        days.extend((start + offset) % 7 for offset in range((stop - start) % 7 + 1))
    return days


def _weekday(name: str, clause: str) -> int:
    if name not in WEEKDAYS:
        raise CalendarValueError("business hours", clause, f"unknown weekday {name!r}")
    return WEEKDAYS.index(name)


def _parse_range(text: str, clause: str) -> tuple[int, int]:
    bounds = text.split("-")
    if len(bounds) != 2:
        raise CalendarValueError("business hours", clause, f"expected hh:mm-hh:mm, got {text!r}")
    start, end = (_parse_minute(bound, clause) for bound in bounds)
    if start >= end:
        reason = f"range {text!r} does not end after it starts (split overnight hours at 24:00)"
        raise CalendarValueError("business hours", clause, reason)
    return start, end


def _parse_minute(text: str, clause: str) -> int:
    match = _TIME.fullmatch(text)
    hour, minute = (int(match[1]), int(match[2])) if match else (-1, -1)
    if not (0 <= hour <= 24 and 0 <= minute < 60) or (hour == 24 and minute):
        raise CalendarValueError("business hours", clause, f"bad time {text!r}")
    return hour * 60 + minute


def _validate_hours(hours: Iterable[Iterable[int]]) -> Hours:
    entries: list[tuple[int, int, int]] = []
    for raw in hours:
        entry = tuple(raw)
        if len(entry) != 3 or any(type(part) is not int for part in entry):
            reason = "expected (weekday, start_minute, end_minute) integers"
            raise CalendarValueError("business hours", raw, reason)
        day, start, end = entry
        if not 0 <= day <= 6:
            raise CalendarValueError("business hours", entry, "weekday must be 0 (mon) to 6 (sun)")
        if not 0 <= start < end <= MINUTES_PER_DAY:
            reason = "need 0 <= start_minute < end_minute <= 1440"
            raise CalendarValueError("business hours", entry, reason)
        entries.append((day, start, end))
    entries.sort()
    for before, after in itertools.pairwise(entries):
        if before[0] == after[0] and after[1] < before[2]:
            reason = f"{WEEKDAYS[after[0]]} {_clock(before)} overlaps {_clock(after)}"
            raise CalendarValueError("business hours", tuple(entries), reason)
    return tuple(entries)


def _validate_closed_dates(closed: Iterable[date]) -> frozenset[date]:
    days = frozenset(closed)
    for day in days:
        if isinstance(day, datetime) or not isinstance(day, date):
            raise CalendarValueError("closed date", day, "expected a local calendar date")
    return days


def _load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise CalendarValueError("timezone", name, "not an iana time zone name") from None


def _covers_day(ranges: tuple[tuple[int, int], ...]) -> bool:
    reach = 0
    for start, end in ranges:
        if start > reach:
            return False
        reach = max(reach, end)
    return reach == MINUTES_PER_DAY


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    if minute == MINUTES_PER_DAY:
        day, minute = day + _ONE_DAY, 0
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone).astimezone(UTC)


def _to_micros(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise CalendarValueError("business seconds", seconds, "must be a finite number >= 0")
    return round(seconds * _US_PER_S)


def _clock(entry: tuple[int, int, int]) -> str:
    return "-".join(f"{minute // 60:02d}:{minute % 60:02d}" for minute in entry[1:])
