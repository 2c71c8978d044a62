"""CloudEvents Kafka binding, binary mode (contracts.md "Kafka binding"): the attributes as `ce_`
headers, `data` alone as the value, read as the same event as its structured form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from learning_account import wire
from learning_account.ops.dead_letters import original_headers
from learning_account.processing.outputs import dead_letter
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.wire import ErrorCode, InvalidMessage, decode
from learning_account_dev import events as ev
from support.decoders import both_readers_checked  # noqa: F401

# every message these tests decode is read by the fast reader and the models, which must agree
pytestmark = pytest.mark.usefixtures("both_readers_checked")

TOPIC = wire.REGISTRATIONS_TOPIC


def binary(event: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """The record value and headers of `event` in binary mode, as the SDKs write them."""
    headers: list[tuple[str, bytes | None]] = [
        (f"ce_{name}", str(event[name]).encode())
        for name in ("specversion", "id", "source", "type", "subject", "time")
    ]
    headers.append(("content-type", b"application/json"))
    return json.dumps(event["data"]).encode(), headers


def without(headers: list[tuple[str, bytes | None]], name: str) -> list[tuple[str, bytes | None]]:
    return [(n, v) for n, v in headers if n != name]


def test_a_binary_record_is_the_same_event_as_its_structured_form() -> None:
    event = ev.registration("r0123456", 2016, {"PSY101": 6})
    value, headers = binary(event)

    from_binary = decode(TOPIC, value, b"r0123456", headers)
    from_structured = decode(TOPIC, ev.to_bytes(event), b"r0123456")

    assert (from_binary.source, from_binary.id) == (event["source"], event["id"])
    assert from_binary.event == from_structured.event
    assert from_binary.data == from_structured.data


def test_a_structured_record_ignores_ce_headers_when_its_content_type_says_so() -> None:
    event = ev.registration("r0123456", 2016, {"PSY101": 6})
    _, headers = binary(event)
    headers = [
        *without(headers, "content-type"),
        ("content-type", wire.CLOUDEVENTS_CONTENT_TYPE.encode()),
    ]

    decoded = decode(TOPIC, ev.to_bytes(event), b"r0123456", headers)

    assert decoded.id == event["id"]


@pytest.mark.parametrize("missing", ["ce_id", "ce_source", "ce_type", "ce_subject"])
def test_a_binary_record_without_a_required_header_is_an_invalid_envelope(missing: str) -> None:
    value, headers = binary(ev.registration("r0123456", 2016, {"PSY101": 6}))

    with pytest.raises(InvalidMessage) as refused:
        decode(TOPIC, value, b"r0123456", without(headers, missing))

    assert refused.value.code is ErrorCode.INVALID_ENVELOPE
    assert "binary mode" in refused.value.reason


@pytest.mark.parametrize(
    ("name", "raw"), [("ce_id", b"\xff\xfe"), ("ce_specversion", b"0.3"), ("ce_time", b"soon")]
)
def test_a_bad_binary_header_is_an_invalid_envelope(name: str, raw: bytes) -> None:
    value, headers = binary(ev.registration("r0123456", 2016, {"PSY101": 6}))

    with pytest.raises(InvalidMessage) as refused:
        decode(TOPIC, value, b"r0123456", [*without(headers, name), (name, raw)])

    assert refused.value.code is ErrorCode.INVALID_ENVELOPE


def test_a_binary_value_that_is_more_than_one_json_value_is_not_json() -> None:
    event = ev.registration("r0123456", 2016, {"PSY101": 6})
    value, headers = binary(event)
    smuggled = value + b', "type": "be.flanders.learning-account.degree-awarded.v1"'

    with pytest.raises(InvalidMessage) as refused:
        decode(TOPIC, smuggled, b"r0123456", headers)

    assert refused.value.code is ErrorCode.NOT_JSON


async def test_the_dead_letter_of_a_binary_record_keeps_its_headers_for_a_redrive() -> None:
    value, headers = binary(ev.registration("r0123456", 2016, {"PSY101": 6}))
    record = InputRecord(TOPIC, 0, 5, b"r0123456", value, 1, tuple(without(headers, "ce_id")))
    processor = Processor(store=None, policy=None)  # type: ignore[arg-type]  # nothing decodes

    report = await processor.process([record])

    letter = json.loads(report.outputs[0].value)["data"]
    assert letter["error_code"] == "invalid_envelope"
    assert letter["headers"] == {n: v.decode() for n, v in without(headers, "ce_id") if v}
    assert original_headers(letter) == [(n, v) for n, v in without(headers, "ce_id") if v]


def test_the_dead_letter_of_a_structured_record_has_no_headers() -> None:
    letter = dead_letter(TOPIC, 0, 1, None, b"{", "not JSON", "2026-01-01T00:00:00Z", "not_json")

    data = json.loads(letter.value)["data"]
    assert "headers" not in data
    assert original_headers(data) == list(wire.STRUCTURED_HEADERS)
