"""What if (projection.py): the pure rules on a stored account plus given events.

The commands come from the events' `{"type", "data"}` through `read_events`, the topics' decode.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from scenario import Student

from learning_account.adapters.state_codec import encode_account
from learning_account.domain.events import CreditExhausted, CreditLow
from learning_account.domain.model import Account, Policy
from learning_account.processing.projection import (
    InvalidProjection,
    Outcome,
    Projection,
    balance_as_read,
    project,
    read_events,
    what_if_results,
)
from learning_account.wire import (
    BALANCE_CHANGED_TYPE,
    EXAM_RESULTS_TOPIC,
    REGISTRATIONS_TOPIC,
    InvalidMessage,
    decode,
)
from learning_account_dev import events as ev

NOW = 2_000_000_000.0
POLICY = Policy()
OCTOBER_2019 = 2019


def given(*events: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's items: each event's type and data, as a client sends them."""
    return [{"type": event["type"], "data": event["data"]} for event in events]


def projected(account: Account, *events: dict[str, Any], now: float = NOW) -> Projection:
    commands = read_events(account.student_id, given(*events), now=now)
    return project(account, commands, now=now, policy=POLICY)


def credits(quarters: int | None) -> float | None:
    return None if quarters is None else quarters / 4


def summary(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.index,
        outcome.accepted,
        outcome.held,
        outcome.reason,
        credits(outcome.previous_balance),
        credits(outcome.balance),
    )


def mary() -> Student:
    student = Student("mary")
    student.now = NOW
    for year in (2016, 2017, 2018):
        codes = [f"Y{year % 100}-{i:02d}" for i in range(1, 11)]
        student.register(year, dict.fromkeys(codes, 6))
        student.pass_all(year, codes)
    return student


def test_mary_first_master_and_its_degree_end_at_60() -> None:
    account = mary().account
    units = ev.package("M", 10, 6)
    result = projected(
        account,
        ev.registration("mary", 2019, units, kind="master"),
        *(ev.exam_result("mary", 2019, code) for code in units),
        ev.degree("mary", 2019, "master"),
    )
    assert [summary(o) for o in result.outcomes] == [
        (0, True, False, None, 200, 140),
        *((i, True, False, None, 140 + 6 * (i - 1), 140 + 6 * i) for i in range(1, 11)),
        (11, True, False, None, 200, 60),
    ]
    assert all(o.announcements == () for o in result.outcomes)  # 60 is not below 60
    assert credits(balance_as_read(result.account, OCTOBER_2019)) == 60
    assert result.account.master_degree


def test_the_stored_account_is_left_as_it_was() -> None:
    account = mary().account
    before = encode_account(account)
    projected(account, ev.registration("mary", 2019, {"M1": 60}, kind="master"))
    assert encode_account(account) == before


def test_a_student_without_an_account_starts_from_none() -> None:
    result = projected(Account("new"), ev.registration("new", 2019, {"A": 6, "B": 6}))
    [outcome] = result.outcomes
    assert summary(outcome) == (0, True, False, None, 0, 128)  # the first change starts at 0
    assert outcome.event_type == ev.registration("x", 2019, {"A": 1})["type"]


def test_a_student_still_without_an_account_has_no_balance() -> None:
    result = projected(Account("grad"), ev.degree("grad", 2019, "master"))
    assert [summary(o) for o in result.outcomes] == [(0, True, False, None, None, None)]
    assert result.account.balance is None
    assert balance_as_read(result.account, OCTOBER_2019) is None


def test_refusal_reports_its_reason_and_leaves_the_balance() -> None:
    student = Student("spent")
    student.register(2019, {"A": 60, "B": 60, "C": 24})  # -4
    result = projected(student.account, ev.registration("spent", 2019, {"D": 6}))
    assert [summary(o) for o in result.outcomes] == [
        (0, False, False, "insufficient_learning_credit", -4, -4)
    ]


def test_announcements_are_those_the_step_would_publish() -> None:
    student = Student("low")
    student.register(2019, {"A": 68})  # 72
    result = projected(student.account, ev.registration("low", 2019, {"B": 38, "C": 38}))
    [outcome] = result.outcomes
    assert (credits(outcome.balance), credits(outcome.uncovered_credits)) == (-4, 4)
    assert [type(a) for a in outcome.announcements] == [CreditExhausted, CreditLow]
    assert isinstance(outcome.announcements[1], CreditLow)
    assert outcome.announcements[1].threshold == 60 * 4


def test_first_master_at_a_negative_balance_needs_the_additional_fee() -> None:
    student = Student("neg")
    student.register(2019, {"A": 60, "B": 60, "C": 24})  # -4
    result = projected(student.account, ev.registration("neg", 2019, {"M": 60}, kind="master"))
    [outcome] = result.outcomes
    assert (outcome.accepted, outcome.additional_fee, credits(outcome.uncovered_credits)) == (
        True,
        True,
        60,
    )


def test_result_held_in_the_request_is_reported_again_when_released() -> None:
    result = projected(
        Account("early"),
        ev.exam_result("early", 2019, "A"),
        ev.registration("early", 2019, {"A": 6}),
    )
    assert [summary(o) for o in result.outcomes] == [
        (0, True, True, None, None, None),
        (1, True, False, None, 0, 134),
        (0, True, False, None, 134, 146),  # released right after the registration
    ]


def test_result_held_in_the_stored_account_is_released_with_index_none() -> None:
    student = Student("stored")
    student.now = NOW
    student.register(2019, {"A": 6})
    student.result(2019, "B")  # held: B is not registered yet
    assert student.account.held
    result = projected(student.account, ev.registration("stored", 2019, {"B": 6}))
    assert [summary(o) for o in result.outcomes] == [
        (0, True, False, None, 134, 128),
        (None, True, False, None, 128, 140),
    ]
    assert result.outcomes[1].event_type.endswith("exam-result-recorded.v1")
    assert result.account.held == ()


def test_a_stored_held_result_past_its_time_is_refused_now() -> None:
    student = Student("late")
    student.now = NOW
    student.register(2019, {"A": 6})
    student.result(2019, "B")
    later = NOW + POLICY.result_hold_seconds
    result = projected(student.account, ev.exam_result("late", 2019, "A"), now=later)
    assert [summary(o) for o in result.outcomes] == [
        (0, True, False, None, 134, 146),
        (None, False, False, "unknown_registration", 146, 146),
    ]


def test_years_before_the_event_are_rebuilt_as_the_consumer_would() -> None:
    student = Student("gap")
    student.register(2016, ev.package("U", 11, 10))  # 30
    result = projected(student.account, ev.registration("gap", 2019, {"A": 6}))
    assert [summary(o) for o in result.outcomes] == [(0, True, False, None, 30, 44)]


def test_what_if_lists_the_latest_year_units_without_a_result() -> None:
    student = Student("ines")
    student.register(2018, {"OLD": 6})
    student.register(2019, {"A": 6, "B": 6, "C": 3, "GONE": 6})
    student.register(2019, {"X": 6}, contract="exam")  # does not use the account
    student.result(2019, "A")
    student.deregister(2019, ["GONE"], date(2019, 11, 30))
    balance = student.balance
    assert balance == 140 - 6 - 21 + 12
    what_if = what_if_results(
        student.account,
        current_year=2019,
        today=date(2019, 12, 1),
        now=student.now,
        policy=POLICY,
    )
    assert what_if is not None
    assert what_if.academic_year == 2019
    rows = [
        (u.code, credits(u.credits), credits(u.if_passed), credits(u.if_failed))
        for u in what_if.units
    ]
    # bonus on the first 60 diploma credits: each pass returns its credits double
    assert rows == [("B", 6, balance + 12, balance), ("C", 3, balance + 6, balance)]


def test_what_if_matches_a_projection_of_that_one_result() -> None:
    student = Student("same")
    student.register(2019, {"A": 6, "B": 6})
    what_if = what_if_results(
        student.account, current_year=2019, today=date(2019, 12, 1), now=NOW, policy=POLICY
    )
    assert what_if is not None
    for unit in what_if.units:
        for outcome, expected in (("passed", unit.if_passed), ("failed", unit.if_failed)):
            alone = projected(student.account, ev.exam_result("same", 2019, unit.code, outcome))
            assert balance_as_read(alone.account, 2019) == expected


def test_what_if_is_none_without_units_that_use_the_account() -> None:
    student = Student("exam")
    student.register(2019, {"X": 6}, contract="exam")
    assert (
        what_if_results(
            student.account, current_year=2019, today=date(2019, 12, 1), now=NOW, policy=POLICY
        )
        is None
    )


# --- validation, as the topics validate ------------------------------------------------------


def refused(events: Any, student_id: str = "r1") -> InvalidProjection:
    with pytest.raises(InvalidProjection) as caught:
        read_events(student_id, events, now=NOW)
    return caught.value


def test_invalid_data_names_the_event_and_the_field() -> None:
    bad = ev.registration("r1", 2019, {"A": 6})
    bad["data"]["course_units"][0]["credits"] = "6"
    error = refused(given(ev.registration("r1", 2019, {"B": 6}), bad))
    assert (error.error_code, error.index) == ("invalid_data", 1)
    assert "course_units.0.credits" in error.error


def test_unknown_and_output_types_are_unknown_type() -> None:
    for event_type in ("be.flanders.learning-account.nonsense.v1", BALANCE_CHANGED_TYPE):
        error = refused([{"type": event_type, "data": {"student_id": "r1"}}])
        assert (error.error_code, error.index) == ("unknown_type", 0), event_type


def test_data_of_another_student_is_a_subject_mismatch() -> None:
    error = refused(given(ev.exam_result("r2", 2019, "A")))
    assert (error.error_code, error.index) == ("subject_mismatch", 0)


def test_missing_type_or_data() -> None:
    assert refused([{"data": {"student_id": "r1"}}]).error_code == "invalid_envelope"
    missing_data = refused([{"type": ev.exam_result("r1", 2019, "A")["type"]}])
    assert missing_data.error_code == "invalid_data"
    assert refused([["not", "an", "object"]]).error_code == "invalid_envelope"


@pytest.mark.parametrize("events", [[], "x", None, [{}] * 101])
def test_the_events_must_be_a_list_of_1_to_100(events: Any) -> None:
    error = refused(events)
    assert (error.error_code, error.index) == ("invalid_envelope", None)


def test_100_events_are_accepted() -> None:
    events = given(*(ev.exam_result("r1", 2019, f"U{i}") for i in range(100)))
    assert len(read_events("r1", events, now=NOW)) == 100


@pytest.mark.parametrize(
    ("topic", "value", "code"),
    [
        (REGISTRATIONS_TOPIC, b'{"specversion": "1.0", "oops', "not_json"),
        (REGISTRATIONS_TOPIC, b"", "not_json"),
        ("no-such-topic", b"{}", "wrong_topic"),
        (REGISTRATIONS_TOPIC, b"\xff\xfe", "not_utf8"),
        (REGISTRATIONS_TOPIC, b" " * (1024 * 1024 + 1), "too_large"),
        (REGISTRATIONS_TOPIC, b'{"specversion": "1.0"}', "invalid_envelope"),
        (REGISTRATIONS_TOPIC, ev.to_bytes(ev.exam_result("r1", 2019, "A")), "wrong_topic"),
        (EXAM_RESULTS_TOPIC, ev.to_bytes({**ev.exam_result("r1", 2019, "A"), "subject": "r2"}),
         "subject_mismatch"),
        (EXAM_RESULTS_TOPIC, ev.to_bytes({**ev.exam_result("r1", 2019, "A"), "type": "x"}),
         "unknown_type"),
    ],
)  # fmt: skip
def test_error_code_of_every_decode_refusal(topic: str, value: bytes, code: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(topic, value)
    assert caught.value.code == code


# --- corrections (R3.7) and force majeure (R3.8) through the same path ---------------------


def test_corrections_as_in_the_worked_example() -> None:
    student = Student("appeal")
    student.register(2016, {"A": 6, "B": 6, "C": 6})  # 122
    student.result(2016, "A")  # 134
    student.result(2016, "B", "failed")
    result = projected(
        student.account,
        ev.exam_result_correction("appeal", 2016, "B", "passed"),
        ev.exam_result_correction("appeal", 2016, "A", "failed"),
        ev.exam_result_correction("appeal", 2016, "A", "tolerated"),
        ev.exam_result_correction("appeal", 2016, "C", "passed"),
    )
    assert [summary(o) for o in result.outcomes] == [
        (0, True, False, None, 134, 146),
        (1, True, False, None, 146, 134),
        (2, True, False, None, 134, 134),  # failed to tolerated: no change
        (3, False, False, "no_result_to_correct", 134, 134),
    ]
    assert result.account.bonus_granted == 6 * 4


def test_force_majeure_restores_once() -> None:
    student = Student("overmacht")
    student.register(2016, {"U": 6})  # 134
    student.register(2016, {"P": 6})  # 128
    student.result(2016, "P")  # 140
    result = projected(
        student.account,
        ev.credits_restoration("overmacht", 2016, ["U"]),
        ev.credits_restoration("overmacht", 2016, ["U"]),
        ev.credits_restoration("overmacht", 2016, ["P"]),
        ev.exam_result("overmacht", 2016, "U"),
    )
    assert [summary(o) for o in result.outcomes] == [
        (0, True, False, None, 140, 146),
        (1, False, False, "nothing_to_restore", 146, 146),
        (2, False, False, "nothing_to_restore", 146, 146),
        (3, False, False, "result_already_recorded", 146, 146),
    ]


def test_a_correction_held_behind_its_result_is_released_after_it() -> None:
    result = projected(
        Account("early"),
        ev.exam_result("early", 2019, "A", "failed"),
        ev.exam_result_correction("early", 2019, "A", "passed"),
        ev.registration("early", 2019, {"A": 6}),
    )
    assert [summary(o) for o in result.outcomes] == [
        (0, True, True, None, None, None),
        (1, True, True, None, None, None),
        (2, True, False, None, 0, 134),
        (0, True, False, None, 134, 134),  # the failed result, released
        (1, True, False, None, 134, 146),  # then its correction
    ]


def test_what_if_leaves_out_restored_units() -> None:
    student = Student("closed")
    student.register(2019, {"U": 6, "V": 6})
    student.restore(2019, ["U"])
    what_if = what_if_results(
        student.account, current_year=2019, today=date(2020, 6, 1), now=NOW, policy=POLICY
    )
    assert what_if is not None
    assert [unit.code for unit in what_if.units] == ["V"]


def test_an_invalid_correction_is_invalid_data() -> None:
    long_reason = ev.exam_result_correction("r1", 2019, "A", "passed", reason="x" * 201)
    error = refused(given(ev.exam_result("r1", 2019, "A"), long_reason))
    assert (error.error_code, error.index) == ("invalid_data", 1)
    assert "reason" in error.error
