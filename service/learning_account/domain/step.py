"""One step's working copy of an account: entries booked, changes announced, events refused.

The rules (`rules.py`) change an account only through a Step; `decision()` freezes it into the
new account, the events in publish order and the year totals and units it touched. A step looks
up the totals and units of its event's year only: the store reads no other year.
"""

from __future__ import annotations

from learning_account.domain.events import (
    NOTHING_TOUCHED,
    BalanceChanged,
    CreditExhausted,
    CreditLow,
    Decision,
    DomainEvent,
    Entry,
    EventRejected,
    Touched,
)
from learning_account.domain.guards import Refused, unknown_registration
from learning_account.domain.model import (
    OPENING_BALANCE,
    TOTALS_COLUMN,
    Account,
    CourseUnit,
    EventRef,
    HeldResult,
    Policy,
    RecordResult,
    Register,
    UnitKey,
    YearTotals,
)
from learning_account.domain.overlay import Overlay
from learning_account.domain.rebuilding import latest, rebuild_entries


class Change:
    """The balance change of one cause while it is decided: its academic year, the balance
    before it and its entries so far."""

    __slots__ = ("academic_year", "cause", "entries", "previous")

    def __init__(self, cause: EventRef, academic_year: int, previous: int | None) -> None:
        self.cause = cause
        self.academic_year = academic_year
        self.previous = previous
        self.entries: list[Entry] = []


class Step:
    """A mutable working copy of an account for one step; `decision()` freezes it again."""

    __slots__ = (
        "account",
        "balance",
        "bonus_granted",
        "events",
        "generation_year",
        "held",
        "last_enrolment_year",
        "last_rebuilt_year",
        "master_degree",
        "policy",
        "rebuilt_credits",
        "units",
        "units_changed",
        "year_sums",
        "years",
    )

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
        self.year_sums: dict[int, list[int]] = {}  # the years this step books to, as columns
        self.units = Overlay.over(account.units)
        self.units_changed: set[UnitKey] = set()  # the units this step changes
        self.held = list(account.held)
        self.events: list[DomainEvent] = []

    @property
    def student_id(self) -> str:
        return self.account.student_id

    def decision(self) -> Decision:
        years = self.years
        if self.year_sums:
            years = Overlay.over(self.years)
            for year, sums in self.year_sums.items():
                years[year] = YearTotals(*sums)
        account = Account(  # positional, in Account's field order: once per event
            self.account.student_id,
            self.balance,
            self.bonus_granted,
            self.rebuilt_credits,
            self.master_degree,
            self.last_enrolment_year,
            self.last_rebuilt_year,
            self.generation_year,
            years,
            self.units,
            tuple(self.held),
        )
        touched = NOTHING_TOUCHED
        if self.year_sums or self.units_changed:
            touched = Touched(frozenset(self.year_sums), frozenset(self.units_changed))
        return Decision(account, tuple(self.events), touched)

    # --- the account's state ----------------------------------------------------------------

    def book(self, entry: Entry) -> Entry:
        if self.balance is None:
            raise AssertionError("an entry can only be booked to an open account")
        self.balance += entry.amount
        sums = self.year_sums.get(entry.academic_year)
        if sums is None:
            totals = self.years.get(entry.academic_year)
            sums = self.year_sums[entry.academic_year] = (
                [0] * len(TOTALS_COLUMN) if totals is None else list(totals.columns())
            )
        column = TOTALS_COLUMN.get(entry.kind)
        if column is not None:
            sums[column] += entry.amount
        return entry

    def year_totals(self, year: int) -> YearTotals | None:
        sums = self.year_sums.get(year)
        return YearTotals(*sums) if sums is not None else self.years.get(year)

    def set_unit(self, key: UnitKey, unit: CourseUnit) -> None:
        self.units[key] = unit
        self.units_changed.add(key)

    def mark_enrolment(self, academic_year: int) -> None:
        if self.last_enrolment_year is None or academic_year > self.last_enrolment_year:
            self.last_enrolment_year = academic_year

    def rebuild_until(self, academic_year: int) -> list[Entry]:
        """R6.2: rebuild the years without enrolment before the event's year, once each.

        Such a year has no totals yet (a year is booked to only once enrolled in or rebuilt,
        and both count it), so they start at zero without a look-up: the store did not read it.
        """
        counted = latest(self.last_enrolment_year, self.last_rebuilt_year)
        if counted is None or academic_year <= counted + 1:
            return []
        entries: list[Entry] = []
        if self.balance is not None:
            for entry in rebuild_entries(self.balance, counted, academic_year):
                self.year_sums.setdefault(entry.academic_year, [0] * len(TOTALS_COLUMN))
                entries.append(self.book(entry))
                self.rebuilt_credits = True
        self.last_rebuilt_year = academic_year - 1
        return entries

    # --- what the step publishes ------------------------------------------------------------

    def begin(self, cause: EventRef, academic_year: int, *, rebuild: bool = True) -> Change:
        """The change of `cause` in its academic year, R6.2's rebuild of the years before first."""
        change = Change(cause, academic_year, self.balance)
        if rebuild:
            change.entries.extend(self.rebuild_until(academic_year))
        return change

    def announce(
        self, change: Change, *, uncovered_credits: int = 0, additional_fee: bool = False
    ) -> None:
        """One balance-changed for a change with entries, then exhaustion and low balance (R7)."""
        if not change.entries or self.balance is None:
            return
        cause, year, previous = change.cause, change.academic_year, change.previous
        self.events.append(
            BalanceChanged(
                student_id=self.student_id,
                academic_year=year,
                previous_balance=previous if previous is not None else 0,
                balance=self.balance,
                entries=tuple(change.entries),
                uncovered_credits=uncovered_credits,
                additional_fee=additional_fee,
                caused_by=cause,
            )
        )
        judged_from = previous if previous is not None else OPENING_BALANCE
        if judged_from > 0 >= self.balance:
            self.events.append(CreditExhausted(self.student_id, year, self.balance, cause))
        for threshold in sorted(self.policy.low_balance_thresholds, reverse=True):
            if judged_from >= threshold > self.balance:
                self.events.append(CreditLow(self.student_id, year, self.balance, threshold, cause))

    def refuse_if(self, change: Change, refused: Refused | None) -> bool:
        """When a guard refused the event: the change so far (the rebuild the event triggered),
        then the event's refusal, and True (the step ends there)."""
        if refused is None:
            return False
        self.announce(change)
        self.reject(change.cause, refused)
        return True

    def reject(self, cause: EventRef, refused: Refused) -> None:
        self.events.append(EventRejected(self.student_id, refused.reason, refused.detail, cause))

    # --- R3.6 held exam results -------------------------------------------------------------

    def held_results_for(self, command: Register) -> list[HeldResult]:
        codes = {unit.code for unit in command.units}
        return [
            held
            for held in self.held
            if held.command.academic_year == command.academic_year
            and held.command.unit_code in codes
        ]

    def held_result_of(self, key: UnitKey) -> HeldResult | None:
        year, code = key
        for held in self.held:
            if (
                isinstance(held.command, RecordResult)
                and held.command.academic_year == year
                and held.command.unit_code == code
            ):
                return held
        return None

    def expire_held_results(self, now: float) -> None:
        # a held correction carries its result's time, so it expires with it
        if not self.held:
            return
        for held in list(self.held):
            if now - held.held_at >= self.policy.result_hold_seconds:
                self.held.remove(held)
                self.reject(held.command.event, unknown_registration(held.command))
