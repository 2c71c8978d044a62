"""Builders of valid input CloudEvents, for the demo, the `send` command and tests."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from learning_account.wire import (
    COURSE_UNITS_DEREGISTERED_TYPE,
    COURSE_UNITS_REGISTERED_TYPE,
    CREDITS_RESTORED_TYPE,
    DEGREE_AWARDED_TYPE,
    EXAM_RESULT_CORRECTED_TYPE,
    EXAM_RESULT_RECORDED_TYPE,
    TYPE_TOPIC,
    cloud_event,
)

DEFAULT_SOURCE = "urn:institution:kuleuven:sis"


def academic_year(year: int) -> str:
    return f"{year}-{year + 1}"


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    source: str = DEFAULT_SOURCE,
    event_id: str | None = None,
) -> dict[str, Any]:
    return cloud_event(
        event_type,
        data,
        event_id=event_id or str(uuid.uuid4()),
        source=source,
        time="2016-09-20T09:12:00Z",
        subject=data["student_id"],
    )


def registration(
    student_id: str,
    year: int,
    units: dict[str, float],
    *,
    kind: str = "bachelor",
    contract: str = "diploma",
    programme_code: str | None = None,
    starts_on: date | None = None,
    exceptional_admission: bool = False,
    generation_student: bool | None = None,
    **envelope_args: Any,
) -> dict[str, Any]:
    start = (starts_on or date(year, 9, 26)).isoformat()
    return envelope(
        COURSE_UNITS_REGISTERED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "programme": {
                "code": programme_code or ("MA-PSY" if kind == "master" else "BA-PSY"),
                "kind": kind,
            },
            "contract": contract,
            "registered_on": date(year, 9, 20).isoformat(),
            "exceptional_admission": exceptional_admission,
            "generation_student": generation_student,
            "course_units": [
                {"code": code, "credits": credits, "starts_on": start}
                for code, credits in units.items()
            ],
        },
        **envelope_args,
    )


def exam_result(
    student_id: str, year: int, code: str, outcome: str = "passed", **envelope_args: Any
) -> dict[str, Any]:
    return envelope(
        EXAM_RESULT_RECORDED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "course_unit_code": code,
            "outcome": outcome,
            "recorded_on": date(year + 1, 6, 30).isoformat(),
        },
        **envelope_args,
    )


def exam_result_correction(
    student_id: str,
    year: int,
    code: str,
    outcome: str,
    *,
    reason: str | None = "appeal upheld",
    **envelope_args: Any,
) -> dict[str, Any]:
    return envelope(
        EXAM_RESULT_CORRECTED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "course_unit_code": code,
            "outcome": outcome,
            "corrected_on": date(year + 1, 9, 2).isoformat(),
            "reason": reason,
        },
        **envelope_args,
    )


def credits_restoration(
    student_id: str,
    year: int,
    codes: list[str],
    *,
    decision_reference: str = "RvStvb-2018-0412",
    **envelope_args: Any,
) -> dict[str, Any]:
    return envelope(
        CREDITS_RESTORED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "course_unit_codes": codes,
            "decided_on": date(year + 2, 5, 14).isoformat(),
            "decision_reference": decision_reference,
        },
        **envelope_args,
    )


def degree(student_id: str, year: int, degree: str, **envelope_args: Any) -> dict[str, Any]:
    return envelope(
        DEGREE_AWARDED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "degree": degree,
            "programme_code": "MA-PSY" if degree == "master" else "BA-PSY",
            "awarded_on": date(year + 1, 7, 5).isoformat(),
        },
        **envelope_args,
    )


def deregistration(
    student_id: str,
    year: int,
    codes: list[str],
    deregistered_on: date,
    *,
    reason: str = "withdrawal",
    reenrolled_on: date | None = None,
    generation_student: bool | None = None,
    **envelope_args: Any,
) -> dict[str, Any]:
    return envelope(
        COURSE_UNITS_DEREGISTERED_TYPE,
        {
            "student_id": student_id,
            "academic_year": academic_year(year),
            "course_unit_codes": codes,
            "deregistered_on": deregistered_on.isoformat(),
            "reason": reason,
            "reenrolled_on": reenrolled_on.isoformat() if reenrolled_on else None,
            "generation_student": generation_student,
        },
        **envelope_args,
    )


def topic_of(event: dict[str, Any]) -> str:
    return TYPE_TOPIC[event["type"]]


def to_bytes(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def package(prefix: str, count: int, credits: float) -> dict[str, float]:
    return {f"{prefix}{i:02d}": credits for i in range(1, count + 1)}


def mary_track(student_id: str = "mary") -> list[dict[str, Any]]:
    """The seed's Mary: diploma contract, 60 credits a year, passes everything (2016-2019)."""
    events: list[dict[str, Any]] = []
    for year in (2016, 2017, 2018):
        units = package(f"Y{year % 100}-", 10, 6)
        events.append(registration(student_id, year, units))
        events.extend(exam_result(student_id, year, code) for code in units)
    return events


def thomas_track(student_id: str = "thomas") -> list[dict[str, Any]]:
    """The seed's Thomas: passes some units each year, retakes others (2016-2020)."""
    years: list[tuple[int, dict[str, float], list[str]]] = []
    first = package("A", 10, 6)
    years.append((2016, first, [f"A{i:02d}" for i in range(1, 7)]))  # 36 of 60
    second = {**{f"A{i:02d}": 6.0 for i in range(7, 11)}, **package("B", 13, 3)}  # 63
    years.append(
        (2017, second, [*(f"A{i:02d}" for i in range(7, 11)), *(f"B{i:02d}" for i in range(1, 7))])
    )  # 42
    third = {**{f"B{i:02d}": 3.0 for i in range(7, 14)}, **package("C", 13, 3)}  # 60
    years.append(
        (2018, third, [*(f"B{i:02d}" for i in range(7, 14)), *(f"C{i:02d}" for i in range(1, 9))])
    )  # 45
    fourth = {**{f"C{i:02d}": 3.0 for i in range(9, 14)}, **package("D", 14, 3)}  # 57
    years.append((2019, fourth, list(fourth)))  # 57
    events: list[dict[str, Any]] = []
    for year, units, passed in years:
        events.append(registration(student_id, year, units))
        for code in units:
            events.append(
                exam_result(student_id, year, code, "passed" if code in passed else "failed")
            )
    return events


def rounds_by_year(*tracks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events grouped by academic year, all tracks together, each track's order kept.

    Registrations and results travel on different topics, so only sending a year's events after
    the previous year's were applied reproduces the seed's chronology.
    """
    years: dict[str, list[dict[str, Any]]] = {}
    for track in tracks:
        for event in track:
            years.setdefault(event["data"]["academic_year"], []).append(event)
    return [years[year] for year in sorted(years)]


def expects_balance_change(event: dict[str, Any]) -> bool:
    """True for the seed tracks' events that change a balance (registrations, passed results)."""
    if event["type"] == COURSE_UNITS_REGISTERED_TYPE:
        return True
    return bool(event["type"] == EXAM_RESULT_RECORDED_TYPE and event["data"]["outcome"] == "passed")
