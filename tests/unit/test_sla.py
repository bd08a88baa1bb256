"""Worked examples for ticket SLA clocks over a Berlin office calendar."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge_node.core.calendar import BusinessCalendar, NaiveDatetimeError, parse_hours
from edge_node.core.sla import (
    DEFAULT_POLICY,
    ClockStatus,
    PriorityTargets,
    SLABreached,
    SLAClock,
    SLADocError,
    SLAError,
    SLAMetric,
    SLAPolicy,
    SLAPolicyError,
    SLAWarning,
    TicketSLA,
    UnknownPriorityError,
)

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessCalendar("Europe/Berlin", parse_hours("mon-fri 09:00-18:00"))
HOUR = 3600
POLICY = DEFAULT_POLICY


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def p2_opened(at: datetime, calendar: BusinessCalendar = OFFICE) -> TicketSLA:
    return TicketSLA.open(POLICY, "P2", calendar, at)


# --- policy --------------------------------------------------------------------------


def test_default_policy_targets() -> None:
    assert POLICY.targets_for("P1") == PriorityTargets(900, 3600, 14400, always_open=True)
    assert POLICY.targets_for("P2").first_response_s == 2 * HOUR
    assert POLICY.warn_share == 0.8


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_targets_must_be_positive_whole_seconds(bad: int) -> None:
    with pytest.raises(SLAPolicyError, match=r"^bad first_response_s .*: must be a positive whole"):
        PriorityTargets(bad, 60, 60)


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1])
def test_warn_share_lies_strictly_between_0_and_1(share: float) -> None:
    with pytest.raises(SLAPolicyError, match=r"^bad warn_share .*strictly between 0 and 1"):
        SLAPolicy({"P1": PriorityTargets(60, 60, 60)}, warn_share=share)


def test_policy_needs_targets() -> None:
    with pytest.raises(SLAPolicyError, match="need at least one priority"):
        SLAPolicy({})


def test_policy_targets_cannot_be_changed_afterwards() -> None:
    targets = {"P1": PriorityTargets(60, 60, 60)}
    policy = SLAPolicy(targets)
    targets["P9"] = PriorityTargets(1, 1, 1)
    with pytest.raises(UnknownPriorityError):
        policy.targets_for("P9")


def test_unknown_priority_names_it_and_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPriorityError) as caught:
        TicketSLA.open(POLICY, "urgent", OFFICE, berlin(2024, 3, 4, 10))
    assert str(caught.value) == "unknown priority 'urgent'; known: P1, P2, P3, P4"
    assert caught.value.priority == "urgent"
    assert isinstance(caught.value, SLAError)


# --- open ----------------------------------------------------------------------------


def test_friday_evening_p2_ticket() -> None:
    sla = p2_opened(berlin(2024, 3, 8, 17, 30))
    first, update, resolution = sla.clocks
    assert first.status is ClockStatus.RUNNING
    assert first.due_at == berlin(2024, 3, 11, 10, 30)  # 30 min Friday, 90 Monday
    assert first.warn_at == berlin(2024, 3, 11, 10, 6)  # 80 % of 2 h = 96 min
    assert update.status is ClockStatus.PENDING
    assert update.target_s == 8 * HOUR
    assert update.due_at is None
    # 24 business hours: 0.5 Fri + 9 Mon + 9 Tue + 5.5 Wed.
    assert resolution.due_at == berlin(2024, 3, 13, 14, 30)
    assert sla.next_deadline() == berlin(2024, 3, 11, 10, 6)
    assert not sla.breached
    assert not sla.always_open


def test_a_monday_holiday_moves_the_first_response_to_tuesday() -> None:
    calendar = BusinessCalendar("Europe/Berlin", OFFICE.hours, frozenset({date(2024, 3, 11)}))
    sla = p2_opened(berlin(2024, 3, 8, 17, 30), calendar)
    assert sla.first_response.due_at == berlin(2024, 3, 12, 10, 30)


def test_dst_weekend_keeps_the_local_due_time() -> None:
    sla = p2_opened(berlin(2024, 3, 29, 17, 30))  # clocks go forward on Sunday
    assert sla.first_response.due_at == berlin(2024, 4, 1, 10, 30)
    assert sla.first_response.due_at == datetime(2024, 4, 1, 8, 30, tzinfo=UTC)


def test_p1_clocks_run_around_the_clock_whatever_the_calendar() -> None:
    saturday = berlin(2024, 3, 9, 12, 0)
    sla = TicketSLA.open(POLICY, "P1", OFFICE, saturday)
    assert sla.always_open
    assert sla.first_response.due_at == saturday + timedelta(minutes=15)
    assert sla.resolution.due_at == saturday + timedelta(hours=4)
    paused = sla.pause(OFFICE, saturday + timedelta(minutes=10))
    assert paused.first_response.consumed_s == 600


def test_naive_now_is_refused() -> None:
    naive = datetime(2024, 3, 4, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(NaiveDatetimeError):
        TicketSLA.open(POLICY, "P2", OFFICE, naive)
    with pytest.raises(NaiveDatetimeError):
        p2_opened(berlin(2024, 3, 4, 10)).check(naive)


# --- pause / resume ------------------------------------------------------------------


def test_pause_friday_evening_resume_monday_morning() -> None:
    opened = p2_opened(berlin(2024, 3, 8, 17, 0))
    assert opened.first_response.due_at == berlin(2024, 3, 11, 10, 0)
    paused = opened.pause(OFFICE, berlin(2024, 3, 8, 17, 45))
    first = paused.first_response
    assert first.status is ClockStatus.PAUSED
    assert first.consumed_s == 45 * 60
    assert (first.due_at, first.warn_at, first.running_since) == (None, None, None)
    assert paused.next_deadline() is None
    resumed = paused.resume(POLICY, OFFICE, berlin(2024, 3, 11, 9, 30))
    assert resumed.first_response.status is ClockStatus.RUNNING
    assert resumed.first_response.due_at == berlin(2024, 3, 11, 10, 45)  # 75 min left
    # Resolution: 23 h 15 min left from Mon 09:30 -> 8.5 Mon + 9 Tue + 5.75 Wed.
    assert resumed.resolution.due_at == berlin(2024, 3, 13, 14, 45)
    assert resumed.next_update.status is ClockStatus.PENDING


def test_pause_within_business_hours_shifts_the_due_time() -> None:
    opened = p2_opened(berlin(2024, 3, 4, 10, 0))
    resumed = opened.pause(OFFICE, berlin(2024, 3, 4, 11, 0)).resume(
        POLICY, OFFICE, berlin(2024, 3, 4, 15, 0)
    )
    assert resumed.first_response.due_at == berlin(2024, 3, 4, 16, 0)


def test_pause_and_resume_are_idempotent() -> None:
    opened = p2_opened(berlin(2024, 3, 4, 10, 0))
    paused = opened.pause(OFFICE, berlin(2024, 3, 4, 11, 0))
    assert paused.pause(OFFICE, berlin(2024, 3, 4, 12, 0)) == paused
    assert opened.resume(POLICY, OFFICE, berlin(2024, 3, 4, 12, 0)) == opened


def test_pausing_after_the_due_time_records_the_missed_breach() -> None:
    opened = p2_opened(berlin(2024, 3, 4, 10, 0))  # first response due 12:00
    paused = opened.pause(OFFICE, berlin(2024, 3, 4, 13, 0))
    assert paused.first_response.breached_at == berlin(2024, 3, 4, 12, 0)
    assert paused.first_response.warned_at == berlin(2024, 3, 4, 11, 36)
    assert paused.breached
    resumed = paused.resume(POLICY, OFFICE, berlin(2024, 3, 9, 10, 0))  # Saturday
    # Budget spent: due at the next opening, and the breach is not fired again.
    assert resumed.first_response.due_at == berlin(2024, 3, 11, 9, 0)
    assert resumed.check(berlin(2024, 3, 11, 9, 0))[1] == []


# --- agent responses -----------------------------------------------------------------


def test_first_reply_meets_first_response_and_starts_next_update() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 10, 30))
    first, update = sla.first_response, sla.next_update
    assert first.status is ClockStatus.MET
    assert first.met_at == berlin(2024, 3, 4, 10, 30)
    assert first.consumed_s == 30 * 60
    assert first.due_at == berlin(2024, 3, 4, 12, 0)  # kept for reports
    assert update.status is ClockStatus.RUNNING
    assert update.due_at == berlin(2024, 3, 5, 9, 30)  # 7.5 h Monday + 0.5 h Tuesday


def test_every_reply_restarts_next_update_from_zero() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0))
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 10, 30))
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 5, 9, 0))
    assert sla.first_response.met_at == berlin(2024, 3, 4, 10, 30)
    assert sla.next_update.consumed_s == 0
    assert sla.next_update.due_at == berlin(2024, 3, 5, 17, 0)


def test_a_reply_while_waiting_on_the_customer_does_not_start_next_update() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).pause(OFFICE, berlin(2024, 3, 4, 10, 15))
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 10, 30))
    assert sla.first_response.status is ClockStatus.MET
    assert sla.first_response.consumed_s == 15 * 60
    assert sla.next_update.status is ClockStatus.PAUSED
    resumed = sla.resume(POLICY, OFFICE, berlin(2024, 3, 4, 14, 0))
    assert resumed.next_update.due_at == berlin(2024, 3, 5, 13, 0)


def test_a_reply_on_a_resolved_ticket_changes_nothing() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).resolved(OFFICE, berlin(2024, 3, 4, 11, 0))
    assert sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 12, 0)) == sla


# --- resolve / reopen ----------------------------------------------------------------


def test_resolving_meets_every_clock() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).resolved(OFFICE, berlin(2024, 3, 4, 11, 0))
    assert all(clock.status is ClockStatus.MET for clock in sla.clocks)
    assert sla.first_response.met_at == berlin(2024, 3, 4, 11, 0)
    assert sla.resolution.met_at == berlin(2024, 3, 4, 11, 0)
    assert sla.resolution.consumed_s == HOUR
    assert sla.next_update.consumed_s == 0
    assert sla.next_deadline() is None
    assert sla.check(berlin(2024, 3, 20, 10, 0)) == (sla, [])


def test_resolving_late_records_the_breach() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).resolved(OFFICE, berlin(2024, 3, 4, 12, 30))
    assert sla.first_response.breached_at == berlin(2024, 3, 4, 12, 0)
    assert sla.resolution.breached_at is None
    assert sla.breached


def test_reopening_resumes_resolution_from_its_consumed_time() -> None:
    resolved = p2_opened(berlin(2024, 3, 4, 10, 0)).resolved(OFFICE, berlin(2024, 3, 4, 14, 0))
    reopened = resolved.reopened(POLICY, OFFICE, berlin(2024, 3, 6, 9, 0))
    assert reopened.first_response == resolved.first_response
    assert reopened.resolution.status is ClockStatus.RUNNING
    assert reopened.resolution.consumed_s == 4 * HOUR
    assert reopened.resolution.met_at is None
    # 20 h left from Wed 09:00: 9 Wed + 9 Thu + 2 Fri.
    assert reopened.resolution.due_at == berlin(2024, 3, 8, 11, 0)
    assert reopened.next_update.status is ClockStatus.RUNNING
    assert reopened.next_update.due_at == berlin(2024, 3, 6, 17, 0)


def test_reopening_a_ticket_that_is_not_resolved_changes_nothing() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0))
    assert sla.reopened(POLICY, OFFICE, berlin(2024, 3, 4, 11, 0)) == sla


# --- reprioritise --------------------------------------------------------------------


def test_reprioritising_keeps_consumed_time() -> None:
    sla = TicketSLA.open(POLICY, "P3", OFFICE, berlin(2024, 3, 4, 10, 0))
    assert sla.first_response.due_at == berlin(2024, 3, 4, 18, 0)  # 8 business hours
    sla = sla.reprioritised(POLICY, "P2", OFFICE, berlin(2024, 3, 4, 11, 0))
    assert sla.priority == "P2"
    assert sla.first_response.target_s == 2 * HOUR
    assert sla.first_response.consumed_s == HOUR
    assert sla.first_response.due_at == berlin(2024, 3, 4, 12, 0)
    assert sla.resolution.target_s == 24 * HOUR


def test_raising_to_p1_switches_the_clocks_to_24x7() -> None:
    sla = p2_opened(berlin(2024, 3, 8, 17, 0))  # Friday
    sla = sla.reprioritised(POLICY, "P1", OFFICE, berlin(2024, 3, 8, 17, 5))
    assert sla.always_open
    # 5 business minutes consumed of a 15-minute target: due 10 wall minutes later.
    assert sla.first_response.due_at == berlin(2024, 3, 8, 17, 15)
    later = sla.pause(OFFICE, berlin(2024, 3, 9, 12, 0))  # Saturday counts now
    assert later.resolution.consumed_s == 5 * 60 + (18 * HOUR + 55 * 60)


def test_a_looser_target_clears_a_breach_that_no_longer_holds() -> None:
    sla = TicketSLA.open(POLICY, "P2", OFFICE, berlin(2024, 3, 4, 10, 0))
    sla, events = sla.check(berlin(2024, 3, 4, 12, 30))
    assert [type(event) for event in events] == [SLAWarning, SLABreached]
    sla = sla.reprioritised(POLICY, "P4", OFFICE, berlin(2024, 3, 4, 13, 0))
    assert not sla.breached
    assert sla.first_response.warned_at is None
    # 21 of 24 business hours left from Mon 13:00: 5 Mon + 9 Tue + 7 Wed.
    assert sla.first_response.due_at == berlin(2024, 3, 6, 16, 0)


def test_met_clocks_keep_their_targets_when_reprioritised() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0)).agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 10, 30))
    sla = sla.reprioritised(POLICY, "P4", OFFICE, berlin(2024, 3, 4, 11, 0))
    assert sla.first_response.target_s == 2 * HOUR
    assert sla.next_update.target_s == 48 * HOUR


# --- check ---------------------------------------------------------------------------


def test_warning_and_breach_fire_once_each_at_their_instants() -> None:
    sla = p2_opened(berlin(2024, 3, 8, 17, 30))
    quiet, events = sla.check(berlin(2024, 3, 11, 10, 5))
    assert (quiet, events) == (sla, [])

    warned, events = sla.check(berlin(2024, 3, 11, 10, 7))
    due = berlin(2024, 3, 11, 10, 30)
    assert events == [SLAWarning(SLAMetric.FIRST_RESPONSE, due, berlin(2024, 3, 11, 10, 6))]
    assert warned.first_response.warned_at == berlin(2024, 3, 11, 10, 6)
    assert warned.next_deadline() == due
    assert warned.check(berlin(2024, 3, 11, 10, 8)) == (warned, [])

    breached, events = warned.check(due)
    assert events == [SLABreached(SLAMetric.FIRST_RESPONSE, due, due)]
    assert breached.breached
    assert breached.first_response.status is ClockStatus.RUNNING
    assert breached.next_deadline() == breached.resolution.warn_at
    assert breached.check(due + timedelta(hours=1)) == (breached, [])


def test_a_late_check_reports_the_true_instants_in_order() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 10, 0))
    _, events = sla.check(berlin(2024, 3, 20, 10, 0))
    assert [(type(e).__name__, e.metric, e.at) for e in events] == [
        ("SLAWarning", SLAMetric.FIRST_RESPONSE, berlin(2024, 3, 4, 11, 36)),
        ("SLABreached", SLAMetric.FIRST_RESPONSE, berlin(2024, 3, 4, 12, 0)),
        ("SLAWarning", SLAMetric.RESOLUTION, berlin(2024, 3, 6, 11, 12)),
        ("SLABreached", SLAMetric.RESOLUTION, berlin(2024, 3, 6, 16, 0)),
    ]


def test_meeting_a_breached_clock_stops_it_but_keeps_the_breach() -> None:
    sla, _ = p2_opened(berlin(2024, 3, 4, 10, 0)).check(berlin(2024, 3, 4, 12, 0))
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 13, 0))
    assert sla.first_response.status is ClockStatus.MET
    assert sla.first_response.breached_at == berlin(2024, 3, 4, 12, 0)
    assert sla.breached


def test_next_update_breaches_belong_to_their_cycle() -> None:
    sla = p2_opened(berlin(2024, 3, 4, 9, 0)).agent_responded(POLICY, OFFICE, berlin(2024, 3, 4, 9, 0))
    sla, events = sla.check(berlin(2024, 3, 4, 18, 0))
    assert SLABreached(SLAMetric.NEXT_UPDATE, berlin(2024, 3, 4, 17, 0), berlin(2024, 3, 4, 17, 0)) in events
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 5, 9, 0))
    assert sla.next_update.breached_at is None
    assert not sla.breached


# --- documents -----------------------------------------------------------------------


def test_documents_are_json_and_round_trip_exactly() -> None:
    sla = p2_opened(berlin(2024, 3, 8, 17, 30))
    sla = sla.agent_responded(POLICY, OFFICE, berlin(2024, 3, 11, 9, 15))
    sla, _ = sla.check(berlin(2024, 3, 13, 17, 0))
    doc = json.loads(json.dumps(sla.to_doc()))
    assert doc["priority"] == "P2"
    assert doc["first_response"]["met_at"] == "2024-03-11T08:15:00+00:00"
    assert TicketSLA.from_doc(doc) == sla


def test_clock_documents_accept_whole_consumed_seconds() -> None:
    doc = SLAClock(SLAMetric.NEXT_UPDATE, 60).to_doc()
    doc["consumed_s"] = 0
    clock = SLAClock.from_doc(doc, SLAMetric.NEXT_UPDATE)
    assert clock.consumed_s == 0.0
    assert isinstance(clock.consumed_s, float)


def _broken(path: str, value: object) -> dict[str, object]:
    doc = p2_opened(berlin(2024, 3, 4, 10, 0)).to_doc()
    *parents, leaf = path.split(".")
    target: dict[str, object] = doc
    for key in parents:
        child = target[key]
        assert isinstance(child, dict)
        target = child
    if value is KeyError:
        del target[leaf]
    else:
        target[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", 2, "bad sla document at 'version': expected 1"),
        ("priority", KeyError, "at 'priority': missing"),
        ("priority", 2, "at 'priority': expected a string"),
        ("always_open", "no", "at 'always_open': expected a boolean"),
        ("resolution", [], "at 'resolution': expected a mapping"),
        ("resolution.status", "done", "at 'resolution.status': unknown status 'done'"),
        ("resolution.metric", "first_response", "at 'resolution.metric': expected 'resolution'"),
        ("resolution.target_s", 0, "at 'resolution.target_s': expected a positive integer"),
        ("resolution.consumed_s", "1", "at 'resolution.consumed_s': expected a number"),
        ("resolution.consumed_s", -1.0, "at 'resolution.consumed_s': expected a finite number"),
        ("resolution.due_at", 5, "at 'resolution.due_at': expected an iso-8601 string or null"),
        ("resolution.due_at", "tomorrow", "at 'resolution.due_at': not an iso-8601 instant"),
        ("resolution.due_at", "2024-03-04T10:00:00", "at 'resolution.due_at': instant '2024"),
        ("resolution.due_at", None, "at 'resolution.due_at': required while running"),
        ("next_update.running_since", "2024-03-04T10:00:00+00:00", "not allowed while pending"),
        ("next_update.met_at", "2024-03-04T10:00:00+00:00", "inconsistent with status pending"),
        ("first_response.warned_at", KeyError, "at 'first_response.warned_at': missing"),
    ],
)
def test_malformed_documents_name_the_key(path: str, value: object, message: str) -> None:
    with pytest.raises(SLADocError) as caught:
        TicketSLA.from_doc(_broken(path, value))
    assert message in str(caught.value)
    assert caught.value.key == path
