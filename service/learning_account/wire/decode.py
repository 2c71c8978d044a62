"""The one way to read a Kafka record: `decode` validates it against its topic's event models.

Every message is a CloudEvents 1.0 structured-mode JSON object (or its binary-mode equivalent,
`wire.binary`); one JSON parse validates envelope and data, the `type` tag picking the model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Final

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from learning_account.wire.binary import Headers, binary_attributes, structured
from learning_account.wire.envelope import WireModel
from learning_account.wire.errors import ErrorCode, InvalidMessage, clip
from learning_account.wire.fast import FastEvent, content, read_input
from learning_account.wire.fields import LATEST_YEAR_CONTEXT, latest_academic_year
from learning_account.wire.inputs import (
    CourseUnitsDeregisteredEvent,
    CourseUnitsRegisteredEvent,
    CreditsRestoredEvent,
    DegreeAwardedEvent,
    ExamResultCorrectedEvent,
    ExamResultRecordedEvent,
    InputData,
    InputEvent,
)
from learning_account.wire.outputs import (
    BalanceChangedEvent,
    CreditExhaustedEvent,
    CreditLowEvent,
    DeadLetteredEvent,
    EventRejectedEvent,
    OutputData,
    OutputEvent,
)
from learning_account.wire.topics import (
    BALANCE_CHANGED_TYPE,
    COURSE_UNITS_DEREGISTERED_TYPE,
    COURSE_UNITS_REGISTERED_TYPE,
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    CREDITS_RESTORED_TYPE,
    DEAD_LETTERED_TYPE,
    DEGREE_AWARDED_TYPE,
    EVENT_REJECTED_TYPE,
    EXAM_RESULT_CORRECTED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
    TOPIC_TYPES,
)

MAX_MESSAGE_BYTES: Final = 1024 * 1024

Event = InputEvent | OutputEvent

EventData = InputData | OutputData

#: The full-event model of every event type, inputs first.
EVENT_MODELS: Final[Mapping[str, type[WireModel]]] = {
    COURSE_UNITS_REGISTERED_TYPE: CourseUnitsRegisteredEvent,
    EXAM_RESULT_RECORDED_TYPE: ExamResultRecordedEvent,
    EXAM_RESULT_CORRECTED_TYPE: ExamResultCorrectedEvent,
    CREDITS_RESTORED_TYPE: CreditsRestoredEvent,
    DEGREE_AWARDED_TYPE: DegreeAwardedEvent,
    COURSE_UNITS_DEREGISTERED_TYPE: CourseUnitsDeregisteredEvent,
    BALANCE_CHANGED_TYPE: BalanceChangedEvent,
    CREDIT_EXHAUSTED_TYPE: CreditExhaustedEvent,
    CREDIT_LOW_TYPE: CreditLowEvent,
    EVENT_REJECTED_TYPE: EventRejectedEvent,
    DEAD_LETTERED_TYPE: DeadLetteredEvent,
}

# One JSON parse for everything: the `type` tag picks the model.
_EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(
    Annotated[Event, Field(discriminator="type")]
)


class DecodedEvent:
    """A valid message: its CloudEvents attributes, its typed data and the whole model.

    An input the fast reader accepted (`wire.fast`) carries its `fast` reading; its models
    (`event`, `data`, `time`) are then validated when first asked for, off the hot path.
    """

    __slots__ = ("_event", "_latest", "_message", "fast", "id", "key", "source", "topic", "type")

    def __init__(
        self,
        topic: str,
        key: bytes | None,
        *,
        event: Event | None = None,
        fast: FastEvent | None = None,
        message: bytes = b"",
        latest: int = 0,
    ) -> None:
        self.topic = topic
        self.key = key
        self.fast = fast
        self._event = event
        self._message = message
        self._latest = latest
        header = fast if fast is not None else event
        assert header is not None, "a decoded event has a model or a fast reading"
        self.source: str = header.source
        self.id: str = header.id
        self.type: str = header.type

    @property
    def event(self) -> Event:
        if self._event is None:
            self._event = _validate(self._message, self._latest)
        return self._event

    @property
    def data(self) -> EventData:
        return self.event.data

    @property
    def subject(self) -> str | None:
        return self.fast.subject if self.fast is not None else self.event.subject

    @property
    def time(self) -> datetime | None:
        return self.event.time


def decode(
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    headers: Headers = (),
    *,
    stamped_at: float | None = None,
) -> DecodedEvent:
    """Validate one Kafka record of `topic`; raise `InvalidMessage` if it is not acceptable.

    A record in binary mode (`binary_attributes`) is validated as the structured message of the
    same event: the same model, the same errors, the same idempotency key. The record key is
    kept but not checked: a key that differs from the student id does not make a message
    invalid (contracts.md). `stamped_at` is the record's time (epoch seconds; None: now), which
    bounds the academic years it may name.
    """
    allowed = TOPIC_TYPES.get(topic)
    if allowed is None:
        raise InvalidMessage(f"unknown topic {clip(topic)!r}", ErrorCode.WRONG_TOPIC)
    if not value:
        raise InvalidMessage("empty message", ErrorCode.NOT_JSON)
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(value)} bytes is over 1 MiB", ErrorCode.TOO_LARGE)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"not UTF-8 (byte {exc.start})", ErrorCode.NOT_UTF8) from None
    attributes = binary_attributes(headers)
    if attributes is not None:
        value = structured(attributes, value)
    latest = _latest_year(int((time.time() if stamped_at is None else stamped_at) // 3600))
    fast = read_input(value, latest)
    if fast is not None and fast.type in allowed:
        return DecodedEvent(topic, key, fast=fast, message=value, latest=latest)
    try:
        event = _validate(value, latest)
    except ValidationError as exc:
        reason, code = _describe(exc, topic, allowed)
        if attributes is not None and code is ErrorCode.INVALID_ENVELOPE:
            reason = f"binary mode (ce_ headers): {reason}"
        raise InvalidMessage(reason, code) from None
    if event.type not in allowed:
        raise InvalidMessage(_wrong_topic(event.type, topic), ErrorCode.WRONG_TOPIC)
    return DecodedEvent(topic, key, event=event)


@lru_cache(maxsize=64)
def _latest_year(hour: int) -> int:
    # Brussels' offsets are whole hours (since 1892): its date, and so the year, is the hour's
    return latest_academic_year(hour * 3600)


def _validate(message: bytes, latest: int) -> Event:
    return _EVENT_ADAPTER.validate_json(message, context={LATEST_YEAR_CONTEXT: latest})


def canonical_content(decoded: DecodedEvent) -> bytes:
    """What makes two events with one idempotency key the same event: `type` and the validated
    `data` (unknown fields dropped, defaults left out, so given or defaulted read alike; numbers
    as the contract writes them, so `6` and `6.0` read alike), as JSON with sorted keys."""
    if decoded.fast is not None:
        return content(decoded.fast)
    data = decoded.data.model_dump(mode="json", exclude_defaults=True)
    return orjson.dumps({"type": decoded.type, "data": data}, option=orjson.OPT_SORT_KEYS)


def _describe(exc: ValidationError, topic: str, allowed: frozenset[str]) -> tuple[str, ErrorCode]:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    kind, loc = first["type"], first["loc"]
    context = first.get("ctx") or {}
    if kind == "json_invalid":
        return f"not JSON: {context.get('error', first['msg'])}", ErrorCode.NOT_JSON
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        return "not a JSON object", ErrorCode.INVALID_ENVELOPE
    if kind == "union_tag_not_found":
        return "envelope invalid: type: missing or not a string", ErrorCode.INVALID_ENVELOPE
    if kind == "union_tag_invalid":
        tag = clip(str(context.get("tag", "")))
        return f"unknown event type {tag!r}", ErrorCode.UNKNOWN_TYPE
    tag = str(loc[0]) if loc else ""
    if tag and tag not in allowed:
        return _wrong_topic(tag, topic), ErrorCode.WRONG_TOPIC
    if kind == "subject_mismatch":
        return first["msg"], ErrorCode.SUBJECT_MISMATCH
    path = loc[1:]
    in_data = bool(path) and path[0] == "data"
    where = ".".join(str(step) for step in path) or "(message)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{'data invalid' if in_data else 'envelope invalid'}: {where}: {first['msg']}{more}"
    return text, ErrorCode.INVALID_DATA if in_data else ErrorCode.INVALID_ENVELOPE


def _wrong_topic(event_type: str, topic: str) -> str:
    return f"type {clip(event_type)!r} does not belong on topic {topic!r}"
