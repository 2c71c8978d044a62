"""The held-result sweeper against batches of the consumer, on a real Redis and Redis Cluster.

The interleavings are forced in-process: a store that runs a batch just before the sweeper's
(or the batch's) next write.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from learning_account.adapters.redis_layout import HELD_INDEX_KEY
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import BatchReport, InputRecord, Processor
from learning_account.processing.store import AccountStore, AccountWrite, HeldClaim
from learning_account.wire import BALANCE_CHANGED_TOPIC, REJECTIONS_TOPIC
from learning_account_dev import events as ev

HOLD = 60.0
START = 1_700_000_000.0


class Interleaving(RedisStore):
    """Runs `before_commit` (`before_settle`) once, just before its next commit (settle)."""

    before_commit: Callable[[], Awaitable[Any]] | None = None
    before_settle: Callable[[], Awaitable[Any]] | None = None

    async def commit(self, writes: Any) -> dict[str, bool]:
        writes = list(writes)
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            await hook()
        return await super().commit(writes)

    async def settle_held(
        self,
        student_id: str,
        version: str,
        published: Sequence[str],
        deadline: float | None,
        claim: HeldClaim,
    ) -> None:
        hook, self.before_settle = self.before_settle, None
        if hook is not None:
            await hook()
        await super().settle_held(student_id, version, published, deadline, claim)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


_offsets: dict[str, int] = {}


def record(event: dict[str, Any], at: float = START) -> InputRecord:
    """The event's record, stamped `at` (seconds): its time for the holding time (R3.6)."""
    topic = ev.topic_of(event)
    offset = _offsets[topic] = _offsets.get(topic, -1) + 1
    value = ev.to_bytes(event)
    return InputRecord(topic, 0, offset, event["subject"].encode(), value, round(at * 1000))


def processor(store: AccountStore, clock: Clock) -> Processor:
    return Processor(store, Policy(result_hold_seconds=HOLD), clock=clock)


def caused_by(messages: Sequence[OutputMessage], topic: str) -> list[str]:
    return [json.loads(m.value)["data"]["caused_by"]["id"] for m in messages if m.topic == topic]


class Published(list[OutputMessage]):
    async def __call__(self, messages: list[OutputMessage]) -> None:
        self.extend(messages)


async def test_a_batch_applying_the_held_result_meanwhile_makes_the_sweepers_commit_lose(
    any_redis: Any,
) -> None:
    clock, batch_clock = Clock(), Clock()
    batch = processor(RedisStore(any_redis), batch_clock)
    result = ev.exam_result("s1", 2016, "A")
    await batch.process([record(result)])
    clock.now += HOLD + 1
    batch_clock.now += HOLD - 1  # its registration comes within the holding time (by its time)
    sweeper_store = Interleaving(any_redis)
    sweeper = processor(sweeper_store, clock)
    reports: list[BatchReport] = []

    async def registration_arrives() -> None:
        registration = record(ev.registration("s1", 2016, {"A": 6}), batch_clock.now)
        reports.append(await batch.process([registration]))

    sweeper_store.before_commit = registration_arrives  # the sweeper decided on the held result
    published = Published()
    assert await sweeper.sweep_held(published) == 0
    assert caused_by(published, REJECTIONS_TOPIC) == []
    assert result["id"] in caused_by(reports[0].outputs, BALANCE_CHANGED_TOPIC)
    account = await batch.store.get("s1")
    assert account is not None and account.held == () and account.balance == 146 * 4
    assert await any_redis.zscore(HELD_INDEX_KEY, "s1") is None
    assert await sweeper.sweep_held(published) == 0 and published == []


async def test_a_sweep_meanwhile_makes_the_batchs_commit_lose_and_the_result_stays_refused(
    any_redis: Any,
) -> None:
    clock = Clock()
    batch_store = Interleaving(any_redis)
    batch = processor(batch_store, clock)
    result = ev.exam_result("s2", 2016, "A")
    await batch.process([record(result)])
    clock.now += HOLD + 1
    sweeper = processor(RedisStore(any_redis), clock)
    published = Published()
    swept: list[int] = []

    async def sweep() -> None:
        swept.append(await sweeper.sweep_held(published))

    batch_store.before_commit = sweep  # the batch decided to release the held result
    report = await batch.process([record(ev.registration("s2", 2016, {"A": 6}), clock.now)])
    assert report.conflicts == 1 and swept == [1]
    assert caused_by(published, REJECTIONS_TOPIC) == [result["id"]]
    assert result["id"] not in caused_by(report.outputs, BALANCE_CHANGED_TOPIC)
    account = await batch.store.get("s2")
    assert account is not None and account.held == () and account.balance == 134 * 4


async def test_a_result_held_by_a_batch_during_a_sweep_keeps_its_index_entry(
    any_redis: Any,
) -> None:
    clock = Clock()
    batch = processor(RedisStore(any_redis), clock)
    first = ev.exam_result("s3", 2016, "A")
    await batch.process([record(first)])
    clock.now += HOLD + 1
    sweeper_store = Interleaving(any_redis)
    sweeper = processor(sweeper_store, clock)
    second = ev.exam_result("s3", 2016, "B")

    async def second_result_held() -> None:
        assert (await batch.process([record(second, clock.now)])).held == 1

    sweeper_store.before_settle = second_result_held  # after the sweeper's commit and publish
    published = Published()
    assert await sweeper.sweep_held(published) == 1
    assert caused_by(published, REJECTIONS_TOPIC) == [first["id"]]
    assert await any_redis.zscore(HELD_INDEX_KEY, "s3") is not None
    # a later sweep (the entry is due, or early) reschedules it at the second result's deadline
    assert await sweeper.sweep_held(published) == 0
    assert await any_redis.zscore(HELD_INDEX_KEY, "s3") == clock.now + HOLD
    clock.now += HOLD
    assert await sweeper.sweep_held(published) == 1
    assert caused_by(published, REJECTIONS_TOPIC) == [first["id"], second["id"]]
    assert await any_redis.zscore(HELD_INDEX_KEY, "s3") is None


async def test_refusals_stored_by_a_sweep_that_died_before_publishing_are_published_later(
    any_redis: Any,
) -> None:
    clock = Clock()
    batch = processor(RedisStore(any_redis), clock)
    result = record(ev.exam_result("s4", 2016, "A"))
    await batch.process([result])
    clock.now += HOLD + 1
    attempted: list[OutputMessage] = []

    async def dies(messages: list[OutputMessage]) -> None:
        attempted.extend(messages)
        raise ConnectionError("the process died before the broker acknowledged")

    with pytest.raises(ConnectionError):
        await processor(RedisStore(any_redis), clock).sweep_held(dies)
    account = await batch.store.get("s4")
    assert account is not None and account.held == ()  # the refusal is written
    assert "s4" in await batch.store.due_held(clock.now)  # and still due for publication

    clock.now += 5
    restarted = processor(RedisStore(any_redis), clock)
    published = Published()
    assert await restarted.sweep_held(published) == 0  # nothing left to decide
    assert [(m.event_id, m.value) for m in published] == [(m.event_id, m.value) for m in attempted]
    assert caused_by(published, REJECTIONS_TOPIC) == [json.loads(result.value or b"")["id"]]
    assert await any_redis.zscore(HELD_INDEX_KEY, "s4") is None
    published.clear()
    assert await restarted.sweep_held(published) == 0 and published == []
    # a re-delivery of the exam result re-publishes that same refusal
    again = await batch.process([result])
    assert again.duplicates == 1
    assert [m.value for m in again.outputs] == [m.value for m in attempted]


async def test_a_consumer_write_keeps_a_student_with_unpublished_refusals_due(
    any_redis: Any,
) -> None:
    clock = Clock()
    store = RedisStore(any_redis)
    batch = processor(store, clock)
    await batch.process([record(ev.exam_result("s5", 2016, "A"))])
    await batch.process([record(ev.exam_result("s5", 2017, "B"))])
    clock.now += HOLD + 1

    async def dies(messages: list[OutputMessage]) -> None:
        raise ConnectionError("died")

    with pytest.raises(ConnectionError):
        await processor(store, clock).sweep_held(dies)
    # the consumer writes the account before any sweep published the stored refusals
    loaded = (await store.load({"s5": []}))["s5"]
    assert len(loaded.pending) == 2
    write = AccountWrite("s5", loaded.version, loaded.account, (), was_held=True)
    assert await store.commit([write]) == {"s5": True}
    assert await any_redis.zscore(HELD_INDEX_KEY, "s5") == 0
    published = Published()
    await processor(store, clock).sweep_held(published)
    assert len(caused_by(published, REJECTIONS_TOPIC)) == 2


async def test_a_held_result_counts_the_input_time_of_its_own_partition_number(
    any_redis: Any,
) -> None:
    clock = Clock()
    batch = processor(RedisStore(any_redis), clock)
    result = ev.exam_result("s6", 2016, "A")
    await batch.process([dataclasses.replace(record(result), partition=1)])
    account = await batch.store.get("s6")
    assert account is not None and [h.partition for h in account.held] == [1]
    clock.now += 2 * HOLD  # the clock plays no part once partitions are given
    deadline = START + HOLD
    published = Published()
    # partition number 0 passed the deadline, the result's own did not: it still waits
    assert await batch.sweep_held(published, until=deadline, partitions={0: deadline, 1: 0}) == 0
    # a partition number not assigned here is left to the instance that owns it
    assert await batch.sweep_held(published, until=deadline, partitions={0: deadline}) == 0
    assert published == []
    assert await batch.sweep_held(published, until=deadline, partitions={1: deadline}) == 1
    assert caused_by(published, REJECTIONS_TOPIC) == [result["id"]]
    # a due student with nothing held (a stale entry) costs a look, whatever the partitions
    await any_redis.zadd(HELD_INDEX_KEY, {"s6": 0})
    assert await batch.sweep_held(published, until=deadline, partitions={1: deadline}) == 0
