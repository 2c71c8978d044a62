"""Domain events and bad input turned into the CloudEvents messages of contracts.md.

An output's `id` is derived from the student, the input event's `source` + `id` and the output
kind (plus the threshold for credit-low, the content for an `id_conflict`; topic, partition and
offset for a dead letter), so a re-published output carries the same id and the same bytes, and
two students' outputs never share one.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from learning_account.domain.events import (
    BalanceChanged,
    CreditExhausted,
    CreditLow,
    DomainEvent,
    EventRejected,
)
from learning_account.domain.model import EventRef, format_academic_year, immutable
from learning_account.domain.numbers import credits_number
from learning_account.wire import (
    BALANCE_CHANGED_TYPE,
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    DEAD_LETTER_PAYLOAD_LIMIT,
    DEAD_LETTER_TOPIC,
    DEAD_LETTERED_TYPE,
    EVENT_REJECTED_TYPE,
    JSON_CONTENT_TYPE,
    OUTPUT_TYPES,
    SERVICE_SOURCE,
    SPEC_VERSION,
    TYPE_TOPIC,
    ErrorCode,
    cloud_event,
    short_name,
)

OUTPUT_ID_NAMESPACE = uuid.UUID("6f0f2f3e-9a54-5c1b-8d8e-6c1a0b7f4e21")


@immutable
class OutputMessage:
    topic: str
    key: bytes | None
    value: bytes
    event_id: str
    event_type: str


def output_id(student_id: str, cause: EventRef, kind: str, *extra: object) -> str:
    name = "\n".join([student_id, cause.source, cause.id, kind, *(str(part) for part in extra)])
    return uuid5_text(name)


_NAMESPACE_BYTES = OUTPUT_ID_NAMESPACE.bytes
#: The variant digit of a UUID (RFC 4122: bits 10xx) for each hex digit the hash has there.
_VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(OUTPUT_ID_NAMESPACE, name))` without building UUID objects (hot path):
    the SHA-1's first 32 hex digits, the version digit 5 and the variant digit set."""
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


def now_text(timestamp_ms: int | None = None) -> str:
    """An RFC 3339 UTC time with milliseconds: the given epoch milliseconds, or now when none is
    given or it lies outside years 1-9999 (a producer stamping microseconds, say)."""
    if type(timestamp_ms) is int and 0 <= timestamp_ms < _EXACT_MS:
        return _minute_text(timestamp_ms)
    moment = None
    if timestamp_ms is not None:
        try:
            moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            pass  # the processing time stands in: the record still gets its dead letter
    if moment is None:
        moment = datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EXACT_MS: Final = 2**33 * 1000
"""Below this (year 2242), `datetime.fromtimestamp(ms / 1000)` is exact to the millisecond, so
integer arithmetic gives the same text."""
_SECOND_TEXTS: Final = [f"{second:02d}." for second in range(60)]
_MILLI_TEXTS: Final = [f"{milli:03d}Z" for milli in range(1000)]
_MINUTE_TEXTS: dict[int, str] = {}
"""The text up to the seconds of the minutes written lately: a batch's records are close in
time, though decided student by student, not in record order."""
_MOST_MINUTES: Final = 4096


def _minute_text(timestamp_ms: int) -> str:
    minute, millis = divmod(timestamp_ms, 60_000)
    prefix = _MINUTE_TEXTS.get(minute)
    if prefix is None:
        if len(_MINUTE_TEXTS) >= _MOST_MINUTES:
            _MINUTE_TEXTS.clear()
        prefix = _MINUTE_TEXTS[minute] = datetime.fromtimestamp(minute * 60, UTC).isoformat()[:17]
    return prefix + _SECOND_TEXTS[millis // 1000] + _MILLI_TEXTS[millis % 1000]


def to_message(
    event: DomainEvent,
    time: str,
    traceparent: str | None = None,
    *,
    id_parts: tuple[str, ...] = (),
) -> OutputMessage:
    """One domain event as the CloudEvent of contracts.md, keyed by student id; `id_parts` go
    into its id after the kind's own (a credit-low's threshold; an `id_conflict`'s content
    digest). The document is `wire.cloud_event`'s, attributes in the same order, built here in
    one literal (a hot path: every output)."""
    event_type: str
    data: dict[str, Any]
    kind_parts: tuple[object, ...] = ()
    student_id = event.student_id
    cause = event.caused_by
    caused_by = {"source": cause.source, "id": cause.id, "type": cause.type}
    match event:
        case BalanceChanged():
            event_type = BALANCE_CHANGED_TYPE
            data = {
                "student_id": student_id,
                "academic_year": _year_text(event.academic_year),
                "previous_balance": credits_number(event.previous_balance),
                "balance": credits_number(event.balance),
                "delta": credits_number(event.delta),
                "entries": [
                    {
                        "kind": str(entry.kind),
                        "amount": credits_number(entry.amount),
                        "course_unit_code": entry.course_unit_code,
                        "academic_year": _YEAR_TEXTS.get(entry.academic_year)
                        or format_academic_year(entry.academic_year),
                    }
                    for entry in event.entries
                ],
                "uncovered_credits": credits_number(event.uncovered_credits),
                "additional_fee": event.additional_fee,
                "caused_by": caused_by,
            }
        case CreditExhausted():
            event_type = CREDIT_EXHAUSTED_TYPE
            data = {
                "student_id": student_id,
                "academic_year": _year_text(event.academic_year),
                "balance": credits_number(event.balance),
                "caused_by": caused_by,
                "options": list(event.options),
            }
        case CreditLow():
            event_type = CREDIT_LOW_TYPE
            kind_parts = (credits_number(event.threshold),)
            data = {
                "student_id": student_id,
                "academic_year": _year_text(event.academic_year),
                "balance": credits_number(event.balance),
                "threshold": credits_number(event.threshold),
                "caused_by": caused_by,
            }
        case EventRejected():
            event_type = EVENT_REJECTED_TYPE
            data = {
                "student_id": student_id,
                "reason": str(event.reason),
                "detail": event.detail,
                "caused_by": caused_by,
            }
    kind = _KINDS[event_type]
    if kind_parts or id_parts:
        event_id = output_id(student_id, cause, kind, *kind_parts, *id_parts)
    else:
        event_id = uuid5_text(f"{student_id}\n{cause.source}\n{cause.id}\n{kind}")
    document: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": SERVICE_SOURCE,
        "type": event_type,
        "time": time,
        "subject": student_id,
        "datacontenttype": JSON_CONTENT_TYPE,
    }
    if traceparent is not None:
        document["traceparent"] = traceparent  # CloudEvents distributed-tracing extension
    document["data"] = data
    return OutputMessage(
        TYPE_TOPIC[event_type], student_id.encode(), orjson.dumps(document), event_id, event_type
    )


_YEAR_TEXTS: Final = {year: format_academic_year(year) for year in range(2000, 2200)}
"""`format_academic_year` of the years outputs name, looked up (hot: every entry names one)."""


def _year_text(year: int) -> str:
    return _YEAR_TEXTS.get(year) or format_academic_year(year)


#: The output kind in an output's id: the short name of its type (`balance-changed`).
_KINDS: Final = {event_type: short_name(event_type) for event_type in OUTPUT_TYPES}


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: str,
    time: str,
    error_code: str = ErrorCode.INTERNAL_ERROR,
    headers: Mapping[str, str] | None = None,
) -> OutputMessage:
    """A message that could not be read or validated, with the error (text and stable code) and
    its payload as text (and, in binary mode, its CloudEvents headers)."""
    event_id = uuid5_text(f"dead-letter\n{topic}\n{partition}\n{offset}")
    payload_bytes = (value or b"")[:DEAD_LETTER_PAYLOAD_LIMIT]
    key_text = _text_or_none(key)
    data: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key_text if key_text is not None else _b64_or_none(key),
        "error": error,
        "error_code": str(error_code),
    }
    try:
        (value or b"").decode("utf-8")
        # the cut at 64 KiB may split the last character: drop that partial character only
        data["payload"] = payload_bytes.decode("utf-8", errors="ignore")
    except UnicodeDecodeError:
        data["payload"] = base64.b64encode(payload_bytes).decode()
        data["payload_encoding"] = "base64"
    if value is not None and len(value) > DEAD_LETTER_PAYLOAD_LIMIT:
        data["payload_truncated"] = True
    if headers is not None:
        data["headers"] = dict(headers)
    document = cloud_event(
        DEAD_LETTERED_TYPE,
        data,
        event_id=event_id,
        source=SERVICE_SOURCE,
        time=time,
        subject=key_text,
    )
    out = orjson.dumps(document)
    return OutputMessage(DEAD_LETTER_TOPIC, key, out, event_id, DEAD_LETTERED_TYPE)


def _text_or_none(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _b64_or_none(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


_RECORD = b"\x1e"
_FIELD = b"\x1f"


def encode_stored(messages: list[OutputMessage]) -> bytes:
    """The outputs of one step as stored beside the state, to re-publish them identically.

    Fields are split by ASCII unit and record separators: no topic, student id, uuid, type or
    JSON text produced here contains a raw control character.
    """
    return _RECORD.join(
        _FIELD.join(
            (
                m.topic.encode(),
                m.key or b"",
                m.event_id.encode(),
                m.event_type.encode(),
                m.value,
            )
        )
        for m in messages
    )


def split_stored(blob: bytes) -> list[bytes]:
    """The outputs of `encode_stored` one by one, each as `encode_stored` writes it alone."""
    return blob.split(_RECORD)


def decode_stored(blob: bytes) -> list[OutputMessage]:
    messages = []
    for record in blob.split(_RECORD):
        topic, key, event_id, event_type, value = record.split(_FIELD, 4)
        messages.append(
            OutputMessage(
                topic.decode(), key or None, value, event_id.decode(), event_type.decode()
            )
        )
    return messages
