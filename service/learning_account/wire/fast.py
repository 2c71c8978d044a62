"""The hot path's reader of input messages: msgspec structs mirroring the input models.

It accepts only what the pydantic models of `wire.inputs` accept, and reads it into the same
values; anything it does not accept goes to those models, which give the verdict and its reason
(`wire.decode`). So it may be stricter than the contract, never looser (tests/unit/
test_fast_decode.py checks both on the bench's load and on mutated records). The pydantic models
stay the documented contract: schemas, AsyncAPI and `contracts/` come from them alone.
"""

from __future__ import annotations

import re
import string
from datetime import date, datetime
from typing import Annotated, ClassVar, Final, Literal

import msgspec

from learning_account.domain.model import (
    Contract,
    Degree,
    DeregistrationReason,
    ProgrammeKind,
    ResultOutcome,
)
from learning_account.domain.numbers import credits_number
from learning_account.wire.fields import (
    FIRST_ACADEMIC_YEAR,
    MAX_EVENT_ID_CHARS,
    MAX_EVENT_SOURCE_CHARS,
    MAX_STUDENT_ID_CHARS,
)
from learning_account.wire.inputs import (
    MAX_CORRECTION_REASON_CHARS,
    MAX_COURSE_UNITS,
    MAX_DECISION_REFERENCE_CHARS,
)
from learning_account.wire.topics import (
    COURSE_UNITS_DEREGISTERED_TYPE,
    COURSE_UNITS_REGISTERED_TYPE,
    CREDITS_RESTORED_TYPE,
    DEGREE_AWARDED_TYPE,
    EXAM_RESULT_CORRECTED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
)

StudentId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STUDENT_ID_CHARS)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
CourseUnitCodes = Annotated[list[Code], msgspec.Meta(min_length=1, max_length=MAX_COURSE_UNITS)]

# The student id's and academic year's patterns are checked in `read_input`: msgspec's `pattern`
# costs a call into `re` per field.
_STUDENT_ID_CHARS: Final = string.ascii_letters + string.digits + "._-"

#: The quarter-credits of every valid credit value (0.5 .. 60), keyed by its JSON number.
_QUARTERS_BY_NUMBER: Final[dict[float, int]] = {halves / 2: halves * 2 for halves in range(1, 121)}


_MOST_BRACKETS: Final = 150
_MOST_DIGITS: Final = 4000
_LONG_DIGITS: Final = re.compile(b"[0-9]{%d}" % (_MOST_DIGITS + 1))


class _Struct(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Unknown fields are ignored, as by the models; defaults are left out when encoded, as
    `canonical_content` leaves them out."""


class Programme(_Struct):
    code: Code
    kind: ProgrammeKind


class CourseUnit(_Struct):
    code: Code
    credits: int | float
    starts_on: date | None = None
    first_term_of_first_track: bool = False
    border_date: date | None = None

    def __post_init__(self) -> None:
        if type(self.credits) not in (int, float) or self.credits not in _QUARTERS_BY_NUMBER:
            raise ValueError("credits")
        # as the contract writes them, so `6.0` and `6` encode alike
        self.credits = credits_number(_QUARTERS_BY_NUMBER[self.credits])
        if self.starts_on is None and self.border_date is None:
            raise ValueError("dates")

    @property
    def credits_quarters(self) -> int:
        return _QUARTERS_BY_NUMBER[self.credits]


def _distinct(codes: list[str]) -> None:
    if len(set(codes)) != len(codes):
        raise ValueError("duplicate codes")


class CourseUnitsRegistered(_Struct):
    student_id: StudentId
    academic_year: str
    programme: Programme
    contract: Contract
    registered_on: date
    course_units: Annotated[list[CourseUnit], msgspec.Meta(min_length=1, max_length=100)]
    exceptional_admission: bool = False
    generation_student: bool | None = None

    def __post_init__(self) -> None:
        _distinct([unit.code for unit in self.course_units])


class ExamResultRecorded(_Struct):
    student_id: StudentId
    academic_year: str
    course_unit_code: Code
    outcome: ResultOutcome
    recorded_on: date


class ExamResultCorrected(_Struct):
    student_id: StudentId
    academic_year: str
    course_unit_code: Code
    outcome: ResultOutcome
    corrected_on: date
    reason: Annotated[str, msgspec.Meta(max_length=MAX_CORRECTION_REASON_CHARS)] | None = None


class CreditsRestored(_Struct):
    student_id: StudentId
    academic_year: str
    course_unit_codes: CourseUnitCodes
    decided_on: date
    decision_reference: Annotated[
        str, msgspec.Meta(min_length=1, max_length=MAX_DECISION_REFERENCE_CHARS)
    ]

    def __post_init__(self) -> None:
        _distinct(self.course_unit_codes)


class DegreeAwarded(_Struct):
    student_id: StudentId
    academic_year: str
    degree: Degree
    programme_code: Code
    awarded_on: date


class CourseUnitsDeregistered(_Struct):
    student_id: StudentId
    academic_year: str
    course_unit_codes: CourseUnitCodes
    deregistered_on: date
    reason: DeregistrationReason
    reenrolled_on: date | None = None
    generation_student: bool | None = None

    def __post_init__(self) -> None:
        _distinct(self.course_unit_codes)
        if self.reason is DeregistrationReason.PROGRAMME_CHANGE and self.reenrolled_on is None:
            raise ValueError("reenrolled_on")


FastData = (
    CourseUnitsRegistered
    | ExamResultRecorded
    | ExamResultCorrected
    | CreditsRestored
    | DegreeAwarded
    | CourseUnitsDeregistered
)


class FastEvent(_Struct, kw_only=True, tag_field="type"):
    """An input message the fast reader accepted: its attributes and its data."""

    specversion: Literal["1.0"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_SOURCE_CHARS)]
    subject: StudentId
    time: datetime | None = None
    datacontenttype: str | None = None
    traceparent: str | None = None
    data: FastData

    type: ClassVar[str]


class _Registered(FastEvent, tag=COURSE_UNITS_REGISTERED_TYPE):
    type = COURSE_UNITS_REGISTERED_TYPE
    data: CourseUnitsRegistered


class _Recorded(FastEvent, tag=EXAM_RESULT_RECORDED_TYPE):
    type = EXAM_RESULT_RECORDED_TYPE
    data: ExamResultRecorded


class _Corrected(FastEvent, tag=EXAM_RESULT_CORRECTED_TYPE):
    type = EXAM_RESULT_CORRECTED_TYPE
    data: ExamResultCorrected


class _Restored(FastEvent, tag=CREDITS_RESTORED_TYPE):
    type = CREDITS_RESTORED_TYPE
    data: CreditsRestored


class _Awarded(FastEvent, tag=DEGREE_AWARDED_TYPE):
    type = DEGREE_AWARDED_TYPE
    data: DegreeAwarded


class _Deregistered(FastEvent, tag=COURSE_UNITS_DEREGISTERED_TYPE):
    type = COURSE_UNITS_DEREGISTERED_TYPE
    data: CourseUnitsDeregistered


_DECODER: Final[msgspec.json.Decoder[FastEvent]] = msgspec.json.Decoder(
    _Registered | _Recorded | _Corrected | _Restored | _Awarded | _Deregistered
)
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def read_input(message: bytes, latest_year: int) -> FastEvent | None:
    """`message` read as an input event if the models would accept it as one, naming academic
    years up to `latest_year`; None for anything else (the models then say why)."""
    if _beyond_the_models_parser(message):
        return None
    try:
        event = _DECODER.decode(message)
    except msgspec.DecodeError:  # a ValidationError is one too
        return None
    data = event.data
    student_id = event.subject
    if student_id != data.student_id or student_id.strip(_STUDENT_ID_CHARS):
        return None
    year = data.academic_year
    if not (len(year) == 9 and year.isascii() and year[4] == "-"):
        return None
    first, second = year[:4], year[5:]
    if not (first.isdigit() and second.isdigit() and int(second) == int(first) + 1):
        return None
    if not FIRST_ACADEMIC_YEAR <= int(first) <= latest_year:
        return None
    # msgspec reads a subset of the times the models read, but also times without an offset
    if event.time is not None and event.time.tzinfo is None:
        return None
    return event


def _beyond_the_models_parser(message: bytes) -> bool:
    # What msgspec skips in an unknown field and the models' JSON parser refuses: nesting over
    # 200 deep, integers over 4300 digits. A message with few brackets, or short, holds neither.
    return message.count(b"{") + message.count(b"[") > _MOST_BRACKETS or (
        len(message) > _MOST_DIGITS and _LONG_DIGITS.search(message) is not None
    )


def content(event: FastEvent) -> bytes:
    """The event's `{"type", "data"}` as `canonical_content` writes it for the models: keys
    sorted, defaults left out, dates and enums as text, credits as the contract writes them."""
    return _ENCODER.encode({"data": event.data, "type": event.type})
