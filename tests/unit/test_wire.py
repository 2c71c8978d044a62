"""The wire contract (contracts.md): what `decode` accepts and what it refuses, and why."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import pytest

from learning_account import wire
from learning_account.wire import InvalidMessage, decode
from learning_account_dev import events as ev
from support.decoders import both_readers_checked  # noqa: F401

# every message these tests decode is read by the fast reader and the models, which must agree
pytestmark = pytest.mark.usefixtures("both_readers_checked")


def registration(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "student_id": "r0123456",
        "academic_year": "2016-2017",
        "programme": {"code": "BA-PSY", "kind": "bachelor"},
        "contract": "diploma",
        "registered_on": "2016-09-20",
        "exceptional_admission": False,
        "generation_student": None,
        "course_units": [
            {
                "code": "PSY101",
                "credits": 6,
                "starts_on": "2016-09-26",
                "first_term_of_first_track": False,
                "border_date": None,
            }
        ],
    }
    data.update(data_changes)
    return envelope(wire.COURSE_UNITS_REGISTERED_TYPE, data)


def exam_result(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "student_id": "r0123456",
        "academic_year": "2016-2017",
        "course_unit_code": "PSY101",
        "outcome": "passed",
        "recorded_on": "2017-02-10",
    }
    data.update(data_changes)
    return envelope(wire.EXAM_RESULT_RECORDED_TYPE, data)


def degree_awarded(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "student_id": "r0123456",
        "academic_year": "2018-2019",
        "degree": "bachelor",
        "programme_code": "BA-PSY",
        "awarded_on": "2019-07-05",
    }
    data.update(data_changes)
    return envelope(wire.DEGREE_AWARDED_TYPE, data)


def deregistration(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "student_id": "r0123456",
        "academic_year": "2016-2017",
        "course_unit_codes": ["PSY101"],
        "deregistered_on": "2016-11-20",
        "reason": "programme_change",
        "reenrolled_on": "2016-11-25",
        "generation_student": None,
    }
    data.update(data_changes)
    return envelope(wire.COURSE_UNITS_DEREGISTERED_TYPE, data)


def envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10",
        "source": "urn:institution:kuleuven:sis",
        "type": event_type,
        "time": "2016-09-20T09:12:00Z",
        "subject": data.get("student_id"),
        "datacontenttype": "application/json",
        "data": data,
    }


def unit(code: str = "PSY101", **changes: Any) -> dict[str, Any]:
    course_unit: dict[str, Any] = {"code": code, "credits": 6, "starts_on": "2016-09-26"}
    course_unit.update(changes)
    return course_unit


def encode(message: Any) -> bytes:
    return json.dumps(message).encode()


def decode_registration(message: Any) -> wire.DecodedEvent:
    return decode(wire.REGISTRATIONS_TOPIC, encode(message), b"r0123456")


def reason_for(topic: str, value: bytes | None) -> str:
    with pytest.raises(InvalidMessage) as refused:
        decode(topic, value, None)
    return refused.value.reason


def registration_reason(message: Any) -> str:
    return reason_for(wire.REGISTRATIONS_TOPIC, encode(message))


# --- valid messages -----------------------------------------------------------------------------


def test_decodes_a_registration_into_envelope_fields_and_typed_data() -> None:
    decoded = decode_registration(registration())

    assert decoded.topic == wire.REGISTRATIONS_TOPIC
    assert decoded.source == "urn:institution:kuleuven:sis"
    assert decoded.id == "7f1c2e4a-1f7e-4a53-9c55-0d6a3c1c2b10"
    assert decoded.type == wire.COURSE_UNITS_REGISTERED_TYPE
    assert decoded.subject == "r0123456"
    assert decoded.time == datetime(2016, 9, 20, 9, 12, tzinfo=UTC)
    assert decoded.key == b"r0123456"
    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert decoded.data.programme.kind is wire.ProgrammeKind.BACHELOR
    assert decoded.data.contract is wire.Contract.DIPLOMA
    assert decoded.data.course_units[0].credits_quarters == 24
    assert decoded.data.credits_quarters == 24


def test_decodes_exam_results_and_degrees_on_the_exam_results_topic() -> None:
    result = decode(wire.EXAM_RESULTS_TOPIC, encode(exam_result()), None)
    degree = decode(wire.EXAM_RESULTS_TOPIC, encode(degree_awarded()), None)

    assert isinstance(result.data, wire.ExamResultRecorded)
    assert result.data.outcome is wire.Outcome.PASSED
    assert isinstance(degree.data, wire.DegreeAwarded)
    assert degree.data.degree is wire.Degree.BACHELOR


def test_decodes_a_deregistration() -> None:
    decoded = decode(wire.DEREGISTRATIONS_TOPIC, encode(deregistration()), None)

    assert isinstance(decoded.data, wire.CourseUnitsDeregistered)
    assert decoded.data.reason is wire.DeregistrationReason.PROGRAMME_CHANGE
    assert decoded.data.course_unit_codes == ["PSY101"]


@pytest.mark.parametrize(
    ("credits", "quarters"), [(6, 24), (6.0, 24), (2.5, 10), (0.5, 2), (60, 240), (1e1, 40)]
)
def test_accepts_credits_as_json_numbers_that_are_multiples_of_half(
    credits: Any, quarters: int
) -> None:
    decoded = decode_registration(registration(course_units=[unit(credits=credits)]))

    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert decoded.data.course_units[0].credits_quarters == quarters
    assert decoded.data.course_units[0].credits == Decimal(quarters) / 4


def test_applies_optional_field_defaults() -> None:
    message = registration(course_units=[unit()])
    del message["data"]["exceptional_admission"]
    del message["data"]["generation_student"]
    del message["time"]
    del message["datacontenttype"]

    decoded = decode_registration(message)

    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert decoded.time is None
    assert decoded.data.exceptional_admission is False
    assert decoded.data.generation_student is None
    assert decoded.data.course_units[0].first_term_of_first_track is False
    assert decoded.data.course_units[0].border_date is None


def test_ignores_unknown_extra_fields_everywhere() -> None:
    message = registration(course_units=[unit(colour="blue")], campus="Leuven")
    message["traceparent"] = "00-abc"
    message["data"]["programme"]["language"] = "nl"

    decoded = decode_registration(message)

    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert not hasattr(decoded.data, "campus")


@pytest.mark.parametrize("student_id", ["r0123456", "a", "A.b_c-9", "x" * 64])
def test_accepts_student_ids_of_allowed_characters(student_id: str) -> None:
    assert decode_registration(registration(student_id=student_id)).subject == student_id


def test_keeps_a_record_key_that_differs_from_the_student_id() -> None:
    decoded = decode(wire.REGISTRATIONS_TOPIC, encode(registration()), b"someone-else")

    assert decoded.key == b"someone-else"
    assert decoded.subject == "r0123456"


def test_accepts_a_course_unit_with_only_a_border_date() -> None:
    decoded = decode_registration(
        registration(course_units=[{"code": "PSY101", "credits": 6, "border_date": "2016-10-10"}])
    )

    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert decoded.data.course_units[0].starts_on is None


def test_accepts_one_hundred_course_units() -> None:
    units = [unit(f"U{number}") for number in range(100)]

    decoded = decode_registration(registration(course_units=units))

    assert isinstance(decoded.data, wire.CourseUnitsRegistered)
    assert len(decoded.data.course_units) == 100


def test_accepts_a_withdrawal_without_reenrolled_on() -> None:
    message = deregistration(reason="withdrawal")
    del message["data"]["reenrolled_on"]

    decoded = decode(wire.DEREGISTRATIONS_TOPIC, encode(message), None)

    assert isinstance(decoded.data, wire.CourseUnitsDeregistered)
    assert decoded.data.reenrolled_on is None


def test_accepts_a_message_of_exactly_one_mebibyte() -> None:
    message = registration()
    message["padding"] = ""
    size = len(encode(message))
    message["padding"] = "x" * (wire.MAX_MESSAGE_BYTES - size)

    assert len(encode(message)) == wire.MAX_MESSAGE_BYTES
    assert decode_registration(message).subject == "r0123456"


# --- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("credits", [0, -6, 2.25, 0.1, 61, 60.5, 1e400])
def test_rejects_credits_not_a_positive_multiple_of_half_up_to_sixty(credits: Any) -> None:
    reason = registration_reason(registration(course_units=[unit(credits=credits)]))

    assert reason.startswith("data invalid: data.course_units.0.credits:")


@pytest.mark.parametrize("credits", ["6", True, False, None, [6], {"value": 6}])
def test_rejects_credits_that_are_not_json_numbers(credits: Any) -> None:
    reason = registration_reason(registration(course_units=[unit(credits=credits)]))

    assert reason.startswith("data invalid: data.course_units.0.credits:")


def test_rejects_credits_not_multiple_of_half() -> None:
    reason = registration_reason(registration(course_units=[unit(credits=2.25)]))

    assert "multiple of 0.5" in reason


def test_rejects_credits_given_as_a_string() -> None:
    assert "JSON number" in registration_reason(registration(course_units=[unit(credits="6")]))


# --- identifiers and years ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "student_id", ["", "x" * 65, "r 0123456", "r0123456é", "r/0123456", "r0123456\n", 123456]
)
def test_rejects_student_ids_outside_the_allowed_characters(student_id: Any) -> None:
    message = registration(student_id=student_id)
    message["subject"] = student_id

    assert registration_reason(message).startswith(("data invalid", "envelope invalid"))


def test_rejects_a_subject_that_differs_from_the_student_id() -> None:
    message = registration()
    message["subject"] = "r7654321"

    reason = registration_reason(message)

    assert reason == "subject 'r7654321' does not equal data.student_id 'r0123456'"


def test_rejects_a_missing_subject() -> None:
    message = registration()
    del message["subject"]

    assert registration_reason(message).startswith("envelope invalid: subject:")


@pytest.mark.parametrize(
    "academic_year",
    ["2016-2018", "2016-2016", "2017-2016", "2016/2017", "16-17", "2016-2017 ", 2016],
)
def test_rejects_academic_years_that_are_not_consecutive_yyyy_yyyy(academic_year: Any) -> None:
    reason = registration_reason(registration(academic_year=academic_year))

    assert reason.startswith("data invalid: data.academic_year:")


def test_rejects_an_empty_course_unit_code() -> None:
    reason = registration_reason(registration(course_units=[unit("")]))

    assert reason.startswith("data invalid: data.course_units.0.code:")


# --- course units -------------------------------------------------------------------------------


def test_rejects_a_registration_without_course_units() -> None:
    reason = registration_reason(registration(course_units=[]))

    assert reason.startswith("data invalid: data.course_units:")


def test_rejects_more_than_one_hundred_course_units() -> None:
    units = [unit(f"U{number}") for number in range(101)]

    assert registration_reason(registration(course_units=units)).startswith(
        "data invalid: data.course_units:"
    )


def test_rejects_duplicate_course_unit_codes() -> None:
    reason = registration_reason(registration(course_units=[unit("PSY101"), unit("PSY101")]))

    assert reason == "data invalid: data: course_units must have distinct codes"


def test_rejects_a_course_unit_without_starts_on_or_border_date() -> None:
    reason = registration_reason(registration(course_units=[{"code": "PSY101", "credits": 6}]))

    assert (
        reason == "data invalid: data.course_units.0: a course unit needs starts_on or border_date"
    )


# --- enums, dates and types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "topic"),
    [
        (registration(programme={"code": "BA-PSY", "kind": "phd"}), wire.REGISTRATIONS_TOPIC),
        (registration(contract="loan"), wire.REGISTRATIONS_TOPIC),
        (registration(contract="Diploma"), wire.REGISTRATIONS_TOPIC),
        (exam_result(outcome="absent"), wire.EXAM_RESULTS_TOPIC),
        (degree_awarded(degree="phd"), wire.EXAM_RESULTS_TOPIC),
        (deregistration(reason="moved"), wire.DEREGISTRATIONS_TOPIC),
    ],
)
def test_rejects_unknown_enum_values(message: dict[str, Any], topic: str) -> None:
    assert reason_for(topic, encode(message)).startswith("data invalid: data.")


@pytest.mark.parametrize(
    "day", ["2016-02-30", "20-09-2016", "2016-9-20", "2016-09-20T00:00:00", "20160920", 20160920]
)
def test_rejects_dates_that_are_not_iso_calendar_dates(day: Any) -> None:
    reason = registration_reason(registration(registered_on=day))

    assert reason.startswith("data invalid: data.registered_on:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exceptional_admission", "false"),
        ("exceptional_admission", 0),
        ("generation_student", 1),
        ("course_units", {"code": "PSY101"}),
        ("programme", "BA-PSY"),
    ],
)
def test_rejects_ill_typed_known_data_fields(field: str, value: Any) -> None:
    assert registration_reason(registration(**{field: value})).startswith(
        f"data invalid: data.{field}"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("specversion", "0.3"),
        ("specversion", 1.0),
        ("id", 5),
        ("id", ""),
        ("source", None),
        ("time", "2016-09-20T09:12:00"),
        ("time", "yesterday"),
        ("datacontenttype", 1),
    ],
)
def test_rejects_invalid_envelope_attributes(field: str, value: Any) -> None:
    message = registration()
    message[field] = value

    assert registration_reason(message).startswith(f"envelope invalid: {field}:")


@pytest.mark.parametrize("field", ["specversion", "id", "source"])
def test_rejects_a_message_missing_a_required_attribute(field: str) -> None:
    message = registration()
    del message[field]

    assert registration_reason(message).startswith(f"envelope invalid: {field}:")


def test_rejects_a_message_without_data() -> None:
    message = registration()
    del message["data"]

    assert registration_reason(message) == "data invalid: data: Field required"


# --- deregistrations ----------------------------------------------------------------------------


def test_rejects_a_programme_change_without_reenrolled_on() -> None:
    message = deregistration(reenrolled_on=None)

    reason = reason_for(wire.DEREGISTRATIONS_TOPIC, encode(message))

    assert reason == "data invalid: data: reason programme_change requires reenrolled_on"


@pytest.mark.parametrize(
    "codes", [[], ["PSY101", "PSY101"], [f"U{number}" for number in range(101)], "PSY101"]
)
def test_rejects_deregistered_codes_that_are_empty_duplicated_too_many_or_not_a_list(
    codes: Any,
) -> None:
    reason = reason_for(wire.DEREGISTRATIONS_TOPIC, encode(deregistration(course_unit_codes=codes)))

    assert reason.startswith("data invalid: data")


# --- type and topic -----------------------------------------------------------------------------


def test_rejects_an_unknown_type() -> None:
    message = registration()
    message["type"] = "be.flanders.learning-account.course-units-registered.v9"

    assert registration_reason(message) == (
        "unknown event type 'be.flanders.learning-account.course-units-registered.v9'"
    )


@pytest.mark.parametrize("event_type", [None, 5])
def test_rejects_a_missing_or_non_string_type(event_type: Any) -> None:
    message = registration()
    message["type"] = event_type
    if event_type is None:
        del message["type"]

    assert registration_reason(message).startswith(("envelope invalid", "unknown event type"))


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        (wire.EXAM_RESULTS_TOPIC, registration()),
        (wire.REGISTRATIONS_TOPIC, exam_result()),
        (wire.DEREGISTRATIONS_TOPIC, degree_awarded()),
        (wire.REGISTRATIONS_TOPIC, deregistration()),
    ],
)
def test_rejects_a_type_that_does_not_belong_on_the_topic(
    topic: str, message: dict[str, Any]
) -> None:
    reason = reason_for(topic, encode(message))

    assert reason == f"type {message['type']!r} does not belong on topic {topic!r}"


def test_reports_the_wrong_topic_even_when_the_data_is_invalid() -> None:
    message = exam_result(outcome="absent")

    reason = reason_for(wire.REGISTRATIONS_TOPIC, encode(message))

    assert "does not belong on topic" in reason


def test_rejects_an_output_event_on_an_input_topic() -> None:
    balance_changed = copy.deepcopy(registration())
    balance_changed["type"] = wire.BALANCE_CHANGED_TYPE

    assert "does not belong on topic" in registration_reason(balance_changed)


def test_rejects_a_record_from_an_unknown_topic() -> None:
    assert reason_for("learning-account.other.v1", encode(registration())) == (
        "unknown topic 'learning-account.other.v1'"
    )


# --- bytes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b""])
def test_rejects_an_empty_message(value: bytes | None) -> None:
    assert reason_for(wire.REGISTRATIONS_TOPIC, value) == "empty message"


def test_rejects_a_message_over_one_mebibyte() -> None:
    message = registration()
    message["padding"] = "x" * wire.MAX_MESSAGE_BYTES

    reason = registration_reason(message)

    assert reason.startswith("message of ") and reason.endswith("bytes is over 1 MiB")


def test_rejects_bytes_that_are_not_utf8() -> None:
    value = encode(registration()).replace(b"PSY101", b"PSY\xff01")

    assert reason_for(wire.REGISTRATIONS_TOPIC, value).startswith("not UTF-8")


@pytest.mark.parametrize("value", [b"nope", b"{", b'{"specversion": "1.0",}', b"\xef\xbb\xbf{}"])
def test_rejects_text_that_is_not_json(value: bytes) -> None:
    assert reason_for(wire.REGISTRATIONS_TOPIC, value).startswith("not JSON")


@pytest.mark.parametrize("value", [b"[]", b'"r0123456"', b"5", b"null", b"true"])
def test_rejects_json_that_is_not_an_object(value: bytes) -> None:
    assert reason_for(wire.REGISTRATIONS_TOPIC, value) == "not a JSON object"


def test_refusal_reason_is_short_and_does_not_echo_the_payload() -> None:
    message = registration()
    message["type"] = "t" * 10_000

    reason = registration_reason(message)

    assert len(reason) <= wire.MAX_REASON_CHARS
    assert "t" * 200 not in reason


def test_invalid_message_caps_any_reason() -> None:
    assert len(InvalidMessage("x" * 5_000).reason) == wire.MAX_REASON_CHARS


def test_counts_further_errors_in_the_reason() -> None:
    reason = registration_reason(registration(contract="loan", registered_on="never"))

    assert reason.endswith("(and 1 more)")


# --- quarters and output models -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "quarters"),
    [(Decimal("6"), 24), (Decimal("2.5"), 10), (Decimal("-1.25"), -5), (Decimal("0"), 0)],
)
def test_converts_credits_to_and_from_integer_quarters(credits: Decimal, quarters: int) -> None:
    assert wire.to_quarters(credits) == quarters
    assert wire.from_quarters(quarters) == credits


def test_refuses_to_convert_credits_that_are_not_whole_quarters() -> None:
    with pytest.raises(ValueError, match=r"not a multiple of 0\.25"):
        wire.to_quarters(Decimal("0.1"))


def test_writes_output_amounts_as_json_numbers_without_trailing_zero() -> None:
    caused_by = wire.CausedBy(source="urn:institution:kuleuven:sis", id="e1", type="t")
    event = wire.BalanceChangedEvent(
        id="o1",
        subject="r0123456",
        data=wire.BalanceChanged(
            student_id="r0123456",
            academic_year="2016-2017",
            previous_balance=wire.from_quarters(536),
            balance=wire.from_quarters(541),
            delta=wire.from_quarters(5),
            entries=[
                wire.Entry(
                    kind=wire.EntryKind.ACQUIRED,
                    amount=wire.from_quarters(5),
                    course_unit_code="PSY101",
                    academic_year="2016-2017",
                )
            ],
            uncovered_credits=Decimal(0),
            additional_fee=False,
            caused_by=caused_by,
        ),
    )

    data = json.loads(event.model_dump_json())["data"]

    assert event.source == wire.SERVICE_SOURCE
    assert data["previous_balance"] == 134 and isinstance(data["previous_balance"], int)
    assert data["balance"] == 135.25
    assert data["entries"][0]["amount"] == 1.25
    assert '"uncovered_credits":0,' in event.model_dump_json()


def test_output_amounts_must_be_multiples_of_a_quarter() -> None:
    with pytest.raises(ValueError, match=r"multiple of 0\.25"):
        wire.Entry.model_validate_json(
            '{"kind": "bonus", "amount": 0.1, "academic_year": "2016-2017"}'
        )


def test_every_event_model_carries_its_type_and_belongs_to_one_topic() -> None:
    assert set(wire.EVENT_MODELS) == set(wire.INPUT_TYPES) | set(wire.OUTPUT_TYPES)
    for event_type, model in wire.EVENT_MODELS.items():
        assert get_args(model.model_fields["type"].annotation) == (event_type,)
        assert event_type in wire.TOPIC_TYPES[wire.TYPE_TOPIC[event_type]]
    assert set(wire.TOPIC_TYPES) == set(wire.INPUT_TOPICS) | set(wire.OUTPUT_TOPICS)


def test_names_topics_and_types_as_the_contract_does() -> None:
    assert wire.INPUT_TOPICS == (
        "learning-account.registrations.v1",
        "learning-account.exam-results.v1",
        "learning-account.deregistrations.v1",
    )
    assert wire.OUTPUT_TOPICS == (
        "learning-account.balance-changed.v1",
        "learning-account.credit-exhausted.v1",
        "learning-account.credit-low.v1",
        "learning-account.rejections.v1",
        "learning-account.dead-letter.v1",
    )
    assert wire.TOPIC_TYPES["learning-account.exam-results.v1"] == {
        "be.flanders.learning-account.exam-result-recorded.v1",
        "be.flanders.learning-account.exam-result-corrected.v1",
        "be.flanders.learning-account.credits-restored.v1",
        "be.flanders.learning-account.degree-awarded.v1",
    }
    assert wire.short_name(wire.DEAD_LETTERED_TYPE) == "dead-lettered"


def test_lists_exhaustion_options_and_rejection_reasons_of_the_contract() -> None:
    assert [option.value for option in wire.EXHAUSTION_OPTIONS] == [
        "first_master_programme",
        "preparatory_programme",
        "bachelor_after_bachelor",
        "master_after_master",
        "examination_contract",
        "exceptional_admission",
    ]
    assert wire.REJECTION_REASONS == (
        "insufficient_learning_credit",
        "already_registered",
        "not_registered",
        "result_already_recorded",
        "unknown_registration",
        "no_result_to_correct",
        "nothing_to_restore",
        "id_conflict",
    )


# --- corrections and restorations (R3.7, R3.8) --------------------------------------------------


def _decode_event(event: dict[str, Any], topic: str = wire.EXAM_RESULTS_TOPIC) -> Any:
    return wire.decode(topic, json.dumps(event).encode(), b"r0123456")


def test_correction_and_restoration_decode_on_the_exam_results_topic() -> None:
    correction = ev.exam_result_correction("r0123456", 2016, "PSY101", "failed", reason=None)
    restoration = ev.credits_restoration("r0123456", 2016, ["PSY101", "PSY102"])
    decoded = _decode_event(correction)
    assert (decoded.data.outcome, decoded.data.reason) == ("failed", None)
    assert _decode_event(restoration).data.course_unit_codes == ["PSY101", "PSY102"]
    for event in (correction, restoration):
        with pytest.raises(wire.InvalidMessage, match="does not belong on topic"):
            _decode_event(event, wire.REGISTRATIONS_TOPIC)


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("reason", "x" * 200, True),
        ("reason", "x" * 201, False),
        ("outcome", "annulled", False),
        ("corrected_on", None, False),
    ],
)
def test_correction_fields_are_checked(field: str, value: Any, valid: bool) -> None:
    event = ev.exam_result_correction("r0123456", 2016, "PSY101", "passed")
    event["data"][field] = value
    if valid:
        _decode_event(event)
    else:
        with pytest.raises(wire.InvalidMessage, match=f"data invalid: data.{field}"):
            _decode_event(event)


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("course_unit_codes", [], False),
        ("course_unit_codes", ["A", "A"], False),
        ("course_unit_codes", [f"U{i}" for i in range(100)], True),
        ("course_unit_codes", [f"U{i}" for i in range(101)], False),
        ("decision_reference", "", False),
        ("decision_reference", "R" * 64, True),
        ("decision_reference", "R" * 65, False),
        ("decided_on", "2018-13-01", False),
    ],
)
def test_restoration_fields_are_checked(field: str, value: Any, valid: bool) -> None:
    event = ev.credits_restoration("r0123456", 2016, ["PSY101"])
    event["data"][field] = value
    if valid:
        _decode_event(event)
    else:
        with pytest.raises(wire.InvalidMessage, match="data invalid: data"):
            _decode_event(event)
