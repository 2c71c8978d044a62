"""The thin edge between the wire and the core: a decoded CloudEvent becomes a command."""

from __future__ import annotations

from learning_account.domain.model import (
    AwardDegree,
    Command,
    CorrectResult,
    Deregister,
    DeregistrationReason,
    EventRef,
    RecordResult,
    Register,
    RestoreCredits,
    UnitRegistration,
    parse_academic_year,
)
from learning_account.wire import (
    CourseUnitsDeregistered,
    CourseUnitsRegistered,
    CreditsRestored,
    DecodedEvent,
    DegreeAwarded,
    ExamResultCorrected,
    ExamResultRecorded,
    InvalidMessage,
    fast,
)


def to_command(decoded: DecodedEvent) -> Command:
    event = EventRef(decoded.source, decoded.id, decoded.type)
    # the fast reading has the models' field names and values (wire.fast)
    checked = decoded.fast is not None
    data = decoded.fast.data if decoded.fast is not None else decoded.data
    match data:
        case fast.CourseUnitsRegistered() | CourseUnitsRegistered():
            return Register(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                programme_code=data.programme.code,
                programme_kind=data.programme.kind,
                contract=data.contract,
                registered_on=data.registered_on,
                units=tuple(
                    UnitRegistration(
                        code=unit.code,
                        credits=unit.credits_quarters,
                        starts_on=unit.starts_on,
                        first_term_of_first_track=unit.first_term_of_first_track,
                        border_date=unit.border_date,
                    )
                    for unit in data.course_units
                ),
                exceptional_admission=data.exceptional_admission,
                generation_student=data.generation_student,
            )
        case fast.ExamResultRecorded() | ExamResultRecorded():
            return RecordResult(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                unit_code=data.course_unit_code,
                outcome=data.outcome,
                recorded_on=data.recorded_on,
            )
        case fast.ExamResultCorrected() | ExamResultCorrected():
            return CorrectResult(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                unit_code=data.course_unit_code,
                outcome=data.outcome,
                corrected_on=data.corrected_on,
            )
        case fast.CreditsRestored() | CreditsRestored():
            return RestoreCredits(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                unit_codes=tuple(data.course_unit_codes),
                decided_on=data.decided_on,
                decision_reference=data.decision_reference,
            )
        case fast.DegreeAwarded() | DegreeAwarded():
            return AwardDegree(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                degree=data.degree,
                programme_code=data.programme_code,
                awarded_on=data.awarded_on,
            )
        case fast.CourseUnitsDeregistered() | CourseUnitsDeregistered():
            return Deregister(
                event=event,
                student_id=data.student_id,
                academic_year=_first_year(data.academic_year, checked),
                unit_codes=tuple(data.course_unit_codes),
                deregistered_on=data.deregistered_on,
                reason=data.reason,
                reenrolled_on=(
                    data.reenrolled_on
                    if data.reason is DeregistrationReason.PROGRAMME_CHANGE
                    else None
                ),
                generation_student=data.generation_student,
            )
    raise InvalidMessage(f"{decoded.type} is not an input event")


def _first_year(academic_year: str, checked: bool) -> int:
    # the fast reader has checked the form (wire.fast.read_input) that parse_academic_year checks
    return int(academic_year[:4]) if checked else parse_academic_year(academic_year)
