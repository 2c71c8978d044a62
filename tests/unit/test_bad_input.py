"""Bad input, one kind per test: `decode` refuses it with a short, readable reason.

Every refusal must name what is wrong (a meaningful substring is checked) without echoing the
whole payload back: reasons end up in dead letters and logs. The last tests push bad records
through the real `Processor` (with Redis) and check the dead letter they become.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    DEAD_LETTER_PAYLOAD_LIMIT,
    DEAD_LETTER_TOPIC,
    DEREGISTRATIONS_TOPIC,
    EXAM_RESULTS_TOPIC,
    MAX_REASON_CHARS,
    REGISTRATIONS_TOPIC,
    DecodedEvent,
    ErrorCode,
    InvalidMessage,
    decode,
)
from learning_account_dev import events as ev
from support.decoders import both_readers_checked  # noqa: F401

# every message these tests decode is read by the fast reader and the models, which must agree
pytestmark = pytest.mark.usefixtures("both_readers_checked")

STUDENT = "r0123456"


# --- helpers ------------------------------------------------------------------------------------


def registration() -> dict[str, Any]:
    return ev.registration(STUDENT, 2016, {"PSY101": 6, "PSY102": 4.5}, event_id="reg-1")


def mutated(base: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> bytes:
    event = copy.deepcopy(base)
    change(event)
    return json.dumps(event).encode()


def refused(topic: str, value: bytes | None, key: bytes | None = STUDENT.encode()) -> str:
    """The reason decode gives for `value`; fails the test if it is accepted or crashes."""
    with pytest.raises(InvalidMessage) as caught:
        decode(topic, value, key)
    reason = caught.value.reason
    assert isinstance(reason, str) and reason.strip(), "the reason must be readable text"
    assert str(caught.value) == reason
    assert len(reason) <= MAX_REASON_CHARS
    if value:
        text = value.decode("utf-8", errors="replace")
        assert text not in reason, "the reason must not repeat the whole payload"
    return reason


def assert_reason(topic: str, value: bytes | None, *fragments: str) -> str:
    reason = refused(topic, value)
    for fragment in fragments:
        assert fragment in reason, f"{fragment!r} not in {reason!r}"
    return reason


def test_the_valid_baseline_is_accepted() -> None:
    # The mutations below break exactly one thing of this event.
    decoded = decode(REGISTRATIONS_TOPIC, ev.to_bytes(registration()), STUDENT.encode())
    assert isinstance(decoded, DecodedEvent)
    assert decoded.subject == STUDENT


# --- not a JSON object --------------------------------------------------------------------------


def test_not_json() -> None:
    assert_reason(REGISTRATIONS_TOPIC, b'{"specversion": "1.0", "id": ', "not JSON")


def test_not_json_at_all() -> None:
    assert_reason(REGISTRATIONS_TOPIC, b"hello, this is plain text", "not JSON")


def test_not_utf8() -> None:
    value = json.dumps(registration()).encode().replace(b"PSY101", b"PSY\xff01")
    assert_reason(REGISTRATIONS_TOPIC, value, "not UTF-8")


def test_latin1_payload_is_not_utf8() -> None:
    assert_reason(REGISTRATIONS_TOPIC, '{"id": "café"}'.encode("latin-1"), "not UTF-8")


@pytest.mark.parametrize(
    "document",
    [[], [registration()], "a string", 42, 4.5, None, True],
    ids=["empty-array", "array", "string", "integer", "float", "null", "boolean"],
)
def test_json_that_is_not_an_object(document: object) -> None:
    assert_reason(REGISTRATIONS_TOPIC, json.dumps(document).encode(), "not a JSON object")


def test_empty_message() -> None:
    assert_reason(REGISTRATIONS_TOPIC, b"", "empty")


def test_none_value_tombstone() -> None:
    assert_reason(REGISTRATIONS_TOPIC, None, "empty")


def test_message_of_several_mib() -> None:
    event = registration()
    event["padding"] = "x" * (3 * 1024 * 1024)  # an unknown field, but far too big
    reason = assert_reason(REGISTRATIONS_TOPIC, ev.to_bytes(event), "1 MiB")
    assert len(reason) < 100


def test_message_just_over_one_mib_is_refused_but_one_mib_is_not_by_size() -> None:
    event = registration()
    event["padding"] = ""
    size = len(ev.to_bytes(event))
    event["padding"] = "x" * (1024 * 1024 - size)
    assert len(ev.to_bytes(event)) == 1024 * 1024
    decode(REGISTRATIONS_TOPIC, ev.to_bytes(event))  # exactly 1 MiB: fine
    event["padding"] += "x"
    assert_reason(REGISTRATIONS_TOPIC, ev.to_bytes(event), "1 MiB")


# --- missing fields and wrong types -------------------------------------------------------------


@pytest.mark.parametrize("field", ["specversion", "id", "source", "subject"])
def test_missing_envelope_field(field: str) -> None:
    value = mutated(registration(), lambda e: e.pop(field))
    assert_reason(REGISTRATIONS_TOPIC, value, field, "required")


def test_missing_type() -> None:
    value = mutated(registration(), lambda e: e.pop("type"))
    assert_reason(REGISTRATIONS_TOPIC, value, "type")


def test_missing_data() -> None:
    value = mutated(registration(), lambda e: e.pop("data"))
    assert_reason(REGISTRATIONS_TOPIC, value, "data", "required")


@pytest.mark.parametrize(
    "field", ["student_id", "academic_year", "programme", "contract", "registered_on"]
)
def test_missing_data_field(field: str) -> None:
    value = mutated(registration(), lambda e: e["data"].pop(field))
    assert_reason(REGISTRATIONS_TOPIC, value, "data invalid", f"data.{field}", "required")


def test_missing_course_unit_credits() -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].pop("credits"))
    assert_reason(REGISTRATIONS_TOPIC, value, "data.course_units.0.credits", "required")


def test_course_unit_without_any_date() -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][1].pop("starts_on"))
    assert_reason(REGISTRATIONS_TOPIC, value, "data.course_units.1", "starts_on or border_date")


@pytest.mark.parametrize("bad", ["6", True, False, None, [6], {"value": 6}], ids=repr)
def test_credits_of_the_wrong_type(bad: object) -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits=bad))
    assert_reason(REGISTRATIONS_TOPIC, value, "data.course_units.0.credits")


def test_credits_as_string_names_the_number() -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits="6"))
    assert_reason(REGISTRATIONS_TOPIC, value, "credits", "number")


def test_credits_as_boolean_names_the_number() -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits=True))
    assert_reason(REGISTRATIONS_TOPIC, value, "credits", "number")


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("data", "exceptional_admission"), "yes"),
        (("data", "exceptional_admission"), 1),
        (("data", "generation_student"), "true"),
        (("data", "registered_on"), 20160920),
        (("data", "registered_on"), "2016-02-30"),
        (("data", "programme"), "BA-PSY"),
        (("data", "course_units"), {"code": "PSY101"}),
        (("data", "student_id"), 123456),
        (("id",), 7),
        (("source",), ["urn:x"]),
        (("time",), "2016-09-20T09:12:00"),
    ],
    ids=lambda part: ".".join(part) if isinstance(part, tuple) else repr(part),
)
def test_known_field_of_the_wrong_type(path: tuple[str, ...], bad: object) -> None:
    def change(event: dict[str, Any]) -> None:
        target = event
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = bad

    if path == ("data", "student_id"):
        reason = refused(REGISTRATIONS_TOPIC, mutated(registration(), change))
        assert "student_id" in reason
        return
    assert_reason(REGISTRATIONS_TOPIC, mutated(registration(), change), path[-1])


def test_unknown_extra_fields_are_not_bad_input() -> None:
    event = registration()
    event["traceparent"] = "00-abc"
    event["data"]["campus"] = "Leuven"
    event["data"]["course_units"][0]["teacher"] = "Dr. X"
    decode(REGISTRATIONS_TOPIC, ev.to_bytes(event))


# --- types and topics ---------------------------------------------------------------------------


def test_unknown_type() -> None:
    value = mutated(registration(), lambda e: e.update(type="be.flanders.something-else.v1"))
    assert_reason(REGISTRATIONS_TOPIC, value, "unknown event type", "something-else")


def test_type_that_is_not_a_string() -> None:
    value = mutated(registration(), lambda e: e.update(type=["x"]))
    assert_reason(REGISTRATIONS_TOPIC, value, "type")


def test_very_long_unknown_type_is_clipped_in_the_reason() -> None:
    long_type = "t" * 10_000
    value = mutated(registration(), lambda e: e.update(type=long_type))
    reason = assert_reason(REGISTRATIONS_TOPIC, value, "unknown event type")
    assert long_type not in reason and len(reason) < 200


def test_registration_on_the_exam_results_topic() -> None:
    assert_reason(
        EXAM_RESULTS_TOPIC,
        ev.to_bytes(registration()),
        "course-units-registered",
        "does not belong on topic",
        EXAM_RESULTS_TOPIC,
    )


def test_exam_result_on_the_registrations_topic() -> None:
    result = ev.exam_result(STUDENT, 2016, "PSY101")
    assert_reason(
        REGISTRATIONS_TOPIC, ev.to_bytes(result), "exam-result-recorded", "does not belong"
    )


def test_ill_typed_event_on_the_wrong_topic_names_the_topic_not_the_field() -> None:
    result = ev.exam_result(STUDENT, 2016, "PSY101")
    result["data"]["outcome"] = "brilliant"
    assert_reason(DEREGISTRATIONS_TOPIC, ev.to_bytes(result), "does not belong on topic")


def test_output_event_type_on_an_input_topic() -> None:
    value = mutated(
        registration(), lambda e: e.update(type="be.flanders.learning-account.balance-changed.v1")
    )
    assert_reason(REGISTRATIONS_TOPIC, value, "balance-changed", "does not belong")


def test_unknown_topic() -> None:
    assert_reason("learning-account.unknown.v1", ev.to_bytes(registration()), "unknown topic")


@pytest.mark.parametrize("version", ["0.3", "1.0.0", "2.0", "1"])
def test_specversion_not_1_0(version: str) -> None:
    value = mutated(registration(), lambda e: e.update(specversion=version))
    assert_reason(REGISTRATIONS_TOPIC, value, "specversion", "1.0")


def test_specversion_as_number() -> None:
    value = mutated(registration(), lambda e: e.update(specversion=1.0))
    assert_reason(REGISTRATIONS_TOPIC, value, "specversion")


def _set_credits(event: dict[str, Any]) -> None:
    event["data"]["course_units"][0]["credits"] = 7.3


@pytest.mark.parametrize(
    ("topic", "value", "code"),
    [
        (REGISTRATIONS_TOPIC, b'{"id": ', ErrorCode.NOT_JSON),
        (REGISTRATIONS_TOPIC, b"", ErrorCode.NOT_JSON),
        (REGISTRATIONS_TOPIC, b'{"id": "\xff"}', ErrorCode.NOT_UTF8),
        (REGISTRATIONS_TOPIC, b" " * (1024 * 1024 + 1), ErrorCode.TOO_LARGE),
        (REGISTRATIONS_TOPIC, b"[]", ErrorCode.INVALID_ENVELOPE),
        (REGISTRATIONS_TOPIC, mutated(registration(), lambda e: e.pop("id")), "invalid_envelope"),
        (REGISTRATIONS_TOPIC, mutated(registration(), lambda e: e.pop("type")), "invalid_envelope"),
        (
            REGISTRATIONS_TOPIC,
            mutated(registration(), lambda e: e.update(type="?")),
            ErrorCode.UNKNOWN_TYPE,
        ),
        (EXAM_RESULTS_TOPIC, ev.to_bytes(registration()), ErrorCode.WRONG_TOPIC),
        ("learning-account.unknown.v1", ev.to_bytes(registration()), ErrorCode.WRONG_TOPIC),
        (
            REGISTRATIONS_TOPIC,
            mutated(registration(), lambda e: e.update(subject="r9999999")),
            ErrorCode.SUBJECT_MISMATCH,
        ),
        (REGISTRATIONS_TOPIC, mutated(registration(), _set_credits), ErrorCode.INVALID_DATA),
    ],
    ids=[
        "not-json",
        "empty",
        "not-utf8",
        "too-large",
        "array",
        "no-id",
        "no-type",
        "unknown-type",
        "wrong-topic",
        "unknown-topic",
        "subject-mismatch",
        "bad-data",
    ],
)
def test_every_refusal_has_its_stable_error_code(topic: str, value: bytes, code: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(topic, value, STUDENT.encode())
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("attribute", "limit"), [("id", 128), ("source", 256)], ids=["id", "source"]
)
def test_an_id_or_source_over_its_length_is_an_invalid_envelope(attribute: str, limit: int) -> None:
    longest = mutated(registration(), lambda e: e.update({attribute: "x" * limit}))
    assert decode(REGISTRATIONS_TOPIC, longest).event.model_dump()[attribute] == "x" * limit
    longer = mutated(registration(), lambda e: e.update({attribute: "x" * (limit + 1)}))
    with pytest.raises(InvalidMessage) as caught:
        decode(REGISTRATIONS_TOPIC, longer)
    assert caught.value.code == ErrorCode.INVALID_ENVELOPE
    assert f"envelope invalid: {attribute}" in caught.value.reason


@pytest.mark.parametrize(
    ("year", "valid"),
    [("2007-2008", False), ("2008-2009", True), ("2031-2032", True), ("2032-2033", False)],
)
def test_academic_years_run_from_2008_2009_to_one_after_the_records(year: str, valid: bool) -> None:
    """A record of 1 January 2031 (academic year 2030-2031) may name up to 2031-2032."""
    stamped_at = datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    value = mutated(registration(), lambda e: e["data"].update(academic_year=year))
    if valid:
        decode(REGISTRATIONS_TOPIC, value, stamped_at=stamped_at)
        return
    with pytest.raises(InvalidMessage) as caught:
        decode(REGISTRATIONS_TOPIC, value, stamped_at=stamped_at)
    assert caught.value.code == ErrorCode.INVALID_DATA
    assert "data.academic_year" in caught.value.reason


def test_the_academic_year_turns_on_1_september_in_brussels() -> None:
    # 31 August 2024 22:30 UTC is already 1 September in Brussels: academic year 2024-2025
    just_turned = datetime(2024, 8, 31, 22, 30, tzinfo=UTC).timestamp()
    value = mutated(registration(), lambda e: e["data"].update(academic_year="2025-2026"))
    decode(REGISTRATIONS_TOPIC, value, stamped_at=just_turned)
    with pytest.raises(InvalidMessage):
        decode(REGISTRATIONS_TOPIC, value, stamped_at=just_turned - 3600)


# --- the student --------------------------------------------------------------------------------


def test_subject_not_matching_the_student_id() -> None:
    value = mutated(registration(), lambda e: e.update(subject="r9999999"))
    assert_reason(REGISTRATIONS_TOPIC, value, "subject", "r9999999", STUDENT, "student_id")


def test_subject_missing_while_data_has_the_student() -> None:
    value = mutated(registration(), lambda e: e.pop("subject"))
    assert_reason(REGISTRATIONS_TOPIC, value, "subject")


@pytest.mark.parametrize(
    "student_id",
    ["r01{23}", "r01:23", "r01\n23", "r01 23", "r" * 65, "", "r01/23", "r01é", "r01\x00"],
    ids=["brace", "colon", "newline", "space", "65-chars", "empty", "slash", "accent", "nul"],
)
def test_invalid_student_id(student_id: str) -> None:
    def change(event: dict[str, Any]) -> None:
        event["subject"] = student_id
        event["data"]["student_id"] = student_id

    reason = assert_reason(REGISTRATIONS_TOPIC, mutated(registration(), change), "subject")
    assert "\n" not in reason


def test_invalid_student_id_only_in_data() -> None:
    value = mutated(registration(), lambda e: e["data"].update(student_id="r01:23"))
    reason = refused(REGISTRATIONS_TOPIC, value)
    assert "student_id" in reason


def test_student_id_of_64_characters_is_fine() -> None:
    sid = "a" * 64
    decode(REGISTRATIONS_TOPIC, ev.to_bytes(ev.registration(sid, 2016, {"A": 6})))


def test_record_key_that_differs_from_the_student_is_not_bad_input() -> None:
    decoded = decode(REGISTRATIONS_TOPIC, ev.to_bytes(registration()), b"someone-else")
    assert decoded.subject == STUDENT and decoded.key == b"someone-else"


# --- values outside their domain ----------------------------------------------------------------


@pytest.mark.parametrize("credits", [-6, -0.5, 0, 0.25, 0.75, 60.5, 61, 1000, 6.1])
def test_credits_outside_their_domain(credits: float) -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits=credits))
    assert_reason(
        REGISTRATIONS_TOPIC, value, "data.course_units.0.credits", "positive multiple of 0.5"
    )


@pytest.mark.parametrize("credits", [0.5, 2.5, 60, 60.0, 59.5])
def test_credits_at_the_edges_of_their_domain_are_fine(credits: float) -> None:
    value = mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits=credits))
    decode(REGISTRATIONS_TOPIC, value)


def test_credits_that_overflow_a_float() -> None:
    value = ev.to_bytes(registration()).replace(b'"credits":6', b'"credits":1e400')
    assert b"1e400" in value
    assert_reason(REGISTRATIONS_TOPIC, value, "credits")


@pytest.mark.parametrize(
    ("year", "fragment"),
    [
        ("2016-2018", "consecutive"),
        ("2017-2016", "consecutive"),
        ("2016-2016", "consecutive"),
        ("2016/2017", "academic_year"),
        ("16-17", "academic_year"),
        ("2016-17", "academic_year"),
        ("2016", "academic_year"),
        ("", "academic_year"),
        ("２０１６-２０１７", "academic_year"),  # full-width digits
    ],
)
def test_impossible_academic_year(year: str, fragment: str) -> None:
    value = mutated(registration(), lambda e: e["data"].update(academic_year=year))
    assert_reason(REGISTRATIONS_TOPIC, value, "data.academic_year", fragment)


def test_impossible_academic_year_of_an_exam_result() -> None:
    result = ev.exam_result(STUDENT, 2016, "PSY101")
    result["data"]["academic_year"] = "2016-2018"
    assert_reason(EXAM_RESULTS_TOPIC, ev.to_bytes(result), "academic_year", "consecutive")


def test_more_than_100_course_units() -> None:
    event = ev.registration(STUDENT, 2016, {f"U{i:03d}": 0.5 for i in range(101)})
    assert_reason(REGISTRATIONS_TOPIC, ev.to_bytes(event), "course_units", "100")


def test_exactly_100_course_units_is_fine() -> None:
    event = ev.registration(STUDENT, 2016, {f"U{i:03d}": 0.5 for i in range(100)})
    decode(REGISTRATIONS_TOPIC, ev.to_bytes(event))


def test_no_course_units() -> None:
    value = mutated(registration(), lambda e: e["data"].update(course_units=[]))
    assert_reason(REGISTRATIONS_TOPIC, value, "course_units")


def test_duplicate_unit_codes_in_a_registration() -> None:
    def change(event: dict[str, Any]) -> None:
        event["data"]["course_units"][1]["code"] = "PSY101"

    assert_reason(REGISTRATIONS_TOPIC, mutated(registration(), change), "distinct")


def test_duplicate_unit_codes_in_a_deregistration() -> None:
    event = ev.deregistration(STUDENT, 2016, ["PSY101", "PSY101"], date(2016, 10, 1))
    assert_reason(DEREGISTRATIONS_TOPIC, ev.to_bytes(event), "course_unit_codes", "distinct")


def test_more_than_100_codes_in_a_deregistration() -> None:
    event = ev.deregistration(STUDENT, 2016, [f"U{i}" for i in range(101)], date(2016, 10, 1))
    assert_reason(DEREGISTRATIONS_TOPIC, ev.to_bytes(event), "course_unit_codes", "100")


@pytest.mark.parametrize(
    ("topic", "path", "bad"),
    [
        (REGISTRATIONS_TOPIC, ("data", "programme", "kind"), "phd"),
        (REGISTRATIONS_TOPIC, ("data", "contract"), "Diploma"),
        (EXAM_RESULTS_TOPIC, ("data", "outcome"), "excellent"),
        (DEREGISTRATIONS_TOPIC, ("data", "reason"), "bored"),
    ],
    ids=["kind", "contract", "outcome", "reason"],
)
def test_unknown_enum_value(topic: str, path: tuple[str, ...], bad: str) -> None:
    base = {
        REGISTRATIONS_TOPIC: registration(),
        EXAM_RESULTS_TOPIC: ev.exam_result(STUDENT, 2016, "PSY101"),
        DEREGISTRATIONS_TOPIC: ev.deregistration(STUDENT, 2016, ["PSY101"], date(2016, 10, 1)),
    }[topic]

    def change(event: dict[str, Any]) -> None:
        target = event
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = bad

    assert_reason(topic, mutated(base, change), "data." + ".".join(path[1:]))


def test_unknown_degree() -> None:
    event = ev.degree(STUDENT, 2018, "doctor")
    assert_reason(EXAM_RESULTS_TOPIC, ev.to_bytes(event), "data.degree")


def test_programme_change_without_reenrolled_on() -> None:
    event = ev.deregistration(
        STUDENT, 2016, ["PSY101"], date(2016, 11, 20), reason="programme_change"
    )
    assert event["data"]["reenrolled_on"] is None
    assert_reason(DEREGISTRATIONS_TOPIC, ev.to_bytes(event), "programme_change", "reenrolled_on")


def test_withdrawal_without_reenrolled_on_is_fine() -> None:
    event = ev.deregistration(STUDENT, 2016, ["PSY101"], date(2016, 11, 20))
    decode(DEREGISTRATIONS_TOPIC, ev.to_bytes(event))


def test_many_errors_give_one_short_reason() -> None:
    event = registration()
    event["data"]["course_units"] = [{"code": "x" * 5000, "credits": "lots"}] * 100
    reason = refused(REGISTRATIONS_TOPIC, ev.to_bytes(event))
    assert "more" in reason and len(reason) <= MAX_REASON_CHARS
    assert "x" * 300 not in reason


def test_deeply_nested_json() -> None:
    assert_reason(REGISTRATIONS_TOPIC, b"[" * 100_000, "not JSON")


# --- through the pipeline: one dead letter per bad record ---------------------------------------


def _processor(redis_client: Redis) -> Processor:
    now = 1_700_000_000.0
    return Processor(RedisStore(redis_client), Policy(), clock=lambda: now)


def _data(value: bytes) -> dict[str, Any]:
    return json.loads(value)["data"]  # type: ignore[no-any-return]


_HUGE_TEXT = json.dumps({**registration(), "padding": "y" * (3 * 1024 * 1024)}).encode()
_HUGE_BINARY = b"\xff\xfe" + bytes(range(256)) * (12 * 1024)  # 3 MiB, not UTF-8

BAD_RECORDS = {
    "not-json": (REGISTRATIONS_TOPIC, b"{not json", "not JSON"),
    "not-utf8": (REGISTRATIONS_TOPIC, b"\xff\xfe{\x00}", "not UTF-8"),
    "array": (REGISTRATIONS_TOPIC, b"[1, 2, 3]", "not a JSON object"),
    "wrong-topic": (EXAM_RESULTS_TOPIC, ev.to_bytes(registration()), "does not belong"),
    "empty": (DEREGISTRATIONS_TOPIC, b"", "empty"),
    "tombstone": (DEREGISTRATIONS_TOPIC, None, "empty"),
    "huge-text": (REGISTRATIONS_TOPIC, _HUGE_TEXT, "1 MiB"),
    "huge-binary": (REGISTRATIONS_TOPIC, _HUGE_BINARY, "1 MiB"),
    "bad-credits": (
        REGISTRATIONS_TOPIC,
        mutated(registration(), lambda e: e["data"]["course_units"][0].update(credits=0.25)),
        "credits",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
async def test_a_bad_record_becomes_one_dead_letter_and_the_rest_is_applied(
    redis_client: Redis, kind: str
) -> None:
    topic, value, fragment = BAD_RECORDS[kind]
    proc = _processor(redis_client)
    before = ev.registration("before", 2016, {"A": 6}, event_id="before-1")
    after = ev.registration("after", 2016, {"B": 12}, event_id="after-1")
    records = [
        InputRecord(REGISTRATIONS_TOPIC, 0, 10, b"before", ev.to_bytes(before), 1_700_000_000_000),
        InputRecord(topic, 3, 41, b"bad-key", value, 1_700_000_000_000),
        InputRecord(REGISTRATIONS_TOPIC, 0, 11, b"after", ev.to_bytes(after), 1_700_000_000_000),
    ]
    report = await proc.process(records)

    assert report.dead_lettered == 1
    letters = [m for m in report.outputs if m.topic == DEAD_LETTER_TOPIC]
    assert len(letters) == 1
    assert [m.topic for m in report.outputs] == [
        BALANCE_CHANGED_TOPIC,
        DEAD_LETTER_TOPIC,
        BALANCE_CHANGED_TOPIC,
    ]
    letter = letters[0]
    assert letter.key == b"bad-key"
    envelope = json.loads(letter.value)
    assert envelope["type"] == "be.flanders.learning-account.dead-lettered.v1"
    assert envelope["subject"] == "bad-key"
    data = envelope["data"]
    for field in ("topic", "partition", "offset", "key", "error", "payload"):
        assert field in data, field
    assert (data["topic"], data["partition"], data["offset"], data["key"]) == (
        topic,
        3,
        41,
        "bad-key",
    )
    assert fragment in data["error"]

    raw = value or b""
    try:
        raw.decode("utf-8")
        is_text = True
    except UnicodeDecodeError:
        is_text = False
    if is_text:
        assert "payload_encoding" not in data
        payload = data["payload"].encode("utf-8")
    else:
        assert data["payload_encoding"] == "base64"
        payload = base64.b64decode(data["payload"], validate=True)
    assert payload == raw[:DEAD_LETTER_PAYLOAD_LIMIT]
    assert len(payload) <= DEAD_LETTER_PAYLOAD_LIMIT
    if len(raw) > DEAD_LETTER_PAYLOAD_LIMIT:
        assert len(payload) == DEAD_LETTER_PAYLOAD_LIMIT
        assert len(letter.value) < 2 * DEAD_LETTER_PAYLOAD_LIMIT

    # the good records on both sides were applied
    for student, credits in (("before", 6), ("after", 12)):
        account = await proc.store.get(student)
        assert account is not None and account.balance == (140 - credits) * 4


async def test_a_dead_letter_is_republished_identically(redis_client: Redis) -> None:
    proc = _processor(redis_client)
    bad = InputRecord(REGISTRATIONS_TOPIC, 0, 7, None, b"\x00\xff", 1_700_000_000_000)
    first = await proc.process([bad])
    again = await proc.process([bad])
    assert [m.value for m in first.outputs] == [m.value for m in again.outputs]
    assert len(first.outputs) == 1
    data = _data(first.outputs[0].value)
    assert data["key"] is None and data["payload_encoding"] == "base64"
    assert base64.b64decode(data["payload"]) == b"\x00\xff"


async def test_a_huge_utf8_message_cut_inside_a_character_stays_text(redis_client: Redis) -> None:
    # 'é' is two bytes: the 64 KiB cut falls inside one of them
    value = b"{" + "é".encode() * (DEAD_LETTER_PAYLOAD_LIMIT)
    proc = _processor(redis_client)
    report = await proc.process([InputRecord(REGISTRATIONS_TOPIC, 0, 1, None, value)])
    assert len(report.outputs) == 1
    data = _data(report.outputs[0].value)
    assert "payload_encoding" not in data
    assert value.decode().startswith(data["payload"])
    assert len(data["payload"].encode()) in (
        DEAD_LETTER_PAYLOAD_LIMIT,
        DEAD_LETTER_PAYLOAD_LIMIT - 1,
    )


@pytest.mark.parametrize("year", ["0000-0001", "1899-1900", "9999-10000"])
def test_rejects_academic_years_outside_the_calendar_the_rules_can_compute(year: str) -> None:
    event = registration()
    event["data"]["academic_year"] = year
    with pytest.raises(InvalidMessage):
        decode(REGISTRATIONS_TOPIC, ev.to_bytes(event))
