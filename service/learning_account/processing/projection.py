"""What if: the rules applied to a stored account plus given events, writing and publishing nothing.

`project` is pure: it runs `domain.rules.decide` on each command in turn and reports, per step,
what the consumer would have done (contracts.md, POST /accounts/{id}/projection). `what_if_results`
uses it for the page's table of units still waiting for a result. `read_events` turns the
request's `{"type", "data"}` items into commands through the same `wire.decode` and `to_command`
as the input topics, so a projection accepts exactly what the topics accept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

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
    Command,
    EventRef,
    Policy,
    RecordResult,
    ResultOutcome,
)
from learning_account.domain.rules import decide
from learning_account.domain.statement import account_view
from learning_account.processing.commands import to_command
from learning_account.processing.outputs import now_text
from learning_account.wire import (
    EXAM_RESULT_RECORDED_TYPE,
    INPUT_TOPICS,
    INPUT_TYPES,
    TYPE_TOPIC,
    InvalidMessage,
    cloud_event,
    decode,
)

PROJECTION_SOURCE = "urn:learning-account:projection"
MAX_PROJECTED_EVENTS = 100

Announcement = CreditExhausted | CreditLow


@dataclass(frozen=True, slots=True)
class Outcome:
    """One step as the consumer would have taken it; `index` None for a result held in store."""

    index: int | None
    event_type: str
    accepted: bool
    held: bool
    reason: str | None
    previous_balance: int | None
    balance: int | None
    uncovered_credits: int
    additional_fee: bool
    announcements: tuple[Announcement, ...]


@dataclass(frozen=True, slots=True)
class Projection:
    account: Account
    outcomes: tuple[Outcome, ...]


def project(
    account: Account, commands: Sequence[Command], *, now: float, policy: Policy
) -> Projection:
    """Apply `commands` in order after the account's history; held results a step resolves
    (released, or refused) are reported again right after that step's own outcome."""
    indexes = {command.event: index for index, command in enumerate(commands)}
    outcomes: list[Outcome] = []
    for command in commands:
        before = account
        decision = decide(account, command, now=now, policy=policy)
        account = decision.account
        still_held = set(_held_events(account))
        balance = _outcome(command.event, indexes, before.balance, decision, still_held, outcomes)
        for event in _held_events(before):
            if event not in still_held:
                balance = _outcome(event, indexes, balance, decision, still_held, outcomes)
    return Projection(account, tuple(outcomes))


def _held_events(account: Account) -> list[EventRef]:
    return [held.command.event for held in account.held]


def _outcome(
    event: EventRef,
    indexes: dict[EventRef, int],
    balance: int | None,
    decision: Decision,
    still_held: set[EventRef],
    outcomes: list[Outcome],
) -> int | None:
    """Append the outcome of `event` within `decision`; returns the balance after it."""
    caused = [output for output in decision.events if output.caused_by == event]
    change = next((e for e in caused if isinstance(e, BalanceChanged)), None)
    refusal = next((e for e in caused if isinstance(e, EventRejected)), None)
    after = change.balance if change is not None else balance
    outcomes.append(
        Outcome(
            index=indexes.get(event),
            event_type=event.type,
            accepted=refusal is None,
            held=event in still_held,
            reason=None if refusal is None else str(refusal.reason),
            previous_balance=change.previous_balance if change is not None else balance,
            balance=after,
            uncovered_credits=change.uncovered_credits if change is not None else 0,
            additional_fee=change.additional_fee if change is not None else False,
            announcements=tuple(_announcements(caused)),
        )
    )
    return after


def _announcements(caused: list[DomainEvent]) -> list[Announcement]:
    return [e for e in caused if isinstance(e, CreditExhausted | CreditLow)]


def balance_as_read(account: Account, current_year: int) -> int | None:
    """The balance GET /accounts/{id} would show (R6.3 years included); None without account."""
    if account.balance is None:
        return None
    return account_view(account, current_year).balance


# --- the page's what-if table -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitWhatIf:
    code: str
    credits: int
    if_passed: int
    if_failed: int


@dataclass(frozen=True, slots=True)
class WhatIf:
    academic_year: int
    units: tuple[UnitWhatIf, ...]


def what_if_results(
    account: Account, *, current_year: int, today: date, now: float, policy: Policy
) -> WhatIf | None:
    """For the latest academic year with registered units that use the account, each unit
    without a result (restored units excluded: closed, R3.8) and the balance if it alone is
    passed, and if it alone is failed."""
    registered = [
        (year, code, unit)
        for (year, code), unit in account.units.items()
        if unit.uses_account and not unit.deregistered
    ]
    if not registered:
        return None
    latest = max(year for year, _, _ in registered)
    rows: list[UnitWhatIf] = []
    for year, code, unit in sorted(registered, key=lambda item: item[1]):
        if year != latest or unit.result is not None or unit.restored:
            continue
        balances = []
        for outcome in (ResultOutcome.PASSED, ResultOutcome.FAILED):
            result = RecordResult(
                event=EventRef(PROJECTION_SOURCE, f"{code}:{outcome}", EXAM_RESULT_RECORDED_TYPE),
                student_id=account.student_id,
                academic_year=year,
                unit_code=code,
                outcome=outcome,
                recorded_on=today,
            )
            projected = project(account, [result], now=now, policy=policy).account
            balance = balance_as_read(projected, current_year)
            assert balance is not None  # a unit that uses the account means an open account
            balances.append(balance)
        rows.append(UnitWhatIf(code, unit.credits, *balances))
    return WhatIf(latest, tuple(rows))


# --- the request's events, validated as the topics validate them --------------------------


class InvalidProjection(Exception):
    """A request the projection refuses: `index` is the event's position, None for the body."""

    def __init__(self, error: str, error_code: str, index: int | None) -> None:
        super().__init__(error)
        self.error = error
        self.error_code = error_code
        self.index = index


def read_events(student_id: str, events: Any, *, now: float) -> list[Command]:
    """The commands of the request's `events`, each wrapped in the CloudEvent a producer would
    send (`subject` the path's student, stamped now) and decoded as its input topic would."""
    if not isinstance(events, list):
        raise InvalidProjection("events must be a list", "invalid_envelope", None)
    if not 1 <= len(events) <= MAX_PROJECTED_EVENTS:
        raise InvalidProjection(
            f"events must hold 1 to {MAX_PROJECTED_EVENTS} events, not {len(events)}",
            "invalid_envelope",
            None,
        )
    time = now_text(int(now * 1000))
    commands: list[Command] = []
    for index, given in enumerate(events):
        if not isinstance(given, dict):
            raise InvalidProjection("an event must be an object", "invalid_envelope", index)
        event_type = given.get("type")
        topic = TYPE_TOPIC.get(event_type) if isinstance(event_type, str) else None
        if topic is not None and event_type not in INPUT_TYPES:
            raise InvalidProjection(
                f"{event_type!r} is not an input event type", "unknown_type", index
            )
        message = cloud_event(
            given.get("type", ""),
            given.get("data"),
            event_id=str(index),
            source=PROJECTION_SOURCE,
            time=time,
            subject=student_id,
        )
        for name in ("type", "data"):
            if name not in given:
                del message[name]  # absent, not null: decode names what is missing
        # an unknown or missing type is read as on any input topic: decode names the error
        value = json.dumps(message).encode()
        try:
            # stamped now: the academic years it may name end one after today's
            commands.append(to_command(decode(topic or INPUT_TOPICS[0], value, stamped_at=now)))
        except InvalidMessage as error:
            raise InvalidProjection(error.reason, str(error.code), index) from None
    return commands
