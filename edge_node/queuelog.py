"""Call detail records as an Asterisk ``queue_log``, so existing call-centre reporting can read them.

Each line is ``epoch|callid|queuename|agent|event|data...`` as app_queue writes it
(docs.asterisk.org, Operation/Logging/Queue-Logs): the UNIX time in whole seconds, the caller's
unique id (here the contact id), the queue, the member (the agent id, or ``NONE``), the event,
then the event's parameters, as many as the event has.
"""

# Theory of operation
# -------------------
# The lines are derived from the records, not kept as a second journal: a record holds every
# instant a queue_log line needs. Per record, in time order:
#
#   FULL                                          refused: the caller never joined
#   ENTERQUEUE     url|callerid|position          joined (url and caller id left empty: the
#                                                 number is personal data and not recorded)
#   EXITWITHTIMEOUT position|origposition|waittime  left for an overflow queue (then ENTERQUEUE
#                                                 there) or for a callback offer
#   CONNECT        holdtime|bridgedchanneluniqueid|ringtime   answered; the agent's channel id
#                                                 is unknown to the node, so the agent id stands in
#   COMPLETEAGENT  holdtime|calltime|origposition the agent hung up (COMPLETECALLER: the caller)
#   TRANSFER       extension|context|holdtime|calltime|origposition   the agent transferred it
#   ABANDON        position|origposition|waittime the caller hung up waiting or ringing
#
# Times are whole seconds, differences of whole-second stamps as app_queue computes them;
# holdtime and waittime run from entering the queue the line is about (after an overflow, from
# the overflow). A position the node did not observe (a timeout fired by the engine's own timer)
# is written as the original position. Contacts that never reached a queue (IVR only) have no
# lines. Overflow chains longer than one hop show the first queue and the last.

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from edge_node.calls import CallRecord

NONE = "NONE"
_UNSAFE = str.maketrans({"|": "_", "\n": " ", "\r": " "})


@dataclass(frozen=True, slots=True, order=True)
class QueueLogLine:
    """One queue_log line; sorts by time, then by record, then by order within the record."""

    epoch: int
    callid: str
    seq: int
    queue: str
    agent: str
    event: str
    data: tuple[str, ...] = ()

    def __str__(self) -> str:
        fields = (str(self.epoch), self.callid, self.queue, self.agent, self.event, *self.data)
        return "|".join(field.translate(_UNSAFE) for field in fields)


def _epoch(instant: datetime) -> int:
    return int(instant.timestamp())


def _seconds(start: datetime | None, end: datetime | None) -> int:
    return 0 if start is None or end is None else max(0, _epoch(end) - _epoch(start))


def record_lines(record: CallRecord) -> list[QueueLogLine]:
    """The queue_log lines of one record, in order."""
    arrived, queue = record.arrived_at, record.queue_id
    if arrived is None or queue is None:
        return []
    lines: list[QueueLogLine] = []

    def line(at: datetime, queue: str, agent: str, event: str, *data: object) -> None:
        lines.append(
            QueueLogLine(_epoch(at), record.id, len(lines), queue, agent, event, tuple(map(str, data)))
        )

    if record.outcome == "refused":
        line(record.ended_at or arrived, queue, NONE, "FULL")
        return lines
    orig = record.entry_position or 1
    entered = arrived
    if record.overflowed_from is not None and record.overflowed_at is not None:
        line(arrived, record.overflowed_from, NONE, "ENTERQUEUE", "", "", orig)
        waited = _seconds(arrived, record.overflowed_at)
        line(record.overflowed_at, record.overflowed_from, NONE, "EXITWITHTIMEOUT", orig, orig, waited)
        entered = record.overflowed_at
    line(entered, queue, NONE, "ENTERQUEUE", "", "", orig)
    ended, agent = record.ended_at, record.agent_id or NONE
    position = record.exit_position or orig
    match record.outcome:
        case "callback" if ended is not None:
            line(ended, queue, NONE, "EXITWITHTIMEOUT", position, orig, _seconds(entered, ended))
        case "abandoned" if ended is not None:
            line(ended, queue, NONE, "ABANDON", position, orig, _seconds(entered, ended))
        case "answered" if record.answered_at is not None:
            answered = record.answered_at
            hold = _seconds(entered, answered)
            ring = _seconds(record.offered_at, answered)
            line(answered, queue, agent, "CONNECT", hold, record.agent_id or "", ring)
            if ended is not None:
                talk = _seconds(answered, ended)
                if record.transferred_to is not None:
                    line(ended, queue, agent, "TRANSFER", record.transferred_to, "", hold, talk, orig)
                else:
                    event = "COMPLETECALLER" if record.ended_by == "caller" else "COMPLETEAGENT"
                    line(ended, queue, agent, event, hold, talk, orig)
    return lines


def queue_log(records: Iterable[CallRecord], *, since: datetime | None = None) -> Iterator[str]:
    """The lines of many records at or after `since`, in time order, each ending in a newline."""
    floor = None if since is None else _epoch(since)
    lines = sorted(line for record in records for line in record_lines(record))
    for line in lines:
        if floor is None or line.epoch >= floor:
            yield f"{line}\n"
