"""Rosters: the agents and queues of a node, declared in a TOML file.

A roster is what the routing engine starts from: who the agents are (skills,
languages, channel capacity, wrap-up) and which queues exist (skill, strategy,
relaxation ladder, limits). The gRPC server loads one at startup and
``edgecare routing replay`` runs a trace against one. See
``deploy/roster.example.toml`` for a commented example.
"""

# Theory of operation
# -------------------
# `parse_roster` reads the TOML document, checks every entry key by key and
# builds the core's `AgentProfile` and `QueueConfig` values from it; nothing
# else in the node reads roster TOML. Each problem is a `RosterError` naming
# the source, the entry and the key, e.g.
# "roster agents[2].skills.billing: level must be 1-5, got 7" (entries count
# from 0, in file order). Unknown keys are errors, not ignored, so a typo such
# as `max_wait = 60` cannot silently leave a queue without its limit.
#
# The engine needs a queue's overflow target registered before the queue
# itself (so overflow chains cannot loop). The file may list queues in any
# order: `parse_roster` orders them so targets come first, keeping file order
# otherwise, and reports a missing target or a cycle.

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from edge_node.core.routing import (
    AgentProfile,
    Channel,
    QueueConfig,
    RelaxationStep,
    RoutingConfigError,
    Strategy,
)
from edge_node.errors import EdgeNodeError

__all__ = ["Roster", "RosterError", "load_roster", "parse_roster"]

_AGENT_KEYS = ("id", "skills", "languages", "capacity", "wrap_up_s")
_QUEUE_KEYS = (
    "id",
    "skill",
    "min_level",
    "strategy",
    "steps",
    "max_wait_s",
    "overflow_to",
    "max_length",
    "service_level_s",
    "inquiry_bands",
    "divert_on_entry",
)
_STEP_KEYS = ("after_s", "min_level")
_TOP_KEYS = ("agents", "queues")


class RosterError(EdgeNodeError):
    """A roster cannot be used; `where` names the entry and key, `problem` the broken rule."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source, self.where, self.problem = source, where, problem
        super().__init__(f"{source} {where}: {problem}" if where else f"{source}: {problem}")


@dataclass(frozen=True, slots=True)
class Roster:
    """The agents and queues of a roster file.

    Attributes:
        agents: Agent profiles, in file order; ids are unique.
        queues: Queue configurations in an order the engine accepts: every overflow
            target before the queues overflowing into it, file order otherwise.
    """

    agents: tuple[AgentProfile, ...]
    queues: tuple[QueueConfig, ...]


def load_roster(path: Path) -> Roster:
    """Read and check a roster file.

    Raises:
        RosterError: The file cannot be read, is not TOML, or breaks a rule; the message
            names the file, the entry and the key.
    """
    source = f"roster {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(source, "", f"cannot read the file: {exc}") from exc
    return parse_roster(text, source=source)


def parse_roster(text: str, *, source: str = "roster") -> Roster:
    """Parse and check a roster document (TOML text).

    Args:
        text: The TOML document.
        source: Names the document in error messages, e.g. ``roster path/to/file.toml``.

    Raises:
        RosterError: The text is not TOML or breaks a rule of the format.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RosterError(source, "", f"not valid TOML: {exc}") from exc
    p = _Parser(source)
    p.keys("", doc, _TOP_KEYS, required=())
    agents = tuple(p.agent(f"agents[{i}]", raw) for i, raw in enumerate(p.tables("agents", doc)))
    seen: dict[str, int] = {}
    for i, agent in enumerate(agents):
        if agent.agent_id in seen:
            p.fail(
                f"agents[{i}].id",
                f"duplicate agent id {agent.agent_id!r}, first at agents[{seen[agent.agent_id]}]",
            )
        seen[agent.agent_id] = i
    queues = [p.queue(f"queues[{i}]", raw) for i, raw in enumerate(p.tables("queues", doc))]
    return Roster(agents, p.ordered(queues))


class _Parser:
    """Checks one document; every failure names `source` and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> NoReturn:
        raise RosterError(self.source, where, problem)

    # --- shapes -------------------------------------------------------------------------

    def keys(
        self, where: str, table: Mapping[str, object], allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in allowed:
                self.fail(_join(where, key), f"unknown key; expected one of {', '.join(allowed)}")
        for key in required:
            if key not in table:
                self.fail(_join(where, key), "required key is missing")

    def tables(self, key: str, doc: Mapping[str, object]) -> list[Mapping[str, object]]:
        raw = doc.get(key, [])
        if not isinstance(raw, list):
            self.fail(key, f"must be an array of tables ([[{key}]]), got {_kind(raw)}")
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                self.fail(f"{key}[{i}]", f"must be a table, got {_kind(item)}")
        return raw

    def text(self, where: str, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
        return value

    def whole(self, where: str, value: object, *, low: int, high: int | None = None, what: str = "") -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            rule = f"{low}-{high}" if high is not None else f"a whole number >= {low}"
            self.fail(where, f"{what or 'value'} must be {rule}, got {value!r}")
        return value

    def band(self, where: str, value: object) -> int:
        if type(value) is not int:
            self.fail(where, f"band must be a whole number, got {value!r}")
        return value

    def level(self, where: str, value: object) -> int:
        return self.whole(where, value, low=1, high=5, what="level")

    def seconds(self, where: str, value: object, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(where, f"must be a finite number of seconds, got {value!r}")
        if value < 0 or (positive and value == 0):
            self.fail(where, f"must be {'above' if positive else 'at least'} 0 seconds, got {value!r}")
        return float(value)

    def mapping(self, where: str, value: object) -> Mapping[str, object]:
        if not isinstance(value, dict):
            self.fail(where, f"must be a table, e.g. {{ billing = 3 }}, got {_kind(value)}")
        return value

    # --- entries ------------------------------------------------------------------------

    def agent(self, where: str, raw: Mapping[str, object]) -> AgentProfile:
        self.keys(where, raw, _AGENT_KEYS, required=("id", "capacity"))
        agent_id = self.text(f"{where}.id", raw["id"])
        skills = {}
        for skill, level in self.mapping(f"{where}.skills", raw.get("skills", {})).items():
            self.text(f"{where}.skills", skill)
            skills[skill] = self.level(f"{where}.skills.{skill}", level)
        languages = raw.get("languages", [])
        if not isinstance(languages, list):
            self.fail(f"{where}.languages", f"must be an array of strings, got {_kind(languages)}")
        langs = frozenset(self.text(f"{where}.languages[{i}]", lang) for i, lang in enumerate(languages))
        capacity = {}
        for name, slots in self.mapping(f"{where}.capacity", raw["capacity"]).items():
            if name not in set(Channel):
                self.fail(
                    f"{where}.capacity.{name}", f"unknown channel; expected one of {', '.join(Channel)}"
                )
            capacity[Channel(name)] = self.whole(f"{where}.capacity.{name}", slots, low=0, what="capacity")
        if not any(capacity.values()):
            self.fail(f"{where}.capacity", "an agent needs at least one slot on some channel")
        wrap = raw.get("wrap_up_s")
        wrap_up_s = None if wrap is None else self.seconds(f"{where}.wrap_up_s", wrap)
        try:
            return AgentProfile(agent_id, skills, langs, capacity, wrap_up_s)
        except RoutingConfigError as exc:  # every rule is checked above; kept as a safety net
            raise RosterError(self.source, where, str(exc)) from exc

    def queue(self, where: str, raw: Mapping[str, object]) -> QueueConfig:
        self.keys(where, raw, _QUEUE_KEYS, required=("id", "skill"))
        queue_id = self.text(f"{where}.id", raw["id"])
        skill = self.text(f"{where}.skill", raw["skill"])
        min_level = self.level(f"{where}.min_level", raw.get("min_level", 1))
        strategy_name = raw.get("strategy", Strategy.LONGEST_IDLE.value)
        if strategy_name not in set(Strategy):
            self.fail(f"{where}.strategy", f"must be one of {', '.join(Strategy)}, got {strategy_name!r}")
        steps = raw.get("steps", [])
        if not isinstance(steps, list):
            self.fail(f"{where}.steps", f"must be an array of tables, got {_kind(steps)}")
        ladder = tuple(self.step(f"{where}.steps[{i}]", step) for i, step in enumerate(steps))
        max_wait, overflow, max_length = raw.get("max_wait_s"), raw.get("overflow_to"), raw.get("max_length")
        bands = {
            kind: self.band(f"{where}.inquiry_bands.{kind}", band)
            for kind, band in self.mapping(f"{where}.inquiry_bands", raw.get("inquiry_bands", {})).items()
        }
        divert = raw.get("divert_on_entry", False)
        if not isinstance(divert, bool):
            self.fail(f"{where}.divert_on_entry", f"must be true or false, got {divert!r}")
        try:
            return QueueConfig(
                queue_id=queue_id,
                skill=skill,
                min_level=min_level,
                strategy=Strategy(str(strategy_name)),
                steps=ladder,
                max_wait_s=None
                if max_wait is None
                else self.seconds(f"{where}.max_wait_s", max_wait, positive=True),
                overflow_to=None if overflow is None else self.text(f"{where}.overflow_to", overflow),
                max_length=None
                if max_length is None
                else self.whole(f"{where}.max_length", max_length, low=0),
                service_level_s=self.seconds(
                    f"{where}.service_level_s", raw.get("service_level_s", 20.0), positive=True
                ),
                inquiry_bands=bands,
                divert_on_entry=bool(divert),
            )
        except RoutingConfigError as exc:  # cross-key rules: ladder order, overflow without max_wait_s
            raise RosterError(self.source, f"{where}.{exc.what}", f"{exc.reason}, got {exc.value!r}") from exc

    def step(self, where: str, raw: object) -> RelaxationStep:
        table = self.mapping(where, raw)
        self.keys(where, table, _STEP_KEYS, required=("after_s",))
        after_s = self.seconds(f"{where}.after_s", table["after_s"], positive=True)
        level = table.get("min_level")
        return RelaxationStep(after_s, None if level is None else self.level(f"{where}.min_level", level))

    def ordered(self, queues: list[QueueConfig]) -> tuple[QueueConfig, ...]:
        """Queues with every overflow target first; file order otherwise."""
        index: dict[str, int] = {}
        for i, queue in enumerate(queues):
            if queue.queue_id in index:
                self.fail(
                    f"queues[{i}].id",
                    f"duplicate queue id {queue.queue_id!r}, first at queues[{index[queue.queue_id]}]",
                )
            index[queue.queue_id] = i
        for i, queue in enumerate(queues):
            if queue.overflow_to is not None and queue.overflow_to not in index:
                self.fail(f"queues[{i}].overflow_to", f"no queue has id {queue.overflow_to!r}")
        done: set[str] = set()
        out: list[QueueConfig] = []
        for start in queues:
            chain: list[str] = []  # start, its target, that one's target, ... until a queue already placed
            current: str | None = start.queue_id
            while current is not None and current not in done:
                if current in chain:
                    loop = " -> ".join([*chain[chain.index(current) :], current])
                    self.fail(f"queues[{index[chain[-1]]}].overflow_to", f"overflow loop {loop}")
                chain.append(current)
                current = queues[index[current]].overflow_to
            for queue_id in reversed(chain):
                done.add(queue_id)
                out.append(queues[index[queue_id]])
        return tuple(out)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: object) -> str:
    names = {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }
    return names.get(type(value), type(value).__name__)
