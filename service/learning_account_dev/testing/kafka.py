"""The test stack's Kafka side: publishing records, and reading output topics from their start."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from learning_account.wire import STRUCTURED_HEADERS
from learning_account_dev.devstack import PRODUCER_KWARGS

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


def caused_by(event_or_id: Mapping[str, Any] | str) -> Predicate:
    """A predicate for :meth:`LearningAccountStack.wait_for`: outputs caused by this input."""
    wanted = event_or_id if isinstance(event_or_id, str) else str(event_or_id["id"])

    def predicate(message: Message) -> bool:
        cause = message.get("data", {}).get("caused_by") or {}
        return bool(cause.get("id") == wanted)

    return predicate


async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Publish ``(topic, key, value)`` records as structured CloudEvents; wait for the acks."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_KWARGS)
    await producer.start()
    try:
        headers = list(STRUCTURED_HEADERS)
        pending = [await producer.send(t, v, key=k, headers=headers) for t, k, v in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class OutputReader:
    """Reads topics from their beginning and remembers what it read, across calls."""

    def __init__(self) -> None:
        # messages per topic and the next offset per partition
        self._seen: dict[str, list[Message]] = {}
        self._positions: dict[tuple[str, int], int] = {}

    async def wait_for(
        self,
        bootstrap: str,
        topic: str,
        predicate: Predicate | None,
        timeout: float,  # noqa: ASYNC109 - a deadline for reading, not a cancel scope
        count: int,
    ) -> list[Message]:
        """Every message of ``topic`` matching ``predicate`` once ``count`` of them were seen."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        def matches() -> list[Message]:
            return [m for m in self._seen.get(topic, []) if predicate is None or predicate(m)]

        found = matches()
        if len(found) >= count:
            return found
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        deadline = time.monotonic() + timeout
        try:
            partitions: list[TopicPartition] = []
            while not partitions:
                await consumer.topics()  # refresh metadata
                numbers = consumer.partitions_for_topic(topic) or set()
                partitions = [TopicPartition(topic, n) for n in sorted(numbers)]
                if not partitions:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"topic {topic} does not exist")
                    await asyncio.sleep(0.2)
            consumer.assign(partitions)
            for tp in partitions:
                position = self._positions.get((topic, tp.partition))
                if position is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, position)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        key = (topic, tp.partition)
                        if record.offset < self._positions.get(key, 0):
                            continue  # already read by a concurrent call
                        self._positions[key] = record.offset + 1
                        self._seen.setdefault(topic, []).append(_decode(record.value))
                found = matches()
                if len(found) >= count:
                    return found
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{count} matching message(s) on {topic} not seen within {timeout}s "
                        f"(saw {len(found)} of {len(self._seen.get(topic, []))})"
                    )
        finally:
            await consumer.stop()


def _decode(value: bytes | None) -> Message:
    if value is None:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {"_raw": value.decode(errors="replace")}
    return document if isinstance(document, dict) else {"_value": document}
