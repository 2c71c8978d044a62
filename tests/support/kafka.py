"""Kafka helpers for tests: produce JSON, read topics back, unique topic names."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer import message_accumulator
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import (
    PRODUCER_KWARGS,
    DevStackError,
    ensure_topics,
    free_port,
    leave_group_if_first_generation,
    start_tansu,
    wait_for_kafka,
)

__all__ = [
    "ConsumedRecord",
    "consume",
    "consume_to_end",
    "create_topics",
    "produce_json",
    "stop_consumer",
    "unique_topic",
]


def earliest_reader(bootstrap: str, *topics: str, **settings: Any) -> AIOKafkaConsumer:
    """A consumer in no group: it reads from the earliest offset and commits nothing."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings,
    )


class ConsumedRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int

    def json(self) -> Any:
        assert self.value is not None, "tombstone has no JSON value"
        return json.loads(self.value)

    @property
    def key_str(self) -> str | None:
        return self.key.decode() if self.key is not None else None


# aiokafka's producer only takes header names as str: its batch builder (the pure-Python one,
# patched in by `not_utf8_header_names`) swaps this placeholder for bytes of the same length
# that are not UTF-8
NAME_PLACEHOLDER = b"hostile-name"
NOT_UTF8_NAME = b"\xff\xfe-not-utf-8"


class _NotUtf8HeaderNames(_DefaultRecordBatchBuilderPy):  # type: ignore[misc]
    def build(self) -> bytearray:
        self._buffer[:] = bytes(self._buffer).replace(NAME_PLACEHOLDER, NOT_UTF8_NAME)
        return super().build()  # type: ignore[no-any-return]


@contextlib.contextmanager
def not_utf8_header_names() -> Iterator[None]:
    """While active, producers write NAME_PLACEHOLDER header names as NOT_UTF8_NAME."""
    original = message_accumulator.DefaultRecordBatchBuilder
    message_accumulator.DefaultRecordBatchBuilder = _NotUtf8HeaderNames
    try:
        yield
    finally:
        message_accumulator.DefaultRecordBatchBuilder = original


PARTITIONS = 3
"""Partitions of every topic on a broker of a test's own (`started_tansu`)."""


@contextlib.contextmanager
def tansu(data_dir: Path) -> Iterator[str]:
    """A Tansu of its own on a free port: its bootstrap address while it runs."""
    port = free_port()
    try:
        proc = start_tansu(port, data_dir)
    except DevStackError as exc:
        pytest.fail(f"cannot start Tansu: {exc}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def module_broker(name: str) -> Any:
    """A module-scoped fixture `broker`: a `tansu` of the module's own, data under `name`."""

    @pytest.fixture(scope="module")
    def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        with tansu(tmp_path_factory.mktemp(name)) as bootstrap:
            yield bootstrap

    return broker


async def with_topics(bootstrap: str) -> str:
    """`bootstrap` once it answers, with every input and output topic of PARTITIONS partitions."""
    await wait_for_kafka(bootstrap, timeout=30)
    await ensure_topics(bootstrap, {t: PARTITIONS for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
    return bootstrap


@contextlib.asynccontextmanager
async def started_tansu(data_dir: Path) -> AsyncIterator[str]:
    """`tansu`, answering, with every input and output topic of PARTITIONS partitions."""
    with tansu(data_dir) as bootstrap:
        yield await with_topics(bootstrap)


def unique_topic(prefix: str = "t") -> str:
    """A topic name nobody else uses in this (session-wide) broker."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    await ensure_topics(bootstrap, topics, timeout=30)


def _to_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


async def produce_json(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[str | bytes | None, Any]],
    *,
    headers: dict[str, str] | None = None,
) -> list[Any]:
    """Produce ``(key, value)`` pairs; dict/list values are JSON-encoded, bytes sent as is.

    Uses ``acks="all"`` and no idempotence (Tansu). All sends are awaited together; returns the
    aiokafka ``RecordMetadata`` list in input order.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KWARGS)
    await producer.start()
    try:
        hdrs = [(k, v.encode()) for k, v in (headers or {}).items()] or None
        futures = []
        for key, value in messages:
            key_bytes = key.encode() if isinstance(key, str) else key
            futures.append(
                await producer.send(topic, value=_to_bytes(value), key=key_bytes, headers=hdrs)
            )
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: str | Sequence[str],
    n: int,
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a deadline for reading, not a cancel scope
    settle: float = 0.0,
) -> list[ConsumedRecord]:
    """Read ``topics`` from the earliest offset (no consumer group, nothing committed).

    Returns once ``n`` records were read (after ``settle`` extra seconds, to catch unexpected
    extras) or when ``timeout`` expires, with whatever was read. Order: as fetched (per-partition
    order is preserved).
    """
    topic_list = [topics] if isinstance(topics, str) else list(topics)
    # metadata refreshed every second: partitions of topics created meanwhile are read too
    consumer = earliest_reader(bootstrap, *topic_list, metadata_max_age_ms=1000)
    await consumer.start()
    records: list[ConsumedRecord] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            batch = await consumer.getmany(timeout_ms=100)
            for tp_records in batch.values():
                records.extend(
                    ConsumedRecord(r.topic, r.key, r.value, r.partition, r.offset)
                    for r in tp_records
                )
            if settle_until is None and len(records) >= n:
                if settle <= 0:
                    break
                settle_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return records


async def consume_to_end(
    bootstrap: str,
    topics: str | Sequence[str],
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a deadline for reading, not a cancel scope
) -> list[ConsumedRecord]:
    """Read every record in ``topics`` from the beginning until caught up with the high watermark.

    Uses the high watermark of fetch responses, not ``end_offsets()``: Tansu answers
    ListOffsets(latest) with "base offset of the last record batch + 1", which is too small
    when the last batch holds several records.
    """
    topic_list = [topics] if isinstance(topics, str) else list(topics)
    consumer = earliest_reader(bootstrap)
    await consumer.start()
    records: list[ConsumedRecord] = []
    try:
        await consumer.topics()  # refresh cluster metadata
        partitions: list[TopicPartition] = []
        for topic in topic_list:
            parts = consumer.partitions_for_topic(topic) or set()
            partitions.extend(TopicPartition(topic, p) for p in sorted(parts))
        if not partitions:
            return records
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp_records in batch.values():
                records.extend(
                    ConsumedRecord(r.topic, r.key, r.value, r.partition, r.offset)
                    for r in tp_records
                )
            caught_up = True
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    caught_up = False
            if caught_up and not batch:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"could not read {topic_list} to the end within {timeout}s")
    finally:
        await consumer.stop()
    return records


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a group consumer so the next member can join at once (Tansu generation-0 quirk)."""
    await leave_group_if_first_generation(consumer)
    await consumer.stop()
