"""A course unit's bonus and refund where the stored state does not hold them.

State stored before units kept their own bonus and refund (state format 3) has them only as
year totals. A unit's share is decided by those totals when only one share fits them (one passed
unit in the year, a year's bonus equal to its passed units' credits, no bonus at all, ...); else
these functions take the share that can never return credits twice: the least bonus a
correction takes back, the largest refund a restoration counts as already returned.
`learning-account rebuild` recomputes such accounts with every unit's facts exact.
"""

from __future__ import annotations

from collections.abc import Mapping

from learning_account.domain.model import Contract, CourseUnit, ResultOutcome, UnitKey, YearTotals


def _others_of_year(key: UnitKey, units: Mapping[UnitKey, CourseUnit]) -> list[CourseUnit]:
    return [unit for other, unit in units.items() if other[0] == key[0] and other != key]


def _earns_bonus(unit: CourseUnit) -> bool:
    return (
        unit.uses_account
        and unit.contract is Contract.DIPLOMA
        and unit.result is ResultOutcome.PASSED
    )


def unit_bonus(key: UnitKey, units: Mapping[UnitKey, CourseUnit], totals: YearTotals | None) -> int:
    """The bonus the passed unit `key` received: recorded, else the least the totals allow."""
    unit = units[key]
    if unit.bonus is not None:
        return unit.bonus
    known = unknown = 0
    for other in _others_of_year(key, units):
        if _earns_bonus(other):
            if other.bonus is None:
                unknown += other.credits
            else:
                known += other.bonus
    open_bonus = (totals.bonus if totals is not None else 0) - known
    return max(0, min(unit.credits, open_bonus - unknown))


def unit_refund(
    key: UnitKey, units: Mapping[UnitKey, CourseUnit], totals: YearTotals | None
) -> int:
    """What the deregistration of unit `key` refunded: recorded, else the largest refund the
    totals allow (none, half or all of its credits, R5)."""
    unit = units[key]
    if unit.refunded is not None:
        return unit.refunded
    if totals is None:
        return unit.credits
    known = unknown = registered = 0
    for other in _others_of_year(key, units):
        if not other.uses_account:
            continue
        registered += other.credits
        if other.refunded is None:
            unknown += other.credits
        else:
            known += other.refunded
    # registrations replaced by a later one of the same unit: their refunds are in the totals too
    replaced = max(0, -totals.invested - registered - unit.credits)
    open_refund = totals.refunded - known
    low = max(0, open_refund - unknown - replaced)
    high = min(unit.credits, open_refund)
    for candidate in (unit.credits, unit.credits // 2, 0):
        if low <= candidate <= high:
            return candidate
    return max(0, high)
