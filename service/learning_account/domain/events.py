"""The domain events a step records (what the consumer publishes) and the decision carrying them."""

from __future__ import annotations

from learning_account.domain.model import Account, EntryKind, EventRef, Refusal, UnitKey, immutable
from learning_account.domain.values import ExhaustionOption as ExhaustionOption  # re-exported

EXHAUSTED_OPTIONS: tuple[ExhaustionOption, ...] = tuple(ExhaustionOption)


@immutable
class Entry:
    kind: EntryKind
    amount: int
    academic_year: int
    course_unit_code: str | None = None


@immutable
class BalanceChanged:
    student_id: str
    academic_year: int
    previous_balance: int
    balance: int
    entries: tuple[Entry, ...]
    uncovered_credits: int
    additional_fee: bool
    caused_by: EventRef

    @property
    def delta(self) -> int:
        return self.balance - self.previous_balance


@immutable
class CreditExhausted:
    student_id: str
    academic_year: int
    balance: int
    caused_by: EventRef
    options: tuple[ExhaustionOption, ...] = EXHAUSTED_OPTIONS


@immutable
class CreditLow:
    student_id: str
    academic_year: int
    balance: int
    threshold: int
    caused_by: EventRef


@immutable
class EventRejected:
    student_id: str
    reason: Refusal
    detail: str
    caused_by: EventRef


DomainEvent = BalanceChanged | CreditExhausted | CreditLow | EventRejected


@immutable
class Touched:
    """What a step changed: the academic years it booked to (`totals`) and the course units it
    set (`units`, by academic year and code)."""

    totals: frozenset[int] = frozenset()
    units: frozenset[UnitKey] = frozenset()

    def __or__(self, other: Touched) -> Touched:
        if not (other.totals or other.units):
            return self
        if not (self.totals or self.units):
            return other
        return Touched(self.totals | other.totals, self.units | other.units)

    @property
    def unit_years(self) -> frozenset[int]:
        return frozenset(year for year, _ in self.units)


NOTHING_TOUCHED = Touched()


@immutable
class Decision:
    """The outcome of one step: the new state, the events it recorded in publish order, and what
    it changed of the academic years (what the store writes back)."""

    account: Account
    events: tuple[DomainEvent, ...]
    touched: Touched = NOTHING_TOUCHED
