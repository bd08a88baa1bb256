"""The runtime side of EdgeCare's secured NATS links: read back what `edgecare init` wrote.

Theory of operation
-------------------
:mod:`security.provisioning` writes the files once (``init_hub``,
``init_node``); every start of the hub or a node reads them back here.
:func:`load_hub_security` and :func:`load_node_security` return ``None`` when
init never ran in the directory, refuse secret files other users can read, and
check every certificate parses and every key belongs to its certificate, so a
broken installation fails at start-up with the file named, not at the first TLS
handshake.

The results, :class:`HubSecurity` and :class:`NodeSecurity`, offer
``configure(NatsServerConfig) -> NatsServerConfig`` (the process's own
nats-server: TLS listeners, users and, for a node, the leaf link's credentials)
and ``connect_options()`` (nats-py ``connect`` keyword arguments for the
process's own connection). Every TLS listener and link uses
``handshake_first``, so both ends come from here. The file formats and their
readers are shared with :mod:`security.provisioning`, which owns them; every
problem raises :class:`~security.provisioning.ProvisioningError` naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from security import pki
from security.nats_access import hub_user as make_hub_user
from security.nats_access import local_user, region_user, region_user_name
from security.provisioning import (
    ProvisioningError,
    _Bundle,
    _ClientFile,
    _decode,
    _HubPaths,
    _NodePaths,
    _read_private,
    _UsersFile,
)
from sync import subjects
from sync.transport.natsd import LeafRemoteTLS, NatsServerConfig, NatsUser, TLSFiles, client_tls_context


@dataclass(frozen=True, slots=True)
class HubSecurity:
    """Everything the hub needs to run its nats-server securely and to connect to it."""

    hub_dir: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    users: tuple[NatsUser, ...]  # the hub's own user first, then one per region
    regions: tuple[str, ...]
    client_user: str
    client_password: str = field(repr=False)

    def tls(self) -> TLSFiles:
        """The client listener's TLS (clients check the hub CA; no client certificates)."""
        return TLSFiles(cert=self.cert_file, key=self.key_file, ca=self.ca_file, handshake_first=True)

    def leaf_tls(self) -> TLSFiles:
        """The leaf listener's TLS: the same hub certificate."""
        return self.tls()

    def configure(self, cfg: NatsServerConfig) -> NatsServerConfig:
        """``cfg`` with TLS on both listeners and the hub's and regions' users."""
        leaf_tls = self.leaf_tls() if cfg.leaf_listen is not None else None
        return dataclasses.replace(cfg, tls=self.tls(), leaf_tls=leaf_tls, users=self.users)

    def connect_options(self) -> dict[str, object]:
        """nats-py ``connect`` keyword arguments for the hub process's own connection."""
        return {
            "user": self.client_user,
            "password": self.client_password,
            "tls": client_tls_context(self.ca_file),
            "tls_handshake_first": True,
        }


@dataclass(frozen=True, slots=True)
class NodeSecurity:
    """Everything a node needs: its own server's TLS and user, and the credentials of its hub link."""

    node_dir: Path
    region: str
    hub_ca_file: Path
    hub_hostnames: tuple[str, ...]
    leaf_user: str
    ca_file: Path  # the node-local CA its own clients check
    cert_file: Path
    key_file: Path
    local_user: str
    local_password_hash: str
    leaf_password: str = field(repr=False)
    local_password: str = field(repr=False)

    def tls(self) -> TLSFiles:
        """The node server's client listener TLS (node-local CA)."""
        return TLSFiles(cert=self.cert_file, key=self.key_file, ca=self.ca_file, handshake_first=True)

    def leaf_remote_tls(self) -> LeafRemoteTLS:
        """How the leaf link checks the hub: against the hub CA from the bundle."""
        return LeafRemoteTLS(ca=self.hub_ca_file, handshake_first=True)

    @property
    def users(self) -> tuple[NatsUser, ...]:
        return (local_user(self.local_user, self.local_password_hash),)

    def configure(self, cfg: NatsServerConfig) -> NatsServerConfig:
        """``cfg`` with TLS and the local user; with the region's hub credentials if it has a leaf remote."""
        cfg = dataclasses.replace(cfg, tls=self.tls(), users=self.users)
        if cfg.leaf_remote is None:
            return cfg
        return dataclasses.replace(
            cfg,
            leaf_remote_user=self.leaf_user,
            leaf_remote_password=self.leaf_password,
            leaf_remote_tls=self.leaf_remote_tls(),
        )

    def connect_options(self) -> dict[str, object]:
        """nats-py ``connect`` keyword arguments for the node process's connection to its own server."""
        return {
            "user": self.local_user,
            "password": self.local_password,
            "tls": client_tls_context(self.ca_file),
            "tls_handshake_first": True,
            "inbox_prefix": subjects.inbox_prefix(self.region),
        }


# --- hub -----------------------------------------------------------------------------------


def load_hub_security(hub_dir: Path) -> HubSecurity | None:
    """The hub's provisioned security, or None if ``init_hub`` never ran in ``hub_dir``.

    Raises:
        ProvisioningError: init ran but a file is missing, malformed, unsafe or inconsistent.
    """
    paths = _HubPaths.of(hub_dir)
    if not paths.users.exists() and not paths.ca_cert.exists():
        return None
    users = _decode(paths.users, _read_private(paths.users), _UsersFile)
    client = _decode(paths.client, _read_private(paths.client), _ClientFile)
    if client.user != users.hub.user:
        raise ProvisioningError(
            paths.client, f"names user {client.user!r}, but {paths.users} has {users.hub.user!r}"
        )
    _check_cert_key(paths.ca_cert, None)
    _check_cert_key(paths.cert, paths.key)
    region_users = []
    for region, entry in sorted(users.regions.items()):
        if entry.user != region_user_name(region):
            raise ProvisioningError(paths.users, f"region {region!r} has user {entry.user!r}")
        region_users.append(region_user(region, entry.password_hash))
    return HubSecurity(
        hub_dir=hub_dir,
        ca_file=paths.ca_cert,
        cert_file=paths.cert,
        key_file=paths.key,
        users=(make_hub_user(users.hub.password_hash, user=users.hub.user), *region_users),
        regions=tuple(sorted(users.regions)),
        client_user=client.user,
        client_password=client.password,
    )


def _check_cert_key(cert: Path, key: Path | None) -> None:
    """The certificate parses and, with ``key``, the key is private and belongs to it."""
    try:
        if key is None:
            pki.load_cert(cert)
        else:
            _read_private(key)
            pki.load_cert_key(cert, key)
    except pki.PKIFileError as exc:
        raise ProvisioningError(exc.path, exc.problem) from exc


# --- node ----------------------------------------------------------------------------------


def load_node_security(node_dir: Path) -> NodeSecurity | None:
    """The node's provisioned security, or None if ``init_node`` never ran in ``node_dir``.

    Raises:
        ProvisioningError: init ran but a file is missing, malformed, unsafe or inconsistent.
    """
    paths = _NodePaths.of(node_dir)
    if not paths.hub_link.exists() and not paths.client.exists():
        return None
    link = _decode(paths.hub_link, _read_private(paths.hub_link), _Bundle)
    client = _decode(paths.client, _read_private(paths.client), _ClientFile)
    if not client.password_hash:
        raise ProvisioningError(paths.client, "has no password_hash; run the init again")
    _check_cert_key(paths.hub_ca, None)
    _check_cert_key(paths.ca_cert, None)
    _check_cert_key(paths.cert, paths.key)
    return NodeSecurity(
        node_dir=node_dir,
        region=link.region,
        hub_ca_file=paths.hub_ca,
        hub_hostnames=tuple(link.hub_hostnames),
        leaf_user=link.user,
        leaf_password=link.password,
        ca_file=paths.ca_cert,
        cert_file=paths.cert,
        key_file=paths.key,
        local_user=client.user,
        local_password=client.password,
        local_password_hash=client.password_hash,
    )
