"""NATS subject and stream names of the replication protocol, in one place.

Theory of operation
-------------------
A node publishes its outbox to ``ec.ops.<region>.<node>``; the hub's
JetStream stream ``EC_OPS`` captures ``ec.ops.>``, so one stream holds every
region's ops and a subject filter picks one region or node. Edits made at the
hub (or relayed to a region) go to ``ec.down.<region>``, captured by
``EC_DOWN``, which each region's node consumes. Heartbeats (liveness and
watermarks) go to ``ec.hb.<region>.<node>``. ``ec.ack.<node>`` is a plain
request/reply subject: a node asks the hub "what have you merged from me" and
the hub answers with its merged watermark for that node.

Region and node ids become subject tokens, so they must not contain what NATS
gives a meaning to: ``.`` separates tokens, ``*`` and ``>`` are wildcards, and
whitespace ends a subject. :func:`check_token` refuses those (and empty ids)
with :class:`SubjectTokenError`, naming the token; every builder checks its
arguments, so a bad id fails where the subject is made, not at the server.
"""

from __future__ import annotations

import re
from typing import Final

from sync.errors import SyncError

PREFIX: Final = "ec"
OPS_WILDCARD: Final = "ec.ops.>"
DOWN_WILDCARD: Final = "ec.down.>"
HEARTBEAT_WILDCARD: Final = "ec.hb.>"
ACK_WILDCARD: Final = "ec.ack.>"
HUB_OPS_STREAM: Final = "EC_OPS"
HUB_DOWN_STREAM: Final = "EC_DOWN"

_BAD = re.compile(r"[.*>\s\x00-\x1f\x7f]")


class SubjectTokenError(SyncError):
    """A region or node id cannot be used as a NATS subject token."""

    def __init__(self, what: str, token: str, problem: str) -> None:
        self.what, self.token, self.problem = what, token, problem
        super().__init__(f"{what} {token!r} cannot be a subject token: {problem}")


class SubjectFormatError(SyncError):
    """A subject does not have the shape its parser expects."""

    def __init__(self, subject: str, expected: str) -> None:
        self.subject, self.expected = subject, expected
        super().__init__(f"subject {subject!r} does not match {expected}")


def check_token(token: str, what: str = "token") -> str:
    """Return ``token`` if it is a usable subject token; raise naming it if not.

    Args:
        token: a region or node id.
        what: what the token is, for the message ("region", "node id").

    Raises:
        SubjectTokenError: the token is empty or holds a dot, a wildcard,
            whitespace or a control character.
    """
    if not token:
        raise SubjectTokenError(what, token, "it is empty")
    if m := _BAD.search(token):
        raise SubjectTokenError(what, token, f"it contains {m.group()!r}")
    return token


def ops_subject(region: str, node_id: str) -> str:
    """Where ``node_id`` of ``region`` publishes its ops: ``ec.ops.<region>.<node>``."""
    return f"ec.ops.{check_token(region, 'region')}.{check_token(node_id, 'node id')}"


def region_ops_wildcard(region: str) -> str:
    """Every node's ops in ``region``: ``ec.ops.<region>.*``."""
    return f"ec.ops.{check_token(region, 'region')}.*"


def down_subject(region: str) -> str:
    """Where the hub publishes edits for ``region``: ``ec.down.<region>``."""
    return f"ec.down.{check_token(region, 'region')}"


def heartbeat_subject(region: str, node_id: str) -> str:
    """Where a node publishes heartbeats: ``ec.hb.<region>.<node>``."""
    return f"ec.hb.{check_token(region, 'region')}.{check_token(node_id, 'node id')}"


def ack_subject(node_id: str) -> str:
    """Where a node asks the hub for its merged watermark: ``ec.ack.<node>``."""
    return f"ec.ack.{check_token(node_id, 'node id')}"


def _parse(subject: str, kind: str, parts: int) -> list[str]:
    tokens = subject.split(".")
    expected = f"{PREFIX}.{kind}" + ".<token>" * (parts - 2)
    if len(tokens) != parts or tokens[:2] != [PREFIX, kind]:
        raise SubjectFormatError(subject, expected)
    try:
        for token in tokens[2:]:
            check_token(token)
    except SubjectTokenError:
        raise SubjectFormatError(subject, expected) from None
    return tokens[2:]


def parse_ops_subject(subject: str) -> tuple[str, str]:
    """``(region, node_id)`` of an ops subject; raise if it is not one."""
    region, node_id = _parse(subject, "ops", 4)
    return region, node_id


def parse_heartbeat_subject(subject: str) -> tuple[str, str]:
    """``(region, node_id)`` of a heartbeat subject; raise if it is not one."""
    region, node_id = _parse(subject, "hb", 4)
    return region, node_id


def parse_down_subject(subject: str) -> str:
    """The region of a down subject; raise if it is not one."""
    (region,) = _parse(subject, "down", 3)
    return region
