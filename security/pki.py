"""A small X.509 CA for EdgeCare's NATS links: make a CA, issue certificates, store and load them.

Theory of operation
-------------------
The hub owns one CA; it signs the server certificate its nats-server shows on
the client and leaf listeners, and every region receives the CA certificate so
its leaf link can check it talks to the real hub. Each node owns a second,
node-local CA for its own nats-server's client listener, so a node never needs
anything signed by the hub to serve its own processes.

Keys are ECDSA P-256: every TLS stack involved (Go's crypto/tls in
nats-server, OpenSSL behind Python's ``ssl``) accepts it, which is not yet
true of Ed25519 certificates everywhere. Certificates carry what Go's
verifier insists on: subject alternative names (Go ignores the common name
for host checks), the right extended key usage (serverAuth, clientAuth), and a
CA with ``BasicConstraints(ca=True, path_length=0)`` so it can sign leaves but
no intermediate CAs. ``not_valid_before`` is backdated a few minutes so a peer
whose clock runs slightly behind still accepts a fresh certificate.

Issuing is pure except for key generation, serial numbers and, unless the
caller passes ``now``, the clock. ``write_cert_key`` writes the key with mode
0600 into a 0700 directory, through a temporary file and a rename, so a crash
never leaves a half-written or world-readable key; ``load_cert_key`` checks the
key belongs to the certificate. Problems raise :class:`PKIFileError` naming the
path.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.errors import SecurityError

CA_VALID_DAYS: Final = 3650
LEAF_VALID_DAYS: Final = 825  # the longest validity browsers and Apple still accept for TLS leaves
BACKDATE: Final = datetime.timedelta(minutes=5)
KEY_FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
CERT_FILE_MODE: Final = 0o644


class PKIError(SecurityError):
    """Base for what this module refuses."""


class PKIFileError(PKIError):
    """A certificate or key file could not be read, parsed or written."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class CertificateRequestError(PKIError):
    """A certificate was asked for with values that cannot make a usable certificate."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field, self.value, self.rule = field, value, rule
        super().__init__(f"certificate {field}={value!r} {rule}")


@dataclass(frozen=True, slots=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (what nats-server and ``ssl`` load)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def common_name(self) -> str:
        return _common_name(self.cert)


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise CertificateRequestError("now", now, "must be timezone-aware")
    return now


def _check_days(valid_days: int) -> None:
    if valid_days < 1:
        raise CertificateRequestError("valid_days", valid_days, "must be at least 1")


def _check_name(common_name: str) -> None:
    if not common_name or len(common_name) > 64:  # RFC 5280 ub-common-name
        raise CertificateRequestError("common_name", common_name, "must be 1 to 64 characters")


def make_ca(
    common_name: str, *, valid_days: int = CA_VALID_DAYS, now: datetime.datetime | None = None
) -> CertKey:
    """A new self-signed CA that may sign leaf certificates (path length 0).

    Raises:
        CertificateRequestError: an empty or over-long name, or ``valid_days`` < 1.
    """
    _check_name(common_name)
    _check_days(valid_days)
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def issue(
    ca: CertKey,
    common_name: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool,
    client: bool,
    valid_days: int = LEAF_VALID_DAYS,
    now: datetime.datetime | None = None,
) -> CertKey:
    """A new key and a leaf certificate for it, signed by ``ca``.

    Args:
        ca: the issuing CA (from :func:`make_ca` or :func:`load_cert_key`).
        common_name: the subject's name; hosts go in ``dns_names``/``ip_addresses``.
        dns_names: host names the certificate is valid for (server certificates need one name at least).
        ip_addresses: IPv4/IPv6 literals the certificate is valid for.
        server: allow TLS server authentication (extended key usage serverAuth).
        client: allow TLS client authentication (clientAuth).
        valid_days: lifetime; it is cut to the CA's own expiry.
        now: the issue time (tests); default the current UTC time.

    Raises:
        CertificateRequestError: no usage, a server certificate without any
            host name, an unparsable IP address, or a bad name or lifetime.
    """
    _check_name(common_name)
    _check_days(valid_days)
    if not server and not client:
        raise CertificateRequestError("usage", "none", "needs server=True, client=True or both")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise CertificateRequestError(
            "ip_addresses", tuple(ip_addresses), f"holds a bad address: {exc}"
        ) from None
    if any(not name or name != name.strip() for name in dns_names):
        raise CertificateRequestError("dns_names", tuple(dns_names), "must not hold empty or padded names")
    if server and not dns_names and not ips:
        raise CertificateRequestError(
            "dns_names", (), "a server certificate needs a DNS name or an IP address to be verifiable"
        )
    start = _now(now)
    end = min(start + datetime.timedelta(days=valid_days), ca.cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 via a temporary file and a rename; dir made 0700.

    Raises:
        PKIFileError: the directory or file cannot be written.
    """
    try:
        _ensure_private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), KEY_FILE_MODE)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
    except OSError as exc:
        raise PKIFileError(path, f"cannot write: {exc.strerror or exc}") from exc


def _ensure_private_dir(folder: Path) -> None:
    existed = folder.is_dir()
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if not existed:
        folder.chmod(DIR_MODE)  # mkdir's mode is cut by the umask


def write_cert_key(ck: CertKey, cert_path: Path, key_path: Path) -> None:
    """Store ``ck``: the key 0600 (directory 0700), the certificate 0644, both PEM.

    Raises:
        PKIFileError: naming the file that could not be written.
    """
    write_private_file(key_path, ck.key_pem())
    write_private_file(cert_path, ck.cert_pem())
    try:
        cert_path.chmod(CERT_FILE_MODE)
    except OSError as exc:
        raise PKIFileError(cert_path, f"cannot set its mode: {exc.strerror or exc}") from exc


def load_cert(path: Path) -> x509.Certificate:
    """Read one PEM certificate (the first, if the file holds a chain).

    Raises:
        PKIFileError: the file is missing, unreadable or holds no PEM certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PKIFileError(path, f"cannot read the certificate: {exc.strerror or exc}") from exc
    return cert_from_pem(data, path)


def cert_from_pem(data: bytes, source: Path) -> x509.Certificate:
    """Parse PEM certificate bytes read from ``source`` (named in errors).

    Raises:
        PKIFileError: the bytes hold no PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError) as exc:
        raise PKIFileError(source, f"holds no PEM certificate ({exc})") from None


def load_cert_key(cert_path: Path, key_path: Path) -> CertKey:
    """Read a certificate and its P-256 key, checking that they belong together.

    Raises:
        PKIFileError: a file is missing or unreadable, the key is not an
            unencrypted P-256 key, or it does not match the certificate.
    """
    cert = load_cert(cert_path)
    try:
        key_data = key_path.read_bytes()
    except OSError as exc:
        raise PKIFileError(key_path, f"cannot read the private key: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIFileError(key_path, f"holds no unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PKIFileError(key_path, f"expected an EC P-256 private key, got {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise PKIFileError(key_path, f"the key does not belong to the certificate {cert_path}")
    return CertKey(cert, key)


def subject_alt_names(cert: x509.Certificate) -> frozenset[str]:
    """The DNS names and IP addresses (as text) a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return frozenset(san.get_values_for_type(x509.DNSName)) | ips


def is_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca``'s key signed ``cert`` (signature check only, no path or time checks)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
