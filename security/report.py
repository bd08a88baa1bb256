"""The compliance report a data-protection officer reads: the model, its verdict and its JSON.

Theory of operation
-------------------
A :class:`ComplianceReport` states, for one region and one period, what the
region's residency policy lets leave, what did leave (by data class and form),
what was refused or held back, who holds the keys, which customers were erased,
and whether the tamper-evident audit record is intact. It is built from one of
two vantage points (``source``): a node's own data directory
(``edge_node.compliance``) or the hub's registry (``cloud_hub.compliance``).
Each builder fills what it can know and leaves the rest ``None``; the notes say
in plain words where the other half of the evidence is.

This module is pure: builders pass every value (times included) in.
:func:`to_json` is the evidence (stable key order, read back by
:func:`from_json`); :mod:`security.report_render` turns a report into an HTML
page (``to_html``) or a terminal summary (``to_text``). :func:`findings`
decides the verdict banner, so the three renderings never disagree about
whether problems were found.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Final, Literal

import msgspec

from security.errors import SecurityError

MAX_QUARANTINE_ROWS: Final = 100


class ReportInputError(SecurityError):
    """A report parameter (a time, the period) cannot be used; names the parameter."""

    def __init__(self, parameter: str, value: object, problem: str) -> None:
        self.parameter, self.value, self.problem = parameter, value, problem
        super().__init__(f"{parameter} {value!r} {problem}")


class ReportFormatError(SecurityError):
    """Bytes that should hold a report in JSON do not."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"not a compliance report: {problem}")


class _Model(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Period(_Model, frozen=True):
    since: str
    until: str


class PolicyInForce(_Model, frozen=True):
    node: str
    version: int
    forms: dict[str, str]
    since: str | None


class PolicyChange(_Model, frozen=True):
    node: str
    version: int
    forms: dict[str, str]
    at: str
    by: str


class EgressRow(_Model, frozen=True):
    data_class: str
    form: str
    values: int


class EgressTotals(_Model, frozen=True):
    batches: int
    ops: int
    bytes: int
    withheld: int


class QuarantinedOp(_Model, frozen=True):
    node: str
    seq: int
    entity: str
    record_id: str
    fields: tuple[str, ...]
    problem: str
    at: str


class Quarantine(_Model, frozen=True):
    count: int
    rows: tuple[QuarantinedOp, ...]


class KeyRow(_Model, frozen=True):
    kind: str
    where: str
    count: int
    state: Literal["active", "shredded"]
    fingerprint: str | None = None


class KeyCustody(_Model, frozen=True):
    rows: tuple[KeyRow, ...]
    hub_holds_region_keys: bool | None
    evidence: str


class KeyEventCount(_Model, frozen=True):
    event: str
    count: int
    last_at: str


class Erasure(_Model, frozen=True):
    customer_id: str | None
    key_id: str
    at: str
    node: str
    key_destroyed: bool | None


class CheckpointHead(_Model, frozen=True):
    node: str
    size: int
    head: str
    signed_at: str


class Chain(_Model, frozen=True):
    verified: bool | None
    entries: int | None
    head: str | None
    problems: tuple[str, ...]
    checkpoints: tuple[CheckpointHead, ...]


class Alarm(_Model, frozen=True):
    node: str
    kind: str
    detail: str
    at: str


class ComplianceReport(_Model, frozen=True):
    """Everything the report states; ``None`` means "not known from this vantage point"."""

    region: str
    source: Literal["node", "hub"]
    generated_at: str
    period: Period
    policy_in_force: tuple[PolicyInForce, ...]
    policy_history: tuple[PolicyChange, ...]
    egress: tuple[EgressRow, ...]
    totals: EgressTotals | None
    refusals: dict[str, int] | None
    quarantined: Quarantine | None
    key_custody: KeyCustody
    key_events: tuple[KeyEventCount, ...]
    erasures: tuple[Erasure, ...]
    chain: Chain
    alarms: tuple[Alarm, ...]
    notes: tuple[str, ...]


# --- times ------------------------------------------------------------------------------------

_HINT: Final = "use a date (2026-11-01), a time with a zone (2026-11-01T10:00Z) or epoch milliseconds"
_MAX_MS: Final = 253402300799999  # 9999-12-31T23:59:59.999Z


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 in UTC with a ``Z``, as the JSON report carries times."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: str | int, *, parameter: str) -> int:
    """A report bound as epoch ms, from ``2026-11-01``, ``2026-11-01T10:00Z`` or epoch ms.

    A date means midnight UTC; a time must carry its zone (``Z`` or an offset),
    since a report about "10:00" in an unknown zone proves nothing.

    Raises:
        ReportInputError: naming ``parameter`` and the accepted forms.
    """
    if isinstance(value, bool):
        raise ReportInputError(parameter, value, f"is not a time; {_HINT}")
    if isinstance(value, int):
        ms = value
    else:
        text = value.strip()
        ms = int(text) if text.isdigit() else _parse_iso(text, parameter)
    if not 0 <= ms <= _MAX_MS:
        raise ReportInputError(parameter, value, "is outside the years 1970 to 9999")
    return ms


def _parse_iso(text: str, parameter: str) -> int:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReportInputError(parameter, text, f"is not a time; {_HINT}") from None
    if moment.tzinfo is None:
        raise ReportInputError(parameter, text, "has no time zone; add Z for UTC or an offset like +01:00")
    return round(moment.timestamp() * 1000)


def parse_period(since: str | int, until: str | int) -> tuple[int, int]:
    """Both bounds as epoch ms; the period includes ``since`` and excludes ``until``.

    Raises:
        ReportInputError: a bound is not a time, or ``until`` is not after ``since``.
    """
    since_ms = parse_instant(since, parameter="since")
    until_ms = parse_instant(until, parameter="until")
    if until_ms <= since_ms:
        raise ReportInputError("until", until, f"must be after since ({iso_utc(since_ms)})")
    return since_ms, until_ms


# --- verdict and serialisation -------------------------------------------------------------------


def findings(report: ComplianceReport) -> tuple[str, ...]:
    """The problems the verdict banner lists; empty means the evidence is intact."""
    found: list[str] = []
    if report.chain.verified is False:
        found.append(f"the audit record failed verification ({len(report.chain.problems)} problem(s))")
    if report.alarms:
        found.append(f"{len(report.alarms)} alarm(s) about a node's audit record (forked or rolled back)")
    if report.key_custody.hub_holds_region_keys:
        found.append("the hub holds files that look like region keys")
    if report.quarantined is not None and report.quarantined.count:
        found.append(f"{report.quarantined.count} operation(s) broke the residency policy and were held back")
    found += [
        f"erasure of {e.customer_id or e.key_id} is recorded but its key still exists"
        for e in report.erasures
        if e.key_destroyed is False
    ]
    return tuple(found)


def to_json(report: ComplianceReport) -> bytes:
    """The report as indented JSON with a stable key order (the machine-readable evidence)."""
    return msgspec.json.format(msgspec.json.encode(report, order="deterministic"), indent=2) + b"\n"


def from_json(data: bytes | str) -> ComplianceReport:
    """Read a report made by :func:`to_json` (e.g. fetched from the hub).

    Raises:
        ReportFormatError: the data is not JSON, or not a report of this version.
    """
    try:
        return msgspec.json.decode(data, type=ComplianceReport)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ReportFormatError(str(exc)) from None


__all__ = [
    "MAX_QUARANTINE_ROWS",
    "Alarm",
    "Chain",
    "CheckpointHead",
    "ComplianceReport",
    "EgressRow",
    "EgressTotals",
    "Erasure",
    "KeyCustody",
    "KeyEventCount",
    "KeyRow",
    "Period",
    "PolicyChange",
    "PolicyInForce",
    "Quarantine",
    "QuarantinedOp",
    "ReportFormatError",
    "ReportInputError",
    "findings",
    "from_json",
    "iso_utc",
    "parse_instant",
    "parse_period",
    "to_json",
]
