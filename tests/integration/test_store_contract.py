"""What every account store does, run against the in-memory store, a Redis and a Redis Cluster,
so the in-memory store the unit tests use behaves as the Redis store does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import Any

import pytest
from redis.asyncio import Redis

from learning_account.adapters.lua import BUCKET_ENTRIES, ENTRY_BYTES, SPLIT
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Account, Policy
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import Processor
from learning_account.processing.store import (
    AccountStore,
    AccountWrite,
    AppliedStep,
    Identity,
    next_version,
)
from learning_account_dev import events as ev
from learning_account_dev.memory_store import MemoryStore
from support.memory import Records

A: Identity = ("a1" * 8, "c1" * 4)
B: Identity = ("b2" * 8, "c2" * 4)


@pytest.fixture(params=["memory", "redis", "redis-snapshots", "redis-cluster"])
def store(request: pytest.FixtureRequest) -> AccountStore:
    if request.param == "memory":
        return MemoryStore()
    cluster = request.param == "redis-cluster"
    client = request.getfixturevalue("cluster" if cluster else "redis_client")
    return RedisStore(client, snapshots=request.param == "redis-snapshots")


@pytest.fixture(params=["memory", "redis"])
def exact_store(request: pytest.FixtureRequest) -> AccountStore:
    if request.param == "memory":
        return MemoryStore()
    return RedisStore(request.getfixturevalue("redis_client"))


def step(identity: Identity, outputs: bytes, *, reuse: bool = False) -> AppliedStep:
    return AppliedStep(identity[0], outputs, identity[1], reuse=reuse)


def write(version: str, *steps: AppliedStep, balance: int = 560, **held: Any) -> AccountWrite:
    return AccountWrite("s", version, Account("s", balance=balance), steps, **held)


async def load(store: AccountStore, *events: Identity) -> Any:
    return (await store.load({"s": list(events)}))["s"]


async def test_a_student_never_written_loads_empty_at_no_version(store: AccountStore) -> None:
    loaded = await load(store, A)
    assert (loaded.version, loaded.seen, loaded.reused, loaded.pending) == ("", {}, set(), ())
    assert loaded.unreadable is None and loaded.account.balance is None
    assert await store.get("s") is None
    assert await store.raw_accounts(["s"]) == {"s": {}}
    assert await store.ping() is True


async def test_a_commit_at_the_loaded_version_writes_state_digests_and_outputs(
    store: AccountStore,
) -> None:
    assert await store.commit([write("", step(A, b"outputs of a"))]) == {"s": True}
    loaded = await load(store, A, B)
    assert loaded.version == next_version("") and loaded.account.balance == 560
    assert (loaded.seen, loaded.reused) == ({A: b"outputs of a"}, set())
    account = await store.get("s")
    assert account is not None and account.balance == 560
    assert await store.stored_outputs("s", [A[0], B[0]]) == [b"outputs of a", None]
    assert await store.commit([]) == {}


async def test_a_commit_at_a_version_that_moved_writes_nothing(store: AccountStore) -> None:
    await store.commit([write("", step(A, b"first"))])
    before = await store.raw_accounts(["s"])
    assert await store.commit([write("", step(B, b"second"), balance=1)]) == {"s": False}
    assert await store.raw_accounts(["s"]) == before
    assert (await load(store, B)).seen == {}
    assert await store.stored_outputs("s", [B[0]]) == [None]
    assert await store.commit([write("1", step(B, b"second"), balance=1)]) == {"s": True}
    assert (await load(store, B)).version == "2"


async def test_of_several_students_only_the_one_whose_version_moved_is_refused(
    store: AccountStore,
) -> None:
    await store.commit([write("")])
    writes = [AccountWrite(s, "", Account(s, balance=4), ()) for s in ("r", "s", "t")]
    assert await store.commit(writes) == {"r": True, "s": False, "t": True}
    loaded = await store.load({"r": [], "s": [], "t": []})
    assert [loaded[s].account.balance for s in ("r", "s", "t")] == [4, 560, 4]


async def test_the_same_id_with_other_content_is_a_reuse_whose_refusal_is_kept_apart(
    store: AccountStore,
) -> None:
    other, third = (A[0], "d3" * 4), (A[0], "e4" * 4)
    await store.commit([write("", step(A, b"applied"))])
    loaded = await load(store, A, other)
    assert (loaded.seen, loaded.reused) == ({A: b"applied"}, {other})
    await store.commit([write("1", step(other, b"refused", reuse=True))])
    loaded = await load(store, A, other, third)
    assert loaded.seen == {A: b"applied", other: b"refused"}
    assert loaded.reused == {third}


async def test_a_digest_recorded_alone_absorbs_any_content(store: AccountStore) -> None:
    await store.commit([write("", AppliedStep(A[0], b"outputs"))])
    anything = (A[0], "99" * 4)
    assert (await load(store, anything)).seen == {anything: b"outputs"}


async def test_outputs_past_the_retention_are_gone_and_the_event_stays_seen(
    store: AccountStore,
) -> None:
    store.outbox_retention_ms = 1
    await store.commit([write("", step(A, b"outputs"))])
    await asyncio.sleep(0.05)
    assert (await load(store, A)).seen == {A: None}
    assert await store.stored_outputs("s", [A[0]]) == [None]


async def test_only_the_academic_years_asked_for_are_loaded(store: AccountStore) -> None:
    record = Records()
    events = [ev.registration("s", year, {f"U{year}": 6}) for year in (2016, 2017)]
    await Processor(store, Policy()).process([record(event) for event in events])
    loaded = (await store.load({"s": []}, {"s": [2017]}))["s"]
    whole = await store.get("s", with_units=True)
    assert whole is not None and sorted(whole.units) == [(2016, "U2016"), (2017, "U2017")]
    assert loaded.account.years[2017] == whole.years[2017]
    assert list(loaded.account.units) == [(2017, "U2017")]
    read = await store.get("s")
    assert read is not None and list(read.units) == [] and sorted(read.years) == [2016, 2017]


async def test_students_reading_different_years_in_one_load_each_get_their_own(
    store: AccountStore,
) -> None:
    record = Records()
    events = [
        ev.registration(student, year, {f"{student}{year}": 6})
        for student in ("p", "q", "r", "u")
        for year in (2016, 2017)
    ]
    await Processor(store, Policy()).process([record(event) for event in events])
    years = {"p": [2016], "q": [2017], "t": [2017], "r": [2016], "u": []}
    loaded = await store.load({student: [] for student in years}, years)
    alone = {student: (await store.load({student: []}))[student] for student in years}
    for student, asked in years.items():
        assert list(loaded[student].account.units) == [
            (year, f"{student}{year}") for year in asked if student != "t"
        ]
        assert loaded[student].version == alone[student].version
        assert loaded[student].account.balance == alone[student].account.balance
    assert loaded["t"].version == "" and loaded["p"].version != ""


async def test_the_held_index_lists_a_student_from_its_earliest_deadline(
    store: AccountStore,
) -> None:
    await store.commit([write("", held_deadline=100.0)])
    await store.commit([AccountWrite("r", "", Account("r"), (), held_deadline=50.0)])
    assert await store.due_held(49.0) == []
    assert await store.due_held(100.0) == ["r", "s"]
    assert await store.due_held(math.inf, limit=1) == ["r"]
    await store.commit([write("1")])  # not held before, nothing held now: left as it was
    assert await store.due_held(100.0) == ["r", "s"] and await store.held_count() == 2


async def test_a_student_no_longer_held_leaves_the_index_with_its_write(
    exact_store: AccountStore,
) -> None:
    """On a single Redis (a cluster leaves a stale entry to the sweeper's next look)."""
    await exact_store.commit([write("", held_deadline=100.0)])
    await exact_store.commit([write("1", was_held=True)])
    assert await exact_store.due_held(math.inf) == [] and await exact_store.held_count() == 0


async def pending_refusal(store: AccountStore) -> Any:
    """A sweep's write: the student held a result due at 100, swept under a claim."""
    await store.commit([write("", held_deadline=100.0)])
    claim = await store.claim_held("s")
    assert claim is not None
    refusal = AppliedStep(A[0], b"refusal")
    await store.commit([write("1", refusal, was_held=True, pending=True)])
    return claim


async def test_sweeper_outputs_stay_due_until_settled_as_published(store: AccountStore) -> None:
    claim = await pending_refusal(store)
    loaded = await load(store)
    assert loaded.pending == (A[0],) and await store.due_held(0) == ["s"]
    assert await store.stored_outputs("s", list(loaded.pending)) == [b"refusal"]
    await store.settle_held("s", loaded.version, [A[0]], 300.0, claim)
    assert (await load(store)).pending == ()
    assert await store.due_held(299.0) == [] and await store.due_held(300.0) == ["s"]
    claim = await store.claim_held("s")
    assert claim is not None
    await store.settle_held("s", loaded.version, [], None, claim)
    assert await store.due_held(math.inf) == []


async def test_a_consumer_write_keeps_a_student_with_unpublished_outputs_due(
    store: AccountStore,
) -> None:
    claim = await pending_refusal(store)
    await store.commit([write("2", was_held=True)])
    assert await store.due_held(0) == ["s"]
    await store.settle_held("s", "2", [A[0]], None, claim)
    assert (await load(store)).pending == ()


async def test_a_settle_after_a_later_write_leaves_the_writers_schedule(
    store: AccountStore,
) -> None:
    await store.commit([write("", held_deadline=100.0)])
    claim = await store.claim_held("s")
    assert claim is not None
    await store.commit([write("1", held_deadline=50.0, was_held=True)])
    await store.settle_held("s", "1", [], None, claim)
    assert await store.due_held(math.inf) == ["s"] and await store.due_held(49.0) == []


async def test_the_memory_store_keeps_what_redis_keeps(redis_client: Redis) -> None:
    """The same batches on both stores: the same outputs, the same account fields."""
    memory, redis = MemoryStore(), RedisStore(redis_client)
    published: dict[str, list[OutputMessage]] = {"memory": [], "redis": []}
    registration = ev.registration("s1", 2016, {"A": 6}, event_id="r1")
    reuse = ev.registration("s1", 2016, {"B": 3}, event_id="r1")
    events = [
        ev.mary_track("mary"),
        [registration, registration, reuse],
        [ev.exam_result("s2", 2016, "A"), ev.exam_result("s1", 2017, "Z")],
        [registration, reuse, ev.registration("s3", 2017, {"C": 6})],
    ]
    clock = [0.0]
    for name, store in (("memory", memory), ("redis", redis)):
        clock[0] = 1_700_000_000.0
        processor = Processor(
            store, Policy(result_hold_seconds=60), clock=lambda: clock[0], snapshots=True
        )
        record = Records()
        for batch in [[record(event) for event in batch] for batch in events]:
            report = await processor.process(batch)
            published[name] += report.outputs + report.snapshots

        async def publish(messages: list[OutputMessage], into: str = name) -> None:
            published[into].extend(messages)

        clock[0] += 3600
        assert await processor.sweep_held(publish) == 2
    assert _messages(published["memory"]) == _messages(published["redis"])
    students = ["mary", "s1", "s2", "s3"]
    assert await memory.raw_accounts(students) == await redis.raw_accounts(students)


def _messages(messages: list[OutputMessage]) -> list[tuple[Any, ...]]:
    """Topic, key, id and content of each message; snapshots of outputs carry when they expire,
    which differs between stores by the time the run took."""
    return [
        (m.topic, m.key, m.event_id, m.value if b"expires_ms" not in m.value else _meta(m.value))
        for m in messages
    ]


def _meta(value: bytes) -> bytes:
    line, _, rest = value.partition(b"\n")
    meta = json.loads(line)
    meta.pop("expires_ms")
    return json.dumps(meta).encode() + rest


def _identities(count: int, content: str = "c1" * 4) -> list[Identity]:
    return [(hashlib.blake2b(b"%d" % n, digest_size=8).hexdigest(), content) for n in range(count)]


async def _long_history(store: AccountStore) -> list[Identity]:
    """300 applied events in commits that cross the list's split at its edge and inside one
    commit, 70 whose digests share their first digit (a part that splits again), then a
    refused re-use of the first: the identities, in order."""
    alike = [i for i in _identities(3000)[300:] if i[0][0] == "f"][:70]
    identities, version = [*_identities(300), *alike], ""
    for start, size in ((0, 1), (1, 63), (64, 1), (65, 100), (165, 135), (300, 70)):
        batch = identities[start : start + size]
        assert (await load(store, *batch)).seen == {}
        steps = [step(i, b"outputs " + i[0].encode()) for i in batch]
        assert await store.commit([write(version, *steps)]) == {"s": True}
        version = next_version(version)
    reuse = (identities[0][0], "d3" * 4)
    assert (await load(store, reuse)).reused == {reuse}
    assert await store.commit([write(version, step(reuse, b"refused", reuse=True))]) == {"s": True}
    return identities


async def test_a_long_history_splits_its_list_and_every_event_stays_found(
    store: AccountStore,
) -> None:
    """Past `BUCKET_ENTRIES` applied events the list splits by digest prefix, so a load and a
    commit read a short list whatever the history: every event is still found, a digest's
    first entry still stands, and no list holds more than `BUCKET_ENTRIES` entries."""
    identities = await _long_history(store)
    fields = (await store.raw_accounts(["s"]))["s"]
    assert (await store.raw_accounts(["s"]))["s"] == fields  # as committed, then as read
    lists = {name: value for name, value in fields.items() if name.split(b":")[0] == b"k"}
    assert lists[b"k"] == SPLIT and len(lists) > 16
    entries = b"".join(value for value in lists.values() if value != SPLIT)
    assert len(entries) == 371 * ENTRY_BYTES and lists[b"k:f"] == SPLIT
    assert max(len(value) for value in lists.values()) <= BUCKET_ENTRIES * ENTRY_BYTES
    first, reuse, other = identities[0], (identities[0][0], "d3" * 4), (identities[0][0], "e4" * 4)
    new = (_identities(1)[0][0][::-1], "c1" * 4)
    loaded = await load(store, *identities, reuse, other, new)
    assert loaded.seen == {
        **{i: b"outputs " + i[0].encode() for i in identities},
        reuse: b"refused",
    }
    assert loaded.reused == {other} and first in loaded.seen and new not in loaded.seen


async def test_the_memory_store_splits_its_lists_as_redis_does(any_redis: Any) -> None:
    memory, redis = MemoryStore(), RedisStore(any_redis)
    for store in (memory, redis):
        await _long_history(store)
    assert await memory.raw_accounts(["s"]) == await redis.raw_accounts(["s"])


async def test_a_store_that_did_not_see_the_split_reads_the_deeper_lists(any_redis: Any) -> None:
    """Another process (a restart, a rebalance) finds the split where it loads and commits."""
    identities = await _long_history(RedisStore(any_redis))
    later = (_identities(1)[0][0][::-1], "c1" * 4)
    loaded = await load(RedisStore(any_redis), *identities, later)
    assert set(loaded.seen) == {*identities} and later not in loaded.seen
    committer = RedisStore(any_redis)
    assert await committer.commit([write(loaded.version, step(later, b"later"))]) == {"s": True}
    assert (await load(RedisStore(any_redis), later)).seen == {later: b"later"}
    fields = await any_redis.hgetall("la:{s}:account")
    assert sum(len(v) for n, v in fields.items() if n.startswith(b"k:") and v != SPLIT) == (
        372 * ENTRY_BYTES
    )


async def test_a_split_account_loads_without_events_as_the_sweeper_loads_it(
    any_redis: Any,
) -> None:
    await _long_history(RedisStore(any_redis))
    loaded = (await RedisStore(any_redis).load({"s": []}))["s"]
    assert loaded.version == "7" and loaded.seen == {}
