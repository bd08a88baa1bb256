"""The node's security state, opened once at start: identity, keys, audit log and residency policy.

Everything is made on first run inside the data directory, with owner-only
permissions: ``identity/`` (the Ed25519 node key), ``keys/keys.db`` (the
region key-encryption key, data keys wrapped under it, the pseudonymisation
key) and ``audit/audit.db`` (the hash-chained log). The residency policy comes
from the config file; when its forms differ from the ones in force at the last
run, the node adopts the next policy version and audits the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from edge_node.config import NodeConfig
from edge_node.egress import POLICY_META_KEY, Egress, adopt_policy, policy_meta
from edge_node.store import Store
from security.audit_log import AuditLog
from security.identity import NodeIdentity
from security.keys import KeyEvent
from security.keystore import KeyStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NodeSecurity:
    """The opened pieces, closed together."""

    identity: NodeIdentity
    keys: KeyStore
    audit: AuditLog
    egress: Egress
    _stack: ExitStack

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_audit_log(
    data_dir: Path, identity: NodeIdentity, *, node_id: str, region: str, every: int = 64
) -> AuditLog:
    return AuditLog(
        data_dir / "audit" / "audit.db",
        origin=node_id,
        region=region,
        sign=identity.sign,
        fingerprint=identity.fingerprint,
        checkpoint_every=every,
    )


def _checkpoint_on_close(audit: AuditLog) -> None:
    """Sign the head on the way out, so every entry is covered by a signature when the node stops."""
    stats = audit.statistics()
    if stats.entries and stats.latest_checkpoint_size != stats.entries:
        audit.checkpoint()


async def open_node_security(config: NodeConfig, *, node_id: str, store: Store) -> NodeSecurity:
    """Open (or create) identity, keys and audit log; adopt the configured residency policy."""
    stack = ExitStack()
    try:
        identity = NodeIdentity.load_or_create(config.identity_dir)
        audit = open_audit_log(
            config.data_dir,
            identity,
            node_id=node_id,
            region=config.region,
            every=config.security.checkpoint_every,
        )
        audit.open()
        stack.callback(audit.close)
        stack.callback(_checkpoint_on_close, audit)
        pending_events: list[KeyEvent] = []
        sink: list[Callable[[Sequence[KeyEvent]], None]] = [pending_events.extend]
        keys = KeyStore(config.keys_path, region=config.region, on_events=lambda events: sink[0](events))
        keys.open()
        stack.callback(keys.close)
        stored = await store.read(lambda r: r.meta(POLICY_META_KEY))
        policy, change = adopt_policy(stored, config.residency.policy())
        egress = Egress(
            region=config.region, node_id=node_id, identity=identity, keys=keys, audit=audit, policy=policy
        )
        if pending_events:  # keys made on first open, before the egress existed
            egress.on_key_events(pending_events)
        sink[0] = egress.on_key_events
        if change is not None:
            audit.append("policy_changed", {**change, "by": "config"})
            await store.write(
                lambda tx: tx.set_meta(POLICY_META_KEY, policy_meta(policy)), actor="admin:config"
            )
            log.info("residency policy v%d in force: %s", policy.version, policy.as_dict())
        log.info(
            "node identity %s; %d audit entries; residency policy v%d",
            identity.fingerprint_hex,
            audit.statistics().entries,
            policy.version,
        )
        return NodeSecurity(identity, keys, audit, egress, stack)
    except BaseException:
        stack.close()
        raise
