"""End to end on the real broker and Redis, with LA_ALLOWED_SOURCES set: a reused id with other
content is refused `id_conflict` (and re-published identically), a foreign source and a year
that has not begun are dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from learning_account.wire import BALANCE_CHANGED_TOPIC, DEAD_LETTER_TOPIC, REJECTIONS_TOPIC
from learning_account_dev import events as ev
from support.redis import database_url
from support.service import OutputCollector, ServiceProcess, send


@pytest.fixture(scope="module")
def service(
    service_topics: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The service reading the institutions' sources only (every e2e event has one)."""
    process = ServiceProcess(
        Path(tmp_path_factory.mktemp("service")),
        KAFKA_BOOTSTRAP_SERVERS=service_topics,
        REDIS_URL=database_url(redis_url, 3),  # a database of its own
        CONSUMER_GROUP=f"e2e-ids-{uuid.uuid4().hex[:8]}",
        ALLOWED_SOURCES="urn:institution:*",
        LOG_LEVEL="INFO",
    )
    with process.running():
        yield process


def letters_for(outputs: OutputCollector, student: str) -> list[dict]:  # type: ignore[type-arg]
    return [m for m in outputs.messages(DEAD_LETTER_TOPIC) if m["data"]["key"] == student]


async def test_a_reused_id_is_refused_and_its_redelivery_republishes_the_same_refusal(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    first = ev.registration(student, 2016, {"A": 6}, event_id=f"{student}-reg")
    reused = ev.registration(student, 2016, {"B": 6}, event_id=f"{student}-reg")
    await send(bootstrap, [first])
    await outputs.wait_for(lambda: outputs.caused_by(first["id"], BALANCE_CHANGED_TOPIC))
    await send(bootstrap, [reused])
    await outputs.wait_for(lambda: outputs.caused_by(first["id"], REJECTIONS_TOPIC))
    await send(bootstrap, [reused])

    def refusals() -> list[bytes]:
        return [
            raw
            for raw in outputs.raw(REJECTIONS_TOPIC)
            if json.loads(raw)["data"]["caused_by"]["id"] == first["id"]
        ]

    await outputs.wait_for(lambda: len(refusals()) == 2, what="the re-published refusal")
    assert refusals()[0] == refusals()[1]
    assert json.loads(refusals()[0])["data"]["reason"] == "id_conflict"
    status, account = service.get(f"/accounts/{student}")
    assert (status, account["balance"]) == (200, 134)  # the first registration stands


async def test_a_foreign_source_and_a_year_not_begun_are_dead_lettered(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    foreign = ev.registration(f"{student}-x", 2016, {"A": 6}, source="urn:forger:sis")
    registration = ev.registration(student, 2016, {"A": 6})
    future = ev.deregistration(student, 2090, ["A"], date(2090, 10, 1))
    await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], [foreign, registration, future])
    await outputs.wait_for(
        lambda: letters_for(outputs, f"{student}-x") and letters_for(outputs, student),
        what="two dead letters",
    )
    [foreign_letter] = letters_for(outputs, f"{student}-x")
    [future_letter] = letters_for(outputs, student)
    assert foreign_letter["data"]["error_code"] == "source_not_allowed"
    assert future_letter["data"]["error_code"] == "invalid_data"
    assert service.get(f"/accounts/{student}-x")[0] == 404
    status, statement = service.get(f"/accounts/{student}/statement")
    assert status == 200
    assert [row["academic_year"] for row in statement["years"] if not row["projected"]] == [
        "2016-2017"
    ]
