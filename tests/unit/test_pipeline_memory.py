"""The Processor's duplicate, conflict and dead-letter paths, on the in-memory store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from learning_account.domain.model import Policy
from learning_account.processing.pipeline import MAX_CONFLICT_RETRIES, Processor
from learning_account.processing.store import AccountWrite
from learning_account.wire import BALANCE_CHANGED_TOPIC, DEAD_LETTER_TOPIC, REJECTIONS_TOPIC
from learning_account_dev import events as ev
from learning_account_dev.memory_store import MemoryStore
from support.memory import Interleaving, Records


def processor(store: MemoryStore) -> Processor:
    return Processor(store, Policy(), clock=lambda: 1_700_000_000.0)


def data(value: bytes) -> dict[str, Any]:
    return json.loads(value)["data"]  # type: ignore[no-any-return]


async def balance(store: MemoryStore, student_id: str) -> int | None:
    account = await store.get(student_id)
    return None if account is None else account.balance


async def test_a_duplicate_in_one_batch_is_applied_once_and_gets_the_same_outputs() -> None:
    store, record = MemoryStore(), Records()
    registration = record(ev.registration("s1", 2016, {"A": 6}))
    report = await processor(store).process([registration, registration])
    assert report.duplicates == 1 and report.applied == {"Register": 1}
    assert [m.value for m in report.outputs[:1]] == [m.value for m in report.outputs[1:]]
    assert await balance(store, "s1") == 134 * 4


async def test_a_duplicate_in_a_later_batch_republishes_the_stored_outputs() -> None:
    store, record = MemoryStore(), Records()
    registration = record(ev.registration("s1", 2016, {"A": 6}))
    first = await processor(store).process([registration])
    again = await processor(store).process([registration])
    assert (again.duplicates, again.applied) == (1, {})
    assert [(m.topic, m.key, m.value) for m in again.outputs] == [
        (m.topic, m.key, m.value) for m in first.outputs
    ]
    assert await balance(store, "s1") == 134 * 4


async def test_a_duplicate_past_the_outbox_retention_publishes_nothing_and_applies_nothing() -> (
    None
):
    now = [0.0]
    store, record = MemoryStore(outbox_retention_seconds=60, clock=lambda: now[0]), Records()
    registration = record(ev.registration("s1", 2016, {"A": 6}))
    await processor(store).process([registration])
    now[0] += 61
    again = await processor(store).process([registration])
    assert (again.duplicates, again.outputs) == (1, [])
    assert await balance(store, "s1") == 134 * 4


async def test_a_write_between_load_and_commit_makes_the_batch_decide_again() -> None:
    store, record = Interleaving(), Records()
    await processor(store).process([record(ev.registration("s1", 2016, {"A": 6}))])
    concurrent = record(ev.registration("s1", 2016, {"B": 12}))

    async def another_instance_writes() -> None:
        assert (await processor(store).process([concurrent])).conflicts == 0

    store.before_commit = another_instance_writes
    report = await processor(store).process([record(ev.registration("s1", 2016, {"C": 3}))])
    assert report.conflicts == 1 and report.applied == {"Register": 1}
    assert await balance(store, "s1") == (140 - 6 - 12 - 3) * 4
    [change] = [m for m in report.outputs if m.topic == BALANCE_CHANGED_TOPIC]
    assert data(change.value)["previous_balance"] == 140 - 6 - 12  # decided on the fresh state


async def test_only_the_student_whose_version_moved_is_decided_again() -> None:
    store, record = Interleaving(), Records()

    async def another_instance_writes() -> None:
        stored = (await store.load({"s2": []}))["s2"]
        write = AccountWrite("s2", stored.version, stored.account, ())
        assert await store.commit([write]) == {"s2": True}

    await processor(store).process([record(ev.registration("s2", 2016, {"A": 6}))])
    store.before_commit = another_instance_writes
    batch = [record(ev.registration(s, 2016, {"B": 12})) for s in ("s1", "s2", "s3")]
    report = await processor(store).process(batch)
    assert report.conflicts == 1
    assert [await balance(store, s) for s in ("s1", "s2", "s3")] == [128 * 4, 122 * 4, 128 * 4]


async def test_a_student_that_keeps_changing_fails_the_batch() -> None:
    store, record = Interleaving(), Records()
    await processor(store).process([record(ev.registration("s1", 2016, {"A": 6}))])

    written: list[str] = []

    async def always_written_meanwhile() -> None:
        stored = (await store.load({"s1": []}))["s1"]
        await store.commit([AccountWrite("s1", stored.version, stored.account, ())])
        written.append(stored.version)

    store.before_commit, store.times = always_written_meanwhile, MAX_CONFLICT_RETRIES + 1
    with pytest.raises(RuntimeError, match="kept changing"):
        await processor(store).process([record(ev.registration("s1", 2016, {"B": 12}))])
    assert len(written) == MAX_CONFLICT_RETRIES
    assert await balance(store, "s1") == 134 * 4


async def test_an_undecodable_record_is_dead_lettered_and_the_rest_applied() -> None:
    store, record = MemoryStore(), Records()
    bad = record(b"{not json", topic="learning-account.registrations.v1")
    report = await processor(store).process([bad, record(ev.registration("s2", 2016, {"A": 6}))])
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC, BALANCE_CHANGED_TOPIC]
    letter = data(report.outputs[0].value)
    assert (letter["payload"], letter["offset"]) == ("{not json", bad.offset)
    assert letter["error"].startswith("not JSON")
    assert report.dead_lettered == 1 and await balance(store, "s2") == 134 * 4


async def test_a_record_with_invalid_data_is_dead_lettered_and_writes_nothing() -> None:
    store, record = MemoryStore(), Records()
    event = ev.registration("s3", 2016, {"A": 6})
    event["data"]["course_units"][0]["credits"] = 0.25
    report = await processor(store).process([record(event)])
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC]
    assert "credits" in data(report.outputs[0].value)["error"]
    assert store.accounts == {} and store.outputs == {}


async def test_a_source_not_allowed_is_dead_lettered() -> None:
    store, record = MemoryStore(), Records()
    allowed = Processor(store, Policy(), allowed_sources=["urn:institution:other"])
    report = await allowed.process([record(ev.registration("s4", 2016, {"A": 6}))])
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC]
    assert data(report.outputs[0].value)["error_code"] == "source_not_allowed"
    assert store.accounts == {}


async def test_a_reused_id_with_other_content_is_refused_and_the_first_event_stands() -> None:
    store, record = MemoryStore(), Records()
    first = ev.registration("s5", 2016, {"A": 6}, event_id="same-id")
    reuse = ev.registration("s5", 2016, {"B": 12}, event_id="same-id")
    within = await processor(store).process([record(first), record(reuse)])
    assert [m.topic for m in within.outputs] == [BALANCE_CHANGED_TOPIC, REJECTIONS_TOPIC]
    assert data(within.outputs[1].value)["reason"] == "id_conflict"
    later = await processor(store).process([record(reuse), record(first)])
    assert later.duplicates == 2  # both re-publish what they got the first time
    assert [m.value for m in later.outputs] == [m.value for m in within.outputs[::-1]]
    assert await balance(store, "s5") == 134 * 4


async def test_an_unreadable_stored_account_dead_letters_its_records_only() -> None:
    store, record = MemoryStore(), Records()
    await processor(store).process([record(ev.registration("s6", 2016, {"A": 6}))])
    store.accounts["s6"][b"s"] = b"{not json"
    before = dict(store.accounts["s6"])
    report = await processor(store).process(
        [record(ev.registration(s, 2016, {"B": 12})) for s in ("s6", "s7")]
    )
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC, BALANCE_CHANGED_TOPIC]
    assert "cannot be read" in data(report.outputs[0].value)["error"]
    assert store.accounts["s6"] == before and await balance(store, "s7") == 128 * 4


async def test_a_commit_the_store_refuses_writes_no_student() -> None:
    store, record = MemoryStore(), Records()
    await processor(store).process([record(ev.registration("s8", 2016, {"A": 6}))])
    before = ({s: dict(f) for s, f in store.accounts.items()}, dict(store.outputs))
    store.outbox_retention_ms = 0
    batch = [record(ev.registration(s, 2016, {"B": 12})) for s in ("s8", "s9")]
    with pytest.raises(ValueError, match="retention"):
        await processor(store).process(batch)
    assert (store.accounts, store.outputs) == before
