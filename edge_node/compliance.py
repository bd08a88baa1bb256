"""The compliance report from a node's own records, read from its data directory only.

Theory of operation
-------------------
A compliance officer may be handed a node's data directory (or a backup of
it) with the node stopped, so :func:`node_report` needs nothing else: no
running process, no hub, no secrets beyond those in the directory. It reads

* the audit log (``audit/audit.db``) read-only, through its own SQLite
  connection with ``mode=ro``: ``egress_batch`` entries of the period give what
  left by data class and form, ``policy_changed`` entries the policy history
  (the newest is the policy in force, even if it was adopted before the
  period), ``erasure`` and key entries what was erased and which keys changed;
* the chain's verdict from :func:`security.audit_log.verify_data_dir`, which
  uses the node's public key only;
* the key inventory of ``keys/keys.db`` (counts and fingerprints, never key
  bytes). The key store is opened only if it exists, since opening creates
  keys in an empty directory.

What only the hub knows (refusals, quarantined operations, alarms) is left
``None`` in the report, and the notes say so.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_node.errors import EdgeNodeError
from security._primitives import fingerprint
from security.audit_chain import Checkpoint
from security.audit_log import (
    AuditLogUnavailableError,
    PublicKeyFileError,
    audit_db_path,
    read_public_key,
    verify_data_dir,
)
from security.keys import KeyInventory, keystore_path
from security.keystore import KeyStore
from security.report import (
    Chain,
    CheckpointHead,
    ComplianceReport,
    EgressRow,
    EgressTotals,
    Erasure,
    KeyCustody,
    KeyEventCount,
    KeyRow,
    Period,
    PolicyChange,
    PolicyInForce,
    iso_utc,
)

KEY_EVENTS: Final = {
    "kek_created": "region key-encryption key created",
    "kek_rotated": "region key-encryption key rotated (the old one destroyed)",
    "data_key_created": "customer data key created",
    "data_key_shredded": "customer data key destroyed",
    "pseudonym_key_created": "pseudonymisation key created",
}
_PERIOD_KINDS: Final = ("egress_batch", "erasure", *KEY_EVENTS)


class NodeReportError(EdgeNodeError):
    """The directory cannot give a node's report for the region asked; names both."""

    def __init__(self, data_dir: Path, problem: str) -> None:
        self.data_dir, self.problem = data_dir, problem
        super().__init__(f"cannot report on {data_dir}: {problem}")


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    at_ms: int
    kind: str
    body: Mapping[str, object]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _read_events(path: Path, since_ms: int, until_ms: int) -> tuple[dict[str, str], list[_Event]]:
    """The log's meta and the entries the report uses, through a read-only connection."""
    marks = ", ".join("?" for _ in _PERIOD_KINDS)
    sql = (
        "SELECT seq, at_ms, kind, body FROM entries WHERE kind = 'policy_changed' OR "  # noqa: S608
        f"(at_ms >= ? AND at_ms < ? AND kind IN ({marks})) ORDER BY seq"
    )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        raise AuditLogUnavailableError(path, str(exc)) from exc
    try:
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        rows = conn.execute(sql, (since_ms, until_ms, *_PERIOD_KINDS)).fetchall()
    except sqlite3.Error as exc:
        raise AuditLogUnavailableError(path, f"not a readable audit log ({exc})") from exc
    finally:
        conn.close()
    events = []
    for seq, at_ms, kind, text in rows:
        try:
            body = json.loads(str(text))
        except ValueError:  # an unreadable body; the chain verification reports it
            continue
        if isinstance(body, dict):
            events.append(_Event(_int(seq), _int(at_ms), str(kind), body))
    return meta, events


def _check_region(data_dir: Path, region: str, meta: Mapping[str, str]) -> None:
    region_file = data_dir / "region"
    stored = region_file.read_text(encoding="utf-8").strip() if region_file.is_file() else None
    for where, value in (("its region file", stored), ("its audit log", meta.get("region"))):
        if value is not None and value != region:
            raise NodeReportError(
                data_dir, f"{where} says region {value!r}, not {region!r}; pass --region {value}"
            )


def _forms(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _policies(
    node: str, events: Sequence[_Event]
) -> tuple[tuple[PolicyInForce, ...], tuple[PolicyChange, ...]]:
    changes = [e for e in events if e.kind == "policy_changed"]
    history = tuple(
        PolicyChange(
            node=node,
            version=_int(e.body.get("version")),
            forms=_forms(e.body.get("forms")),
            at=iso_utc(e.at_ms),
            by=str(e.body.get("by", "")),
        )
        for e in changes
    )
    if not history:
        return (), ()
    newest = history[-1]
    return (PolicyInForce(node=node, version=newest.version, forms=newest.forms, since=newest.at),), history


def _egress(events: Sequence[_Event]) -> tuple[tuple[EgressRow, ...], EgressTotals]:
    values: dict[tuple[str, str], int] = {}
    batches = ops = size = withheld = 0
    for e in events:
        if e.kind != "egress_batch":
            continue
        batches += 1
        ops += _int(e.body.get("ops"))
        size += _int(e.body.get("bytes"))
        withheld += _int(e.body.get("withheld"))
        raw = e.body.get("values")
        for key, count in raw.items() if isinstance(raw, dict) else ():
            data_class, _, form = str(key).partition(":")
            values[(data_class, form)] = values.get((data_class, form), 0) + _int(count)
    rows = tuple(EgressRow(data_class=c, form=f, values=n) for (c, f), n in sorted(values.items()))
    return rows, EgressTotals(batches=batches, ops=ops, bytes=size, withheld=withheld)


def _key_events(events: Sequence[_Event]) -> tuple[KeyEventCount, ...]:
    counts: dict[str, tuple[int, int]] = {}
    for e in events:
        if e.kind in KEY_EVENTS:
            n, _ = counts.get(e.kind, (0, 0))
            counts[e.kind] = (n + 1, e.at_ms)
    return tuple(
        KeyEventCount(event=KEY_EVENTS[kind], count=n, last_at=iso_utc(at))
        for kind, (n, at) in counts.items()
    )


def _inventory(data_dir: Path, region: str) -> KeyInventory | None:
    path = keystore_path(data_dir)
    if not path.is_file():
        return None
    with KeyStore(path, region=region) as keys:
        return keys.inventory()


def _node_public_key(data_dir: Path, given: bytes | None) -> bytes | None:
    if given is not None:
        return given
    try:
        return read_public_key(data_dir / "identity" / "node.pub")
    except PublicKeyFileError:  # only its row is left out; the chain verification needs a key anyway
        return None


def _custody(data_dir: Path, node: str, public: bytes | None, inventory: KeyInventory | None) -> KeyCustody:
    rows: list[KeyRow] = []
    where = f"node {node}"
    if public is not None:
        rows.append(
            KeyRow(
                kind="node signing key (Ed25519)",
                where=f"{where}: {data_dir / 'identity'}",
                count=1,
                state="active",
                fingerprint=fingerprint(public).hex(),
            )
        )
    if inventory is not None:
        at = f"{where}: {inventory.location}"
        rows += [
            KeyRow(
                kind=f"region key-encryption key v{k.version}",
                where=at,
                count=1,
                state="active",
                fingerprint=k.fingerprint_hex,
            )
            for k in inventory.keks
        ]
        rows += [
            KeyRow(
                kind="data keys (per customer, or per record without one)",
                where=at,
                count=inventory.data_keys_active,
                state="active",
            ),
            KeyRow(
                kind="data keys (per customer, or per record without one)",
                where=at,
                count=inventory.data_keys_shredded,
                state="shredded",
            ),
            KeyRow(
                kind="pseudonymisation key",
                where=at,
                count=1,
                state="active",
                fingerprint=inventory.pseudonym_key_fingerprint,
            ),
        ]
    evidence = (
        "This node creates its keys in its own key store and sends the hub their fingerprints only, "
        "never the keys; whether the hub's disk holds any key is shown in the hub's report."
        if inventory is not None
        else f"No key store was found at {keystore_path(data_dir)}."
    )
    return KeyCustody(rows=tuple(rows), hub_holds_region_keys=None, evidence=evidence)


def _erasures(node: str, events: Sequence[_Event], inventory: KeyInventory | None) -> tuple[Erasure, ...]:
    destroyed = None if inventory is None else {s.key_id for s in inventory.shredded}
    out = []
    for e in events:
        if e.kind != "erasure":
            continue
        key_id = str(e.body.get("key_id", ""))
        customer = e.body.get("customer_id")
        out.append(
            Erasure(
                customer_id=None if customer is None else str(customer),
                key_id=key_id,
                at=iso_utc(e.at_ms),
                node=node,
                key_destroyed=None if destroyed is None else key_id in destroyed,
            )
        )
    return tuple(out)


NOTES: Final = (
    "Times are UTC; the period includes its start and excludes its end.",
    "Counts are of field values as this node recorded them just before sending; a batch sent again "
    "after a lost connection is counted again.",
    "Sealed values stay readable to the region only; erasing a customer destroys the customer's key, "
    "which makes every copy unreadable, the hub's included.",
    "Backups taken before a key was destroyed still hold it; they are outside this report.",
    "Refused and held-back operations are counted at the hub; see the hub's report.",
)


def node_report(
    data_dir: Path,
    *,
    region: str,
    since_ms: int,
    until_ms: int,
    public_key: bytes | None = None,
    external: Sequence[Checkpoint] = (),
    now_ms: int | None = None,
) -> ComplianceReport:
    """The report of one node's data directory for ``since_ms <= t < until_ms``.

    Args:
        public_key: the node's raw Ed25519 key; ``identity/node.pub`` when None.
        external: the hub's checkpoints of this node, to catch a truncated log.
        now_ms: the report's time (the wall clock when None).

    Raises:
        NodeReportError: the directory is missing or belongs to another region.
        AuditLogMissingError, AuditLogUnavailableError, PublicKeyFileError:
            the audit log or the public key cannot be read.
        KeyStoreError: the key store exists but cannot be opened.
    """
    if not data_dir.is_dir():
        raise NodeReportError(data_dir, "it is not a directory; pass the node's --data-dir")
    chain = verify_data_dir(data_dir, public_key=public_key, external=external)  # raises if no log
    meta, events = _read_events(audit_db_path(data_dir), since_ms, until_ms)
    _check_region(data_dir, region, meta)
    node_file = data_dir / "node-id"
    node = meta.get("origin") or (
        node_file.read_text(encoding="utf-8").strip() if node_file.is_file() else "?"
    )
    inventory = _inventory(data_dir, region)
    in_force, history = _policies(node, events)
    egress, totals = _egress(events)
    heads = tuple(
        CheckpointHead(node=node, size=cp.size, head=cp.head.hex(), signed_at=iso_utc(cp.signed_at_ms))
        for cp in (chain.latest_checkpoint,)
        if cp is not None
    )
    return ComplianceReport(
        region=region,
        source="node",
        generated_at=iso_utc(time.time_ns() // 1_000_000 if now_ms is None else now_ms),
        period=Period(since=iso_utc(since_ms), until=iso_utc(until_ms)),
        policy_in_force=in_force,
        policy_history=history,
        egress=egress,
        totals=totals,
        refusals=None,
        quarantined=None,
        key_custody=_custody(data_dir, node, _node_public_key(data_dir, public_key), inventory),
        key_events=_key_events(events),
        erasures=_erasures(node, events, inventory),
        chain=Chain(
            verified=chain.ok,
            entries=chain.entries,
            head=chain.head.hex(),
            problems=tuple(p.message for p in chain.problems),
            checkpoints=heads,
        ),
        alarms=(),
        notes=NOTES,
    )


__all__ = ["KEY_EVENTS", "NodeReportError", "node_report"]
