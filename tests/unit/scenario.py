"""A small driver for the rules core: a student and their events, in credits, not quarters."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta
from itertools import count

from learning_account.domain.events import (
    BalanceChanged,
    CreditExhausted,
    CreditLow,
    Decision,
    DomainEvent,
    EventRejected,
)
from learning_account.domain.model import (
    Account,
    AwardDegree,
    Command,
    Contract,
    CorrectResult,
    Degree,
    Deregister,
    DeregistrationReason,
    EventRef,
    Policy,
    ProgrammeKind,
    RecordResult,
    Register,
    RestoreCredits,
    ResultOutcome,
    UnitRegistration,
)
from learning_account.domain.numbers import to_quarters
from learning_account.domain.rules import decide
from learning_account.domain.statement import statement

_ids = count(1)


def credits(quarters: int) -> float:
    return quarters / 4


class Student:
    def __init__(self, student_id: str = "r0123456", policy: Policy | None = None) -> None:
        self.account = Account(student_id)
        self.policy = policy or Policy()
        self.now = 1_000_000.0
        self.published: list[DomainEvent] = []
        self.last: Decision | None = None

    @property
    def student_id(self) -> str:
        return self.account.student_id

    @property
    def balance(self) -> float | None:
        return None if self.account.balance is None else credits(self.account.balance)

    def ref(self, kind: str) -> EventRef:
        return EventRef(
            "urn:test", f"{kind}-{next(_ids)}", f"be.flanders.learning-account.{kind}.v1"
        )

    def apply(self, command: Command) -> Decision:
        decision = decide(self.account, command, now=self.now, policy=self.policy)
        self.account = decision.account
        self.published.extend(decision.events)
        self.last = decision
        return decision

    def register(
        self,
        year: int,
        units: dict[str, float],
        *,
        kind: str = "bachelor",
        contract: str = "diploma",
        exceptional_admission: bool = False,
        generation_student: bool | None = None,
        starts_on: date | None = None,
        first_term: bool = False,
        border_date: date | None = None,
    ) -> Decision:
        start = starts_on or date(year, 9, 26)
        return self.apply(
            Register(
                event=self.ref("course-units-registered"),
                student_id=self.student_id,
                academic_year=year,
                programme_code="BA-PSY" if kind == "bachelor" else "MA-PSY",
                programme_kind=ProgrammeKind(kind),
                contract=Contract(contract),
                registered_on=date(year, 9, 20),
                units=tuple(
                    UnitRegistration(
                        code=code,
                        credits=to_quarters(amount),
                        starts_on=start,
                        first_term_of_first_track=first_term,
                        border_date=border_date,
                    )
                    for code, amount in units.items()
                ),
                exceptional_admission=exceptional_admission,
                generation_student=generation_student,
            )
        )

    def result(self, year: int, code: str, outcome: str = "passed") -> Decision:
        return self.apply(
            RecordResult(
                event=self.ref("exam-result-recorded"),
                student_id=self.student_id,
                academic_year=year,
                unit_code=code,
                outcome=ResultOutcome(outcome),
                recorded_on=date(year + 1, 6, 30),
            )
        )

    def correct(self, year: int, code: str, outcome: str) -> Decision:
        return self.apply(
            CorrectResult(
                event=self.ref("exam-result-corrected"),
                student_id=self.student_id,
                academic_year=year,
                unit_code=code,
                outcome=ResultOutcome(outcome),
                corrected_on=date(year + 1, 9, 2),
            )
        )

    def restore(self, year: int, codes: list[str]) -> Decision:
        return self.apply(
            RestoreCredits(
                event=self.ref("credits-restored"),
                student_id=self.student_id,
                academic_year=year,
                unit_codes=tuple(codes),
                decided_on=date(year + 2, 5, 14),
                decision_reference="RvStvb-2018-0412",
            )
        )

    def pass_all(self, year: int, codes: list[str]) -> None:
        for code in codes:
            self.result(year, code)

    def degree(self, year: int, degree: str) -> Decision:
        return self.apply(
            AwardDegree(
                event=self.ref("degree-awarded"),
                student_id=self.student_id,
                academic_year=year,
                degree=Degree(degree),
                programme_code="X",
                awarded_on=date(year + 1, 7, 5),
            )
        )

    def deregister(
        self,
        year: int,
        codes: list[str],
        on: date,
        *,
        reason: str = "withdrawal",
        reenrolled_on: date | None = None,
        generation_student: bool | None = None,
    ) -> Decision:
        return self.apply(
            Deregister(
                event=self.ref("course-units-deregistered"),
                student_id=self.student_id,
                academic_year=year,
                unit_codes=tuple(codes),
                deregistered_on=on,
                reason=DeregistrationReason(reason),
                reenrolled_on=reenrolled_on,
                generation_student=generation_student,
            )
        )

    def wait(self, seconds: float) -> None:
        self.now += seconds

    def events(self, kind: type) -> list:  # type: ignore[type-arg]
        return [event for event in self.published if isinstance(event, kind)]

    def last_events(self, kind: type) -> list:  # type: ignore[type-arg]
        assert self.last is not None
        return [event for event in self.last.events if isinstance(event, kind)]

    def statement_rows(self, current_year: int) -> list[dict[str, object]]:
        """The statement's rows by column name, in credits (`restored` included)."""
        return [
            {
                name: (
                    value if name in ("academic_year", "projected") else credits(value)  # type: ignore[arg-type]
                )
                for name, value in asdict(row).items()
            }
            for row in statement(self.account, current_year)
        ]

    def statement_table(self, current_year: int) -> list[tuple[object, ...]]:
        return [
            (
                row.academic_year,
                credits(row.start),
                credits(row.invested),
                credits(row.acquired),
                credits(row.bonus),
                credits(row.refunded),
                credits(row.degree_deduction),
                credits(row.rebuilt),
                credits(row.balance),
                row.projected,
            )
            for row in statement(self.account, current_year)
        ]


def units(prefix: str, n: int, amount: float) -> dict[str, float]:
    return {f"{prefix}{i}": amount for i in range(1, n + 1)}


def days(n: int) -> timedelta:
    return timedelta(days=n)


__all__ = [
    "BalanceChanged",
    "CreditExhausted",
    "CreditLow",
    "EventRejected",
    "Student",
    "credits",
    "days",
    "units",
]
