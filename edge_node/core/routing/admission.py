"""Admission: what happens to a contact arriving at a queue, and leaving it unserved."""

# Theory of operation
# -------------------
# A contact arriving at a queue (from `enqueue`, an overflow, or a declined
# offer) is offered at once to the agent its queue would choose, if one is
# eligible and routable; by the matching invariant (matching.py) no one waiting
# could take that agent, so this never jumps the line. Otherwise it is refused
# if `max_length` contacts already wait, diverted if the queue diverts on entry
# and the expected wait exceeds `max_wait_s` (or nobody staffed qualifies), and
# queued if not. Re-queued contacts (after a decline) were admitted already:
# no length limit, no diversion, their old place and timers.
#
# Waiting, a contact climbs its ladder (`_relax`), and at `max_wait_s` in the
# queue it leaves (`_expire`): to the overflow queue, where it is admitted like
# any arrival but keeps its age and sequence, so its place in line; or out of the
# engine with a callback offer. The per-queue counters of stats.py are kept here
# and in the engine calls.
#
# `report` says whether to emit events for the contact: `enqueue` answers with a
# `Decision` instead, while arrivals caused by deadlines and declines have no one
# to answer but the event stream.

from __future__ import annotations

from edge_node.core.routing.config import RoutingConfig
from edge_node.core.routing.contacts import Contact, order_key
from edge_node.core.routing.events import (
    Assigned,
    CallbackOffered,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactRelaxed,
    Decision,
    Overflowed,
    Queued,
    RefusalReason,
    Refused,
)
from edge_node.core.routing.matching import Matchmaker
from edge_node.core.routing.queues import Entry, WaitingLine


class Admission(Matchmaker):
    """Arrivals, relaxation and departures of waiting contacts; `RoutingEngine` adds the public calls."""

    def __init__(self, config: RoutingConfig) -> None:
        super().__init__()
        self._config = config

    def _relax(self, entry: Entry, step: int, at: float) -> Entry:
        line = self._lines[entry.queue_id]
        line.move(entry, step)
        self._outbox.append(
            ContactRelaxed(entry.contact.contact_id, entry.queue_id, step, line.level_of(step), at)
        )
        self._timeline.schedule(entry, line.config, max_wait=False)
        return entry

    def _expire(self, entry: Entry, at: float) -> None:
        """A contact reached its queue's maximum wait: overflow it, or offer a callback."""
        contact_id, queue_id = entry.contact.contact_id, entry.queue_id
        target, waited_s = self._lines[queue_id].config.overflow_to, at - entry.enqueued_at
        self._leave(entry)
        counters = self._counters[queue_id]
        if target is None:
            counters.callbacks_offered += 1
            self._outbox.append(ContactCallbackOffered(contact_id, queue_id, waited_s, at))
            return
        counters.overflowed += 1
        self._outbox.append(ContactOverflowed(contact_id, queue_id, target, waited_s, at))
        self._admit(entry.contact, self._lines[target], at, seq=entry.key[2], report=True)

    # --- internals: admission -------------------------------------------------------------

    def _admit(self, contact: Contact, line: WaitingLine, at: float, *, seq: int, report: bool) -> Decision:
        """Offer, refuse, divert or queue a contact arriving at `line`; `report` also emits events."""
        config, contact_id = line.config, contact.contact_id
        queue_id, counters = config.queue_id, self._counters[config.queue_id]
        counters.arrived += 1
        credit_s = self._config.vip_credit_s[contact.vip]
        key = order_key(contact, band=config.band_of(contact), credit_s=credit_s, seq=seq)
        entry = Entry(contact, queue_id, key, at)
        if (found := self._best_agent_for(entry)) is not None:
            agent, by_affinity = found
            self._offer(entry, agent, at, by_affinity, report=report)
            return Assigned(contact_id, queue_id, agent.agent_id, by_affinity)
        if config.max_length is not None and len(line) >= config.max_length:
            counters.refused += 1
            detail = f"queue {queue_id!r} is full: {len(line)} of {config.max_length} places taken"
            if report:
                self._outbox.append(
                    ContactRefused(contact_id, queue_id, RefusalReason.QUEUE_FULL, detail, at)
                )
            return Refused(contact_id, queue_id, RefusalReason.QUEUE_FULL, detail)
        position = line.position(key)
        ewt = self._ewt(entry, line, position)
        if (
            config.divert_on_entry
            and config.max_wait_s is not None
            and (ewt is None or ewt > config.max_wait_s)
        ):
            return self._divert(entry, line, at, ewt, report=report)
        self._join(entry, line)
        if report:
            self._outbox.append(ContactQueued(contact_id, queue_id, position, ewt, at, at))
        return Queued(contact_id, queue_id, position, ewt)

    def _divert(
        self, entry: Entry, line: WaitingLine, at: float, ewt: float | None, *, report: bool
    ) -> Decision:
        """Send an arriving contact on at once: to the overflow queue, or away with a callback offer."""
        contact_id, queue_id, target = entry.contact.contact_id, entry.queue_id, line.config.overflow_to
        counters = self._counters[queue_id]
        if target is None:
            counters.callbacks_offered += 1
            if report:
                self._outbox.append(ContactCallbackOffered(contact_id, queue_id, 0.0, at))
            return CallbackOffered(contact_id, queue_id, ewt)
        counters.overflowed += 1
        if report:
            self._outbox.append(ContactOverflowed(contact_id, queue_id, target, 0.0, at))
        outcome = self._admit(entry.contact, self._lines[target], at, seq=entry.key[2], report=report)
        return Overflowed(contact_id, queue_id, target, outcome)

    def _place(self, entry: Entry, line: WaitingLine, at: float) -> None:
        """Offer a re-queued contact, or put it back in line (no length limit: it was admitted already)."""
        if (found := self._best_agent_for(entry)) is not None:
            self._offer(entry, found[0], at, found[1], report=True)
            return
        self._join(entry, line)
        position = line.position(entry.key)
        ewt = self._ewt(entry, line, position)
        self._outbox.append(
            ContactQueued(entry.contact.contact_id, entry.queue_id, position, ewt, entry.enqueued_at, at)
        )
