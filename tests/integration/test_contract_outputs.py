"""What the service publishes validates against the JSON Schemas it publishes in contracts/.

Every kind of output is produced by the real pipeline (the Processor on a real Redis), with and
without tracing, and each value is checked with `jsonschema` (Draft 2020-12, formats checked)
against the checked-in schema file of its type; so are the checked-in examples.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from learning_account import wire
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.observability.tracing import create_tracer
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
EXAMPLES = sorted((CONTRACTS / "examples").glob("*.json"))
RECORD_TIME_MS = 1_700_000_000_000
INPUT_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@cache
def validator(event_type: str) -> Draft202012Validator:
    """The checked-in schema of `event_type`, itself checked against the 2020-12 metaschema."""
    path = CONTRACTS / "schemas" / f"{wire.short_name(event_type)}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(message: dict[str, Any]) -> list[str]:
    errors = validator(message["type"]).iter_errors(message)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]


def inputs() -> list[InputRecord]:
    """Records that make the pipeline publish every output kind and every dead-letter shape."""
    records: list[InputRecord] = []

    def add(topic: str, value: bytes | None, key: bytes | None = b"r1") -> None:
        records.append(InputRecord(topic, 0, len(records), key, value, RECORD_TIME_MS))

    def send(event: dict[str, Any], key: bytes | None = None) -> None:
        event = {**event, "traceparent": INPUT_TRACEPARENT}  # continued when tracing is on
        add(ev.topic_of(event), ev.to_bytes(event), key or event["subject"].encode())

    # r1: 90 credits leave 50 (credit-low), then results, a correction, a restoration,
    # a refunded deregistration, and a second year that exhausts the account.
    send(ev.registration("r1", 2016, ev.package("A", 15, 6)))
    send(ev.exam_result("r1", 2016, "A01"))
    send(ev.exam_result("r1", 2016, "A02"))
    send(ev.exam_result_correction("r1", 2016, "A02", "failed"))
    send(ev.exam_result("r1", 2016, "A03", "failed"))
    send(ev.credits_restoration("r1", 2016, ["A03"]))
    send(
        ev.deregistration(
            "r1",
            2016,
            ["A15"],
            date(2016, 10, 1),
            reason="programme_change",
            reenrolled_on=date(2016, 10, 2),
        )
    )
    send(ev.registration("r1", 2017, ev.package("B", 10, 6)))  # 14 left: below 60 again
    send(ev.registration("r1", 2018, ev.package("C", 4, 6)))  # -10: exhausted
    send(ev.registration("r1", 2019, {"D01": 6}))  # refused: insufficient_learning_credit
    send(ev.deregistration("r2", 2016, ["X"], date(2016, 10, 1)))  # refused: not_registered
    # r3: a master's degree (a degree_deduction entry)
    send(ev.registration("r3", 2016, {"M01": 6}, kind="master"))
    send(ev.degree("r3", 2016, "master"))

    registrations = wire.REGISTRATIONS_TOPIC
    big = 70 * 1024
    add(registrations, b"{not json")
    add(registrations, b"\xff\xfe not utf-8")  # base64 payload
    add(registrations, b"{not json", key=None)  # no key: key null, no subject
    add(registrations, b"{not json", key=b"\xff\xfe")  # a key that is not text: base64
    add(registrations, b'{"padding": "' + b"x" * big + b'"}')  # truncated at 64 KiB
    add(registrations, b"\xff" * big)  # base64 and truncated
    add(registrations, b'{"a": "' + "é".encode() * (wire.DEAD_LETTER_PAYLOAD_LIMIT // 2) + b'"}')
    add(registrations, b"x" * (wire.MAX_MESSAGE_BYTES + 1))  # over 1 MiB
    add(registrations, b"")
    add(registrations, b"[1, 2]")
    add(registrations, ev.to_bytes({**ev.registration("r4", 2016, {"E": 6}), "type": "nope"}))
    add(registrations, ev.to_bytes(ev.exam_result("r4", 2016, "E")))  # wrong topic
    add(registrations, ev.to_bytes({**ev.registration("r4", 2016, {"E": 6}), "subject": "r5"}))
    bad_credits = ev.registration("r4", 2016, {"E": 6})
    bad_credits["data"]["course_units"][0]["credits"] = "6"
    add(registrations, ev.to_bytes(bad_credits))
    return records


def tracer_for(tracing: str) -> Any:
    return None if tracing == "off" else create_tracer("off", exporter=InMemorySpanExporter())


@pytest.fixture(params=["tracing-off", "tracing-on"])
async def published(request: pytest.FixtureRequest, redis_client: Redis) -> list[dict[str, Any]]:
    processor = Processor(
        RedisStore(redis_client),
        Policy(),
        clock=lambda: RECORD_TIME_MS / 1000,
        tracer=tracer_for(request.param.removeprefix("tracing-")),
    )
    report = await processor.process(inputs())
    return [as_message(output) for output in report.outputs]


def as_message(output: OutputMessage) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(output.value)
    assert message["type"] == output.event_type
    assert wire.TYPE_TOPIC[message["type"]] == output.topic
    return message


async def test_every_published_message_validates_against_its_schema(
    published: list[dict[str, Any]],
) -> None:
    assert {message["type"] for message in published} == set(wire.OUTPUT_TYPES)
    for message in published:
        assert schema_errors(message) == [], message
    print(f"{len(published)} published messages valid against contracts/schemas/")
    dead = [m["data"] for m in published if m["type"] == wire.DEAD_LETTERED_TYPE]
    assert len(dead) == 14
    assert any(letter.get("payload_encoding") == "base64" for letter in dead)
    assert any(letter.get("payload_truncated") for letter in dead)
    assert any(letter["key"] is None for letter in dead)


async def test_outputs_carry_a_traceparent_only_when_tracing_is_on(
    published: list[dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    tracing_on = request.node.callspec.params["published"] == "tracing-on"
    applied = [m for m in published if m["type"] != wire.DEAD_LETTERED_TYPE]
    dead = [m for m in published if m["type"] == wire.DEAD_LETTERED_TYPE]

    assert all(("traceparent" in message) is tracing_on for message in applied)
    assert not any("traceparent" in message for message in dead)
    assert not any("subject" in message for message in dead if message["data"]["key"] is None)


async def test_the_schemas_refuse_what_the_service_never_sends(
    published: list[dict[str, Any]],
) -> None:
    change = next(m for m in published if m["type"] == wire.BALANCE_CHANGED_TYPE)
    letter = next(m for m in published if m["type"] == wire.DEAD_LETTERED_TYPE)
    broken = [
        {**change, "traceparent": None},
        {**change, "traceparent": "not a trace context"},
        {**change, "time": "2017-02-10 14:30"},
        {key: value for key, value in change.items() if key != "subject"},
        {**letter, "subject": None},
        {**letter, "data": {**letter["data"], "payload_truncated": False}},
        {**letter, "data": {**letter["data"], "payload_encoding": None}},
    ]
    entry_without_code = copy.deepcopy(change)
    del entry_without_code["data"]["entries"][0]["course_unit_code"]
    broken.append(entry_without_code)

    for message in broken:
        assert schema_errors(message), message


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_validates_against_its_schema(path: Path) -> None:
    message = json.loads(path.read_bytes())

    assert wire.short_name(message["type"]) == path.stem
    assert schema_errors(message) == []
