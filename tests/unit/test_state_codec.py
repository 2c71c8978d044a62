"""The stored account state: every course-unit field survives the compact row, old rows read."""

from __future__ import annotations

import itertools
from datetime import date

import orjson

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
    stored = decode_account("r1", encode_core(account), encode_units(account))
    assert dict(stored.units.items()) == units
    assert stored.balance == 560


def test_a_wide_row_of_the_earlier_format_is_still_read() -> None:
    wide = [["A", 24, "d", 1, date(2016, 10, 10).toordinal(), None, "p", 0]]
    core = encode_core(Account("r1", balance=536))
    stored = decode_account("r1", core, {2016: orjson.dumps(wide)})
    unit = stored.units[(2016, "A")]
    assert (unit.credits, unit.contract, unit.border_date, unit.result) == (
        24,
        Contract.DIPLOMA,
        date(2016, 10, 10),
        ResultOutcome.PASSED,
    )


def test_a_unit_row_is_small() -> None:
    unit = CourseUnit(24, Contract.DIPLOMA, True, date(2016, 10, 10), None, ResultOutcome.PASSED)
    account = Account("r1", balance=560, units={(2016, "PSY101"): unit})
    assert len(encode_units(account)[2016]) <= 24


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
    stored = decode_account("r1", encode_core(account), encode_units(account))
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
    blobs = encode_years(Account("r1", balance=560, years=years))
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
