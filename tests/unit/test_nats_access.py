"""security.nats_access (who may do what at the hub) and security.provisioning (the files behind it).

The permission tests match subjects the way nats-server does (``*`` one token,
``>`` one or more trailing tokens), so "region A's permissions never match a
subject of region B" is checked over the whole protocol, not by string search.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from security.errors import SecurityError
from security.links import load_hub_security, load_node_security
from security.nats_access import (
    HUB_USER,
    hub_user,
    local_user,
    region_jetstream_subjects,
    region_user,
    region_user_name,
)
from security.pki import is_issued_by, load_cert, subject_alt_names
from security.provisioning import (
    BundleRegionError,
    ProvisioningError,
    check_password,
    init_hub,
    init_node,
)
from sync import subjects
from sync.transport.natsd import NatsServerConfig

ROUNDS = 4  # bcrypt's minimum cost keeps these tests fast


def matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (with ``*`` and ``>``) matches the literal ``subject``."""
    p, s = pattern.split("."), subject.split(".")
    for i, part in enumerate(p):
        if part == ">":
            return len(s) > i
        if i >= len(s) or part not in ("*", s[i]):
            return False
    return len(p) == len(s)


def protocol(region: str, node: str = "n1", domain: str = "hub") -> dict[str, list[str]]:
    """Every subject a node of ``region`` publishes, and every one it must receive, at the hub."""
    stream, consumer = subjects.down_stream(region), subjects.down_consumer(node)
    api = f"$JS.{domain}.API"
    return {
        "publish": [
            subjects.ops_subject(region, node),
            subjects.heartbeat_subject(region, node),
            subjects.ack_subject(region, node),
            subjects.enroll_subject(region),
            subjects.policy_subject(region, node),
            subjects.audit_subject(region, node),
            f"{api}.CONSUMER.CREATE.{stream}.{consumer}.{subjects.down_subject(region)}",
            f"{api}.CONSUMER.CREATE.{stream}.{consumer}",
            f"{api}.CONSUMER.INFO.{stream}.{consumer}",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.1.5.5.1700000000000000000.0",
        ],
        "subscribe": [f"{subjects.inbox_prefix(region)}.abc.def", f"{subjects.inbox_prefix(region)}.x"],
    }


def test_matcher_follows_nats_rules() -> None:
    assert matches("a.*", "a.b")
    assert not matches("a.*", "a.b.c")
    assert matches("a.>", "a.b.c")
    assert not matches("a.>", "a")
    assert not matches("a.b", "a.b.c")


def test_region_user_allows_its_whole_protocol_as_a_leaf_only() -> None:
    user = region_user("eu-de", "$2b$04$hash")
    needed = protocol("eu-de")

    assert user.user == region_user_name("eu-de") == "region-eu-de"
    assert user.allowed_connection_types == ("LEAFNODE",)
    for subject in needed["publish"]:
        assert any(matches(p, subject) for p in user.publish_allow), subject
    for subject in needed["subscribe"]:
        assert any(matches(p, subject) for p in user.subscribe_allow), subject


@pytest.mark.parametrize(("mine", "theirs"), [("eu-de", "us-east"), ("us-east", "eu-de"), ("eu", "eu-de")])
def test_region_user_matches_nothing_of_another_region(mine: str, theirs: str) -> None:
    user = region_user(mine, "$2b$04$hash")
    foreign = protocol(theirs)
    foreign["publish"] += [subjects.down_subject(theirs), subjects.down_subject(mine)]  # the hub's to write
    foreign["subscribe"] += [subjects.down_subject(theirs), "_INBOX.abc", subjects.ops_subject(theirs, "n")]

    for subject in foreign["publish"]:
        assert not any(matches(p, subject) for p in user.publish_allow), subject
    for subject in foreign["subscribe"]:
        assert not any(matches(p, subject) for p in user.subscribe_allow), subject


def test_region_jetstream_access_is_consumers_of_its_own_stream_only() -> None:
    allowed = region_jetstream_subjects("eu-de")
    denied = [
        "$JS.hub.API.STREAM.CREATE.EC_DOWN_eu-de",
        "$JS.hub.API.STREAM.DELETE.EC_DOWN_eu-de",
        "$JS.hub.API.STREAM.PURGE.EC_DOWN_eu-de",
        "$JS.hub.API.STREAM.INFO.EC_OPS",
        "$JS.hub.API.CONSUMER.DELETE.EC_DOWN_eu-de.down-n1",
        "$JS.hub.API.CONSUMER.CREATE.EC_OPS.x",
        "$JS.hub.API.CONSUMER.CREATE.EC_DOWN_eu-de",  # an unnamed (ephemeral) consumer
        "$JS.hub.API.STREAM.NAMES",
        "$JS.API.CONSUMER.INFO.EC_DOWN_eu-de.down-n1",  # the hub's domain-less API
        "$JS.ACK.EC_OPS.c.1.1.1.1.0",
    ]

    assert all("EC_DOWN_eu-de" in subject for subject in allowed)
    for subject in denied:
        assert not any(matches(p, subject) for p in allowed), subject
    assert region_jetstream_subjects("eu-de", hub_domain="central")[0].startswith("$JS.central.API.")


def test_region_user_refuses_a_region_that_is_not_a_token() -> None:
    with pytest.raises(subjects.SubjectTokenError):
        region_user("eu.de", "$2b$04$hash")


def test_hub_and_local_users_may_do_everything_as_plain_clients() -> None:
    hub, local = hub_user("$2b$04$h"), local_user("edgecare-node", "$2b$04$l")

    assert (hub.user, hub.publish_allow, hub.subscribe_allow) == (HUB_USER, (">",), (">",))
    assert hub.allowed_connection_types == local.allowed_connection_types == ("STANDARD",)
    assert "$2b$04$h" not in repr(hub)


# -- provisioning ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_hub_writes_the_ca_certs_users_and_private_bundles(tmp_path: Path) -> None:
    prov = init_hub(
        tmp_path, ["eu-de", "us-east"], hostnames=("hub.example", "10.0.0.5"), bcrypt_rounds=ROUNDS
    )

    assert prov.regions == prov.added_regions == ("eu-de", "us-east")
    assert prov.bundles == (tmp_path / "bundles" / "eu-de.json", tmp_path / "bundles" / "us-east.json")
    for secret in ("pki/ca.key", "pki/hub.key", "security/nats-users.json", "security/hub-client.json"):
        assert _mode(tmp_path / secret) == 0o600, secret
    for bundle in prov.bundles:
        assert _mode(bundle) == 0o600
    hub_cert = load_cert(tmp_path / "pki" / "hub.crt")
    assert is_issued_by(hub_cert, load_cert(tmp_path / "pki" / "ca.crt"))
    assert subject_alt_names(hub_cert) == {"hub.example", "10.0.0.5"}

    users = json.loads((tmp_path / "security" / "nats-users.json").read_text())
    client = json.loads((tmp_path / "security" / "hub-client.json").read_text())
    bundle = json.loads(prov.bundles[0].read_text())
    assert set(bundle) == {"version", "region", "user", "password", "ca_pem", "hub_hostnames"}
    assert (bundle["region"], bundle["user"]) == ("eu-de", "region-eu-de")
    assert bundle["ca_pem"] == (tmp_path / "pki" / "ca.crt").read_text()
    assert bundle["hub_hostnames"] == ["hub.example", "10.0.0.5"]
    assert check_password(bundle["password"], users["regions"]["eu-de"]["password_hash"])
    assert not check_password(bundle["password"], users["regions"]["us-east"]["password_hash"])
    assert check_password(client["password"], users["hub"]["password_hash"])
    assert bundle["password"] not in (tmp_path / "security" / "nats-users.json").read_text()


def test_init_hub_again_adds_regions_and_keeps_everything_else(tmp_path: Path) -> None:
    first = init_hub(tmp_path, ["eu-de"], bcrypt_rounds=ROUNDS)
    kept = {p: p.read_bytes() for p in first.written}
    (tmp_path / "bundles" / "eu-de.json").unlink()  # moved to the region

    again = init_hub(tmp_path, ["eu-de", "us-east"], bcrypt_rounds=ROUNDS)
    idle = init_hub(tmp_path, ["eu-de", "us-east"], bcrypt_rounds=ROUNDS)

    assert again.added_regions == ("us-east",)
    assert again.regions == ("eu-de", "us-east")
    assert not (tmp_path / "bundles" / "eu-de.json").exists()  # a region's password is never re-issued
    for path, data in kept.items():
        if path.name != "nats-users.json" and path.parent.name != "bundles":
            assert path.read_bytes() == data, path
    users = json.loads((tmp_path / "security" / "nats-users.json").read_text())
    assert (
        users["regions"]["eu-de"]
        == json.loads(kept[tmp_path / "security" / "nats-users.json"])["regions"]["eu-de"]
    )
    assert (idle.added_regions, idle.written) == ((), ())


def test_init_hub_reissues_the_server_cert_for_new_hostnames_from_the_same_ca(tmp_path: Path) -> None:
    init_hub(tmp_path, ["eu-de"], bcrypt_rounds=ROUNDS)
    ca_before = (tmp_path / "pki" / "ca.crt").read_bytes()

    prov = init_hub(tmp_path, ["eu-de"], hostnames=("hub.example",), bcrypt_rounds=ROUNDS)

    assert (tmp_path / "pki" / "ca.crt").read_bytes() == ca_before
    assert tmp_path / "pki" / "hub.crt" in prov.written
    assert subject_alt_names(load_cert(tmp_path / "pki" / "hub.crt")) == {"hub.example"}


@pytest.mark.parametrize("region", ["eu.de", "a/b", ""])
def test_init_hub_refuses_bad_region_names(tmp_path: Path, region: str) -> None:
    with pytest.raises(ProvisioningError, match="region") as info:
        init_hub(tmp_path, [region], bcrypt_rounds=ROUNDS)
    assert isinstance(info.value, SecurityError)
    assert not (tmp_path / "bundles").exists()


def test_load_hub_security_builds_the_server_config_and_client_options(tmp_path: Path) -> None:
    assert load_hub_security(tmp_path) is None
    init_hub(tmp_path, ["eu-de", "us-east"], bcrypt_rounds=ROUNDS)

    sec = load_hub_security(tmp_path)

    assert sec is not None
    assert [u.user for u in sec.users] == [HUB_USER, "region-eu-de", "region-us-east"]
    assert sec.users[1] == region_user("eu-de", sec.users[1].password)
    assert sec.client_password not in repr(sec)
    cfg = sec.configure(NatsServerConfig(store_dir=tmp_path / "js", leaf_listen=("127.0.0.1", 0)))
    assert cfg.tls is not None
    assert cfg.leaf_tls == cfg.tls
    assert (cfg.tls.cert, cfg.tls.handshake_first) == (tmp_path / "pki" / "hub.crt", True)
    assert cfg.users == sec.users
    no_leaf = sec.configure(NatsServerConfig(store_dir=tmp_path / "js"))
    assert no_leaf.leaf_tls is None
    options = sec.connect_options()
    assert set(options) == {"user", "password", "tls", "tls_handshake_first"}
    assert (options["user"], options["password"]) == (HUB_USER, sec.client_password)


def test_load_hub_security_names_missing_and_unsafe_files(tmp_path: Path) -> None:
    init_hub(tmp_path, ["eu-de"], bcrypt_rounds=ROUNDS)
    client = tmp_path / "security" / "hub-client.json"

    client.chmod(0o644)
    with pytest.raises(ProvisioningError, match=r"accessible to other users \(mode 0644\)") as info:
        load_hub_security(tmp_path)
    assert info.value.path == client

    client.unlink()
    with pytest.raises(ProvisioningError, match="missing") as info:
        load_hub_security(tmp_path)
    assert info.value.path == client

    users = tmp_path / "security" / "nats-users.json"
    users.write_text('{"version": 1, "hub": {}}')
    users.chmod(0o600)
    with pytest.raises(ProvisioningError, match="not a valid nats users file") as info:
        load_hub_security(tmp_path)
    assert info.value.path == users


def _hub_with_bundle(tmp_path: Path) -> Path:
    init_hub(tmp_path / "hub", ["eu-de", "us-east"], bcrypt_rounds=ROUNDS)
    return tmp_path / "hub" / "bundles" / "eu-de.json"


def test_init_node_installs_the_bundle_and_makes_a_local_ca(tmp_path: Path) -> None:
    bundle = _hub_with_bundle(tmp_path)
    node = tmp_path / "node"
    assert load_node_security(node) is None

    prov = init_node(node, region="eu-de", bundle=bundle, bcrypt_rounds=ROUNDS)
    sec = load_node_security(node)

    assert prov.region == "eu-de"
    assert _mode(prov.hub_link) == _mode(node / "pki" / "node.key") == 0o600
    assert _mode(node / "security") == _mode(node / "pki") == 0o700
    assert json.loads(prov.hub_link.read_text()) == json.loads(bundle.read_text())
    assert (node / "pki" / "hub-ca.crt").read_bytes() == (tmp_path / "hub" / "pki" / "ca.crt").read_bytes()
    assert is_issued_by(load_cert(node / "pki" / "node.crt"), load_cert(node / "pki" / "ca.crt"))
    assert not is_issued_by(load_cert(node / "pki" / "node.crt"), load_cert(node / "pki" / "hub-ca.crt"))
    assert sec is not None
    assert (sec.region, sec.leaf_user) == ("eu-de", "region-eu-de")
    assert sec.leaf_password == json.loads(bundle.read_text())["password"]
    assert sec.leaf_password not in repr(sec)
    assert check_password(sec.local_password, sec.local_password_hash)


def test_node_security_configures_its_server_and_its_hub_link(tmp_path: Path) -> None:
    init_node(tmp_path / "node", region="eu-de", bundle=_hub_with_bundle(tmp_path), bcrypt_rounds=ROUNDS)
    sec = load_node_security(tmp_path / "node")
    assert sec is not None

    standalone = sec.configure(NatsServerConfig(store_dir=tmp_path / "js"))
    linked = sec.configure(NatsServerConfig(store_dir=tmp_path / "js", leaf_remote="nats-leaf://hub:7422"))
    options = sec.connect_options()

    assert standalone.tls is not None
    assert standalone.leaf_remote_user is None
    assert [u.user for u in standalone.users] == ["edgecare-node"]
    assert standalone.users[0].password == sec.local_password_hash
    assert (linked.leaf_remote_user, linked.leaf_remote_password) == ("region-eu-de", sec.leaf_password)
    assert linked.leaf_remote_tls is not None
    assert linked.leaf_remote_tls.ca == sec.hub_ca_file
    assert linked.leaf_remote_tls.handshake_first
    assert options["inbox_prefix"] == "_INBOX.eu-de"
    assert (options["user"], options["password"], options["tls_handshake_first"]) == (
        "edgecare-node",
        sec.local_password,
        True,
    )


def test_init_node_refuses_another_regions_bundle(tmp_path: Path) -> None:
    bundle = _hub_with_bundle(tmp_path)

    with pytest.raises(BundleRegionError, match="'eu-de', but this node is in region 'us-east'") as info:
        init_node(tmp_path / "node", region="us-east", bundle=bundle, bcrypt_rounds=ROUNDS)
    assert info.value.path == bundle
    assert not (tmp_path / "node").exists()


def test_init_node_is_idempotent_and_keeps_its_region(tmp_path: Path) -> None:
    bundle = _hub_with_bundle(tmp_path)
    node = tmp_path / "node"
    init_node(node, region="eu-de", bundle=bundle, bcrypt_rounds=ROUNDS)
    ca, client = (node / "pki" / "ca.crt").read_bytes(), (node / "security" / "node-client.json").read_bytes()

    again = init_node(node, region="eu-de", bundle=bundle, bcrypt_rounds=ROUNDS)

    assert (node / "pki" / "ca.crt").read_bytes() == ca
    assert (node / "security" / "node-client.json").read_bytes() == client
    assert node / "pki" / "ca.key" not in again.written
    us_bundle = tmp_path / "hub" / "bundles" / "us-east.json"
    with pytest.raises(ProvisioningError, match="links this node to region 'eu-de'"):
        init_node(node, region="us-east", bundle=us_bundle, bcrypt_rounds=ROUNDS)


def test_init_node_names_a_missing_or_broken_bundle(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="bundle not found") as info:
        init_node(tmp_path / "node", region="eu-de", bundle=tmp_path / "nope.json")
    assert info.value.path == tmp_path / "nope.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ProvisioningError, match="not JSON"):
        init_node(tmp_path / "node", region="eu-de", bundle=broken)
