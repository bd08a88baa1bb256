"""NATS subject and stream names of the replication protocol, in one place.

Theory of operation
-------------------
A node publishes its outbox to ``ec.ops.<region>.<node>``; the hub's
JetStream stream ``EC_OPS`` captures ``ec.ops.>``, so one stream holds every
region's ops and a subject filter picks one region or node. Edits made at the
hub (or relayed to a region) go to ``ec.down.<region>``, captured by the
region's own stream ``EC_DOWN_<region>``, which that region's nodes consume: one
stream per region lets NATS permissions confine a region's credentials to its
own stream. Heartbeats (liveness and watermarks) go to
``ec.hb.<region>.<node>``. ``ec.ack.<region>.<node>`` is a plain request/reply
subject: a node asks the hub "what have you merged from me" and the hub answers
with its merged watermark for that node. A node enrolls on
``ec.enroll.<region>``, registers its residency policy on
``ec.policy.<region>.<node>`` and ships its audit checkpoints on
``ec.audit.<region>.<node>``; its replies come back under
``_INBOX.<region>.``, so a region's credentials need no view of other inboxes.

Every subject a region may use starts with a token naming the region, so NATS
permissions can allow ``ec.*.<region>.>``-style patterns per region
(:func:`region_publish_subjects`, :func:`region_subscribe_subjects`).

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
ENROLL_WILDCARD: Final = "ec.enroll.*"
POLICY_WILDCARD: Final = "ec.policy.>"
AUDIT_WILDCARD: Final = "ec.audit.>"
DOWN_STREAM_PREFIX: Final = "EC_DOWN_"

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


def ack_subject(region: str, node_id: str) -> str:
    """Where a node asks the hub for its merged watermark: ``ec.ack.<region>.<node>``."""
    return f"ec.ack.{check_token(region, 'region')}.{check_token(node_id, 'node id')}"


def down_stream(region: str) -> str:
    """The hub's JetStream stream holding ``region``'s down edits: ``EC_DOWN_<region>``."""
    return f"{DOWN_STREAM_PREFIX}{check_token(region, 'region')}"


def down_consumer(node_id: str) -> str:
    """The durable consumer name a node reads its region's down stream with."""
    return f"down-{check_token(node_id, 'node id')}"


def enroll_subject(region: str) -> str:
    """Where a new node of ``region`` asks to be enrolled: ``ec.enroll.<region>``."""
    return f"ec.enroll.{check_token(region, 'region')}"


def policy_subject(region: str, node_id: str) -> str:
    """Where a node registers its residency policy: ``ec.policy.<region>.<node>``."""
    return f"ec.policy.{check_token(region, 'region')}.{check_token(node_id, 'node id')}"


def audit_subject(region: str, node_id: str) -> str:
    """Where a node ships its signed audit checkpoints: ``ec.audit.<region>.<node>``."""
    return f"ec.audit.{check_token(region, 'region')}.{check_token(node_id, 'node id')}"


def inbox_prefix(region: str) -> str:
    """The reply-inbox prefix of a region's connections: ``_INBOX.<region>``."""
    return f"_INBOX.{check_token(region, 'region')}"


def region_publish_subjects(region: str) -> tuple[str, ...]:
    """What a region's credentials may publish at the hub (plain subjects; JetStream API apart)."""
    r = check_token(region, "region")
    return (
        f"ec.ops.{r}.*",
        f"ec.hb.{r}.*",
        f"ec.ack.{r}.*",
        f"ec.enroll.{r}",
        f"ec.policy.{r}.*",
        f"ec.audit.{r}.*",
    )


def region_subscribe_subjects(region: str) -> tuple[str, ...]:
    """What a region's credentials may receive from the hub (plain subjects; JetStream API apart)."""
    return (f"{inbox_prefix(region)}.>",)


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


def parse_region_node_subject(subject: str, kind: str) -> tuple[str, str]:
    """``(region, node_id)`` of an ``ec.<kind>.<region>.<node>`` subject; raise if it is not one."""
    region, node_id = _parse(subject, kind, 4)
    return region, node_id


def parse_enroll_subject(subject: str) -> str:
    """The region of an enrollment subject; raise if it is not one."""
    (region,) = _parse(subject, "enroll", 3)
    return region


def parse_down_subject(subject: str) -> str:
    """The region of a down subject; raise if it is not one."""
    (region,) = _parse(subject, "down", 3)
    return region
