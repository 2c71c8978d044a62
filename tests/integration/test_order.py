"""One order of a student's events across the three input topics, on the real broker and Redis.

The same records (producer clocks skewed per topic, produced in the reverse of their time order)
are consumed by fresh consumer groups with batches of 1, 7 and 500 records and rebuilt from the
topics: the accounts and the outputs (ids and bytes) are the same every time. Held results time
out in the input's time (rules.md R3.6): an outage longer than the holding time refuses nothing
that arrived in time, and rebuild decides them as the live service did. Tansu keeps producer
timestamps (it accepts `message.timestamp.type=LogAppendTime` and ignores it), so these records
take the producer-timestamp path of contracts.md "Order".
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.bootstrap import build_service
from learning_account.domain.model import Account
from learning_account.ops.rebuild import rebuild
from learning_account.settings import Settings
from learning_account.wire import (
    DEREGISTRATIONS_TOPIC,
    EXAM_RESULTS_TOPIC,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    REGISTRATIONS_TOPIC,
    REJECTIONS_TOPIC,
)
from learning_account_dev import events as ev
from learning_account_dev.devstack import ensure_topics, free_port, wait_for_kafka
from support import consume_to_end
from support.kafka import started_tansu, tansu
from support.redis import database_url

Sent = dict[TopicPartition, int]


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[str]:
    """A broker of this test alone: what it sends there cannot be read by anyone."""
    async with started_tansu(tmp_path) as bootstrap:
        yield bootstrap


async def produce(bootstrap: str, events: list[tuple[dict[str, Any], int]], sent: Sent) -> None:
    """Send (event, record timestamp in ms) pairs, keyed by student, noting each partition's end."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        pending = [
            await producer.send(
                ev.topic_of(event),
                ev.to_bytes(event),
                key=event["data"]["student_id"].encode(),
                timestamp_ms=stamp,
            )
            for event, stamp in events
        ]
        for meta in await asyncio.gather(*pending):
            tp = TopicPartition(meta.topic, meta.partition)
            sent[tp] = max(sent.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()


async def serve_until_committed(
    bootstrap: str, redis_url: str, sent: Sent, **settings: Any
) -> None:
    """Run a service of a consumer group of its own until it committed everything sent."""
    group = f"order-{uuid.uuid4().hex[:8]}"
    service = build_service(
        Settings(
            kafka_bootstrap_servers=bootstrap,
            redis_url=redis_url,
            redis_cluster="false",
            http_port=free_port(),
            consumer_group=group,
            graceful_timeout_seconds=5,
            **settings,
        )
    )
    await service.start()
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            committed = {tp: await probe.committed(tp) or 0 for tp in sent}
            if all(committed[tp] >= end for tp, end in sent.items()):
                break
            assert time.monotonic() < deadline, f"committed {committed}, sent {sent}"
            await asyncio.sleep(0.2)
    finally:
        await probe.stop()
        await service.stop()


async def accounts(redis_url: str, students: list[str]) -> dict[str, Account | None]:
    redis = Redis.from_url(redis_url)
    try:
        store = RedisStore(redis)
        return {student: await store.get(student) for student in students}
    finally:
        await redis.aclose()


async def flushed(redis_url: str) -> str:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    return redis_url


async def outputs_since(bootstrap: str, seen: set[tuple[str, int, int]]) -> dict[Any, list[bytes]]:
    """The output records not in `seen` (which they join), per topic and key, in offset order."""
    new: dict[Any, list[bytes]] = {}
    records = await consume_to_end(bootstrap, list(OUTPUT_TOPICS))
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        if (record.topic, record.partition, record.offset) not in seen:
            seen.add((record.topic, record.partition, record.offset))
            new.setdefault((record.topic, record.key), []).append(record.value)
    return new


def skewed_history(students: list[str], base_ms: int) -> list[tuple[dict[str, Any], int]]:
    """Per student, by record time: (even students) a deregistration stamped before the
    registration, an exam result stamped before it too, the registration, a second result; sent
    topic by topic in the reverse of that order, with filler results that make that topic lag."""
    by_topic: dict[str, list[tuple[dict[str, Any], int]]] = {t: [] for t in INPUT_TOPICS}
    for index, student in enumerate(students):
        at = base_ms + 1000 * index
        registration = ev.registration(student, 2016, {"A": 6, "B": 6})
        early_result = ev.exam_result(student, 2016, "A")
        late_result = ev.exam_result(student, 2016, "B")
        deregistration = ev.deregistration(student, 2016, ["B"], date(2016, 10, 1))
        dereg_at = at + 100 if index % 2 == 0 else at + 800
        by_topic[DEREGISTRATIONS_TOPIC].append((deregistration, dereg_at))
        by_topic[EXAM_RESULTS_TOPIC] += [(early_result, at + 200), (late_result, at + 900)]
        by_topic[REGISTRATIONS_TOPIC].append((registration, at + 500))
    for number in range(150):  # held for the week: a backlog on one topic
        filler = ev.exam_result(f"filler-{number}", 2016, "Z")
        by_topic[EXAM_RESULTS_TOPIC].append((filler, base_ms + 10 * number))
    return [
        *by_topic[DEREGISTRATIONS_TOPIC],
        *by_topic[EXAM_RESULTS_TOPIC],
        *by_topic[REGISTRATIONS_TOPIC],
    ]


async def test_the_same_records_give_the_same_accounts_and_outputs_whatever_the_batching(
    own_broker: str, redis_url: str
) -> None:
    students = [f"order-{n}" for n in range(12)]
    sent: Sent = {}
    history = skewed_history(students, round(time.time() * 1000) - 3_600_000)
    await produce(own_broker, history, sent)
    seen: set[tuple[str, int, int]] = set()
    runs: dict[str, tuple[dict[str, Account | None], dict[Any, list[bytes]]]] = {}
    for batch, number in ((1, 8), (7, 9), (500, 10)):
        url = await flushed(database_url(redis_url, number))
        await serve_until_committed(own_broker, url, sent, batch_max_records=batch)
        runs[f"batch {batch}"] = (
            await accounts(url, students),
            await outputs_since(own_broker, seen),
        )
    rebuilt = await flushed(database_url(redis_url, 11))
    await rebuild(
        Settings(kafka_bootstrap_servers=own_broker, redis_cluster="false"), redis_url=rebuilt
    )

    live_accounts, live_outputs = runs["batch 500"]
    assert all(account is not None for account in live_accounts.values())
    for name, (found, outputs) in runs.items():
        assert found == live_accounts, name
        assert outputs == live_outputs, name
    assert await accounts(rebuilt, students) == live_accounts
    # by record time: the even students' deregistration came before their registration
    refused = {
        json.loads(value)["data"]["caused_by"]["id"]
        for (topic, _), values in live_outputs.items()
        if topic == REJECTIONS_TOPIC
        for value in values
        if json.loads(value)["data"]["reason"] == "not_registered"
    }
    deregistrations = [event for event, _ in history if ev.topic_of(event) == DEREGISTRATIONS_TOPIC]
    assert refused & {event["id"] for event in deregistrations} == {
        event["id"] for event in deregistrations[::2]
    }


HOLD_SECONDS = 4


async def test_an_outage_longer_than_the_hold_refuses_nothing_that_arrived_in_time(
    own_broker: str, redis_url: str
) -> None:
    sent: Sent = {}
    live = await flushed(database_url(redis_url, 12))
    hold = {"result_hold_seconds": HOLD_SECONDS, "held_sweep_interval_seconds": 0.2}
    await serve_until_committed(own_broker, live, sent, **hold)  # the group exists; now it is down
    in_time, too_late = ev.exam_result("in-time", 2016, "A"), ev.exam_result("too-late", 2016, "A")
    started = round(time.time() * 1000)
    await produce(own_broker, [(in_time, started), (too_late, started)], sent)
    await asyncio.sleep(HOLD_SECONDS - 1)
    registrations = [
        (ev.registration("in-time", 2016, {"A": 6}), round(time.time() * 1000)),
        (ev.registration("too-late", 2016, {"A": 6}), started + HOLD_SECONDS * 1000),
    ]
    await produce(own_broker, registrations, sent)
    await asyncio.sleep(HOLD_SECONDS)  # the service comes back after both deadlines passed
    await serve_until_committed(own_broker, live, sent, **hold)

    found = await accounts(live, ["in-time", "too-late"])
    assert found["in-time"] is not None and found["in-time"].balance == 146 * 4
    assert found["in-time"].held == ()
    assert found["too-late"] is not None and found["too-late"].balance == 134 * 4
    rejections = [json.loads(r.value) for r in await consume_to_end(own_broker, REJECTIONS_TOPIC)]
    assert [(m["data"]["caused_by"]["id"], m["data"]["reason"]) for m in rejections] == [
        (too_late["id"], "unknown_registration")
    ]
    # its refusal is stamped with its deadline: the same bytes whoever decides it
    assert (
        rejections[0]["time"]
        == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started / 1000 + HOLD_SECONDS))
        + f".{(started + HOLD_SECONDS * 1000) % 1000:03d}Z"
    )

    rebuilt = await flushed(database_url(redis_url, 13))
    await rebuild(
        Settings(kafka_bootstrap_servers=own_broker, redis_cluster="false", **hold),
        redis_url=rebuilt,
    )
    assert await accounts(rebuilt, ["in-time", "too-late"]) == found


def test_serve_refuses_input_topics_with_different_partition_counts(tmp_path: Path) -> None:
    with tansu(tmp_path) as bootstrap:
        counts = {REGISTRATIONS_TOPIC: 3, EXAM_RESULTS_TOPIC: 3, DEREGISTRATIONS_TOPIC: 2}

        async def prepare() -> None:
            await wait_for_kafka(bootstrap, timeout=30)
            await ensure_topics(bootstrap, counts)

        asyncio.run(prepare())
        env = {
            **os.environ,
            "LA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LA_REDIS_URL": "redis://127.0.0.1:1/0",
            "LA_HTTP_PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "learning_account", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert "same number of partitions" in message and f"{DEREGISTRATIONS_TOPIC} has 2" in message
    assert "Traceback" not in done.stderr
