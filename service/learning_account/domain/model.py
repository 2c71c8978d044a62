"""Commands, account state and domain events of the learning account.

Amounts are integer quarter-credits everywhere in the core: every amount the rules produce is a
multiple of 0.25 credit, so integers keep them exact (140 credits == 560 quarters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from types import MappingProxyType

QUARTERS_PER_CREDIT = 4
OPENING_BALANCE = 140 * QUARTERS_PER_CREDIT
BONUS_CAP = 60 * QUARTERS_PER_CREDIT
MASTER_DEGREE_DEDUCTION = 140 * QUARTERS_PER_CREDIT
REBUILD_STEP = 10 * QUARTERS_PER_CREDIT
REBUILD_CEILING = 60 * QUARTERS_PER_CREDIT
STANDARD_BORDER_DAYS = 14
FIRST_TERM_BORDER_DAYS = 28


def credits_to_quarters(credits: int | float | str) -> int:
    """Exact conversion of a credit amount that is a multiple of 0.25 to quarter-credits."""
    from decimal import Decimal

    quarters = Decimal(str(credits)) * QUARTERS_PER_CREDIT
    if quarters != quarters.to_integral_value():
        raise ValueError(f"{credits} is not a multiple of 0.25 credit")
    return int(quarters)


def academic_year_of(day: date) -> int:
    """The academic year (by its first calendar year) a date falls in: it turns on 1 September."""
    return day.year if day.month >= 9 else day.year - 1


def format_academic_year(year: int) -> str:
    return f"{year}-{year + 1}"


def parse_academic_year(text: str) -> int:
    first, _, second = text.partition("-")
    if not (len(first) == 4 and len(second) == 4 and first.isdigit() and second.isdigit()):
        raise ValueError(f"academic year {text!r} is not of the form YYYY-YYYY")
    if int(second) != int(first) + 1:
        raise ValueError(f"academic year {text!r} does not span consecutive years")
    return int(first)


class ProgrammeKind(StrEnum):
    BACHELOR = "bachelor"
    MASTER = "master"
    PREPARATORY = "preparatory"
    BACHELOR_AFTER_BACHELOR = "bachelor_after_bachelor"
    MASTER_AFTER_MASTER = "master_after_master"


class Contract(StrEnum):
    DIPLOMA = "diploma"
    CREDIT = "credit"
    EXAM = "exam"


class ResultOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    TOLERATED = "tolerated"


class Degree(StrEnum):
    BACHELOR = "bachelor"
    MASTER = "master"


class DeregistrationReason(StrEnum):
    PROGRAMME_CHANGE = "programme_change"
    WITHDRAWAL = "withdrawal"


class EntryKind(StrEnum):
    OPENED = "opened"
    INVESTED = "invested"
    ACQUIRED = "acquired"
    BONUS = "bonus"
    REFUNDED = "refunded"
    DEGREE_DEDUCTION = "degree_deduction"
    REBUILT = "rebuilt"


class Refusal(StrEnum):
    INSUFFICIENT_LEARNING_CREDIT = "insufficient_learning_credit"
    ALREADY_REGISTERED = "already_registered"
    NOT_REGISTERED = "not_registered"
    RESULT_ALREADY_RECORDED = "result_already_recorded"
    UNKNOWN_REGISTRATION = "unknown_registration"


EXHAUSTED_OPTIONS = (
    "first_master_programme",
    "preparatory_programme",
    "bachelor_after_bachelor",
    "master_after_master",
    "examination_contract",
    "exceptional_admission",
)


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRef:
    """The input event a command comes from: CloudEvents `source` + `id` identify it."""

    source: str
    id: str
    type: str


@dataclass(frozen=True, slots=True)
class UnitRegistration:
    code: str
    credits: int
    starts_on: date | None = None
    first_term_of_first_track: bool = False
    border_date: date | None = None

    def effective_border_date(self) -> date:
        """R5.2: the given border date, else starts_on + 14 days (28 for a first-term unit)."""
        if self.border_date is not None:
            return self.border_date
        if self.starts_on is None:
            raise ValueError(f"course unit {self.code} has neither border_date nor starts_on")
        days = FIRST_TERM_BORDER_DAYS if self.first_term_of_first_track else STANDARD_BORDER_DAYS
        if self.starts_on > date.max - timedelta(days=days):
            return date.max  # a unit starting in the last days of year 9999
        return self.starts_on + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class Register:
    event: EventRef
    student_id: str
    academic_year: int
    programme_code: str
    programme_kind: ProgrammeKind
    contract: Contract
    registered_on: date
    units: tuple[UnitRegistration, ...]
    exceptional_admission: bool = False
    generation_student: bool | None = None

    @property
    def uses_account(self) -> bool:
        """R2.1: diploma or credit contract in a bachelor's or master's programme."""
        return self.contract in (Contract.DIPLOMA, Contract.CREDIT) and self.programme_kind in (
            ProgrammeKind.BACHELOR,
            ProgrammeKind.MASTER,
        )


@dataclass(frozen=True, slots=True)
class RecordResult:
    event: EventRef
    student_id: str
    academic_year: int
    unit_code: str
    outcome: ResultOutcome
    recorded_on: date


@dataclass(frozen=True, slots=True)
class AwardDegree:
    event: EventRef
    student_id: str
    academic_year: int
    degree: Degree
    programme_code: str
    awarded_on: date


@dataclass(frozen=True, slots=True)
class Deregister:
    event: EventRef
    student_id: str
    academic_year: int
    unit_codes: tuple[str, ...]
    deregistered_on: date
    reason: DeregistrationReason
    reenrolled_on: date | None = None
    generation_student: bool | None = None


Command = Register | RecordResult | AwardDegree | Deregister


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CourseUnit:
    """A course unit registered for one academic year (kept after deregistration, marked so)."""

    credits: int
    contract: Contract
    uses_account: bool
    border_date: date
    generation_student: bool | None = None
    result: ResultOutcome | None = None
    deregistered: bool = False


@dataclass(frozen=True, slots=True)
class HeldResult:
    """An exam result that arrived before its registration (R3.6), with when it was held."""

    command: RecordResult
    held_at: float


@dataclass(frozen=True, slots=True)
class YearTotals:
    """The entries booked to one academic year, summed per kind (quarters, signed)."""

    invested: int = 0
    acquired: int = 0
    bonus: int = 0
    refunded: int = 0
    degree_deduction: int = 0
    rebuilt: int = 0

    @property
    def total(self) -> int:
        return (
            self.invested
            + self.acquired
            + self.bonus
            + self.refunded
            + self.degree_deduction
            + self.rebuilt
        )


_EMPTY: Mapping[object, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Account:
    """Everything the rules need to know of one student. `balance` is None until opened (R1.1)."""

    student_id: str
    balance: int | None = None
    bonus_granted: int = 0
    rebuilt_credits: bool = False
    master_degree: bool = False
    last_enrolment_year: int | None = None
    last_rebuilt_year: int | None = None
    generation_year: int | None = None
    years: Mapping[int, YearTotals] = field(default_factory=dict)
    units: Mapping[tuple[int, str], CourseUnit] = field(default_factory=dict)
    held: tuple[HeldResult, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.balance is not None


# --- domain events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    kind: EntryKind
    amount: int
    academic_year: int
    course_unit_code: str | None = None


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class CreditExhausted:
    student_id: str
    academic_year: int
    balance: int
    caused_by: EventRef
    options: tuple[str, ...] = EXHAUSTED_OPTIONS


@dataclass(frozen=True, slots=True)
class CreditLow:
    student_id: str
    academic_year: int
    balance: int
    threshold: int
    caused_by: EventRef


@dataclass(frozen=True, slots=True)
class EventRejected:
    student_id: str
    reason: Refusal
    detail: str
    caused_by: EventRef


DomainEvent = BalanceChanged | CreditExhausted | CreditLow | EventRejected


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one step: the new state and the events it recorded, in publish order."""

    account: Account
    events: tuple[DomainEvent, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """Settings the rules take from configuration."""

    low_balance_thresholds: tuple[int, ...] = (60 * QUARTERS_PER_CREDIT,)
    result_hold_seconds: float = 604800.0
