"""Ids and years against a real Redis: a reused source + id with other content is refused
(`id_conflict`), output ids include the student, LA_ALLOWED_SOURCES keeps foreign producers out,
and academic years lie from 2008-2009 to one after the record's time."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import pytest
from redis.asyncio import Redis

from learning_account.adapters.clock import current_academic_year
from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.processing.pipeline import BatchReport, InputRecord, Processor
from learning_account.processing.projection import InvalidProjection, read_events
from learning_account.settings import Settings
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    COURSE_UNITS_DEREGISTERED_TYPE,
    DEAD_LETTER_TOPIC,
    DEAD_LETTERED_TYPE,
    REJECTIONS_TOPIC,
)
from learning_account_dev import events as ev

#: 14 November 2023: academic year 2023-2024, so 2024-2025 is the last a record may name
STAMP_MS = 1_700_000_000_000
_offsets: dict[str, int] = {}


def record(event: dict[str, Any], timestamp_ms: int | None = STAMP_MS) -> InputRecord:
    topic = ev.topic_of(event)
    offset = _offsets[topic] = _offsets.get(topic, -1) + 1
    key = event["subject"].encode()
    return InputRecord(topic, 0, offset, key, ev.to_bytes(event), timestamp_ms)


def processor(redis_client: Redis, **options: Any) -> Processor:
    return Processor(RedisStore(redis_client), Policy(), clock=lambda: 1_700_000_000.0, **options)


def documents(report: BatchReport, topic: str | None = None) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in report.outputs if topic is None or m.topic == topic]


async def balance(proc: Processor, student_id: str) -> float:
    account = await proc.store.get(student_id)
    assert account is not None and account.balance is not None
    return account.balance / 4


# --- id_conflict ----------------------------------------------------------------------------------


async def test_a_reused_id_with_other_content_is_refused_and_the_first_event_stands(
    redis_client: Redis,
) -> None:
    """The issue's case: a forged "failed" with the real result's source + id came first."""
    proc = processor(redis_client)
    await proc.process([record(ev.registration("s1", 2016, {"A": 6}))])
    forged = ev.exam_result("s1", 2016, "A", "failed", event_id="result-1")
    real = ev.exam_result("s1", 2016, "A", "passed", event_id="result-1")
    await proc.process([record(forged)])
    before = await redis_client.hgetall(account_key("s1"))

    report = await proc.process([record(real)])

    assert report.rejected == {"id_conflict": 1} and report.applied == {}
    [refusal] = documents(report)
    assert refusal["type"].endswith("event-rejected.v1")
    data = refusal["data"]
    assert data["reason"] == "id_conflict"
    assert "'result-1'" in data["detail"] and ev.DEFAULT_SOURCE in data["detail"]
    assert data["caused_by"] == {
        "source": ev.DEFAULT_SOURCE,
        "id": "result-1",
        "type": real["type"],
    }
    assert await balance(proc, "s1") == 134  # the failed result stands: nothing acquired
    after = await redis_client.hgetall(account_key("s1"))
    assert after[b"s"] == before[b"s"]
    # the refusal is recorded beside the first event's entry: 12 bytes more, one refusal kept
    assert len(after[b"k"]) == len(before[b"k"]) + 12


async def test_a_redelivered_conflict_republishes_the_same_refusal_and_the_first_its_outputs(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    registration = ev.registration("s1", 2016, {"A": 6}, event_id="reg-1")
    reused = ev.registration("s1", 2016, {"A": 6, "B": 3}, event_id="reg-1")
    first = await proc.process([record(registration)])
    refused = await proc.process([record(reused)])
    stored = await redis_client.hgetall(account_key("s1"))

    again = await proc.process([record(reused)])
    original_again = await proc.process([record(registration)])

    assert again.duplicates == 1 and again.rejected == {}
    assert [m.value for m in again.outputs] == [m.value for m in refused.outputs]
    assert [m.value for m in original_again.outputs] == [m.value for m in first.outputs]
    assert await redis_client.hgetall(account_key("s1")) == stored
    assert await balance(proc, "s1") == 134


async def test_each_conflicting_content_has_its_own_refusal_id_and_a_batch_decides_as_batches_do(
    redis_client: Redis,
) -> None:
    registration = ev.registration("s1", 2016, {"A": 6}, event_id="reg-1")
    other = ev.registration("s1", 2016, {"B": 6}, event_id="reg-1")
    third = ev.registration("s1", 2016, {"C": 6}, event_id="reg-1")
    together = await processor(redis_client).process(
        [record(registration), record(other), record(third), record(other)]
    )
    await redis_client.flushdb()
    proc = processor(redis_client)
    apart = [await proc.process([record(e)]) for e in (registration, other, third, other)]

    ids = [m.event_id for m in together.outputs]
    assert ids == [m.event_id for report in apart for m in report.outputs]
    refusals = documents(together, REJECTIONS_TOPIC)
    assert [r["data"]["reason"] for r in refusals] == ["id_conflict"] * 3
    assert len({r["id"] for r in refusals}) == 2  # the repeat of `other` is its duplicate
    assert together.duplicates == 1 and together.rejected == {"id_conflict": 2}
    assert await balance(proc, "s1") == 134


async def test_the_same_content_written_differently_is_a_duplicate(redis_client: Redis) -> None:
    """Content is the type and the validated data: `6` and `6.0`, an explicit default, an
    unknown field, another envelope time do not make another event."""
    proc = processor(redis_client)
    registration = ev.registration("s1", 2016, {"A": 6, "B": 2.5}, event_id="reg-1")
    first = await proc.process([record(registration)])
    rewritten = json.loads(json.dumps(registration))
    rewritten["data"]["course_units"][0]["credits"] = 6.0
    rewritten["data"]["course_units"][1]["first_term_of_first_track"] = False
    rewritten["data"]["course_units"][1]["border_date"] = None
    del rewritten["data"]["exceptional_admission"]
    rewritten["data"]["comment"] = "a field a later version may add"
    rewritten["time"] = "2016-09-21T08:00:00+02:00"

    again = await proc.process([record(rewritten)])

    assert again.duplicates == 1 and again.rejected == {}
    assert [m.value for m in again.outputs] == [m.value for m in first.outputs]


async def test_accounts_with_digests_alone_still_absorb_their_duplicates(
    redis_client: Redis,
) -> None:
    """An account that lists its events by digest alone (`d`, no content digests)."""
    proc = processor(redis_client)
    registration = ev.registration("s1", 2016, {"A": 6}, event_id="reg-1")
    first = await proc.process([record(registration)])
    key = account_key("s1")
    entries = await redis_client.hget(key, "k")
    assert entries is not None and len(entries) == 12
    await redis_client.hset(key, "d", entries[:8])  # 8-byte digests, no content digests
    await redis_client.hdel(key, "k")

    same = await proc.process([record(registration)])
    other = await proc.process(
        [record(ev.registration("s1", 2016, {"B": 6}, event_id="reg-1"))]
    )  # no content to compare with: absorbed as a duplicate
    result = ev.exam_result("s1", 2016, "A", event_id="result-1")
    applied = await proc.process([record(result)])
    reused = await proc.process(
        [record(ev.exam_result("s1", 2016, "A", "failed", event_id="result-1"))]
    )

    assert same.duplicates == other.duplicates == 1
    assert [m.value for m in same.outputs] == [m.value for m in first.outputs]
    assert [m.value for m in other.outputs] == [m.value for m in first.outputs]
    assert sum(applied.applied.values()) == 1
    assert reused.rejected == {"id_conflict": 1}
    fields = await redis_client.hgetall(key)
    assert fields[b"d"] == entries[:8] and len(fields[b"k"]) == 24
    assert await balance(proc, "s1") == 146


# --- output ids include the student ---------------------------------------------------------------


async def test_two_students_sharing_source_and_id_are_both_applied_under_distinct_output_ids(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    report = await proc.process(
        [
            record(ev.registration("s1", 2016, {"A": 6}, event_id="shared")),
            record(ev.registration("s2", 2016, {"A": 6}, event_id="shared")),
        ]
    )
    changes = documents(report, BALANCE_CHANGED_TOPIC)
    assert [c["subject"] for c in changes] == ["s1", "s2"]
    assert changes[0]["id"] != changes[1]["id"]
    assert report.duplicates == 0 and report.rejected == {}
    assert await balance(proc, "s1") == await balance(proc, "s2") == 134


# --- LA_ALLOWED_SOURCES --------------------------------------------------------------------------


def test_allowed_sources_read_as_comma_separated_entries_and_empty_is_unset() -> None:
    settings = Settings.from_env({"LA_ALLOWED_SOURCES": " urn:a:* ,urn:b, ,"})
    assert settings.allowed_sources == ("urn:a:*", "urn:b")
    assert Settings.from_env({"LA_ALLOWED_SOURCES": ""}).allowed_sources is None
    assert Settings.from_env({}).allowed_sources is None


async def test_a_source_not_allowed_is_dead_lettered_before_its_key_is_looked_at(
    redis_client: Redis,
) -> None:
    open_door = processor(redis_client)
    ugent = ev.registration("s1", 2016, {"A": 6}, source="urn:institution:ugent:sis")
    await open_door.process([record(ugent)])  # applied while every source was read
    allowed = ("urn:institution:kuleuven:*", "urn:registry:exact")
    proc = processor(redis_client, allowed_sources=allowed)
    events = [
        ev.registration("s2", 2016, {"A": 6}),  # the prefix
        ev.registration("s3", 2016, {"A": 6}, source="urn:registry:exact"),
        ev.registration("s4", 2016, {"A": 6}, source="URN:REGISTRY:EXACT"),  # case counts
        ev.registration("s5", 2016, {"A": 6}, source="urn:registry:exact:more"),
        ugent,  # a duplicate of an applied event, but its source is no longer read
    ]

    report = await proc.process([record(e) for e in events])

    letters = documents(report, DEAD_LETTER_TOPIC)
    assert [letter["data"]["key"] for letter in letters] == ["s4", "s5", "s1"]
    assert {letter["data"]["error_code"] for letter in letters} == {"source_not_allowed"}
    assert "URN:REGISTRY:EXACT" in letters[0]["data"]["error"]
    assert report.duplicates == 0 and report.dead_lettered == 3
    assert [c["subject"] for c in documents(report, BALANCE_CHANGED_TOPIC)] == ["s2", "s3"]
    assert await proc.store.get("s4") is None


# --- academic years -------------------------------------------------------------------------------


async def test_a_deregistration_for_a_year_that_has_not_begun_is_dead_lettered(
    redis_client: Redis,
) -> None:
    """The issue's case: a refused deregistration for 2090-2091 rebuilt 12 future years."""
    proc = processor(redis_client)
    await proc.process([record(ev.registration("s1", 2016, {"A": 60, "B": 60, "C": 60, "D": 20}))])
    before = await redis_client.hgetall(account_key("s1"))
    future = ev.deregistration("s1", 2090, ["A"], date(2090, 10, 1))
    early = ev.deregistration("s1", 2007, ["A"], date(2007, 10, 1))

    report = await proc.process([record(future), record(early)])

    letters = documents(report)
    assert [letter["type"] for letter in letters] == [DEAD_LETTERED_TYPE] * 2
    assert [letter["data"]["error_code"] for letter in letters] == ["invalid_data"] * 2
    assert "2008-2009 and 2024-2025" in letters[0]["data"]["error"]
    assert "academic_year" in letters[1]["data"]["error"]
    assert await redis_client.hgetall(account_key("s1")) == before
    assert await balance(proc, "s1") == -60


async def test_the_year_after_the_records_academic_year_is_the_last_accepted(
    redis_client: Redis,
) -> None:
    """Bounded by the record's time, not the processing time: 2024-2025 is accepted from a
    record of November 2023, 2025-2026 is not, whenever the record is processed."""
    proc = processor(redis_client)
    accepted = await proc.process([record(ev.registration("s1", 2024, {"A": 6}))])
    refused = await proc.process([record(ev.registration("s2", 2025, {"A": 6}))])
    assert accepted.dead_lettered == 0 and await balance(proc, "s1") == 134
    assert [d["data"]["error_code"] for d in documents(refused)] == ["invalid_data"]


async def test_a_record_without_a_usable_timestamp_is_bounded_by_the_processing_time(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    next_year = current_academic_year() + 1
    for timestamp in (None, -1, 10**17):  # none, Kafka's "no timestamp", microseconds
        accepted = await proc.process(
            [record(ev.registration("s1", next_year, {"A": 6}), timestamp)]
        )
        refused = await proc.process(
            [record(ev.registration("s2", next_year + 1, {"A": 6}), timestamp)]
        )
        assert accepted.dead_lettered == 0
        assert [d["data"]["error_code"] for d in documents(refused)] == ["invalid_data"]


def test_a_projected_event_counts_as_stamped_now() -> None:
    now = time.time()
    next_year = current_academic_year() + 1

    def deregistration(year: int) -> dict[str, Any]:
        data = ev.deregistration("s1", year, ["A"], date(year, 10, 1))["data"]
        return {"type": COURSE_UNITS_DEREGISTERED_TYPE, "data": data}

    assert len(read_events("s1", [deregistration(next_year)], now=now)) == 1
    with pytest.raises(InvalidProjection) as refused:
        read_events("s1", [deregistration(next_year + 1)], now=now)
    assert refused.value.error_code == "invalid_data" and refused.value.index == 0
