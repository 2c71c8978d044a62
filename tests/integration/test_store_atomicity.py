"""A store script that fails writes nothing; settings that would make a write fail are refused."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from learning_account.adapters.lua import COMMIT_MANY_SCRIPT, SETTLE_MANY_SCRIPT
from learning_account.adapters.redis_layout import HELD_INDEX_KEY, account_key, outputs_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import EventRef, Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.processing.store import event_digest
from learning_account.settings import Settings
from learning_account_dev import events as ev


def record(event: dict[str, Any], offset: int) -> InputRecord:
    value = ev.to_bytes(event)
    return InputRecord(ev.topic_of(event), 0, offset, event["subject"].encode(), value, 1_000)


def commit_args(version: str, digest: bytes, retention: Any = 1000) -> list[Any]:
    """One student's arguments of the commit script: no year fields, one step."""
    return [version, b"{}", retention, 0, "", "", "s", digest, b"outputs"]


async def test_a_commit_that_fails_leaves_the_account_as_it_was(any_redis: Any) -> None:
    """LA_OUTBOX_RETENTION_SECONDS=0 once made every commit fail after writing the state."""
    store = RedisStore(any_redis)
    processor = Processor(store, Policy())
    await processor.process([record(ev.exam_result("s1", 2016, "A"), 0)])  # held: indexed
    before = await any_redis.hgetall(account_key("s1"))
    index_before = await any_redis.zrange(HELD_INDEX_KEY, 0, -1, withscores=True)
    store.outbox_retention_ms = 0
    registration = ev.registration("s1", 2016, {"A": 6})
    with pytest.raises(ResponseError, match="retention"):
        await processor.process([record(registration, 1)])
    assert await any_redis.hgetall(account_key("s1")) == before
    assert await any_redis.zrange(HELD_INDEX_KEY, 0, -1, withscores=True) == index_before
    digest = event_digest(EventRef(registration["source"], registration["id"], "t"))
    assert await any_redis.exists(outputs_key("s1", digest)) == 0


async def test_a_bad_student_in_a_many_student_commit_writes_no_student(
    redis_client: Redis,
) -> None:
    keys = [account_key("a"), outputs_key("a", "00" * 8), account_key("b"), outputs_key("b", "01")]
    first = commit_args("", b"\x00" * 8)
    second = commit_args("", b"\x01" * 7)  # a digest of 7 bytes
    header = [2, 2, len(first), 2, len(second)]
    with pytest.raises(ResponseError, match="digest"):
        await redis_client.eval(
            COMMIT_MANY_SCRIPT, 5, *keys, HELD_INDEX_KEY, *header, *first, *second
        )
    assert await redis_client.keys("*") == []
    # the same call with both students right writes both
    second = commit_args("", b"\x01" * 8)
    replies = await redis_client.eval(
        COMMIT_MANY_SCRIPT, 5, *keys, HELD_INDEX_KEY, *header, *first, *second
    )
    assert replies == [1, 1]  # both written, nothing pending
    assert [await redis_client.hget(account_key(s), "v") for s in "ab"] == [b"1", b"1"]
    assert await redis_client.get(outputs_key("b", "01")) == b"outputs"


@pytest.mark.parametrize(
    "retention", [0, -5, 1.5, "soon"], ids=["zero", "negative", "fraction", "text"]
)
async def test_a_commit_with_a_bad_retention_writes_nothing(
    redis_client: Redis, retention: Any
) -> None:
    keys = [account_key("a"), outputs_key("a", "00" * 8)]
    args = commit_args("", b"\x00" * 8, retention)
    with pytest.raises(ResponseError, match="retention"):
        await redis_client.eval(COMMIT_MANY_SCRIPT, 3, *keys, HELD_INDEX_KEY, 1, 2, 9, *args)
    assert await redis_client.keys("*") == []


async def test_a_commit_on_a_corrupt_version_writes_nothing(redis_client: Redis) -> None:
    await redis_client.hset(account_key("a"), mapping={"s": "{}", "v": "seven"})
    keys = [account_key("a"), outputs_key("a", "00" * 8)]
    args = commit_args("seven", b"\x00" * 8)
    with pytest.raises(ResponseError, match="version"):
        await redis_client.eval(COMMIT_MANY_SCRIPT, 3, *keys, HELD_INDEX_KEY, 1, 2, 9, *args)
    assert await redis_client.hgetall(account_key("a")) == {b"s": b"{}", b"v": b"seven"}
    assert await redis_client.exists(outputs_key("a", "00" * 8), HELD_INDEX_KEY) == 0


async def test_a_settle_with_a_bad_score_writes_nothing(redis_client: Redis) -> None:
    pending = b"\x00" * 8
    await redis_client.hset(account_key("a"), mapping={"v": "3", "p": pending})
    args = ["3", "a", "later", pending]
    with pytest.raises(ResponseError, match="score"):
        await redis_client.eval(
            SETTLE_MANY_SCRIPT, 2, account_key("a"), HELD_INDEX_KEY, 1, 1, 4, *args
        )
    assert await redis_client.hget(account_key("a"), "p") == pending


@pytest.mark.parametrize("seconds", [0, -1, 0.0004, float("nan"), float("inf")])
async def test_an_outbox_retention_under_a_millisecond_is_refused(
    redis_client: Redis, seconds: float
) -> None:
    with pytest.raises(ValueError, match="retention"):
        RedisStore(redis_client, outbox_retention_seconds=seconds)
    with pytest.raises(ValueError, match="LA_OUTBOX_RETENTION_SECONDS"):
        Settings.from_env({"LA_OUTBOX_RETENTION_SECONDS": str(seconds)})


def test_the_smallest_outbox_retention_and_message_size_are_accepted() -> None:
    settings = Settings.from_env(
        {"LA_OUTBOX_RETENTION_SECONDS": "0.001", "LA_KAFKA_MAX_MESSAGE_BYTES": "524288"}
    )
    assert (settings.outbox_retention_seconds, settings.kafka_max_message_bytes) == (
        0.001,
        524288,
    )
    with pytest.raises(ValueError, match="LA_KAFKA_MAX_MESSAGE_BYTES"):
        Settings.from_env({"LA_KAFKA_MAX_MESSAGE_BYTES": "524287"})


async def test_a_commit_beside_a_held_index_of_another_type_writes_nothing(
    redis_client: Redis,
) -> None:
    await redis_client.set(HELD_INDEX_KEY, "not a sorted set")
    keys = [account_key("a"), outputs_key("a", "00" * 8)]
    args = commit_args("", b"\x00" * 8)
    with pytest.raises(ResponseError, match="sorted set"):
        await redis_client.eval(COMMIT_MANY_SCRIPT, 3, *keys, HELD_INDEX_KEY, 1, 2, 9, *args)
    assert await redis_client.keys("*") == [HELD_INDEX_KEY.encode()]
