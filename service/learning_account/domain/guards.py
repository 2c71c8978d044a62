"""The preconditions of the steps, each a function that returns why an event is refused, or None.

A step reads as its guards (`refused = guard(...) or other_guard(...)`), then what it decides.
"""

from __future__ import annotations

from collections.abc import Mapping

from learning_account.domain.model import (
    CorrectResult,
    CourseUnit,
    ProgrammeKind,
    RecordResult,
    Refusal,
    Register,
    UnitKey,
    format_academic_year,
    immutable,
)
from learning_account.domain.numbers import credits_number

Units = Mapping[UnitKey, CourseUnit]


@immutable
class Refused:
    """Why an event changes nothing: the reason code and a sentence for people."""

    reason: Refusal
    detail: str


# --- R2 registration ----------------------------------------------------------------------


def already_registered(units: Units, command: Register) -> Refused | None:
    """R2: a course unit is registered once per year, until it is deregistered."""
    year = command.academic_year
    taken = [
        unit.code
        for unit in command.units
        if (existing := units.get((year, unit.code))) is not None and not existing.deregistered
    ]
    if not taken:
        return None
    return Refused(
        Refusal.ALREADY_REGISTERED,
        f"course units already registered for {format_academic_year(year)}: " + ", ".join(taken),
    )


def no_credit_left(available: int, command: Register, *, master_degree: bool) -> Refused | None:
    """R2.2–R2.4: a registration using the account needs a positive balance, unless it is for a
    first master's programme or by exceptional admission (then it pays the additional fee)."""
    if available > 0 or not command.uses_account:
        return None
    if command.programme_kind is ProgrammeKind.MASTER and not master_degree:
        return None
    if command.exceptional_admission:
        return None
    return Refused(
        Refusal.INSUFFICIENT_LEARNING_CREDIT,
        f"learning credit is {credits_number(available)}: a registration needs a positive balance",
    )


# --- R3 exam results ----------------------------------------------------------------------


def unit_closed(unit: CourseUnit, key: UnitKey) -> Refused | None:
    """R3.6, R3.8: a deregistered unit takes no result; a restored one is closed."""
    year, code = key
    if unit.deregistered:
        return Refused(
            Refusal.NOT_REGISTERED,
            f"course unit {code} was deregistered for {format_academic_year(year)}",
        )
    if unit.restored:
        return Refused(
            Refusal.RESULT_ALREADY_RECORDED,
            f"course unit {code} was restored by force majeure for {format_academic_year(year)}",
        )
    return None


def result_already_recorded(unit: CourseUnit, key: UnitKey) -> Refused | None:
    """R3.7: a second final result is refused; a correction replaces one."""
    if unit.result is None:
        return None
    year, code = key
    return Refused(
        Refusal.RESULT_ALREADY_RECORDED,
        f"course unit {code} already has a final result ({unit.result})"
        f" for {format_academic_year(year)}",
    )


def no_result_to_correct(unit: CourseUnit | None, key: UnitKey) -> Refused | None:
    """R3.7: only a recorded final result of a registered, open unit can be corrected."""
    year, code = key
    if unit is None:
        return Refused(
            Refusal.NOT_REGISTERED,
            f"course unit {code} is not registered for {format_academic_year(year)}",
        )
    refused = unit_closed(unit, key)
    if refused is None and unit.result is None:
        refused = Refused(
            Refusal.NO_RESULT_TO_CORRECT,
            f"course unit {code} has no final result for {format_academic_year(year)}",
        )
    return refused


def unknown_registration(result: RecordResult | CorrectResult) -> Refused:
    """R3.6: a held result whose registration did not come in time (or was refused)."""
    return Refused(
        Refusal.UNKNOWN_REGISTRATION,
        f"no accepted registration of {result.unit_code} in"
        f" {format_academic_year(result.academic_year)}",
    )


# --- R3.8 force majeure -------------------------------------------------------------------


def never_registered(units: Units, year: int, codes: tuple[str, ...]) -> Refused | None:
    """R3.8: a restoration names units registered that year (deregistered ones count)."""
    never = [code for code in codes if (year, code) not in units]
    if not never:
        return None
    return Refused(
        Refusal.NOT_REGISTERED,
        f"course units never registered for {format_academic_year(year)}: " + ", ".join(never),
    )


def nothing_to_restore(amounts: Mapping[str, int], year: int) -> Refused | None:
    """R3.8: each unit restored must still have credits lost on it."""
    spent = [code for code, amount in amounts.items() if amount <= 0]
    if not spent:
        return None
    return Refused(
        Refusal.NOTHING_TO_RESTORE,
        f"nothing left to restore for {format_academic_year(year)}: " + ", ".join(spent),
    )


# --- R5 deregistration --------------------------------------------------------------------


def not_registered(units: Units, year: int, codes: tuple[str, ...]) -> Refused | None:
    """R5: only units registered and not yet deregistered can be deregistered."""
    missing = [
        code for code in codes if (unit := units.get((year, code))) is None or unit.deregistered
    ]
    if not missing:
        return None
    return Refused(
        Refusal.NOT_REGISTERED,
        f"course units not registered for {format_academic_year(year)}: " + ", ".join(missing),
    )
