"""The input messages of contracts.md: their data models and one full-event model per type.

Validated strictly: a known field of the wrong JSON type is invalid (credits `"6"` is not `6`),
unknown extra fields are ignored.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from learning_account.domain.model import (
    Contract,
    Degree,
    DeregistrationReason,
    ProgrammeKind,
    ResultOutcome,
)
from learning_account.wire.amounts import Credits, to_quarters
from learning_account.wire.envelope import StudentEventEnvelope, WireModel
from learning_account.wire.fields import AcademicYear, Code, StudentId

MAX_COURSE_UNITS: Final = 100
MAX_CORRECTION_REASON_CHARS: Final = 200
MAX_DECISION_REFERENCE_CHARS: Final = 64

# The rules core owns the outcomes; the wire speaks the same values (the core imports nothing back).
Outcome = ResultOutcome

#: The course units an event names: 1-100 codes (each model checks they are distinct).
CourseUnitCodes = Annotated[
    list[Code], Field(min_length=1, max_length=MAX_COURSE_UNITS, examples=[["PSY101"]])
]

# --- Input data ---------------------------------------------------------------------------------


class Programme(WireModel):
    code: Code = Field(description="The institution's programme code", examples=["BA-PSY"])
    kind: ProgrammeKind = Field(description="Kind of programme", examples=["bachelor"])


class CourseUnit(WireModel):
    code: Code = Field(
        description="Course unit code, distinct within the event", examples=["PSY101"]
    )
    credits: Credits = Field(
        description="Credits: a positive multiple of 0.5, at most 60", examples=[6, 2.5]
    )
    starts_on: date | None = Field(
        default=None,
        description="First day of the course unit; needed unless `border_date` is given",
        examples=["2016-09-26"],
    )
    first_term_of_first_track: bool = Field(
        default=False,
        description=(
            "Unit of the first partial track starting in the first period or semester "
            "(border date starts_on + 28 days instead of + 14)"
        ),
        examples=[False],
    )
    border_date: date | None = Field(
        default=None,
        description="Deregistration before this date refunds the unit; derived when null",
        examples=[None, "2016-10-10"],
    )

    @model_validator(mode="after")
    def _has_a_date(self) -> CourseUnit:
        if self.starts_on is None and self.border_date is None:
            raise PydanticCustomError(
                "course_unit_dates", "a course unit needs starts_on or border_date"
            )
        return self

    @property
    def credits_quarters(self) -> int:
        """The unit's credits as integer quarter-credits (6 -> 24)."""
        return to_quarters(self.credits)


def _distinct(codes: list[str], what: str) -> None:
    if len(set(codes)) != len(codes):
        raise PydanticCustomError(
            "duplicate_codes", "{what} must have distinct codes", {"what": what}
        )


class CourseUnitsRegistered(WireModel):
    """A student registers, in one programme and academic year, for one or more course units."""

    student_id: StudentId
    academic_year: AcademicYear
    programme: Programme
    contract: Contract = Field(description="Contract type", examples=["diploma"])
    registered_on: date = Field(description="Registration date", examples=["2016-09-20"])
    exceptional_admission: bool = Field(
        default=False,
        description="Admitted by exception despite an exhausted learning account",
        examples=[False],
    )
    generation_student: bool | None = Field(
        default=None,
        description="Generation student this year; null lets the service derive it",
        examples=[None],
    )
    course_units: list[CourseUnit] = Field(
        min_length=1, max_length=MAX_COURSE_UNITS, description="1-100 units with distinct codes"
    )

    @model_validator(mode="after")
    def _distinct_units(self) -> CourseUnitsRegistered:
        _distinct([unit.code for unit in self.course_units], "course_units")
        return self

    @property
    def credits_quarters(self) -> int:
        """Sum of the units' credits in integer quarter-credits."""
        return sum(unit.credits_quarters for unit in self.course_units)


class ExamResultRecorded(WireModel):
    """The final result of one registered course unit in one academic year."""

    student_id: StudentId
    academic_year: AcademicYear
    course_unit_code: Code = Field(examples=["PSY101"])
    outcome: Outcome = Field(description="`passed` earns a credit certificate", examples=["passed"])
    recorded_on: date = Field(examples=["2017-02-10"])


class ExamResultCorrected(WireModel):
    """A recorded final result replaced by the institution (rules.md R3.7)."""

    student_id: StudentId
    academic_year: AcademicYear
    course_unit_code: Code = Field(examples=["PSY101"])
    outcome: Outcome = Field(
        description="The outcome replacing the recorded one", examples=["passed"]
    )
    corrected_on: date = Field(examples=["2017-03-02"])
    reason: Annotated[str, StringConstraints(max_length=MAX_CORRECTION_REASON_CHARS)] | None = (
        Field(
            default=None,
            description="Why the result was corrected: free text, at most 200 characters",
            examples=["appeal upheld"],
        )
    )


class CreditsRestored(WireModel):
    """Force majeure (rules.md R3.8): the credits lost on course units of one year come back."""

    student_id: StudentId
    academic_year: AcademicYear
    course_unit_codes: CourseUnitCodes = Field(
        description="1-100 distinct course unit codes of that academic year"
    )
    decided_on: date = Field(examples=["2018-05-14"])
    decision_reference: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_DECISION_REFERENCE_CHARS)
    ] = Field(
        description="The decision's reference, 1-64 characters", examples=["RvStvb-2018-0412"]
    )

    @model_validator(mode="after")
    def _distinct_units(self) -> CreditsRestored:
        _distinct(self.course_unit_codes, "course_unit_codes")
        return self


class DegreeAwarded(WireModel):
    student_id: StudentId
    academic_year: AcademicYear
    degree: Degree = Field(examples=["bachelor"])
    programme_code: Code = Field(examples=["BA-PSY"])
    awarded_on: date = Field(examples=["2019-07-05"])


class CourseUnitsDeregistered(WireModel):
    """Course units of an academic year removed from a student's registration."""

    student_id: StudentId
    academic_year: AcademicYear
    course_unit_codes: CourseUnitCodes = Field(description="1-100 distinct course unit codes")
    deregistered_on: date = Field(examples=["2016-11-20"])
    reason: DeregistrationReason = Field(examples=["programme_change"])
    reenrolled_on: date | None = Field(
        default=None,
        description="Required for `programme_change`; ignored for `withdrawal`",
        examples=["2016-11-25"],
    )
    generation_student: bool | None = Field(
        default=None,
        description="Overrides the registration's or derived generation-student status",
        examples=[None],
    )

    @model_validator(mode="after")
    def _consistent(self) -> CourseUnitsDeregistered:
        _distinct(self.course_unit_codes, "course_unit_codes")
        if self.reason is DeregistrationReason.PROGRAMME_CHANGE and self.reenrolled_on is None:
            raise PydanticCustomError(
                "reenrolled_on_missing", "reason programme_change requires reenrolled_on"
            )
        return self


# --- Full events (envelope + data), one model per type -----------------------------------------


class CourseUnitsRegisteredEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.course-units-registered.v1"]
    data: CourseUnitsRegistered


class ExamResultRecordedEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.exam-result-recorded.v1"]
    data: ExamResultRecorded


class ExamResultCorrectedEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.exam-result-corrected.v1"]
    data: ExamResultCorrected


class CreditsRestoredEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.credits-restored.v1"]
    data: CreditsRestored


class DegreeAwardedEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.degree-awarded.v1"]
    data: DegreeAwarded


class CourseUnitsDeregisteredEvent(StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.course-units-deregistered.v1"]
    data: CourseUnitsDeregistered


InputEvent = (
    CourseUnitsRegisteredEvent
    | ExamResultRecordedEvent
    | ExamResultCorrectedEvent
    | CreditsRestoredEvent
    | DegreeAwardedEvent
    | CourseUnitsDeregisteredEvent
)

InputData = (
    CourseUnitsRegistered
    | ExamResultRecorded
    | ExamResultCorrected
    | CreditsRestored
    | DegreeAwarded
    | CourseUnitsDeregistered
)
