"""Which stored message a JetStream delivery is: its stream sequence, read without trusting the metadata.

A redelivery of a message (a consumer that crashed between merging and
acking) carries the same stream sequence as the first delivery, while a copy
published again gets a new one; replay guards on both the hub and the node
tell the two apart by it.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.errors import Error as NatsError


def stream_sequence(msg: Msg) -> int | None:
    """The message's sequence in its stream; None for a core NATS message or unreadable metadata."""
    try:
        return int(msg.metadata.sequence.stream)
    except (NatsError, AttributeError, TypeError, ValueError):
        return None
