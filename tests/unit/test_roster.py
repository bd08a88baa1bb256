"""Roster files: the TOML format, the values it builds, and errors that name the entry and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.core.routing import (
    AgentProfile,
    Channel,
    QueueConfig,
    RelaxationStep,
    RoutingEngine,
    Strategy,
)
from edge_node.errors import EdgeNodeError
from edge_node.roster import Roster, RosterError, load_roster, parse_roster

ROOT = Path(__file__).resolve().parents[2]

BRIEF_EXAMPLE = """
[[agents]]
id = "a1"
skills = {billing = 3}
languages = ["en", "zh"]
capacity = {voice = 1, chat = 3}
wrap_up_s = 10

[[queues]]
id = "general"
skill = "general"

[[queues]]
id = "billing"
skill = "billing"
min_level = 3
strategy = "longest_idle"
steps = [{after_s = 30, min_level = 2}, {after_s = 60}]
max_wait_s = 120
overflow_to = "general"
max_length = 50
service_level_s = 20
"""

AGENT = '[[agents]]\nid = "{id}"\ncapacity = {{voice = 1}}\n'


def queue(queue_id: str, extra: str = "") -> str:
    return f'[[queues]]\nid = "{queue_id}"\nskill = "s"\n{extra}\n'


def test_the_documented_format_builds_the_core_values() -> None:
    roster = parse_roster(BRIEF_EXAMPLE)
    assert roster.agents == (
        AgentProfile(
            "a1", {"billing": 3}, frozenset({"en", "zh"}), {Channel.VOICE: 1, Channel.CHAT: 3}, 10.0
        ),
    )
    general, billing = roster.queues
    assert general == QueueConfig("general", "general")
    assert billing == QueueConfig(
        queue_id="billing",
        skill="billing",
        min_level=3,
        strategy=Strategy.LONGEST_IDLE,
        steps=(RelaxationStep(30.0, 2), RelaxationStep(60.0, None)),
        max_wait_s=120.0,
        overflow_to="general",
        max_length=50,
        service_level_s=20.0,
    )
    RoutingEngine(roster.queues)  # the engine takes them in this order


def test_defaults_apply_to_left_out_keys() -> None:
    roster = parse_roster(AGENT.format(id="a") + queue("q"))
    (agent,) = roster.agents
    assert (dict(agent.skills), agent.languages, agent.wrap_up_s) == ({}, frozenset(), None)
    (q,) = roster.queues
    assert (q.min_level, q.strategy, q.steps, q.max_wait_s, q.overflow_to, q.max_length) == (
        1,
        Strategy.LONGEST_IDLE,
        (),
        None,
        None,
        None,
    )
    assert (q.service_level_s, dict(q.inquiry_bands), q.divert_on_entry) == (20.0, {}, False)


def test_an_empty_document_is_an_empty_roster() -> None:
    assert parse_roster("") == Roster((), ())


def test_overflow_targets_are_ordered_first_and_file_order_is_kept_otherwise() -> None:
    text = (
        queue("a", 'max_wait_s = 10\noverflow_to = "b"')
        + queue("x")
        + queue("b", 'max_wait_s = 10\noverflow_to = "c"')
        + queue("c")
        + queue("d", 'max_wait_s = 10\noverflow_to = "c"')
    )
    roster = parse_roster(text)
    assert [q.queue_id for q in roster.queues] == ["c", "b", "a", "x", "d"]
    RoutingEngine(roster.queues)


def test_every_queue_option_reaches_the_config() -> None:
    roster = parse_roster(
        queue("g")
        + queue(
            "q",
            'strategy = "skill_weighted"\nmax_wait_s = 5.5\noverflow_to = "g"\n'
            "divert_on_entry = true\ninquiry_bands = {vip_fraud = 2}\nmax_length = 0",
        )
    )
    q = roster.queues[1]
    assert (q.strategy, q.max_wait_s, q.divert_on_entry, dict(q.inquiry_bands), q.max_length) == (
        Strategy.SKILL_WEIGHTED,
        5.5,
        True,
        {"vip_fraud": 2},
        0,
    )


def test_the_example_roster_in_deploy_loads() -> None:
    roster = load_roster(ROOT / "deploy" / "roster.example.toml")
    assert len(roster.agents) == 14
    assert [q.queue_id for q in roster.queues] == ["general", "billing", "tech"]
    billing = roster.queues[1]
    assert billing.steps == (RelaxationStep(30.0, 2), RelaxationStep(60.0, None))
    assert billing.overflow_to == "general"
    engine = RoutingEngine(roster.queues)
    for agent in roster.agents:
        engine.add_agent(agent, 0.0)


def test_the_error_names_the_entry_and_the_key() -> None:
    text = AGENT.format(id="a1") + AGENT.format(id="a2") + AGENT.format(id="a3") + "skills = {billing = 7}\n"
    with pytest.raises(RosterError) as caught:
        parse_roster(text)
    assert str(caught.value) == "roster agents[2].skills.billing: level must be 1-5, got 7"
    assert (caught.value.source, caught.value.where) == ("roster", "agents[2].skills.billing")
    assert isinstance(caught.value, EdgeNodeError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agents = [", r"^roster: not valid TOML: "),
        ("colour = 1", r"^roster colour: unknown key; expected one of agents, queues$"),
        ("agents = 3", r"^roster agents: must be an array of tables \(\[\[agents\]\]\), got an integer$"),
        ("agents = [1]", r"^roster agents\[0\]: must be a table, got an integer$"),
        ("[[agents]]\ncapacity = {voice = 1}", r"^roster agents\[0\]\.id: required key is missing$"),
        ('[[agents]]\nid = "a"', r"^roster agents\[0\]\.capacity: required key is missing$"),
        (
            '[[agents]]\nid = ""\ncapacity = {voice = 1}',
            r"^roster agents\[0\]\.id: must be a non-empty string",
        ),
        (
            AGENT.format(id="a") + "skill = {b = 1}",
            r"^roster agents\[0\]\.skill: unknown key; expected one of id, ",
        ),
        (
            AGENT.format(id="a") + "skills = {b = true}",
            r"^roster agents\[0\]\.skills\.b: level must be 1-5, got True$",
        ),
        (AGENT.format(id="a") + 'skills = "b"', r"^roster agents\[0\]\.skills: must be a table, e\.g\."),
        (
            AGENT.format(id="a") + 'languages = "en"',
            r"^roster agents\[0\]\.languages: must be an array of strings",
        ),
        (
            AGENT.format(id="a") + "languages = [1]",
            r"^roster agents\[0\]\.languages\[0\]: must be a non-empty string",
        ),
        (
            '[[agents]]\nid = "a"\ncapacity = {fax = 1}',
            r"^roster agents\[0\]\.capacity\.fax: unknown channel; expected one of voice, chat, email, sms$",
        ),
        (
            '[[agents]]\nid = "a"\ncapacity = {voice = -1}',
            r"^roster agents\[0\]\.capacity\.voice: capacity must be a whole number >= 0, got -1$",
        ),
        (
            '[[agents]]\nid = "a"\ncapacity = {voice = 0}',
            r"^roster agents\[0\]\.capacity: an agent needs at least one slot",
        ),
        (
            AGENT.format(id="a") + "wrap_up_s = -1",
            r"^roster agents\[0\]\.wrap_up_s: must be at least 0 seconds, got -1$",
        ),
        (
            AGENT.format(id="a") + 'wrap_up_s = "10"',
            r"^roster agents\[0\]\.wrap_up_s: must be a finite number of seconds, got '10'$",
        ),
        (
            AGENT.format(id="a") + AGENT.format(id="a"),
            r"^roster agents\[1\]\.id: duplicate agent id 'a', first at agents\[0\]$",
        ),
        ('[[queues]]\nid = "q"', r"^roster queues\[0\]\.skill: required key is missing$"),
        (queue("q", "min_level = 0"), r"^roster queues\[0\]\.min_level: level must be 1-5, got 0$"),
        (queue("q", 'strategy = "random"'), r"^roster queues\[0\]\.strategy: must be one of longest_idle, "),
        (
            queue("q", "steps = {after_s = 1}"),
            r"^roster queues\[0\]\.steps: must be an array of tables, got a table$",
        ),
        (
            queue("q", "steps = [{min_level = 1}]"),
            r"^roster queues\[0\]\.steps\[0\]\.after_s: required key is missing$",
        ),
        (
            queue("q", "steps = [{after_s = 0}]"),
            r"^roster queues\[0\]\.steps\[0\]\.after_s: must be above 0 seconds, got 0$",
        ),
        (
            queue("q", "steps = [{after_s = 5, level = 1}]"),
            r"^roster queues\[0\]\.steps\[0\]\.level: unknown key",
        ),
        (
            queue(
                "q", "min_level = 3\nsteps = [{after_s = 30, min_level = 2}, {after_s = 20, min_level = 1}]"
            ),
            r"^roster queues\[0\]\.steps\[1\]\.after_s: must exceed the step before, got 20\.0$",
        ),
        (
            queue("q", "min_level = 2\nsteps = [{after_s = 30, min_level = 3}]"),
            r"^roster queues\[0\]\.steps\[0\]\.min_level: must loosen the step before, got 3$",
        ),
        (
            queue("q", 'overflow_to = "g"'),
            r"^roster queues\[0\]\.max_wait_s: overflow_to and divert_on_entry need a maximum wait",
        ),
        (
            queue("q", 'max_wait_s = 10\noverflow_to = "nowhere"'),
            r"^roster queues\[0\]\.overflow_to: no queue has id 'nowhere'$",
        ),
        (
            queue("q", 'max_wait_s = 10\noverflow_to = "q"'),
            r"^roster queues\[0\]\.overflow_to: a queue cannot overflow into itself, got 'q'$",
        ),
        (
            queue("a", 'max_wait_s = 10\noverflow_to = "b"')
            + queue("b", 'max_wait_s = 10\noverflow_to = "a"'),
            r"^roster queues\[1\]\.overflow_to: overflow loop a -> b -> a$",
        ),
        (queue("q") + queue("q"), r"^roster queues\[1\]\.id: duplicate queue id 'q', first at queues\[0\]$"),
        (
            queue("q", "max_length = -1"),
            r"^roster queues\[0\]\.max_length: value must be a whole number >= 0, got -1$",
        ),
        (
            queue("q", "service_level_s = 0"),
            r"^roster queues\[0\]\.service_level_s: must be above 0 seconds, got 0$",
        ),
        (
            queue("q", 'divert_on_entry = "yes"'),
            r"^roster queues\[0\]\.divert_on_entry: must be true or false, got 'yes'$",
        ),
        (
            queue("q", "inquiry_bands = {fraud = 1.5}"),
            r"^roster queues\[0\]\.inquiry_bands\.fraud: band must be a whole number, got 1\.5$",
        ),
    ],
)
def test_errors_name_the_entry_and_the_key(text: str, message: str) -> None:
    with pytest.raises(RosterError, match=message):
        parse_roster(text)


def test_load_roster_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text(AGENT.format(id="a") + "wrap_up_s = -5\n", encoding="utf-8")
    with pytest.raises(
        RosterError, match=rf"^roster {path} agents\[0\]\.wrap_up_s: must be at least 0 seconds"
    ):
        load_roster(path)
    with pytest.raises(RosterError, match=rf"^roster {tmp_path / 'missing.toml'}: cannot read the file: "):
        load_roster(tmp_path / "missing.toml")
