"""The wire contract (`contracts.md`) as pydantic models, and the one way to read a Kafka record.

Every message is a CloudEvents 1.0 structured-mode JSON object. Input messages are validated
strictly: a known field of the wrong JSON type is invalid (credits `"6"` is not `6`), unknown
extra fields are ignored. The models double as documentation: their descriptions and examples
feed the JSON Schemas in `contracts/` and the AsyncAPI document.

Credits and balances travel as JSON numbers; inside the service they are integer
quarter-credits (`to_quarters` / `from_quarters`), so the core never sees a float.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from learning_account.domain.model import (
    BRUSSELS,
    Contract,
    Degree,
    DeregistrationReason,
    EntryKind,
    ProgrammeKind,
    Refusal,
    ResultOutcome,
    academic_year_of,
    immutable,
)

# --- Topics -------------------------------------------------------------------------------------

REGISTRATIONS_TOPIC: Final = "learning-account.registrations.v1"
EXAM_RESULTS_TOPIC: Final = "learning-account.exam-results.v1"
DEREGISTRATIONS_TOPIC: Final = "learning-account.deregistrations.v1"

BALANCE_CHANGED_TOPIC: Final = "learning-account.balance-changed.v1"
CREDIT_EXHAUSTED_TOPIC: Final = "learning-account.credit-exhausted.v1"
CREDIT_LOW_TOPIC: Final = "learning-account.credit-low.v1"
REJECTIONS_TOPIC: Final = "learning-account.rejections.v1"
DEAD_LETTER_TOPIC: Final = "learning-account.dead-letter.v1"

INPUT_TOPICS: Final = (REGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC, DEREGISTRATIONS_TOPIC)
OUTPUT_TOPICS: Final = (
    BALANCE_CHANGED_TOPIC,
    CREDIT_EXHAUSTED_TOPIC,
    CREDIT_LOW_TOPIC,
    REJECTIONS_TOPIC,
    DEAD_LETTER_TOPIC,
)

# --- Event types --------------------------------------------------------------------------------

TYPE_PREFIX: Final = "be.flanders.learning-account."

COURSE_UNITS_REGISTERED_TYPE: Final = "be.flanders.learning-account.course-units-registered.v1"
EXAM_RESULT_RECORDED_TYPE: Final = "be.flanders.learning-account.exam-result-recorded.v1"
EXAM_RESULT_CORRECTED_TYPE: Final = "be.flanders.learning-account.exam-result-corrected.v1"
CREDITS_RESTORED_TYPE: Final = "be.flanders.learning-account.credits-restored.v1"
DEGREE_AWARDED_TYPE: Final = "be.flanders.learning-account.degree-awarded.v1"
COURSE_UNITS_DEREGISTERED_TYPE: Final = "be.flanders.learning-account.course-units-deregistered.v1"

BALANCE_CHANGED_TYPE: Final = "be.flanders.learning-account.balance-changed.v1"
CREDIT_EXHAUSTED_TYPE: Final = "be.flanders.learning-account.credit-exhausted.v1"
CREDIT_LOW_TYPE: Final = "be.flanders.learning-account.credit-low.v1"
EVENT_REJECTED_TYPE: Final = "be.flanders.learning-account.event-rejected.v1"
DEAD_LETTERED_TYPE: Final = "be.flanders.learning-account.dead-lettered.v1"

INPUT_TYPES: Final = (
    COURSE_UNITS_REGISTERED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
    EXAM_RESULT_CORRECTED_TYPE,
    CREDITS_RESTORED_TYPE,
    DEGREE_AWARDED_TYPE,
    COURSE_UNITS_DEREGISTERED_TYPE,
)
OUTPUT_TYPES: Final = (
    BALANCE_CHANGED_TYPE,
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    EVENT_REJECTED_TYPE,
    DEAD_LETTERED_TYPE,
)

#: Which event types may appear on which topic (contracts.md, "Input topics"/"Output topics").
TOPIC_TYPES: Final[Mapping[str, frozenset[str]]] = {
    REGISTRATIONS_TOPIC: frozenset({COURSE_UNITS_REGISTERED_TYPE}),
    EXAM_RESULTS_TOPIC: frozenset(
        {
            EXAM_RESULT_RECORDED_TYPE,
            EXAM_RESULT_CORRECTED_TYPE,
            CREDITS_RESTORED_TYPE,
            DEGREE_AWARDED_TYPE,
        }
    ),
    DEREGISTRATIONS_TOPIC: frozenset({COURSE_UNITS_DEREGISTERED_TYPE}),
    BALANCE_CHANGED_TOPIC: frozenset({BALANCE_CHANGED_TYPE}),
    CREDIT_EXHAUSTED_TOPIC: frozenset({CREDIT_EXHAUSTED_TYPE}),
    CREDIT_LOW_TOPIC: frozenset({CREDIT_LOW_TYPE}),
    REJECTIONS_TOPIC: frozenset({EVENT_REJECTED_TYPE}),
    DEAD_LETTER_TOPIC: frozenset({DEAD_LETTERED_TYPE}),
}

#: The topic each event type is published on (every type belongs to exactly one topic).
TYPE_TOPIC: Final[Mapping[str, str]] = {
    event_type: topic for topic, types in TOPIC_TYPES.items() for event_type in types
}


def short_name(event_type: str) -> str:
    """`be.flanders.learning-account.balance-changed.v1` -> `balance-changed`."""
    name = event_type.removeprefix(TYPE_PREFIX)
    return re.sub(r"\.v[0-9]+$", "", name)


# --- Other constants ----------------------------------------------------------------------------

SERVICE_SOURCE: Final = "urn:learning-account:service"
SPEC_VERSION: Final = "1.0"
JSON_CONTENT_TYPE: Final = "application/json"
#: The Kafka `content-type` header of a structured-mode CloudEvent (CloudEvents Kafka binding).
CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json; charset=UTF-8"
CONTENT_TYPE_HEADER: Final = "content-type"
#: The headers of a record that carries a structured-mode CloudEvent (every output, and inputs
#: sent by this project's tools).
STRUCTURED_HEADERS: Final = ((CONTENT_TYPE_HEADER, CLOUDEVENTS_CONTENT_TYPE.encode()),)
#: Binary mode: the attributes as headers with this prefix; `data` alone is the record value.
BINARY_HEADER_PREFIX: Final = "ce_"
BINARY_ATTRIBUTES: Final = ("specversion", "id", "source", "type", "subject", "time", "traceparent")

MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_COURSE_UNITS: Final = 100
MAX_CORRECTION_REASON_CHARS: Final = 200
MAX_DECISION_REFERENCE_CHARS: Final = 64
DEAD_LETTER_PAYLOAD_LIMIT: Final = 64 * 1024
#: Readable error text is cut here, so a hostile payload can not bloat a dead letter or a log.
MAX_REASON_CHARS: Final = 500

# --- Enumerations -------------------------------------------------------------------------------


# The rules core owns these; the wire speaks the same values (the core imports nothing back).
Outcome = ResultOutcome
RejectionReason = Refusal


class ExhaustionOption(StrEnum):
    FIRST_MASTER_PROGRAMME = "first_master_programme"
    PREPARATORY_PROGRAMME = "preparatory_programme"
    BACHELOR_AFTER_BACHELOR = "bachelor_after_bachelor"
    MASTER_AFTER_MASTER = "master_after_master"
    EXAMINATION_CONTRACT = "examination_contract"
    EXCEPTIONAL_ADMISSION = "exceptional_admission"


class ErrorCode(StrEnum):
    """Why a message was dead-lettered: stable, for machines and `redrive --error-code`."""

    NOT_JSON = "not_json"
    NOT_UTF8 = "not_utf8"
    TOO_LARGE = "too_large"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    SUBJECT_MISMATCH = "subject_mismatch"
    INVALID_DATA = "invalid_data"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    INTERNAL_ERROR = "internal_error"


#: The `options` of every credit-exhausted event, in the contract's order.
EXHAUSTION_OPTIONS: Final = tuple(ExhaustionOption)
REJECTION_REASONS: Final = tuple(reason.value for reason in RejectionReason)

# --- Field types --------------------------------------------------------------------------------

_STUDENT_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"

StudentId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=_STUDENT_ID_PATTERN),
    Field(
        description="Student id: 1-64 characters of A-Z a-z 0-9 . _ -",
        examples=["r0123456"],
    ),
]

Code = Annotated[str, StringConstraints(min_length=1, max_length=256)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1)]
MAX_EVENT_ID_CHARS: Final = 128
MAX_EVENT_SOURCE_CHARS: Final = 256
EventId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
EventSource = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_SOURCE_CHARS)]


FIRST_ACADEMIC_YEAR: Final = 2008
"""2008-2009, the learning account's first year."""
LAST_ACADEMIC_YEAR: Final = 9998
"""The last year the rules' calendar can compute, whatever a record's timestamp says."""
#: The validation context's key for the latest academic year a message may name.
LATEST_YEAR_CONTEXT: Final = "latest_academic_year"


_FIRST_RECORD_TIME: Final = datetime(FIRST_ACADEMIC_YEAR, 9, 1, tzinfo=BRUSSELS).timestamp()
_LAST_RECORD_TIME: Final = datetime(LAST_ACADEMIC_YEAR + 1, 12, 31, tzinfo=BRUSSELS).timestamp()


def record_time(timestamp_ms: int | None) -> float | None:
    """A record's time in epoch seconds from its timestamp; None (`decode` then takes the
    processing time) when it has none, or one before the learning account began or past the
    calendar (Kafka's -1, a producer stamping seconds or microseconds)."""
    if timestamp_ms is None or not _FIRST_RECORD_TIME <= timestamp_ms / 1000 <= _LAST_RECORD_TIME:
        return None
    return timestamp_ms / 1000


def latest_academic_year(stamped_at: float) -> int:
    """The latest academic year a record stamped at `stamped_at` (epoch seconds, as
    `record_time` gives) may name: one after the academic year of that moment in
    Europe/Brussels (contracts.md)."""
    day = datetime.fromtimestamp(stamped_at, BRUSSELS).date()
    return min(academic_year_of(day) + 1, LAST_ACADEMIC_YEAR)


def _consecutive_years(value: str, info: ValidationInfo) -> str:
    first, second = value.split("-")
    if int(second) != int(first) + 1:
        raise PydanticCustomError(
            "academic_year", "academic year must be two consecutive years, like 2016-2017"
        )
    context = info.context if isinstance(info.context, dict) else {}
    latest = context.get(LATEST_YEAR_CONTEXT)
    if latest is None:
        latest = latest_academic_year(time.time())
    if not FIRST_ACADEMIC_YEAR <= int(first) <= latest:
        raise PydanticCustomError(
            "academic_year",
            "academic year must lie between {first}-{first_end} and {last}-{last_end}"
            " (one year after the academic year of the record's time)",
            {
                "first": FIRST_ACADEMIC_YEAR,
                "first_end": FIRST_ACADEMIC_YEAR + 1,
                "last": latest,
                "last_end": latest + 1,
            },
        )
    return value


AcademicYear = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{4}-[0-9]{4}$"),
    AfterValidator(_consecutive_years),
    Field(
        description=(
            "Academic year as YYYY-YYYY with consecutive years, from 2008-2009 to one year "
            "after the academic year of the record's timestamp (Europe/Brussels)"
        ),
        examples=["2016-2017"],
    ),
]


def _json_number(value: Any) -> Decimal:
    # Strings and booleans are not numbers on this wire, whatever Python would make of them.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("number_type", "must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise PydanticCustomError("number_type", "must be a finite number")
    return number


# Every valid credit value (0.5 .. 60), keyed by its JSON number: a dict hit skips the slow path.
_CREDITS_BY_NUMBER: Final[dict[float, Decimal]] = {
    halves / 2: Decimal(halves) / 2 for halves in range(1, 121)
}


def _course_credits(value: Any) -> Decimal:
    if type(value) is int or type(value) is float:  # not bool, which would hash like 1
        credits = _CREDITS_BY_NUMBER.get(value)
        if credits is not None:
            return credits
    number = _json_number(value)
    if number <= 0 or number > 60 or (number * 2) % 1 != 0:
        raise PydanticCustomError("credits", "credits must be a positive multiple of 0.5 up to 60")
    return number


def _amount(value: Any) -> Decimal:
    number = _json_number(value)
    if (number * 4) % 1 != 0:
        raise PydanticCustomError("amount", "amount must be a multiple of 0.25")
    return number


def _number_for_json(value: Decimal) -> int | float:
    # Whole amounts are written as `6`, not `6.0`; multiples of 0.25 are exact in a float.
    return int(value) if value == value.to_integral_value() else float(value)


Credits = Annotated[
    Decimal,
    PlainValidator(_course_credits),
    PlainSerializer(_number_for_json, when_used="json"),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": 60, "multipleOf": 0.5}),
]

Amount = Annotated[
    Decimal,
    PlainValidator(_amount),
    PlainSerializer(_number_for_json, when_used="json"),
    WithJsonSchema({"type": "number", "multipleOf": 0.25}),
]


def to_quarters(credits: Decimal) -> int:
    """Credits as integer quarter-credits (`Decimal("2.5")` -> 10); exact or ValueError."""
    quarters = credits * 4
    if quarters != quarters.to_integral_value():
        raise ValueError(f"{credits} is not a multiple of 0.25")
    return int(quarters)


def from_quarters(quarters: int) -> Decimal:
    """Integer quarter-credits as credits (10 -> `Decimal("2.5")`), for output models."""
    return Decimal(quarters) / 4


# --- Base models --------------------------------------------------------------------------------


class WireModel(BaseModel):
    """Strict, immutable, forward compatible: ill-typed known fields fail, unknown ones vanish."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class EventEnvelope(WireModel):
    """CloudEvents 1.0 structured-mode attributes shared by every message."""

    specversion: Literal["1.0"] = Field(
        description="CloudEvents specification version", examples=["1.0"]
    )
    id: EventId = Field(
        description=(
            "Event id, unique per source (1-128 characters); the student, `source` and `id` are "
            "the idempotency key"
        ),
        examples=["7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10"],
    )
    source: EventSource = Field(
        description="URI reference of the producing system (1-256 characters)",
        examples=["urn:institution:kuleuven:sis"],
    )
    time: AwareDatetime | None = Field(
        default=None,
        description="When the event happened (RFC 3339, with offset)",
        examples=["2016-09-20T09:12:00Z"],
    )
    datacontenttype: str | None = Field(
        default=None, description="Media type of `data`", examples=[JSON_CONTENT_TYPE]
    )
    traceparent: str | None = Field(
        default=None,
        description=(
            "CloudEvents distributed-tracing extension (W3C trace context). On an input it is "
            "continued; outputs carry the span that applied their input (when tracing is on)."
        ),
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )


class StudentEventEnvelope(EventEnvelope):
    """An event about one student: `subject` is the student id and equals `data.student_id`."""

    subject: StudentId

    @model_validator(mode="after")
    def _subject_is_the_student(self) -> StudentEventEnvelope:
        student_id = getattr(getattr(self, "data", None), "student_id", None)
        if student_id is not None and student_id != self.subject:
            raise PydanticCustomError(
                "subject_mismatch",
                "subject '{subject}' does not equal data.student_id '{student_id}'",
                {"subject": self.subject, "student_id": student_id},
            )
        return self


def _absent(value: object) -> bool:
    return value is None


def _no_default(schema: dict[str, Any]) -> None:
    # an attribute left out has no value on the wire, not a null one
    schema.pop("default", None)


def _now() -> datetime:
    return datetime.now(UTC)


#: W3C trace context `traceparent`: version, trace id, parent span id, flags (lowercase hex).
TRACEPARENT_PATTERN: Final = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class OutputModel(WireModel):
    """Part of what the service publishes, documented as sent.

    Every field is on the wire (null where nullable), except those declared with
    `exclude_if=_absent`: those are left out when they have no value, so their schema is the
    present value's and they are not required.
    """

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class OutputEventEnvelope(OutputModel, EventEnvelope):
    """Envelope of what the service publishes (always JSON, always this source)."""

    specversion: Literal["1.0"] = Field(
        default="1.0", description="CloudEvents specification version", examples=["1.0"]
    )
    source: Literal["urn:learning-account:service"] = Field(
        default=SERVICE_SOURCE,
        description="The learning-account service",
        examples=[SERVICE_SOURCE],
    )
    id: NonEmptyText = Field(
        description=(
            "Derived from the student, the input event's source and id and the output kind, so "
            "a re-published output has the same id: deduplicate on it"
        ),
        examples=["5b0c8f1e-4f55-5a53-8f0e-8a6a2b0f7c11"],
    )
    time: AwareDatetime = Field(
        default_factory=_now,
        description=(
            "When the service produced the event (RFC 3339); a dead letter carries its "
            "record's timestamp"
        ),
        examples=["2017-02-10T14:30:01.000Z"],
    )
    datacontenttype: Literal["application/json"] = Field(
        default=JSON_CONTENT_TYPE, description="Media type of `data`", examples=[JSON_CONTENT_TYPE]
    )
    traceparent: Annotated[
        str | None, WithJsonSchema({"type": "string", "pattern": TRACEPARENT_PATTERN})
    ] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description=(
            "CloudEvents distributed-tracing extension (W3C trace context): the span that "
            "applied the input; present only when tracing is on"
        ),
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )


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
    course_unit_codes: list[Code] = Field(
        min_length=1,
        max_length=MAX_COURSE_UNITS,
        description="1-100 distinct course unit codes of that academic year",
        examples=[["PSY101"]],
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
    course_unit_codes: list[Code] = Field(
        min_length=1,
        max_length=MAX_COURSE_UNITS,
        description="1-100 distinct course unit codes",
        examples=[["PSY101"]],
    )
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


# --- Output data --------------------------------------------------------------------------------


class CausedBy(OutputModel):
    """The input event an output answers."""

    source: EventSource = Field(examples=["urn:institution:kuleuven:sis"])
    id: EventId = Field(examples=["7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10"])
    type: NonEmptyText = Field(examples=[EXAM_RESULT_RECORDED_TYPE])


class Entry(OutputModel):
    """One booking on the account, to one academic year."""

    kind: EntryKind = Field(
        description=(
            "opened (+140), invested (negative), acquired, bonus (both negative for a pass "
            "corrected away), refunded, restored, degree_deduction (-140), rebuilt (one per "
            "rebuilt year)"
        ),
        examples=["acquired"],
    )
    amount: Amount = Field(
        description="Signed credits, a multiple of 0.25", examples=[6, -60, 1.25]
    )
    course_unit_code: Code | None = Field(
        default=None,
        description="The course unit, or null for entries without one (opened, degree, rebuilt)",
        examples=["PSY101", None],
    )
    academic_year: AcademicYear


class BalanceChanged(OutputModel):
    """One per input event that changed the balance."""

    student_id: StudentId
    academic_year: AcademicYear
    previous_balance: Amount = Field(description="0 for an account's first event", examples=[134])
    balance: Amount = Field(description="previous_balance + delta", examples=[146])
    delta: Amount = Field(description="Sum of the entries", examples=[12])
    entries: list[Entry]
    uncovered_credits: Amount = Field(
        description="Registered credits not covered by a positive balance (higher fee)",
        examples=[0],
    )
    additional_fee: bool = Field(
        description="The registration needed an exception (first master, exceptional admission)",
        examples=[False],
    )
    caused_by: CausedBy


class CreditExhausted(OutputModel):
    """The balance went from above 0 to 0 or below."""

    student_id: StudentId
    academic_year: AcademicYear
    balance: Amount = Field(examples=[-8])
    caused_by: CausedBy
    options: list[ExhaustionOption] = Field(
        description="Ways the student can still study",
        examples=[[option.value for option in ExhaustionOption]],
    )


class CreditLow(OutputModel):
    """The balance went from at or above a threshold to below it (one event per threshold)."""

    student_id: StudentId
    academic_year: AcademicYear
    balance: Amount = Field(examples=[56])
    threshold: Amount = Field(examples=[60])
    caused_by: CausedBy


class EventRejected(OutputModel):
    """A valid input event refused by a rule."""

    student_id: StudentId
    reason: RejectionReason = Field(examples=["insufficient_learning_credit"])
    detail: str = Field(description="Human-readable explanation", examples=["balance is -8"])
    caused_by: CausedBy


class DeadLettered(OutputModel):
    """An input message that could not be read or validated."""

    topic: NonEmptyText = Field(examples=[REGISTRATIONS_TOPIC])
    partition: int = Field(ge=0, examples=[0])
    offset: int = Field(ge=0, examples=[42])
    key: str | None = Field(
        description="The record key as text (base64 when not UTF-8); null when it had none",
        examples=["r0123456"],
    )
    error: str = Field(description="Why the message was refused, for people", examples=["not JSON"])
    error_code: ErrorCode = Field(
        description="Why the message was refused, stable for machines", examples=["not_json"]
    )
    payload: str = Field(
        description="The original message as text (base64 when not UTF-8), cut at 64 KiB",
        examples=['{"specversion": "1.0"'],
    )
    payload_encoding: Annotated[
        Literal["base64"] | None, WithJsonSchema({"type": "string", "const": "base64"})
    ] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description='"base64" when the payload was not UTF-8; absent otherwise',
        examples=["base64"],
    )
    payload_truncated: Annotated[
        Literal[True] | None, WithJsonSchema({"type": "boolean", "const": True})
    ] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="true when the message was longer than 64 KiB and `payload` is its start",
        examples=[True],
    )
    headers: Annotated[
        dict[str, str] | None,
        WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
    ] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description=(
            "For a message in binary mode (CloudEvents Kafka binding): its `ce_` and "
            "`content-type` headers, re-published with the payload by a redrive; absent otherwise"
        ),
        examples=[{"ce_specversion": "1.0", "content-type": "application/json"}],
    )


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


class BalanceChangedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.balance-changed.v1"] = BALANCE_CHANGED_TYPE
    data: BalanceChanged


class CreditExhaustedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.credit-exhausted.v1"] = CREDIT_EXHAUSTED_TYPE
    data: CreditExhausted


class CreditLowEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.credit-low.v1"] = CREDIT_LOW_TYPE
    data: CreditLow


class EventRejectedEvent(OutputEventEnvelope, StudentEventEnvelope):
    type: Literal["be.flanders.learning-account.event-rejected.v1"] = EVENT_REJECTED_TYPE
    data: EventRejected


class DeadLetteredEvent(OutputEventEnvelope):
    type: Literal["be.flanders.learning-account.dead-lettered.v1"] = DEAD_LETTERED_TYPE
    subject: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="The record key, when it is UTF-8 text; absent otherwise",
        examples=["r0123456"],
    )
    data: DeadLettered


InputEvent = (
    CourseUnitsRegisteredEvent
    | ExamResultRecordedEvent
    | ExamResultCorrectedEvent
    | CreditsRestoredEvent
    | DegreeAwardedEvent
    | CourseUnitsDeregisteredEvent
)
OutputEvent = (
    BalanceChangedEvent
    | CreditExhaustedEvent
    | CreditLowEvent
    | EventRejectedEvent
    | DeadLetteredEvent
)
Event = InputEvent | OutputEvent

InputData = (
    CourseUnitsRegistered
    | ExamResultRecorded
    | ExamResultCorrected
    | CreditsRestored
    | DegreeAwarded
    | CourseUnitsDeregistered
)
OutputData = BalanceChanged | CreditExhausted | CreditLow | EventRejected | DeadLettered
EventData = InputData | OutputData

#: The full-event model of every event type, inputs first.
EVENT_MODELS: Final[Mapping[str, type[WireModel]]] = {
    COURSE_UNITS_REGISTERED_TYPE: CourseUnitsRegisteredEvent,
    EXAM_RESULT_RECORDED_TYPE: ExamResultRecordedEvent,
    EXAM_RESULT_CORRECTED_TYPE: ExamResultCorrectedEvent,
    CREDITS_RESTORED_TYPE: CreditsRestoredEvent,
    DEGREE_AWARDED_TYPE: DegreeAwardedEvent,
    COURSE_UNITS_DEREGISTERED_TYPE: CourseUnitsDeregisteredEvent,
    BALANCE_CHANGED_TYPE: BalanceChangedEvent,
    CREDIT_EXHAUSTED_TYPE: CreditExhaustedEvent,
    CREDIT_LOW_TYPE: CreditLowEvent,
    EVENT_REJECTED_TYPE: EventRejectedEvent,
    DEAD_LETTERED_TYPE: DeadLetteredEvent,
}

# One JSON parse for everything: the `type` tag picks the model.
_EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(
    Annotated[Event, Field(discriminator="type")]
)

# --- Decoding -----------------------------------------------------------------------------------


class InvalidMessage(ValueError):
    """A record that is not a valid message for its topic; `reason` is short and readable,
    `code` is the dead letter's stable `error_code`."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.INVALID_ENVELOPE) -> None:
        self.reason = _cap(reason)
        self.code = code
        super().__init__(self.reason)


@immutable
class DecodedEvent:
    """A valid message: its CloudEvents attributes, its typed data and the whole model."""

    topic: str
    source: str
    id: str
    type: str
    subject: str | None
    time: datetime | None
    data: EventData
    event: Event
    key: bytes | None


Headers = Sequence[tuple[str, bytes | None]]
"""A record's headers as aiokafka reads them: names as text, values as bytes or null."""


def decode(
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    headers: Headers = (),
    *,
    stamped_at: float | None = None,
) -> DecodedEvent:
    """Validate one Kafka record of `topic`; raise `InvalidMessage` if it is not acceptable.

    A record in binary mode (`binary_attributes`) is validated as the structured message of the
    same event: the same model, the same errors, the same idempotency key. The record key is
    kept but not checked: a key that differs from the student id does not make a message
    invalid (contracts.md). `stamped_at` is the record's time (epoch seconds; None: now), which
    bounds the academic years it may name.
    """
    allowed = TOPIC_TYPES.get(topic)
    if allowed is None:
        raise InvalidMessage(f"unknown topic {_clip(topic)!r}", ErrorCode.WRONG_TOPIC)
    if not value:
        raise InvalidMessage("empty message", ErrorCode.NOT_JSON)
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(value)} bytes is over 1 MiB", ErrorCode.TOO_LARGE)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"not UTF-8 (byte {exc.start})", ErrorCode.NOT_UTF8) from None
    attributes = binary_attributes(headers)
    if attributes is not None:
        value = _structured(attributes, value)
    try:
        latest = latest_academic_year(time.time() if stamped_at is None else stamped_at)
        event = _EVENT_ADAPTER.validate_json(value, context={LATEST_YEAR_CONTEXT: latest})
    except ValidationError as exc:
        reason, code = _describe(exc, topic, allowed)
        if attributes is not None and code is ErrorCode.INVALID_ENVELOPE:
            reason = f"binary mode (ce_ headers): {reason}"
        raise InvalidMessage(reason, code) from None
    if event.type not in allowed:
        raise InvalidMessage(_wrong_topic(event.type, topic), ErrorCode.WRONG_TOPIC)
    return DecodedEvent(
        topic=topic,
        source=event.source,
        id=event.id,
        type=event.type,
        subject=event.subject,
        time=event.time,
        data=event.data,
        event=event,
        key=key,
    )


def binary_attributes(headers: Headers) -> dict[str, str] | None:
    """The CloudEvents attributes of a binary-mode record, None for a structured one.

    Binary: a `ce_specversion` header and a `content-type` that is not
    `application/cloudevents…` (contracts.md, "Kafka binding"). Header values are bytes; one of
    the attributes that is not UTF-8 is an invalid envelope. A header without a value is absent.
    """
    if not headers:
        return None  # the common case, kept cheap: decode is on the hot path
    found = _present(headers)
    if not _is_binary(found):
        return None
    content_type = found.get(CONTENT_TYPE_HEADER, b"")
    attributes: dict[str, str] = {}
    for attribute in BINARY_ATTRIBUTES:
        raw = found.get(BINARY_HEADER_PREFIX + attribute)
        if raw is None:
            continue
        try:
            attributes[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage(
                f"envelope invalid: header {BINARY_HEADER_PREFIX}{attribute} is not UTF-8"
            ) from None
    if content_type:
        try:
            attributes["datacontenttype"] = content_type.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("envelope invalid: header content-type is not UTF-8") from None
    return attributes


def binding_headers(headers: Headers) -> dict[str, str] | None:
    """A binary-mode record's `ce_` and `content-type` headers as text (those that are UTF-8),
    which its dead letter keeps so that a redrive re-publishes the event whole; else None."""
    if not _is_binary(_present(headers)):
        return None
    kept: dict[str, str] = {}
    for name, raw in headers:
        lowered = name.lower()
        if raw is None or not (
            lowered.startswith(BINARY_HEADER_PREFIX) or lowered == CONTENT_TYPE_HEADER
        ):
            continue
        try:
            name.encode("utf-8")  # a name aiokafka could not decode arrives surrogate-escaped
            kept.setdefault(name, raw.decode("utf-8"))
        except UnicodeError:
            continue
    return kept


def _present(headers: Headers) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, raw in headers:
        if raw is not None:
            found.setdefault(name.lower(), raw)
    return found


def _is_binary(found: Mapping[str, bytes]) -> bool:
    content_type = found.get(CONTENT_TYPE_HEADER, b"")
    return f"{BINARY_HEADER_PREFIX}specversion" in found and not content_type.lower().startswith(
        b"application/cloudevents"
    )


def _structured(attributes: Mapping[str, str], data: bytes) -> bytes:
    """The structured-mode message of a binary record: its attributes plus `data`, verbatim."""
    try:
        json.loads(data)  # one JSON value, nothing after it: safe to splice in as `data`
    except ValueError as exc:
        raise InvalidMessage(f"not JSON: {exc}", ErrorCode.NOT_JSON) from None
    envelope = json.dumps(dict(attributes), ensure_ascii=False).encode()
    return envelope[:-1] + b', "data": ' + data + b"}"


def canonical_content(decoded: DecodedEvent) -> bytes:
    """What makes two events with one idempotency key the same event: `type` and the validated
    `data` (unknown fields dropped, defaults left out, so given or defaulted read alike; numbers
    as the contract writes them, so `6` and `6.0` read alike), as JSON with sorted keys."""
    data = decoded.data.model_dump(mode="json", exclude_defaults=True)
    return orjson.dumps({"type": decoded.type, "data": data}, option=orjson.OPT_SORT_KEYS)


def _describe(exc: ValidationError, topic: str, allowed: frozenset[str]) -> tuple[str, ErrorCode]:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    kind, loc = first["type"], first["loc"]
    context = first.get("ctx") or {}
    if kind == "json_invalid":
        return f"not JSON: {context.get('error', first['msg'])}", ErrorCode.NOT_JSON
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        return "not a JSON object", ErrorCode.INVALID_ENVELOPE
    if kind == "union_tag_not_found":
        return "envelope invalid: type: missing or not a string", ErrorCode.INVALID_ENVELOPE
    if kind == "union_tag_invalid":
        tag = _clip(str(context.get("tag", "")))
        return f"unknown event type {tag!r}", ErrorCode.UNKNOWN_TYPE
    tag = str(loc[0]) if loc else ""
    if tag and tag not in allowed:
        return _wrong_topic(tag, topic), ErrorCode.WRONG_TOPIC
    if kind == "subject_mismatch":
        return first["msg"], ErrorCode.SUBJECT_MISMATCH
    path = loc[1:]
    in_data = bool(path) and path[0] == "data"
    where = ".".join(str(step) for step in path) or "(message)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{'data invalid' if in_data else 'envelope invalid'}: {where}: {first['msg']}{more}"
    return text, ErrorCode.INVALID_DATA if in_data else ErrorCode.INVALID_ENVELOPE


def _wrong_topic(event_type: str, topic: str) -> str:
    return f"type {_clip(event_type)!r} does not belong on topic {topic!r}"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap(text: str) -> str:
    return _clip(text, MAX_REASON_CHARS)
