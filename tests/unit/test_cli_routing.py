"""``edgecare staffing erlang-c`` and ``edgecare routing replay`` through typer's CliRunner."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_node.cli_routing import _progress, routing_app, staffing_app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = str(ROOT / "bench" / "traces" / "sample_trace.csv")
ROSTER = str(ROOT / "deploy" / "roster.example.toml")
REFERENCE = ["erlang-c", "--calls", "100", "--period-s", "1800", "--aht-s", "180", "--target-s", "20"]

runner = CliRunner()


# --- staffing erlang-c --------------------------------------------------------------------


def test_erlang_c_prints_the_published_reference_values() -> None:
    result = runner.invoke(staffing_app, REFERENCE)
    assert result.exit_code == 0, result.output
    lines = {" ".join(line.strip("│ ").split()) for line in result.stdout.splitlines()}
    for expected in (
        "agents needed │ 14",
        "P(wait) │ 0.1741",
        "service level │ 88.84 %",
        "ASA │ 7.84 s",
        "occupancy │ 71.43 %",
        "calls │ 100 per 1800 s",
        "average handle time │ 180 s",
        "offered load │ 10.00 erlangs",
        "goal │ 80 % within 20 s",
    ):
        assert expected in lines, result.stdout


def test_erlang_c_json() -> None:
    result = runner.invoke(staffing_app, [*REFERENCE, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["agents"] == 14
    assert out["p_wait"] == pytest.approx(0.1741, abs=5e-5)
    assert out["service_level"] == pytest.approx(0.8884, abs=5e-5)
    assert out["asa_s"] == pytest.approx(7.84, abs=5e-3)
    assert out["occupancy"] == pytest.approx(10 / 14)
    assert (out["calls"], out["period_s"], out["aht_s"], out["target_s"]) == (100, 1800, 180, 20)
    assert (out["load_erlangs"], out["service_level_goal"], out["max_occupancy"]) == (10, 0.8, None)


@pytest.mark.parametrize(
    ("extra", "agents"),
    [
        (["--service-level", "0.9"], 15),  # 14 agents answer 88.84 %: one more for 90 %
        (["--max-occupancy", "0.7"], 15),  # 14 agents are 71.4 % busy
        (["--service-level", "0.7"], 13),  # 13 agents: 79.56 %; 12: 64.02 %
    ],
)
def test_erlang_c_goals(extra: list[str], agents: int) -> None:
    result = runner.invoke(staffing_app, [*REFERENCE, *extra, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["agents"] == agents


def test_erlang_c_table_shows_the_occupancy_cap() -> None:
    result = runner.invoke(staffing_app, [*REFERENCE, "--max-occupancy", "0.7"])
    assert result.exit_code == 0, result.output
    assert "occupancy <= 70 %" in result.stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--calls", "-1", "error: invalid value for --calls: -1.0 must be a finite number of at least 0"),
        ("--period-s", "0", "error: invalid value for --period-s: 0.0 must be a finite number above 0"),
        ("--aht-s", "inf", "error: invalid value for --aht-s: inf must be a finite number above 0"),
        (
            "--target-s",
            "-3",
            "error: invalid value for --target-s: -3.0 must be a finite number of at least 0",
        ),
        (
            "--service-level",
            "80",
            "error: invalid value for --service-level: 80.0 must lie strictly between 0 and 1",
        ),
        ("--max-occupancy", "0", "error: invalid value for --max-occupancy: 0.0 must lie in (0, 1]"),
    ],
)
def test_erlang_c_bad_values_name_the_option(option: str, value: str, message: str) -> None:
    args = [*REFERENCE, option, value] if option not in REFERENCE else _replace(REFERENCE, option, value)
    result = runner.invoke(staffing_app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == message


def test_erlang_c_refuses_an_absurd_load() -> None:
    result = runner.invoke(staffing_app, _replace(REFERENCE, "--calls", "1e12"))
    assert result.exit_code == 2
    assert "error: offered load 100000000000 erlangs is beyond 1000000 erlangs" in result.stderr


def test_erlang_c_parse_errors_and_missing_options_exit_2() -> None:
    result = runner.invoke(staffing_app, _replace(REFERENCE, "--aht-s", "three"))
    assert result.exit_code == 2
    assert "--aht-s" in result.output
    result = runner.invoke(staffing_app, REFERENCE[:-2])
    assert result.exit_code == 2
    assert "--target-s" in result.output


def _replace(args: list[str], option: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(option) + 1] = value
    return out


# --- routing replay -----------------------------------------------------------------------


def test_replay_of_the_sample_prints_figures_beside_erlang_c() -> None:
    result = runner.invoke(routing_app, ["replay", SAMPLE, "--roster", ROSTER])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Replay of 2000 contacts with 14 agents" in out
    header = next(line for line in out.splitlines() if "general" in line and "overall" in line)
    assert [cell.strip() for cell in header.split("┃")[2:6]] == ["general", "billing", "tech", "overall"]
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    for label in (
        "contacts",
        "  replay",
        "ASA replay",
        "occupancy replay",
        "abandon rate replay",
        "  P(wait)",
    ):
        assert label.strip() in rows, out
    assert rows["contacts"].split("│")[2:6] == [f" {n:>8} " for n in ("421", "987", "592", "2000")]


def test_replay_json_has_every_figure() -> None:
    result = runner.invoke(routing_app, ["replay", SAMPLE, "--roster", ROSTER, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["contacts"], out["agents"]) == (2000, 14)
    assert [q["queue_id"] for q in out["queues"]] == ["general", "billing", "tech"]
    overall = out["overall"]
    assert overall["queue_id"] == "overall"
    assert overall["contacts"] == 2000
    assert 0 < overall["service_level"] <= 1
    assert overall["erlang"]["agents"] == 14
    assert set(overall["erlang"]) >= {"p_wait", "service_level", "asa_s", "occupancy", "load_erlangs"}


def test_replay_default_queue(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "arrival_s,handle_s,channel,language,tier,inquiry_type,patience_s\n0,60,voice,en,,,\n",
        encoding="utf-8",
    )
    result = runner.invoke(routing_app, ["replay", str(trace), "--roster", ROSTER])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: trace {trace} line 2, column queue: no queue: fill in the queue column, "
        "or give a default queue (--queue)"
    )
    result = runner.invoke(
        routing_app, ["replay", str(trace), "--roster", ROSTER, "--queue", "tech", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [q["contacts"] for q in json.loads(result.stdout)["queues"]] == [0, 0, 1]


def test_replay_errors_exit_2_with_the_file_line_and_column(tmp_path: Path) -> None:
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text(
        "arrival_s,handle_s,channel,language,tier,inquiry_type,patience_s,queue\n0,soon,voice,en,,,,tech\n",
        encoding="utf-8",
    )
    result = runner.invoke(routing_app, ["replay", str(bad_trace), "--roster", ROSTER])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: trace {bad_trace} line 2, column handle_s: must be a number")

    bad_roster = tmp_path / "roster.toml"
    bad_roster.write_text(
        '[[agents]]\nid = "a"\ncapacity = {voice = 1}\nskills = {billing = 7}\n', encoding="utf-8"
    )
    result = runner.invoke(routing_app, ["replay", SAMPLE, "--roster", str(bad_roster)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: roster {bad_roster} agents[0].skills.billing: level must be 1-5, got 7"
    )

    result = runner.invoke(routing_app, ["replay", str(tmp_path / "none.csv"), "--roster", ROSTER])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: trace {tmp_path / 'none.csv'}")
    assert "cannot read the file" in result.stderr

    result = runner.invoke(routing_app, ["replay", SAMPLE, "--roster", ROSTER, "--queue", "sales"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: invalid value for --queue: unknown queue 'sales'; the roster has general, billing, tech"
    )

    result = runner.invoke(routing_app, ["replay", SAMPLE])
    assert result.exit_code == 2
    assert "--roster" in result.output


def test_the_apps_are_groups_with_help() -> None:
    for app, command in ((routing_app, "replay"), (staffing_app, "erlang-c")):
        result = runner.invoke(app, ["--help"])
        assert result.exit_code == 0
        assert command in result.stdout
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_replays_show_a_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress(20_000) as on_progress:
        assert on_progress is not None
        on_progress(10_000, 20_000)
    assert "replaying" in terminal.getvalue()
    with _progress(9_999) as short:  # a short trace finishes before a bar would help
        assert short is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with _progress(20_000) as piped:  # not a terminal: nothing on stderr
        assert piped is None
