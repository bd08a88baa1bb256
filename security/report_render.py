"""The compliance report's renderings for people: an HTML page and a terminal summary.

Theory of operation
-------------------
:mod:`security.report` holds the model, the time parsing, the verdict
(:func:`~security.report.findings`) and the JSON evidence; this module only
formats a finished :class:`~security.report.ComplianceReport`. :func:`to_html`
is one self-contained page for a non-engineer (inline CSS, no scripts, every
value escaped); :func:`to_text` is a terminal summary. Both take their verdict
banner from :func:`~security.report.findings`, so they never disagree with each
other or with the JSON about whether problems were found. Times are shown as
people read them (:func:`readable`), data classes and forms with a plain-words
meaning (:data:`CLASS_MEANING`, :data:`FORM_MEANING`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from security.report import ComplianceReport, findings

CLASS_MEANING: Final = {
    "public": "Published material, such as knowledge articles.",
    "operational": "How the work runs: ticket status, times and queue figures; nobody's identity.",
    "personal": "Anything about a customer: name, number, address, and what they wrote or said.",
    "media": "Call recordings and transcripts.",
}
FORM_MEANING: Final = {
    "plain": "Leaves as it is: the hub can read it.",
    "sealed": "Leaves encrypted under a key only this region holds: the hub stores it but cannot read it.",
    "pseudonymised": "Leaves as a stand-in token: the hub can count and match it, but not tell whose it is.",
    "local": "Never leaves the region, not even encrypted.",
}


def readable(iso: str) -> str:
    """An ISO time as people read it: ``1 Nov 2026, 10:00:00 UTC`` (unparseable text unchanged)."""
    try:
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        return iso
    return f"{moment.day} {moment:%b %Y, %H:%M:%S} UTC"


# --- text ------------------------------------------------------------------------------------------


def _ordered(forms: dict[str, str]) -> list[tuple[str, str]]:
    """Data classes from the least to the most sensitive, unknown ones last."""
    rank = {c: i for i, c in enumerate(CLASS_MEANING)}
    return sorted(forms.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _forms(forms: dict[str, str]) -> str:
    return ", ".join(f"{c}={f}" for c, f in _ordered(forms))


def _yes_no(value: bool | None, unknown: str) -> str:
    return unknown if value is None else ("yes" if value else "no")


def to_text(report: ComplianceReport) -> str:
    """A short summary for a terminal."""
    found = findings(report)
    p, chain, custody = report.period, report.chain, report.key_custody
    lines = [
        f"data residency report for {report.region} ({report.source} view), generated {report.generated_at}",
        f"period: {p.since} to {p.until}",
        "verdict: evidence intact" if not found else "verdict: PROBLEMS FOUND: " + "; ".join(found),
    ]
    lines += [f"policy in force: {x.node} v{x.version}: {_forms(x.forms)}" for x in report.policy_in_force]
    lines += [f"left the region: {r.data_class} {r.form}: {r.values} values" for r in report.egress]
    if not report.egress:
        lines.append("left the region: nothing in this period")
    if (t := report.totals) is not None:
        lines.append(
            f"batches {t.batches}, operations {t.ops}, bytes {t.bytes}, values withheld {t.withheld}"
        )
    if report.refusals is None:
        lines.append("refused: counted at the hub (see the hub's report)")
    else:
        lines.append("refused: " + (", ".join(f"{k} {n}" for k, n in report.refusals.items()) or "none"))
    if report.quarantined is not None:
        lines.append(f"held back for breaking the policy: {report.quarantined.count}")
    lines.append(f"hub holds region keys: {_yes_no(custody.hub_holds_region_keys, 'not checked from here')}")
    lines += [f"key: {k.kind} at {k.where}: {k.count} {k.state}" for k in custody.rows]
    lines.append(f"erasures: {len(report.erasures)}")
    verdict = {True: "verified", False: "FAILED", None: "not verifiable from here"}[chain.verified]
    lines.append(
        f"audit record: {verdict}" + (f", {chain.entries} entries, head {chain.head}" if chain.head else "")
    )
    lines += [f"problem: {x}" for x in chain.problems]
    lines += [
        f"checkpoint: {c.node} size {c.size} head {c.head} signed {c.signed_at}" for c in chain.checkpoints
    ]
    lines += [f"alarm: {a.node} {a.kind}: {a.detail} ({a.at})" for a in report.alarms]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


# --- HTML ------------------------------------------------------------------------------------------

_CSS: Final = """
body{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f;
line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0}th,td{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.n{text-align:right}code{font-size:.85em;word-break:break-all}
.verdict{padding:1rem;border-radius:.4rem;font-size:1.15rem;font-weight:600}.ok{background:#dff3e3;color:#14532d;
border:2px solid #2e7d32}.bad{background:#fde2e1;color:#7f1d1d;border:2px solid #c62828}.muted{color:#666}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    body = [
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if isinstance(c, int) else f"<td>{_e(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    ]
    if not body:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _policy_section(report: ComplianceReport) -> list[str]:
    region = report.region
    out = [f"<h2>What may leave {_e(region)}</h2>"]
    for policy in report.policy_in_force:
        since = f", in force since {readable(policy.since)}" if policy.since else ""
        out.append(f"<p>Policy version {policy.version} on node {_e(policy.node)}{_e(since)}:</p>")
        rows = [(c, CLASS_MEANING.get(c, ""), f, FORM_MEANING.get(f, "")) for c, f in policy.forms.items()]
        out.append(_table(("Kind of data", "What it is", "May leave as", "What that means"), rows, ""))
    if not report.policy_in_force:
        out.append('<p class="muted">No residency policy is on record for this region.</p>')
    out.append("<h3>Policy history</h3>")
    history = [(readable(c.at), c.node, c.version, _forms(c.forms), c.by) for c in report.policy_history]
    out.append(_table(("When", "Node", "Version", "Rules", "Changed by"), history, "No policy changes."))
    return out


def _egress_section(report: ComplianceReport) -> list[str]:
    p = report.period
    out = [
        f"<h2>What left {_e(report.region)} between {_e(readable(p.since))} and {_e(readable(p.until))}</h2>"
    ]
    rows = [(r.data_class, r.form, r.values) for r in report.egress]
    out.append(_table(("Kind of data", "Left as", "Values"), rows, "Nothing left the region in this period."))
    if (t := report.totals) is not None:
        totals = [("Batches sent", t.batches), ("Changes sent", t.ops), ("Bytes sent", t.bytes),
                  ("Values held back (customer erased)", t.withheld)]  # fmt: skip
        out.append(_table(("What", "How many"), totals, ""))
    out.append("<h3>Refused by the hub</h3>")
    if report.refusals is None:
        out.append('<p class="muted">Refusals are counted at the hub; see the hub\'s report.</p>')
    else:
        refused = list(report.refusals.items())
        out.append(_table(("Reason", "Messages or changes refused"), refused, "Nothing was refused."))
    if (q := report.quarantined) is not None:
        out.append(f"<h3>Held back for breaking the policy ({q.count})</h3>")
        rows_q = [
            (readable(x.at), x.node, x.entity, x.record_id, ", ".join(x.fields), x.problem) for x in q.rows
        ]
        out.append(_table(("When", "Node", "Record type", "Record", "Fields", "Problem"), rows_q, "None."))
    return out


def _keys_section(report: ComplianceReport) -> list[str]:
    custody = report.key_custody
    holds = {True: "Yes", False: "No", None: "Not checked from this vantage point"}
    out = [
        "<h2>Who holds the keys</h2>",
        f"<p><strong>Does the hub hold any of {_e(report.region)}'s keys?</strong> "
        f"{_e(holds[custody.hub_holds_region_keys])}. {_e(custody.evidence)}</p>",
    ]
    rows = [(k.kind, k.where, k.count, k.state, k.fingerprint or "") for k in custody.rows]
    out.append(_table(("Key", "Where it is", "How many", "State", "Fingerprint"), rows, "No key inventory."))
    events = [(e.event, e.count, readable(e.last_at)) for e in report.key_events]
    if events:
        out.append(_table(("Key event in the period", "How many", "Last"), events, ""))
    return out


def _erasure_section(report: ComplianceReport) -> list[str]:
    destroyed = {True: "yes", False: "NO", None: "not known here"}
    rows = [
        (readable(e.at), e.customer_id or "", e.key_id, e.node, destroyed[e.key_destroyed])
        for e in report.erasures
    ]
    return [
        "<h2>Erasures</h2>",
        _table(("When", "Customer", "Key", "Node", "Key destroyed"), rows, "No erasures in this period."),
    ]


def _chain_section(report: ComplianceReport) -> list[str]:
    chain = report.chain
    verdict = {
        True: "Yes: every entry links to the one before and matches the signed checkpoints.",
        False: "No: the record was changed after it was written (details below).",
        None: "Not checked here: the hub keeps the signed checkpoints, not the record itself.",
    }[chain.verified]
    out = ["<h2>Is the record intact?</h2>", f"<p>{_e(verdict)}</p>"]
    if chain.head is not None:
        out.append(f"<p>Entries: {chain.entries}; latest entry hash: <code>{_e(chain.head)}</code></p>")
    out += [f'<p class="bad">{_e(x)}</p>' for x in chain.problems]
    heads = [(c.node, c.size, readable(c.signed_at), c.head) for c in chain.checkpoints]
    out.append(_table(("Node", "Entries covered", "Signed", "Head hash"), heads, "No signed checkpoint yet."))
    if report.alarms:
        alarms = [(readable(a.at), a.node, a.kind, a.detail) for a in report.alarms]
        out += ["<h3>Alarms</h3>", _table(("When", "Node", "Kind", "Detail"), alarms, "")]
    return out


def to_html(report: ComplianceReport) -> str:
    """One self-contained page (inline CSS, no scripts, every value escaped) for a non-engineer."""
    found = findings(report)
    banner = (
        '<div class="verdict ok">Evidence intact</div>'
        if not found
        else '<div class="verdict bad">Problems found: ' + _e("; ".join(found)) + "</div>"
    )
    vantage = "this region's node" if report.source == "node" else "the central hub"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data residency report: {_e(report.region)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Data residency report: {_e(report.region)}</h1>",
        f'<p class="muted">From the records of {_e(vantage)}, prepared {_e(readable(report.generated_at))}. '
        f"Period: {_e(readable(report.period.since))} up to {_e(readable(report.period.until))}.</p>",
        banner,
        *_policy_section(report),
        *_egress_section(report),
        *_keys_section(report),
        *_erasure_section(report),
        *_chain_section(report),
        "<h2>Limits and exceptions</h2><ul>",
        *(f"<li>{_e(n)}</li>" for n in report.notes),
        "</ul></body></html>",
    ]
    return "\n".join(parts) + "\n"


__all__ = [
    "CLASS_MEANING",
    "FORM_MEANING",
    "readable",
    "to_html",
    "to_text",
]
