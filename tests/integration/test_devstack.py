"""The test infrastructure itself works: broker, consumer groups, Redis, restartable Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from learning_account_dev.devstack import (
    DevStack,
    ensure_topics,
    free_port,
    is_port_open,
    parse_bootstrap,
    parse_redis_url,
)
from support import (
    RestartableRedis,
    consume,
    consume_to_end,
    create_topics,
    produce_json,
    stop_consumer,
    unique_topic,
)

# Short group timeouts: joining a group on Tansu takes about session_timeout_ms / 2.
GROUP_KW = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


async def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return len(desc["partitions"])
    finally:
        await admin.close()


async def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    topic = unique_topic("idem")
    await ensure_topics(kafka_bootstrap, {topic: 3})
    await ensure_topics(kafka_bootstrap, {topic: 3})  # already exists: no error
    assert await _partition_count(kafka_bootstrap, topic) == 3


async def test_keyed_messages_on_three_partitions(kafka_bootstrap: str) -> None:
    topic = unique_topic("keyed")
    await create_topics(kafka_bootstrap, {topic: 3})
    messages = [(f"learner-{i % 10}", {"seq": i, "learner": i % 10}) for i in range(60)]

    metas = await produce_json(kafka_bootstrap, topic, messages)
    records = await consume(kafka_bootstrap, topic, len(messages), timeout=20, settle=0.5)

    assert len(records) == len(messages)
    assert {m.partition for m in metas} == {r.partition for r in records}
    assert len({r.partition for r in records}) > 1, "keys should spread over partitions"

    # same key -> same partition, and per-key order preserved
    partitions_by_key: dict[str | None, set[int]] = defaultdict(set)
    seqs_by_key: dict[str | None, list[int]] = defaultdict(list)
    for r in records:
        partitions_by_key[r.key_str].add(r.partition)
        seqs_by_key[r.key_str].append(r.json()["seq"])
    assert all(len(p) == 1 for p in partitions_by_key.values())
    assert all(s == sorted(s) for s in seqs_by_key.values())
    assert sorted(r.json()["seq"] for r in records) == list(range(60))

    # offsets per partition are contiguous from 0
    offsets: dict[int, list[int]] = defaultdict(list)
    for r in records:
        offsets[r.partition].append(r.offset)
    assert all(sorted(o) == list(range(len(o))) for o in offsets.values())

    # consume_to_end sees exactly the same records
    again = await consume_to_end(kafka_bootstrap, [topic])
    assert sorted(again, key=lambda r: (r.partition, r.offset)) == sorted(
        records, key=lambda r: (r.partition, r.offset)
    )


async def _read_group(consumer: AIOKafkaConsumer, n: int, within: float) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(batch)
    return got


async def test_consumer_group_commit_and_resume(kafka_bootstrap: str) -> None:
    topic, group = unique_topic("grp"), unique_topic("group")
    await create_topics(kafka_bootstrap, {topic: 3})
    await produce_json(kafka_bootstrap, topic, [(f"k{i}", {"n": i}) for i in range(9)])

    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **GROUP_KW,
        )

    first = new_consumer()
    await first.start()
    try:
        got = await _read_group(first, 9, within=20)
        assert len(got) == 9
        # commit explicit offsets: everything of every partition (offset + 1)
        commit: dict[TopicPartition, int] = {}
        for rec in got:
            tp = TopicPartition(rec.topic, rec.partition)
            commit[tp] = max(commit.get(tp, 0), rec.offset + 1)
        await first.commit(commit)
        for tp, offset in commit.items():
            assert await first.committed(tp) == offset
    finally:
        await stop_consumer(first)

    await produce_json(kafka_bootstrap, topic, [(f"k{i}", {"n": i}) for i in range(9, 13)])

    second = new_consumer()
    started = time.monotonic()
    await second.start()
    try:
        # LeaveGroup was sent, so joining does not wait for the old member's session to expire
        assert time.monotonic() - started < GROUP_KW["session_timeout_ms"] / 1000 + 2
        resumed = await _read_group(second, 4, within=20)
        await asyncio.sleep(0.5)
        for batch in (await second.getmany(timeout_ms=200)).values():
            resumed.extend(batch)
        values = sorted(json.loads(r.value)["n"] for r in resumed)
        assert values == [9, 10, 11, 12]
    finally:
        await stop_consumer(second)


async def test_redis_client_fixture(redis_client: aioredis.Redis) -> None:
    assert await redis_client.dbsize() == 0  # flushed before each test
    await redis_client.set("la:test", "1")
    assert await redis_client.get("la:test") == b"1"


async def test_redis_client_is_flushed_between_tests(redis_client: aioredis.Redis) -> None:
    assert await redis_client.get("la:test") is None


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
async def test_restartable_redis_keeps_data(
    restartable_redis: RestartableRedis, crash: bool
) -> None:
    client = aioredis.Redis.from_url(restartable_redis.url)
    try:
        await client.set("balance", "125")
        await client.hset("learner:1", mapping={"credit": "40"})
        old_pid = restartable_redis.pid

        await restartable_redis.arestart(crash=crash)

        assert restartable_redis.pid != old_pid
        # the client reconnects by itself (first command may see a dropped connection)
        for _ in range(20):
            try:
                value = await client.get("balance")
                break
            except (aioredis.ConnectionError, ConnectionError):
                await asyncio.sleep(0.1)
        else:
            pytest.fail("could not reconnect to restarted redis")
        assert value == b"125"
        assert await client.hgetall("learner:1") == {b"credit": b"40"}
    finally:
        await client.aclose()


async def test_restartable_redis_is_down_while_stopped(
    restartable_redis: RestartableRedis,
) -> None:
    host, port = parse_redis_url(restartable_redis.url)
    await restartable_redis.astop()
    assert not is_port_open(host, port)
    await restartable_redis.astart()
    assert is_port_open(host, port)


async def test_devstack_reuses_running_services(kafka_bootstrap: str, redis_url: str) -> None:
    async with DevStack(kafka_bootstrap, redis_url) as stack:
        assert stack.started == []


async def test_devstack_starts_and_stops_what_is_missing(tmp_path: Path) -> None:
    kafka = f"127.0.0.1:{free_port()}"
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    topic = unique_topic("dev")
    async with DevStack(kafka, redis_url, state_dir=tmp_path, topics={topic: 2}) as stack:
        assert stack.started == ["tansu", "redis"]
        assert await _partition_count(kafka, topic) == 2
        client = aioredis.Redis.from_url(redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    assert not is_port_open(*parse_bootstrap(kafka))
    assert not is_port_open(*parse_redis_url(redis_url))
    assert list((tmp_path / "logs").iterdir())
