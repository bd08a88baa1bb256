"""Administration of a node from its data directory, with the audit entries it owes.

Theory of operation
-------------------
Some administrative acts happen outside a running node's API: an operator
issues a role token (``edgecare node token``), rotates the region's
key-encryption key of a stopped node or lists its keys (``edgecare keys``).
They must leave the same evidence as the API would, so this module opens the
node's own audit log from the data directory, with the node's identity (which
signs the checkpoints), its id (``<dir>/node-id``) and its region
(``<dir>/region``): the files a node writes at its first start. A directory
without them never ran a node, so there is nothing to audit into.

Two :class:`AuditLog` objects on one file build one chain (each append links
to the stored head inside its transaction), so a token may be issued while the
node runs. A key store, however, caches its key-encryption key: rotating it
under a running node would leave the node wrapping new data keys under a KEK
that no longer exists, and data sealed under those keys would be lost at its
next start. :func:`ensure_stopped` therefore refuses when another process has
``keys.db`` open: in WAL mode every connection holds a shared lock on the
file as long as it is open, so an exclusive lock is available only when no
node uses it.

Key events are audited in the shape the running node's egress gives them
(``Egress.on_key_event``): ``{key_id, version, **detail}`` under the event's kind.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_node.egress import key_event_entry
from edge_node.errors import EdgeNodeError
from edge_node.node_security import open_audit_log
from security.audit_log import AuditLog, audit_db_path
from security.identity import KEY_FILE, NodeIdentity
from security.keys import KekRotation, KeyEvent, KeyInventory, keystore_path
from security.keystore import KeyStore

log = logging.getLogger(__name__)


class NodeNotStartedError(EdgeNodeError):
    """A data directory lacks a file a node writes when it first starts."""

    def __init__(self, data_dir: Path, missing: Path) -> None:
        self.data_dir, self.missing = data_dir, missing
        super().__init__(
            f"{data_dir} holds no started node: {missing} is missing; check --data-dir, "
            f"or start the node once with --data-dir {data_dir}"
        )


class NodeRunningError(EdgeNodeError):
    """The node of a data directory is running, and the operation needs it stopped."""

    def __init__(self, keys_path: Path, operation: str) -> None:
        self.keys_path, self.operation = keys_path, operation
        super().__init__(
            f"{keys_path} is in use by a running node; stop the node before {operation}, "
            "or use its API (POST /api/v1/keys/rotate) instead"
        )


@dataclass(frozen=True, slots=True)
class NodeDir:
    """The files of a started node, read from its data directory."""

    data_dir: Path
    node_id: str
    region: str

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / "identity"

    @property
    def keys_path(self) -> Path:
        return keystore_path(self.data_dir)

    @property
    def audit_path(self) -> Path:
        return audit_db_path(self.data_dir)


def read_node_dir(data_dir: Path, *, need_keys: bool = False) -> NodeDir:
    """The node id and region of the node that ran in ``data_dir``.

    Raises:
        NodeNotStartedError: naming the first missing file (the key store when
            ``need_keys``, then node id, region and identity key).
    """
    files = [data_dir / "node-id", data_dir / "region", data_dir / "identity" / KEY_FILE]
    if need_keys:
        files.insert(0, keystore_path(data_dir))
    for path in files:
        if not path.is_file():
            raise NodeNotStartedError(data_dir, path)
    node_id = (data_dir / "node-id").read_text(encoding="utf-8").strip()
    region = (data_dir / "region").read_text(encoding="utf-8").strip()
    return NodeDir(data_dir, node_id, region)


@contextlib.contextmanager
def opened_audit_log(node: NodeDir) -> Iterator[AuditLog]:
    """The node's audit log, open for appending, signed with the node's identity."""
    identity = NodeIdentity.load_or_create(node.identity_dir)
    audit = open_audit_log(node.data_dir, identity, node_id=node.node_id, region=node.region)
    with audit:
        yield audit


def inventory_json(inventory: KeyInventory) -> dict[str, object]:
    """The key inventory as JSON: versions, counts, fingerprints and tombstones; never key bytes."""
    return {
        "region": inventory.region,
        "location": inventory.location,
        "kek_version": max((k.version for k in inventory.keks), default=None),
        "keks": [
            {"version": k.version, "created_at_ms": k.created_at_ms, "fingerprint": k.fingerprint_hex}
            for k in inventory.keks
        ],
        "data_keys_active": inventory.data_keys_active,
        "data_keys_shredded": inventory.data_keys_shredded,
        "shredded": [
            {"key_id": s.key_id, "shredded_at_ms": s.shredded_at_ms, "reason": s.reason}
            for s in inventory.shredded
        ],
        "pseudonym_key_fingerprint": inventory.pseudonym_key_fingerprint,
    }


def ensure_stopped(keys_path: Path, operation: str) -> None:
    """Return if no process has ``keys_path`` open; raise :class:`NodeRunningError` if one has.

    Holds the exclusive lock only for the check: a node starting right after it is not stopped.
    """
    probe = sqlite3.connect(keys_path, timeout=0, isolation_level=None)
    try:
        probe.execute("PRAGMA locking_mode = EXCLUSIVE")
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise NodeRunningError(keys_path, operation) from None
        raise
    finally:
        probe.close()


@contextlib.contextmanager
def _audited_keys(node: NodeDir) -> Iterator[KeyStore]:
    with opened_audit_log(node) as audit:

        def record(event: KeyEvent) -> None:
            audit.append(*key_event_entry(event))

        with KeyStore(node.keys_path, region=node.region, on_event=record) as keys:
            yield keys


def rotate_kek_offline(data_dir: Path) -> KekRotation:
    """Rotate the KEK of the stopped node in ``data_dir``; ``kek_rotated`` goes to its audit log.

    Raises:
        NodeNotStartedError: ``data_dir`` holds no started node or no key store.
        NodeRunningError: the node is running.
        KeyStoreError: the key store cannot be used (nothing changed).
    """
    node = read_node_dir(data_dir, need_keys=True)
    ensure_stopped(node.keys_path, "rotating its key-encryption key")
    with _audited_keys(node) as keys:
        return keys.rotate_kek(by=f"cli:{getpass.getuser()}")


def inventory_offline(data_dir: Path) -> KeyInventory:
    """The key inventory of the node in ``data_dir`` (running or not; it only reads).

    Raises:
        NodeNotStartedError: ``data_dir`` holds no started node or no key store.
        KeyStoreError: the key store cannot be used.
    """
    node = read_node_dir(data_dir, need_keys=True)
    with _audited_keys(node) as keys:
        return keys.inventory()


def audit_token_issued(data_dir: Path, *, role: str, name: str, expires_at: int | None) -> None:
    """Append a ``token_issued`` entry ``{role, name, expires_at}`` to the node's audit log.

    A no-op with a warning when no node ever started in ``data_dir`` (its audit
    log does not exist yet): the token is still valid, and the log has no chain to join.

    Raises:
        AuditLogUnavailableError, AuditLogOwnerError, IdentityError: the node's
            audit log or identity cannot be used.
    """
    try:
        node = read_node_dir(data_dir)
    except NodeNotStartedError as exc:
        log.warning("token for %s (%s) not audited: %s", name, role, exc)
        return
    if not node.audit_path.is_file():
        log.warning("token for %s (%s) not audited: %s has no audit log yet", name, role, data_dir)
        return
    body: Mapping[str, object] = {"role": str(role), "name": str(name), "expires_at": expires_at}
    with opened_audit_log(node) as audit:
        audit.append("token_issued", body)
