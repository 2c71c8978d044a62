"""A commit that fails writes nothing (a single Redis's MULTI/EXEC, a cluster's scripts); settings
that would make a write fail are refused."""

from __future__ import annotations

import math
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from learning_account.adapters.lua import SETTLE_MANY_SCRIPT
from learning_account.adapters.redis_connect import pack
from learning_account.adapters.redis_layout import HELD_INDEX_KEY, account_key, outputs_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Account, EventRef, Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.processing.store import AccountWrite, AppliedStep, event_digest
from learning_account.settings import Settings
from learning_account_dev import events as ev


def record(event: dict[str, Any], offset: int) -> InputRecord:
    value = ev.to_bytes(event)
    return InputRecord(ev.topic_of(event), 0, offset, event["subject"].encode(), value, 1_000)


def write(student_id: str, version: str = "", digest: str = "00" * 8, **held: Any) -> AccountWrite:
    """A write of one step with outputs and no year fields."""
    step = AppliedStep(digest, b"outputs", "c1" * 4)
    return AccountWrite(student_id, version, Account(student_id), (step,), **held)


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
    """A single Redis commits a batch whole (a cluster, student by student)."""
    store = RedisStore(redis_client)
    await redis_client.set(account_key("b"), "not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.commit([write("a"), write("b", digest="01" * 8)])
    assert await redis_client.keys("la:{a}*") == []
    # the same commit with both students right writes both
    await redis_client.delete(account_key("b"))
    assert await store.commit([write("a"), write("b", digest="01" * 8)]) == {"a": True, "b": True}
    assert [await redis_client.hget(account_key(s), "v") for s in "ab"] == [b"1", b"1"]
    assert await redis_client.get(outputs_key("b", "01" * 8)) == b"outputs"


@pytest.mark.parametrize(
    "retention", [0, -5, 1.5, "soon"], ids=["zero", "negative", "fraction", "text"]
)
async def test_a_commit_with_a_bad_retention_writes_nothing(any_redis: Any, retention: Any) -> None:
    store = RedisStore(any_redis)
    store.outbox_retention_ms = retention
    with pytest.raises(ResponseError, match="retention"):
        await store.commit([write("a", held_deadline=5.0)])
    assert await any_redis.keys("*") == []


async def test_a_commit_with_a_deadline_that_is_not_a_number_writes_nothing(
    any_redis: Any,
) -> None:
    with pytest.raises(ResponseError, match="score"):
        await RedisStore(any_redis).commit([write("a", held_deadline=math.nan)])
    assert await any_redis.keys("*") == []


async def test_a_commit_on_a_corrupt_version_writes_nothing(any_redis: Any) -> None:
    await any_redis.hset(account_key("a"), mapping={"s": "{}", "v": "seven"})
    with pytest.raises(ResponseError, match="version"):
        await RedisStore(any_redis).commit([write("a", "seven", held_deadline=5.0)])
    assert await any_redis.hgetall(account_key("a")) == {b"s": b"{}", b"v": b"seven"}
    assert await any_redis.exists(outputs_key("a", "00" * 8), HELD_INDEX_KEY) == 0


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
    with pytest.raises(ResponseError, match="sorted set"):
        await RedisStore(redis_client).commit([write("a", held_deadline=5.0)])
    assert await redis_client.keys("*") == [HELD_INDEX_KEY.encode()]


async def test_an_account_written_between_check_and_exec_fails_the_whole_commit(
    redis_client: Redis, redis_url: str
) -> None:
    """The WATCH of a single Redis: a write by anyone to a watched account after the commit's
    first round trip makes EXEC write nothing, and every student of the commit is reloaded."""
    other = Redis.from_url(redis_url)

    class Interleaved(RedisStore):
        async def _exchange(self, conn: Any, commands: list[bytes]) -> list[Any]:
            if commands[0] == pack("MULTI"):
                await other.hset(account_key("b"), "x", "written meanwhile")
            return await super()._exchange(conn, commands)

    students = [write("a"), write("b", digest="01" * 8)]
    try:
        assert await Interleaved(redis_client).commit(students) == {"a": False, "b": False}
        assert await redis_client.keys("la:{a}*") == []
        assert await redis_client.hgetall(account_key("b")) == {b"x": b"written meanwhile"}
        # the next attempt goes through (b's hash still has no version: it is at version "")
        assert await RedisStore(redis_client).commit(students) == {"a": True, "b": True}
        assert await redis_client.hget(account_key("b"), "x") == b"written meanwhile"
    finally:
        await other.aclose()
