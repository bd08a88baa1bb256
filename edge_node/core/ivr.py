"""IVR flows: call trees declared in TOML, checked before they load, stepped one switch action at a time."""

# Theory of operation
# -------------------
# A flow is a graph of nodes keyed by id, entered at `start`. Five kinds exist:
# `menu` (play a prompt, collect one DTMF digit, follow the matching option),
# `language` (the same, but an option picks the caller's language and every
# option continues to `next`), `self_service` (play an answer filled in from
# customer data, then go on to `next`), `transfer` (hand the call to a queue with
# routing attributes) and `hangup`. Prompts are per language; the caller starts
# in `default_language` until a language node says otherwise.
#
# Loading has two passes. `parse_flow` turns TOML into frozen nodes and reports
# shape errors (wrong types, unknown keys, missing fields). It keeps menu options
# as an ordered tuple read from an array of tables, so a digit listed twice
# survives parsing and `validate` can report it; a TOML table keyed by digit
# would reject or hide that. `validate` then checks the graph: targets exist,
# every node is reachable from `start`, digits are single DTMF keys and unique
# per node, every declared language has a prompt, queues and template fields are
# known, menus offer options, and no loop can spin without the caller pressing a
# key. Both passes collect every problem before raising one `FlowError`, so an
# operator fixes a flow file in one round.
#
# `step` is a pure state machine that never reads the clock: given a state and
# what just happened on the call it returns the next state and exactly one
# action for the switch. Input is None when the previous Play finished (or to
# begin), and a Digit or a Timeout after a Collect. A menu plays its prompt,
# then collects; a wrong digit or a timeout counts one failed attempt and plays
# the prompt again, until `max_retries` re-prompts are used up and the call
# follows `on_invalid` or `on_timeout` (a language node keeps the current
# language and goes on to `next`). Transfer and Hangup end the session.

from __future__ import annotations

import math
import string
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from edge_node.errors import EdgeNodeError

DTMF_KEYS = frozenset("0123456789*#")
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 2
# Customer fields the CRM adapter can supply to self-service answers by default.
CUSTOMER_FIELDS = frozenset(
    {"name", "balance", "currency", "due_date", "plan", "data_left_gb", "minutes_left", "account_status"}
)


class IvrError(EdgeNodeError):
    """Base for every error the IVR core raises."""


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """One thing wrong with a flow; `node` is None for flow-level settings."""

    node: str | None
    problem: str

    def __str__(self) -> str:
        return f"node {self.node!r}: {self.problem}" if self.node is not None else f"flow: {self.problem}"


class FlowError(IvrError):
    """A flow file cannot load; `problems` lists every problem found, not just the first."""

    def __init__(self, problems: Collection[FlowProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        super().__init__(
            f"invalid ivr flow, {count} problem{'s' * (count != 1)}: " + "; ".join(map(str, self.problems))
        )


class UnexpectedInputError(IvrError):
    """The switch sent input the session is not waiting for (a digit while a prompt plays, say)."""

    def __init__(self, node: str, phase: str, got: object) -> None:
        self.node, self.phase, self.got = node, str(phase), got
        super().__init__(f"unexpected input {got!r} at node {node!r} in phase {self.phase!r}")


class MissingCustomerDataError(IvrError):
    """A self-service answer needs customer fields that are missing, and its node has no `on_missing`."""

    def __init__(self, node: str, fields: Collection[str]) -> None:
        self.node, self.fields = node, tuple(sorted(fields))
        super().__init__(f"self-service node {node!r} needs customer data {', '.join(self.fields)}")


class InvalidDigitError(IvrError):
    """A DTMF input is not one of 0-9, * and #."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(f"invalid dtmf digit {value!r}; expected one of 0-9, * or #")


# --- flow model ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """An answer with `{field}` placeholders, split into (literal, field-or-None) parts once at parse time."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> frozenset[str]:
        """The customer fields the answer needs."""
        return frozenset(name for _, name in self.parts if name is not None)

    def render(self, data: Mapping[str, object]) -> str:
        """Fill in the placeholders; the caller has checked that `data` has every field."""
        return "".join(literal + ("" if name is None else str(data[name])) for literal, name in self.parts)


@dataclass(frozen=True, slots=True)
class MenuOption:
    """Pressing `digit` in a menu goes to node `next`."""

    digit: str
    next: str


@dataclass(frozen=True, slots=True)
class LanguageOption:
    """Pressing `digit` in a language menu switches the call to `language`."""

    digit: str
    language: str


def _frozen(mapping: Mapping[str, object]) -> MappingProxyType[str, object]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class MenuNode:
    """Play `prompt`, collect a key, follow the matching option; after `max_retries` re-prompts, fall back."""

    id: str
    prompt: Mapping[str, str]
    options: tuple[MenuOption, ...]
    on_timeout: str
    on_invalid: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", _frozen(self.prompt))


@dataclass(frozen=True, slots=True)
class LanguageNode:
    """Like a menu, but an option sets the caller's language; every outcome continues to `next`."""

    id: str
    prompt: Mapping[str, str]
    options: tuple[LanguageOption, ...]
    next: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", _frozen(self.prompt))


@dataclass(frozen=True, slots=True)
class SelfServiceNode:
    """Play `answer` filled in from customer data, then go to `next`; lacking data, go to `on_missing`."""

    id: str
    answer: Mapping[str, Template]
    next: str
    on_missing: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "answer", _frozen(self.answer))


@dataclass(frozen=True, slots=True)
class TransferNode:
    """Optionally play `prompt`, then queue the call on `queue` with routing `attributes`."""

    id: str
    queue: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    prompt: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen(self.attributes))
        object.__setattr__(self, "prompt", _frozen(self.prompt))


@dataclass(frozen=True, slots=True)
class HangupNode:
    """Optionally play `prompt`, then end the call."""

    id: str
    prompt: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", _frozen(self.prompt))


Node = MenuNode | LanguageNode | SelfServiceNode | TransferNode | HangupNode


@dataclass(frozen=True, slots=True)
class Flow:
    """A parsed flow; run `validate` (or load with `load_flow`) before stepping it."""

    start: str
    languages: tuple[str, ...]
    default_language: str
    nodes: Mapping[str, Node]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))


def _targets(node: Node) -> list[tuple[str, str]]:
    """Every (edge label, target id) leaving `node`."""
    match node:
        case MenuNode():
            edges = [(f"option {o.digit!r}", o.next) for o in node.options]
            return [*edges, ("on_timeout", node.on_timeout), ("on_invalid", node.on_invalid)]
        case LanguageNode():
            return [("next", node.next)]
        case SelfServiceNode():
            return [("next", node.next)] + ([("on_missing", node.on_missing)] if node.on_missing else [])
        case _:
            return []


def _silent_targets(node: Node) -> list[str]:
    """Targets a caller reaches without pressing a key: plain continuations and timeout fallbacks."""
    match node:
        case MenuNode():
            return [node.on_timeout]
        case LanguageNode():
            return [node.next]
        case SelfServiceNode():
            return [node.next] + ([node.on_missing] if node.on_missing else [])
        case _:
            return []


# --- parsing -------------------------------------------------------------------------


_NODE_KEYS: Mapping[str, frozenset[str]] = {
    "menu": frozenset({"prompt", "options", "on_timeout", "on_invalid", "timeout_s", "max_retries"}),
    "language": frozenset({"prompt", "options", "next", "timeout_s", "max_retries"}),
    "self_service": frozenset({"answer", "next", "on_missing"}),
    "transfer": frozenset({"queue", "attributes", "prompt"}),
    "hangup": frozenset({"prompt"}),
}
_COMMON_KEYS = frozenset({"type", "description"})


class _Reader:
    """Pulls typed values out of one TOML table, recording a problem instead of failing on the first."""

    def __init__(self, problems: list[FlowProblem], node: str | None, table: Mapping[str, object]) -> None:
        self.problems, self.node, self.table = problems, node, table

    def fail(self, problem: str) -> None:
        self.problems.append(FlowProblem(self.node, problem))

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                self.fail(f"missing {key!r}")
            return None
        if not isinstance(value, str) or not value:
            self.fail(f"{key!r} must be a non-empty string, got {value!r}")
            return None
        return value

    def texts(self, key: str, shape: str = "language = text") -> dict[str, str]:
        value = self.table.get(key, {})
        texts = (
            {k: v for k, v in value.items() if isinstance(v, str) and v} if isinstance(value, dict) else {}
        )
        if not isinstance(value, dict) or len(texts) != len(value):
            self.fail(f"{key!r} must be a table of {shape} (non-empty strings), got {value!r}")
        return texts

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value > 0)
        ):
            self.fail(f"{key!r} must be a number of seconds above 0, got {value!r}")
            return default
        return float(value)

    def count(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(f"{key!r} must be a whole number of at least 0, got {value!r}")
            return default
        return value

    def tables(self, key: str) -> list[_Reader]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(f"{key!r} must be an array of tables ([[nodes.{self.node}.{key}]]), got {value!r}")
            return []
        return [_Reader(self.problems, self.node, entry) for entry in value]

    def unknown_keys(self, allowed: Collection[str], where: str) -> None:
        for key in self.table:
            if key not in allowed:
                self.fail(f"unknown key {key!r} in {where}")


def _template(reader: _Reader, language: str, text: str) -> Template | None:
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        reader.fail(f"answer for {language!r} is not a valid template: {exc}")
        return None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in pieces:
        if name is not None and (not name.isidentifier() or spec or conversion):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            reader.fail(
                f"answer for {language!r} has placeholder {{{shown}}} but only plain {{field}} is allowed"
            )
            return None
        parts.append((literal, name))
    return Template(text, tuple(parts))


def _option_digit(entry: _Reader) -> str:
    digit = entry.table.get("digit")
    if not isinstance(digit, str):
        entry.fail(f'option digit must be a string such as "1", got {digit!r}')
        return ""
    return digit


def _menu(r: _Reader, node_id: str) -> MenuNode:
    timeout_s, retries = r.number("timeout_s", DEFAULT_TIMEOUT_S), r.count("max_retries", DEFAULT_MAX_RETRIES)
    options = []
    for entry in r.tables("options"):
        entry.unknown_keys({"digit", "next"}, "an option")
        options.append(MenuOption(_option_digit(entry), entry.text("next") or ""))
    on_timeout, on_invalid = r.text("on_timeout") or "", r.text("on_invalid") or ""
    return MenuNode(node_id, r.texts("prompt"), tuple(options), on_timeout, on_invalid, timeout_s, retries)


def _language(r: _Reader, node_id: str) -> LanguageNode:
    timeout_s, retries = r.number("timeout_s", DEFAULT_TIMEOUT_S), r.count("max_retries", DEFAULT_MAX_RETRIES)
    options = []
    for entry in r.tables("options"):
        entry.unknown_keys({"digit", "language"}, "an option")
        options.append(LanguageOption(_option_digit(entry), entry.text("language") or ""))
    return LanguageNode(node_id, r.texts("prompt"), tuple(options), r.text("next") or "", timeout_s, retries)


def _self_service(r: _Reader, node_id: str) -> SelfServiceNode:
    answers = {lang: _template(r, lang, text) for lang, text in r.texts("answer").items()}
    templates = {lang: t for lang, t in answers.items() if t is not None}
    return SelfServiceNode(node_id, templates, r.text("next") or "", r.text("on_missing", required=False))


def _transfer(r: _Reader, node_id: str) -> TransferNode:
    queue = r.text("queue") or ""
    return TransferNode(node_id, queue, r.texts("attributes", "name = text"), r.texts("prompt"))


def _hangup(r: _Reader, node_id: str) -> HangupNode:
    return HangupNode(node_id, r.texts("prompt"))


_PARSERS: Mapping[str, Callable[[_Reader, str], Node]] = {
    "menu": _menu,
    "language": _language,
    "self_service": _self_service,
    "transfer": _transfer,
    "hangup": _hangup,
}


def _parse_node(node_id: str, table: Mapping[str, object], problems: list[FlowProblem]) -> Node | None:
    r = _Reader(problems, node_id, table)
    kind = table.get("type")
    if not isinstance(kind, str) or kind not in _NODE_KEYS:
        r.fail(f"type must be one of {', '.join(_NODE_KEYS)}, got {kind!r}")
        return None
    r.unknown_keys(_NODE_KEYS[kind] | _COMMON_KEYS, f"a {kind} node")
    before = len(problems)
    node = _PARSERS[kind](r, node_id)
    return node if len(problems) == before else None


def parse_flow(text: str) -> Flow:
    """Parse a flow file into frozen nodes, checking its shape but not yet its graph.

    Raises:
        FlowError: The text is not TOML, or tables and values have the wrong
            shape; every problem found is listed.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FlowError([FlowProblem(None, f"not valid toml: {exc}")]) from exc
    problems: list[FlowProblem] = []
    top = _Reader(problems, None, doc)
    top.unknown_keys({"start", "languages", "default_language", "description", "nodes"}, "the flow")
    start = top.text("start") or ""
    languages = doc.get("languages")
    if (
        not isinstance(languages, list)
        or not languages
        or not all(isinstance(x, str) and x for x in languages)
    ):
        top.fail(f"'languages' must be a non-empty array of language codes, got {languages!r}")
        languages = []
    default_language = top.text("default_language", required=False) or (languages[0] if languages else "")
    if languages and default_language not in languages:
        top.fail(f"default_language {default_language!r} is not among languages {languages!r}")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        top.fail("'nodes' must be a non-empty table of node tables")
        raw_nodes = {}
    nodes: dict[str, Node] = {}
    for node_id, table in raw_nodes.items():
        if not isinstance(table, dict):
            problems.append(FlowProblem(node_id, f"must be a table, got {table!r}"))
        elif (node := _parse_node(node_id, table, problems)) is not None:
            nodes[node_id] = node
    if problems:
        raise FlowError(problems)
    return Flow(start, tuple(languages), default_language, nodes)


# --- validation ----------------------------------------------------------------------


def _check_prompts(
    node: str, key: str, declared: tuple[str, ...], given: Collection[str]
) -> list[FlowProblem]:
    missing = [
        FlowProblem(node, f"missing {key} for declared language {lang!r}")
        for lang in declared
        if lang not in given
    ]
    extra = [
        FlowProblem(node, f"{key} for undeclared language {lang!r}") for lang in given if lang not in declared
    ]
    return missing + extra


def _check_options(node: MenuNode | LanguageNode, languages: tuple[str, ...]) -> list[FlowProblem]:
    problems: list[FlowProblem] = []
    if not node.options:
        kind = "menu" if isinstance(node, MenuNode) else "language menu"
        problems.append(FlowProblem(node.id, f"{kind} has no options"))
    seen: set[str] = set()
    for option in node.options:
        if len(option.digit) != 1 or option.digit not in DTMF_KEYS:
            problems.append(
                FlowProblem(node.id, f"invalid digit {option.digit!r}, expected one of 0-9, * or #")
            )
        elif option.digit in seen:
            problems.append(FlowProblem(node.id, f"duplicate option for digit {option.digit!r}"))
        seen.add(option.digit)
        if isinstance(option, LanguageOption) and option.language not in languages:
            problems.append(
                FlowProblem(
                    node.id, f"option {option.digit!r} selects undeclared language {option.language!r}"
                )
            )
    return problems


def _check_node(
    node: Node, flow: Flow, known_queues: Collection[str] | None, allowed_fields: Collection[str]
) -> list[FlowProblem]:
    problems = [
        FlowProblem(node.id, f"{label} targets unknown node {target!r}")
        for label, target in _targets(node)
        if target not in flow.nodes
    ]
    match node:
        case MenuNode() | LanguageNode():
            problems += _check_prompts(node.id, "prompt", flow.languages, node.prompt)
            problems += _check_options(node, flow.languages)
        case SelfServiceNode():
            problems += _check_prompts(node.id, "answer", flow.languages, node.answer)
            for lang, template in node.answer.items():
                problems += [
                    FlowProblem(
                        node.id, f"answer for {lang!r} uses template field {name!r}, not in allowed fields"
                    )
                    for name in sorted(template.fields - frozenset(allowed_fields))
                ]
        case TransferNode() | HangupNode():
            if node.prompt:
                problems += _check_prompts(node.id, "prompt", flow.languages, node.prompt)
            if isinstance(node, TransferNode) and known_queues is not None and node.queue not in known_queues:
                problems.append(FlowProblem(node.id, f"transfer to unknown queue {node.queue!r}"))
    return problems


def _reachable(flow: Flow, start: str, edges: Mapping[str, list[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node in flow.nodes and node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return seen


def _silent_loops(flow: Flow) -> list[FlowProblem]:
    """One problem per group of nodes a silent caller can circle through forever."""
    edges = {node_id: _silent_targets(node) for node_id, node in flow.nodes.items()}
    reach: dict[str, set[str]] = {}
    for node_id, targets in edges.items():
        reach[node_id] = set()
        for target in targets:
            reach[node_id] |= _reachable(flow, target, edges)
    problems: list[FlowProblem] = []
    reported: set[str] = set()
    for node_id in flow.nodes:
        if node_id in reach[node_id] and node_id not in reported:
            loop = [n for n in flow.nodes if n in reach[node_id] and node_id in reach[n]]
            reported.update(loop)
            problems.append(FlowProblem(node_id, f"loop without caller input through {', '.join(loop)}"))
    return problems


def validate(
    flow: Flow,
    *,
    known_queues: Collection[str] | None = None,
    allowed_fields: Collection[str] = CUSTOMER_FIELDS,
) -> None:
    """Check that a flow is safe to run: every path ends somewhere sensible for every language.

    Args:
        flow: A flow from `parse_flow`.
        known_queues: The queue ids routing knows; None skips the queue check (e.g. without routing config).
        allowed_fields: Customer fields self-service answers may use.

    Raises:
        FlowError: Listing every problem, each naming its node: unknown targets, nodes unreachable from
            `start`, invalid or duplicate digits, menus without options, missing prompts, unknown queues,
            disallowed template fields, and loops a caller who never presses a key would circle forever.
    """
    problems: list[FlowProblem] = []
    if flow.start not in flow.nodes:
        problems.append(FlowProblem(None, f"start node {flow.start!r} does not exist"))
    for node in flow.nodes.values():
        problems += _check_node(node, flow, known_queues, allowed_fields)
    if flow.start in flow.nodes:
        all_edges = {node_id: [t for _, t in _targets(node)] for node_id, node in flow.nodes.items()}
        reachable = _reachable(flow, flow.start, all_edges)
        problems += [
            FlowProblem(n, f"unreachable from start node {flow.start!r}")
            for n in flow.nodes
            if n not in reachable
        ]
    problems += _silent_loops(flow)
    if problems:
        raise FlowError(problems)


def load_flow(
    text: str,
    *,
    known_queues: Collection[str] | None = None,
    allowed_fields: Collection[str] = CUSTOMER_FIELDS,
) -> Flow:
    """Parse and validate a flow file; the way adapters should load one.

    Raises:
        FlowError: See `parse_flow` and `validate`.
    """
    flow = parse_flow(text)
    validate(flow, known_queues=known_queues, allowed_fields=allowed_fields)
    return flow


# --- stepping ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digit:
    """One DTMF key the caller pressed."""

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or len(self.value) != 1 or self.value not in DTMF_KEYS:
            raise InvalidDigitError(self.value)


@dataclass(frozen=True, slots=True)
class Timeout:
    """The caller pressed nothing within the Collect's timeout."""


IvrInput = Digit | Timeout | None


@dataclass(frozen=True, slots=True)
class Play:
    """Speak `prompt_text` to the caller in `language`; answer with input None when done."""

    prompt_text: str
    language: str


@dataclass(frozen=True, slots=True)
class Collect:
    """Wait for up to `max_digits` DTMF keys; answer with a Digit, or a Timeout after `timeout_s`."""

    max_digits: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Transfer:
    """Queue the call for an agent; `attributes` feed routing. The session ends here."""

    queue: str
    attributes: Mapping[str, str]
    language: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call. The session ends here."""


IvrAction = Play | Collect | Transfer | Hangup


class Phase(StrEnum):
    """What a session waits for at its node."""

    ENTER = "enter"  # about to act on the node; expects None
    PROMPTED = "prompted"  # a Play is under way; expects None
    COLLECTING = "collecting"  # a Collect is under way; expects a Digit or a Timeout
    DONE = "done"  # Transfer or Hangup was returned; expects nothing


@dataclass(frozen=True, slots=True)
class IvrState:
    """Where a call is in a flow; small and frozen so an adapter can keep it per call leg."""

    node: str
    language: str
    phase: Phase = Phase.ENTER
    attempts: int = 0  # failed collects at this node so far

    @property
    def finished(self) -> bool:
        """Whether Transfer or Hangup was returned; no further input is accepted."""
        return self.phase is Phase.DONE


@dataclass(frozen=True, slots=True)
class IvrStep:
    """The state after a step, and the one action the switch should perform next."""

    state: IvrState
    action: IvrAction


def start(flow: Flow) -> IvrState:
    """Return the state of a new call: at `flow.start`, in the default language, before any action."""
    return IvrState(flow.start, flow.default_language)


def _say(prompts: Mapping[str, str], state: IvrState) -> IvrStep:
    return IvrStep(replace(state, phase=Phase.PROMPTED), Play(prompts[state.language], state.language))


def _enter(flow: Flow, node_id: str, language: str, data: Mapping[str, object]) -> IvrStep:
    for _ in range(len(flow.nodes) + 1):  # bounded: `validate` rules out loops without input
        node, state = flow.nodes[node_id], IvrState(node_id, language)
        match node:
            case MenuNode() | LanguageNode():
                return _say(node.prompt, state)
            case SelfServiceNode():
                template = node.answer[language]
                if not (missing := template.fields - data.keys()):
                    return IvrStep(
                        replace(state, phase=Phase.PROMPTED), Play(template.render(data), language)
                    )
                if node.on_missing is None:
                    raise MissingCustomerDataError(node_id, missing)
                node_id = node.on_missing
            case TransferNode() | HangupNode():
                return _say(node.prompt, state) if node.prompt else _finish(node, state)
    raise FlowError([FlowProblem(node_id, "loop without caller input")])


def _finish(node: TransferNode | HangupNode, state: IvrState) -> IvrStep:
    done = replace(state, phase=Phase.DONE)
    if isinstance(node, TransferNode):
        return IvrStep(done, Transfer(node.queue, node.attributes, state.language))
    return IvrStep(done, Hangup())


def _collected(
    flow: Flow,
    node: MenuNode | LanguageNode,
    state: IvrState,
    got: Digit | Timeout,
    data: Mapping[str, object],
) -> IvrStep:
    pressed = got.value if isinstance(got, Digit) else None
    if isinstance(node, MenuNode):
        target = next((o.next for o in node.options if o.digit == pressed), None)
        if target is not None:
            return _enter(flow, target, state.language, data)
    else:
        language = next((o.language for o in node.options if o.digit == pressed), None)
        if language is not None:
            return _enter(flow, node.next, language, data)
    attempts = state.attempts + 1
    if attempts <= node.max_retries:
        return _say(node.prompt, replace(state, attempts=attempts))
    if isinstance(node, LanguageNode):
        return _enter(flow, node.next, state.language, data)
    return _enter(
        flow, node.on_timeout if isinstance(got, Timeout) else node.on_invalid, state.language, data
    )


def step(flow: Flow, state: IvrState, input: IvrInput, customer_data: Mapping[str, object]) -> IvrStep:
    """Advance a call by one switch action.

    Args:
        flow: A validated flow.
        state: The call's current state (`start(flow)` for a new call).
        input: None to begin or when the last Play finished; the Digit or Timeout answering the last Collect.
        customer_data: Fields for self-service answers, already formatted for speech (e.g. "58.20").

    Returns:
        The new state and the action the switch should perform.

    Raises:
        UnexpectedInputError: `input` does not answer the action under way, or the session has ended.
        MissingCustomerDataError: A self-service answer lacks fields and its node has no `on_missing`.
    """
    node = flow.nodes[state.node]
    expects_collect = state.phase is Phase.COLLECTING
    if state.phase is Phase.DONE or expects_collect != (input is not None):
        raise UnexpectedInputError(state.node, state.phase, input)
    if state.phase is Phase.ENTER:
        return _enter(flow, state.node, state.language, customer_data)
    match node, input:
        case MenuNode() | LanguageNode(), None:
            return IvrStep(replace(state, phase=Phase.COLLECTING), Collect(1, node.timeout_s))
        case MenuNode() | LanguageNode(), Digit() | Timeout():
            return _collected(flow, node, state, input, customer_data)
        case SelfServiceNode(), None:
            return _enter(flow, node.next, state.language, customer_data)
        case TransferNode() | HangupNode(), None:
            return _finish(node, state)
    raise UnexpectedInputError(state.node, state.phase, input)


class IvrSession:
    """One call's walk through a flow: a mutable holder around the pure `step`, for callers that keep objects.

    Args:
        flow: A validated flow.
        customer_data: Fields for self-service answers, already formatted for speech.
    """

    def __init__(self, flow: Flow, customer_data: Mapping[str, object] | None = None) -> None:
        self.flow = flow
        self.customer_data: Mapping[str, object] = MappingProxyType(dict(customer_data or {}))
        self.state = start(flow)

    @property
    def finished(self) -> bool:
        """Whether the call has left the IVR (transferred or hung up)."""
        return self.state.finished

    def advance(self, input: IvrInput = None) -> IvrAction:
        """Feed what happened on the call and return the next action (see `step`)."""
        result = step(self.flow, self.state, input, self.customer_data)
        self.state = result.state
        return result.action
