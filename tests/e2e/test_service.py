"""End to end: CloudEvents on the real input topics, the real service process, real Redis,
outputs read back from the real output topics and the HTTP API."""

from __future__ import annotations

from datetime import date
from typing import Any

from learning_account.processing.projection import PROJECTION_SOURCE
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    CREDIT_EXHAUSTED_TOPIC,
    CREDIT_LOW_TOPIC,
    DEAD_LETTER_TOPIC,
    REGISTRATIONS_TOPIC,
    REJECTIONS_TOPIC,
)
from learning_account_dev import events as ev
from support.service import OutputCollector, ServiceProcess, send

STATEMENT_FIELDS = ("start", "invested", "acquired", "bonus", "balance")


async def send_and_wait(
    service: ServiceProcess, outputs: OutputCollector, event: dict[str, Any]
) -> None:
    """Send one event to the service and wait until an output it caused is read."""
    await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], [event])
    await outputs.wait_for(lambda: bool(outputs.caused_by(event["id"])))


def table(statement: dict) -> list[tuple]:  # type: ignore[type-arg]
    return [
        (row["academic_year"], *(row[f] for f in STATEMENT_FIELDS)) for row in statement["years"]
    ]


async def test_mary_and_thomas_statements_match_the_seed(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    mary, thomas = ev.mary_track(f"{student}-mary"), ev.thomas_track(f"{student}-thomas")
    # year by year, as in reality: next year's registration comes after this year's results
    for year_events in ev.rounds_by_year(mary, thomas):
        await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], year_events)
        expected = [e["id"] for e in year_events if ev.expects_balance_change(e)]
        await outputs.wait_for(
            lambda expected=expected: all(
                outputs.caused_by(event_id, BALANCE_CHANGED_TOPIC) for event_id in expected
            ),
            what="the balance changes of one academic year",
        )
    status, statement = service.get(f"/accounts/{student}-mary/statement")
    assert status == 200
    assert table(statement) == [
        ("2016-2017", 140, -60, 60, 60, 200),
        ("2017-2018", 200, -60, 60, 0, 200),
        ("2018-2019", 200, -60, 60, 0, 200),
    ]
    status, statement = service.get(f"/accounts/{student}-thomas/statement")
    assert table(statement) == [
        ("2016-2017", 140, -60, 36, 36, 152),
        ("2017-2018", 152, -63, 42, 24, 155),
        ("2018-2019", 155, -60, 45, 0, 140),
        ("2019-2020", 140, -57, 57, 0, 140),
    ]
    status, account = service.get(f"/accounts/{student}-mary")
    assert (status, account["balance"], account["bonus_granted"]) == (200, 200, 60)
    changes = [
        m for m in outputs.messages(BALANCE_CHANGED_TOPIC) if m["subject"] == f"{student}-mary"
    ]
    assert len(changes) == 33
    assert [c["data"]["balance"] for c in changes][-1] == 200


async def test_duplicate_delivery_has_one_effect_and_identical_outputs(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    registration = ev.registration(student, 2016, {"A": 6, "B": 6})
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    await send_and_wait(service, outputs, registration)
    await send(bootstrap, [registration])  # the same event again
    marker = ev.exam_result(student, 2016, "A")
    await send(bootstrap, [marker])
    await outputs.wait_for(lambda: bool(outputs.caused_by(marker["id"])))
    copies = [
        value
        for value in outputs.raw(BALANCE_CHANGED_TOPIC)
        if registration["id"].encode() in value
    ]
    assert len(copies) == 2
    assert copies[0] == copies[1]
    _status, account = service.get(f"/accounts/{student}")
    assert account["balance"] == 140 - 12 + 6 + 6


async def test_malformed_message_is_dead_lettered_and_later_messages_processed(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    later = ev.registration(student, 2016, {"A": 6})
    await send(
        bootstrap,
        [
            (REGISTRATIONS_TOPIC, student.encode(), b'{"specversion": "1.0", "oops'),
            (REGISTRATIONS_TOPIC, student.encode(), b"\xff\xfe not utf-8"),
            later,
        ],
    )
    await outputs.wait_for(lambda: bool(outputs.caused_by(later["id"])))
    await outputs.wait_for(
        lambda: (
            len([m for m in outputs.messages(DEAD_LETTER_TOPIC) if m.get("subject") == student])
            == 2
        ),
        what="two dead letters",
    )
    letters = [
        m["data"] for m in outputs.messages(DEAD_LETTER_TOPIC) if m.get("subject") == student
    ]
    by_encoding = {letter.get("payload_encoding", "text"): letter for letter in letters}
    assert by_encoding["text"]["payload"] == '{"specversion": "1.0", "oops'
    assert by_encoding["text"]["error"].startswith("not JSON")
    assert by_encoding["base64"]["error"].startswith("not UTF-8")
    assert all(letter["topic"] == REGISTRATIONS_TOPIC for letter in letters)


async def test_refusal_is_published_on_the_rejections_topic(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    deregistration = ev.deregistration(student, 2016, ["A"], date(2016, 10, 1))
    await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], [deregistration])
    await outputs.wait_for(lambda: bool(outputs.caused_by(deregistration["id"], REJECTIONS_TOPIC)))
    [rejection] = outputs.caused_by(deregistration["id"], REJECTIONS_TOPIC)
    assert rejection["data"]["reason"] == "not_registered"
    assert rejection["subject"] == student
    assert service.get(f"/accounts/{student}")[0] == 404


async def test_exhaustion_and_low_balance_are_announced(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    registration = ev.registration(student, 2016, {"A": 60, "B": 60, "C": 24})
    await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], [registration])
    await outputs.wait_for(
        lambda: (
            bool(outputs.caused_by(registration["id"], CREDIT_EXHAUSTED_TOPIC))
            and bool(outputs.caused_by(registration["id"], CREDIT_LOW_TOPIC))
        )
    )
    [exhausted] = outputs.caused_by(registration["id"], CREDIT_EXHAUSTED_TOPIC)
    assert exhausted["data"]["balance"] == -4
    [changed] = outputs.caused_by(registration["id"], BALANCE_CHANGED_TOPIC)
    assert changed["data"]["uncovered_credits"] == 4


async def test_result_before_registration_is_held_then_applied(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    result = ev.exam_result(student, 2016, "A")
    await send(bootstrap, [result])
    registration = ev.registration(student, 2016, {"A": 6})
    await send(bootstrap, [registration])
    await outputs.wait_for(lambda: bool(outputs.caused_by(result["id"], BALANCE_CHANGED_TOPIC)))
    ordered = [
        m["data"]["caused_by"]["id"]
        for m in outputs.messages(BALANCE_CHANGED_TOPIC)
        if m["subject"] == student
    ]
    assert ordered == [registration["id"], result["id"]]
    assert service.get(f"/accounts/{student}")[1]["balance"] == 146


async def test_result_whose_registration_never_comes_is_refused_after_the_hold(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    result = ev.exam_result(student, 2016, "A")
    await send(service.env["LA_KAFKA_BOOTSTRAP_SERVERS"], [result])
    await outputs.wait_for(
        lambda: bool(outputs.caused_by(result["id"], REJECTIONS_TOPIC)), timeout=30
    )
    [rejection] = outputs.caused_by(result["id"], REJECTIONS_TOPIC)
    assert rejection["data"]["reason"] == "unknown_registration"


async def test_health_and_metrics_answer(service: ServiceProcess) -> None:
    assert service.get("/health/live")[0] == 200
    assert service.get("/health/ready") == (200, {"ready": True})
    status, text = service.get("/metrics")
    assert status == 200
    assert "la_batches_total" in text


async def test_projection_through_the_live_service_leaves_the_account_untouched(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    registration = ev.registration(student, 2016, {"A": 6, "B": 6})
    await send_and_wait(service, outputs, registration)
    before = (service.get(f"/accounts/{student}"), service.get(f"/accounts/{student}/statement"))
    projected = [ev.exam_result(student, 2016, "A"), ev.registration(student, 2017, {"C": 60})]
    status, answer = service.post(
        f"/accounts/{student}/projection",
        {"events": [{"type": e["type"], "data": e["data"]} for e in projected]},
    )
    assert status == 200, answer
    assert [o["balance"] for o in answer["outcomes"]] == [140, 80]
    assert answer["balance"] == 80
    assert [row["academic_year"] for row in answer["years"]] == ["2016-2017", "2017-2018"]
    after = (service.get(f"/accounts/{student}"), service.get(f"/accounts/{student}/statement"))
    assert after == before
    assert before[0][1]["balance"] == 128
    # a later real event is applied from the stored state, and nothing of the projection was sent
    marker = ev.exam_result(student, 2016, "B")
    await send(bootstrap, [marker])
    await outputs.wait_for(lambda: bool(outputs.caused_by(marker["id"], BALANCE_CHANGED_TOPIC)))
    [changed] = outputs.caused_by(marker["id"], BALANCE_CHANGED_TOPIC)
    assert (changed["data"]["previous_balance"], changed["data"]["balance"]) == (128, 140)
    assert not [
        m
        for m in outputs.messages()
        if m.get("data", {}).get("caused_by", {}).get("source") == PROJECTION_SOURCE
    ]
    status, error = service.post(
        f"/accounts/{student}/projection", {"events": [{"type": "nope", "data": {}}]}
    )
    assert (status, error["error_code"], error["index"]) == (422, "unknown_type", 0)


def entry_amounts(message: dict) -> list[tuple[str, float]]:  # type: ignore[type-arg]
    return [(entry["kind"], entry["amount"]) for entry in message["data"]["entries"]]


async def test_corrections_each_way_and_their_refusal(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    registration = ev.registration(student, 2016, {"A": 6, "B": 6, "C": 6})
    await send_and_wait(service, outputs, registration)
    to_pass = ev.exam_result_correction(student, 2016, "B", "passed")
    to_fail = ev.exam_result_correction(student, 2016, "A", "failed")
    without_result = ev.exam_result_correction(student, 2016, "C", "passed")
    await send(
        bootstrap,
        [
            ev.exam_result(student, 2016, "A"),
            ev.exam_result(student, 2016, "B", "failed"),
            to_pass,
            to_fail,
            without_result,
        ],
    )
    await outputs.wait_for(lambda: bool(outputs.caused_by(without_result["id"])))
    [passed] = outputs.caused_by(to_pass["id"], BALANCE_CHANGED_TOPIC)
    assert entry_amounts(passed) == [("acquired", 6), ("bonus", 6)]
    assert (passed["data"]["academic_year"], passed["data"]["balance"]) == ("2016-2017", 146)
    [failed] = outputs.caused_by(to_fail["id"], BALANCE_CHANGED_TOPIC)
    assert entry_amounts(failed) == [("acquired", -6), ("bonus", -6)]
    assert failed["data"]["balance"] == 134
    [rejection] = outputs.caused_by(without_result["id"], REJECTIONS_TOPIC)
    assert rejection["data"]["reason"] == "no_result_to_correct"
    _status, account = service.get(f"/accounts/{student}")
    assert (account["balance"], account["bonus_granted"], account["remaining_bonus"]) == (
        134,
        6,
        54,
    )
    assert account["rebuild_reserve"] == 0


async def test_force_majeure_restores_a_lost_unit_once(
    service: ServiceProcess, outputs: OutputCollector, student: str
) -> None:
    bootstrap = service.env["LA_KAFKA_BOOTSTRAP_SERVERS"]
    registration = ev.registration(student, 2016, {"U": 6, "P": 6})
    await send_and_wait(service, outputs, registration)
    restoration = ev.credits_restoration(student, 2016, ["U"])
    again = ev.credits_restoration(student, 2016, ["U"])
    later_result = ev.exam_result(student, 2016, "U")
    await send(bootstrap, [ev.exam_result(student, 2016, "P"), restoration, again, later_result])
    await outputs.wait_for(lambda: bool(outputs.caused_by(later_result["id"])))
    [restored] = outputs.caused_by(restoration["id"], BALANCE_CHANGED_TOPIC)
    assert restored["data"]["entries"] == [
        {"kind": "restored", "amount": 6, "course_unit_code": "U", "academic_year": "2016-2017"}
    ]
    assert restored["data"]["balance"] == 146
    assert [m["data"]["reason"] for m in outputs.caused_by(again["id"])] == ["nothing_to_restore"]
    assert [m["data"]["reason"] for m in outputs.caused_by(later_result["id"])] == [
        "result_already_recorded"
    ]
    _status, statement = service.get(f"/accounts/{student}/statement")
    [row] = statement["years"]
    assert (row["invested"], row["acquired"], row["bonus"], row["restored"]) == (-12, 6, 6, 6)
    assert row["balance"] == 146
