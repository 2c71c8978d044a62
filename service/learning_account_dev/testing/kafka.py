"""The test stack's Kafka side: publishing records, and reading output topics from their start."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from learning_account.wire import STRUCTURED_HEADERS

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
    from confluent_kafka import Producer

    from learning_account.adapters.clients import PRODUCER_CONFIG, deliver

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    headers = list(STRUCTURED_HEADERS)
    await deliver(producer, [(t, k, v, headers) for t, k, v in records])


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
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from learning_account.ops.reading import close, partitions_of

        def matches() -> list[Message]:
            return [m for m in self._seen.get(topic, []) if predicate is None or predicate(m)]

        found = matches()
        if len(found) >= count:
            return found
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "learning-account-test-reader",  # never joined: partitions assigned
                "enable.auto.commit": False,
            }
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        try:
            partitions: list[TopicPartition] = []
            while not partitions:
                partitions = await partitions_of(consumer, [topic])
                if not partitions:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"topic {topic} does not exist")
                    await asyncio.sleep(0.2)
            consumer.assign(
                [
                    TopicPartition(
                        topic,
                        tp.partition,
                        self._positions.get((topic, tp.partition), OFFSET_BEGINNING),
                    )
                    for tp in partitions
                ]
            )
            while True:
                for record in await loop.run_in_executor(None, consumer.consume, 500, 0.2):
                    if record.error() is not None:
                        continue  # what librdkafka reports and retries itself
                    key = (topic, record.partition() or 0)
                    offset = record.offset() or 0
                    if offset < self._positions.get(key, 0):
                        continue  # already read by a concurrent call
                    self._positions[key] = offset + 1
                    self._seen.setdefault(topic, []).append(_decode(record.value()))
                found = matches()
                if len(found) >= count:
                    return found
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{count} matching message(s) on {topic} not seen within {timeout}s "
                        f"(saw {len(found)} of {len(self._seen.get(topic, []))})"
                    )
        finally:
            await close(consumer)


def _decode(value: bytes | None) -> Message:
    if value is None:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {"_raw": value.decode(errors="replace")}
    return document if isinstance(document, dict) else {"_value": document}
