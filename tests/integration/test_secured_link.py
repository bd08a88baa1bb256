"""The secured link end to end: `edgecare init`, a TLS leaf with region credentials, and what crossed it.

Both halves are provisioned with the real CLI, the hub and a node run as real
processes, and every byte of the leaf link passes through a recording proxy.
The capture must hold no plaintext at all, not even the NATS protocol's own
words (the link is TLS from the first byte: handshake first), while the node's
data still arrives and converges at the hub.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.nodeproc import running_hub, running_node
from tests.integration.replication_harness import client, create_tickets, wait_converged
from tests.integration.wiretap import running_wiretap

REGION = "eu-de"
# What a plaintext NATS link always shows: the server's greeting, a client's hello,
# leaf interest and message frames.
PROTOCOL_WORDS = (b"INFO {", b"CONNECT {", b"LS+ ", b"LMSG ", b"PING\r\n", b"ec.ops.")


def edgecare(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge_node", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_initialised_link_carries_only_tls_and_still_replicates(tmp_path: Path) -> None:
    hub_dir, node_dir = tmp_path / "hub", tmp_path / "node"
    edgecare("init", "hub", "--data-dir", str(hub_dir), "--region", REGION)
    bundle = hub_dir / "bundles" / f"{REGION}.json"
    region_password = json.loads(bundle.read_text())["password"]
    edgecare("init", "node", "--data-dir", str(node_dir), "--region", REGION, "--bundle", str(bundle))

    canary = f"CANARY-{uuid.uuid4()}"
    with running_hub(hub_dir) as hub, running_wiretap(hub.leaf_url) as tap:
        assert hub.nats_url.startswith("tls://"), hub.nats_url
        with (
            running_node(node_dir, region=REGION, hub=tap.leaf_url, enroll=hub.enroll_token(REGION)) as node,
            client(node.url, node.token("agent")) as node_api,
            client(hub.url, hub.token()) as hub_api,
        ):
            ids = create_tickets(node_api, 3, prefix=canary)
            wait_converged(node_api, hub_api, REGION, timeout_s=30)
            fleet = hub_api.get("/api/v1/fleet").json()["nodes"]
            assert [n["region"] for n in fleet] == [REGION]
            assert all(hub_api.get(f"/api/v1/tickets/{REGION}/{i}").status_code == 200 for i in ids)
        sent, received = tap.to_target(), tap.from_target()

    assert len(sent) > 10_000, "the tap saw the link's traffic"
    assert len(received) > 1_000, "the tap saw the hub's answers"
    for word in (*PROTOCOL_WORDS, canary.encode(), region_password.encode()):
        assert word not in sent, f"{word!r} crossed the link in plaintext"
        assert word not in received, f"{word!r} came back over the link in plaintext"
    assert sent[:1] == b"\x16", "the link opens with a TLS handshake record, not a NATS greeting"

    # the hub's own configuration holds the region's password only as a bcrypt hash
    hub_files = b"".join(
        p.read_bytes() for p in hub_dir.rglob("*") if p.is_file() and "bundles" not in p.parts
    )
    assert region_password.encode() not in hub_files
    assert b"$2" in (hub_dir / "jetstream" / "nats.conf").read_bytes()
