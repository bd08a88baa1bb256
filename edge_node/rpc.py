"""gRPC adapter: the CallControl service of proto/callcontrol.proto on grpc.aio. Translates only.

Requests become switchboard calls and the results become responses; protobuf types stop here.
Domain errors map to status codes in one table, :data:`STATUS_BY_ERROR`. The server also runs
the standard health service (grpc.health.v1, SERVING while up) and server reflection, so
grpcurl and SBC tooling can probe and discover it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
import phonenumbers
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from phonenumbers import geocoder

from edge_node.calls import CallRecorder
from edge_node.core.ivr import (
    Collect,
    Digit,
    Flow,
    Hangup,
    InvalidDigitError,
    IvrAction,
    IvrInput,
    MissingCustomerDataError,
    Play,
    Timeout,
    Transfer,
    UnexpectedInputError,
)
from edge_node.core.routing import (
    AgentProfile,
    AgentState,
    AgentStatus,
    Assigned,
    BreakReasonError,
    CallbackOffered,
    Channel,
    ClockWentBackwardsError,
    ContactAssigned,
    ContactCallbackOffered,
    ContactOverflowed,
    ContactQueued,
    ContactRefused,
    ContactStateError,
    Decision,
    DuplicateIdError,
    IllegalTransitionError,
    Overflowed,
    Queued,
    RefusalReason,
    Refused,
    RoutingConfigError,
    RoutingEngine,
    UnknownAgentError,
    UnknownQueueError,
    VipTier,
)
from edge_node.errors import EdgeNodeError
from edge_node.switchboard import (
    Arrival,
    FlowMismatchError,
    QueueSnapshot,
    RoutingUpdate,
    Switchboard,
    UnknownFlowError,
    WatcherTooSlowError,
)
from proto import callcontrol_pb2 as pb
from proto import callcontrol_pb2_grpc as pb_grpc
from sync.entities import CALL_RECORD
from sync.entity import FieldValueError, convert

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CallControl"].full_name
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 3600.0
STOP_GRACE_S = 5.0


# --- errors ---------------------------------------------------------------------------


class BadRequestError(EdgeNodeError):
    """A request field is missing or malformed; `field` names it as the .proto does."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"invalid {field}: {problem}")


class GrpcListenError(EdgeNodeError):
    """The gRPC listener cannot bind."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host, self.port, self.reason = host, port, reason
        super().__init__(f"cannot serve grpc on {host}:{port}: {reason}; choose another --grpc HOST:PORT")


STATUS_BY_ERROR: tuple[tuple[type[EdgeNodeError], grpc.StatusCode], ...] = (
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (RoutingConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (BreakReasonError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidDigitError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownQueueError, grpc.StatusCode.NOT_FOUND),
    (UnknownAgentError, grpc.StatusCode.NOT_FOUND),
    (UnknownFlowError, grpc.StatusCode.NOT_FOUND),
    (DuplicateIdError, grpc.StatusCode.ALREADY_EXISTS),
    (IllegalTransitionError, grpc.StatusCode.FAILED_PRECONDITION),
    (ContactStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnexpectedInputError, grpc.StatusCode.FAILED_PRECONDITION),
    (MissingCustomerDataError, grpc.StatusCode.FAILED_PRECONDITION),
    (FlowMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (WatcherTooSlowError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ClockWentBackwardsError, grpc.StatusCode.INTERNAL),
)
"""Domain error -> gRPC status; the first matching row wins, so subclasses come first."""

_MAPPED = tuple(error for error, _ in STATUS_BY_ERROR)


def status_of(exc: EdgeNodeError) -> grpc.StatusCode:
    """The status code a mapped domain error answers with."""
    return next(code for error, code in STATUS_BY_ERROR if isinstance(exc, error))


async def _abort(context: grpc.aio.ServicerContext, exc: EdgeNodeError) -> NoReturn:
    code = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("call control failed: %s", exc)
    await context.abort(code, str(exc))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


# --- requests -> core -------------------------------------------------------------------

_CHANNELS: Mapping[pb.Channel, Channel] = {
    pb.CHANNEL_VOICE: Channel.VOICE,
    pb.CHANNEL_CHAT: Channel.CHAT,
    pb.CHANNEL_EMAIL: Channel.EMAIL,
    pb.CHANNEL_SMS: Channel.SMS,
}
_TIERS: Mapping[pb.VipTier, VipTier] = {
    pb.VIP_TIER_UNSPECIFIED: VipTier.STANDARD,
    pb.VIP_TIER_STANDARD: VipTier.STANDARD,
    pb.VIP_TIER_SILVER: VipTier.SILVER,
    pb.VIP_TIER_GOLD: VipTier.GOLD,
    pb.VIP_TIER_PLATINUM: VipTier.PLATINUM,
}
_STATES: Mapping[pb.AgentState, AgentState] = {
    pb.AGENT_STATE_OFFLINE: AgentState.OFFLINE,
    pb.AGENT_STATE_AVAILABLE: AgentState.AVAILABLE,
    pb.AGENT_STATE_RESERVED: AgentState.RESERVED,
    pb.AGENT_STATE_ON_CONTACT: AgentState.ON_CONTACT,
    pb.AGENT_STATE_WRAP_UP: AgentState.WRAP_UP,
    pb.AGENT_STATE_BREAK: AgentState.BREAK,
}
_STATE_NUMBERS: Mapping[AgentState, pb.AgentState] = {state: number for number, state in _STATES.items()}
_REQUESTABLE = (AgentState.OFFLINE, AgentState.AVAILABLE, AgentState.BREAK)
_REFUSALS: Mapping[RefusalReason, pb.RefusalReason] = {RefusalReason.QUEUE_FULL: pb.REFUSAL_REASON_QUEUE_FULL}
_PARTIES: Mapping[pb.Party, str | None] = {
    pb.PARTY_UNSPECIFIED: None,
    pb.PARTY_CALLER: "caller",
    pb.PARTY_AGENT: "agent",
}


def contact_id_of(value: str, field: str = "contact_id") -> str:
    """The contact id, checked as the call record's id field is declared."""
    if not value:
        raise BadRequestError(field, "is required")
    try:
        return str(convert(CALL_RECORD.field("id"), value))
    except FieldValueError as exc:
        raise BadRequestError(field, exc.problem) from None


def recording_uri_of(event: pb.ContactEvent) -> str | None:
    """Where the switch stored the contact's recording, checked as the call record declares it.

    None when the event names no recording (unset, or empty after trimming).
    """
    if not event.HasField("recording_uri"):
        return None
    try:
        value = convert(CALL_RECORD.field("recording_uri"), event.recording_uri)
    except FieldValueError as exc:
        raise BadRequestError("recording_uri", exc.problem) from None
    return str(value) if value else None


def caller_location(number: str) -> tuple[str | None, str | None]:
    """ISO 3166 region and area of an E.164 number: the geographic description, else the NDC."""
    if not number:
        return None, None
    if not number.startswith("+"):
        raise BadRequestError("caller_number", f"must be E.164, starting with +; got {number!r}")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise BadRequestError("caller_number", f"not a phone number ({exc}); got {number!r}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise BadRequestError("caller_number", f"not a possible E.164 number: {number!r}")
    region = phonenumbers.region_code_for_number(parsed)
    country = region if region and region.isalpha() and region != "ZZ" else None
    area = geocoder.description_for_number(parsed, "en")
    if not area or area == geocoder.country_name_for_number(parsed, "en"):
        ndc_length = phonenumbers.length_of_national_destination_code(parsed)
        area = phonenumbers.national_significant_number(parsed)[:ndc_length] if ndc_length else ""
    return country, area or None


def arrival_of(request: pb.OfferContactRequest) -> Arrival:
    """An `Arrival` from an OfferContactRequest."""
    contact_id = contact_id_of(request.contact_id)
    channel = _CHANNELS.get(request.channel)
    if channel is None:
        raise BadRequestError("channel", f"must be one of {', '.join(Channel)}")
    tier = _TIERS.get(request.vip_tier)
    if tier is None:
        raise BadRequestError("vip_tier", f"unknown value {request.vip_tier}")
    country, area = caller_location(request.caller_number)
    return Arrival(
        contact_id,
        channel,
        language=request.language or None,
        vip=tier,
        band=request.priority_band,
        inquiry_type=request.inquiry_type or None,
        caller_country=country,
        caller_area=area,
        preferred_agent_id=request.preferred_agent_id or None,
    )


def ivr_input_of(entry: pb.IvrEntry) -> IvrInput:
    match entry.WhichOneof("input"):
        case "digit":
            return Digit(entry.digit)
        case "timeout":
            return Timeout()
    return None


def _instant(timestamp: Any, has: bool) -> datetime | None:
    return timestamp.ToDatetime(tzinfo=UTC) if has else None


def _timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


# --- core -> responses ------------------------------------------------------------------


def decision_message(decision: Decision) -> pb.Decision:
    """A protobuf Decision, recursing through overflows."""
    match decision:
        case Assigned():
            return pb.Decision(agent=_assigned(decision.queue_id, decision.agent_id, decision.by_affinity))
        case Queued():
            return pb.Decision(queued=_queued(decision.queue_id, decision.position, decision.expected_wait_s))
        case Refused():
            return pb.Decision(refused=_refused(decision.queue_id, decision.reason, decision.detail))
        case CallbackOffered():
            return pb.Decision(callback_offered=_callback(decision.queue_id, decision.expected_wait_s))
        case Overflowed():
            return pb.Decision(
                overflowed=pb.ContactOverflowed(
                    from_queue_id=decision.from_queue_id,
                    to_queue_id=decision.to_queue_id,
                    outcome=decision_message(decision.outcome),
                )
            )


def _assigned(queue_id: str, agent_id: str, by_affinity: bool) -> pb.AgentAssigned:
    return pb.AgentAssigned(queue_id=queue_id, agent_id=agent_id, by_affinity=by_affinity)


def _queued(queue_id: str, position: int, expected_wait_s: float | None) -> pb.ContactQueued:
    return pb.ContactQueued(queue_id=queue_id, position=position, expected_wait_s=expected_wait_s)


def _refused(queue_id: str, reason: RefusalReason, detail: str) -> pb.ContactRefused:
    return pb.ContactRefused(queue_id=queue_id, reason=_REFUSALS[reason], detail=detail)


def _callback(queue_id: str, expected_wait_s: float | None) -> pb.CallbackOffered:
    return pb.CallbackOffered(queue_id=queue_id, expected_wait_s=expected_wait_s)


def ivr_step_message(flow: str, action: IvrAction) -> pb.IvrStep:
    match action:
        case Play():
            return pb.IvrStep(
                flow=flow, play=pb.PlayPrompt(text=action.prompt_text, language=action.language)
            )
        case Collect():
            collect = pb.CollectDigits(max_digits=action.max_digits, timeout_s=action.timeout_s)
            return pb.IvrStep(flow=flow, collect=collect)
        case Transfer():
            transfer = pb.TransferToQueue(
                queue_id=action.queue, language=action.language, attributes=dict(action.attributes)
            )
            return pb.IvrStep(flow=flow, transfer=transfer)
        case Hangup():
            return pb.IvrStep(flow=flow, hangup=pb.HangUp())


def agent_message(status: AgentStatus) -> pb.AgentStatus:
    return pb.AgentStatus(
        agent_id=status.agent_id,
        state=_STATE_NUMBERS[status.state],
        presence=_STATE_NUMBERS[status.presence],
        break_reason=status.break_reason or "",
        contact_ids=list(status.contacts),
    )


def figures_message(snapshot: QueueSnapshot) -> pb.QueueFigures:
    q = snapshot.figures
    return pb.QueueFigures(
        queue_id=q.queue_id,
        at=_timestamp(snapshot.at),
        waiting=q.waiting,
        longest_wait_s=q.longest_wait_s,
        service_level=q.service_level,
        service_level_threshold_s=q.service_level_s,
        abandon_rate=q.abandon_rate,
        average_speed_of_answer_s=q.average_speed_of_answer_s,
        staffed_agents=snapshot.staffed_agents,
        answered=q.answered,
        abandoned=q.abandoned,
    )


def update_message(at: datetime, update: RoutingUpdate) -> pb.RoutingUpdate:
    message = pb.RoutingUpdate(contact_id=update.contact_id, at=_timestamp(at))
    match update:
        case ContactAssigned():
            message.agent.CopyFrom(_assigned(update.queue_id, update.agent_id, update.by_affinity))
        case ContactQueued():
            message.queued.CopyFrom(_queued(update.queue_id, update.position, update.expected_wait_s))
        case ContactCallbackOffered():
            message.callback_offered.CopyFrom(_callback(update.queue_id, None))
        case ContactOverflowed():
            message.overflowed.from_queue_id = update.from_queue_id
            message.overflowed.to_queue_id = update.to_queue_id
        case ContactRefused():
            message.refused.CopyFrom(_refused(update.queue_id, update.reason, update.detail))
    return message


# --- the service ----------------------------------------------------------------------


class CallControlServicer(pb_grpc.CallControlServicer):
    """CallControl on a switchboard."""

    def __init__(self, switchboard: Switchboard) -> None:
        self.switchboard = switchboard

    async def OfferContact(
        self, request: pb.OfferContactRequest, context: grpc.aio.ServicerContext
    ) -> pb.OfferContactResponse:
        log.debug("<<- OfferContact %s", request.contact_id)
        try:
            arrival = arrival_of(request)
            match request.WhichOneof("target"):
                case "queue_id":
                    decision = self.switchboard.offer(arrival, request.queue_id)
                    message = decision_message(decision)
                case "ivr":
                    if not request.ivr.flow:
                        raise BadRequestError("ivr.flow", "is required")
                    action = self.switchboard.ivr(arrival, request.ivr.flow, ivr_input_of(request.ivr))
                    message = pb.Decision(ivr_step=ivr_step_message(request.ivr.flow, action))
                case _:
                    raise BadRequestError("target", "set queue_id or ivr")
        except _MAPPED as exc:
            await _abort(context, exc)
        return pb.OfferContactResponse(contact_id=arrival.contact_id, decision=message)

    async def ReportEvents(
        self, request_iterator: AsyncIterator[pb.ContactEvent], context: grpc.aio.ServicerContext
    ) -> pb.ReportEventsResponse:
        received = applied = 0
        rejected = []
        async for event in request_iterator:
            index, received = received, received + 1
            try:
                self._apply_event(event)
            except _MAPPED as exc:
                rejected.append(
                    pb.RejectedEvent(
                        index=index, contact_id=event.contact_id, status=status_of(exc).name, detail=str(exc)
                    )
                )
            else:
                applied += 1
        log.info("%d switch events applied, %d rejected", applied, len(rejected))
        return pb.ReportEventsResponse(received=received, applied=applied, rejected=rejected)

    def _apply_event(self, event: pb.ContactEvent) -> None:
        log.debug("<<- %s %s", event.WhichOneof("kind"), event.contact_id)
        board, contact_id = self.switchboard, contact_id_of(event.contact_id)
        at = _instant(event.occurred_at, event.HasField("occurred_at"))
        kind = event.WhichOneof("kind")
        if kind is None:
            raise BadRequestError(
                "kind", "set one of ringing, answered, abandoned, transferred, ended, declined"
            )
        recording_uri = recording_uri_of(event)  # checked first: a refused event changes nothing
        self._apply_kind(event, kind, contact_id, at)
        if recording_uri is not None:  # a record-only fact, so straight to the recorder, after the event
            board.recorder.recorded(contact_id, recording_uri)

    def _apply_kind(self, event: pb.ContactEvent, kind: str, contact_id: str, at: datetime | None) -> None:
        board = self.switchboard
        if kind == "abandoned":
            board.abandoned(contact_id, at)
            return
        if not event.agent_id:
            raise BadRequestError("agent_id", f"is required for {kind}")
        match kind:
            case "ringing":
                board.ringing(contact_id, event.agent_id, at)
            case "answered":
                board.answered(contact_id, event.agent_id, at)
            case "declined":
                board.declined(contact_id, event.agent_id, event.declined.reason or "no_answer", at)
            case "transferred":
                target = event.transferred.target or None
                board.ended(contact_id, event.agent_id, transferred_to=target, occurred_at=at)
            case "ended":
                board.ended(
                    contact_id, event.agent_id, by=_PARTIES.get(event.ended.hung_up_by), occurred_at=at
                )

    async def SetAgentState(
        self, request: pb.SetAgentStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetAgentStateResponse:
        try:
            if not request.agent_id:
                raise BadRequestError("agent_id", "is required")
            state = _STATES.get(request.state)
            if state not in _REQUESTABLE:
                raise BadRequestError("state", f"must be one of {', '.join(_REQUESTABLE)}")
            status = self.switchboard.set_agent_state(request.agent_id, state, request.break_reason or None)
        except _MAPPED as exc:
            await _abort(context, exc)
        return pb.SetAgentStateResponse(agent=agent_message(status))

    async def WatchQueues(
        self, request: pb.WatchQueuesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.QueueFigures]:
        interval_s = request.interval_s
        queue_ids = list(request.queue_ids)
        try:
            if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
                raise BadRequestError("interval_s", f"must be {MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds")
            self.switchboard.queue_figures(queue_ids)  # unknown queues fail before the first round
        except _MAPPED as exc:
            await _abort(context, exc)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            for snapshot in self.switchboard.queue_figures(queue_ids):
                yield figures_message(snapshot)
            due += interval_s
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def WatchRouting(
        self, request: pb.WatchRoutingRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RoutingUpdate]:
        with self.switchboard.watch_routing() as watch:
            await context.send_initial_metadata(())  # tells the client it is subscribed
            try:
                async for at, update in watch:
                    log.debug("->> routing update %s %s", type(update).__name__, update.contact_id)
                    yield update_message(at, update)
            except _MAPPED as exc:
                await _abort(context, exc)


# --- the server -----------------------------------------------------------------------


class CallControlServer:
    """A started gRPC server, its switchboard, and the routing timer its owner runs."""

    def __init__(self, server: grpc.aio.Server, switchboard: Switchboard, health: Any) -> None:
        self.server = server
        self.switchboard = switchboard
        self._health = health

    async def run_timer(self) -> None:
        """The routing timer: run it in the owner's TaskGroup for as long as the server serves."""
        await self.switchboard.run_timer()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Report NOT_SERVING, then stop, letting calls in flight finish within `grace_s`."""
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def serve_grpc(
    engine: RoutingEngine,
    recorder: CallRecorder,
    host: str,
    port: int,
    *,
    agents: Sequence[AgentProfile] = (),
    flows: Mapping[str, Flow] | None = None,
) -> tuple[CallControlServer, int]:
    """Start CallControl, health and reflection on HOST:PORT (port 0 picks one).

    Args:
        engine: The routing engine with its queues; `agents` are registered on it (offline).
        recorder: Receives the call records; run its `run()` alongside.
        flows: IVR flows by name.

    Returns:
        The server (run its `run_timer()` alongside, `stop()` it at the end) and the bound port.

    Raises:
        GrpcListenError: The address cannot be bound.
    """
    switchboard = Switchboard(engine, recorder, agents=agents, flows=flows)
    server = grpc.aio.server()
    servicer = CallControlServicer(switchboard)
    pb_grpc.add_CallControlServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]  # generated
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcListenError(host, port, str(exc)) from None
    if bound == 0:
        raise GrpcListenError(host, port, "the address is in use or unavailable")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc call control serving on %s:%d", host, bound)
    return CallControlServer(server, switchboard, health_servicer), bound
