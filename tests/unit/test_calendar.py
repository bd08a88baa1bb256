"""Worked examples for business calendars: hours, holidays, DST, parsing errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge_node.core.calendar import (
    BusinessCalendar,
    CalendarError,
    CalendarValueError,
    NaiveDatetimeError,
    NoBusinessHoursError,
    as_utc,
    parse_hours,
)

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = parse_hours("mon-fri 09:00-18:00")
HOUR = 3600


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.fixture
def office() -> BusinessCalendar:
    return BusinessCalendar("Europe/Berlin", OFFICE)


# --- parse_hours -------------------------------------------------------------------


def test_parse_hours_expands_day_ranges() -> None:
    assert parse_hours("mon-fri 09:00-18:00; sat 10:00-14:00") == (
        *((day, 540, 1080) for day in range(5)),
        (5, 600, 840),
    )


def test_parse_hours_allows_several_ranges_a_day_and_24_00() -> None:
    assert parse_hours("Mon,Wed 09:00-12:00, 13:00-18:00;sun 00:00-24:00;") == (
        (0, 540, 720),
        (0, 780, 1080),
        (2, 540, 720),
        (2, 780, 1080),
        (6, 0, 1440),
    )


def test_parse_hours_wraps_weekday_ranges_over_the_weekend() -> None:
    assert [day for day, _, _ in parse_hours("fri-mon 10:00-11:00")] == [0, 4, 5, 6]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mon-frx 09:00-18:00", "bad business hours 'mon-frx 09:00-18:00': unknown weekday 'frx'"),
        ("mon- 09:00-18:00", "unknown weekday ''"),
        ("mon-fri 09:00-25:00", "bad time '25:00'"),
        ("mon 24:30-24:45", "bad time '24:30'"),
        ("mon 9-17", "bad time '9'"),
        ("mon 09:00", "expected hh:mm-hh:mm, got '09:00'"),
        ("mon 22:00-06:00", "does not end after it starts (split overnight hours at 24:00)"),
        ("mon 24:00-24:00", "does not end after it starts"),
        ("mon-fri", "bad business hours 'mon-fri': expected '<days> <hh:mm-hh:mm>'"),
        (" ; ", "no days and hours given"),
        ("mon-fri 09:00-18:00; wed 17:00-19:00", "wed 09:00-18:00 overlaps 17:00-19:00"),
        ("tue 09:00-12:00,11:00-13:00", "tue 09:00-12:00 overlaps 11:00-13:00"),
    ],
)
def test_parse_hours_names_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(CalendarValueError, match=r"^bad business hours") as caught:
        parse_hours(spec)
    assert message in str(caught.value)
    assert caught.value.what == "business hours"


def test_touching_ranges_are_not_an_overlap() -> None:
    cal = BusinessCalendar("UTC", parse_hours("mon 09:00-12:00,12:00-18:00"))
    assert cal.is_open(datetime(2024, 1, 1, 12, 0, tzinfo=UTC))
    assert cal.business_seconds_between(
        datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    ) == pytest.approx(9 * HOUR)


# --- construction --------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Base", "", "Europe", "../etc/passwd"])
def test_unknown_timezone_is_refused(zone: str) -> None:
    with pytest.raises(CalendarValueError, match=f"^bad timezone {zone!r}: not an iana"):
        BusinessCalendar(zone, OFFICE)


@pytest.mark.parametrize(
    ("hours", "reason"),
    [
        (((7, 0, 60),), "weekday must be 0 (mon) to 6 (sun)"),
        (((0, 600, 540),), "need 0 <= start_minute < end_minute <= 1440"),
        (((0, 0, 1441),), "need 0 <= start_minute < end_minute <= 1440"),
        (((0, 0),), "expected (weekday, start_minute, end_minute) integers"),
        (((0, 0.5, 60),), "expected (weekday, start_minute, end_minute) integers"),
        (((0, 540, 1080), (0, 1000, 1100)), "mon 09:00-18:00 overlaps 16:40-18:20"),
    ],
)
def test_bad_hours_are_refused(hours: tuple[tuple[int, int, int], ...], reason: str) -> None:
    with pytest.raises(CalendarValueError, match=r"^bad business hours") as caught:
        BusinessCalendar("UTC", hours)
    assert caught.value.reason == reason


def test_closed_dates_must_be_dates_not_datetimes() -> None:
    with pytest.raises(CalendarValueError, match=r"^bad closed date"):
        BusinessCalendar("UTC", OFFICE, frozenset({datetime(2024, 1, 1, tzinfo=UTC)}))


def test_hours_are_stored_sorted_so_equal_calendars_compare_equal() -> None:
    a = BusinessCalendar("UTC", ((1, 0, 60), (0, 0, 60)))
    b = BusinessCalendar("UTC", ((0, 0, 60), (1, 0, 60)))
    assert a == b
    assert hash(a) == hash(b)
    assert a.hours == ((0, 0, 60), (1, 0, 60))


def test_naive_datetimes_are_refused(office: BusinessCalendar) -> None:
    naive = datetime(2024, 1, 1, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(NaiveDatetimeError, match=r"^naive datetime for start: 2024-01-01T10:00:00"):
        office.add_business_seconds(naive, 60)
    with pytest.raises(NaiveDatetimeError, match=r"^naive datetime for at"):
        office.is_open(naive)
    with pytest.raises(NaiveDatetimeError, match=r"^naive datetime for end"):
        office.business_seconds_between(berlin(2024, 1, 1), naive)
    with pytest.raises(NaiveDatetimeError):
        as_utc(naive)


# --- is_open / next_open -------------------------------------------------------------


def test_opening_instant_is_open_and_closing_instant_is_not(office: BusinessCalendar) -> None:
    assert office.is_open(berlin(2024, 3, 1, 9, 0))
    assert office.is_open(berlin(2024, 3, 1, 17, 59))
    assert not office.is_open(berlin(2024, 3, 1, 18, 0))
    assert not office.is_open(berlin(2024, 3, 1, 8, 59))
    assert not office.is_open(berlin(2024, 3, 2, 12, 0))  # Saturday


def test_is_open_compares_in_the_calendars_zone(office: BusinessCalendar) -> None:
    # 08:30 UTC in winter is 09:30 in Berlin.
    assert office.is_open(datetime(2024, 1, 8, 8, 30, tzinfo=UTC))
    assert not office.is_open(datetime(2024, 1, 8, 17, 30, tzinfo=UTC))


def test_next_open_returns_the_instant_itself_when_open(office: BusinessCalendar) -> None:
    at = berlin(2024, 3, 1, 10, 15)
    assert office.next_open(at) == at
    assert office.next_open(at).tzinfo is UTC


def test_next_open_skips_the_weekend_and_holidays() -> None:
    easter_monday = date(2024, 4, 1)
    cal = BusinessCalendar("Europe/Berlin", OFFICE, frozenset({easter_monday}))
    assert cal.next_open(berlin(2024, 3, 29, 18, 0)) == berlin(2024, 4, 2, 9, 0)
    assert not cal.is_open(berlin(2024, 4, 1, 10, 0))


def test_empty_calendar_is_never_open_and_has_no_next_opening() -> None:
    cal = BusinessCalendar("UTC", ())
    at = datetime(2024, 1, 1, tzinfo=UTC)
    assert not cal.is_open(at)
    with pytest.raises(NoBusinessHoursError) as caught:
        cal.next_open(at)
    assert str(caught.value) == (
        "calendar has no business hours within 730 days of 2024-01-01T00:00:00+00:00"
    )
    assert caught.value.days == 730


# --- add_business_seconds ------------------------------------------------------------


def test_friday_evening_ticket_is_due_monday_morning(office: BusinessCalendar) -> None:
    # 30 minutes on Friday, 90 on Monday.
    assert office.add_business_seconds(berlin(2024, 3, 8, 17, 30), 2 * HOUR) == berlin(2024, 3, 11, 10, 30)


def test_a_monday_holiday_pushes_the_due_time_to_tuesday() -> None:
    cal = BusinessCalendar("Europe/Berlin", OFFICE, frozenset({date(2024, 3, 11)}))
    assert cal.add_business_seconds(berlin(2024, 3, 8, 17, 30), 2 * HOUR) == berlin(2024, 3, 12, 10, 30)


def test_due_time_may_be_the_closing_instant(office: BusinessCalendar) -> None:
    assert office.add_business_seconds(berlin(2024, 3, 8, 16, 0), 2 * HOUR) == berlin(2024, 3, 8, 18, 0)


def test_zero_seconds_outside_hours_is_the_next_opening(office: BusinessCalendar) -> None:
    assert office.add_business_seconds(berlin(2024, 3, 9, 12, 0), 0) == berlin(2024, 3, 11, 9, 0)
    assert office.add_business_seconds(berlin(2024, 3, 8, 18, 0), 0) == berlin(2024, 3, 11, 9, 0)
    inside = berlin(2024, 3, 8, 12, 0)
    assert office.add_business_seconds(inside, 0) == inside


def test_start_before_opening_counts_from_the_opening(office: BusinessCalendar) -> None:
    assert office.add_business_seconds(berlin(2024, 3, 4, 6, 0), 90 * 60) == berlin(2024, 3, 4, 10, 30)


def test_lunch_break_is_skipped() -> None:
    cal = BusinessCalendar("Europe/Berlin", parse_hours("mon-fri 09:00-12:00,13:00-18:00"))
    assert cal.add_business_seconds(berlin(2024, 3, 4, 11, 0), 2 * HOUR) == berlin(2024, 3, 4, 14, 0)


def test_fractional_seconds_keep_microsecond_precision(office: BusinessCalendar) -> None:
    due = office.add_business_seconds(berlin(2024, 3, 4, 9, 0), 1.25)
    assert due == berlin(2024, 3, 4, 9, 0) + timedelta(seconds=1.25)


def test_results_are_aware_utc(office: BusinessCalendar) -> None:
    due = office.add_business_seconds(berlin(2024, 3, 8, 17, 30), 2 * HOUR)
    assert due.tzinfo is UTC
    assert due == datetime(2024, 3, 11, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_negative_or_non_finite_seconds_are_refused(office: BusinessCalendar, seconds: float) -> None:
    with pytest.raises(CalendarValueError, match=r"^bad business seconds .*: must be a finite"):
        office.add_business_seconds(berlin(2024, 3, 4, 9, 0), seconds)


def test_a_calendar_closed_for_two_years_raises() -> None:
    first = date(2024, 1, 1)
    closed = frozenset(first + timedelta(days=n) for n in range(800))
    cal = BusinessCalendar("UTC", OFFICE, closed)
    with pytest.raises(NoBusinessHoursError, match="within 730 days of 2024-01-01T"):
        cal.add_business_seconds(datetime(2024, 1, 1, tzinfo=UTC), 60)


def test_targets_of_weeks_walk_whole_days(office: BusinessCalendar) -> None:
    # 10 business days of 9 hours from a Monday opening end two weeks later, Friday 18:00.
    assert office.add_business_seconds(berlin(2024, 6, 3, 9, 0), 90 * HOUR) == berlin(2024, 6, 14, 18, 0)


def test_zammad_390_escalation_vector_re_derived() -> None:
    # zammad#390: 09:00-21:00 every day, holidays 11.11 and 13.11, 48 h target,
    # ticket created 2016-11-09 23:00. Four 12-hour days: 10, 12, 14 and 15 November.
    cal = BusinessCalendar(
        "Europe/Berlin",
        parse_hours("mon-sun 09:00-21:00"),
        frozenset({date(2016, 11, 11), date(2016, 11, 13)}),
    )
    assert cal.add_business_seconds(berlin(2016, 11, 9, 23, 0), 48 * HOUR) == berlin(2016, 11, 15, 21, 0)


# --- daylight saving time ------------------------------------------------------------


def test_spring_forward_weekend_keeps_local_opening_times(office: BusinessCalendar) -> None:
    # Berlin moves to CEST on Sunday 2024-03-31; Monday opens at 09:00 CEST = 07:00 UTC.
    due = office.add_business_seconds(berlin(2024, 3, 29, 17, 30), 2 * HOUR)
    assert due == berlin(2024, 4, 1, 10, 30)
    assert due == datetime(2024, 4, 1, 8, 30, tzinfo=UTC)


def test_fall_back_weekend_keeps_local_opening_times(office: BusinessCalendar) -> None:
    due = office.add_business_seconds(berlin(2024, 10, 25, 17, 30), 2 * HOUR)
    assert due == datetime(2024, 10, 28, 9, 30, tzinfo=UTC)  # 10:30 CET


@pytest.mark.parametrize(
    ("day", "hours"), [(date(2024, 3, 31), 23), (date(2024, 10, 27), 25), (date(2024, 6, 2), 24)]
)
def test_a_whole_sunday_lasts_as_long_as_the_local_day(day: date, hours: int) -> None:
    cal = BusinessCalendar("Europe/Berlin", parse_hours("sun 00:00-24:00"))
    start = datetime.combine(day, datetime.min.time(), tzinfo=BERLIN) - timedelta(hours=6)
    end = start + timedelta(days=2)
    assert cal.business_seconds_between(start, end) == hours * HOUR


def test_hours_inside_the_spring_gap_are_read_with_the_old_offset() -> None:
    # 02:00-04:00 on the spring-forward Sunday: 02:00 does not exist; read as 01:00 UTC,
    # 04:00 CEST is 02:00 UTC, so the office is open one real hour.
    cal = BusinessCalendar("Europe/Berlin", parse_hours("sun 02:00-04:00"))
    start, end = datetime(2024, 3, 30, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    assert cal.business_seconds_between(start, end) == HOUR
    assert cal.next_open(start) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)


def test_always_open_calendar_counts_wall_time_across_dst() -> None:
    cal = BusinessCalendar.always_open("Europe/Berlin")
    start = berlin(2024, 3, 30, 12, 0)
    assert cal.is_open(start)
    assert cal.add_business_seconds(start, 24 * HOUR) == berlin(2024, 3, 31, 13, 0)
    assert cal.business_seconds_between(start, berlin(2024, 3, 31, 12, 0)) == 23 * HOUR


def test_shanghai_office_without_dst() -> None:
    cal = BusinessCalendar("Asia/Shanghai", parse_hours("mon-fri 09:00-12:00,13:30-18:00"))
    start = datetime(2024, 2, 9, 17, 0, tzinfo=SHANGHAI)  # Friday
    # One hour on Friday, 09:00-12:00 on Monday, then an hour after lunch.
    assert cal.add_business_seconds(start, 5 * HOUR) == datetime(2024, 2, 12, 14, 30, tzinfo=SHANGHAI)


# --- business_seconds_between --------------------------------------------------------


def test_between_counts_only_open_time(office: BusinessCalendar) -> None:
    assert office.business_seconds_between(berlin(2024, 3, 8, 17, 0), berlin(2024, 3, 11, 10, 0)) == (
        2 * HOUR
    )


def test_between_is_zero_when_end_is_not_after_start(office: BusinessCalendar) -> None:
    at = berlin(2024, 3, 8, 12, 0)
    assert office.business_seconds_between(at, at) == 0.0
    assert office.business_seconds_between(at, at - timedelta(hours=1)) == 0.0


def test_between_skips_holidays() -> None:
    cal = BusinessCalendar("Europe/Berlin", OFFICE, frozenset({date(2024, 3, 11)}))
    assert cal.business_seconds_between(berlin(2024, 3, 8, 17, 0), berlin(2024, 3, 12, 10, 0)) == (2 * HOUR)


def test_between_on_an_empty_calendar_is_zero() -> None:
    cal = BusinessCalendar("UTC", ())
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert cal.business_seconds_between(start, start + timedelta(days=3000)) == 0.0


def test_always_open_is_24x7_without_closed_dates() -> None:
    cal = BusinessCalendar.always_open()
    assert cal.timezone == "UTC"
    assert cal.closed_dates == frozenset()
    assert cal.hours == tuple((day, 0, 1440) for day in range(7))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert cal.add_business_seconds(start, 1.5) == start + timedelta(seconds=1.5)


def test_calendar_errors_share_one_base() -> None:
    assert issubclass(CalendarValueError, CalendarError)
    assert issubclass(NoBusinessHoursError, CalendarError)
    assert issubclass(NaiveDatetimeError, CalendarError)
