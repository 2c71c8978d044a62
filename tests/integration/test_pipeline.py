"""The batch pipeline against a real Redis: idempotency, dead letters, concurrency, held results."""

from __future__ import annotations

import contextlib
import json
from datetime import date
from typing import Any

import pytest
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.domain.statement import statement
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.processing.store import AccountWrite
from learning_account.settings import Settings
from learning_account.wire import BALANCE_CHANGED_TOPIC, DEAD_LETTER_TOPIC, REJECTIONS_TOPIC
from learning_account_dev import events as ev

_offsets: dict[str, int] = {}


def record(event: dict[str, Any] | bytes, topic: str | None = None) -> InputRecord:
    value = event if isinstance(event, bytes) else ev.to_bytes(event)
    topic = topic or ev.topic_of(event)  # type: ignore[arg-type]
    offset = _offsets[topic] = _offsets.get(topic, -1) + 1
    return InputRecord(topic, 0, offset, b"key", value, 1_700_000_000_000)


def processor(redis_client: Redis, clock: list[float] | None = None, **policy: Any) -> Processor:
    store = RedisStore(redis_client)
    now = clock if clock is not None else [1_700_000_000.0]
    return Processor(store, Policy(**policy), clock=lambda: now[0])


def data(message_value: bytes) -> dict[str, Any]:
    return json.loads(message_value)["data"]  # type: ignore[no-any-return]


async def test_mary_through_the_pipeline_gives_the_seed_statement(redis_client: Redis) -> None:
    proc = processor(redis_client)
    report = await proc.process([record(e) for e in ev.mary_track("mary")])
    assert report.dead_lettered == 0
    account = await proc.store.get("mary")
    assert account is not None
    rows = [(r.academic_year, r.start / 4, r.balance / 4) for r in statement(account, 2019)]
    assert rows == [(2016, 140, 200), (2017, 200, 200), (2018, 200, 200)]
    changes = [m for m in report.outputs if m.topic == BALANCE_CHANGED_TOPIC]
    assert len(changes) == 3 + 30


async def test_duplicate_delivery_applies_once_and_republishes_identical_outputs(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    registration = record(ev.registration("s1", 2016, {"A": 6}))
    first = await proc.process([registration])
    again = await proc.process([registration])
    assert again.duplicates == 1
    assert [m.value for m in again.outputs] == [m.value for m in first.outputs]
    account = await proc.store.get("s1")
    assert account is not None and account.balance == 134 * 4


async def test_duplicate_within_one_batch_is_absorbed(redis_client: Redis) -> None:
    proc = processor(redis_client)
    registration = record(ev.registration("s1", 2016, {"A": 6}))
    report = await proc.process([registration, registration])
    assert report.duplicates == 1
    assert report.outputs[0].value == report.outputs[1].value
    account = await proc.store.get("s1")
    assert account is not None and account.balance == 134 * 4


async def test_malformed_message_is_dead_lettered_and_the_rest_applied(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    bad = record(b"{not json", topic="learning-account.registrations.v1")
    good = record(ev.registration("s2", 2016, {"A": 6}))
    report = await proc.process([bad, good])
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC, BALANCE_CHANGED_TOPIC]
    letter = data(report.outputs[0].value)
    assert letter["payload"] == "{not json"
    assert letter["error"].startswith("not JSON")
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        bad.topic,
        0,
        bad.offset,
    )


async def test_refusal_is_published_as_event_rejected(redis_client: Redis) -> None:
    proc = processor(redis_client)
    report = await proc.process([record(ev.deregistration("s3", 2016, ["A"], date(2016, 10, 1)))])
    assert [m.topic for m in report.outputs] == [REJECTIONS_TOPIC]
    assert data(report.outputs[0].value)["reason"] == "not_registered"


async def test_concurrent_writer_makes_the_commit_retry_on_fresh_state(
    redis_client: Redis,
) -> None:
    store = RedisStore(redis_client)
    proc = processor(redis_client)
    await proc.process([record(ev.registration("s4", 2016, {"A": 6}))])
    loaded = (await store.load({"s4": []}))["s4"]
    stale = AccountWrite("s4", "", loaded.account, ())
    assert await store.commit([stale]) == {"s4": False}
    fresh = AccountWrite("s4", loaded.version, loaded.account, ())
    assert await store.commit([fresh]) == {"s4": True}


async def test_held_result_applies_when_its_registration_arrives(redis_client: Redis) -> None:
    proc = processor(redis_client)
    result = ev.exam_result("s5", 2016, "A")
    first = await proc.process([record(result)])
    assert first.outputs == [] and first.held == 1
    report = await proc.process([record(ev.registration("s5", 2016, {"A": 6}))])
    causes = [data(m.value)["caused_by"]["id"] for m in report.outputs]
    assert causes[-1] == result["id"]
    account = await proc.store.get("s5")
    assert account is not None and account.balance == 146 * 4


async def test_sweeper_refuses_a_held_result_after_the_holding_time(redis_client: Redis) -> None:
    clock = [1_700_000_000.0]
    proc = processor(redis_client, clock, result_hold_seconds=60)
    result = ev.exam_result("s6", 2016, "A")
    await proc.process([record(result)])
    published: list[Any] = []

    async def publish(messages: list[Any]) -> None:
        published.extend(messages)

    assert await proc.sweep_held(publish) == 0
    clock[0] += 61
    assert await proc.sweep_held(publish) == 1
    assert [data(m.value)["reason"] for m in published] == ["unknown_registration"]
    assert await proc.sweep_held(publish) == 0
    account = await proc.store.get("s6")
    assert account is not None and account.held == ()


async def test_every_output_kind_validates_against_the_contract(redis_client: Redis) -> None:
    from learning_account.wire import decode

    proc = processor(redis_client)
    report = await proc.process(
        [
            record(ev.registration("s7", 2016, {"A": 60, "B": 60, "C": 22.5})),  # low, exhausted
            record(ev.exam_result("s7", 2016, "A")),
            record(ev.deregistration("s7", 2016, ["Z"], date(2016, 10, 1))),  # rejected
            record(b"\xff", topic="learning-account.exam-results.v1"),  # dead letter
        ]
    )
    kinds = set()
    for message in report.outputs:
        decoded = decode(message.topic, message.value, message.key)
        assert decoded.id == message.event_id
        kinds.add(message.topic)
    assert len(kinds) == 5
    changed = data(report.outputs[0].value)
    # the first change carries the opening: previous 0, delta = +140 - 142.5
    assert (changed["previous_balance"], changed["delta"], changed["balance"]) == (0, -2.5, -2.5)


def test_output_ids_are_uuid5_of_the_student_and_the_cause() -> None:
    import uuid

    from learning_account.domain.model import EventRef
    from learning_account.processing.outputs import OUTPUT_ID_NAMESPACE, output_id

    cause = EventRef("urn:institution:kuleuven:sis", "7f1c2e4a", "t")
    expected = uuid.uuid5(
        OUTPUT_ID_NAMESPACE, "r0123456\nurn:institution:kuleuven:sis\n7f1c2e4a\ncredit-low\n60"
    )
    assert output_id("r0123456", cause, "credit-low", 60) == str(expected)


async def test_the_core_does_not_grow_with_the_years(redis_client: Redis) -> None:
    proc = processor(redis_client)
    sizes = []
    for year in range(2012, 2024):  # from 2008-2009 (the first) to the records' time + 1
        await proc.process([record(ev.registration("long", year, {f"U{year}": 3}))])
        await proc.process([record(ev.exam_result("long", year, f"U{year}", "passed"))])
        sizes.append(len(await redis_client.hget("la:{long}:account", "s")))
    assert max(sizes) - min(sizes) <= 2  # the balance may gain a digit, nothing more


def wide_registration(student_id: str, year: int) -> dict[str, Any]:
    """100 course units with long codes: a balance-changed of about 20 kB."""
    return ev.registration(student_id, year, {f"U{n:03d}-{'x' * 150}": 0.5 for n in range(100)})


async def test_a_step_with_an_output_over_the_size_bound_is_dead_lettered_and_not_applied(
    redis_client: Redis,
) -> None:
    proc = Processor(RedisStore(redis_client), Policy(), max_message_bytes=16 * 1024)
    wide = record(wide_registration("s9", 2016))
    narrow = record(ev.registration("s9", 2017, {"A": 6}))
    report = await proc.process([wide, narrow])
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC, BALANCE_CHANGED_TOPIC]
    letter = data(report.outputs[0].value)
    assert letter["error"].startswith("internal error") and letter["offset"] == wide.offset
    # the next event of the student is decided on the account as before the wide one
    changed = data(report.outputs[1].value)
    assert (changed["previous_balance"], changed["balance"]) == (0, 134)
    account = await proc.store.get("s9", with_units=True)
    assert account is not None and account.balance == 134 * 4
    assert {year for year, _ in account.units} == {2017}
    again = await proc.process([wide, narrow])
    assert again.duplicates == 2
    assert [m.value for m in again.outputs] == [m.value for m in report.outputs]


async def test_rebuild_skips_what_live_dead_lettered_for_its_size(
    redis_client: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learning_account.ops import rebuild

    history = [
        record(wide_registration("s10", 2016)),
        record(ev.registration("s10", 2017, {"A": 6})),
        record(ev.exam_result("s10", 2017, "A")),
    ]
    # below what LA_KAFKA_MAX_MESSAGE_BYTES accepts, to keep the records small
    settings = Settings().model_copy(update={"kafka_max_message_bytes": 16 * 1024})
    live = Processor(
        RedisStore(redis_client), Policy(), max_message_bytes=settings.kafka_max_message_bytes
    )
    assert (await live.process(history)).dead_lettered == 1

    @contextlib.asynccontextmanager
    async def read_history(bootstrap: str) -> Any:
        async def chunks(topic: str) -> Any:
            yield [r for r in history if r.topic == topic]

        yield [(topic, 0, chunks(topic)) for topic in {r.topic for r in history}], len(history)

    monkeypatch.setattr(rebuild, "read_history", read_history)
    target_url = redis_url.rsplit("/", 1)[0] + "/5"
    target = Redis.from_url(target_url)
    await target.flushdb()
    try:
        report = await rebuild.rebuild(settings, redis_url=target_url)
        assert (report.applied, report.dead_lettered) == (2, 1)
        rebuilt = await RedisStore(target).get("s10", with_units=True)
        assert rebuilt == await live.store.get("s10", with_units=True)
    finally:
        await target.flushdb()
        await target.aclose()


async def test_an_unreadable_stored_account_dead_letters_its_records_only(
    redis_client: Redis,
) -> None:
    proc = processor(redis_client)
    await proc.process([record(ev.registration("s11", 2016, {"A": 6}))])
    await redis_client.hset("la:{s11}:account", "s", b"{not json")
    report = await proc.process(
        [
            record(ev.exam_result("s11", 2016, "A")),
            record(ev.registration("s12", 2016, {"A": 6})),
        ]
    )
    assert [m.topic for m in report.outputs] == [DEAD_LETTER_TOPIC, BALANCE_CHANGED_TOPIC]
    assert data(report.outputs[0].value)["error"].startswith("internal error")
    assert await redis_client.hget("la:{s11}:account", "s") == b"{not json"


@pytest.fixture
async def own_kafka(tmp_path: Any) -> Any:
    """A broker of this test alone: the service reads the fixed input topics from the start."""
    from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
    from learning_account_dev.devstack import ensure_topics, free_port, start_tansu, wait_for_kafka

    port = free_port()
    broker = start_tansu(port, tmp_path)
    try:
        bootstrap = f"127.0.0.1:{port}"
        await wait_for_kafka(bootstrap)
        await ensure_topics(bootstrap, {t: 1 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
        yield bootstrap
    finally:
        broker.stop()


async def test_the_service_dead_letters_an_output_the_producer_refuses_and_goes_on(
    own_kafka: str, redis_client: Redis, redis_url: str
) -> None:
    """Once the state was written and every retry re-sent the oversized output, for ever."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from learning_account.bootstrap import build_service
    from learning_account.wire import INPUT_TOPICS
    from learning_account_dev.devstack import free_port
    from support.service import OutputCollector, send

    # 34 KiB (below what LA_KAFKA_MAX_MESSAGE_BYTES accepts, to keep the records small): the
    # wide registration's balance-changed (about 34.7 kB) is over it, and the dead letter
    # carrying that registration (about 32.7 kB) is under
    settings = Settings(
        kafka_bootstrap_servers=own_kafka,
        redis_url=redis_url,
        redis_cluster="false",
        http_port=free_port(),
        consumer_group="output-size",
        gc_threshold=None,
    ).model_copy(update={"kafka_max_message_bytes": 34 * 1024})
    wide = ev.registration("s13", 2016, {f"U{n:03d}-{'x' * 251}": 0.5 for n in range(100)})
    narrow = ev.registration("s13", 2017, {"A": 6})
    other = ev.registration("s14", 2017, {"A": 6})
    service = build_service(settings)
    collector = OutputCollector(own_kafka)
    await service.start()
    await collector.start()
    try:
        await send(own_kafka, [wide, narrow, other])
        await collector.wait_for(lambda: len(collector.records) >= 3, timeout=30)
        letters = collector.messages(DEAD_LETTER_TOPIC)
        assert [m["data"]["error"][:14] for m in letters] == ["internal error"]
        changes = collector.messages(BALANCE_CHANGED_TOPIC)
        changed = {m["data"]["caused_by"]["id"]: m["data"] for m in changes}
        assert set(changed) == {narrow["id"], other["id"]}
        assert changed[narrow["id"]]["previous_balance"] == 0  # the wide one was not applied
        consumer = AIOKafkaConsumer(bootstrap_servers=own_kafka, group_id="output-size")
        await consumer.start()
        try:
            registrations = TopicPartition(INPUT_TOPICS[0], 0)
            for _ in range(100):
                if await consumer.committed(registrations) == 3:
                    break
                await asyncio.sleep(0.1)
            assert await consumer.committed(registrations) == 3
        finally:
            await consumer.stop()
    finally:
        await collector.stop()
        await service.stop()
