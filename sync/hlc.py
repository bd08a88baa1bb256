"""Hybrid logical clock: timestamps that order causally and stay near wall time.

Theory of operation
-------------------
Every replicated write is stamped with an ``HLCTimestamp`` and merged per field
by last-writer-wins on (timestamp, node id). Wall clocks alone cannot do this:
they jump backwards (NTP steps, VM migration) and disagree between regions, so
a later edit could lose to an earlier one. A Lamport counter alone orders
causally but says nothing about when an edit happened. The hybrid logical clock
of Kulkarni et al. ("Logical Physical Clocks", OPODIS 2014) keeps both:

* ``wall_ms`` is the largest wall-clock reading the clock has seen, its own or
  one carried by a remote timestamp, so it never runs behind physical time and
  only runs ahead of it by as much as the fastest clock it has heard from;
* ``counter`` breaks ties inside one millisecond: it counts events since
  ``wall_ms`` last moved and restarts at zero whenever it moves.

Each event takes the least timestamp that has the new ``wall_ms`` and is
strictly greater than everything the clock issued or received before
(``now`` for local and send events, ``receive`` for merging a remote stamp).
That is what makes causally later writes win.

Two limits keep a broken peer from hurting us. A remote stamp more than
``max_drift_ms`` ahead of our wall clock is refused with ``ClockDriftError``
(otherwise a node with a clock set a year ahead would win every conflict for a
year). And the 16-bit counter cannot wrap: when it would pass 65535 within one
millisecond, ``ClockOverflowError`` asks the caller to wait for the wall clock
to move on (backpressure). A refused event leaves the clock unchanged.

The module is pure: it never reads a clock. Callers pass wall time in
milliseconds, and restore the clock after a restart from the highest timestamp
they persisted (``HybridLogicalClock(last=...)``), so issued timestamps keep
increasing across restarts even if the wall clock went backwards meanwhile.

A timestamp packs into one unsigned 64-bit integer, ``wall_ms << 16 |
counter``, whose integer order is the timestamp order; SQLite stores and
indexes it as an INTEGER column.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from sync.errors import SyncError

WALL_BITS: Final = 48
COUNTER_BITS: Final = 16
WALL_LIMIT: Final = 1 << WALL_BITS
COUNTER_LIMIT: Final = 1 << COUNTER_BITS
ENCODED_LIMIT: Final = 1 << (WALL_BITS + COUNTER_BITS)
DEFAULT_MAX_DRIFT_MS: Final = 60_000

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The Gregorian calendar repeats every 400 years, which are exactly this many
# milliseconds; formatting shifts by whole cycles so that years past 9999
# (datetime's limit, reached below 2**48 ms) still print.
_GREGORIAN_CYCLE_MS: Final = 146_097 * 86_400_000
_GREGORIAN_CYCLE_YEARS: Final = 400


class TimestampRangeError(SyncError):
    """A timestamp field, wall-clock reading or encoded value is out of range."""

    def __init__(self, field: str, value: int, limit: int) -> None:
        self.field, self.value, self.limit = field, value, limit
        super().__init__(f"hlc {field} must be in [0, {limit}), got {value}")


class ClockDriftError(SyncError):
    """A remote timestamp is further ahead of our wall clock than allowed."""

    def __init__(self, remote: HLCTimestamp, wall_ms: int, max_drift_ms: int) -> None:
        self.remote, self.wall_ms, self.max_drift_ms = remote, wall_ms, max_drift_ms
        self.drift_ms = remote.wall_ms - wall_ms
        super().__init__(
            f"remote timestamp {remote} is {self.drift_ms} ms ahead of local wall clock "
            f"{format_wall_ms(wall_ms)}, beyond the {max_drift_ms} ms drift limit"
        )


class ClockOverflowError(SyncError):
    """The logical counter would pass its 16-bit limit within one millisecond."""

    def __init__(self, wall_ms: int) -> None:
        self.wall_ms = wall_ms
        super().__init__(
            f"hlc counter would exceed {COUNTER_LIMIT - 1} within millisecond "
            f"{format_wall_ms(wall_ms)}; retry once the wall clock has moved on"
        )


def format_wall_ms(wall_ms: int) -> str:
    """Render milliseconds since the Unix epoch as ISO 8601 UTC with milliseconds.

    Args:
        wall_ms: Milliseconds since 1970-01-01T00:00:00Z, non-negative.

    Returns:
        For example ``"2026-11-23T12:00:00.123Z"``; years past 9999 print with
        five digits rather than failing, since the 48-bit range reaches them.
    """
    cycles, rest_ms = divmod(wall_ms, _GREGORIAN_CYCLE_MS)
    moment = _EPOCH + dt.timedelta(milliseconds=rest_ms)
    year = moment.year + cycles * _GREGORIAN_CYCLE_YEARS
    return f"{year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _check_range(field: str, value: int, limit: int) -> None:
    if not 0 <= value < limit:
        raise TimestampRangeError(field, value, limit)


@dataclass(frozen=True, slots=True, order=True)
class HLCTimestamp:
    """One hybrid logical clock reading; ordered by (wall_ms, counter).

    Attributes:
        wall_ms: Largest wall-clock reading known when issued, in ms since the
            Unix epoch; ``0 <= wall_ms < 2**48`` (good until the year 10889).
        counter: Events issued at this ``wall_ms`` before this one;
            ``0 <= counter < 2**16``.
    """

    wall_ms: int
    counter: int

    def __post_init__(self) -> None:
        _check_range("wall_ms", self.wall_ms, WALL_LIMIT)
        _check_range("counter", self.counter, COUNTER_LIMIT)

    def encode(self) -> int:
        """Pack into one unsigned 64-bit integer whose order is the timestamp order.

        Returns:
            ``wall_ms << 16 | counter``, for SQLite INTEGER columns and indexes.
        """
        return self.wall_ms << COUNTER_BITS | self.counter

    @classmethod
    def decode(cls, value: int) -> HLCTimestamp:
        """Unpack an integer produced by ``encode``.

        Args:
            value: An integer in ``[0, 2**64)``.

        Returns:
            The timestamp that encodes to ``value``.

        Raises:
            TimestampRangeError: ``value`` is negative or needs more than 64 bits,
                so it cannot have come from ``encode``.
        """
        _check_range("encoded value", value, ENCODED_LIMIT)
        return cls(value >> COUNTER_BITS, value & (COUNTER_LIMIT - 1))

    def __str__(self) -> str:
        return f"{format_wall_ms(self.wall_ms)}/{self.counter}"


def _least_after(wall_ms: int, *before: HLCTimestamp | None) -> HLCTimestamp:
    """The least timestamp at ``wall_ms`` greater than every one of ``before``.

    ``wall_ms`` is at least the wall time of each of ``before``, so only those
    at exactly ``wall_ms`` constrain the counter.
    """
    counter = max((ts.counter + 1 for ts in before if ts is not None and ts.wall_ms == wall_ms), default=0)
    if counter >= COUNTER_LIMIT:
        raise ClockOverflowError(wall_ms)
    return HLCTimestamp(wall_ms, counter)


class HybridLogicalClock:
    """A node's hybrid logical clock; the caller supplies wall time on every event.

    Args:
        max_drift_ms: How far ahead of our wall clock a remote timestamp may be
            before ``receive`` refuses it.
        last: The highest timestamp this node persisted before a restart, so
            that new timestamps keep increasing even if the wall clock went back.

    Raises:
        ValueError: ``max_drift_ms`` is negative.
    """

    def __init__(self, *, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS, last: HLCTimestamp | None = None) -> None:
        if max_drift_ms < 0:
            raise ValueError(f"max_drift_ms must be non-negative, got {max_drift_ms}")
        self._max_drift_ms = max_drift_ms
        self._last = last

    @property
    def max_drift_ms(self) -> int:
        """How far ahead of local wall time an accepted remote timestamp may be."""
        return self._max_drift_ms

    @property
    def last(self) -> HLCTimestamp | None:
        """The latest timestamp issued, or None before the first event."""
        return self._last

    def now(self, wall_ms: int) -> HLCTimestamp:
        """Stamp a local or send event.

        Args:
            wall_ms: The current wall-clock reading in ms since the Unix epoch;
                it may be behind earlier readings.

        Returns:
            A timestamp strictly greater than every timestamp this clock issued
            or received before, with ``wall_ms`` the largest wall time known.

        Raises:
            TimestampRangeError: ``wall_ms`` is outside ``[0, 2**48)``.
            ClockOverflowError: 65536 events already share this millisecond;
                the clock is unchanged.
        """
        _check_range("wall_ms", wall_ms, WALL_LIMIT)
        last = self._last
        issued = _least_after(wall_ms if last is None else max(wall_ms, last.wall_ms), last)
        self._last = issued
        return issued

    def receive(self, remote: HLCTimestamp, wall_ms: int) -> HLCTimestamp:
        """Merge a timestamp received from another node and stamp the receive event.

        Args:
            remote: The timestamp carried by the incoming message or operation.
            wall_ms: The current wall-clock reading in ms since the Unix epoch.

        Returns:
            A timestamp strictly greater than both ``remote`` and every timestamp
            this clock issued or received before.

        Raises:
            TimestampRangeError: ``wall_ms`` is outside ``[0, 2**48)``.
            ClockDriftError: ``remote`` is more than ``max_drift_ms`` ahead of
                ``wall_ms``; the clock is unchanged, and the caller should
                quarantine the operation rather than merge it.
            ClockOverflowError: The counter would pass 65535; the clock is
                unchanged.
        """
        _check_range("wall_ms", wall_ms, WALL_LIMIT)
        if remote.wall_ms - wall_ms > self._max_drift_ms:
            raise ClockDriftError(remote, wall_ms, self._max_drift_ms)
        last = self._last
        new_wall_ms = max(wall_ms, remote.wall_ms, -1 if last is None else last.wall_ms)
        issued = _least_after(new_wall_ms, last, remote)
        self._last = issued
        return issued
