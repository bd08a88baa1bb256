"""Provisioning for EdgeCare's NATS links: the files `edgecare init` writes.

Theory of operation
-------------------
The hub is provisioned once (:func:`init_hub`); it writes::

    hub_dir/pki/ca.crt, ca.key            the hub CA (key 0600, dir 0700)
    hub_dir/pki/hub.crt, hub.key          the server cert of the hub's client and leaf listeners
    hub_dir/security/nats-users.json      per region: user + bcrypt hash; the hub's own user + hash
    hub_dir/security/hub-client.json      the hub process's user and plain password
    hub_dir/bundles/<region>.json         per region: user, plain password, CA PEM, hub host names

A bundle is the only place a region's plain password exists on the hub; the
operator moves it to the region's node and deletes it. :func:`init_node`
checks the bundle is for the node's region, stores it as
``node_dir/security/hub-link.json`` and makes a node-local CA and server
certificate for the node's own nats-server, plus a local user, so other
processes on the node's machine cannot borrow the region's leaf link.

Both inits are idempotent: what exists is kept (and checked), what is missing
is made, so re-running ``init_hub`` with more regions adds them and keeps every
existing credential. A region already provisioned is never given a new
password (its node holds the old one); its bundle is not rewritten. The hub
certificate is re-issued from the same CA when it no longer covers the asked
host names or expires within 30 days.

Reading the files back at every start is :mod:`security.links`
(``load_hub_security``, ``load_node_security``); this module owns the file
formats, their paths and the readers both sides share, so a format change is
made in one place. Every problem raises :class:`ProvisioningError` naming the
file.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import bcrypt
import msgspec

from security import pki
from security.errors import SecurityError
from security.nats_access import HUB_USER, region_user_name
from sync import subjects

FORMAT_VERSION: Final = 1
BCRYPT_ROUNDS: Final = 11  # ~0.1 s per check for nats-server and for an attacker with the hash file
PASSWORD_BYTES: Final = 32
LOCAL_USER: Final = "edgecare-node"
DEFAULT_HOSTNAMES: Final = ("localhost", "127.0.0.1")
RENEW_BEFORE: Final = datetime.timedelta(days=30)
_REGION: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a subject token that is also a safe file name


class ProvisioningError(SecurityError):
    """A provisioning file is missing, unreadable, malformed, unsafe or inconsistent."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class BundleRegionError(ProvisioningError):
    """A region bundle was offered to a node of another region."""

    def __init__(self, path: Path, *, expected: str, found: str) -> None:
        self.expected, self.found = expected, found
        super().__init__(path, f"bundle is for region {found!r}, but this node is in region {expected!r}")


# --- file formats (shared with security.links) ---------------------------------------------


_S = TypeVar("_S", bound=msgspec.Struct)


class _UserHash(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    user: str
    password_hash: str


class _UsersFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    hub: _UserHash
    regions: dict[str, _UserHash]


class _ClientFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    user: str
    password: str
    password_hash: str = ""


class _Bundle(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    region: str
    user: str
    password: str
    ca_pem: str
    hub_hostnames: list[str]


_FILE_KINDS: Final[dict[type[msgspec.Struct], str]] = {
    _UsersFile: "nats users",
    _ClientFile: "client credentials",
    _Bundle: "region bundle",
}


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubProvisioning:
    """What :func:`init_hub` did: every region now provisioned, those added now, files written now."""

    hub_dir: Path
    ca_cert: Path
    server_cert: Path
    regions: tuple[str, ...]
    added_regions: tuple[str, ...]
    bundles: tuple[Path, ...]  # written by this run, one per added region
    written: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class NodeProvisioning:
    """What :func:`init_node` did."""

    node_dir: Path
    region: str
    hub_link: Path
    ca_cert: Path
    server_cert: Path
    written: tuple[Path, ...]


# --- paths ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HubPaths:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    users: Path
    client: Path
    bundles: Path

    @classmethod
    def of(cls, root: Path) -> _HubPaths:
        pki_dir, sec = root / "pki", root / "security"
        return cls(
            pki_dir / "ca.crt",
            pki_dir / "ca.key",
            pki_dir / "hub.crt",
            pki_dir / "hub.key",
            sec / "nats-users.json",
            sec / "hub-client.json",
            root / "bundles",
        )

    def bundle(self, region: str) -> Path:
        return self.bundles / f"{region}.json"


@dataclass(frozen=True, slots=True)
class _NodePaths:
    hub_link: Path
    client: Path
    hub_ca: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, root: Path) -> _NodePaths:
        pki_dir, sec = root / "pki", root / "security"
        return cls(
            sec / "hub-link.json",
            sec / "node-client.json",
            pki_dir / "hub-ca.crt",
            pki_dir / "ca.crt",
            pki_dir / "ca.key",
            pki_dir / "node.crt",
            pki_dir / "node.key",
        )


# --- helpers -------------------------------------------------------------------------------


def new_password() -> str:
    """A fresh random password: 32 bytes, URL-safe base64 (safe inside a leaf remote URL)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """A bcrypt hash of ``password`` that nats-server checks (``$2b$``)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def check_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches the bcrypt ``password_hash``."""
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:
        return False


def _split_hosts(hostnames: Sequence[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for name in hostnames:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return dns, ips


def _write_json(path: Path, value: object) -> None:
    try:
        pki.write_private_file(path, msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    except pki.PKIFileError as exc:
        raise ProvisioningError(path, exc.problem) from exc


def _read_private(path: Path) -> bytes:
    """Read a secret file, refusing one that other users may read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(path, "is missing; run the init again to recreate it") from None
    except OSError as exc:
        raise ProvisioningError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisioningError(
            path, f"is accessible to other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    return data


def _decode(path: Path, data: bytes, kind: type[_S]) -> _S:
    try:
        value = msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        what = _FILE_KINDS.get(kind, kind.__name__)
        raise ProvisioningError(path, f"is not a valid {what} file: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProvisioningError(path, f"is not JSON: {exc}") from None
    version = getattr(value, "version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ProvisioningError(path, f"has format version {version}; this build reads {FORMAT_VERSION}")
    return value


def _ensure_ca(cert: Path, key: Path, name: str, written: list[Path]) -> pki.CertKey:
    if cert.exists() or key.exists():
        try:
            return pki.load_cert_key(cert, key)
        except pki.PKIFileError as exc:
            raise ProvisioningError(exc.path, exc.problem) from exc
    ca = pki.make_ca(name)
    _store(ca, cert, key)
    written += [cert, key]
    return ca


def _store(ck: pki.CertKey, cert: Path, key: Path) -> None:
    try:
        pki.write_cert_key(ck, cert, key)
    except pki.PKIFileError as exc:
        raise ProvisioningError(exc.path, exc.problem) from exc


def _ensure_server_cert(
    ca: pki.CertKey, cert: Path, key: Path, name: str, hostnames: Sequence[str], written: list[Path]
) -> None:
    """Keep a server cert that ``ca`` signed, covers ``hostnames`` and is not about to expire."""
    dns, ips = _split_hosts(hostnames)
    if cert.exists() and key.exists():
        try:
            current = pki.load_cert_key(cert, key)
        except pki.PKIFileError as exc:
            raise ProvisioningError(exc.path, exc.problem) from exc
        if pki.is_issued_by(current.cert, ca.cert) and _covers(current, dns, ips):
            return
    try:
        issued = pki.issue(ca, name, dns_names=dns, ip_addresses=ips, server=True, client=False)
    except pki.CertificateRequestError as exc:
        raise ProvisioningError(cert, f"cannot issue a server certificate: {exc}") from exc
    _store(issued, cert, key)
    written += [cert, key]


def _covers(ck: pki.CertKey, dns: list[str], ips: list[str]) -> bool:
    now = datetime.datetime.now(datetime.UTC)
    if ck.cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    return set(dns) | set(ips) <= pki.subject_alt_names(ck.cert)


def _check_region(region: str, where: Path) -> str:
    try:
        subjects.check_token(region, "region")
    except subjects.SubjectTokenError as exc:
        raise ProvisioningError(where, str(exc)) from None
    if not _REGION.fullmatch(region):
        raise ProvisioningError(where, f"region {region!r} must be 1 to 64 of A-Z a-z 0-9 _ -")
    return region


# --- hub -----------------------------------------------------------------------------------


def init_hub(
    hub_dir: Path,
    regions: Sequence[str],
    *,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    bcrypt_rounds: int = BCRYPT_ROUNDS,
) -> HubProvisioning:
    """Create or complete the hub's CA, server certificate, users and region bundles.

    Args:
        hub_dir: the hub's data directory.
        regions: regions to provision; ones already provisioned are kept as they are.
        hostnames: names and IP addresses nodes use to reach the hub (the server certificate's SANs).
        bcrypt_rounds: bcrypt cost of new password hashes (tests lower it).

    Raises:
        ProvisioningError: a region name is unusable (not a subject token or
            not a safe file name), or an existing file is unreadable,
            malformed or unsafe.
    """
    for region in regions:
        _check_region(region, hub_dir)
    if not hostnames:
        raise ProvisioningError(hub_dir, "needs at least one hub host name for the server certificate")
    paths = _HubPaths.of(hub_dir)
    written: list[Path] = []
    ca = _ensure_ca(paths.ca_cert, paths.ca_key, "EdgeCare hub CA", written)
    _ensure_server_cert(ca, paths.cert, paths.key, "edgecare-hub", hostnames, written)

    users = original = _read_users_or_none(paths.users)
    client = (
        _decode(paths.client, _read_private(paths.client), _ClientFile) if paths.client.exists() else None
    )
    if users is None or client is None or not check_password(client.password, users.hub.password_hash):
        password = new_password()
        client = _ClientFile(FORMAT_VERSION, HUB_USER, password)
        hub = _UserHash(HUB_USER, hash_password(password, rounds=bcrypt_rounds))
        users = _UsersFile(FORMAT_VERSION, hub, users.regions if users is not None else {})
        _write_json(paths.client, client)
        written.append(paths.client)

    region_hashes = dict(users.regions)
    added: list[str] = []
    bundles: list[Path] = []
    ca_pem = ca.cert_pem().decode()
    for region in dict.fromkeys(regions):
        if region in region_hashes:
            continue
        password = new_password()
        user = region_user_name(region)
        bundle = _Bundle(FORMAT_VERSION, region, user, password, ca_pem, list(hostnames))
        _write_json(paths.bundle(region), bundle)  # before the hash: a crash leaves no unusable user
        region_hashes[region] = _UserHash(user, hash_password(password, rounds=bcrypt_rounds))
        added.append(region)
        bundles.append(paths.bundle(region))
    new_users = _UsersFile(FORMAT_VERSION, users.hub, region_hashes)
    if new_users != original:
        _write_json(paths.users, new_users)
        written.append(paths.users)
    return HubProvisioning(
        hub_dir=hub_dir,
        ca_cert=paths.ca_cert,
        server_cert=paths.cert,
        regions=tuple(sorted(region_hashes)),
        added_regions=tuple(added),
        bundles=tuple(bundles),
        written=tuple(written + bundles),
    )


def _read_users_or_none(path: Path) -> _UsersFile | None:
    if not path.exists():
        return None
    return _decode(path, _read_private(path), _UsersFile)


# --- node ----------------------------------------------------------------------------------


def init_node(
    node_dir: Path,
    *,
    region: str,
    bundle: Path,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    bcrypt_rounds: int = BCRYPT_ROUNDS,
) -> NodeProvisioning:
    """Install a region bundle and make the node's own CA, server certificate and local user.

    Args:
        node_dir: the node's data directory.
        region: the node's region; the bundle must be for it.
        bundle: the file :func:`init_hub` wrote for the region (copied from the hub).
        hostnames: names the node's own clients use to reach its nats-server.
        bcrypt_rounds: bcrypt cost of the local user's hash (tests lower it).

    Raises:
        BundleRegionError: the bundle is for another region.
        ProvisioningError: the bundle is missing or malformed, or the node was
            already linked to a hub for another region.
    """
    _check_region(region, node_dir)
    paths = _NodePaths.of(node_dir)
    offered = _decode(bundle, _read_bundle(bundle), _Bundle)
    if offered.region != region:
        raise BundleRegionError(bundle, expected=region, found=offered.region)
    if offered.user != region_user_name(region):
        raise ProvisioningError(bundle, f"names user {offered.user!r}, expected {region_user_name(region)!r}")
    pki.cert_from_pem(offered.ca_pem.encode(), bundle)
    if paths.hub_link.exists():
        current = _decode(paths.hub_link, _read_private(paths.hub_link), _Bundle)
        if current.region != region:
            raise ProvisioningError(
                paths.hub_link, f"links this node to region {current.region!r}, not {region!r}"
            )
    written: list[Path] = []
    _write_json(paths.hub_link, offered)
    _write_public(paths.hub_ca, offered.ca_pem.encode())
    written += [paths.hub_link, paths.hub_ca]
    ca = _ensure_ca(paths.ca_cert, paths.ca_key, f"EdgeCare node CA {region}", written)
    _ensure_server_cert(ca, paths.cert, paths.key, f"edgecare-node-{region}", hostnames, written)
    if not paths.client.exists():
        password = new_password()
        _write_json(
            paths.client,
            _ClientFile(FORMAT_VERSION, LOCAL_USER, password, hash_password(password, rounds=bcrypt_rounds)),
        )
        written.append(paths.client)
    return NodeProvisioning(
        node_dir=node_dir,
        region=region,
        hub_link=paths.hub_link,
        ca_cert=paths.ca_cert,
        server_cert=paths.cert,
        written=tuple(written),
    )


def _read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(path, "bundle not found; copy <hub>/bundles/<region>.json here") from None
    except OSError as exc:
        raise ProvisioningError(path, f"cannot be read: {exc.strerror or exc}") from exc


def _write_public(path: Path, data: bytes) -> None:
    try:
        pki.write_private_file(path, data)
        path.chmod(pki.CERT_FILE_MODE)
    except (pki.PKIFileError, OSError) as exc:
        raise ProvisioningError(path, f"cannot be written: {exc}") from exc
