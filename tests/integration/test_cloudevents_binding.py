"""The CloudEvents Kafka binding (contracts.md "Kafka binding") with the official Python SDK.

Events are made with the `cloudevents` SDK and turned into Kafka records by its Kafka binding,
in structured and in binary mode, then sent to a real broker (Tansu, of this module) that an
in-process service reads, with its HTTP API and a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from redis.asyncio import Redis

from learning_account.bootstrap import build_service
from learning_account.entrypoints.service import Service
from learning_account.ops.redrive import redrive
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    CLOUDEVENTS_CONTENT_TYPE,
    DEAD_LETTER_TOPIC,
    OUTPUT_TOPICS,
    REGISTRATIONS_TOPIC,
)
from learning_account_dev import events as ev
from support.kafka import earliest_reader, module_broker, with_topics
from support.service import in_process_settings

CREDITS = 6
BALANCE = 140 - CREDITS


broker = module_broker("tansu-binding")


class Outputs:
    """Every output record with its headers, read from the start in the background."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = earliest_reader(bootstrap, *OUTPUT_TOPICS, metadata_max_age_ms=1000)
        self.records: list[tuple[str, bytes, dict[str, bytes | None]]] = []

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend((r.topic, r.value, dict(r.headers)) for r in records)

    def of(self, topic: str, subject: str) -> list[bytes]:
        return [
            value
            for t, value, _ in list(self.records)
            if t == topic and json.loads(value).get("subject") == subject
        ]

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen within {timeout}s")
            await asyncio.sleep(0.1)


@pytest.fixture
async def outputs(broker: str) -> AsyncIterator[Outputs]:
    reader = Outputs(await with_topics(broker))
    await reader.consumer.start()
    task = asyncio.create_task(reader.run())
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.consumer.stop()


@pytest.fixture
async def service(
    broker: str, outputs: Outputs, redis_url: str, redis_client: Redis
) -> AsyncIterator[Service]:
    # database 0 of redis_url, flushed for each test by redis_client
    running = build_service(in_process_settings(broker, redis_url, "binding"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def sdk_event(student: str) -> CloudEvent:
    """A registration as an SDK CloudEvent, its attributes and data those of our event builder."""
    event = ev.registration(student, 2016, {"PSY101": CREDITS})
    attributes = {name: value for name, value in event.items() if name != "data"}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return CloudEvent(attributes=attributes, data=event["data"])


async def send(bootstrap: str, *messages: KafkaMessage) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for message in messages:
            key = (
                json.loads(message.value).get("student_id") or json.loads(message.value)["subject"]
            )
            await producer.send_and_wait(
                REGISTRATIONS_TOPIC,
                message.value,
                key=key.encode(),
                headers=list(message.headers.items()),
            )
    finally:
        await producer.stop()


async def balance(service: Service, student: str) -> Any:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"http://127.0.0.1:{service.settings.http_port}/accounts/{student}"
        )
    return response.json()["balance"] if response.status_code == 200 else None


async def wait_balance(service: Service, student: str, expected: Any) -> None:
    deadline = time.monotonic() + 30
    while (seen := await balance(service, student)) != expected:
        assert time.monotonic() < deadline, f"{student}: balance {seen}, not {expected}"
        await asyncio.sleep(0.1)


def names(tag: str) -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:6]
    return f"structured-{suffix}", f"binary-{suffix}", f"{tag}-{suffix}"


async def test_sdk_events_in_both_modes_are_one_event_and_outputs_say_they_are_cloudevents(
    broker: str, service: Service, outputs: Outputs
) -> None:
    structured_student, binary_student, missing_id_student = names("no-id")
    structured = sdk_event(structured_student)
    nameless = to_binary(sdk_event(missing_id_student), JSONFormat())
    nameless.headers.pop("ce_id")

    await send(
        broker,
        to_structured(structured, JSONFormat()),
        to_binary(sdk_event(binary_student), JSONFormat()),
        nameless,
    )
    await wait_balance(service, structured_student, BALANCE)
    await wait_balance(service, binary_student, BALANCE)
    await outputs.wait_for(
        "the first balance change",
        lambda: len(outputs.of(BALANCE_CHANGED_TOPIC, structured_student)) == 1,
    )
    # the same event again in binary mode: absorbed, its stored output re-published as it was
    await send(broker, to_binary(structured, JSONFormat()))
    await outputs.wait_for(
        "the re-published balance change",
        lambda: len(outputs.of(BALANCE_CHANGED_TOPIC, structured_student)) == 2,
    )
    await outputs.wait_for(
        "the dead letter", lambda: bool(outputs.of(DEAD_LETTER_TOPIC, missing_id_student))
    )

    first, again = outputs.of(BALANCE_CHANGED_TOPIC, structured_student)
    assert first == again
    assert await balance(service, structured_student) == BALANCE
    assert await balance(service, missing_id_student) is None
    letter = json.loads(outputs.of(DEAD_LETTER_TOPIC, missing_id_student)[0])["data"]
    assert letter["error_code"] == "invalid_envelope"
    assert "id" in letter["error"]
    assert letter["headers"] == {name: value.decode() for name, value in nameless.headers.items()}
    assert outputs.records
    for _, _, headers in outputs.records:
        assert headers.get("content-type") == CLOUDEVENTS_CONTENT_TYPE.encode()


async def test_redrive_re_publishes_a_binary_record_with_its_headers(
    broker: str, service: Service, outputs: Outputs
) -> None:
    _, _, student = names("redriven")
    original = to_binary(sdk_event(student), JSONFormat())
    original.headers["ce_specversion"] = b"0.3"  # refused: this service speaks CloudEvents 1.0
    await send(broker, original)
    await outputs.wait_for("the dead letter", lambda: bool(outputs.of(DEAD_LETTER_TOPIC, student)))

    report = await redrive(broker, key=student)

    assert (report.matched, report.republished) == (1, 1)
    await outputs.wait_for(
        "the redriven record's dead letter",
        lambda: len({*outputs.of(DEAD_LETTER_TOPIC, student)}) == 2,
    )
    first, second = (json.loads(value)["data"] for value in outputs.of(DEAD_LETTER_TOPIC, student))
    assert second["offset"] != first["offset"]
    assert second["headers"] == first["headers"]
    assert second["headers"] == {name: value.decode() for name, value in original.headers.items()}
    assert second["payload"] == original.value.decode()
