"""The compliance report from the hub's vantage point, built from ``hub.db``.

Theory of operation
-------------------
The hub never sees a region's audit log or keys; what it holds is the evidence
nodes sent it and what it decided itself, all in :class:`cloud_hub.registry.Registry`:
the policies nodes registered, what arrived by data class and form (tallied per
UTC day), what it refused and held back, the signed audit checkpoints (checked
when received; forks and rollbacks raise alarms), the erasures nodes reported,
and their key inventories (fingerprints only).

The report also states that the hub holds none of the region's keys, with
evidence it can give about itself: it has no key store, and its data
directory (listed to two levels) holds no ``keys.db`` and no ``*.key`` file
except ``secrets/api-token.key``, the secret that signs the hub's own API
tokens, which protects no region data. The hub cannot verify a node's chain
(it has no entries), so the chain's verdict is ``None`` and the notes point
to ``edgecare audit verify`` on the node.

Per-day tallies (arrivals, refusals) cover whole UTC days: the notes name the
days actually counted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cloud_hub.registry import day_of
from cloud_hub.service import Hub, UnknownRegionError
from security.report import (
    MAX_QUARANTINE_ROWS,
    Alarm,
    Chain,
    CheckpointHead,
    ComplianceReport,
    EgressRow,
    Erasure,
    KeyCustody,
    KeyRow,
    Period,
    PolicyChange,
    PolicyInForce,
    Quarantine,
    QuarantinedOp,
    iso_utc,
)

HUB_OWN_SECRET: Final = "secrets/api-token.key"  # noqa: S105  # a path, not a password
HUB_OWN_SIGNING_KEY: Final = "identity/node.key"  # the hub's Ed25519 key that signs its central edits
HUB_OWN_KEYS: Final = frozenset({HUB_OWN_SECRET, HUB_OWN_SIGNING_KEY})
MAX_LISTED_FILES: Final = 200


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _hex(b64: object) -> str:
    try:
        return base64.b64decode(str(b64), validate=True).hex()
    except (binascii.Error, ValueError):
        return str(b64)


def _listing(directory: Path, prefix: str) -> list[tuple[str, Path]]:
    try:
        children = sorted(directory.iterdir())
    except OSError:  # removed or unreadable while listing (JetStream churns its files)
        return []
    return [(prefix + c.name + ("/" if c.is_dir() else ""), c) for c in children]


def hub_files(data_dir: Path) -> list[str]:
    """The hub data directory's entries, two levels deep, as relative POSIX paths (dirs end in /)."""
    names = []
    for name, path in _listing(data_dir, ""):
        names.append(name)
        if name.endswith("/"):
            names += [inner for inner, _ in _listing(path, name)]
    return names


def looks_like_key(name: str) -> bool:
    """Whether a listed file is named like a key store or key file (the hub's own two keys excepted)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return name not in HUB_OWN_KEYS and (base == "keys.db" or base.endswith(".key"))


def _custody(hub: Hub, region: str, inventories: Mapping[str, Mapping[str, object]]) -> KeyCustody:
    rows: list[KeyRow] = []
    for node, inv in sorted(inventories.items()):
        where = f"node {node}: {inv.get('location', '?')}"
        keks = inv.get("keks")
        for kek in keks if isinstance(keks, list) else []:
            if isinstance(kek, dict):
                rows.append(
                    KeyRow(
                        kind=f"region key-encryption key v{_int(kek.get('version'))}",
                        where=where,
                        count=1,
                        state="active",
                        fingerprint=str(kek.get("fingerprint_hex", "")),
                    )
                )
        active, shredded = _int(inv.get("data_keys_active")), _int(inv.get("data_keys_shredded"))
        rows.append(KeyRow(kind="customer data keys", where=where, count=active, state="active"))
        rows.append(KeyRow(kind="customer data keys", where=where, count=shredded, state="shredded"))
        pseudonym = inv.get("pseudonym_key_fingerprint")
        rows.append(
            KeyRow(
                kind="pseudonymisation key",
                where=where,
                count=1,
                state="active",
                fingerprint=None if pseudonym is None else str(pseudonym),
            )
        )
    enrolled = [n for n in hub.registry.nodes() if n.region == region and n.public_key is not None]
    if enrolled:
        rows.append(
            KeyRow(
                kind="node signing keys (public half only)", where="hub", count=len(enrolled), state="active"
            )
        )
    files = hub_files(hub.data_dir)
    suspicious = [f for f in files if looks_like_key(f)]
    listed = ", ".join(files[:MAX_LISTED_FILES]) + (" ..." if len(files) > MAX_LISTED_FILES else "")
    if suspicious:
        evidence = (
            f"The hub's data directory holds files named like keys: {', '.join(suspicious)}. "
            "Find out how they got there, and remove them if they are a region's keys."
        )
    else:
        evidence = (
            f"The hub has no key store: its data directory {hub.data_dir} holds {listed}; none is a key "
            f"store (keys.db) or a key file, apart from the hub's own: {HUB_OWN_SECRET}, the secret that "
            f"signs its API tokens, and {HUB_OWN_SIGNING_KEY}, the key that signs its central edits; "
            "neither is a region key. The nodes' keys listed are what the nodes report about their own "
            "key stores: fingerprints, never keys."
        )
    return KeyCustody(rows=tuple(rows), hub_holds_region_keys=bool(suspicious), evidence=evidence)


def _shredded_ids(inventory: Mapping[str, object] | None) -> set[str] | None:
    if inventory is None:
        return None
    raw = inventory.get("shredded")
    items = raw if isinstance(raw, list) else []
    return {str(s[0]) for s in items if isinstance(s, list) and s}


def _erasures(
    hub: Hub, region: str, since_ms: int, until_ms: int, inventories: Mapping[str, Mapping[str, object]]
) -> tuple[Erasure, ...]:
    out = []
    for e in hub.registry.erasures(region, since_ms, until_ms - 1):
        node = str(e.get("node_id", ""))
        destroyed = _shredded_ids(inventories.get(node))
        key_id, customer = str(e.get("key_id", "")), e.get("customer_id")
        out.append(
            Erasure(
                customer_id=None if customer is None else str(customer),
                key_id=key_id,
                at=iso_utc(_int(e.get("at_ms"))),
                node=node,
                key_destroyed=None if destroyed is None else key_id in destroyed,
            )
        )
    return tuple(out)


def hub_report(
    hub: Hub, *, region: str, since_ms: int, until_ms: int, now_ms: int | None = None
) -> ComplianceReport:
    """The hub's report on ``region`` for ``since_ms <= t < until_ms`` (blocks on SQLite and the disk).

    Raises:
        UnknownRegionError: no node of ``region`` ever enrolled or reported.
    """
    if region not in hub.regions():
        raise UnknownRegionError(region, hub.regions())
    registry = hub.registry
    first_day, last_day = day_of(since_ms), day_of(until_ms - 1)
    policies = registry.policies(region=region)
    newest = {p.node_id: p for p in policies}  # ordered by registration time, so the last one wins
    inventories = registry.key_inventories(region)
    quarantined = registry.quarantine(region=region, since_ms=since_ms, until_ms=until_ms - 1)
    checkpoints = registry.latest_checkpoints(region)
    alarms = [a for a in registry.alarms(region) if since_ms <= _int(a.get("at_ms")) < until_ms]
    return ComplianceReport(
        region=region,
        source="hub",
        generated_at=iso_utc(hub.wall_ms() if now_ms is None else now_ms),
        period=Period(since=iso_utc(since_ms), until=iso_utc(until_ms)),
        policy_in_force=tuple(
            PolicyInForce(node=p.node_id, version=p.version, forms=p.forms, since=iso_utc(p.registered_ms))
            for p in sorted(newest.values(), key=lambda p: p.node_id)
        ),
        policy_history=tuple(
            PolicyChange(
                node=p.node_id, version=p.version, forms=p.forms, at=iso_utc(p.registered_ms), by="node"
            )
            for p in policies
        ),
        egress=tuple(
            EgressRow(data_class=c, form=f, values=n)
            for (c, f), n in sorted(registry.egress_received(region, first_day, last_day).items())
        ),
        totals=None,
        refusals=dict(
            sorted(registry.refusals(region=region, since_day=first_day, until_day=last_day).items())
        ),
        quarantined=Quarantine(
            count=len(quarantined),
            rows=tuple(
                QuarantinedOp(
                    node=q.node_id,
                    seq=q.seq,
                    entity=q.entity,
                    record_id=q.record_id,
                    fields=q.fields,
                    problem=q.problem,
                    at=iso_utc(q.at_ms),
                )
                for q in quarantined[:MAX_QUARANTINE_ROWS]
            ),
        ),
        key_custody=_custody(hub, region, inventories),
        key_events=(),
        erasures=_erasures(hub, region, since_ms, until_ms, inventories),
        chain=Chain(
            verified=None,
            entries=None,
            head=None,
            problems=(),
            checkpoints=tuple(
                CheckpointHead(
                    node=node,
                    size=_int(body.get("size")),
                    head=_hex(body.get("head")),
                    signed_at=iso_utc(_int(body.get("signed_at_ms"))),
                )
                for node, body in sorted(checkpoints.items())
            ),
        ),
        alarms=tuple(
            Alarm(
                node=str(a["node_id"]),
                kind=str(a["kind"]),
                detail=str(a["detail"]),
                at=iso_utc(_int(a["at_ms"])),
            )
            for a in alarms
        ),
        notes=(_floor_note(region, hub.registry.floor(region)), *_notes(first_day, last_day)),
    )


def _floor_note(region: str, floor: Mapping[str, str]) -> str:
    if not floor:
        return f"Central ops set no floor for {region}: the region's own policy decides every form."
    rules = ", ".join(f"{c} at least {f}" for c, f in sorted(floor.items()))
    return (
        f"Central ops' floor for {region}: {rules}. The hub refuses a node policy below it, and every "
        "batch made under one."
    )


def _notes(first_day: str, last_day: str) -> tuple[str, ...]:
    return (
        "Times are UTC; the period includes its start and excludes its end.",
        f"The hub counts arrivals and refusals per UTC day, so those figures cover the whole days "
        f"{first_day} to {last_day}.",
        "Counts are of field values the hub received and merged; values held back for breaking the "
        "policy are not in them.",
        "Sealed values stay readable to the region only; erasing a customer destroys the customer's key, "
        "which makes every copy unreadable, the hub's included.",
        "The hub keeps each node's signed checkpoints (checked when they arrive), not the audit record "
        "itself: run `edgecare audit verify --data-dir DIR` on the node, with the hub's checkpoint, to "
        "check the whole record.",
        "Policy versions are shown from when the hub registered them.",
    )


__all__ = [
    "HUB_OWN_KEYS",
    "HUB_OWN_SECRET",
    "HUB_OWN_SIGNING_KEY",
    "hub_files",
    "hub_report",
    "looks_like_key",
]
