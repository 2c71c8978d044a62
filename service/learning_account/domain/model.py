"""Commands and account state of the learning account (the events a step records: `events`).

Amounts are integer quarter-credits everywhere in the core: every amount the rules produce is a
multiple of 0.25 credit, so integers keep them exact (140 credits == 560 quarters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from zoneinfo import ZoneInfo

from learning_account.domain.numbers import QUARTERS_PER_CREDIT

# re-exported: the core's kinds and `immutable` (values.py, never compiled, says why)
from learning_account.domain.values import Contract as Contract
from learning_account.domain.values import Degree as Degree
from learning_account.domain.values import DeregistrationReason as DeregistrationReason
from learning_account.domain.values import EntryKind as EntryKind
from learning_account.domain.values import ProgrammeKind as ProgrammeKind
from learning_account.domain.values import Refusal as Refusal
from learning_account.domain.values import ResultOutcome as ResultOutcome
from learning_account.domain.values import immutable as immutable

OPENING_BALANCE = 140 * QUARTERS_PER_CREDIT
BONUS_CAP = 60 * QUARTERS_PER_CREDIT
MASTER_DEGREE_DEDUCTION = 140 * QUARTERS_PER_CREDIT
REBUILD_STEP = 10 * QUARTERS_PER_CREDIT
REBUILD_CEILING = 60 * QUARTERS_PER_CREDIT
STANDARD_BORDER_DAYS = 14
FIRST_TERM_BORDER_DAYS = 28
_LAST_ORDINAL = date.max.toordinal()


BRUSSELS = ZoneInfo("Europe/Brussels")
"""The time zone the academic calendar runs in (R6.3)."""


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


# --- commands -----------------------------------------------------------------------------


@immutable
class EventRef:
    """The input event a command comes from: CloudEvents `source` + `id` identify it."""

    source: str
    id: str
    type: str


@immutable
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
        ordinal = self.starts_on.toordinal() + days  # starts_on + days, without timedelta objects
        if ordinal > _LAST_ORDINAL:
            return date.max  # a unit starting in the last days of year 9999
        return date.fromordinal(ordinal)


@immutable
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
        """R2.1: a credit contract in any programme, a diploma contract in a bachelor's or
        master's programme."""
        if self.contract is Contract.CREDIT:
            return True
        return self.contract is Contract.DIPLOMA and self.programme_kind in (
            ProgrammeKind.BACHELOR,
            ProgrammeKind.MASTER,
        )


@immutable
class RecordResult:
    event: EventRef
    student_id: str
    academic_year: int
    unit_code: str
    outcome: ResultOutcome
    recorded_on: date


@immutable
class CorrectResult:
    """R3.7: an institution replaces a recorded final result."""

    event: EventRef
    student_id: str
    academic_year: int
    unit_code: str
    outcome: ResultOutcome
    corrected_on: date


@immutable
class RestoreCredits:
    """R3.8: a force-majeure decision gives back what was lost on course units of one year."""

    event: EventRef
    student_id: str
    academic_year: int
    unit_codes: tuple[str, ...]
    decided_on: date
    decision_reference: str


@immutable
class AwardDegree:
    event: EventRef
    student_id: str
    academic_year: int
    degree: Degree
    programme_code: str
    awarded_on: date


@immutable
class Deregister:
    event: EventRef
    student_id: str
    academic_year: int
    unit_codes: tuple[str, ...]
    deregistered_on: date
    reason: DeregistrationReason
    reenrolled_on: date | None = None
    generation_student: bool | None = None


Command = Register | RecordResult | CorrectResult | RestoreCredits | AwardDegree | Deregister


# --- state --------------------------------------------------------------------------------


@immutable
class CourseUnit:
    """A course unit registered for one academic year (kept after deregistration, marked so).

    `bonus` is what its pass received (R3.3) and `refunded` what its deregistration gave back
    (R5); None when the state was stored before units kept them and the totals do not tell
    (see `unit_facts`). `restored`: closed by a force-majeure restoration (R3.8).
    """

    credits: int
    contract: Contract
    uses_account: bool
    border_date: date
    generation_student: bool | None = None
    result: ResultOutcome | None = None
    deregistered: bool = False
    bonus: int | None = 0
    refunded: int | None = 0
    restored: bool = False

    def with_result(self, result: ResultOutcome, bonus: int = 0) -> CourseUnit:
        """This unit with its final result (`dataclasses.replace`, without its generic cost)."""
        return CourseUnit(
            self.credits,
            self.contract,
            self.uses_account,
            self.border_date,
            self.generation_student,
            result,
            self.deregistered,
            bonus,
            self.refunded,
            self.restored,
        )


@immutable
class HeldResult:
    """An exam result that arrived before its registration (R3.6), with when it was held; or a
    correction held behind such a result (R3.7), with the result's time."""

    command: RecordResult | CorrectResult
    held_at: float
    """The result's record time (seconds): its deadline counts from it."""
    partition: int | None = None
    """The input partition number it came on, whose progress times it out (None: not known)."""


@immutable
class YearTotals:
    """The entries booked to one academic year, summed per kind (quarters, signed)."""

    invested: int = 0
    acquired: int = 0
    bonus: int = 0
    refunded: int = 0
    degree_deduction: int = 0
    rebuilt: int = 0
    restored: int = 0  # last: the stored rows of earlier formats have the six columns before it

    def columns(self) -> tuple[int, ...]:
        """The sums in field order, the order `YearTotals(*columns)` takes them back in."""
        return (
            self.invested,
            self.acquired,
            self.bonus,
            self.refunded,
            self.degree_deduction,
            self.rebuilt,
            self.restored,
        )

    @property
    def total(self) -> int:
        return sum(self.columns())


TOTALS_COLUMN = {EntryKind(column.name): n for n, column in enumerate(fields(YearTotals))}
"""The column of `YearTotals.columns()` each kind of entry adds to (`opened` has none)."""


UnitKey = tuple[int, str]
"""A course unit of an account: its academic year and its code."""


@immutable
class Account:
    """Everything the rules need to know of one student. `balance` is None until opened (R1.1).

    `years` and `units` may hold only the academic years the store read (a step names which):
    looking up a year that was not read raises, iterating gives the years read.
    """

    student_id: str
    balance: int | None = None
    bonus_granted: int = 0
    rebuilt_credits: bool = False
    master_degree: bool = False
    last_enrolment_year: int | None = None
    last_rebuilt_year: int | None = None
    generation_year: int | None = None
    years: Mapping[int, YearTotals] = field(default_factory=dict)
    units: Mapping[UnitKey, CourseUnit] = field(default_factory=dict)
    held: tuple[HeldResult, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.balance is not None


@dataclass(frozen=True, slots=True)
class Policy:
    """Settings the rules take from configuration."""

    low_balance_thresholds: tuple[int, ...] = (60 * QUARTERS_PER_CREDIT,)
    result_hold_seconds: float = 604800.0
