"""The ``edgecare routing`` and ``edgecare staffing`` commands: trace replay and Erlang C.

Two typer apps, registered by ``edge_node.cli`` as ``routing`` and ``staffing``.
They parse options, call `edge_node.replay` and `edge_node.core.erlang`, and
print a table (rich) or JSON; bad input ends with ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_node.core.erlang import ErlangValueError, StaffingResult, agents_needed, offered_load
from edge_node.replay import QueueFigures, ReplayReport, TraceError, load_trace, replay
from edge_node.roster import RosterError, load_roster

routing_app = typer.Typer(help="Replay contact traces through the routing engine.", no_args_is_help=True)
staffing_app = typer.Typer(help="Staffing calculations: how many agents a queue needs.", no_args_is_help=True)

MAX_LOAD_ERLANGS = 1_000_000
_OPTION_OF = {
    "calls": "--calls",
    "period_s": "--period-s",
    "aht_s": "--aht-s",
    "target_s": "--target-s",
    "service_level": "--service-level",
    "max_occupancy": "--max-occupancy",
}


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@routing_app.callback()
def _routing() -> None:
    """Replay contact traces through the routing engine."""


@staffing_app.callback()
def _staffing() -> None:
    """Staffing calculations: how many agents a queue needs."""


# --- staffing erlang-c ---------------------------------------------------------------------


@staffing_app.command("erlang-c")
def erlang_c(
    calls: Annotated[float, typer.Option("--calls", help="Calls arriving per period.")],
    period_s: Annotated[
        float, typer.Option("--period-s", help="Length of the period, in seconds (1800: half an hour).")
    ],
    aht_s: Annotated[
        float, typer.Option("--aht-s", help="Average handle time (talk plus wrap-up), in seconds.")
    ],
    target_s: Annotated[
        float, typer.Option("--target-s", help="Answer-time target, in seconds (the 20 of 80/20).")
    ],
    service_level: Annotated[
        float, typer.Option("--service-level", help="Share of calls to answer within the target, in (0, 1).")
    ] = 0.8,
    max_occupancy: Annotated[
        float | None,
        typer.Option("--max-occupancy", help="Highest acceptable occupancy, in (0, 1]. [default: no cap]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the agents Erlang C says a queue needs, with P(wait), service level, ASA and occupancy.

    Erlang C models one queue of interchangeable agents, Poisson arrivals, exponential
    handle times and callers who never hang up.
    """
    try:
        load = offered_load(calls, period_s, aht_s)
        if load > MAX_LOAD_ERLANGS:  # the search walks N up one by one: keep it to a blink
            raise _fail(
                f"offered load {load:.0f} erlangs is beyond {MAX_LOAD_ERLANGS} erlangs; "
                "split the traffic (check --calls, --period-s and --aht-s)"
            )
        result = agents_needed(calls, period_s, aht_s, target_s, service_level, max_occupancy)
    except ErlangValueError as exc:
        option = _OPTION_OF.get(exc.what, exc.what)
        raise _fail(f"invalid value for {option}: {exc.value!r} {exc.reason}") from None
    if as_json:
        goal = {"service_level_goal": service_level, "max_occupancy": max_occupancy}
        typer.echo(json.dumps({**asdict(result), **goal}, indent=2))
        return
    table = Table(title="Erlang C staffing", show_header=False, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("calls", f"{_num(calls)} per {_num(period_s)} s")
    table.add_row("average handle time", f"{_num(aht_s)} s")
    table.add_row("offered load", f"{result.load_erlangs:.2f} erlangs")
    goal_text = f"{service_level * 100:g} % within {_num(target_s)} s"
    if max_occupancy is not None:
        goal_text += f", occupancy <= {max_occupancy * 100:g} %"
    table.add_row("goal", goal_text, end_section=True)
    for name, value in _staffing_rows(result):
        table.add_row(name, value)
    Console().print(table)


def _staffing_rows(result: StaffingResult) -> list[tuple[str, str]]:
    return [
        ("agents needed", str(result.agents)),
        ("P(wait)", f"{result.p_wait:.4f}"),
        ("service level", f"{result.service_level * 100:.2f} %"),
        ("ASA", f"{result.asa_s:.2f} s"),
        ("occupancy", f"{result.occupancy * 100:.2f} %"),
    ]


def _num(value: float) -> str:
    return f"{value:g}"


# --- routing replay ------------------------------------------------------------------------


@routing_app.command("replay")
def replay_command(
    trace: Annotated[
        Path,
        typer.Argument(
            help="CSV trace with a header: arrival_s, handle_s, channel, language, tier, inquiry_type, "
            "patience_s and optionally queue.",
            show_default=False,
        ),
    ],
    roster: Annotated[Path, typer.Option("--roster", help="TOML roster of agents and queues (see deploy/).")],
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", help="Queue for contacts whose row names none. [default: the roster's only queue]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Run a contact trace through the routing engine in virtual time, beside Erlang C.

    Every roster agent logs in at t = 0 and accepts every offer at once; contacts hang up
    when their patience runs out before an offer. Prints service level, average speed of
    answer, abandon rate and occupancy per queue and overall, and the Erlang C prediction
    for the same traffic.
    """
    try:
        people = load_roster(roster)
        contacts = load_trace(trace)
        if queue is not None and queue not in {q.queue_id for q in people.queues}:
            known = ", ".join(q.queue_id for q in people.queues)
            raise _fail(f"invalid value for --queue: unknown queue {queue!r}; the roster has {known}")
        with _progress(len(contacts)) as on_progress:
            report = replay(
                contacts, people, default_queue=queue, source=f"trace {trace}", on_progress=on_progress
            )
    except (RosterError, TraceError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    _print_report(Console(), report)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr for long traces when stderr is a terminal; else nothing."""
    if total < 10_000 or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def _print_report(console: Console, report: ReplayReport) -> None:
    """Figures as rows and queues as columns, each replay figure beside its Erlang C prediction."""
    cols = [*report.queues, report.overall]
    table = Table(
        title=(
            f"Replay of {report.contacts} contacts with {report.agents} agents, arrivals over "
            f"{report.window_s:.0f} s, beside Erlang C for the same traffic"
        ),
        title_justify="left",
    )
    table.add_column("")
    for col in cols:
        table.add_column(col.queue_id, justify="right")

    def row(label: str, cell: Callable[[QueueFigures], str], *, end: bool = False) -> None:
        table.add_row(label, *(cell(c) for c in cols), end_section=end)

    def predicted(figure: Callable[[StaffingResult], str]) -> Callable[[QueueFigures], str]:
        return lambda c: "-" if c.erlang is None else figure(c.erlang)

    row("contacts", lambda c: str(c.contacts))
    row("answered", lambda c: str(c.answered))
    row("abandoned", lambda c: str(c.abandoned))
    row("overflowed", lambda c: str(c.overflowed))
    row("callback offered", lambda c: str(c.callbacks_offered))
    row("refused (full)", lambda c: str(c.refused))
    row("never served", lambda c: str(c.unserved), end=True)
    row("service level within", lambda c: f"{c.service_level_s:g} s")
    row("  replay", lambda c: _pct(c.service_level))
    row("  Erlang C", predicted(lambda e: _pct(e.service_level)))
    row("ASA replay", lambda c: _secs(c.asa_s))
    row("  Erlang C", predicted(lambda e: _secs(e.asa_s)))
    row("occupancy replay", lambda c: _pct(c.occupancy))
    row("  Erlang C", predicted(lambda e: _pct(e.occupancy)))
    row("abandon rate replay", lambda c: _pct(c.abandon_rate), end=True)
    row("Erlang C agents", lambda c: str(c.agents))
    row("  AHT (+ wrap-up)", lambda c: _secs(c.aht_s))
    row("  load", predicted(lambda e: f"{e.load_erlangs:.2f} erl"))
    row("  P(wait)", predicted(lambda e: f"{e.p_wait:.4f}"))
    console.print(table)
    for col in cols:
        if col.erlang_note:
            console.print(f"Erlang C for {col.queue_id}: {col.erlang_note}")
    console.print(
        "Erlang C assumes one pool of interchangeable agents per queue (here: those holding its skill at the "
        "entry level; shared agents count in each queue), Poisson arrivals, exponential handle times and no "
        "abandons. Waits: per queue from entering it, overall from arrival."
    )


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 100:.2f} %"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
