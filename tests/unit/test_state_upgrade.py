"""An account stored by state format 3 keeps loading and working after the upgrade.

`fixtures/state-format-3.json` holds the Redis fields of one account as format 3 wrote them
(captured from that release): 2016 with two passed diploma units (bonus 6 each), a passed credit
contract unit, a failed one, a half refund and a unit without result; 2017 with two passes of 50
and 20 credits sharing 48 bonus; 2018 with a full refund, a re-registration and a half refund;
a held 2019 result. The same history replayed by today's rules (what `learning-account rebuild`
does from the topics) gives the exact per-unit facts the old format did not keep.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.domain.statement import statement
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account_dev import events as ev

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "state-format-3.json").read_text())
STUDENT = FIXTURE["student_id"]
NOW = 1_000_100.0  # the held result of the fixture was held at 1,000,000: still in time


async def store_fixture(redis: Redis) -> RedisStore:
    await redis.hset(account_key(STUDENT), mapping={**FIXTURE["fields"], "v": "7"})
    return RedisStore(redis)


def history() -> list[dict[str, Any]]:
    """The events that made the fixture's account, as they travel on the topics."""
    s = STUDENT
    return [
        ev.registration(s, 2016, {c: 6 for c in "ABCDE"}, generation_student=True),
        ev.registration(s, 2016, {"K": 6}, contract="credit"),
        ev.exam_result(s, 2016, "A"),
        ev.exam_result(s, 2016, "B"),
        ev.exam_result(s, 2016, "C", "failed"),
        ev.exam_result(s, 2016, "K"),
        ev.deregistration(
            s,
            2016,
            ["D"],
            date(2016, 11, 28),
            reason="programme_change",
            reenrolled_on=date(2016, 12, 2),
        ),
        ev.registration(s, 2017, {"G": 50, "H": 20}),
        ev.exam_result(s, 2017, "G"),
        ev.exam_result(s, 2017, "H"),
        ev.registration(s, 2018, {"P": 6, "Q": 6}),
        ev.deregistration(s, 2018, ["P"], date(2018, 9, 30)),
        ev.registration(s, 2018, {"P": 6}),
        ev.deregistration(
            s,
            2018,
            ["Q"],
            date(2018, 11, 28),
            reason="programme_change",
            reenrolled_on=date(2018, 12, 2),
            generation_student=True,
        ),
        ev.exam_result(s, 2019, "X"),
    ]


async def run(store: RedisStore, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event in a batch of its own through the real Processor; the outputs' documents."""
    processor = Processor(store, Policy(), clock=lambda: NOW)
    outputs: list[dict[str, Any]] = []
    for offset, event in enumerate(events):
        # no timestamp: the record's time is the clock's (NOW), in time for the fixture's held
        # result (R3.6 counts in record time)
        record = InputRecord(ev.topic_of(event), 0, offset, STUDENT.encode(), ev.to_bytes(event))
        report = await processor.process([record])
        assert report.dead_lettered == 0
        outputs.extend(json.loads(message.value) for message in report.outputs)
    return outputs


def entries(outputs: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    return [
        (entry["kind"], entry["amount"], entry["course_unit_code"])
        for output in outputs
        if output["type"].endswith("balance-changed.v1")
        for entry in output["data"]["entries"]
    ]


def reasons(outputs: list[dict[str, Any]]) -> list[str]:
    return [o["data"]["reason"] for o in outputs if o["type"].endswith("event-rejected.v1")]


async def test_a_format_3_account_loads_as_it_was(redis_client: Redis) -> None:
    store = await store_fixture(redis_client)
    account = await store.get(STUDENT, with_units=True)
    assert account is not None
    assert (account.balance, account.bonus_granted) == (FIXTURE["balance"], 240)
    assert [held.command.unit_code for held in account.held] == ["X"]
    keys = ((2016, "A"), (2016, "K"), (2016, "D"), (2018, "P"))
    a, k, d, p = (account.units[key] for key in keys)
    assert (a.result, a.bonus, k.bonus, d.deregistered, d.refunded, p.refunded) == (
        "passed",
        None,  # not stored: the year's totals tell it (see below)
        0,  # credit contract: no bonus
        True,
        None,
        0,
    )
    rows = statement(account, current_year=2019)
    assert [row.balance / 4 for row in rows] == [137, 185, 176]


async def test_where_the_totals_decide_it_corrections_and_restorations_are_exact(
    redis_client: Redis,
) -> None:
    store = await store_fixture(redis_client)
    outputs = await run(
        store,
        [
            ev.exam_result_correction(STUDENT, 2016, "A", "failed"),  # bonus 12 = A 6 + B 6
            ev.credits_restoration(STUDENT, 2016, ["D", "E"]),  # D: the year's only refund, 3
            ev.exam_result_correction(STUDENT, 2017, "H", "failed"),  # H: at most 48 - 50 = 0
        ],
    )
    assert entries(outputs) == [
        ("acquired", -6, "A"),
        ("bonus", -6, "A"),
        ("restored", 3, "D"),
        ("restored", 6, "E"),
        ("acquired", -20, "H"),
    ]
    account = await store.get(STUDENT, with_units=True)
    assert account is not None
    assert (account.balance / 4, account.bonus_granted / 4) == (176 - 12 + 9 - 20, 54)
    # the rewritten years keep every fact, including what was derived
    assert account.units[(2016, "B")].bonus is None  # untouched and still decidable
    assert account.units[(2016, "D")].restored
    second = await run(store, [ev.exam_result_correction(STUDENT, 2016, "B", "failed")])
    assert entries(second) == [("acquired", -6, "B"), ("bonus", -6, "B")]


async def test_where_the_totals_do_not_decide_it_no_credit_is_returned_twice(
    redis_client: Redis,
) -> None:
    store = await store_fixture(redis_client)
    outputs = await run(
        store,
        [
            # G's bonus was 48 (processed before H), but 28..48 fit the 2017 totals: the least
            ev.exam_result_correction(STUDENT, 2017, "G", "failed"),
            # Q's refund was half, but a full one fits 2018's totals too: nothing is restored
            ev.credits_restoration(STUDENT, 2018, ["Q"]),
        ],
    )
    assert entries(outputs) == [("acquired", -50, "G"), ("bonus", -28, "G")]
    assert reasons(outputs) == ["nothing_to_restore"]


async def test_the_rebuilt_account_has_every_unit_fact_exact(redis_client: Redis) -> None:
    store = RedisStore(redis_client)
    await run(store, history())
    rebuilt = await store.get(STUDENT, with_units=True)
    assert rebuilt is not None
    assert rebuilt.balance == FIXTURE["balance"]
    outputs = await run(
        store,
        [
            ev.exam_result_correction(STUDENT, 2017, "G", "failed"),
            ev.credits_restoration(STUDENT, 2018, ["Q"]),
        ],
    )
    assert entries(outputs) == [("acquired", -50, "G"), ("bonus", -48, "G"), ("restored", 3, "Q")]


async def test_a_held_result_of_the_old_format_still_applies(redis_client: Redis) -> None:
    store = await store_fixture(redis_client)
    outputs = await run(store, [ev.registration(STUDENT, 2019, {"X": 6})])
    assert entries(outputs) == [("invested", -6, "X"), ("acquired", 6, "X")]  # bonus all used
    account = await store.get(STUDENT)
    assert account is not None and account.held == ()
