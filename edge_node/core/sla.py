"""SLA clocks for support tickets: first response, next update and resolution."""

# Theory of operation
# -------------------
# A ticket carries three clocks, as in Zammad and Zendesk: first response and
# resolution start when the ticket opens; next update starts at the first agent
# reply and restarts from zero at every later one. Clocks count business seconds
# of the caller's calendar, or wall seconds for priorities whose targets say
# `always_open` (P1 by default); the ticket remembers which, because `pause` and
# `resolved` get no policy.
#
# A clock is a state machine, PENDING -> RUNNING <-> PAUSED -> MET, that never
# reads the time. While RUNNING it holds the seconds consumed before
# `running_since` and the instants `warn_at` and `due_at` at which consumption
# will reach `warn_share * target` and `target`, computed with the calendar at
# each transition. So `check(now)` needs no calendar: it compares instants and
# fires a warning and a breach at most once each, stamped with the instant the
# rule tripped rather than `now`, and `next_deadline()` tells the adapter when to
# wake (STYLE.md section 4). A breached clock runs on until it is met.
#
# Pausing folds the running stretch into `consumed_s` and drops the due time;
# resuming derives a new one from the budget left, so waiting on the customer
# never counts. A clock that stops after its deadline records the breach it ran
# past even if no check ran, so stored state is right; adapters that want every
# event call `check(now)` before a transition at `now`. Re-prioritising keeps
# consumed time and re-derives due times and marks from the new targets.
# Every operation returns a new value; `to_doc`/`from_doc` are exact inverses.

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from edge_node.core.calendar import BusinessCalendar, as_utc
from edge_node.errors import EdgeNodeError

DOC_VERSION = 1


class SLAError(EdgeNodeError):
    """Base for every error the SLA core raises."""


class UnknownPriorityError(SLAError):
    """A ticket names a priority the policy has no targets for."""

    def __init__(self, priority: str, known: Iterable[str]) -> None:
        self.priority, self.known = priority, tuple(sorted(known))
        super().__init__(f"unknown priority {priority!r}; known: {', '.join(self.known)}")


class SLAPolicyError(SLAError):
    """A policy setting breaks a rule; `what` names the setting."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        self.what, self.value, self.reason = what, value, reason
        super().__init__(f"bad {what} {value!r}: {reason}")


class SLADocError(SLAError):
    """A stored SLA document is malformed; `key` is the dotted path of the bad entry."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"bad sla document at {key!r}: {reason}")


class SLAMetric(StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_UPDATE = "next_update"
    RESOLUTION = "resolution"


class ClockStatus(StrEnum):
    PENDING = "pending"  # not started yet
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"


@dataclass(frozen=True, slots=True)
class PriorityTargets:
    """Targets of one priority, in business seconds (wall seconds when `always_open`)."""

    first_response_s: int
    next_update_s: int
    resolution_s: int
    always_open: bool = False

    def __post_init__(self) -> None:
        for name in ("first_response_s", "next_update_s", "resolution_s"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise SLAPolicyError(name, value, "must be a positive whole number of seconds")


@dataclass(frozen=True, slots=True)
class SLAPolicy:
    """Targets per priority, and the share of a target after which agents are warned."""

    targets: Mapping[str, PriorityTargets]
    warn_share: float = 0.8

    def __post_init__(self) -> None:
        if not self.targets:
            raise SLAPolicyError("targets", dict(self.targets), "need at least one priority")
        for priority, targets in self.targets.items():
            if not isinstance(targets, PriorityTargets):
                raise SLAPolicyError(f"targets for {priority}", targets, "expected priority targets")
        if not (isinstance(self.warn_share, int | float) and 0 < self.warn_share < 1):
            raise SLAPolicyError("warn_share", self.warn_share, "must lie strictly between 0 and 1")
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))

    def targets_for(self, priority: str) -> PriorityTargets:
        """Return the targets of `priority`; raise `UnknownPriorityError` if there are none."""
        try:
            return self.targets[priority]
        except KeyError:
            raise UnknownPriorityError(priority, self.targets) from None


DEFAULT_POLICY = SLAPolicy(
    {
        "P1": PriorityTargets(15 * 60, 60 * 60, 4 * 3600, always_open=True),
        "P2": PriorityTargets(2 * 3600, 8 * 3600, 24 * 3600),
        "P3": PriorityTargets(8 * 3600, 24 * 3600, 5 * 24 * 3600),
        "P4": PriorityTargets(24 * 3600, 48 * 3600, 10 * 24 * 3600),
    }
)
ALWAYS_OPEN = BusinessCalendar.always_open()


@dataclass(frozen=True, slots=True)
class SLAWarning:
    """A clock consumed `warn_share` of its target at `at`; it is due at `due_at`."""

    metric: SLAMetric
    due_at: datetime
    at: datetime


@dataclass(frozen=True, slots=True)
class SLABreached:
    """A clock passed its due time `due_at` (equal to `at`) without being met."""

    metric: SLAMetric
    due_at: datetime
    at: datetime


SLAEvent = SLAWarning | SLABreached


@dataclass(frozen=True, slots=True)
class SLAClock:
    """One metric's clock. `due_at`/`warn_at` are set while RUNNING, None while PAUSED,
    and keep their last value once MET so reports can compare `met_at` with `due_at`."""

    metric: SLAMetric
    target_s: int
    status: ClockStatus = ClockStatus.PENDING
    consumed_s: float = 0.0  # business seconds consumed before running_since
    running_since: datetime | None = None
    due_at: datetime | None = None
    warn_at: datetime | None = None
    met_at: datetime | None = None
    warned_at: datetime | None = None
    breached_at: datetime | None = None

    def consumed_at(self, calendar: BusinessCalendar, now: datetime) -> float:
        """Return the business seconds consumed by `now`."""
        if self.status is not ClockStatus.RUNNING or self.running_since is None:
            return self.consumed_s
        return self.consumed_s + calendar.business_seconds_between(self.running_since, now)

    def start(self, calendar: BusinessCalendar, now: datetime, warn_share: float) -> SLAClock:
        """Run from `now` on the budget left; a spent budget is due at the next opening, so a
        due time always lies in business hours."""
        warn_s, due_s = warn_share * self.target_s - self.consumed_s, self.target_s - self.consumed_s
        warn_at = calendar.add_business_seconds(now, max(0.0, warn_s))
        due_at = calendar.add_business_seconds(now, max(0.0, due_s))
        clock = replace(self, status=ClockStatus.RUNNING, running_since=as_utc(now, "now"), met_at=None)
        return replace(clock, due_at=due_at, warn_at=warn_at)

    def stop(self, calendar: BusinessCalendar, now: datetime, status: ClockStatus) -> SLAClock:
        """Pause or meet the clock at `now`, recording a warning or breach it ran past."""
        now = as_utc(now, "now")
        clock = self.check(now)[0]
        clock = replace(clock, status=status, consumed_s=self.consumed_at(calendar, now), running_since=None)
        if status is ClockStatus.PAUSED:
            return replace(clock, due_at=None, warn_at=None)
        return replace(clock, met_at=now)

    def retarget(
        self,
        target_s: int,
        calendars: tuple[BusinessCalendar, BusinessCalendar],
        now: datetime,
        warn_share: float,
    ) -> SLAClock:
        """Apply a new target, keeping consumed time (measured with the old calendar,
        continued with the new); marks survive only if still deserved."""
        if self.status is ClockStatus.MET:
            return self
        old, new = calendars
        consumed = self.consumed_at(old, now)
        clock = replace(
            self,
            target_s=target_s,
            consumed_s=consumed,
            warned_at=self.warned_at if consumed >= warn_share * target_s else None,
            breached_at=self.breached_at if consumed >= target_s else None,
        )
        return clock.start(new, now, warn_share) if self.status is ClockStatus.RUNNING else clock

    def check(self, now: datetime) -> tuple[SLAClock, list[SLAEvent]]:
        """Fire the warning and the breach this running clock has reached, once each."""
        due_at, warn_at = self.due_at, self.warn_at
        if self.status is not ClockStatus.RUNNING or due_at is None or warn_at is None:
            return self, []
        clock, events = self, list[SLAEvent]()
        if self.warned_at is None and warn_at <= now:
            clock = replace(clock, warned_at=warn_at)
            events.append(SLAWarning(self.metric, due_at, warn_at))
        if self.breached_at is None and due_at <= now:
            clock = replace(clock, breached_at=due_at)
            events.append(SLABreached(self.metric, due_at, due_at))
        return clock, events

    def next_deadline(self) -> datetime | None:
        """Return the earliest instant at which `check` would fire, if the clock runs."""
        if self.status is not ClockStatus.RUNNING:
            return None
        marks = ((self.warn_at, self.warned_at), (self.due_at, self.breached_at))
        return min((at for at, fired in marks if at is not None and fired is None), default=None)

    def to_doc(self) -> dict[str, object]:
        """Return the clock as JSON-able values (ISO-8601 instants)."""
        doc: dict[str, object] = {
            "metric": self.metric.value,
            "target_s": self.target_s,
            "status": self.status.value,
            "consumed_s": self.consumed_s,
        }
        for key in _INSTANTS:
            value: datetime | None = getattr(self, key)
            doc[key] = None if value is None else value.isoformat()
        return doc

    @classmethod
    def from_doc(cls, doc: object, metric: SLAMetric) -> SLAClock:
        """Rebuild `metric`'s clock from `to_doc` output, refusing inconsistent states."""
        path = metric.value
        if not isinstance(doc, Mapping):
            raise SLADocError(path, "expected a mapping")
        target, consumed = _field(doc, "target_s", path), _field(doc, "consumed_s", path)
        if type(target) is not int or target <= 0:
            raise SLADocError(f"{path}.target_s", "expected a positive integer")
        if not isinstance(consumed, int | float) or isinstance(consumed, bool):
            raise SLADocError(f"{path}.consumed_s", "expected a number")
        if not 0 <= consumed < math.inf:
            raise SLADocError(f"{path}.consumed_s", "expected a finite number >= 0")
        at = {key: _instant(doc, key, path) for key in _INSTANTS}
        if _field(doc, "metric", path) != metric.value:
            raise SLADocError(f"{path}.metric", f"expected {metric.value!r}")
        clock = cls(metric, target, _status(doc, path), float(consumed), *at.values())
        running = clock.status is ClockStatus.RUNNING
        for key in ("running_since", "due_at", "warn_at") if running else ():
            if at[key] is None:
                raise SLADocError(f"{path}.{key}", "required while running")
        if not running and clock.running_since is not None:
            raise SLADocError(f"{path}.running_since", f"not allowed while {clock.status}")
        if (clock.met_at is None) == (clock.status is ClockStatus.MET):
            raise SLADocError(f"{path}.met_at", f"inconsistent with status {clock.status}")
        return clock


_INSTANTS = ("running_since", "due_at", "warn_at", "met_at", "warned_at", "breached_at")


@dataclass(frozen=True, slots=True)
class TicketSLA:
    """The SLA state of one ticket.

    `always_open` records whether the clocks run 24x7 (from the priority's
    targets), so that operations without a policy measure time the same way.
    """

    priority: str
    first_response: SLAClock
    next_update: SLAClock
    resolution: SLAClock
    always_open: bool = False

    @classmethod
    def open(cls, policy: SLAPolicy, priority: str, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Open a ticket at `now`: first response and resolution run, next update waits
        for the first agent reply."""
        targets = policy.targets_for(priority)
        cal = ALWAYS_OPEN if targets.always_open else calendar
        share = policy.warn_share
        return cls(
            priority,
            SLAClock(SLAMetric.FIRST_RESPONSE, targets.first_response_s).start(cal, now, share),
            SLAClock(SLAMetric.NEXT_UPDATE, targets.next_update_s),
            SLAClock(SLAMetric.RESOLUTION, targets.resolution_s).start(cal, now, share),
            always_open=targets.always_open,
        )

    def pause(self, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Stop every running clock while the ticket waits on the customer."""
        cal = self._calendar(calendar)
        return self._map(
            lambda c: c.stop(cal, now, ClockStatus.PAUSED) if c.status is ClockStatus.RUNNING else c
        )

    def resume(self, policy: SLAPolicy, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Restart every paused clock from `now` with the budget it had left."""
        cal = self._calendar(calendar)
        return self._map(
            lambda c: c.start(cal, now, policy.warn_share) if c.status is ClockStatus.PAUSED else c
        )

    def agent_responded(self, policy: SLAPolicy, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Meet first response (once) and restart next update from zero.

        On a paused ticket next update restarts paused, so a note to a customer
        who owes an answer does not start a clock; on a resolved ticket nothing
        changes.
        """
        if self.resolution.status is ClockStatus.MET:
            return self
        cal = self._calendar(calendar)
        first = self.first_response
        if first.status is not ClockStatus.MET:
            first = first.stop(cal, now, ClockStatus.MET)
        update = SLAClock(SLAMetric.NEXT_UPDATE, policy.targets_for(self.priority).next_update_s)
        if self.resolution.status is ClockStatus.PAUSED:
            update = replace(update, status=ClockStatus.PAUSED)
        else:
            update = update.start(cal, now, policy.warn_share)
        return replace(self, first_response=first, next_update=update)

    def resolved(self, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Meet every clock at `now`; a first response still open counts as met."""
        cal = self._calendar(calendar)
        return self._map(lambda c: c if c.status is ClockStatus.MET else c.stop(cal, now, ClockStatus.MET))

    def reopened(self, policy: SLAPolicy, calendar: BusinessCalendar, now: datetime) -> TicketSLA:
        """Resume resolution from its consumed time and restart next update; a ticket
        that is not resolved is left as it is."""
        if self.resolution.status is not ClockStatus.MET:
            return self
        cal = self._calendar(calendar)
        update = SLAClock(SLAMetric.NEXT_UPDATE, policy.targets_for(self.priority).next_update_s)
        return replace(
            self,
            next_update=update.start(cal, now, policy.warn_share),
            resolution=self.resolution.start(cal, now, policy.warn_share),
        )

    def reprioritised(
        self, policy: SLAPolicy, priority: str, calendar: BusinessCalendar, now: datetime
    ) -> TicketSLA:
        """Apply `priority`'s targets to unmet clocks, keeping the time they consumed."""
        targets = policy.targets_for(priority)
        calendars = (self._calendar(calendar), ALWAYS_OPEN if targets.always_open else calendar)
        share = policy.warn_share
        return TicketSLA(
            priority,
            self.first_response.retarget(targets.first_response_s, calendars, now, share),
            self.next_update.retarget(targets.next_update_s, calendars, now, share),
            self.resolution.retarget(targets.resolution_s, calendars, now, share),
            always_open=targets.always_open,
        )

    def check(self, now: datetime) -> tuple[TicketSLA, list[SLAEvent]]:
        """Fire due warnings and breaches, each once, ordered by the instant they tripped."""
        now = as_utc(now, "now")
        results = [clock.check(now) for clock in self.clocks]
        events = sorted((e for _, fired in results for e in fired), key=lambda e: e.at)
        if not events:
            return self, []
        first, update, resolution = (clock for clock, _ in results)
        return replace(self, first_response=first, next_update=update, resolution=resolution), events

    def next_deadline(self) -> datetime | None:
        """Return when `check` next has something to fire, or None; adapters sleep until then."""
        deadlines = [d for d in (clock.next_deadline() for clock in self.clocks) if d is not None]
        return min(deadlines, default=None)

    @property
    def breached(self) -> bool:
        """Whether any clock has breached (next update: in its current cycle)."""
        return any(clock.breached_at is not None for clock in self.clocks)

    @property
    def clocks(self) -> tuple[SLAClock, SLAClock, SLAClock]:
        """The three clocks, in metric order."""
        return self.first_response, self.next_update, self.resolution

    def to_doc(self) -> dict[str, object]:
        """Return a JSON-able document for storage; `from_doc` inverts it exactly."""
        return {
            "version": DOC_VERSION,
            "priority": self.priority,
            "always_open": self.always_open,
            **{clock.metric.value: clock.to_doc() for clock in self.clocks},
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> TicketSLA:
        """Rebuild a TicketSLA from `to_doc` output.

        Raises:
            SLADocError: Naming the first missing or malformed key.
        """
        if _field(doc, "version", "") != DOC_VERSION:
            raise SLADocError("version", f"expected {DOC_VERSION}")
        priority, always_open = _field(doc, "priority", ""), _field(doc, "always_open", "")
        if not isinstance(priority, str):
            raise SLADocError("priority", "expected a string")
        if not isinstance(always_open, bool):
            raise SLADocError("always_open", "expected a boolean")
        first, update, resolution = (SLAClock.from_doc(_field(doc, m.value, ""), m) for m in SLAMetric)
        return cls(priority, first, update, resolution, always_open=always_open)

    def _calendar(self, calendar: BusinessCalendar) -> BusinessCalendar:
        return ALWAYS_OPEN if self.always_open else calendar

    def _map(self, change: Callable[[SLAClock], SLAClock]) -> TicketSLA:
        return replace(
            self,
            first_response=change(self.first_response),
            next_update=change(self.next_update),
            resolution=change(self.resolution),
        )


def _field(doc: Mapping[str, object], key: str, path: str) -> object:
    if key not in doc:
        raise SLADocError(f"{path}.{key}" if path else key, "missing")
    return doc[key]


def _status(doc: Mapping[str, object], path: str) -> ClockStatus:
    value, known = _field(doc, "status", path), [status.value for status in ClockStatus]
    if isinstance(value, str) and value in known:
        return ClockStatus(value)
    raise SLADocError(f"{path}.status", f"unknown status {value!r}; expected one of {known}")


def _instant(doc: Mapping[str, object], key: str, path: str) -> datetime | None:
    value = _field(doc, key, path)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SLADocError(f"{path}.{key}", "expected an iso-8601 string or null")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SLADocError(f"{path}.{key}", f"not an iso-8601 instant: {value!r}") from None
    if parsed.utcoffset() is None:
        raise SLADocError(f"{path}.{key}", f"instant {value!r} has no utc offset")
    return parsed.astimezone(UTC)
