"""Who may do what on the hub's nats-server: one user per region, one for the hub itself.

Theory of operation
-------------------
Every region's node runs its own nats-server, linked to the hub's as a leaf
node. The link logs in to the hub as the region's user, and the hub applies
that user's permissions to everything crossing the link: *publish* limits what
the region's side may send to the hub, *subscribe* limits what the hub
forwards to it. So a region's permissions are exactly its node's protocol,
built from ``sync.subjects``:

* plain subjects it publishes: ``ec.ops|hb|ack|policy|audit.<region>.*`` and
  ``ec.enroll.<region>`` (:func:`sync.subjects.region_publish_subjects`);
* replies it receives: ``_INBOX.<region>.>`` only
  (:func:`sync.subjects.region_subscribe_subjects`), which is why node clients
  connect with ``inbox_prefix=_INBOX.<region>``: PubAcks, JetStream API
  answers, pulled messages and request replies all arrive there, and no other
  region's replies can;
* the hub's JetStream API, reached through the leaf with domain ``hub``, so the
  subjects crossing the link carry the domain (``$JS.hub.API...``; the hub
  maps them to ``$JS.API...`` after the permission check). Measured against
  nats-server 2.15 with nats-py 2.16, a durable pull consumer on the region's
  own down stream needs ``CONSUMER.CREATE.<stream>.>`` (nats-py sends
  ``CREATE.<stream>.<name>.<filter>``), ``CONSUMER.INFO.<stream>.*`` (looked
  up before creating), ``CONSUMER.MSG.NEXT.<stream>.*`` (fetch), and
  ``$JS.ACK.<stream>.>`` (ack, nak, term; acks carry no domain). Publishing
  with a PubAck needs no API subject at all: the PubAck is a reply to the
  publisher's inbox. ``CONSUMER.DURABLE.CREATE`` (pre-2.9 clients),
  ``STREAM.*``, ``CONSUMER.DELETE`` and every other stream are left out, so a
  region can neither read another region's stream nor remove or reconfigure
  anything. The hub's JetStream also refuses a push consumer whose deliver
  subject the requesting user may not subscribe to, so a region cannot point a
  consumer of its own stream at another region's subjects.

Region users may connect only as leaf nodes (``allowed_connection_types
["LEAFNODE"]``): region credentials presented on the hub's client port are
refused outright.

What subject permissions cannot stop: NATS does not check *reply* subjects.
A region may publish an allowed request whose reply subject is another
region's (``ec.ops.<other>.x``); the responder, or JetStream for a PubAck or
a pulled message, then publishes its answer there from inside the hub. The
content is the hub's (a PubAck, a reply, the region's own down data), never
the region's, so the hub must attribute ops by the signed payload, never by
subject alone.

Everything here is pure: passwords arrive already hashed.
"""

from __future__ import annotations

from typing import Final

from sync import subjects
from sync.transport.natsd_auth import NatsUser

HUB_DOMAIN: Final = "hub"
HUB_USER: Final = "edgecare-hub"
REGION_USER_PREFIX: Final = "region-"
ALL: Final = (">",)

__all__ = [
    "HUB_DOMAIN",
    "HUB_USER",
    "NatsUser",
    "hub_user",
    "local_user",
    "region_jetstream_subjects",
    "region_publish_allow",
    "region_subscribe_allow",
    "region_user",
    "region_user_name",
]


def region_user_name(region: str) -> str:
    """The hub-side user name of ``region``'s leaf link: ``region-<region>``."""
    return REGION_USER_PREFIX + subjects.check_token(region, "region")


def region_jetstream_subjects(region: str, *, hub_domain: str = HUB_DOMAIN) -> tuple[str, ...]:
    """The JetStream API and ack subjects a node of ``region`` publishes, through a leaf, to the hub.

    Create, look up and pull from a durable consumer on ``EC_DOWN_<region>``
    only, and acknowledge what it delivered.
    """
    stream = subjects.down_stream(region)
    api = f"$JS.{subjects.check_token(hub_domain, 'hub domain')}.API"
    return (
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
    )


def region_publish_allow(region: str, *, hub_domain: str = HUB_DOMAIN) -> tuple[str, ...]:
    """Everything a node of ``region`` may send into the hub."""
    return subjects.region_publish_subjects(region) + region_jetstream_subjects(region, hub_domain=hub_domain)


def region_subscribe_allow(region: str) -> tuple[str, ...]:
    """Everything the hub may forward to ``region``: replies to its own inboxes."""
    return subjects.region_subscribe_subjects(region)


def region_user(region: str, password_hash: str, *, hub_domain: str = HUB_DOMAIN) -> NatsUser:
    """The hub's user for ``region``'s leaf link: its own subjects only, leaf connections only.

    Raises:
        sync.subjects.SubjectTokenError: ``region`` cannot be a subject token.
    """
    return NatsUser(
        user=region_user_name(region),
        password=password_hash,
        publish_allow=region_publish_allow(region, hub_domain=hub_domain),
        subscribe_allow=region_subscribe_allow(region),
        allowed_connection_types=("LEAFNODE",),
    )


def hub_user(password_hash: str, *, user: str = HUB_USER) -> NatsUser:
    """The hub process's own user: every subject, as an ordinary client (not as a leaf)."""
    return NatsUser(
        user=user,
        password=password_hash,
        publish_allow=ALL,
        subscribe_allow=ALL,
        allowed_connection_types=("STANDARD",),
    )


def local_user(user: str, password_hash: str) -> NatsUser:
    """A node process's user on its own nats-server: every subject, as an ordinary client.

    What it may reach at the hub is still bounded by the region user of the
    leaf link; this user only keeps other local processes off the node's server.
    """
    return NatsUser(
        user=user,
        password=password_hash,
        publish_allow=ALL,
        subscribe_allow=ALL,
        allowed_connection_types=("STANDARD",),
    )
