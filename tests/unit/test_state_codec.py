"""The stored account state: every course-unit field survives the compact row, a step writes the
years it touched, a year not read is an error."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import orjson
import pytest

from learning_account.adapters.state_codec import decode_account, encode_core, encode_units
from learning_account.domain.model import Account, Contract, CourseUnit, ResultOutcome


def test_every_course_unit_field_round_trips() -> None:
    units = {}
    combinations = itertools.product(
        Contract,
        (True, False),
        (None, True, False),
        (None, *ResultOutcome),
        (True, False),
    )
    for n, (contract, uses, generation, result, deregistered) in enumerate(combinations):
        border = date(2016, 10, 10) if n % 3 else date.max
        units[(2016 + n % 3, f"U{n:03d}")] = CourseUnit(
            2 * n + 2, contract, uses, border, generation, result, deregistered
        )
    account = Account("r1", balance=560, units=units)
    stored = decode_account("r1", encode_core(account), encode_units(account, set(account.units)))
    assert dict(stored.units.items()) == units
    assert stored.balance == 560


def test_a_unit_row_is_small() -> None:
    unit = CourseUnit(24, Contract.DIPLOMA, True, date(2016, 10, 10), None, ResultOutcome.PASSED)
    account = Account("r1", balance=560, units={(2016, "PSY101"): unit})
    assert len(encode_units(account, {(2016, "PSY101")})[2016]) <= 24


def test_each_unit_keeps_its_bonus_refund_and_restoration() -> None:
    units = {}
    combinations = itertools.product((None, 0, 10, 24), (None, 0, 12, 24), (False, True))
    for n, (bonus, refunded, restored) in enumerate(combinations):
        units[(2016 + n % 2, f"U{n:02d}")] = CourseUnit(
            24,
            Contract.DIPLOMA,
            True,
            date(2016, 10, 10),
            result=ResultOutcome.PASSED,
            bonus=bonus,
            refunded=refunded,
            restored=restored,
        )
    account = Account("r1", balance=560, units=units)
    stored = decode_account("r1", encode_core(account), encode_units(account, set(account.units)))
    assert dict(stored.units.items()) == units


def test_a_held_correction_round_trips_behind_its_result() -> None:
    from learning_account.domain.model import CorrectResult, EventRef, HeldResult, RecordResult

    result = RecordResult(
        EventRef("s", "r", "t1"), "r1", 2016, "A", ResultOutcome.PASSED, date(2017, 2, 1)
    )
    correction = CorrectResult(
        EventRef("s", "c", "t2"), "r1", 2016, "A", ResultOutcome.FAILED, date(2017, 3, 2)
    )
    held = (HeldResult(result, 5.0), HeldResult(correction, 5.0))
    stored = decode_account("r1", encode_core(Account("r1", balance=536, held=held)))
    assert stored.held == held
    # with the partition number it came on (R3.6 counts that partition's time)
    held = (HeldResult(result, 5.0, 2), HeldResult(correction, 5.0, 2))
    stored = decode_account("r1", encode_core(Account("r1", balance=536, held=held)))
    assert stored.held == held and stored.held[1].partition == 2


def test_year_totals_write_the_restored_column_only_when_used() -> None:
    from learning_account.adapters.state_codec import encode_years
    from learning_account.domain.model import YearTotals

    years = {2016: YearTotals(-24, 0, 0, 0, 0, 0), 2017: YearTotals(-24, restored=24)}
    blobs = encode_years(Account("r1", balance=560, years=years), years)
    assert orjson.loads(blobs[2016]) == [-24, 0, 0, 0, 0, 0]
    stored = decode_account("r1", encode_core(Account("r1", balance=560)), totals=blobs)
    assert stored.years[2017] == years[2017]


def test_unknown_unit_facts_come_from_the_totals_where_they_decide_them() -> None:
    from learning_account.domain.model import YearTotals
    from learning_account.domain.unit_facts import unit_bonus, unit_refund

    def passed(credits: int) -> CourseUnit:
        return CourseUnit(
            credits,
            Contract.DIPLOMA,
            True,
            date(2016, 10, 10),
            None,
            ResultOutcome.PASSED,
            bonus=None,
        )  # type: ignore[arg-type]

    two = {(2016, "A"): passed(24), (2016, "B"): passed(24)}
    assert unit_bonus((2016, "A"), two, YearTotals(bonus=48)) == 24  # all of both
    assert unit_bonus((2016, "A"), two, YearTotals(bonus=0)) == 0
    assert unit_bonus((2016, "A"), two, YearTotals(bonus=30)) == 6  # 6..24 fit: the least
    one = {(2016, "A"): passed(24)}
    assert unit_bonus((2016, "A"), one, YearTotals(bonus=10)) == 10

    def dropped(credits: int) -> CourseUnit:
        return CourseUnit(
            credits, Contract.DIPLOMA, True, date(2016, 10, 10), deregistered=True, refunded=None
        )

    units = {
        (2016, "D"): dropped(24),
        (2016, "E"): CourseUnit(24, Contract.DIPLOMA, True, date(2016, 10, 10)),
    }
    assert unit_refund((2016, "D"), units, YearTotals(invested=-48, refunded=12)) == 12
    # a replaced registration of 24 may hold part of the 24 refunded: a full refund fits too
    assert unit_refund((2016, "D"), units, YearTotals(invested=-72, refunded=24)) == 24
    assert unit_refund((2016, "D"), units, None) == 24


# --- the years read, the years written ----------------------------------------------------


def enrolled_in(*years: int) -> Account:
    """An account of the rules with one unit `U<year>` of 6 credits registered and passed per
    year."""
    from scenario import Student

    student = Student()
    for year in years:
        student.register(year, {f"U{year}": 6})
        student.result(year, f"U{year}")
    return student.account


def read_back(account: Account, read_years: set[int]) -> Account:
    """`account` as the store gives it when it reads the fields of `read_years` only."""
    from learning_account.adapters.state_codec import encode_years

    units = encode_units(account, {key for key in account.units if key[0] in read_years})
    totals = encode_years(account, set(account.years) & read_years)
    return decode_account(
        account.student_id, encode_core(account), units, totals, read_years=read_years
    )


def test_a_year_that_was_not_read_is_an_error_not_a_zero() -> None:
    from learning_account.adapters.state_codec import YearNotRead

    account = read_back(enrolled_in(2016, 2017), {2017})
    assert account.years[2017].invested == -24 and (2017, "U2017") in account.units
    with pytest.raises(YearNotRead, match="2016-2017 of student r0123456"):
        account.years.get(2016)
    with pytest.raises(YearNotRead):
        assert 2016 not in account.years
    with pytest.raises(YearNotRead):
        account.units.get((2016, "U2016"))
    with pytest.raises(YearNotRead):
        assert (2016, "U2016") not in account.units
    # a year read that has no fields is new: looked up, it is absent
    fresh = read_back(enrolled_in(2016, 2017), {2017, 2018})
    assert fresh.years.get(2018) is None and (2018, "U2018") not in fresh.units


def test_without_units_read_a_unit_look_up_is_an_error() -> None:
    from learning_account.adapters.state_codec import YearNotRead, encode_years

    account = enrolled_in(2016)
    totals = encode_years(account, {2016})
    stored = decode_account(account.student_id, encode_core(account), {}, totals, with_units=False)
    assert stored.years[2016].acquired == 24
    with pytest.raises(YearNotRead):
        stored.units.get((2016, "U2016"))


def test_a_step_on_a_year_not_read_fails_instead_of_starting_it_from_zero() -> None:
    from scenario import Student

    from learning_account.adapters.state_codec import YearNotRead

    student = Student()
    student.account = read_back(enrolled_in(2016, 2017), {2017})
    with pytest.raises(YearNotRead):
        student.correct(2016, "U2016", "failed")


def test_a_decision_names_the_years_it_touched_and_only_those_are_written() -> None:
    from scenario import Student

    from learning_account.adapters.state_codec import encode_years
    from learning_account.domain.events import Touched

    student = Student()
    student.account = read_back(enrolled_in(2016, 2017), {2017})
    loaded = student.account
    decision = student.register(2017, {"B": 6})
    assert decision.touched == Touched(frozenset({2017}), frozenset({(2017, "B")}))
    units = encode_units(decision.account, decision.touched.units, loaded)
    assert list(units) == [2017]
    assert [row[0] for row in orjson.loads(units[2017])[1:]] == ["B", "U2017"]
    assert orjson.loads(encode_years(decision.account, decision.touched.totals)[2017]) == [
        -48,
        24,
        24,
        0,
        0,
        0,
    ]
    # a refusal changes no year
    refused = student.register(2017, {"B": 6})
    assert refused.touched == Touched()
    # a failed result changes the unit, not the totals
    failed = student.result(2017, "B", "failed")
    assert failed.touched == Touched(units=frozenset({(2017, "B")}))


def test_years_without_enrolment_are_rebuilt_without_being_read() -> None:
    from scenario import Student

    from learning_account.adapters.state_codec import encode_years

    student = Student()
    student.register(2016, {"A": 120})  # 20 credits left
    student.account = read_back(student.account, {2019})
    decision = student.register(2019, {"C": 6})
    assert decision.touched.totals == {2017, 2018, 2019}
    rows = encode_years(decision.account, decision.touched.totals)
    assert [orjson.loads(rows[year]) for year in (2017, 2018)] == [[0, 0, 0, 0, 0, 40]] * 2


async def test_the_store_reads_the_years_a_batch_names_and_no_other(redis_client: Any) -> None:
    from learning_account.adapters.redis_store import RedisStore
    from learning_account.adapters.state_codec import YearNotRead
    from learning_account.domain.model import Policy
    from learning_account.processing.pipeline import InputRecord, Processor
    from learning_account_dev import events as ev

    store = RedisStore(redis_client)
    processor = Processor(store, Policy(), clock=lambda: 1_700_000_000.0)
    history = [
        ev.registration("r1", 2016, {"A": 6}),
        ev.exam_result("r1", 2016, "A"),
        ev.registration("r1", 2017, {"B": 6}),
    ]
    for offset, event in enumerate(history):
        record = InputRecord(ev.topic_of(event), 0, offset, b"r1", ev.to_bytes(event))
        assert (await processor.process([record])).dead_lettered == 0
    loaded = (await store.load({"r1": []}, {"r1": [2017]}))["r1"]
    assert loaded.account.years[2017].invested == -24
    with pytest.raises(YearNotRead):
        loaded.account.years.get(2016)
    with pytest.raises(YearNotRead):
        loaded.account.units.get((2016, "A"))
    whole = await store.get("r1", with_units=True)
    assert whole is not None and whole.years[2016].acquired == 24
