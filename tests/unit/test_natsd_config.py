"""render_config and NatsServerConfig's TLS, user and leaf-credential options (pure: no server runs)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from security.pki import make_ca, write_cert_key
from sync.transport.natsd import (
    LeafRemoteTLS,
    NatsConfigError,
    NatsServer,
    NatsServerConfig,
    NatsUser,
    TLSFiles,
    client_tls_context,
    render_config,
)

HASH = "$2b$11$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012"
CERTS = Path("/etc/edgecare/pki")
TLS = TLSFiles(cert=CERTS / "hub.crt", key=CERTS / "hub.key", ca=CERTS / "ca.crt")


def block(text: str, opening: str) -> str:
    """The body of the first ``opening {`` block, nested blocks included."""
    start = text.index(opening + " {") + len(opening) + 2
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start : i - 1]


def region(name: str = "region-eu-de") -> NatsUser:
    return NatsUser(
        user=name,
        password=HASH,
        publish_allow=("ec.ops.eu-de.*", "$JS.hub.API.CONSUMER.INFO.EC_DOWN_eu-de.*"),
        subscribe_allow=("_INBOX.eu-de.>",),
        allowed_connection_types=("LEAFNODE",),
    )


def test_without_security_options_nothing_new_is_rendered(tmp_path: Path) -> None:
    text = render_config(NatsServerConfig(store_dir=tmp_path, leaf_listen=("127.0.0.1", 0)))

    for word in ("tls", "authorization", "users", "http", "password", "no_auth_user"):
        assert word not in text


def test_client_tls_block(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        store_dir=tmp_path, tls=TLSFiles(CERTS / "a.crt", CERTS / "a.key", handshake_first=True)
    )
    tls = block(render_config(cfg), "tls")

    assert '  cert_file: "/etc/edgecare/pki/a.crt"' in tls
    assert '  key_file: "/etc/edgecare/pki/a.key"' in tls
    assert 'min_version: "1.2"' in tls
    assert "handshake_first: true" in tls
    assert "timeout: 2.0" in tls
    assert "verify" not in tls
    assert "ca_file" not in tls


def test_client_tls_with_verify_checks_client_certs(tmp_path: Path) -> None:
    tls = block(
        render_config(
            NatsServerConfig(
                store_dir=tmp_path,
                tls=TLSFiles(CERTS / "hub.crt", CERTS / "hub.key", CERTS / "ca.crt", verify=True),
            )
        ),
        "tls",
    )

    assert "verify: true" in tls
    assert 'ca_file: "/etc/edgecare/pki/ca.crt"' in tls


def test_users_render_with_permissions_and_connection_types(tmp_path: Path) -> None:
    hub = NatsUser("edgecare-hub", "$2b$04$hub", (">",), (">",), ("STANDARD",))
    silent = NatsUser("silent", "plain", (), ("a.>",), ())
    text = render_config(NatsServerConfig(store_dir=tmp_path, users=(hub, region(), silent)))
    users = block(text, "authorization")

    lines = [line.strip() for line in users.splitlines() if line.strip().startswith("{user")]
    assert lines == [
        '{user: "edgecare-hub", password: "$2b$04$hub", permissions: {publish: {allow: [">"]}, '
        'subscribe: {allow: [">"]}}, allowed_connection_types: ["STANDARD"]}',
        f'{{user: "region-eu-de", password: "{HASH}", permissions: {{publish: {{allow: ["ec.ops.eu-de.*", '
        '"$JS.hub.API.CONSUMER.INFO.EC_DOWN_eu-de.*"]}, subscribe: {allow: ["_INBOX.eu-de.>"]}}, '
        'allowed_connection_types: ["LEAFNODE"]}',
        # an empty allow list would mean "anything" to nats-server: it becomes deny everything
        '{user: "silent", password: "plain", permissions: {publish: {deny: [">"]}, '
        'subscribe: {allow: ["a.>"]}}}',
    ]
    assert "no_auth_user" not in text


def test_hub_leaf_listener_gets_tls_but_no_authorization_of_its_own(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        store_dir=tmp_path, leaf_listen=("127.0.0.1", 0), leaf_tls=TLS, tls=TLS, users=(region(),)
    )
    leafnodes = block(render_config(cfg), "leafnodes")

    assert 'cert_file: "/etc/edgecare/pki/hub.crt"' in block(leafnodes, "tls")
    assert "authorization" not in leafnodes  # leaf links log in as the server-wide users
    assert "remotes" not in leafnodes


def test_leaf_remote_carries_escaped_credentials_and_tls(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        store_dir=tmp_path,
        leaf_remote="nats-leaf://hub.example:7422",
        leaf_remote_user="region-eu-de",
        leaf_remote_password="p@ss/w:rd",  # noqa: S106 - a test value with characters to escape
        leaf_remote_tls=LeafRemoteTLS(ca=CERTS / "hub-ca.crt", handshake_first=True),
    )
    leafnodes = block(render_config(cfg), "leafnodes")

    assert 'url: "nats-leaf://region-eu-de:p%40ss%2Fw%3Ard@hub.example:7422"' in leafnodes
    remote_tls = block(leafnodes, "tls")
    assert 'ca_file: "/etc/edgecare/pki/hub-ca.crt"' in remote_tls
    assert "handshake_first: true" in remote_tls
    assert "cert_file" not in remote_tls


def test_leaf_remote_client_certificate(tmp_path: Path) -> None:
    remote_tls = LeafRemoteTLS(ca=CERTS / "ca.crt", cert=CERTS / "n.crt", key=CERTS / "n.key")
    cfg = NatsServerConfig(store_dir=tmp_path, leaf_remote="tls://hub:7422", leaf_remote_tls=remote_tls)
    tls = block(block(render_config(cfg), "leafnodes"), "tls")

    assert 'cert_file: "/etc/edgecare/pki/n.crt"' in tls
    assert 'key_file: "/etc/edgecare/pki/n.key"' in tls


def test_monitor_port_renders_on_the_server_host(tmp_path: Path) -> None:
    v4 = render_config(NatsServerConfig(store_dir=tmp_path, monitor_port=0))
    v6 = render_config(NatsServerConfig(store_dir=tmp_path, host="::1", monitor_port=8222))

    assert 'http: "127.0.0.1:-1"' in v4
    assert 'http: "[::1]:8222"' in v6


def test_rendering_is_deterministic_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    cfg = NatsServerConfig(
        store_dir=tmp_path,
        users=(region(),),
        leaf_remote="nats-leaf://hub:7422",
        leaf_remote_user="region-eu-de",
        leaf_remote_password="hunter2-secret",  # noqa: S106 - must not show up in repr
    )

    assert render_config(cfg) == render_config(cfg)
    assert "hunter2-secret" not in repr(cfg)
    assert HASH not in repr(cfg)
    assert "region-eu-de" in repr(cfg)


def test_client_url_is_tls_when_the_listener_has_tls(tmp_path: Path) -> None:
    plain = NatsServer(NatsServerConfig(store_dir=tmp_path, port=4222))
    secured = NatsServer(NatsServerConfig(store_dir=tmp_path, port=4222, tls=TLS, monitor_port=8222))

    assert plain.client_url == "nats://127.0.0.1:4222"
    assert plain.monitor_url is None
    assert secured.client_url == "tls://127.0.0.1:4222"
    assert secured.monitor_url == "http://127.0.0.1:8222"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"leaf_tls": TLS}, "leaf_tls"),
        ({"leaf_remote_user": "u", "leaf_remote_password": "p"}, "leaf_remote_user"),
        ({"leaf_remote_tls": LeafRemoteTLS(ca=CERTS / "ca.crt")}, "leaf_remote_tls"),
        ({"leaf_remote": "nats-leaf://h:1", "leaf_remote_user": "u"}, "leaf_remote_user"),
        (
            {"leaf_remote": "nats-leaf://h:1", "leaf_remote_user": "", "leaf_remote_password": "p"},
            "leaf_remote_user",
        ),
        ({"leaf_remote": "nats-leaf://u:secret@h:1"}, "leaf_remote"),
        ({"users": (region(), region())}, "users"),
        ({"monitor_port": 70000}, "monitor_port"),
    ],
)
def test_config_refuses_inconsistent_security_options(
    tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(NatsConfigError) as info:
        NatsServerConfig(store_dir=tmp_path, **kwargs)  # type: ignore[arg-type]  # fields vary per case
    assert info.value.field == field
    assert "secret" not in str(info.value)


def test_a_bad_remote_url_is_reported_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(NatsConfigError, match=re.escape("http://***@h:1")) as info:
        NatsServerConfig(store_dir=tmp_path, leaf_remote="http://u:secret@h:1")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": ""}, "user"),
        ({"user": "a b"}, "user"),
        ({"password": ""}, "password of u"),
        ({"publish_allow": ("ec. ops",)}, "publish_allow of u"),
        ({"subscribe_allow": ("a..b",)}, "subscribe_allow of u"),
        ({"subscribe_allow": "a.>"}, "subscribe_allow of u"),
        ({"allowed_connection_types": ("LEAF",)}, "allowed_connection_types of u"),
    ],
)
def test_users_refuse_what_nats_server_would_misread(kwargs: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "user": "u",
        "password": "p",
        "publish_allow": (">",),
        "subscribe_allow": (">",),
        "allowed_connection_types": (),
    }
    with pytest.raises(NatsConfigError) as info:
        NatsUser(**(fields | kwargs))  # type: ignore[arg-type]  # fields vary per case
    assert info.value.field == field


def test_tls_options_refuse_half_configurations() -> None:
    with pytest.raises(NatsConfigError, match=r"tls\.verify"):
        TLSFiles(cert=CERTS / "a.crt", key=CERTS / "a.key", verify=True)
    with pytest.raises(NatsConfigError, match="both or neither"):
        LeafRemoteTLS(ca=CERTS / "ca.crt", cert=CERTS / "n.crt")


def test_password_hash_detection() -> None:
    assert region().password_is_hashed
    assert not NatsUser("u", "plain", (">",), (">",), ()).password_is_hashed


def test_client_tls_context_verifies_and_needs_tls_1_2(tmp_path: Path) -> None:
    write_cert_key(make_ca("ca"), tmp_path / "ca.crt", tmp_path / "ca.key")
    ctx = client_tls_context(tmp_path / "ca.crt")

    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    with pytest.raises(NatsConfigError, match="ca_file"):
        client_tls_context(tmp_path / "missing.crt")
    with pytest.raises(NatsConfigError, match="both or neither"):
        client_tls_context(tmp_path / "ca.crt", cert=tmp_path / "ca.crt")
    with pytest.raises(NatsConfigError, match="cannot be loaded with its key"):
        client_tls_context(tmp_path / "ca.crt", cert=tmp_path / "ca.crt", key=tmp_path / "missing.key")
