"""Trace replay: the trace format, small hand-computed traces, and agreement with Erlang C."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from bench.routing import poisson_trace, sample_trace_text
from edge_node.core.erlang import staffing
from edge_node.core.routing import AgentProfile, Channel, QueueConfig, VipTier
from edge_node.replay import (
    REQUIRED_COLUMNS,
    QueueFigures,
    TraceContact,
    TraceError,
    load_trace,
    parse_trace,
    replay,
)
from edge_node.roster import Roster, load_roster

ROOT = Path(__file__).resolve().parents[2]
HEADER = ",".join(REQUIRED_COLUMNS)
VOICE = Channel.VOICE


def agent(agent_id: str, wrap_up_s: float | None = 0.0, **skills: int) -> AgentProfile:
    return AgentProfile(agent_id, skills or {"s": 3}, frozenset({"en"}), {VOICE: 1}, wrap_up_s)


def roster(*agents: AgentProfile, queues: tuple[QueueConfig, ...] = (QueueConfig("q", "s"),)) -> Roster:
    return Roster(agents, queues)


def row(
    arrival_s: float,
    handle_s: float,
    *,
    patience_s: float = math.inf,
    queue: str | None = None,
    language: str = "en",
) -> TraceContact:
    return TraceContact(0, arrival_s, handle_s, VOICE, language, patience_s=patience_s, queue=queue)


def figures(fig: QueueFigures) -> tuple[object, ...]:
    return (
        fig.contacts,
        fig.answered,
        fig.abandoned,
        fig.overflowed,
        fig.callbacks_offered,
        fig.refused,
        fig.unserved,
        fig.service_level,
        fig.asa_s,
        fig.abandon_rate,
    )


# --- the trace format ---------------------------------------------------------------------


def test_a_trace_parses_with_defaults_for_empty_cells() -> None:
    text = (
        "# a comment, then a blank line\n\n"
        "queue,patience_s,inquiry_type,tier,language,channel,handle_s,arrival_s\n"
        "billing,30,refund,gold,zh,chat,120.5,1.25\n"
        ",,,,,VOICE,60,2\n"
        ",inf,,standard,en,sms,1,3\n"
    )
    first, second, third = parse_trace(text)
    assert first == TraceContact(4, 1.25, 120.5, Channel.CHAT, "zh", VipTier.GOLD, "refund", 30.0, "billing")
    assert second == TraceContact(5, 2.0, 60.0, VOICE, None, VipTier.STANDARD, None, math.inf, None)
    assert (third.channel, third.patience_s) == (Channel.SMS, math.inf)


def test_the_queue_column_is_optional() -> None:
    (only,) = parse_trace(f"{HEADER}\n0,10,voice,en,standard,,\n")
    assert only.queue is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"^trace line 1: no header; the first line must name arrival_s, handle_s, "),
        ("# only a comment\n", r"^trace line 1: no header"),
        (
            "arrival_s,handle_s\n",
            r"^trace line 1, column channel: required column is missing from the header$",
        ),
        (f"{HEADER},colour\n", r"^trace line 1, column colour: unknown column; expected arrival_s, "),
        (f"{HEADER},handle_s\n", r"^trace line 1, column handle_s: column named twice$"),
        (f"{HEADER}\n0,10,voice,en\n", r"^trace line 2: expected 7 fields, got 4$"),
        (
            f"{HEADER}\n0,10,voice,en,,,\n\nx,10,voice,en,,,\n",
            r"^trace line 4, column arrival_s: must be a number ",
        ),
        (
            f"{HEADER}\n-1,10,voice,en,,,\n",
            r"^trace line 2, column arrival_s: must be a number of seconds >= 0, got '-1'$",
        ),
        (f"{HEADER}\ninf,10,voice,en,,,\n", r"^trace line 2, column arrival_s: "),
        (f"{HEADER}\nnan,10,voice,en,,,\n", r"^trace line 2, column arrival_s: "),
        (
            f"{HEADER}\n0,0,voice,en,,,\n",
            r"^trace line 2, column handle_s: must be a number of seconds above 0, got '0'$",
        ),
        (
            f"{HEADER}\n0,,voice,en,,,\n",
            r"^trace line 2, column handle_s: must be a number of seconds above 0, got ''$",
        ),
        (
            f"{HEADER}\n0,1,fax,en,,,\n",
            r"^trace line 2, column channel: must be one of voice, chat, email, sms, got 'fax'$",
        ),
        (
            f"{HEADER}\n0,1,voice,en,diamond,,\n",
            r"^trace line 2, column tier: must be one of standard, silver, gold, ",
        ),
        (
            f"{HEADER}\n0,1,voice,en,,,-5\n",
            r"^trace line 2, column patience_s: must be a number of seconds >= 0, ",
        ),
    ],
)
def test_trace_errors_name_the_line_and_column(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(text)


def test_load_trace_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"{HEADER}\n0,1,voice,en,,,x\n", encoding="utf-8")
    with pytest.raises(TraceError, match=rf"^trace {path} line 2, column patience_s: "):
        load_trace(path)
    with pytest.raises(TraceError, match=r": cannot read the file: "):
        load_trace(tmp_path / "missing.csv")


def test_the_committed_sample_trace_is_what_the_generator_makes() -> None:
    path = ROOT / "bench" / "traces" / "sample_trace.csv"
    assert path.read_text(encoding="utf-8") == sample_trace_text()
    trace = load_trace(path)
    assert len(trace) == 2000
    assert {r.queue for r in trace} == {"billing", "tech", "general"}


# --- hand-computed traces -----------------------------------------------------------------


def test_one_agent_serves_in_order_and_a_caller_gives_up() -> None:
    # a1 takes c1 at 0 until 10, then c2 (waited 10 - 2 = 8) until 15; c3 hangs up at 3 + 5 = 8.
    report = replay([row(0, 10), row(2, 5), row(3, 4, patience_s=5)], roster(agent("a1")))
    # Service level: c1, c2 within 20 s; c3 abandoned within 20 s, so left out of the ratio.
    expected = (3, 2, 1, 0, 0, 0, 0, 1.0, 4.0, 1 / 3)
    assert figures(report.overall) == expected
    assert figures(report.queues[0]) == expected
    assert (report.contacts, report.agents, report.window_s, report.ended_at) == (3, 1, 3.0, 15.0)
    assert report.overall.occupancy == 1.0  # busy all through the window [0, 3]
    assert report.overall.aht_s == pytest.approx(19 / 3)
    assert report.overall.erlang is None
    assert report.overall.erlang_note == "unstable: 1 agents for 6.33 erlangs"


def test_wrap_up_delays_the_next_offer_and_a_manual_one_ends_at_once() -> None:
    trace = [row(0, 10), row(1, 10)]
    timed = replay(trace, roster(agent("a1", wrap_up_s=5.0)))
    assert timed.overall.asa_s == 7.0  # c2 answered at 10 + 5, waited 14
    assert timed.ended_at == 30.0  # c2 released at 25, wrap-up to 30
    assert timed.overall.aht_s == 15.0  # handle plus the roster's wrap-up: Erlang C's AHT
    manual = replay(trace, roster(agent("a1", wrap_up_s=None)))
    assert manual.overall.asa_s == 4.5  # the simulated agent asks to be available at once


def test_a_release_comes_before_an_abandon_at_the_same_instant() -> None:
    report = replay([row(0, 10), row(5, 1, patience_s=5)], roster(agent("a1")))
    assert (report.overall.answered, report.overall.abandoned, report.overall.asa_s) == (2, 0, 2.5)


def test_an_overflow_counts_in_both_queues_and_once_overall() -> None:
    queues = (
        QueueConfig("general", "g"),
        QueueConfig("billing", "b", max_wait_s=30, overflow_to="general"),
    )
    people = roster(agent("b1", b=3), agent("g1", g=3), queues=queues)
    trace = [row(0, 100, queue="billing"), row(0, 50, queue="general"), row(1, 10, queue="billing")]
    report = replay(trace, people)
    general, billing = report.queues
    # c3 waits in billing from 1 to 31, overflows, and g1 takes it at 50 (19 s in general).
    assert figures(billing) == (2, 1, 0, 1, 0, 0, 0, 1.0, 0.0, 0.0)
    assert figures(general) == (2, 2, 0, 0, 0, 0, 0, 1.0, 9.5, 0.0)
    assert figures(report.overall) == (3, 3, 0, 1, 0, 0, 0, 2 / 3, 49 / 3, 0.0)
    assert (billing.agents, general.agents, report.overall.agents) == (1, 1, 2)


def test_callbacks_refusals_and_contacts_nobody_can_take() -> None:
    queues = (
        QueueConfig("cb", "s", max_wait_s=10),
        QueueConfig("full", "s", max_length=0),
        QueueConfig("q", "s"),
    )
    people = roster(agent("a1"), queues=queues)
    trace = [
        row(0, 100, queue="cb"),
        row(1, 1, queue="cb", patience_s=20),  # callback at 11; its patience (21) no longer matters
        row(2, 1, queue="full"),  # would have to wait in a queue of length 0: refused
        row(3, 1, queue="q", language="fr"),  # nobody speaks French, and it never gives up
    ]
    report = replay(trace, people)
    assert figures(report.overall) == (4, 1, 0, 0, 1, 1, 1, 1.0, 0.0, 0.0)
    cb, full, q = report.queues
    assert (cb.callbacks_offered, full.refused, q.unserved) == (1, 1, 1)


def test_contacts_without_a_queue_go_to_the_default_or_the_only_queue() -> None:
    two = (QueueConfig("a", "s"), QueueConfig("b", "s"))
    report = replay([row(0, 1), row(1, 1, queue="a")], roster(agent("x"), queues=two), default_queue="b")
    assert [q.contacts for q in report.queues] == [1, 1]
    assert replay([row(0, 1)], roster(agent("x"))).queues[0].contacts == 1
    with pytest.raises(TraceError, match=r"^trace line 7, column queue: no queue: fill in the queue column"):
        replay([TraceContact(7, 0, 1, VOICE)], roster(agent("x"), queues=two))
    with pytest.raises(
        TraceError, match=r"^t\.csv line 9, column queue: unknown queue 'c'; the roster has a, b$"
    ):
        replay([TraceContact(9, 0, 1, VOICE, queue="c")], roster(agent("x"), queues=two), source="t.csv")


def test_an_empty_trace_reports_nothing() -> None:
    calls: list[tuple[int, int]] = []
    report = replay([], roster(agent("a1")), on_progress=lambda done, total: calls.append((done, total)))
    assert (report.contacts, report.overall.service_level, report.overall.erlang_note) == (
        0,
        None,
        "no contacts",
    )
    assert calls == [(0, 0)]


def test_a_replay_is_deterministic_and_reports_progress() -> None:
    people = load_roster(ROOT / "deploy" / "roster.example.toml")
    trace = load_trace(ROOT / "bench" / "traces" / "sample_trace.csv")
    calls: list[tuple[int, int]] = []
    first = replay(trace, people, on_progress=lambda done, total: calls.append((done, total)))
    assert first == replay(trace, people)
    assert calls[-1] == (2000, 2000)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert first.overall.contacts == sum(q.answered + q.abandoned for q in first.queues) + sum(
        q.callbacks_offered + q.refused + q.unserved for q in first.queues
    )


# --- agreement with Erlang C --------------------------------------------------------------


def test_replay_agrees_with_erlang_c_on_an_m_m_n_trace() -> None:
    # Erlang C is exact for M/M/N: Poisson arrivals, exponential handle times, N interchangeable
    # agents, first come first served, nobody hangs up. The trace is made that way (wrap-up 0,
    # infinite patience, one queue), so only sampling noise separates the two. With 40,000
    # contacts at 25 erlangs on 30 agents (Erlang C: SL(20 s) ~0.87, ASA ~8 s), 12 seeds gave
    # replay - prediction: SL mean +0.006, sd 0.009; ASA mean -0.6 s, sd 0.9 s (waits are
    # strongly correlated in time, hence the wide spread); occupancy sd 0.0001. The bands are
    # about 3.5 sd: a systematic error (a wait measured from the wrong instant, a lost
    # release, a wrong tie order) moves the figures far more than that.
    rows = poisson_trace(random.Random(7), contacts=40_000, calls_per_hour=500, mean_handle_s=180)
    people = roster(
        *(agent(f"a{i:02d}") for i in range(30)), queues=(QueueConfig("q", "s", service_level_s=20),)
    )
    report = replay(rows, people)
    fig, predicted = report.overall, report.overall.erlang
    assert predicted is not None
    assert (fig.answered, fig.abandoned, fig.unserved) == (40_000, 0, 0)
    assert predicted == staffing(30, 40_000, report.window_s, fig.aht_s or 0.0, 20.0)
    assert 24 < predicted.load_erlangs < 26
    assert fig.service_level == pytest.approx(predicted.service_level, abs=0.03)
    assert fig.asa_s == pytest.approx(predicted.asa_s, abs=3.0)
    assert fig.occupancy == pytest.approx(predicted.occupancy, abs=0.005)
    assert report.queues[0].erlang == predicted  # one queue: the queue is the whole node
