"""The TLS and authorization parts of a nats-server config: what they hold and how they render.

Theory of operation
-------------------
``natsd.render_config`` delegates here for everything that concerns who may
connect and over what: the ``tls {}`` blocks of the client and leaf listeners,
the ``authorization { users = [...] }`` block, and the credentials and
``tls {}`` block of a leaf node's remote.

The hub's leaf listener has no ``authorization`` block of its own on purpose:
nats-server then authenticates leaf connections against the server-wide
``users`` list, so a region's leaf link logs in as that region's user and gets
that user's subject permissions (leaf-node-only users in ``leafnodes {
authorization {} }`` cannot carry permissions). A user's
``allowed_connection_types: ["LEAFNODE"]`` keeps region credentials off the
client port.

On an accepted leaf connection, the user's *publish* permissions limit what
the leaf may send into the hub and its *subscribe* permissions limit what the
hub forwards to the leaf (interest the leaf registers outside them is
ignored). An empty allow list renders as ``deny: [">"]``: nats-server reads an
empty allow list as "no restriction", the opposite of what an empty tuple says.

Passwords in ``users`` are rendered as given; callers pass bcrypt hashes
(``$2a$``/``$2b$``), which nats-server checks itself, so the config file holds
no usable secret for them. A leaf remote's password cannot be hashed: it goes,
URL-escaped, into the remote's URL, which is why ``natsd`` writes the config
file with mode 0600. ``no_auth_user`` is never rendered (GHSA-38x3-76xf-cq45:
with it, an unauthenticated peer on a leaf listener could skip authentication).

``handshake_first`` makes the TLS handshake the first bytes on the wire, so
the server never sends its INFO in clear and never parses protocol from an
unauthenticated, unencrypted peer; both ends must agree on it (nats-py:
``connect(tls_handshake_first=True)``).
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from sync.errors import SyncError

CONNECTION_TYPES: Final = frozenset({"STANDARD", "WEBSOCKET", "LEAFNODE", "MQTT", "IN_PROCESS"})
ERROR_TAIL_LINES: Final = 20
TLS_TIMEOUT_S: Final = 2.0  # nats-server's 0.5 s default fails handshakes on a busy 2-core machine
BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")
_BAD_SUBJECT: Final = re.compile(r"\s")
_BAD_USER: Final = re.compile(r"[\s\x00-\x1f\x7f]")


class NatsServerError(SyncError):
    """nats-server could not be found, started or configured.

    The message names the problem, the binary and the client port when known,
    and ends with the last lines the server logged. (Defined here, next to the
    config rules, so this module and ``natsd`` raise the same types.)
    """

    def __init__(
        self,
        problem: str,
        *,
        binary: Path | None = None,
        port: int | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        self.problem, self.binary, self.port = problem, binary, port
        self.log_tail = tuple(log_tail)
        where = ""
        if binary is not None:
            where += f" ({binary}"
            where += f", client port {port})" if port else ")"
        elif port:
            where += f" (client port {port})"
        message = f"nats-server{where}: {problem}"
        if self.log_tail:
            message += "; last log lines:\n" + "\n".join(self.log_tail[-ERROR_TAIL_LINES:])
        super().__init__(message)


class NatsConfigError(NatsServerError):
    """A config field breaks a rule nats-server (or our safety rules) would reject later."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field, self.value, self.rule = field, value, rule
        super().__init__(f"config field {field}={value!r} {rule}")


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A listener's TLS: its certificate and key, and the CA that client certificates must chain to.

    ``verify=True`` makes the listener demand and check a client certificate
    (mutual TLS); it needs ``ca``. Without ``verify`` the CA is not needed.
    """

    cert: Path
    key: Path
    ca: Path | None = None
    verify: bool = False
    handshake_first: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"

    def __post_init__(self) -> None:
        if self.verify and self.ca is None:
            raise NatsConfigError("tls.verify", True, "needs tls.ca to check client certificates against")


@dataclass(frozen=True, slots=True)
class LeafRemoteTLS:
    """How a leaf node checks the hub: the CA the hub's certificate chains to, and an optional client cert."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    handshake_first: bool = False

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise NatsConfigError(
                "leaf_remote_tls.cert/key", (self.cert, self.key), "must be given both or neither"
            )


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One entry of nats-server's ``authorization { users }`` with its permissions.

    ``password`` is a bcrypt hash (what provisioning stores) or, for throwaway
    test servers, a plain password; it is left out of ``repr``.
    ``publish_allow``/``subscribe_allow`` are allow lists (``(">",)`` for
    everything); an empty list allows nothing. An empty
    ``allowed_connection_types`` allows every connection type.
    """

    user: str
    password: str = field(repr=False)
    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    allowed_connection_types: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.user or _BAD_USER.search(self.user):
            raise NatsConfigError("user", self.user, "must be non-empty without whitespace")
        if not self.password:
            raise NatsConfigError(f"password of {self.user}", "", "must not be empty")
        for name, subjects in (
            ("publish_allow", self.publish_allow),
            ("subscribe_allow", self.subscribe_allow),
        ):
            if isinstance(subjects, str):
                raise NatsConfigError(f"{name} of {self.user}", subjects, "must be a tuple of subjects")
            for subject in subjects:
                if not subject or _BAD_SUBJECT.search(subject) or ".." in subject or subject.endswith("."):
                    raise NatsConfigError(f"{name} of {self.user}", subject, "is not a valid subject")
        if unknown := set(self.allowed_connection_types) - CONNECTION_TYPES:
            raise NatsConfigError(
                f"allowed_connection_types of {self.user}",
                sorted(unknown),
                f"must be among {sorted(CONNECTION_TYPES)}",
            )

    @property
    def password_is_hashed(self) -> bool:
        """Whether ``password`` is a bcrypt hash rather than the plain secret."""
        return self.password.startswith(BCRYPT_PREFIXES)


def check_users(users: tuple[NatsUser, ...]) -> None:
    """Refuse two entries with one user name (nats-server would keep one silently).

    Raises:
        NatsConfigError: naming the duplicated user.
    """
    seen: set[str] = set()
    for u in users:
        if u.user in seen:
            raise NatsConfigError("users", u.user, "appears twice")
        seen.add(u.user)


def render_tls(tls: TLSFiles | LeafRemoteTLS, indent: str) -> list[str]:
    """A ``tls { ... }`` block for a listener (``TLSFiles``) or a leaf remote (``LeafRemoteTLS``)."""
    q = json.dumps
    inner = indent + "  "
    lines = [f"{indent}tls {{"]
    if tls.cert is not None and tls.key is not None:
        lines += [f"{inner}cert_file: {q(str(tls.cert))}", f"{inner}key_file: {q(str(tls.key))}"]
    if tls.ca is not None:
        lines.append(f"{inner}ca_file: {q(str(tls.ca))}")
    if isinstance(tls, TLSFiles):
        if tls.verify:
            lines.append(f"{inner}verify: true")
        lines.append(f"{inner}min_version: {q(tls.min_version)}")
    if tls.handshake_first:
        lines.append(f"{inner}handshake_first: true")
    lines += [f"{inner}timeout: {TLS_TIMEOUT_S}", f"{indent}}}"]
    return lines


def _render_allow(subjects: tuple[str, ...]) -> str:
    if not subjects:  # an empty allow list would mean "anything"
        return '{deny: [">"]}'
    return "{allow: [" + ", ".join(json.dumps(s) for s in subjects) + "]}"


def render_users(users: tuple[NatsUser, ...]) -> list[str]:
    """The ``authorization { users = [...] }`` block; nothing when there are no users."""
    if not users:
        return []
    q = json.dumps
    lines = ["authorization {", "  users = ["]
    for u in users:
        entry = f"    {{user: {q(u.user)}, password: {q(u.password)}"
        entry += f", permissions: {{publish: {_render_allow(u.publish_allow)}"
        entry += f", subscribe: {_render_allow(u.subscribe_allow)}}}"
        if u.allowed_connection_types:
            types = ", ".join(q(t) for t in u.allowed_connection_types)
            entry += f", allowed_connection_types: [{types}]"
        lines.append(entry + "}")
    lines += ["  ]", "}"]
    return lines


def remote_url_with_credentials(url: str, user: str | None, password: str | None) -> str:
    """``url`` with ``user:password@`` (URL-escaped) in front of the host, or unchanged without a user."""
    if user is None:
        return url
    parts = urlsplit(url)
    userinfo = quote(user, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def render_remote(url: str, user: str | None, password: str | None, tls: LeafRemoteTLS | None) -> list[str]:
    """The ``remotes: [...]`` entry of a leaf node: URL with credentials, and its TLS block."""
    q = json.dumps
    full = remote_url_with_credentials(url, user, password)
    if tls is None:
        return [f"  remotes: [{{url: {q(full)}}}]"]
    return ["  remotes: [", "    {", f"      url: {q(full)}", *render_tls(tls, "      "), "    }", "  ]"]


def client_tls_context(ca_file: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client-side TLS context for nats-py ``connect(tls=...)``: trusts only ``ca_file``.

    TLS 1.2 or newer, certificate and host name verification on. ``cert`` and
    ``key`` add a client certificate for listeners that verify one.

    Raises:
        NatsConfigError: a file is missing or not a usable PEM CA,
            certificate or key, or only one of ``cert``/``key`` was given.
    """
    if (cert is None) != (key is None):
        raise NatsConfigError("cert/key", (cert, key), "must be given both or neither")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise NatsConfigError("ca_file", str(ca_file), f"cannot be loaded as a PEM CA: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise NatsConfigError("cert", str(cert), f"cannot be loaded with its key {key}: {exc}") from exc
    return ctx
