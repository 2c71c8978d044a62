"""The stored account state: every course-unit field survives the compact row, old rows read."""

from __future__ import annotations

import itertools
from datetime import date

import orjson

from learning_account.domain.model import Account, Contract, CourseUnit, ResultOutcome
from learning_account.state_codec import decode_account, encode_core, encode_units


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
