"""The rules of rules.md as one pure function: decide(account, command) -> Decision.

No I/O, no clock: the caller passes `now` (seconds since the epoch, used only to time out held
exam results, R3.6) and the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date

from learning_account.domain.model import (
    BONUS_CAP,
    MASTER_DEGREE_DEDUCTION,
    OPENING_BALANCE,
    REBUILD_CEILING,
    REBUILD_STEP,
    Account,
    AwardDegree,
    BalanceChanged,
    Command,
    Contract,
    CorrectResult,
    CourseUnit,
    CreditExhausted,
    CreditLow,
    Decision,
    Degree,
    Deregister,
    DeregistrationReason,
    DomainEvent,
    Entry,
    EntryKind,
    EventRef,
    EventRejected,
    HeldResult,
    Overlay,
    Policy,
    ProgrammeKind,
    RecordResult,
    Refusal,
    Register,
    RestoreCredits,
    ResultOutcome,
    YearTotals,
    format_academic_year,
)
from learning_account.domain.unit_facts import unit_bonus, unit_refund

DEFAULT_POLICY = Policy()

_TOTALS_COLUMN = {
    EntryKind.INVESTED: 0,
    EntryKind.ACQUIRED: 1,
    EntryKind.BONUS: 2,
    EntryKind.REFUNDED: 3,
    EntryKind.DEGREE_DEDUCTION: 4,
    EntryKind.REBUILT: 5,
    EntryKind.RESTORED: 6,
}


def _columns(totals: YearTotals) -> tuple[int, int, int, int, int, int, int]:
    return (
        totals.invested,
        totals.acquired,
        totals.bonus,
        totals.refunded,
        totals.degree_deduction,
        totals.rebuilt,
        totals.restored,
    )


def decide(
    account: Account, command: Command, *, now: float, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """Apply one input command to an account; the result holds every event to publish."""
    step = _Step(account, policy)
    step.expire_held_results(now)
    match command:
        case Register():
            step.register(command, now)
        case RecordResult():
            step.record_result(command, now)
        case CorrectResult():
            step.correct_result(command, now)
        case RestoreCredits():
            step.restore_credits(command)
        case AwardDegree():
            step.award_degree(command)
        case Deregister():
            step.deregister(command)
    return step.decision()


def expire_held_results(
    account: Account, *, now: float, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """Refuse the held exam results whose registration did not come in time (R3.6)."""
    step = _Step(account, policy)
    step.expire_held_results(now)
    return step.decision()


def rebuild_entries(balance: int, last_counted_year: int | None, until_year: int) -> list[Entry]:
    """R6.1/R6.2: one `rebuilt` entry per year strictly between the two that adds credits."""
    entries: list[Entry] = []
    if last_counted_year is None:
        return entries
    for year in range(last_counted_year + 1, until_year):
        if balance >= REBUILD_CEILING:
            break
        amount = min(REBUILD_STEP, REBUILD_CEILING - balance)
        balance += amount
        entries.append(Entry(EntryKind.REBUILT, amount, year))
    return entries


def last_counted_year(account: Account) -> int | None:
    """The last year of enrolment or already rebuilt: rebuilding counts from the year after."""
    return _latest(account.last_enrolment_year, account.last_rebuilt_year)


def _latest(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return max(first, second)


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


class _Step:
    """A mutable working copy of an account for one step; `decision()` freezes it again."""

    def __init__(self, account: Account, policy: Policy) -> None:
        self.account = account
        self.policy = policy
        self.balance = account.balance
        self.bonus_granted = account.bonus_granted
        self.rebuilt_credits = account.rebuilt_credits
        self.master_degree = account.master_degree
        self.last_enrolment_year = account.last_enrolment_year
        self.last_rebuilt_year = account.last_rebuilt_year
        self.generation_year = account.generation_year
        self.years = account.years
        self.year_sums: dict[int, list[int]] = {}  # the years this step books to
        self.units = Overlay.over(account.units)
        self.held = list(account.held)
        self.events: list[DomainEvent] = []

    @property
    def student_id(self) -> str:
        return self.account.student_id

    def decision(self) -> Decision:
        years: Mapping[int, YearTotals] = self.years
        if self.year_sums:
            changed = Overlay.over(self.years)
            for year, sums in self.year_sums.items():
                changed[year] = YearTotals(*sums)
            years = changed
        account = Account(
            student_id=self.account.student_id,
            balance=self.balance,
            bonus_granted=self.bonus_granted,
            rebuilt_credits=self.rebuilt_credits,
            master_degree=self.master_degree,
            last_enrolment_year=self.last_enrolment_year,
            last_rebuilt_year=self.last_rebuilt_year,
            generation_year=self.generation_year,
            years=years,
            units=self.units,
            held=tuple(self.held),
        )
        return Decision(account, tuple(self.events))

    # --- booking and announcing -------------------------------------------------------------

    def book(self, entry: Entry) -> Entry:
        if self.balance is None:
            raise AssertionError("an entry can only be booked to an open account")
        self.balance += entry.amount
        column = _TOTALS_COLUMN.get(entry.kind)
        sums = self.year_sums.get(entry.academic_year)
        if sums is None:
            totals = self.years.get(entry.academic_year)
            sums = self.year_sums[entry.academic_year] = (
                [0] * 7 if totals is None else list(_columns(totals))
            )
        if column is not None:
            sums[column] += entry.amount
        return entry

    def announce_change(
        self,
        cause: EventRef,
        academic_year: int,
        previous: int | None,
        entries: list[Entry],
        *,
        uncovered_credits: int = 0,
        additional_fee: bool = False,
    ) -> None:
        """One balance-changed for a cause with entries, then exhaustion and low balance (R7)."""
        if not entries or self.balance is None:
            return
        self.events.append(
            BalanceChanged(
                student_id=self.student_id,
                academic_year=academic_year,
                previous_balance=previous if previous is not None else 0,
                balance=self.balance,
                entries=tuple(entries),
                uncovered_credits=uncovered_credits,
                additional_fee=additional_fee,
                caused_by=cause,
            )
        )
        judged_from = previous if previous is not None else OPENING_BALANCE
        if judged_from > 0 >= self.balance:
            self.events.append(CreditExhausted(self.student_id, academic_year, self.balance, cause))
        for threshold in sorted(self.policy.low_balance_thresholds, reverse=True):
            if judged_from >= threshold > self.balance:
                self.events.append(
                    CreditLow(self.student_id, academic_year, self.balance, threshold, cause)
                )

    def refuse(self, cause: EventRef, reason: Refusal, detail: str) -> None:
        self.events.append(EventRejected(self.student_id, reason, detail, cause))

    def rebuild_until(self, academic_year: int) -> list[Entry]:
        """R6.2: rebuild the years without enrolment before the event's year, once each."""
        counted = _latest(self.last_enrolment_year, self.last_rebuilt_year)
        if counted is None or academic_year <= counted + 1:
            return []
        entries: list[Entry] = []
        if self.balance is not None:
            for entry in rebuild_entries(self.balance, counted, academic_year):
                entries.append(self.book(entry))
                self.rebuilt_credits = True
        self.last_rebuilt_year = academic_year - 1
        return entries

    def mark_enrolment(self, academic_year: int) -> None:
        if self.last_enrolment_year is None or academic_year > self.last_enrolment_year:
            self.last_enrolment_year = academic_year

    # --- R2 registration --------------------------------------------------------------------

    def register(self, command: Register, now: float) -> None:
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year)

        taken = [
            unit.code
            for unit in command.units
            if (existing := self.units.get((year, unit.code))) is not None
            and not existing.deregistered
        ]
        if taken:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(
                command.event,
                Refusal.ALREADY_REGISTERED,
                f"course units already registered for {format_academic_year(year)}: "
                + ", ".join(taken),
            )
            self.refuse_held_results_for(command)
            return

        uncovered = 0
        additional_fee = False
        uses_account = command.uses_account
        if uses_account:
            available = self.balance if self.balance is not None else OPENING_BALANCE
            if available <= 0:
                if command.programme_kind is ProgrammeKind.MASTER and not self.master_degree:
                    additional_fee = True
                elif command.exceptional_admission:
                    additional_fee = True
                else:
                    self.announce_change(command.event, year, previous, entries)
                    self.refuse(
                        command.event,
                        Refusal.INSUFFICIENT_LEARNING_CREDIT,
                        f"learning credit is {_credits_text(available)}: a registration needs"
                        " a positive balance",
                    )
                    self.refuse_held_results_for(command)
                    return
            if self.balance is None:
                self.balance = 0
                entries.append(self.book(Entry(EntryKind.OPENED, OPENING_BALANCE, year)))
            invested = sum(unit.credits for unit in command.units)
            uncovered = max(0, invested - max(0, available))
            for unit in command.units:
                entries.append(self.book(Entry(EntryKind.INVESTED, -unit.credits, year, unit.code)))

        for unit in command.units:
            self.units[(year, unit.code)] = CourseUnit(
                credits=unit.credits,
                contract=command.contract,
                uses_account=uses_account,
                border_date=unit.effective_border_date(),
                generation_student=command.generation_student,
            )
        self.mark_enrolment(year)
        if command.contract is Contract.DIPLOMA and (
            self.generation_year is None or year < self.generation_year
        ):
            self.generation_year = year
        self.announce_change(
            command.event,
            year,
            previous,
            entries,
            uncovered_credits=uncovered,
            additional_fee=additional_fee,
        )
        self.apply_held_results_for(command, now)

    def held_results_for(self, command: Register) -> list[HeldResult]:
        codes = {unit.code for unit in command.units}
        return [
            held
            for held in self.held
            if held.command.academic_year == command.academic_year
            and held.command.unit_code in codes
        ]

    def apply_held_results_for(self, command: Register, now: float) -> None:
        """R3.6: held results of the new registration apply now, each as its own event (a held
        correction right after its result, R3.7)."""
        for held in self.held_results_for(command):
            self.held.remove(held)
            if isinstance(held.command, CorrectResult):
                self.correct_result(held.command, now, rebuild=False)
            else:
                self.record_result(held.command, now, rebuild=False)

    def refuse_held_results_for(self, command: Register) -> None:
        for held in self.held_results_for(command):
            self.held.remove(held)
            self.refuse_unknown_registration(held.command)

    def refuse_unknown_registration(self, result: RecordResult | CorrectResult) -> None:
        self.refuse(
            result.event,
            Refusal.UNKNOWN_REGISTRATION,
            f"no accepted registration of {result.unit_code} in"
            f" {format_academic_year(result.academic_year)}",
        )

    def expire_held_results(self, now: float) -> None:
        # a held correction carries its result's time, so it expires with it
        for held in list(self.held):
            if now - held.held_at >= self.policy.result_hold_seconds:
                self.held.remove(held)
                self.refuse_unknown_registration(held.command)

    def held_result_of(self, year: int, unit_code: str) -> HeldResult | None:
        for held in self.held:
            if (
                isinstance(held.command, RecordResult)
                and held.command.academic_year == year
                and held.command.unit_code == unit_code
            ):
                return held
        return None

    # --- R3 exam results --------------------------------------------------------------------

    def record_result(self, command: RecordResult, now: float, *, rebuild: bool = True) -> None:
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year) if rebuild else []
        key = (year, command.unit_code)
        unit = self.units.get(key)
        if unit is None:
            self.held.append(HeldResult(command, now))
            self.announce_change(command.event, year, previous, entries)
            return
        refusal = _closed_unit(unit, command.unit_code, year)
        if refusal is None and unit.result is not None:
            refusal = (
                Refusal.RESULT_ALREADY_RECORDED,
                f"course unit {command.unit_code} already has a final result ({unit.result})"
                f" for {format_academic_year(year)}",
            )
        if refusal is not None:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(command.event, *refusal)
            return
        if command.outcome is ResultOutcome.PASSED:
            entries.extend(self.acquire(key, unit))
        else:
            self.units[key] = unit.with_result(command.outcome)
        self.announce_change(command.event, year, previous, entries)

    def acquire(self, key: tuple[int, str], unit: CourseUnit) -> list[Entry]:
        """R3.1/R3.3: a pass processed now returns the credits, with the bonus still open; the
        unit records the pass and its bonus."""
        entries: list[Entry] = []
        bonus = 0
        if unit.uses_account:
            year, code = key
            entries.append(self.book(Entry(EntryKind.ACQUIRED, unit.credits, year, code)))
            if unit.contract is Contract.DIPLOMA and not self.rebuilt_credits:
                bonus = max(0, min(unit.credits, BONUS_CAP - self.bonus_granted))
                if bonus:
                    self.bonus_granted += bonus
                    entries.append(self.book(Entry(EntryKind.BONUS, bonus, year, code)))
        self.units[key] = unit.with_result(ResultOutcome.PASSED, bonus)
        return entries

    def correct_result(self, command: CorrectResult, now: float, *, rebuild: bool = True) -> None:
        """R3.7: the correction replaces the recorded outcome; only a pass won or lost counts."""
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year) if rebuild else []
        key = (year, command.unit_code)
        unit = self.units.get(key)
        if unit is None and (held := self.held_result_of(year, command.unit_code)) is not None:
            self.held.append(HeldResult(command, held.held_at, held.partition))
            self.announce_change(command.event, year, previous, entries)
            return
        refusal = _uncorrectable(unit, command.unit_code, year)
        if refusal is not None:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(command.event, *refusal)
            return
        assert unit is not None and unit.result is not None
        was_passed = unit.result is ResultOutcome.PASSED
        if command.outcome is ResultOutcome.PASSED and not was_passed:
            entries.extend(self.acquire(key, unit))
        elif was_passed and command.outcome is not ResultOutcome.PASSED:
            entries.extend(self.take_back(key, unit))
            self.units[key] = unit.with_result(command.outcome)
        else:  # failed and tolerated alike, or the outcome already recorded
            self.units[key] = replace(unit, result=command.outcome)
        self.announce_change(command.event, year, previous, entries)

    def take_back(self, key: tuple[int, str], unit: CourseUnit) -> list[Entry]:
        """R3.7: a pass taken back returns its credits and exactly its bonus, which is freed."""
        if not unit.uses_account:
            return []
        year, code = key
        entries = [self.book(Entry(EntryKind.ACQUIRED, -unit.credits, year, code))]
        bonus = unit_bonus(key, self.units, self.year_totals(year))
        if bonus:
            self.bonus_granted -= bonus
            entries.append(self.book(Entry(EntryKind.BONUS, -bonus, year, code)))
        return entries

    def year_totals(self, year: int) -> YearTotals | None:
        sums = self.year_sums.get(year)
        return YearTotals(*sums) if sums is not None else self.years.get(year)

    # --- R3.8 force majeure -----------------------------------------------------------------

    def restore_credits(self, command: RestoreCredits) -> None:
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year)
        never = [code for code in command.unit_codes if (year, code) not in self.units]
        if never:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(
                command.event,
                Refusal.NOT_REGISTERED,
                f"course units never registered for {format_academic_year(year)}: "
                + ", ".join(never),
            )
            return
        amounts = {
            code: self.restorable((year, code))
            for code in command.unit_codes
            if self.units[(year, code)].uses_account
        }
        spent = [code for code, amount in amounts.items() if amount <= 0]
        if spent:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(
                command.event,
                Refusal.NOTHING_TO_RESTORE,
                f"nothing left to restore for {format_academic_year(year)}: " + ", ".join(spent),
            )
            return
        for code, amount in amounts.items():
            self.units[(year, code)] = replace(self.units[(year, code)], restored=True)
            entries.append(self.book(Entry(EntryKind.RESTORED, amount, year, code)))
        self.announce_change(command.event, year, previous, entries)

    def restorable(self, key: tuple[int, str]) -> int:
        """R3.8: invested minus what was already returned (acquired or refunded, net)."""
        unit = self.units[key]
        if unit.restored:
            return 0
        acquired = unit.credits if unit.result is ResultOutcome.PASSED else 0
        refunded = (
            unit_refund(key, self.units, self.year_totals(key[0])) if unit.deregistered else 0
        )
        return unit.credits - acquired - refunded

    # --- R4 degrees -------------------------------------------------------------------------

    def award_degree(self, command: AwardDegree) -> None:
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year)
        if command.degree is Degree.MASTER and not self.master_degree:
            self.master_degree = True
            if self.balance is not None:
                entries.append(
                    self.book(Entry(EntryKind.DEGREE_DEDUCTION, -MASTER_DEGREE_DEDUCTION, year))
                )
        self.mark_enrolment(year)
        self.announce_change(command.event, year, previous, entries)

    # --- R5 deregistration ------------------------------------------------------------------

    def deregister(self, command: Deregister) -> None:
        year = command.academic_year
        previous = self.balance
        entries = self.rebuild_until(year)
        missing = [
            code
            for code in command.unit_codes
            if (unit := self.units.get((year, code))) is None or unit.deregistered
        ]
        if missing:
            self.announce_change(command.event, year, previous, entries)
            self.refuse(
                command.event,
                Refusal.NOT_REGISTERED,
                f"course units not registered for {format_academic_year(year)}: "
                + ", ".join(missing),
            )
            return
        for code in command.unit_codes:
            unit = self.units[(year, code)]
            if unit.result is not None or unit.restored:
                continue  # R5.1, R3.8: a unit with a final result or restored stays registered
            refund = 0
            if unit.uses_account:
                refund = deregistration_refund(
                    unit, command, generation_student=self.is_generation_student(command, unit)
                )
            self.units[(year, code)] = replace(unit, deregistered=True, refunded=refund)
            if refund:
                entries.append(self.book(Entry(EntryKind.REFUNDED, refund, year, code)))
        self.announce_change(command.event, year, previous, entries)

    def is_generation_student(self, command: Deregister, unit: CourseUnit) -> bool:
        """R5.3: the deregistration's flag wins, then the registration's, else derived."""
        if command.generation_student is not None:
            return command.generation_student
        if unit.generation_student is not None:
            return unit.generation_student
        return self.generation_year == command.academic_year


def _closed_unit(unit: CourseUnit, code: str, year: int) -> tuple[Refusal, str] | None:
    """R3.6, R3.8: a deregistered unit takes no result; a restored one is closed."""
    if unit.deregistered:
        return (
            Refusal.NOT_REGISTERED,
            f"course unit {code} was deregistered for {format_academic_year(year)}",
        )
    if unit.restored:
        return (
            Refusal.RESULT_ALREADY_RECORDED,
            f"course unit {code} was restored by force majeure for {format_academic_year(year)}",
        )
    return None


def _uncorrectable(unit: CourseUnit | None, code: str, year: int) -> tuple[Refusal, str] | None:
    """R3.7: only a recorded final result of a registered, open unit can be corrected."""
    if unit is None:
        return (
            Refusal.NOT_REGISTERED,
            f"course unit {code} is not registered for {format_academic_year(year)}",
        )
    refusal = _closed_unit(unit, code, year)
    if refusal is None and unit.result is None:
        refusal = (
            Refusal.NO_RESULT_TO_CORRECT,
            f"course unit {code} has no final result for {format_academic_year(year)}",
        )
    return refusal


def _credits_text(quarters: int) -> str:
    return format(quarters / 4, "g")
