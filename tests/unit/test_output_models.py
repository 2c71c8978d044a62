"""Every message `processing.outputs` writes is exactly what its wire model documents.

The outputs are written as plain JSON objects (the hot path); here each kind is read back through
its full-event model (strict) and written again by the model: the same keys, the same values and
the same JSON types (`6`, not `6.0`), so a field added, renamed or retyped on one side fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from learning_account import wire
from learning_account.domain.events import (
    BalanceChanged,
    CreditExhausted,
    CreditLow,
    DomainEvent,
    Entry,
    EventRejected,
)
from learning_account.domain.model import EntryKind, EventRef, Refusal
from learning_account.processing.outputs import OutputMessage, dead_letter, to_message

CAUSE = EventRef(
    "urn:institution:kuleuven:sis", "7f1c2e4a-1f7e-4a53", wire.COURSE_UNITS_REGISTERED_TYPE
)
TIME = "2017-02-10T14:30:01.250Z"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

DOMAIN_EVENTS: dict[str, DomainEvent] = {
    "balance-changed": BalanceChanged(
        student_id="r0123456",
        academic_year=2016,
        previous_balance=320,
        balance=82,
        entries=(
            Entry(EntryKind.INVESTED, -240, 2016, "PSY101"),
            Entry(EntryKind.ACQUIRED, 5, 2016, "PSY102"),
            Entry(EntryKind.REBUILT, -3, 2015, None),
        ),
        uncovered_credits=10,
        additional_fee=True,
        caused_by=CAUSE,
    ),
    "credit-exhausted": CreditExhausted("r0123456", 2019, -32, CAUSE),
    "credit-low": CreditLow("r0123456", 2018, 226, 240, CAUSE),
    "event-rejected": EventRejected(
        "r0123456", Refusal.INSUFFICIENT_LEARNING_CREDIT, "balance -8 is not positive", CAUSE
    ),
}

DEAD_LETTERS: dict[str, OutputMessage] = {
    "text": dead_letter(
        wire.REGISTRATIONS_TOPIC, 0, 42, b"r0123456", b'{"id": 7', "not JSON", TIME, "not_json"
    ),
    "no key": dead_letter(wire.EXAM_RESULTS_TOPIC, 1, 0, None, None, "empty message", TIME),
    "binary key and payload": dead_letter(
        wire.REGISTRATIONS_TOPIC, 2, 7, b"\xff\xfe", b"\xff" * 10, "not UTF-8", TIME, "not_utf8"
    ),
    "truncated": dead_letter(
        wire.REGISTRATIONS_TOPIC,
        0,
        8,
        b"r0123456",
        b"x" * (wire.DEAD_LETTER_PAYLOAD_LIMIT + 1),
        "too large",
        TIME,
        "too_large",
    ),
    "binary mode": dead_letter(
        wire.DEREGISTRATIONS_TOPIC,
        0,
        9,
        b"r0123456",
        b"{}",
        "invalid data",
        TIME,
        "invalid_data",
        {"ce_specversion": "1.0", "content-type": "application/json"},
    ),
}


def _canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def assert_documented(message: OutputMessage) -> None:
    written = orjson.loads(message.value)
    model = wire.EVENT_MODELS[written["type"]].model_validate_json(message.value)
    rewritten = model.model_dump(mode="json")
    # the model writes a time in its own RFC 3339 form: compare the moment, then the rest
    assert datetime.fromisoformat(rewritten.pop("time")) == datetime.fromisoformat(
        written.pop("time")
    )
    assert _canonical(rewritten) == _canonical(written)
    assert wire.TYPE_TOPIC[written["type"]] == message.topic
    assert written["id"] == message.event_id
    assert written["type"] == message.event_type


@pytest.mark.parametrize("traceparent", [None, TRACEPARENT])
@pytest.mark.parametrize("kind", sorted(DOMAIN_EVENTS))
def test_an_output_is_what_its_model_documents(kind: str, traceparent: str | None) -> None:
    message = to_message(DOMAIN_EVENTS[kind], TIME, traceparent)

    assert wire.short_name(message.event_type) == kind
    assert_documented(message)


@pytest.mark.parametrize("case", sorted(DEAD_LETTERS))
def test_a_dead_letter_is_what_its_model_documents(case: str) -> None:
    assert_documented(DEAD_LETTERS[case])


def test_every_output_type_is_pinned() -> None:
    pinned = {to_message(event, TIME).event_type for event in DOMAIN_EVENTS.values()}
    pinned |= {message.event_type for message in DEAD_LETTERS.values()}

    assert pinned == set(wire.OUTPUT_TYPES)


def test_an_extra_key_is_caught() -> None:
    message = to_message(DOMAIN_EVENTS["credit-low"], TIME)
    document = orjson.loads(message.value)
    document["data"]["surplus"] = 1
    drifted = OutputMessage(
        message.topic, message.key, orjson.dumps(document), message.event_id, message.event_type
    )

    with pytest.raises(AssertionError):
        assert_documented(drifted)


def test_a_float_where_the_contract_writes_a_whole_number_is_caught() -> None:
    message = to_message(DOMAIN_EVENTS["credit-exhausted"], TIME)
    document = orjson.loads(message.value)
    document["data"]["balance"] = float(document["data"]["balance"])
    drifted = OutputMessage(
        message.topic, message.key, orjson.dumps(document), message.event_id, message.event_type
    )

    with pytest.raises(AssertionError):
        assert_documented(drifted)
