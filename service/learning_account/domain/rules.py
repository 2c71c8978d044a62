"""The rules of rules.md as one pure function: decide(account, command) -> Decision.

No I/O, no clock: the caller passes `now` (seconds since the epoch, used only to time out held
exam results, R3.6) and the policy. Each step below reads as its guards (`guards.py`: each
returns a refusal or None, and `Step.refuse_if` ends the step on a refusal), then what it
decides, written through a `step.Step`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from learning_account.domain.events import Decision, Entry
from learning_account.domain.guards import (
    already_registered,
    never_registered,
    no_credit_left,
    no_result_to_correct,
    not_registered,
    nothing_to_restore,
    result_already_recorded,
    unit_closed,
    unknown_registration,
)
from learning_account.domain.model import (
    BONUS_CAP,
    MASTER_DEGREE_DEDUCTION,
    OPENING_BALANCE,
    Account,
    AwardDegree,
    Command,
    Contract,
    CorrectResult,
    CourseUnit,
    Degree,
    Deregister,
    DeregistrationReason,
    EntryKind,
    HeldResult,
    Policy,
    RecordResult,
    Register,
    RestoreCredits,
    ResultOutcome,
    UnitKey,
)
from learning_account.domain.step import Step
from learning_account.domain.unit_facts import unit_bonus, unit_refund

DEFAULT_POLICY = Policy()


def decide(
    account: Account, command: Command, *, now: float, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """Apply one input command to an account; the result holds every event to publish."""
    step = Step(account, policy)
    step.expire_held_results(now)
    match command:
        case Register():
            register(step, command, now)
        case RecordResult():
            record_result(step, command, now)
        case CorrectResult():
            correct_result(step, command, now)
        case RestoreCredits():
            restore_credits(step, command)
        case AwardDegree():
            award_degree(step, command)
        case Deregister():
            deregister(step, command)
    return step.decision()


def expire_held_results(
    account: Account, *, now: float, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """Refuse the held exam results whose registration did not come in time (R3.6)."""
    step = Step(account, policy)
    step.expire_held_results(now)
    return step.decision()


# --- R2 registration ----------------------------------------------------------------------


def register(step: Step, command: Register, now: float) -> None:
    """R2: the units' credits are invested (the account opens at 140 first, R1.1); then the
    results held for them apply (R3.6)."""
    year = command.academic_year
    change = step.begin(command.event, year)
    available = step.balance if step.balance is not None else OPENING_BALANCE
    refused = already_registered(step.units, command) or no_credit_left(
        available, command, master_degree=step.master_degree
    )
    if step.refuse_if(change, refused):
        for held in _take_held_results_for(step, command):
            step.reject(held.command.event, unknown_registration(held.command))
        return

    uncovered = 0
    additional_fee = False
    if command.uses_account:
        additional_fee = available <= 0  # R2.3/R2.4: admitted without credit, for the fee
        if step.balance is None:
            step.balance = 0
            change.entries.append(step.book(Entry(EntryKind.OPENED, OPENING_BALANCE, year)))
        invested = sum(unit.credits for unit in command.units)
        uncovered = max(0, invested - max(0, available))
        for unit in command.units:
            entry = Entry(EntryKind.INVESTED, -unit.credits, year, unit.code)
            change.entries.append(step.book(entry))
    for unit in command.units:
        step.set_unit(
            (year, unit.code),
            CourseUnit(
                credits=unit.credits,
                contract=command.contract,
                uses_account=command.uses_account,
                border_date=unit.effective_border_date(),
                generation_student=command.generation_student,
            ),
        )
    step.mark_enrolment(year)
    if command.contract is Contract.DIPLOMA and (
        step.generation_year is None or year < step.generation_year
    ):
        step.generation_year = year
    step.announce(change, uncovered_credits=uncovered, additional_fee=additional_fee)
    # R3.6: each held result applies now as its own event, a held correction right after its
    # result (R3.7)
    for held in _take_held_results_for(step, command):
        if isinstance(held.command, CorrectResult):
            correct_result(step, held.command, now, rebuild=False)
        else:
            record_result(step, held.command, now, rebuild=False)


def _take_held_results_for(step: Step, command: Register) -> list[HeldResult]:
    held = step.held_results_for(command)
    for result in held:
        step.held.remove(result)
    return held


# --- R3 exam results ----------------------------------------------------------------------


def record_result(step: Step, command: RecordResult, now: float, *, rebuild: bool = True) -> None:
    """R3.1–R3.3: a pass returns the unit's credits and the bonus still open; a result before
    its registration is held (R3.6)."""
    key = (command.academic_year, command.unit_code)
    change = step.begin(command.event, command.academic_year, rebuild=rebuild)
    unit = step.units.get(key)
    if unit is None:
        step.held.append(HeldResult(command, now))
    elif step.refuse_if(change, unit_closed(unit, key) or result_already_recorded(unit, key)):
        return
    elif command.outcome is ResultOutcome.PASSED:
        change.entries.extend(_acquire(step, key, unit))
    else:
        step.set_unit(key, unit.with_result(command.outcome))
    step.announce(change)


def correct_result(step: Step, command: CorrectResult, now: float, *, rebuild: bool = True) -> None:
    """R3.7: the correction replaces the recorded outcome; only a pass won or lost counts. A
    correction of a held result is held behind it."""
    key = (command.academic_year, command.unit_code)
    change = step.begin(command.event, command.academic_year, rebuild=rebuild)
    unit = step.units.get(key)
    if unit is None and (held := step.held_result_of(key)) is not None:
        step.held.append(HeldResult(command, held.held_at, held.partition))
        step.announce(change)
        return
    if step.refuse_if(change, no_result_to_correct(unit, key)):
        return
    assert unit is not None and unit.result is not None
    was_passed = unit.result is ResultOutcome.PASSED
    if command.outcome is ResultOutcome.PASSED and not was_passed:
        change.entries.extend(_acquire(step, key, unit))
    elif was_passed and command.outcome is not ResultOutcome.PASSED:
        change.entries.extend(_take_back(step, key, unit))
        step.set_unit(key, unit.with_result(command.outcome))
    else:  # failed and tolerated alike, or the outcome already recorded
        step.set_unit(key, replace(unit, result=command.outcome))
    step.announce(change)


def _acquire(step: Step, key: UnitKey, unit: CourseUnit) -> list[Entry]:
    """R3.1/R3.3: a pass processed now returns the credits, with the bonus still open; the unit
    records the pass and its bonus."""
    entries: list[Entry] = []
    bonus = 0
    if unit.uses_account:
        year, code = key
        entries.append(step.book(Entry(EntryKind.ACQUIRED, unit.credits, year, code)))
        if unit.contract is Contract.DIPLOMA and not step.rebuilt_credits:
            bonus = max(0, min(unit.credits, BONUS_CAP - step.bonus_granted))
            if bonus:
                step.bonus_granted += bonus
                entries.append(step.book(Entry(EntryKind.BONUS, bonus, year, code)))
    step.set_unit(key, unit.with_result(ResultOutcome.PASSED, bonus))
    return entries


def _take_back(step: Step, key: UnitKey, unit: CourseUnit) -> list[Entry]:
    """R3.7: a pass taken back returns its credits and exactly its bonus, which is freed."""
    if not unit.uses_account:
        return []
    year, code = key
    entries = [step.book(Entry(EntryKind.ACQUIRED, -unit.credits, year, code))]
    bonus = unit_bonus(key, step.units, step.year_totals(year))
    if bonus:
        step.bonus_granted -= bonus
        entries.append(step.book(Entry(EntryKind.BONUS, -bonus, year, code)))
    return entries


# --- R3.8 force majeure -------------------------------------------------------------------


def restore_credits(step: Step, command: RestoreCredits) -> None:
    """R3.8: each unit gets back what it invested and did not get back yet, and closes."""
    year = command.academic_year
    change = step.begin(command.event, year)
    if step.refuse_if(change, never_registered(step.units, year, command.unit_codes)):
        return
    amounts = {
        code: _restorable(step, (year, code))
        for code in command.unit_codes
        if step.units[(year, code)].uses_account
    }
    if step.refuse_if(change, nothing_to_restore(amounts, year)):
        return
    for code, amount in amounts.items():
        step.set_unit((year, code), replace(step.units[(year, code)], restored=True))
        change.entries.append(step.book(Entry(EntryKind.RESTORED, amount, year, code)))
    step.announce(change)


def _restorable(step: Step, key: UnitKey) -> int:
    """R3.8: invested minus what was already returned (acquired or refunded, net)."""
    unit = step.units[key]
    if unit.restored:
        return 0
    acquired = unit.credits if unit.result is ResultOutcome.PASSED else 0
    refunded = unit_refund(key, step.units, step.year_totals(key[0])) if unit.deregistered else 0
    return unit.credits - acquired - refunded


# --- R4 degrees ---------------------------------------------------------------------------


def award_degree(step: Step, command: AwardDegree) -> None:
    """R4: the first master's degree deducts 140 credits; a degree counts as enrolment."""
    year = command.academic_year
    change = step.begin(command.event, year)
    if command.degree is Degree.MASTER and not step.master_degree:
        step.master_degree = True
        if step.balance is not None:
            entry = Entry(EntryKind.DEGREE_DEDUCTION, -MASTER_DEGREE_DEDUCTION, year)
            change.entries.append(step.book(entry))
    step.mark_enrolment(year)
    step.announce(change)


# --- R5 deregistration --------------------------------------------------------------------


def deregister(step: Step, command: Deregister) -> None:
    """R5: each unit without a final result is deregistered, with the refund it is owed."""
    year = command.academic_year
    change = step.begin(command.event, year)
    if step.refuse_if(change, not_registered(step.units, year, command.unit_codes)):
        return
    for code in command.unit_codes:
        unit = step.units[(year, code)]
        if unit.result is not None or unit.restored:
            continue  # R5.1, R3.8: a unit with a final result or restored stays registered
        refund = 0
        if unit.uses_account:
            generation_student = _is_generation_student(step, command, unit)
            refund = deregistration_refund(unit, command, generation_student=generation_student)
        step.set_unit((year, code), replace(unit, deregistered=True, refunded=refund))
        if refund:
            change.entries.append(step.book(Entry(EntryKind.REFUNDED, refund, year, code)))
    step.announce(change)


def deregistration_refund(
    unit: CourseUnit, command: Deregister, *, generation_student: bool
) -> int:
    """R5.2–R5.4: the quarters refunded for one unit without a result."""
    before_border = command.deregistered_on < unit.border_date
    if not (
        generation_student
        and command.reason is DeregistrationReason.PROGRAMME_CHANGE
        and unit.contract is Contract.DIPLOMA
    ):
        return unit.credits if before_border else 0
    reenrolled_on = command.reenrolled_on or command.deregistered_on
    reference = max(command.deregistered_on, reenrolled_on)
    if reference < date(command.academic_year, 12, 1):
        return unit.credits
    if before_border:
        return unit.credits
    if reference <= date(command.academic_year + 1, 3, 15):
        return unit.credits // 2
    return 0


def _is_generation_student(step: Step, command: Deregister, unit: CourseUnit) -> bool:
    """R5.3: the deregistration's flag wins, then the registration's, else derived."""
    if command.generation_student is not None:
        return command.generation_student
    if unit.generation_student is not None:
        return unit.generation_student
    return step.generation_year == command.academic_year
