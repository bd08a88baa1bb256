"""The routing clock: the engine's seconds, and the UTC instants they stand for."""

# Theory of operation
# -------------------
# The routing engine takes `now` in seconds on a clock that never runs backwards; records,
# timestamps on the wire and queue_log lines speak in UTC instants. `RoutingClock` reads the
# monotonic clock for the engine and maps engine seconds onto instants with an offset fixed
# when it is created, so durations computed from instants equal those the engine measured, and
# a wall-clock step (NTP, a VM migration) moves neither.

from __future__ import annotations

import time
from datetime import UTC, datetime


class RoutingClock:
    """Engine seconds (monotonic) and the UTC instants they stand for.

    Args:
        monotonic: None reads `time.monotonic()`; a number makes a fixed clock that stays at that
            engine time until `advance` moves it (tests, replays).
        wall: The epoch seconds standing for the starting engine time; None reads `time.time()`.
    """

    def __init__(self, monotonic: float | None = None, wall: float | None = None) -> None:
        mono = time.monotonic() if monotonic is None else monotonic
        self._offset_s = (time.time() if wall is None else wall) - mono
        self._fixed = monotonic  # a fixed clock for tests: now() stays where it was put

    def now(self) -> float:
        """Engine seconds now."""
        return time.monotonic() if self._fixed is None else self._fixed

    def advance(self, seconds: float) -> None:
        """Move a fixed clock on (tests and replays); a system clock cannot be moved."""
        if self._fixed is None:
            raise TypeError("only a clock created with a fixed monotonic time can be advanced")
        self._fixed += seconds

    def instant(self, at: float) -> datetime:
        """The UTC instant of engine time `at`."""
        return datetime.fromtimestamp(at + self._offset_s, UTC)

    def seconds(self, instant: datetime) -> float:
        """The engine time of a UTC instant (for timestamps the switch reports)."""
        return instant.timestamp() - self._offset_s
