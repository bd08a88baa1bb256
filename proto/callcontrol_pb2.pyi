import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_VOICE: _ClassVar[Channel]
    CHANNEL_CHAT: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]

class VipTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIP_TIER_UNSPECIFIED: _ClassVar[VipTier]
    VIP_TIER_STANDARD: _ClassVar[VipTier]
    VIP_TIER_SILVER: _ClassVar[VipTier]
    VIP_TIER_GOLD: _ClassVar[VipTier]
    VIP_TIER_PLATINUM: _ClassVar[VipTier]

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_OFFLINE: _ClassVar[AgentState]
    AGENT_STATE_AVAILABLE: _ClassVar[AgentState]
    AGENT_STATE_RESERVED: _ClassVar[AgentState]
    AGENT_STATE_ON_CONTACT: _ClassVar[AgentState]
    AGENT_STATE_WRAP_UP: _ClassVar[AgentState]
    AGENT_STATE_BREAK: _ClassVar[AgentState]

class RefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_REASON_UNSPECIFIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_QUEUE_FULL: _ClassVar[RefusalReason]

class Party(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTY_UNSPECIFIED: _ClassVar[Party]
    PARTY_CALLER: _ClassVar[Party]
    PARTY_AGENT: _ClassVar[Party]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_VOICE: Channel
CHANNEL_CHAT: Channel
CHANNEL_EMAIL: Channel
CHANNEL_SMS: Channel
VIP_TIER_UNSPECIFIED: VipTier
VIP_TIER_STANDARD: VipTier
VIP_TIER_SILVER: VipTier
VIP_TIER_GOLD: VipTier
VIP_TIER_PLATINUM: VipTier
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_OFFLINE: AgentState
AGENT_STATE_AVAILABLE: AgentState
AGENT_STATE_RESERVED: AgentState
AGENT_STATE_ON_CONTACT: AgentState
AGENT_STATE_WRAP_UP: AgentState
AGENT_STATE_BREAK: AgentState
REFUSAL_REASON_UNSPECIFIED: RefusalReason
REFUSAL_REASON_QUEUE_FULL: RefusalReason
PARTY_UNSPECIFIED: Party
PARTY_CALLER: Party
PARTY_AGENT: Party

class OfferContactRequest(_message.Message):
    __slots__ = ("contact_id", "channel", "caller_number", "language", "vip_tier", "inquiry_type", "queue_id", "ivr", "preferred_agent_id", "priority_band")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CALLER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    VIP_TIER_FIELD_NUMBER: _ClassVar[int]
    INQUIRY_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    IVR_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_BAND_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    channel: Channel
    caller_number: str
    language: str
    vip_tier: VipTier
    inquiry_type: str
    queue_id: str
    ivr: IvrEntry
    preferred_agent_id: str
    priority_band: int
    def __init__(self, contact_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., caller_number: _Optional[str] = ..., language: _Optional[str] = ..., vip_tier: _Optional[_Union[VipTier, str]] = ..., inquiry_type: _Optional[str] = ..., queue_id: _Optional[str] = ..., ivr: _Optional[_Union[IvrEntry, _Mapping]] = ..., preferred_agent_id: _Optional[str] = ..., priority_band: _Optional[int] = ...) -> None: ...

class IvrEntry(_message.Message):
    __slots__ = ("flow", "digit", "timeout")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    DIGIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    flow: str
    digit: str
    timeout: CollectTimedOut
    def __init__(self, flow: _Optional[str] = ..., digit: _Optional[str] = ..., timeout: _Optional[_Union[CollectTimedOut, _Mapping]] = ...) -> None: ...

class CollectTimedOut(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OfferContactResponse(_message.Message):
    __slots__ = ("contact_id", "decision")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    decision: Decision
    def __init__(self, contact_id: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("agent", "queued", "ivr_step", "refused", "callback_offered", "overflowed")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    IVR_STEP_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_OFFERED_FIELD_NUMBER: _ClassVar[int]
    OVERFLOWED_FIELD_NUMBER: _ClassVar[int]
    agent: AgentAssigned
    queued: ContactQueued
    ivr_step: IvrStep
    refused: ContactRefused
    callback_offered: CallbackOffered
    overflowed: ContactOverflowed
    def __init__(self, agent: _Optional[_Union[AgentAssigned, _Mapping]] = ..., queued: _Optional[_Union[ContactQueued, _Mapping]] = ..., ivr_step: _Optional[_Union[IvrStep, _Mapping]] = ..., refused: _Optional[_Union[ContactRefused, _Mapping]] = ..., callback_offered: _Optional[_Union[CallbackOffered, _Mapping]] = ..., overflowed: _Optional[_Union[ContactOverflowed, _Mapping]] = ...) -> None: ...

class AgentAssigned(_message.Message):
    __slots__ = ("queue_id", "agent_id", "by_affinity")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BY_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    agent_id: str
    by_affinity: bool
    def __init__(self, queue_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., by_affinity: _Optional[bool] = ...) -> None: ...

class ContactQueued(_message.Message):
    __slots__ = ("queue_id", "position", "expected_wait_s")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    position: int
    expected_wait_s: float
    def __init__(self, queue_id: _Optional[str] = ..., position: _Optional[int] = ..., expected_wait_s: _Optional[float] = ...) -> None: ...

class IvrStep(_message.Message):
    __slots__ = ("flow", "play", "collect", "transfer", "hangup")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    PLAY_FIELD_NUMBER: _ClassVar[int]
    COLLECT_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    HANGUP_FIELD_NUMBER: _ClassVar[int]
    flow: str
    play: PlayPrompt
    collect: CollectDigits
    transfer: TransferToQueue
    hangup: HangUp
    def __init__(self, flow: _Optional[str] = ..., play: _Optional[_Union[PlayPrompt, _Mapping]] = ..., collect: _Optional[_Union[CollectDigits, _Mapping]] = ..., transfer: _Optional[_Union[TransferToQueue, _Mapping]] = ..., hangup: _Optional[_Union[HangUp, _Mapping]] = ...) -> None: ...

class PlayPrompt(_message.Message):
    __slots__ = ("text", "language")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class CollectDigits(_message.Message):
    __slots__ = ("max_digits", "timeout_s")
    MAX_DIGITS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    max_digits: int
    timeout_s: float
    def __init__(self, max_digits: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class TransferToQueue(_message.Message):
    __slots__ = ("queue_id", "language", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    language: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, queue_id: _Optional[str] = ..., language: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HangUp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ContactRefused(_message.Message):
    __slots__ = ("queue_id", "reason", "detail")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    reason: RefusalReason
    detail: str
    def __init__(self, queue_id: _Optional[str] = ..., reason: _Optional[_Union[RefusalReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class CallbackOffered(_message.Message):
    __slots__ = ("queue_id", "expected_wait_s")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    expected_wait_s: float
    def __init__(self, queue_id: _Optional[str] = ..., expected_wait_s: _Optional[float] = ...) -> None: ...

class ContactOverflowed(_message.Message):
    __slots__ = ("from_queue_id", "to_queue_id", "outcome")
    FROM_QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    from_queue_id: str
    to_queue_id: str
    outcome: Decision
    def __init__(self, from_queue_id: _Optional[str] = ..., to_queue_id: _Optional[str] = ..., outcome: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class ContactEvent(_message.Message):
    __slots__ = ("contact_id", "agent_id", "occurred_at", "ringing", "answered", "abandoned", "transferred", "ended", "declined", "recording_uri")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RINGING_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    TRANSFERRED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    RECORDING_URI_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    agent_id: str
    occurred_at: _timestamp_pb2.Timestamp
    ringing: Ringing
    answered: Answered
    abandoned: Abandoned
    transferred: Transferred
    ended: Ended
    declined: Declined
    recording_uri: str
    def __init__(self, contact_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ringing: _Optional[_Union[Ringing, _Mapping]] = ..., answered: _Optional[_Union[Answered, _Mapping]] = ..., abandoned: _Optional[_Union[Abandoned, _Mapping]] = ..., transferred: _Optional[_Union[Transferred, _Mapping]] = ..., ended: _Optional[_Union[Ended, _Mapping]] = ..., declined: _Optional[_Union[Declined, _Mapping]] = ..., recording_uri: _Optional[str] = ...) -> None: ...

class Ringing(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Answered(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Abandoned(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Transferred(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class Ended(_message.Message):
    __slots__ = ("hung_up_by",)
    HUNG_UP_BY_FIELD_NUMBER: _ClassVar[int]
    hung_up_by: Party
    def __init__(self, hung_up_by: _Optional[_Union[Party, str]] = ...) -> None: ...

class Declined(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ReportEventsResponse(_message.Message):
    __slots__ = ("received", "applied", "rejected")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    received: int
    applied: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    def __init__(self, received: _Optional[int] = ..., applied: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "contact_id", "status", "detail")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    index: int
    contact_id: str
    status: str
    detail: str
    def __init__(self, index: _Optional[int] = ..., contact_id: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SetAgentStateRequest(_message.Message):
    __slots__ = ("agent_id", "state", "break_reason")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BREAK_REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    state: AgentState
    break_reason: str
    def __init__(self, agent_id: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., break_reason: _Optional[str] = ...) -> None: ...

class SetAgentStateResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentStatus
    def __init__(self, agent: _Optional[_Union[AgentStatus, _Mapping]] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "state", "presence", "break_reason", "contact_ids")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    BREAK_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTACT_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    state: AgentState
    presence: AgentState
    break_reason: str
    contact_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., presence: _Optional[_Union[AgentState, str]] = ..., break_reason: _Optional[str] = ..., contact_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchQueuesRequest(_message.Message):
    __slots__ = ("interval_s", "queue_ids")
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_IDS_FIELD_NUMBER: _ClassVar[int]
    interval_s: float
    queue_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval_s: _Optional[float] = ..., queue_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class QueueFigures(_message.Message):
    __slots__ = ("queue_id", "at", "waiting", "longest_wait_s", "service_level", "service_level_threshold_s", "abandon_rate", "average_speed_of_answer_s", "staffed_agents", "answered", "abandoned")
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    LONGEST_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVEL_THRESHOLD_S_FIELD_NUMBER: _ClassVar[int]
    ABANDON_RATE_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_SPEED_OF_ANSWER_S_FIELD_NUMBER: _ClassVar[int]
    STAFFED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    at: _timestamp_pb2.Timestamp
    waiting: int
    longest_wait_s: float
    service_level: float
    service_level_threshold_s: float
    abandon_rate: float
    average_speed_of_answer_s: float
    staffed_agents: int
    answered: int
    abandoned: int
    def __init__(self, queue_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting: _Optional[int] = ..., longest_wait_s: _Optional[float] = ..., service_level: _Optional[float] = ..., service_level_threshold_s: _Optional[float] = ..., abandon_rate: _Optional[float] = ..., average_speed_of_answer_s: _Optional[float] = ..., staffed_agents: _Optional[int] = ..., answered: _Optional[int] = ..., abandoned: _Optional[int] = ...) -> None: ...

class WatchRoutingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoutingUpdate(_message.Message):
    __slots__ = ("contact_id", "at", "agent", "queued", "callback_offered", "overflowed", "refused")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_OFFERED_FIELD_NUMBER: _ClassVar[int]
    OVERFLOWED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    at: _timestamp_pb2.Timestamp
    agent: AgentAssigned
    queued: ContactQueued
    callback_offered: CallbackOffered
    overflowed: ContactOverflowed
    refused: ContactRefused
    def __init__(self, contact_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent: _Optional[_Union[AgentAssigned, _Mapping]] = ..., queued: _Optional[_Union[ContactQueued, _Mapping]] = ..., callback_offered: _Optional[_Union[CallbackOffered, _Mapping]] = ..., overflowed: _Optional[_Union[ContactOverflowed, _Mapping]] = ..., refused: _Optional[_Union[ContactRefused, _Mapping]] = ...) -> None: ...
