"""The gRPC adapter's translations, without a server: numbers, decisions, the error table."""

from __future__ import annotations

import grpc
import pytest

from edge_node.core.ivr import InvalidDigitError
from edge_node.core.routing import (
    Assigned,
    IllegalTransitionError,
    Overflowed,
    Queued,
    RefusalReason,
    Refused,
    RoutingConfigError,
    UnknownAgentError,
    UnknownQueueError,
)
from edge_node.errors import EdgeNodeError
from edge_node.rpc import (
    STATUS_BY_ERROR,
    BadRequestError,
    caller_location,
    decision_message,
    recording_uri_of,
    status_of,
)
from edge_node.switchboard import UnknownFlowError, WatcherTooSlowError
from proto import callcontrol_pb2 as pb


@pytest.mark.parametrize(
    ("number", "country", "area"),
    [
        ("+4930123456", "DE", "Berlin"),  # geographic: the area's name
        ("+491701234567", "DE", "170"),  # mobile: no area name, so the national destination code
        ("+14155552671", "US", "San Francisco, CA"),
        ("+861065529988", "CN", "Beijing"),
        ("", None, None),  # withheld number
    ],
)
def test_caller_country_and_area_come_from_the_number(
    number: str, country: str | None, area: str | None
) -> None:
    assert caller_location(number) == (country, area)


@pytest.mark.parametrize("number", ["004930123456", "+12", "+49 abc", "030123456"])
def test_a_number_that_is_not_e164_is_bad_input_naming_the_field(number: str) -> None:
    with pytest.raises(BadRequestError, match=r"^invalid caller_number: ") as caught:
        caller_location(number)
    assert caught.value.field == "caller_number"


def test_an_overflow_decision_nests_its_outcome() -> None:
    decision = Overflowed(
        "c1",
        "first",
        "second",
        Overflowed("c1", "second", "third", Refused("c1", "third", RefusalReason.QUEUE_FULL, "full")),
    )
    message = decision_message(decision)
    assert message.overflowed.to_queue_id == "second"
    inner = message.overflowed.outcome.overflowed
    assert (inner.from_queue_id, inner.to_queue_id) == ("second", "third")
    assert inner.outcome.refused == pb.ContactRefused(
        queue_id="third", reason=pb.REFUSAL_REASON_QUEUE_FULL, detail="full"
    )


def test_a_queued_decision_without_an_estimate_leaves_the_expected_wait_unset() -> None:
    assert not decision_message(Queued("c1", "q", 3, None)).queued.HasField("expected_wait_s")
    assert decision_message(Assigned("c1", "q", "ann", by_affinity=True)).agent.by_affinity


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequestError("channel", "is required"), grpc.StatusCode.INVALID_ARGUMENT),
        (RoutingConfigError("channel", "fax", "unknown"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidDigitError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownQueueError("q"), grpc.StatusCode.NOT_FOUND),
        (UnknownAgentError("a"), grpc.StatusCode.NOT_FOUND),
        (UnknownFlowError("f", ()), grpc.StatusCode.NOT_FOUND),
        (
            IllegalTransitionError("a", "offline", "offline", ["available"]),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (WatcherTooSlowError(10), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_domain_errors_map_to_status_codes_in_one_table(error: EdgeNodeError, code: grpc.StatusCode) -> None:
    assert status_of(error) is code


def test_no_row_of_the_table_is_shadowed_by_an_earlier_one() -> None:
    types = [error for error, _ in STATUS_BY_ERROR]
    for i, later in enumerate(types):
        assert not any(issubclass(later, earlier) for earlier in types[:i]), later


@pytest.mark.parametrize(
    ("event", "uri"),
    [
        (pb.ContactEvent(contact_id="c1"), None),  # unset: nothing to record
        (pb.ContactEvent(contact_id="c1", recording_uri=""), None),
        (pb.ContactEvent(contact_id="c1", recording_uri="  "), None),
        (pb.ContactEvent(contact_id="c1", recording_uri=" file:///rec/c1.wav "), "file:///rec/c1.wav"),
        (pb.ContactEvent(contact_id="c1", recording_uri="s3://r/" + "x" * 505), "s3://r/" + "x" * 505),
    ],
)
def test_the_recording_uri_is_read_as_the_call_record_declares_it(
    event: pb.ContactEvent, uri: str | None
) -> None:
    assert recording_uri_of(event) == uri


def test_a_recording_uri_over_512_characters_is_bad_input_naming_the_field() -> None:
    event = pb.ContactEvent(contact_id="c1", recording_uri="s3://r/" + "x" * 506)
    with pytest.raises(
        BadRequestError, match=r"^invalid recording_uri: longer than 512 characters$"
    ) as caught:
        recording_uri_of(event)
    assert caught.value.field == "recording_uri"
    assert status_of(caught.value) is grpc.StatusCode.INVALID_ARGUMENT
