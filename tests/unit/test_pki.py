"""security.pki: the CA, issued certificates, their files, and that TLS stacks accept them."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from security.errors import SecurityError
from security.pki import (
    CertificateRequestError,
    CertKey,
    PKIFileError,
    is_issued_by,
    issue,
    load_cert,
    load_cert_key,
    make_ca,
    subject_alt_names,
    write_cert_key,
)
from sync.transport.natsd import client_tls_context

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> CertKey:
    return make_ca("test ca", now=NOW)


@pytest.fixture(scope="module")
def server(ca: CertKey) -> CertKey:
    return issue(ca, "hub", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True, client=False)


def test_ca_is_a_self_signed_p256_ca_that_signs_leaves_only(ca: CertKey) -> None:
    cert = ca.cert
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value

    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert usage.key_cert_sign
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert is_issued_by(cert, cert)
    assert ca.common_name == "test ca"
    assert cert.not_valid_before_utc == NOW - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=3650)


def test_issued_server_cert_names_its_hosts_and_chains_to_the_ca(ca: CertKey, server: CertKey) -> None:
    eku = server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    constraints = server.cert.extensions.get_extension_for_class(x509.BasicConstraints).value

    assert subject_alt_names(server.cert) == {"localhost", "127.0.0.1"}
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not constraints.ca
    assert server.cert.issuer == ca.cert.subject
    assert is_issued_by(server.cert, ca.cert)
    assert not is_issued_by(server.cert, make_ca("another ca").cert)


def test_client_usage_and_lifetime_capped_at_the_ca(ca: CertKey) -> None:
    both = issue(ca, "node", server=True, client=True, dns_names=["node"], valid_days=10**5, now=NOW)
    client_only = issue(ca, "client", server=False, client=True)

    eku = both.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert both.cert.not_valid_after_utc == ca.cert.not_valid_after_utc
    assert subject_alt_names(client_only.cert) == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"server": False, "client": False, "dns_names": ["a"]}, "usage"),
        ({"server": True, "client": False}, "dns_names"),
        ({"server": True, "client": False, "ip_addresses": ["300.1.1.1"]}, "ip_addresses"),
        ({"server": True, "client": False, "dns_names": [" padded"]}, "dns_names"),
        ({"server": True, "client": False, "dns_names": ["a"], "valid_days": 0}, "valid_days"),
        (
            {"server": True, "client": False, "dns_names": ["a"], "now": datetime.datetime(2026, 1, 1)},  # noqa: DTZ001 - the naive value under test
            "now",
        ),
    ],
)
def test_issue_refuses_unusable_requests(ca: CertKey, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(CertificateRequestError) as info:
        issue(ca, "x", **kwargs)  # type: ignore[arg-type]  # keyword sets vary per case
    assert info.value.field == field
    assert isinstance(info.value, SecurityError)


def test_make_ca_refuses_an_empty_name() -> None:
    with pytest.raises(CertificateRequestError, match="common_name"):
        make_ca("")


def test_files_round_trip_with_private_modes(tmp_path: Path, server: CertKey) -> None:
    cert_path, key_path = tmp_path / "pki" / "hub.crt", tmp_path / "pki" / "hub.key"

    write_cert_key(server, cert_path, key_path)
    loaded = load_cert_key(cert_path, key_path)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert loaded.cert == server.cert
    assert loaded.key_pem() == server.key_pem()
    assert load_cert(cert_path) == server.cert
    assert not list(key_path.parent.glob(".*.tmp"))
    write_cert_key(server, cert_path, key_path)  # overwriting keeps the modes
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_load_errors_name_the_file(tmp_path: Path, ca: CertKey, server: CertKey) -> None:
    write_cert_key(server, tmp_path / "s.crt", tmp_path / "s.key")
    write_cert_key(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    (tmp_path / "junk.crt").write_text("not pem")
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ed.key").write_bytes(ed_key)

    cases = [
        (tmp_path / "missing.crt", tmp_path / "s.key", "missing.crt", "cannot read the certificate"),
        (tmp_path / "junk.crt", tmp_path / "s.key", "junk.crt", "no PEM certificate"),
        (tmp_path / "s.crt", tmp_path / "missing.key", "missing.key", "cannot read the private key"),
        (tmp_path / "s.crt", tmp_path / "junk.crt", "junk.crt", "no unencrypted PEM private key"),
        (tmp_path / "s.crt", tmp_path / "ed.key", "ed.key", "P-256"),
        (tmp_path / "s.crt", tmp_path / "ca.key", "ca.key", "does not belong"),
    ]
    for cert_path, key_path, named, problem in cases:
        with pytest.raises(PKIFileError, match=problem) as info:
            load_cert_key(cert_path, key_path)
        assert info.value.path.name == named
        assert named in str(info.value)


def test_write_error_names_the_file(tmp_path: Path, server: CertKey) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PKIFileError, match="cannot write") as info:
        write_cert_key(server, blocker / "x.crt", blocker / "x.key")
    assert info.value.path == blocker / "x.key"


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> str:
    """Run a TLS handshake in memory; return the negotiated version."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", srv)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    version = client.version()
    assert version is not None
    return version


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_openssl_accepts_the_chain_for_each_san(
    tmp_path: Path, ca: CertKey, server: CertKey, hostname: str
) -> None:
    write_cert_key(server, tmp_path / "s.crt", tmp_path / "s.key")
    write_cert_key(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")

    assert _handshake(server_ctx, client_tls_context(tmp_path / "ca.crt"), hostname) == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_tls_context(tmp_path / "ca.crt"), "hub.example")
    other = make_ca("other")
    write_cert_key(other, tmp_path / "o.crt", tmp_path / "o.key")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_tls_context(tmp_path / "o.crt"), hostname)
