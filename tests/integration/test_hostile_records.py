"""Records real producers and brokers emit, beyond well-formed JSON, through the real service.

Each test runs the service in-process (its consumer group, HTTP API and Redis database) on a
broker of this module (so nothing here reaches other tests' topics) and checks the contract: every
valid record applied once, a bad one dead-lettered with its `error_code`, the consumer going on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer import message_accumulator
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as RdTopicPartition
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.bootstrap import build_service
from learning_account.entrypoints import consumer as app
from learning_account.entrypoints.service import Service
from learning_account.settings import Settings
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    DEAD_LETTER_TOPIC,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    REGISTRATIONS_TOPIC,
)
from learning_account_dev import events as ev
from learning_account_dev.devstack import (
    ensure_topics,
    free_port,
    wait_for_kafka,
)
from support.kafka import NAME_PLACEHOLDER, PARTITIONS, not_utf8_header_names, started_tansu, tansu
from support.service import OutputCollector

CREDITS = 6
BALANCE = 140 - CREDITS


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tansu(tmp_path_factory.mktemp("tansu-hostile")) as bootstrap:
        yield bootstrap


@pytest.fixture
async def topics(broker: str) -> str:
    await wait_for_kafka(broker, timeout=30)
    await ensure_topics(broker, {t: PARTITIONS for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
    return broker


@pytest.fixture
async def outputs(topics: str) -> AsyncIterator[OutputCollector]:
    collector = OutputCollector(topics)
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop()


class Running:
    """An in-process service and its HTTP API."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.settings.http_port}")

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.http.get(path)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    async def balance(self, student: str) -> Any:
        status, account = await self.get(f"/accounts/{student}")
        return account["balance"] if status == 200 else None

    async def wait_for(
        self,
        check: Callable[[], Awaitable[bool]],
        what: str,
        timeout: float = 20,  # noqa: ASYNC109 - a deadline for polling
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen within {timeout}s")
            await asyncio.sleep(0.1)

    async def wait_applied(self, students: list[str], timeout: float = 20) -> None:  # noqa: ASYNC109
        async def all_applied() -> bool:
            return [await self.balance(s) for s in students] == [BALANCE] * len(students)

        await self.wait_for(all_applied, f"the accounts of {len(students)} students", timeout)


@pytest.fixture
async def start_service(
    topics: str, redis_url: str, redis_client: Redis
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Starts services of this test (a consumer group of their own), stopped after it."""
    started: list[Running] = []

    async def start(**settings: Any) -> Running:
        defaults: dict[str, Any] = {
            "kafka_bootstrap_servers": topics,
            "redis_url": redis_url,  # database 0, flushed for each test by redis_client
            "redis_cluster": "false",
            "http_port": free_port(),
            "consumer_group": f"hostile-{uuid.uuid4().hex[:8]}",
            "graceful_timeout_seconds": 5,
        }
        service = build_service(Settings(**{**defaults, **settings}))
        await service.start()
        started.append(Running(service))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            await running.http.aclose()
            await running.service.stop()


def students(prefix: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}-{tag}-{i:02d}" for i in range(count)]


def registration(student: str) -> tuple[str, bytes, bytes]:
    event = ev.registration(student, 2016, {"A": CREDITS})
    return REGISTRATIONS_TOPIC, student.encode(), ev.to_bytes(event)


async def produce(
    bootstrap: str,
    records: list[tuple[str, bytes | None, bytes | None]],
    *,
    headers: dict[int, list[tuple[str, bytes | None]]] | None = None,
    timestamps: dict[int, int] | None = None,
    **producer_settings: Any,
) -> None:
    """Send `records` as few batches as the producer makes of them; headers by record index."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=50,
        **producer_settings,
    )
    await producer.start()
    try:
        pending = [
            await producer.send(
                topic,
                value,
                key=key,
                headers=(headers or {}).get(index),
                timestamp_ms=(timestamps or {}).get(index),
            )
            for index, (topic, key, value) in enumerate(records)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def changes_of(outputs: OutputCollector, student: str) -> set[bytes]:
    """The distinct balance-changed messages of a student (a re-publication is the same bytes)."""
    return {
        value
        for value in outputs.raw(BALANCE_CHANGED_TOPIC)
        if json.loads(value)["subject"] == student
    }


def dead_letters_of(outputs: OutputCollector, key: bytes) -> list[dict[str, Any]]:
    letters = {
        json.dumps(m, sort_keys=True): m
        for m in outputs.messages(DEAD_LETTER_TOPIC)
        if m.get("subject") == key.decode()
    }
    return [m["data"] for m in letters.values()]


async def assert_all_applied_once(
    running: Running, outputs: OutputCollector, names: list[str]
) -> None:
    await running.wait_applied(names)
    await outputs.wait_for(
        lambda: all(changes_of(outputs, name) for name in names), what="every balance change"
    )
    for name in names:
        assert len(changes_of(outputs, name)) == 1, f"{name} changed more than once"


# --- case 1: a header with a null value ----------------------------------------------------------


async def test_a_header_with_a_null_value_loses_nothing(
    start_service: Callable[..., Awaitable[Running]], outputs: OutputCollector, topics: str
) -> None:
    running = await start_service()
    names = students("null-header", 24)
    await produce(
        topics,
        [registration(name) for name in names],
        headers={20: [("x-trace", None)], 21: [("x-ok", b"1"), ("x-empty", None)]},
    )
    await assert_all_applied_once(running, outputs, names)
    assert await running.get("/health/ready") == (200, {"ready": True})


# --- case 2: a header whose name is not UTF-8 ----------------------------------------------------


@pytest.fixture
def not_utf8_names() -> Iterator[None]:
    with not_utf8_header_names():
        yield


async def test_a_header_name_that_is_not_utf8_loses_nothing_on_any_partition(
    start_service: Callable[..., Awaitable[Running]],
    outputs: OutputCollector,
    topics: str,
    not_utf8_names: None,
    redis_url: str,
) -> None:
    running = await start_service()
    names = students("bad-name", 30)  # keyed by student: spread over the three partitions
    await produce(
        topics,
        [registration(name) for name in names],
        headers={i: [(NAME_PLACEHOLDER.decode(), b"1")] for i in (3, 17, 29)},
    )
    await assert_all_applied_once(running, outputs, names)
    assert await running.get("/health/ready") == (200, {"ready": True})
    later = students("after-bad-name", 3)
    await produce(topics, [registration(name) for name in later])
    await assert_all_applied_once(running, outputs, later)
    # `learning-account rebuild`, in a process of its own, reads them as the live service did
    target = redis_url.rsplit("/", 1)[0] + "/7"
    async with Redis.from_url(target) as rebuilt:
        await rebuilt.flushdb()
        rebuild = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "learning_account", "rebuild", "--redis-url", target),
            env={**os.environ, "LA_KAFKA_BOOTSTRAP_SERVERS": topics},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, errors = await rebuild.communicate()
        assert rebuild.returncode == 0, errors.decode()[-2000:]
        store = RedisStore(rebuilt)
        assert [getattr(await store.get(name), "balance", None) for name in names] == [
            BALANCE * 4
        ] * len(names)


# --- case 3: compressed record batches -----------------------------------------------------------


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_a_compressed_batch_is_read_like_any_other(
    start_service: Callable[..., Awaitable[Running]],
    outputs: OutputCollector,
    topics: str,
    codec: str,
) -> None:
    running = await start_service()
    names = students(codec, 12)
    await produce(topics, [registration(name) for name in names], compression_type=codec)
    await assert_all_applied_once(running, outputs, names)


# --- case 4: an invalid record stamped in microseconds -------------------------------------------


async def test_an_invalid_record_with_a_timestamp_out_of_range_is_dead_lettered(
    start_service: Callable[..., Awaitable[Running]], outputs: OutputCollector, topics: str
) -> None:
    running = await start_service()
    names = students("micro", 4)
    bad_key = f"micro-bad-{uuid.uuid4().hex[:6]}".encode()
    microseconds = time.time_ns() // 1000
    records = [registration(names[0]), (REGISTRATIONS_TOPIC, bad_key, b'{"specversion": "1.0"')]
    records += [registration(name) for name in names[1:]]
    await produce(topics, records, timestamps={1: microseconds})
    await assert_all_applied_once(running, outputs, names)
    await outputs.wait_for(lambda: bool(dead_letters_of(outputs, bad_key)), what="the dead letter")
    (letter,) = dead_letters_of(outputs, bad_key)
    assert (letter["error_code"], letter["payload"]) == ("not_json", '{"specversion": "1.0"')
    assert await running.get("/health/ready") == (200, {"ready": True})


# --- a batch that cannot be read, and a consumer that makes no progress ---------------------------


class _BadChecksum(_DefaultRecordBatchBuilderPy):  # type: ignore[misc]
    def build(self) -> bytearray:
        batch = super().build()
        batch[17:21] = b"\x00\x00\x00\x00"  # the CRC-32C of a v2 batch
        return batch  # type: ignore[no-any-return]


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[str]:
    """A broker of this test alone: what it sends there cannot be read by anyone."""
    async with started_tansu(tmp_path) as bootstrap:
        yield bootstrap


def lag_of(metrics: str, topic: str) -> dict[int, float]:
    found = {}
    for line in metrics.splitlines():
        if line.startswith("la_consumer_lag{") and f'topic="{topic}"' in line:
            partition = int(line.split('partition="')[1].split('"')[0])
            found[partition] = float(line.rsplit(" ", 1)[1])
    return found


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        offsets = {}
        for topic in INPUT_TOPICS:
            for partition in range(PARTITIONS):
                offset = await probe.committed(TopicPartition(topic, partition))
                if offset is not None and offset >= 0:
                    offsets[(topic, partition)] = offset
        return offsets
    finally:
        await probe.stop()


async def test_an_unreadable_batch_is_retried_with_backoff_never_skipped(
    start_service: Callable[..., Awaitable[Running]],
    own_broker: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await start_service(kafka_bootstrap_servers=own_broker, stall_seconds=1)
    before = students("before", 6)
    await produce(own_broker, [registration(name) for name in before])
    await running.wait_applied(before)
    with monkeypatch.context() as patch:
        patch.setattr(message_accumulator, "DefaultRecordBatchBuilder", _BadChecksum)
        await produce(own_broker, [registration(students("corrupt", 1)[0])])
    after = students("after", 9)
    await produce(own_broker, [registration(name) for name in after])

    async def not_ready() -> bool:
        return (await running.get("/health/ready"))[0] == 503

    await running.wait_for(not_ready, "readiness failing")
    caplog.clear()
    await asyncio.sleep(3)
    retries = [r for r in caplog.records if "rewinding and retrying" in r.getMessage()]
    assert 1 <= len(retries) <= 8, "retries back off"
    assert await not_ready()
    _status, metrics = await running.get("/metrics")
    assert sum(lag_of(metrics, REGISTRATIONS_TOPIC).values()) >= 1
    # nothing is committed past a record whose effect is not in Redis
    group = running.service.settings.consumer_group
    committed = await committed_offsets(own_broker, group)
    applied = {name for name in before + after if await running.balance(name) == BALANCE}
    assert set(before) <= applied
    # read with CRCs checked (librdkafka, as the service reads): no record below a committed
    # offset is the corrupt one, and every one of them was applied
    for number in range(PARTITIONS):
        end = committed.get((REGISTRATIONS_TOPIC, number), 0)
        for offset, key in await asyncio.to_thread(read_checked, own_broker, number, end):
            assert key is not None and key.decode() in applied, (number, offset)


def read_checked(bootstrap: str, number: int, end: int) -> list[tuple[int, bytes | None]]:
    """The registrations of partition `number` below offset `end`; fails on an unreadable one."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}"}
        | {"check.crcs": True, "enable.auto.commit": False}
    )
    consumer.assign([RdTopicPartition(REGISTRATIONS_TOPIC, number, 0)])
    read: list[tuple[int, bytes | None]] = []
    deadline = time.monotonic() + 20
    try:
        while (not read or read[-1][0] < end - 1) and end > 0:
            assert time.monotonic() < deadline, f"offsets below {end} not read within 20s"
            for message in consumer.consume(100, 0.5):
                offset = message.offset()
                if offset is not None and 0 <= offset < end:
                    assert message.error() is None, message.error()
                    read.append((offset, message.key()))
    finally:
        consumer.close()
    return read


async def test_readiness_fails_while_a_partition_with_records_makes_no_progress(
    start_service: Callable[..., Awaitable[Running]], topics: str
) -> None:
    running = await start_service(stall_seconds=1)
    service = running.service
    release = asyncio.Event()
    process = service.processor.process

    async def stuck(records: Any) -> Any:
        await release.wait()
        return await process(records)

    service.processor.process = stuck  # type: ignore[method-assign]
    names = students("stuck", 5)
    await produce(topics, [registration(name) for name in names])

    async def not_ready() -> bool:
        return (await running.get("/health/ready"))[0] == 503

    try:
        await running.wait_for(not_ready, "readiness failing", timeout=10)
        _status, metrics = await running.get("/metrics")
        assert "la_ready 0.0" in metrics
        assert sum(lag_of(metrics, REGISTRATIONS_TOPIC).values()) >= len(names)
    finally:
        release.set()
    await running.wait_applied(names)

    async def ready_and_caught_up() -> bool:
        _status, metrics = await running.get("/metrics")
        lags = lag_of(metrics, REGISTRATIONS_TOPIC)
        return (await running.get("/health/ready"))[0] == 200 and not any(lags.values())

    await running.wait_for(ready_and_caught_up, "readiness back and no lag", timeout=10)


async def test_a_batch_the_reading_fails_on_is_rewound_not_skipped(
    start_service: Callable[..., Awaitable[Running]],
    outputs: OutputCollector,
    topics: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = await start_service()
    # reading a fetched record fails on the one with a null header value, until undone
    read = app.input_record

    def failing(message: Any) -> Any:
        record = read(message)
        if any(value is None for _name, value in record.headers):
            raise ValueError("cannot read this record")
        return record

    monkeypatch.setattr(app, "input_record", failing)
    names = students("reading", 8)
    await produce(topics, [registration(name) for name in names], headers={4: [("x", None)]})

    async def not_ready() -> bool:
        return (await running.get("/health/ready"))[0] == 503

    await running.wait_for(not_ready, "readiness failing")
    monkeypatch.undo()
    await assert_all_applied_once(running, outputs, names)
    await running.wait_for(
        lambda: _is_ready(running), "readiness back once the batch went through", timeout=10
    )


async def _is_ready(running: Running) -> bool:
    return (await running.get("/health/ready"))[0] == 200
