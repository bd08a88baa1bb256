"""The hub's own database (``hub.db``): enrolled nodes, tokens, policies and the compliance evidence.

Theory of operation
-------------------
Region data lives in one replica store per region; everything the hub knows
*about* the regions lives here, so it survives restarts and can be reported:

* ``nodes`` and ``enroll_tokens``: who may send, with which Ed25519 key, for
  which region (tokens are stored as SHA-256 of their secret only);
* ``policies``: every residency policy a node registered, with its version,
  so the report shows the history, not just the current forms;
* ``seen_frames``: nonces of accepted frames inside the replay window, so a
  replayed frame is refused after a hub restart too;
* ``refusals``, ``quarantine``, ``egress_received``: what was refused and
  why, the operations held back for breaking their region's policy (ids and
  field names only, never values), and what arrived by data class and form;
* ``checkpoints``, ``erasures``, ``key_inventories``: the latest signed
  audit checkpoint of every node (and every one received, to show forks),
  erasures the regions reported, and the key inventory metadata they publish
  (never key material: the hub holds no region's keys).

Writes are small and grouped per fetched message batch by the caller.
SQLite runs in WAL mode with ``synchronous=FULL``; one connection, one lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloud_hub.core.enrollment import TokenRecord
from cloud_hub.errors import HubError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, region TEXT NOT NULL, "
    "version TEXT NOT NULL, first_seen_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS enroll_tokens (token_id TEXT PRIMARY KEY, region TEXT NOT NULL, "
    "secret_hash BLOB NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, "
    "used_ms INTEGER, used_by TEXT, used_key BLOB)",
    "CREATE TABLE IF NOT EXISTS policies (node_id TEXT NOT NULL, region TEXT NOT NULL, "
    "version INTEGER NOT NULL, "
    "forms TEXT NOT NULL, registered_ms INTEGER NOT NULL, PRIMARY KEY (node_id, version))",
    "CREATE TABLE IF NOT EXISTS seen_frames (node_id TEXT NOT NULL, nonce BLOB NOT NULL, "
    "signed_at_ms INTEGER NOT NULL, delivery INTEGER, PRIMARY KEY (node_id, nonce))",
    "CREATE TABLE IF NOT EXISTS refusals (region TEXT NOT NULL, reason TEXT NOT NULL, day TEXT NOT NULL, "
    "count INTEGER NOT NULL, PRIMARY KEY (region, reason, day))",
    "CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY, region TEXT NOT NULL, "
    "node_id TEXT NOT NULL, "
    "seq INTEGER NOT NULL, entity TEXT NOT NULL, record_id TEXT NOT NULL, fields TEXT NOT NULL, "
    "problem TEXT NOT NULL, at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS egress_received (region TEXT NOT NULL, day TEXT NOT NULL, "
    "data_class TEXT NOT NULL, form TEXT NOT NULL, count INTEGER NOT NULL, "
    "PRIMARY KEY (region, day, data_class, form))",
    "CREATE TABLE IF NOT EXISTS checkpoints (node_id TEXT NOT NULL, region TEXT NOT NULL, "
    "size INTEGER NOT NULL, "
    "head TEXT NOT NULL, signed_at_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (node_id, size, head))",
    "CREATE TABLE IF NOT EXISTS erasures (node_id TEXT NOT NULL, region TEXT NOT NULL, key_id TEXT NOT NULL, "
    "at_ms INTEGER NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (node_id, key_id))",
    "CREATE TABLE IF NOT EXISTS key_inventories (node_id TEXT PRIMARY KEY, region TEXT NOT NULL, "
    "received_ms INTEGER NOT NULL, inventory TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS residency_floors (region TEXT NOT NULL, data_class TEXT NOT NULL, "
    "form TEXT NOT NULL, set_ms INTEGER NOT NULL, set_by TEXT NOT NULL, PRIMARY KEY (region, data_class))",
    "CREATE TABLE IF NOT EXISTS alarms (id INTEGER PRIMARY KEY, region TEXT NOT NULL, node_id TEXT NOT NULL, "
    "kind TEXT NOT NULL, detail TEXT NOT NULL, at_ms INTEGER NOT NULL)",
)
# Columns added to ``nodes`` after its first release (open registration by heartbeat).
_NODE_COLUMNS = (("public_key", "BLOB"), ("enrolled_ms", "INTEGER"))


class PolicyConflictError(HubError):
    """A node registered a policy version it had registered before with other forms."""

    def __init__(self, node_id: str, version: int) -> None:
        self.node_id, self.version = node_id, version
        super().__init__(
            f"node {node_id!r} registered residency policy v{version} before with other forms; "
            "a changed policy must get a new version"
        )


def day_of(ms: int) -> str:
    """The UTC calendar day of an epoch-ms instant, as the per-day tallies key it."""
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: str
    region: str
    version: str
    first_seen_ms: int
    public_key: bytes | None
    enrolled_ms: int | None


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    node_id: str
    region: str
    version: int
    forms: dict[str, str]
    registered_ms: int


@dataclass(frozen=True, slots=True)
class QuarantinedOp:
    region: str
    node_id: str
    seq: int
    entity: str
    record_id: str
    fields: tuple[str, ...]
    problem: str
    at_ms: int


class Registry:
    """``hub.db``: one connection, one lock, one transaction per call."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._lock = threading.Lock()
        with self._tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)
            have = {row[1] for row in c.execute("PRAGMA table_info(nodes)")}
            for name, kind in _NODE_COLUMNS:
                if name not in have:
                    c.execute(f"ALTER TABLE nodes ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- nodes and enrollment -----------------------------------------------------------

    def nodes(self) -> list[NodeRecord]:
        rows = self._rows(
            "SELECT node_id, region, version, first_seen_ms, public_key, enrolled_ms FROM nodes"
        )
        return [
            NodeRecord(str(n), str(r), str(v), int(str(f)), _bytes(k), None if e is None else int(str(e)))
            for n, r, v, f, k, e in rows
        ]

    def add_token(self, record: TokenRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO enroll_tokens VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL)",
                (record.token_id, record.region, record.secret_hash, record.created_ms, record.expires_ms),
            )

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._rows("SELECT * FROM enroll_tokens WHERE token_id = ?", (token_id,))
        if not rows:
            return None
        t, r, h, c, e, u, by, key = rows[0]
        return TokenRecord(
            str(t), str(r), _bytes(h) or b"", int(str(c)), int(str(e)),
            None if u is None else int(str(u)), None if by is None else str(by), _bytes(key),
        )  # fmt: skip

    def enroll(self, token_id: str, node: NodeRecord) -> None:
        """Use the token and register the node's key, in one transaction."""
        with self._tx() as c:
            c.execute(
                "UPDATE enroll_tokens SET used_ms = ?, used_by = ?, used_key = ? WHERE token_id = ?",
                (node.enrolled_ms, node.node_id, node.public_key, token_id),
            )
            c.execute(
                "INSERT INTO nodes (node_id, region, version, first_seen_ms, public_key, enrolled_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                "public_key = excluded.public_key, "
                "enrolled_ms = excluded.enrolled_ms, version = excluded.version",
                (
                    node.node_id,
                    node.region,
                    node.version,
                    node.first_seen_ms,
                    node.public_key,
                    node.enrolled_ms,
                ),
            )

    def tokens(self, region: str | None = None) -> list[TokenRecord]:
        where, params = ("WHERE region = ?", (region,)) if region else ("", ())
        ids = self._rows(f"SELECT token_id FROM enroll_tokens {where} ORDER BY created_ms", params)  # noqa: S608
        return [t for (token_id,) in ids if (t := self.token(str(token_id))) is not None]

    # --- policies -------------------------------------------------------------------------

    def register_policy(self, policy: PolicyRecord) -> bool:
        """Store a node's policy version; False if that version was known with the same forms.

        Raises:
            PolicyConflictError: the version is known with other forms (a version names one policy).
        """
        forms = json.dumps(policy.forms, sort_keys=True)
        with self._tx() as c:
            row = c.execute(
                "SELECT forms FROM policies WHERE node_id = ? AND version = ?",
                (policy.node_id, policy.version),
            ).fetchone()
            if row is not None:
                if json.loads(str(row[0])) != policy.forms:
                    raise PolicyConflictError(policy.node_id, policy.version)
                return False
            c.execute(
                "INSERT INTO policies VALUES (?, ?, ?, ?, ?)",
                (policy.node_id, policy.region, policy.version, forms, policy.registered_ms),
            )
            return True

    def policies(self, *, region: str | None = None, node_id: str | None = None) -> list[PolicyRecord]:
        clauses, params = _filters(region=region, node_id=node_id)
        rows = self._rows(f"SELECT * FROM policies {clauses} ORDER BY registered_ms, version", params)  # noqa: S608
        return [
            PolicyRecord(str(n), str(r), int(str(v)), json.loads(str(f)), int(str(t)))
            for n, r, v, f, t in rows
        ]

    # --- replay guard persistence ------------------------------------------------------------

    def seen_frames(self, since_ms: int) -> list[tuple[str, bytes, int, int | None]]:
        rows = self._rows("SELECT * FROM seen_frames WHERE signed_at_ms >= ?", (since_ms,))
        return [
            (str(n), _bytes(k) or b"", int(str(s)), None if d is None else int(str(d))) for n, k, s, d in rows
        ]

    def remember_frames(
        self, frames: Iterable[tuple[str, bytes, int, int | None]], *, prune_before_ms: int
    ) -> None:
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO seen_frames VALUES (?, ?, ?, ?)", list(frames))
            c.execute("DELETE FROM seen_frames WHERE signed_at_ms < ?", (prune_before_ms,))

    # --- evidence ---------------------------------------------------------------------------

    def record_batch(
        self,
        *,
        at_ms: int,
        refusals: Iterable[tuple[str, str]] = (),
        egress: Mapping[tuple[str, str, str], int] | None = None,
        quarantined: Iterable[QuarantinedOp] = (),
    ) -> None:
        """Refusals ``(region, reason)``, arrivals ``{(region, class, form): values}`` and quarantined ops."""
        day = day_of(at_ms)
        with self._tx() as c:
            c.executemany(
                "INSERT INTO refusals VALUES (?, ?, ?, 1) ON CONFLICT(region, reason, day) "
                "DO UPDATE SET count = count + 1",
                [(region, reason, day) for region, reason in refusals],
            )
            c.executemany(
                "INSERT INTO egress_received VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(region, day, data_class, form) "
                "DO UPDATE SET count = count + excluded.count",
                [(r, day, cls, form, n) for (r, cls, form), n in (egress or {}).items()],
            )
            c.executemany(
                "INSERT INTO quarantine (region, node_id, seq, entity, record_id, fields, problem, at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        q.region,
                        q.node_id,
                        q.seq,
                        q.entity,
                        q.record_id,
                        json.dumps(q.fields),
                        q.problem,
                        q.at_ms,
                    )
                    for q in quarantined
                ],
            )

    def refusals(
        self, *, region: str | None = None, since_day: str = "", until_day: str = "~"
    ) -> dict[str, int]:
        clauses, params = _filters(region=region)
        rows = self._rows(
            f"SELECT reason, sum(count) FROM refusals {clauses} {'AND' if clauses else 'WHERE'} "  # noqa: S608
            "day >= ? AND day <= ? GROUP BY reason",
            (*params, since_day, until_day),
        )
        return {str(r): int(str(n)) for r, n in rows}

    def egress_received(
        self, region: str, since_day: str = "", until_day: str = "~"
    ) -> dict[tuple[str, str], int]:
        rows = self._rows(
            "SELECT data_class, form, sum(count) FROM egress_received "
            "WHERE region = ? AND day >= ? AND day <= ? "
            "GROUP BY data_class, form",
            (region, since_day, until_day),
        )
        return {(str(c), str(f)): int(str(n)) for c, f, n in rows}

    def quarantine(
        self, *, region: str | None = None, since_ms: int = 0, until_ms: int = 2**62
    ) -> list[QuarantinedOp]:
        clauses, params = _filters(region=region)
        rows = self._rows(
            "SELECT region, node_id, seq, entity, record_id, fields, problem, at_ms FROM quarantine "  # noqa: S608
            f"{clauses} {'AND' if clauses else 'WHERE'} at_ms >= ? AND at_ms <= ? ORDER BY id",
            (*params, since_ms, until_ms),
        )
        return [
            QuarantinedOp(
                str(r), str(n), int(str(s)), str(e), str(i), tuple(json.loads(str(f))), str(p), int(str(t))
            )
            for r, n, s, e, i, f, p, t in rows
        ]

    def add_checkpoint(
        self, node_id: str, region: str, body: Mapping[str, object], *, received_ms: int
    ) -> None:
        size, head, signed_at = int(str(body["size"])), str(body["head"]), int(str(body["signed_at_ms"]))
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                (node_id, region, size, head, signed_at, received_ms, json.dumps(dict(body), sort_keys=True)),
            )

    def checkpoints(self, node_id: str) -> list[dict[str, object]]:
        rows = self._rows(
            "SELECT body FROM checkpoints WHERE node_id = ? ORDER BY size, signed_at_ms", (node_id,)
        )
        return [json.loads(str(b)) for (b,) in rows]

    def latest_checkpoints(self, region: str) -> dict[str, dict[str, object]]:
        rows = self._rows(
            "SELECT node_id, body FROM checkpoints c WHERE region = ? AND size = "
            "(SELECT max(size) FROM checkpoints d WHERE d.node_id = c.node_id) "
            "ORDER BY node_id, signed_at_ms",
            (region,),
        )
        return {str(n): json.loads(str(b)) for n, b in rows}

    def add_erasures(self, node_id: str, region: str, erasures: Iterable[Mapping[str, object]]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO erasures VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        node_id,
                        region,
                        str(e["key_id"]),
                        int(str(e["at_ms"])),
                        json.dumps(dict(e), sort_keys=True),
                    )
                    for e in erasures
                ],
            )

    def erasures(self, region: str, since_ms: int = 0, until_ms: int = 2**62) -> list[dict[str, object]]:
        rows = self._rows(
            "SELECT node_id, detail FROM erasures "
            "WHERE region = ? AND at_ms >= ? AND at_ms <= ? ORDER BY at_ms",
            (region, since_ms, until_ms),
        )
        return [{"node_id": str(n), **json.loads(str(d))} for n, d in rows]

    def set_key_inventory(
        self, node_id: str, region: str, inventory: Mapping[str, object], *, received_ms: int
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO key_inventories VALUES (?, ?, ?, ?)",
                (node_id, region, received_ms, json.dumps(dict(inventory), sort_keys=True)),
            )

    def key_inventories(self, region: str) -> dict[str, dict[str, object]]:
        rows = self._rows("SELECT node_id, inventory FROM key_inventories WHERE region = ?", (region,))
        return {str(n): json.loads(str(i)) for n, i in rows}

    def set_floor(self, region: str, forms: Mapping[str, str], *, by: str, at_ms: int) -> None:
        """Set the weakest form each named class may take in ``region`` (others keep theirs)."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO residency_floors VALUES (?, ?, ?, ?, ?) ON CONFLICT(region, data_class) "
                "DO UPDATE SET form = excluded.form, set_ms = excluded.set_ms, set_by = excluded.set_by",
                [(region, cls, form, at_ms, by) for cls, form in forms.items()],
            )

    def floor(self, region: str) -> dict[str, str]:
        """``{data class: weakest form}`` central ops set for ``region``; empty when none is set."""
        rows = self._rows("SELECT data_class, form FROM residency_floors WHERE region = ?", (region,))
        return {str(c): str(f) for c, f in rows}

    def raise_alarm(self, region: str, node_id: str, kind: str, detail: str, *, at_ms: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO alarms (region, node_id, kind, detail, at_ms) VALUES (?, ?, ?, ?, ?)",
                (region, node_id, kind, detail, at_ms),
            )

    def alarms(self, region: str) -> list[dict[str, object]]:
        rows = self._rows(
            "SELECT node_id, kind, detail, at_ms FROM alarms WHERE region = ? ORDER BY id", (region,)
        )
        return [
            {"node_id": str(n), "kind": str(k), "detail": str(d), "at_ms": int(str(t))} for n, k, d, t in rows
        ]


def _bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def _filters(**equal: str | None) -> tuple[str, tuple[str, ...]]:
    used = {k: v for k, v in equal.items() if v is not None}
    if not used:
        return "", ()
    return "WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())


__all__ = ["NodeRecord", "PolicyConflictError", "PolicyRecord", "QuarantinedOp", "Registry", "day_of"]
