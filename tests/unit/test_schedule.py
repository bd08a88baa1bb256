"""The deadline schedule: one deadline per ticket, popped in order, stale entries ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from edge_node.core.schedule import DeadlineSchedule

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_empty_schedule() -> None:
    schedule = DeadlineSchedule()
    assert len(schedule) == 0
    assert schedule.next_deadline() is None
    assert schedule.due(T0 + 1000 * MIN) == []


def test_set_schedules_and_next_deadline_is_the_earliest() -> None:
    schedule = DeadlineSchedule()
    schedule.set("b", T0 + 2 * MIN)
    schedule.set("a", T0 + MIN)
    schedule.set("c", T0 + 3 * MIN)
    assert len(schedule) == 3
    assert schedule.next_deadline() == T0 + MIN


def test_due_pops_everything_at_or_before_now_in_deadline_order() -> None:
    schedule = DeadlineSchedule()
    for name, minutes in [("c", 3), ("a", 1), ("d", 4), ("b", 2)]:
        schedule.set(name, T0 + minutes * MIN)
    assert schedule.due(T0) == []
    assert schedule.due(T0 + 3 * MIN) == ["a", "b", "c"]  # a deadline equal to now is due
    assert len(schedule) == 1
    assert schedule.next_deadline() == T0 + 4 * MIN
    assert schedule.due(T0 + 3 * MIN) == []
    assert schedule.due(T0 + 10 * MIN) == ["d"]
    assert len(schedule) == 0
    assert schedule.next_deadline() is None


def test_equal_deadlines_pop_by_ticket_id() -> None:
    schedule = DeadlineSchedule()
    for name in ("m", "z", "a"):
        schedule.set(name, T0)
    assert schedule.due(T0) == ["a", "m", "z"]


def test_set_replaces_a_deadline_later() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0 + MIN)
    schedule.set("a", T0 + 5 * MIN)
    assert len(schedule) == 1
    assert schedule.next_deadline() == T0 + 5 * MIN  # the stale earlier entry is skipped
    assert schedule.due(T0 + 2 * MIN) == []
    assert schedule.due(T0 + 5 * MIN) == ["a"]


def test_set_replaces_a_deadline_earlier() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0 + 5 * MIN)
    schedule.set("a", T0 + MIN)
    assert schedule.due(T0 + MIN) == ["a"]
    assert schedule.due(T0 + 10 * MIN) == []  # the stale later entry does not fire again


def test_none_removes_a_deadline() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0 + MIN)
    schedule.set("b", T0 + 2 * MIN)
    schedule.set("a", None)
    schedule.set("missing", None)  # removing an unknown ticket is fine
    assert len(schedule) == 1
    assert schedule.next_deadline() == T0 + 2 * MIN
    assert schedule.due(T0 + 10 * MIN) == ["b"]


def test_setting_the_same_deadline_twice_schedules_it_once() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0)
    schedule.set("a", T0)
    assert schedule.due(T0) == ["a"]
    assert schedule.due(T0) == []


def test_a_ticket_moved_back_and_forth_fires_once_at_its_last_deadline() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0 + MIN)
    schedule.set("a", T0 + 3 * MIN)
    schedule.set("a", T0 + MIN)
    schedule.set("a", None)
    schedule.set("a", T0 + 3 * MIN)
    assert schedule.due(T0 + 2 * MIN) == []
    assert schedule.due(T0 + 3 * MIN) == ["a"]
    assert schedule.due(T0 + 10 * MIN) == []
    assert schedule.next_deadline() is None


def test_a_popped_ticket_can_be_scheduled_again() -> None:
    schedule = DeadlineSchedule()
    schedule.set("a", T0)
    assert schedule.due(T0) == ["a"]
    schedule.set("a", T0)
    assert schedule.next_deadline() == T0
    assert schedule.due(T0) == ["a"]


def test_deadlines_in_other_zones_compare_as_instants() -> None:
    schedule = DeadlineSchedule()
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin"))
    schedule.set("a", berlin + MIN)
    schedule.set("b", T0)
    assert schedule.due(T0 + MIN) == ["b", "a"]
