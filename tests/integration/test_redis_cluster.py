"""The store and pipeline on a real 3-master Redis Cluster: one student's keys share a slot."""

from __future__ import annotations

from typing import Any

from redis.asyncio import RedisCluster

from learning_account.adapters.redis_connect import is_cluster
from learning_account.adapters.redis_layout import account_key, outputs_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.domain.statement import statement
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev


def records(events: list[dict[str, Any]]) -> list[InputRecord]:
    return [
        InputRecord(ev.topic_of(e), 0, n, e["subject"].encode(), ev.to_bytes(e), 1_000 + n)
        for n, e in enumerate(events)
    ]


async def test_the_service_detects_a_cluster(redis_cluster_url: str, redis_url: str) -> None:
    assert await is_cluster(redis_cluster_url)
    assert not await is_cluster(redis_url)


async def test_one_students_keys_share_a_slot(cluster: RedisCluster) -> None:
    keys = [account_key("r0123456"), outputs_key("r0123456", "ab")]
    slots = {await cluster.cluster_keyslot(key) for key in keys}
    assert len(slots) == 1


async def test_mary_and_thomas_on_a_cluster_spread_over_the_masters(
    cluster: RedisCluster,
) -> None:
    processor = Processor(RedisStore(cluster), Policy())
    students = [f"student-{n}" for n in range(30)]
    events = [e for sid in students for e in ev.mary_track(sid)]
    report = await processor.process(records(events))
    assert report.dead_lettered == 0
    for sid in students:
        account = await processor.store.get(sid)
        assert account is not None
        assert [row.balance / 4 for row in statement(account, 2019)] == [200, 200, 200]
    slots = {await cluster.cluster_keyslot(account_key(sid)) for sid in students}
    nodes = {cluster.get_node_from_key(account_key(sid)).name for sid in students}
    assert len(slots) > 3 and len(nodes) == 3


async def test_duplicates_are_absorbed_and_outputs_identical_on_a_cluster(
    cluster: RedisCluster,
) -> None:
    processor = Processor(RedisStore(cluster), Policy())
    batch = records([ev.registration(f"dup-{n}", 2016, {"A": 6}) for n in range(20)])
    first = await processor.process(batch)
    again = await processor.process(batch)
    assert again.duplicates == 20
    assert [m.value for m in again.outputs] == [m.value for m in first.outputs]


async def test_commit_recovers_when_the_nodes_lost_the_script(cluster: RedisCluster) -> None:
    processor = Processor(RedisStore(cluster), Policy())
    await processor.process(records([ev.registration("s1", 2016, {"A": 6})]))
    await cluster.script_flush()
    await processor.process(records([ev.registration("s2", 2016, {"A": 6})]))
    account = await processor.store.get("s2")
    assert account is not None and account.balance == 134 * 4
