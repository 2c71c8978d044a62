"""`RedisStore(whole_accounts=True)`, the live service's store: on a single Redis an account
snapshot taken after a commit is the hash the store read at load, the lists it checked and what
it wrote, not a read of Redis (a cluster reads it again). Each is compared here with the hash as
Redis holds it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson
from redis.asyncio import Redis

from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Account, Policy
from learning_account.ops.restore import ACCOUNT_SNAPSHOTS_TOPIC
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.processing.store import AccountWrite, AppliedStep
from learning_account_dev import events as ev


def snapshot_fields(message: OutputMessage) -> dict[bytes, bytes]:
    line, _, blobs = message.value.partition(b"\n")
    fields, at = {}, 0
    for name, size in orjson.loads(line)["fields"]:
        fields[name.encode()] = blobs[at : at + size]
        at += size
    return fields


def batches() -> list[list[dict[str, Any]]]:
    """Registrations, results (one before its registration: held), re-deliveries, a reused id
    with other content, a deregistration and a degree, over several academic years."""
    students = [f"w{n}" for n in range(12)]
    first = [ev.registration(s, 2016, {"A": 6, "B": 5}) for s in students]
    early = ev.exam_result("w0", 2017, "C")  # its unit is registered in the next batch
    results = [ev.exam_result(s, 2016, "A") for s in students]
    reused = copy.deepcopy(results[1])
    reused["data"]["outcome"] = "failed"
    second = [
        *results,
        early,
        results[2],  # twice in one batch
        first[3],  # a re-delivery of an applied event
        reused,
        ev.registration("w0", 2017, {"C": 4}),
        ev.deregistration("w4", 2016, ["B"], date(2016, 10, 3)),
    ]
    third = [
        ev.exam_result("w5", 2016, "B"),
        ev.degree("w6", 2016, "bachelor"),
        *[ev.registration(s, 2018, {"Z": 3}) for s in students[7:]],
    ]
    return [first, second, third, second]


class Counting(RedisStore):
    """Counts the students `raw_accounts` has to read from Redis."""

    read_again = 0

    async def raw_accounts(self, student_ids: Sequence[str]) -> dict[str, dict[bytes, bytes]]:
        self.read_again += sum(1 for sid in student_ids if sid not in self._committed)
        return await super().raw_accounts(student_ids)


async def test_each_snapshot_is_the_account_as_redis_holds_it(any_redis: Any) -> None:
    store = Counting(any_redis, whole_accounts=True)
    processor = Processor(store, Policy(), snapshots=True)
    offset = 0
    seen = 0
    for batch in batches():
        records = []
        for event in batch:
            offset += 1
            key = event["data"]["student_id"].encode()
            value = ev.to_bytes(event)
            records.append(InputRecord(ev.topic_of(event), 0, offset, key, value, 10_000 + offset))
        report = await processor.process(records)
        for message in report.snapshots:
            if message.topic == ACCOUNT_SNAPSHOTS_TOPIC:
                assert message.key is not None
                stored = await any_redis.hgetall(account_key(message.key.decode()))
                assert snapshot_fields(message) == stored, message.key
                seen += 1
    assert seen >= 30
    if isinstance(any_redis, Redis):  # a cluster's per-student scripts read the hash again
        assert store.read_again == 0  # every snapshot came from the commit


async def test_a_settle_between_load_and_commit_is_in_the_snapshot(redis_client: Redis) -> None:
    """A settle rewrites the pending digests (`p`) without a new version: the commit checks
    them, so the hash it leaves has the settled list."""
    store = RedisStore(redis_client, whole_accounts=True)
    pending = AccountWrite("s", "", Account("s"), (AppliedStep("00" * 8, b"o1"),), pending=True)
    assert await store.commit([pending]) == {"s": True}
    loaded = (await store.load({"s": []}))["s"]
    await store.settle_held("s", loaded.version, ["00" * 8], None, await store.claim_held("s"))
    step = AppliedStep("01" * 8, b"o2", "c1" * 4)
    assert await store.commit([AccountWrite("s", loaded.version, Account("s"), (step,))]) == {
        "s": True
    }
    stored = await redis_client.hgetall(account_key("s"))
    assert b"p" not in stored
    assert (await store.raw_accounts(["s"]))["s"] == stored
    assert await store.raw_accounts(["s"]) == {"s": stored}  # handed out once, then read
