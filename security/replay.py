"""The replay guard: each signed frame is accepted once, and only while it is fresh.

Theory of operation
-------------------
:func:`security.frames.verify_frame` ends with this check (``replayed``, the
last of its refusals); it lives here because it is the one check that keeps
state across frames, while the rest of frame verification is a function of
the frame, its subject and the enrolled key.

A frame is fresh if it was signed at most ``window_ms`` ago and at most
``max_skew_ms`` ahead of the verifier's clock, and its nonce was not
accepted from that node before. JetStream redelivers a stored message with
the same delivery id (its stream sequence) after a lost ack; that is allowed,
because merges are idempotent, while the same frame stored twice (published
again by an attacker) has another delivery id and is refused. A ``None``
delivery id matches nothing. Verification only *checks* the guard: the caller
calls :meth:`ReplayGuard.remember` once it has durably accepted the frame, so
a frame that failed later (a crash before commit) can still be redelivered.
The guard may forget nonces signed before ``now - window_ms``
(:meth:`ReplayGuard.prune`), because the time check refuses those frames
anyway; memory is bounded by the frames one window holds. (If the hub's clock
steps back by more than the skew, a pruned nonce could pass again; merges
being idempotent, the cost is a redundant merge, not corrupted state.)

Refusals are :class:`security.frames.FrameRejected` with reason
``replayed`` and no subject; ``verify_frame`` re-raises them naming the
subject. The module is pure: no I/O and no clock; the caller passes
``now_ms``, persists :meth:`ReplayGuard.entries` and restores them with
:meth:`ReplayGuard.load`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from security.frames import FrameRejected, InvalidFrameArgumentError

DEFAULT_REPLAY_WINDOW_MS: Final = 24 * 60 * 60 * 1000
DEFAULT_MAX_SKEW_MS: Final = 5 * 60 * 1000


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".")


class ReplayEntry(NamedTuple):
    """One remembered nonce, as :meth:`ReplayGuard.entries` yields and :meth:`ReplayGuard.load` takes."""

    node_id: str
    nonce: bytes
    signed_at_ms: int
    delivery: int | None


@dataclass(frozen=True, slots=True)
class ReplayGuardStatistics:
    """A snapshot of a :class:`ReplayGuard`."""

    entries: int
    nodes: int
    window_ms: int
    max_skew_ms: int
    oldest_signed_at_ms: int | None
    checked_total: int
    refused_total: int
    remembered_total: int
    pruned_total: int


class ReplayGuard:
    """Refuses frames outside the time window, and nonces a node already used.

    Pure: the caller passes the time, persists :meth:`entries` and restores
    them with :meth:`load`, and calls :meth:`prune` periodically to bound
    memory (entries older than the window can be forgotten because the time
    check refuses their frames anyway).

    Raises:
        InvalidFrameArgumentError: ``window_ms`` is not positive or
            ``max_skew_ms`` is negative.
    """

    __slots__ = (
        "_checked",
        "_expiry",
        "_max_skew_ms",
        "_pruned",
        "_refused",
        "_remembered",
        "_seen",
        "_window_ms",
    )

    def __init__(
        self, window_ms: int = DEFAULT_REPLAY_WINDOW_MS, max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    ) -> None:
        if type(window_ms) is not int or window_ms <= 0:
            raise InvalidFrameArgumentError("window_ms", f"must be a positive int, got {window_ms!r}")
        if type(max_skew_ms) is not int or max_skew_ms < 0:
            raise InvalidFrameArgumentError("max_skew_ms", f"must be a non-negative int, got {max_skew_ms!r}")
        self._window_ms = window_ms
        self._max_skew_ms = max_skew_ms
        self._seen: dict[str, dict[bytes, tuple[int, int | None]]] = {}
        self._expiry: list[tuple[int, str, bytes]] = []  # min-heap by signed_at_ms; may hold stale items
        self._checked = self._refused = self._remembered = self._pruned = 0

    @property
    def window_ms(self) -> int:
        return self._window_ms

    @property
    def max_skew_ms(self) -> int:
        return self._max_skew_ms

    def _refuse(self, problem: str) -> FrameRejected:
        self._refused += 1
        return FrameRejected("replayed", problem)

    def check(
        self, node_id: str, nonce: bytes, signed_at_ms: int, now_ms: int, delivery: int | None = None
    ) -> None:
        """Raise unless a frame with these values may be accepted now.

        Raises:
            FrameRejected: ``replayed``: signed before ``now - window_ms`` or
                after ``now + max_skew_ms``, or ``nonce`` was remembered for
                ``node_id`` with another delivery id (or either id is None).
        """
        self._checked += 1
        if signed_at_ms < now_ms - self._window_ms:
            raise self._refuse(
                f"signed {_seconds(now_ms - signed_at_ms)} s ago, outside the replay window of "
                f"{_seconds(self._window_ms)} s"
            )
        if signed_at_ms > now_ms + self._max_skew_ms:
            raise self._refuse(
                f"signed in the future, {_seconds(signed_at_ms - now_ms)} s ahead, beyond the allowed "
                f"clock skew of {_seconds(self._max_skew_ms)} s"
            )
        seen = self._seen.get(node_id, {}).get(nonce)
        if seen is not None and (delivery is None or seen[1] != delivery):
            raise self._refuse(
                f"nonce {nonce.hex()} of node {node_id!r} was already accepted "
                f"(delivery {seen[1]}, this is delivery {delivery})"
            )

    def remember(self, node_id: str, nonce: bytes, signed_at_ms: int, delivery: int | None = None) -> None:
        """Record an accepted frame's nonce, so another copy of it is refused."""
        nonces = self._seen.setdefault(node_id, {})
        previous = nonces.get(nonce)
        nonces[nonce] = (signed_at_ms, delivery)
        if previous is None or previous[0] != signed_at_ms:
            heapq.heappush(self._expiry, (signed_at_ms, node_id, nonce))
        self._remembered += 1

    def prune(self, now_ms: int) -> int:
        """Forget nonces signed before ``now_ms - window_ms``; return how many were forgotten."""
        cutoff = now_ms - self._window_ms
        removed = 0
        while self._expiry and self._expiry[0][0] < cutoff:
            signed_at_ms, node_id, nonce = heapq.heappop(self._expiry)
            nonces = self._seen.get(node_id)
            current = None if nonces is None else nonces.get(nonce)
            if nonces is None or current is None or current[0] != signed_at_ms:
                continue  # a stale heap item: the entry was re-remembered or already pruned
            del nonces[nonce]
            if not nonces:
                del self._seen[node_id]
            removed += 1
        self._pruned += removed
        return removed

    def entries(self) -> Iterator[ReplayEntry]:
        """Every remembered nonce, for an adapter to persist."""
        for node_id, nonces in self._seen.items():
            for nonce, (signed_at_ms, delivery) in nonces.items():
                yield ReplayEntry(node_id, nonce, signed_at_ms, delivery)

    def load(self, entries: Iterable[tuple[str, bytes, int, int | None]]) -> None:
        """Remember persisted entries (as :meth:`entries` yielded them) again.

        Raises:
            InvalidFrameArgumentError: An entry does not have the types of :class:`ReplayEntry`.
        """
        for node_id, nonce, signed_at_ms, delivery in entries:
            if (
                not isinstance(node_id, str)
                or not isinstance(nonce, bytes)
                or type(signed_at_ms) is not int
                or not (delivery is None or type(delivery) is int)
            ):
                raise InvalidFrameArgumentError(
                    "replay entry", f"must be (str, bytes, int, int | None), got {(node_id, signed_at_ms)!r}"
                )
            self.remember(node_id, nonce, signed_at_ms, delivery)

    def __len__(self) -> int:
        return sum(len(nonces) for nonces in self._seen.values())

    def statistics(self) -> ReplayGuardStatistics:
        oldest = min(
            (signed_at for nonces in self._seen.values() for signed_at, _ in nonces.values()), default=None
        )
        return ReplayGuardStatistics(
            entries=len(self),
            nodes=len(self._seen),
            window_ms=self._window_ms,
            max_skew_ms=self._max_skew_ms,
            oldest_signed_at_ms=oldest,
            checked_total=self._checked,
            refused_total=self._refused,
            remembered_total=self._remembered,
            pruned_total=self._pruned,
        )


__all__ = [
    "DEFAULT_MAX_SKEW_MS",
    "DEFAULT_REPLAY_WINDOW_MS",
    "ReplayEntry",
    "ReplayGuard",
    "ReplayGuardStatistics",
]
