"""State digests: one hash per (region, entity), to show that replicas converged.

Theory of operation
-------------------
Replicas that merged the same ops hold the same materialized rows, whatever
the order they merged them in (``sync.crdt``). A digest makes that checkable
without shipping the rows: :func:`digest` is SHA-256 over the canonical
encoding (``sync.wire.canonical``: type-tagged, self-delimiting, ints of any
size, floats by normalised IEEE-754 bits, sets and dict keys sorted) of every
``(record_id, fields)`` row, rows sorted by record id. Equal row sets give
equal digests in any order; any other difference (a value, a row more or less,
a renamed record) changes the digest, up to SHA-256 collisions.

Rows are what a replica shows: materialized field values in storage form
(``sync.crdt.materialize``: register values, sets as ``frozenset``, counter
sums) of *live* records (:func:`state_rows` builds them from CRDT states).
Both sides of a comparison must feed the same form; a store reading SQLite
must turn set columns back into frozensets first. A field whose value is None
counts as absent, because an SQLite row has every column while a CRDT state
has only the fields ever written. Floats follow ``sync.crdt``: every NaN is
one value, and -0.0 is 0.0.

To find *where* two replicas differ, :func:`bucket_digests` splits the rows
into buckets by a hash of the record id (a one-level Merkle tree) and
:func:`combine` hashes the bucket map; replicas exchange the bucket maps and
re-sync only the buckets that differ (:func:`differing_buckets`). Empty
buckets are left out, so equal row sets give equal maps. Both sides must use
the same bucket count.

The HTTP endpoint ``GET /api/v1/digests?region=R`` of both the node and the
hub answers :func:`digests_json`, and :func:`from_json` reads it back, so the
two share one shape::

    {"region": "R", "entities": {"ticket": {"count": 12, "digest": "9f2c..."}}}
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from sync.crdt import RecordState, is_live, materialize
from sync.errors import SyncError
from sync.wire import canonical

Row = tuple[str, Mapping[str, object]]

_ROWS_DOMAIN: Final = b"edgecare.digest.rows.v1\x00"
_BUCKETS_DOMAIN: Final = b"edgecare.digest.buckets.v1\x00"
DEFAULT_BUCKETS: Final = 256


class DigestError(SyncError):
    """Base for errors about digests."""


class DuplicateRecordError(DigestError):
    """Two rows of one digest have the same record id."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        super().__init__(f"record id {record_id!r} appears twice in one digest")


class DigestFormatError(DigestError):
    """A digest report body does not have the agreed shape."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"digest report {where}: {problem}")


def _row_bytes(record_id: str, fields: Mapping[str, object]) -> bytes:
    return canonical([record_id, {k: v for k, v in fields.items() if v is not None}])


def _encoded(rows: Iterable[Row]) -> list[tuple[str, bytes]]:
    encoded = sorted((record_id, _row_bytes(record_id, fields)) for record_id, fields in rows)
    for (a, _), (b, _) in itertools.pairwise(encoded):
        if a == b:
            raise DuplicateRecordError(a)
    return encoded


def _hash(encoded: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256(_ROWS_DOMAIN)
    for _, row in encoded:
        h.update(row)
    return h.hexdigest()


def digest(rows: Iterable[Row]) -> str:
    """SHA-256 (hex) of the rows of one (region, entity), in any order.

    Args:
        rows: ``(record_id, materialized fields)`` pairs, record ids unique.

    Raises:
        DuplicateRecordError: a record id appears twice.
        sync.wire.UnencodableValueError: a value is not in storage form.
    """
    return _hash(_encoded(rows))


EMPTY_DIGEST: Final = digest(())


def bucket_of(record_id: str, buckets: int = DEFAULT_BUCKETS) -> int:
    """The bucket a record id falls in: a hash of the id, modulo ``buckets``."""
    h = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") % buckets


def bucket_digests(rows: Iterable[Row], buckets: int = DEFAULT_BUCKETS) -> dict[int, str]:
    """The digest of each non-empty bucket of rows.

    Raises:
        ValueError: ``buckets`` is not positive.
        DuplicateRecordError: a record id appears twice.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be positive, got {buckets}")
    split: dict[int, list[tuple[str, bytes]]] = {}
    for record_id, row in _encoded(rows):
        split.setdefault(bucket_of(record_id, buckets), []).append((record_id, row))
    return {b: _hash(encoded) for b, encoded in sorted(split.items())}


def combine(buckets: Mapping[int, str]) -> str:
    """One hash over a bucket map (empty buckets, listed or not, count the same)."""
    kept = sorted((b, d) for b, d in buckets.items() if d != EMPTY_DIGEST)
    return hashlib.sha256(_BUCKETS_DOMAIN + canonical(kept)).hexdigest()


def differing_buckets(a: Mapping[int, str], b: Mapping[int, str]) -> set[int]:
    """The buckets whose digests differ between two bucket maps."""
    return {k for k in a.keys() | b.keys() if a.get(k, EMPTY_DIGEST) != b.get(k, EMPTY_DIGEST)}


def state_rows(states: Mapping[tuple[str, str], RecordState], entity: str) -> list[Row]:
    """The digest rows of one entity from CRDT states keyed by (entity, record id): live records only."""
    return [(rid, materialize(s)) for (e, rid), s in states.items() if e == entity and is_live(s)]


# --- reports ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestReport:
    """The digest of one (region, entity) and how many rows it covers."""

    region: str
    entity: str
    count: int
    digest: str


def report(region: str, entity: str, rows: Iterable[Row]) -> DigestReport:
    """Count and digest ``rows`` (consumed once) of one (region, entity)."""
    encoded = _encoded(rows)
    return DigestReport(region, entity, len(encoded), _hash(encoded))


def to_json(report: DigestReport) -> dict[str, object]:
    """One entity's entry of the digests body: ``{"count": n, "digest": hex}``."""
    return {"count": report.count, "digest": report.digest}


def digests_json(region: str, reports: Iterable[DigestReport]) -> dict[str, object]:
    """The body of ``GET /api/v1/digests?region=R``, entities in name order.

    Raises:
        DigestFormatError: a report is for another region, or an entity repeats.
    """
    entities: dict[str, object] = {}
    for r in sorted(reports, key=lambda r: r.entity):
        if r.region != region:
            raise DigestFormatError(f"entities.{r.entity}", f"is for region {r.region!r}, not {region!r}")
        if r.entity in entities:
            raise DigestFormatError(f"entities.{r.entity}", "appears twice")
        entities[r.entity] = to_json(r)
    return {"region": region, "entities": entities}


def from_json(body: object) -> tuple[DigestReport, ...]:
    """Read a :func:`digests_json` body (as decoded JSON) back into reports.

    Raises:
        DigestFormatError: naming the first key that is missing or ill-typed.
    """
    if not isinstance(body, Mapping):
        raise DigestFormatError("body", "expected an object")
    region, entities = body.get("region"), body.get("entities")
    if not isinstance(region, str):
        raise DigestFormatError("region", "expected a string")
    if not isinstance(entities, Mapping):
        raise DigestFormatError("entities", "expected an object")
    reports: list[DigestReport] = []
    for entity, entry in entities.items():
        where = f"entities.{entity}"
        if not isinstance(entry, Mapping):
            raise DigestFormatError(where, "expected an object")
        count, hexdigest = entry.get("count"), entry.get("digest")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise DigestFormatError(f"{where}.count", "expected a non-negative integer")
        if not isinstance(hexdigest, str) or len(hexdigest) != 64 or not _is_hex(hexdigest):
            raise DigestFormatError(f"{where}.digest", "expected 64 lowercase hex digits")
        reports.append(DigestReport(region, str(entity), count, hexdigest))
    return tuple(reports)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
