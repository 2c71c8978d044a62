"""`RedisStore(snapshots=True)`, the live service's store: on a single Redis the account
snapshot records of a commit are the core and the parts it wrote, as its check read them and it
wrote them, not a read of Redis (a cluster reads the account again). Each record is compared
here with the hash as Redis holds it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson
from redis.asyncio import Redis

from learning_account.adapters.redis_layout import (
    CORE_FIELDS,
    account_key,
    encode_state,
    part_fields,
    snapshot_part,
)
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.events import Touched
from learning_account.domain.model import Account, Policy
from learning_account.ops.restore import ACCOUNT_SNAPSHOTS_TOPIC
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.processing.store import AccountWrite, AppliedStep, SnapshotParts
from learning_account_dev import events as ev


def snapshot_fields(message: OutputMessage) -> tuple[str, bytes, dict[bytes, bytes]]:
    """A record's student, part and fields."""
    line, _, blobs = message.value.partition(b"\n")
    meta = orjson.loads(line)
    fields, at = {}, 0
    for name, size in meta["fields"]:
        fields[name.encode()] = blobs[at : at + size]
        at += size
    return meta["student_id"], meta["part"].encode(), fields


def held(stored: dict[bytes, bytes], part: bytes) -> dict[bytes, bytes]:
    """The fields of the core and of `part` in a stored hash."""
    names = {*CORE_FIELDS, *part_fields(part)} if part else set(CORE_FIELDS)
    return {name: value for name, value in stored.items() if name in names}


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
    """Counts the students `snapshot_parts` has to read from Redis."""

    read_again = 0

    async def snapshot_parts(self, student_ids: Sequence[str]) -> dict[str, SnapshotParts]:
        self.read_again += sum(1 for sid in student_ids if sid not in self._committed)
        return await super().snapshot_parts(student_ids)


async def test_each_snapshot_record_is_the_account_as_redis_holds_it(any_redis: Any) -> None:
    store = Counting(any_redis, snapshots=True)
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
                student_id, part, fields = snapshot_fields(message)
                assert message.key == f"{student_id}/{part.decode()}".encode()
                assert all(snapshot_part(name) in (b"", part) for name in fields)
                stored = await any_redis.hgetall(account_key(student_id))
                assert fields == held(stored, part), message.key
                seen += 1
    assert seen >= 30
    if isinstance(any_redis, Redis):  # a cluster's per-student scripts read the hash again
        assert store.read_again == 0  # every snapshot came from the commit


async def test_a_commit_writing_one_field_of_a_year_snapshots_the_whole_year(
    redis_client: Redis,
) -> None:
    """A year's units and totals are one part: a commit that sets one of them reads the other
    under its WATCH, so the record holds both."""
    store = RedisStore(redis_client, snapshots=True)
    processor = Processor(store, Policy(), snapshots=True)
    event = ev.registration("s", 2016, {"A": 6})
    await processor.process([InputRecord(ev.topic_of(event), 0, 1, b"s", ev.to_bytes(event))])
    loaded = (await store.load({"s": []}, {"s": [2016]}))["s"]
    step = AppliedStep("02" * 8, b"", "c2" * 4)
    totals_only = Touched(totals=frozenset({2016}))
    write = AccountWrite("s", loaded.version, loaded.account, (step,), touched=totals_only)
    assert [name for name, _ in encode_state(write)[1]] == ["t:2016"]
    assert await store.commit([write]) == {"s": True}
    stored = await redis_client.hgetall(account_key("s"))
    assert b"u:2016" in stored
    core, parts = (await store.snapshot_parts(["s"]))["s"]
    assert core == held(stored, b"")
    assert parts == {b"y:2016": {b"u:2016": stored[b"u:2016"], b"t:2016": stored[b"t:2016"]}}


async def test_a_settle_between_load_and_commit_is_in_the_snapshot(redis_client: Redis) -> None:
    """A settle rewrites the pending digests (`p`) without a new version: the commit checks
    them, so the core it leaves has the settled list."""
    store = RedisStore(redis_client, snapshots=True)
    pending = AccountWrite("s", "", Account("s"), (AppliedStep("00" * 8, b"o1"),), pending=True)
    assert await store.commit([pending]) == {"s": True}
    assert (await store.snapshot_parts(["s"]))["s"][0][b"p"] == bytes(8)
    loaded = (await store.load({"s": []}))["s"]
    await store.settle_held("s", loaded.version, ["00" * 8], None, await store.claim_held("s"))
    step = AppliedStep("01" * 8, b"o2", "c1" * 4)
    assert await store.commit([AccountWrite("s", loaded.version, Account("s"), (step,))]) == {
        "s": True
    }
    stored = await redis_client.hgetall(account_key("s"))
    assert b"p" not in stored
    core, parts = (await store.snapshot_parts(["s"]))["s"]
    assert core == held(stored, b"") and parts == {}
    assert await store.snapshot_parts(["s"]) == {"s": (core, {})}  # handed out once, then read
