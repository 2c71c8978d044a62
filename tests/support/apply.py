"""Events through the real Processor into Redis, as the consumer would apply them."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev


async def apply(redis_client: Redis, events: list[dict[str, Any]]) -> None:
    """Apply `events` in one batch, each on its topic, keyed by student; none may dead-letter."""
    offsets: dict[str, int] = {}
    records = []
    for event in events:
        topic = ev.topic_of(event)
        offsets[topic] = offsets.get(topic, -1) + 1
        key = event["data"]["student_id"].encode()
        records.append(InputRecord(topic, 0, offsets[topic], key, ev.to_bytes(event)))
    report = await Processor(RedisStore(redis_client), Policy()).process(records)
    assert report.dead_lettered == 0
