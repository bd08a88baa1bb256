"""IVR flows: the example flow, each validation rule on a small broken flow, walks through the stepper."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from edge_node.core.ivr import (
    Collect,
    Digit,
    Flow,
    FlowError,
    Hangup,
    InvalidDigitError,
    IvrAction,
    IvrError,
    IvrInput,
    IvrSession,
    IvrState,
    LanguageNode,
    MenuNode,
    MenuOption,
    MissingCustomerDataError,
    Phase,
    Play,
    SelfServiceNode,
    Timeout,
    Transfer,
    UnexpectedInputError,
    load_flow,
    parse_flow,
    start,
    step,
    validate,
)
from edge_node.errors import EdgeNodeError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "deploy" / "ivr.example.toml").read_text(encoding="utf-8")
QUEUES = frozenset({"sales", "tech", "billing", "general"})
CUSTOMER = {"balance": "58.20", "currency": "元", "due_date": "6月30日"}

MAIN_ZH = "话费余额查询请按1，套餐变更请按2，故障报修请按3，人工服务请按0。"


def toml(text: str) -> str:
    return textwrap.dedent(text)


# The smallest valid flow; broken variants below add or change one thing.
TINY = toml("""
    start = "main"
    languages = ["en"]

    [nodes.main]
    type = "menu"
    prompt.en = "Press 1 to leave."
    on_timeout = "bye"
    on_invalid = "bye"

    [[nodes.main.options]]
    digit = "1"
    next = "bye"

    [nodes.bye]
    type = "hangup"
    """)


def problems(text: str, **kwargs: frozenset[str]) -> list[str]:
    """The problems `load_flow` reports for `text`, as strings."""
    with pytest.raises(FlowError) as info:
        load_flow(text, **kwargs)
    assert [str(p) for p in info.value.problems] == str(info.value).split(": ", 1)[1].split("; ")
    return [str(p) for p in info.value.problems]


def walk(flow: Flow, inputs: list[IvrInput], data: Mapping[str, object] = CUSTOMER) -> list[IvrAction]:
    session = IvrSession(flow, data)
    return [session.advance(i) for i in inputs]


@pytest.fixture(scope="module")
def example() -> Flow:
    return load_flow(EXAMPLE, known_queues=QUEUES)


# --- loading ------------------------------------------------------------------------------


def test_example_flow_loads_and_validates(example: Flow) -> None:
    assert example.start == "welcome"
    assert example.languages == ("zh", "en")
    assert example.default_language == "zh"
    assert isinstance(example.nodes["welcome"], LanguageNode)
    main = example.nodes["main"]
    assert isinstance(main, MenuNode)
    assert [o.digit for o in main.options] == ["1", "2", "3", "0"]
    balance = example.nodes["balance"]
    assert isinstance(balance, SelfServiceNode)
    assert balance.answer["en"].fields == {"balance", "currency", "due_date"}
    validate(example)  # without a queue list the queue check is skipped


def test_parsed_flow_is_immutable(example: Flow) -> None:
    with pytest.raises(TypeError):
        example.nodes["x"] = example.nodes["main"]  # type: ignore[index]  # the point is that it fails


def test_tiny_flow_loads() -> None:
    flow = load_flow(TINY)
    assert flow.nodes["main"] == MenuNode(
        "main", {"en": "Press 1 to leave."}, (MenuOption("1", "bye"),), "bye", "bye", 5.0, 2
    )


# --- validation rules, one broken flow each -------------------------------------------


def test_unknown_target_node() -> None:
    text = TINY.replace('on_invalid = "bye"', 'on_invalid = "byee"').replace(
        'next = "bye"', 'next = "nowhere"'
    )
    assert problems(text) == [
        "node 'main': option '1' targets unknown node 'nowhere'",
        "node 'main': on_invalid targets unknown node 'byee'",
    ]


def test_unreachable_node() -> None:
    text = TINY + toml("""
        [nodes.orphan]
        type = "hangup"
        """)
    assert problems(text) == ["node 'orphan': unreachable from start node 'main'"]


def test_unknown_start_node() -> None:
    assert problems(TINY.replace('start = "main"', 'start = "begin"')) == [
        "flow: start node 'begin' does not exist"
    ]


def test_duplicate_dtmf_option() -> None:
    text = TINY + toml("""
        [[nodes.main.options]]
        digit = "1"
        next = "main"
        """)
    assert problems(text) == ["node 'main': duplicate option for digit '1'"]


@pytest.mark.parametrize("digit", ["a", "12", "", "＃"])
def test_invalid_digit(digit: str) -> None:
    text = TINY.replace('digit = "1"', f'digit = "{digit}"')
    assert problems(text) == [f"node 'main': invalid digit {digit!r}, expected one of 0-9, * or #"]


def test_star_and_hash_are_digits() -> None:
    load_flow(TINY.replace('digit = "1"', 'digit = "*"'))
    load_flow(TINY.replace('digit = "1"', 'digit = "#"'))


def test_missing_prompt_for_a_declared_language() -> None:
    text = TINY.replace('languages = ["en"]', 'languages = ["en", "zh"]')
    assert problems(text) == ["node 'main': missing prompt for declared language 'zh'"]


def test_prompt_for_an_undeclared_language() -> None:
    text = TINY.replace('prompt.en = "Press 1 to leave."', 'prompt.en = "Press 1."\nprompt.cn = "请按1。"')
    assert problems(text) == ["node 'main': prompt for undeclared language 'cn'"]


def test_menu_without_any_prompt_misses_every_language() -> None:
    text = TINY.replace('prompt.en = "Press 1 to leave."\n', "")
    assert problems(text) == ["node 'main': missing prompt for declared language 'en'"]


def test_optional_hangup_prompt_must_cover_every_language_when_given() -> None:
    text = TINY.replace('languages = ["en"]', 'languages = ["en", "zh"]').replace(
        'prompt.en = "Press 1 to leave."', 'prompt.en = "Press 1."\nprompt.zh = "请按1。"'
    )
    assert problems(text + 'prompt.en = "Bye."\n') == [
        "node 'bye': missing prompt for declared language 'zh'"
    ]


TRANSFER = toml("""
    start = "main"
    languages = ["en"]

    [nodes.main]
    type = "transfer"
    queue = "vip"

    [nodes.main.attributes]
    inquiry_type = "general"
    """)


def test_transfer_to_an_unknown_queue() -> None:
    assert problems(TRANSFER, known_queues=QUEUES) == ["node 'main': transfer to unknown queue 'vip'"]
    load_flow(TRANSFER, known_queues=frozenset({"vip"}))
    load_flow(TRANSFER)  # no queue list: not checked


SELF_SERVICE = toml("""
    start = "main"
    languages = ["en"]

    [nodes.main]
    type = "self_service"
    answer.en = "Your balance is {balance} {currency}. Hello {password}."
    next = "bye"

    [nodes.bye]
    type = "hangup"
    """)


def test_template_field_not_in_the_allowed_set() -> None:
    assert problems(SELF_SERVICE) == [
        "node 'main': answer for 'en' uses template field 'password', not in allowed fields"
    ]
    flow = load_flow(SELF_SERVICE, allowed_fields=frozenset({"balance", "currency", "password"}))
    assert flow.nodes["main"].answer["en"].fields == {"balance", "currency", "password"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("{balance", "is not a valid template"),
        ("{balance.__class__}", "has placeholder {balance.__class__} but only plain {field} is allowed"),
        ("{balance:.2f}", "has placeholder {balance:.2f} but only plain {field} is allowed"),
        ("{0}", "has placeholder {0}"),
        ("{}", "has placeholder {}"),
    ],
)
def test_template_placeholders_must_be_plain_names(answer: str, problem: str) -> None:
    text = SELF_SERVICE.replace("Your balance is {balance} {currency}. Hello {password}.", answer)
    [found] = problems(text)
    assert found.startswith("node 'main': answer for 'en' ")
    assert problem in found


def test_literal_braces_are_escaped_by_doubling() -> None:
    text = SELF_SERVICE.replace("Hello {password}.", "{{not a field}}")
    session = IvrSession(load_flow(text), {"balance": "3", "currency": "EUR"})
    assert session.advance() == Play("Your balance is 3 EUR. {not a field}", "en")


def test_menu_with_no_options() -> None:
    text = TINY.replace('[[nodes.main.options]]\ndigit = "1"\nnext = "bye"\n', "")
    assert problems(text) == ["node 'main': menu has no options"]


def test_language_menu_with_no_options_and_an_undeclared_language() -> None:
    text = toml("""
        start = "pick"
        languages = ["en"]

        [nodes.pick]
        type = "language"
        prompt.en = "Choose."
        next = "bye"

        [nodes.bye]
        type = "hangup"
        """)
    assert problems(text) == ["node 'pick': language menu has no options"]
    text += '[[nodes.pick.options]]\ndigit = "2"\nlanguage = "fr"\n'
    assert problems(text) == ["node 'pick': option '2' selects undeclared language 'fr'"]


def test_loop_of_non_interactive_nodes() -> None:
    text = toml("""
        start = "a"
        languages = ["en"]

        [nodes.a]
        type = "self_service"
        answer.en = "Balance {balance}."
        next = "b"

        [nodes.b]
        type = "self_service"
        answer.en = "Again {balance}."
        next = "a"
        """)
    assert problems(text) == ["node 'a': loop without caller input through a, b"]


def test_loop_a_silent_caller_would_never_leave() -> None:
    # Timeouts are not input: a menu that falls back to itself replays forever for a silent caller.
    text = TINY.replace('on_timeout = "bye"', 'on_timeout = "main"')
    assert problems(text) == ["node 'main': loop without caller input through main"]


def test_loops_through_a_key_press_are_fine() -> None:
    text = TINY + toml("""
        [[nodes.main.options]]
        digit = "9"
        next = "main"
        """)
    load_flow(text.replace('on_invalid = "bye"', 'on_invalid = "main"'))


def test_every_problem_is_reported_at_once() -> None:
    text = toml("""
        start = "main"
        languages = ["en", "zh"]

        [nodes.main]
        type = "menu"
        prompt.en = "Choose."
        on_timeout = "bye"
        on_invalid = "ghost"

        [[nodes.main.options]]
        digit = "1"
        next = "sales"

        [[nodes.main.options]]
        digit = "1"
        next = "bye"

        [[nodes.main.options]]
        digit = "x"
        next = "bye"

        [nodes.sales]
        type = "transfer"
        queue = "salez"

        [nodes.bye]
        type = "hangup"

        [nodes.lost]
        type = "hangup"
        """)
    with pytest.raises(FlowError) as info:
        load_flow(text, known_queues=QUEUES)
    assert [(p.node, p.problem) for p in info.value.problems] == [
        ("main", "on_invalid targets unknown node 'ghost'"),
        ("main", "missing prompt for declared language 'zh'"),
        ("main", "duplicate option for digit '1'"),
        ("main", "invalid digit 'x', expected one of 0-9, * or #"),
        ("sales", "transfer to unknown queue 'salez'"),
        ("lost", "unreachable from start node 'main'"),
    ]
    assert str(info.value).startswith("invalid ivr flow, 6 problems: node 'main': on_invalid targets")
    assert isinstance(info.value, IvrError)
    assert isinstance(info.value, EdgeNodeError)


# --- shape errors from parse_flow --------------------------------------------------------


def test_text_that_is_not_toml() -> None:
    with pytest.raises(FlowError, match="flow: not valid toml"):
        parse_flow("start = ")


def test_toml_with_a_node_declared_twice_is_rejected_by_toml_itself() -> None:
    with pytest.raises(FlowError, match="not valid toml"):
        parse_flow(TINY + '[nodes.bye]\ntype = "hangup"\n')


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            'type = "hangup"',
            'type = "voicemail"',
            "node 'bye': type must be one of menu, language, self_service",
        ),
        (
            'type = "hangup"',
            'type = "hangup"\ncolour = "red"',
            "node 'bye': unknown key 'colour' in a hangup node",
        ),
        ('digit = "1"', "digit = 1", "node 'main': option digit must be a string such as \"1\", got 1"),
        ('next = "bye"', 'next = "bye"\nlabel = "x"', "node 'main': unknown key 'label' in an option"),
        ('on_timeout = "bye"\n', "", "node 'main': missing 'on_timeout'"),
        ('on_timeout = "bye"', 'on_timeout = "bye"\nmax_retries = -1', "node 'main': 'max_retries' must be"),
        (
            'on_timeout = "bye"',
            'on_timeout = "bye"\ntimeout_s = 0',
            "node 'main': 'timeout_s' must be a number",
        ),
        ('prompt.en = "Press 1 to leave."', "prompt.en = 3", "node 'main': 'prompt' must be a table of"),
        ('languages = ["en"]', "languages = []", "flow: 'languages' must be a non-empty array"),
        ('languages = ["en"]', 'languages = ["en"]\ndefault_language = "zh"', "flow: default_language 'zh'"),
        ('start = "main"', 'start = "main"\ntitle = "x"', "flow: unknown key 'title' in the flow"),
    ],
)
def test_shape_errors_name_node_and_problem(old: str, new: str, problem: str) -> None:
    assert old in TINY
    with pytest.raises(FlowError) as info:
        parse_flow(TINY.replace(old, new, 1))
    assert any(str(p).startswith(problem) for p in info.value.problems), info.value.problems


def test_options_must_be_an_array_of_tables() -> None:
    text = TINY.replace('[[nodes.main.options]]\ndigit = "1"\nnext = "bye"\n', "").replace(
        'on_timeout = "bye"', 'on_timeout = "bye"\noptions = { 1 = "bye" }'
    )
    with pytest.raises(
        FlowError, match=r"'options' must be an array of tables \(\[\[nodes.main.options\]\]\)"
    ):
        parse_flow(text)


# --- stepping through the example ----------------------------------------------------


def test_walk_language_bill_query_balance_then_transfer(example: Flow) -> None:
    actions = walk(example, [None, None, Digit("1"), None, Digit("1"), None, None, Digit("0"), None])
    assert actions == [
        Play(example.nodes["welcome"].prompt["zh"], "zh"),  # type: ignore[union-attr]
        Collect(max_digits=1, timeout_s=5.0),
        Play(MAIN_ZH, "zh"),  # 1: 普通话
        Collect(max_digits=1, timeout_s=6.0),
        Play("您的账户余额为 58.20 元，本期账单到期日为 6月30日。", "zh"),  # 1: balance
        Play(example.nodes["after_balance"].prompt["zh"], "zh"),  # type: ignore[union-attr]
        Collect(max_digits=1, timeout_s=5.0),
        Play("正在为您转接账单专员，请稍候。", "zh"),  # 0: billing agent
        Transfer("billing", {"inquiry_type": "bill_query", "priority_band": "normal"}, "zh"),
    ]


def test_walk_in_english_hears_the_balance_in_english(example: Flow) -> None:
    actions = walk(
        example,
        [None, None, Digit("2"), None, Digit("1")],
        {"balance": "12.00", "currency": "USD", "due_date": "June 30"},
    )
    assert actions[-1] == Play("Your balance is 12.00 USD. Your bill is due on June 30.", "en")


@pytest.mark.parametrize(
    ("digit", "queue", "inquiry", "band"),
    [
        ("2", "general", "plan_change", "normal"),
        ("3", "tech", "fault_report", "high"),
        ("0", "general", "general", "normal"),
    ],
)
def test_main_menu_transfers(example: Flow, digit: str, queue: str, inquiry: str, band: str) -> None:
    actions = walk(example, [None, None, Digit("2"), None, Digit(digit), None])
    assert isinstance(actions[-2], Play)
    assert actions[-1] == Transfer(queue, {"inquiry_type": inquiry, "priority_band": band}, "en")


def test_repeat_and_back_to_main_menu(example: Flow) -> None:
    actions = walk(
        example, [None, None, Digit("1"), None, Digit("1"), None, None, Digit("1"), None, None, Digit("9")]
    )
    assert actions[4] == actions[7]  # the balance, twice
    assert actions[-1] == Play(MAIN_ZH, "zh")


def test_missing_customer_data_goes_to_on_missing(example: Flow) -> None:
    actions = walk(example, [None, None, Digit("1"), None, Digit("1"), None], {"balance": "3"})
    assert actions[-2] == Play("正在为您转接账单专员，请稍候。", "zh")
    assert actions[-1] == Transfer("billing", {"inquiry_type": "bill_query", "priority_band": "normal"}, "zh")


def test_missing_customer_data_without_on_missing_raises() -> None:
    session = IvrSession(
        load_flow(SELF_SERVICE, allowed_fields=frozenset({"balance", "currency", "password"})),
        {"balance": "3"},
    )
    with pytest.raises(MissingCustomerDataError) as info:
        session.advance()
    assert (info.value.node, info.value.fields) == ("main", ("currency", "password"))
    assert str(info.value) == "self-service node 'main' needs customer data currency, password"


# --- retries and fallbacks -------------------------------------------------------------


def test_timeouts_replay_the_prompt_then_fall_back(example: Flow) -> None:
    # main allows 2 re-prompts; the third silence goes to on_timeout (an agent).
    actions = walk(example, [None, None, Digit("1"), None, Timeout(), None, Timeout(), None, Timeout(), None])
    assert actions[2:9] == [
        Play(MAIN_ZH, "zh"),
        Collect(1, 6.0),
        Play(MAIN_ZH, "zh"),
        Collect(1, 6.0),
        Play(MAIN_ZH, "zh"),
        Collect(1, 6.0),
        Play("正在为您转接人工客服，请稍候。", "zh"),
    ]
    assert actions[-1] == Transfer("general", {"inquiry_type": "general", "priority_band": "normal"}, "zh")


def test_retries_count_wrong_keys_and_timeouts_together(example: Flow) -> None:
    flow = example
    state = IvrState("main", "en", Phase.COLLECTING)
    state = step(flow, state, Digit("7"), CUSTOMER).state
    assert (state.node, state.phase, state.attempts) == ("main", Phase.PROMPTED, 1)
    state = step(flow, step(flow, state, None, CUSTOMER).state, Timeout(), CUSTOMER).state
    assert state.attempts == 2
    result = step(flow, step(flow, state, None, CUSTOMER).state, Digit("8"), CUSTOMER)
    assert result.state.node == "agent"  # on_invalid, since the last failure was a wrong key


def test_a_right_key_after_retries_resets_the_count(example: Flow) -> None:
    state = step(example, IvrState("main", "en", Phase.COLLECTING, attempts=2), Digit("1"), CUSTOMER).state
    assert (state.node, state.attempts) == ("balance", 0)


def test_after_balance_invalid_returns_to_main_and_silence_says_goodbye(example: Flow) -> None:
    at_after = IvrState("after_balance", "en", Phase.COLLECTING, attempts=1)
    assert step(example, at_after, Digit("5"), CUSTOMER).state.node == "main"
    bye = step(example, at_after, Timeout(), CUSTOMER)
    assert bye.action == Play("Thank you for calling. Goodbye.", "en")
    assert step(example, bye.state, None, CUSTOMER).action == Hangup()


def test_silent_caller_at_language_selection_continues_in_the_default_language(example: Flow) -> None:
    actions = walk(example, [None, None, Timeout(), None, Timeout()])  # max_retries = 1
    assert actions[-1] == Play(MAIN_ZH, "zh")


def test_hangup_and_transfer_without_prompt_act_at_once() -> None:
    assert walk(load_flow(TRANSFER), [None]) == [Transfer("vip", {"inquiry_type": "general"}, "en")]
    assert walk(load_flow(TINY), [None, None, Digit("1")])[-1] == Hangup()


# --- the stepper's contract ------------------------------------------------------------


def test_step_is_pure(example: Flow) -> None:
    state = start(example)
    assert state == IvrState("welcome", "zh", Phase.ENTER, 0)
    first, again = step(example, state, None, CUSTOMER), step(example, state, None, CUSTOMER)
    assert first == again
    assert state == start(example)


@pytest.mark.parametrize(
    ("phase", "got"),
    [
        (Phase.ENTER, Digit("1")),
        (Phase.PROMPTED, Digit("1")),
        (Phase.PROMPTED, Timeout()),
        (Phase.COLLECTING, None),
        (Phase.DONE, None),
        (Phase.DONE, Digit("1")),
    ],
)
def test_input_the_session_is_not_waiting_for_is_refused(example: Flow, phase: Phase, got: IvrInput) -> None:
    with pytest.raises(UnexpectedInputError) as info:
        step(example, IvrState("main", "zh", phase), got, CUSTOMER)
    assert (info.value.node, info.value.phase, info.value.got) == ("main", str(phase), got)
    assert str(info.value) == f"unexpected input {got!r} at node 'main' in phase '{phase}'"


def test_session_reports_when_it_is_finished(example: Flow) -> None:
    session = IvrSession(example, CUSTOMER)
    for got in [None, None, Digit("2"), None, Digit("3"), None]:
        assert not session.finished
        session.advance(got)
    assert session.finished
    with pytest.raises(UnexpectedInputError):
        session.advance()


@pytest.mark.parametrize("value", ["a", "12", "", "#1", 1])
def test_digits_are_single_dtmf_keys(value: str) -> None:
    with pytest.raises(InvalidDigitError) as info:
        Digit(value)
    assert info.value.value == value
    assert str(info.value) == f"invalid dtmf digit {value!r}; expected one of 0-9, * or #"
