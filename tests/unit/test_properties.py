"""Property tests: the decoder never crashes, the rules keep their invariants, delivery is exact.

(a) Garbage bytes, random JSON and mutated valid events thrown at `decode`: a DecodedEvent or an
    InvalidMessage with a short reason, never another exception.
(b) Valid but strange event sequences for one student applied through `decide`: never raises,
    and the invariants of rules.md hold after every step.
(c) Through the real Processor and Redis: random duplicates and batch splits end in the same
    state as one clean delivery.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import hypothesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.adapters.state_codec import encode_account
from learning_account.domain.events import (
    BalanceChanged,
    CreditExhausted,
    CreditLow,
    Decision,
    EventRejected,
)
from learning_account.domain.model import (
    BONUS_CAP,
    OPENING_BALANCE,
    REBUILD_CEILING,
    REBUILD_STEP,
    Account,
    Command,
    CorrectResult,
    EntryKind,
    Policy,
    RecordResult,
    Register,
    ResultOutcome,
)
from learning_account.domain.rebuilding import last_counted_year
from learning_account.domain.rules import decide
from learning_account.domain.statement import account_view, statement
from learning_account.processing.commands import to_command
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.wire import (
    DEREGISTRATIONS_TOPIC,
    EXAM_RESULTS_TOPIC,
    INPUT_TOPICS,
    MAX_REASON_CHARS,
    REGISTRATIONS_TOPIC,
    DecodedEvent,
    InvalidMessage,
    decode,
)
from learning_account_dev import events as ev

FAST = settings(max_examples=200, deadline=None)
STUDENT = "r0123456"
POLICY = Policy(low_balance_thresholds=(60 * 4, 20 * 4, 0))
#: A marker longer than any clipped text in a reason: it must never show up whole.
MARKER = "M" * 150


# =================================================================================================
# (a) decode never crashes
# =================================================================================================


def _valid_events() -> list[dict[str, Any]]:
    units = {"PSY101": 6, "PSY102": 2.5}
    registration = ev.registration(STUDENT, 2016, units, event_id="e1", generation_student=True)
    registration["data"]["course_units"][1].update(
        first_term_of_first_track=True, border_date="2016-10-30"
    )
    return [
        registration,
        ev.exam_result(STUDENT, 2016, "PSY101", event_id="e2"),
        ev.degree(STUDENT, 2018, "master", event_id="e3"),
        ev.deregistration(
            STUDENT,
            2016,
            ["PSY101", "PSY102"],
            date(2016, 11, 20),
            reason="programme_change",
            reenrolled_on=date(2016, 11, 25),
            event_id="e4",
        ),
    ]


VALID_EVENTS = _valid_events()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (not the root)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "1.0", MARKER, "2016-2017", "2016-09-26", "passed", "master"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
enum_like = st.sampled_from(
    [
        "bachelor",
        "master",
        "preparatory",
        "diploma",
        "credit",
        "exam",
        "passed",
        "failed",
        "tolerated",
        "withdrawal",
        "programme_change",
        "Bachelor",
        " passed",
        "PASSED",
    ]
) | st.text(max_size=15)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    event = copy.deepcopy(draw(st.sampled_from(VALID_EVENTS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(_paths(event))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["drop", "retype", "enum", "string", "number", "marker"]))
        if action == "drop":
            del parent[last]
        elif action == "retype":
            parent[last] = draw(json_values)
        elif action == "enum":
            parent[last] = draw(enum_like)
        elif action == "string":
            parent[last] = str(parent[last])
        elif action == "number":
            parent[last] = draw(
                st.integers(min_value=-(2**80), max_value=2**80)
                | st.floats(allow_nan=False)
                | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float)
            )
        else:
            parent[last] = MARKER
    if draw(st.booleans()):
        event[draw(st.text(max_size=8))] = draw(json_values)
    return json.dumps(event).encode()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


garbage = st.one_of(
    st.binary(max_size=400),
    json_values.map(_json_bytes),
    st.dictionaries(st.text(max_size=15), json_values, max_size=8).map(_json_bytes),
    mutated_events(),
    mutated_events().map(lambda raw: raw[: len(raw) // 2]),
    mutated_events().map(lambda raw: raw.replace(b'"', b"'", 1)),
)


def _check_decode(topic: str, value: bytes | None) -> DecodedEvent | None:
    try:
        decoded = decode(topic, value, b"k")
    except InvalidMessage as error:
        assert isinstance(error.reason, str) and error.reason
        assert len(error.reason) <= MAX_REASON_CHARS
        assert MARKER not in error.reason
        if value is not None and len(value) > 20:
            assert value.decode("utf-8", "replace") not in error.reason
        return None
    assert isinstance(decoded, DecodedEvent)
    assert decoded.topic == topic
    # what decode accepts must turn into a command
    command = to_command(decoded)
    assert command.student_id == decoded.subject
    return decoded


@FAST
@given(
    topic=st.sampled_from([*INPUT_TOPICS, "learning-account.unknown.v1"]),
    value=garbage | st.none(),
)
def test_decode_only_accepts_or_refuses(topic: str, value: bytes | None) -> None:
    _check_decode(topic, value)


@FAST
@given(value=mutated_events())
def test_decode_of_mutated_events_on_their_own_topic(value: bytes) -> None:
    try:
        topic = ev.topic_of(json.loads(value))
    except (KeyError, TypeError):
        topic = REGISTRATIONS_TOPIC
    _check_decode(topic, value)


# --- what decode accepts, the core must be able to apply ---------------------------------------


@st.composite
def extreme_events(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A valid registration and a follow-up event with extreme (but decodable) years and dates."""
    year = draw(st.integers(min_value=0, max_value=9998))
    days = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
    registration = ev.registration(STUDENT, 2016, {"A": 6}, event_id="x1")
    registration["data"]["academic_year"] = f"{year:04d}-{year + 1:04d}"
    unit = registration["data"]["course_units"][0]
    unit["starts_on"] = draw(days).isoformat()
    unit["first_term_of_first_track"] = draw(st.booleans())
    registration["data"]["registered_on"] = draw(days).isoformat()
    follow = ev.deregistration(
        STUDENT,
        2016,
        ["A"],
        draw(days),
        reason=draw(st.sampled_from(["withdrawal", "programme_change"])),
        reenrolled_on=draw(days),
        generation_student=draw(st.none() | st.booleans()),
        event_id="x2",
    )
    follow["data"]["academic_year"] = registration["data"]["academic_year"]
    return [registration], follow


def _overflowing_border_date_case() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # OverflowError: starts_on 9999-12-20 + 14 days is past date.max
    registration = ev.registration(STUDENT, 2016, {"A": 6}, event_id="x1")
    registration["data"]["course_units"][0]["starts_on"] = "9999-12-20"
    return [registration], ev.degree(STUDENT, 2017, "bachelor", event_id="x2")


def _year_zero_case() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # ValueError: date(0, 12, 1) in the generation-student refund of academic year "0000-0001"
    registration = ev.registration(STUDENT, 2016, {"A": 6}, event_id="x1")
    registration["data"]["academic_year"] = "0000-0001"
    deregistration = ev.deregistration(
        STUDENT,
        2016,
        ["A"],
        date(2016, 11, 20),
        reason="programme_change",
        reenrolled_on=date(2016, 11, 25),
        event_id="x2",
    )
    deregistration["data"]["academic_year"] = "0000-0001"
    return [registration], deregistration


@settings(max_examples=100, deadline=None)
@given(events=extreme_events())
@example(events=_overflowing_border_date_case())
@example(events=_year_zero_case())
def test_every_decodable_event_can_be_applied(
    events: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    """Whatever decode accepts must not make the rules raise (else: an 'internal error' letter).

    Decode refuses academic years outside 2008-2009 .. one after the record's; any ISO date is
    accepted.
    """
    setup, follow = events
    account = Account(STUDENT)
    for event in [*setup, follow]:
        try:
            decoded = decode(ev.topic_of(event), ev.to_bytes(event))
        except InvalidMessage:
            continue  # refused at the edge: dead-lettered, never reaches the rules
        account = decide(account, to_command(decoded), now=0.0, policy=POLICY).account


# =================================================================================================
# (b) valid but strange sequences through decide(): invariants after every step
# =================================================================================================

UNIT_CODES = ["A", "B", "C", "D", "E"]
UNKNOWN_CODES = ["Z", "Q"]
years = st.integers(min_value=2010, max_value=2030)
#: Course-unit credits: multiples of 0.5 up to 60, mostly the usual small ones.
credits = st.one_of(
    st.integers(min_value=1, max_value=24).map(lambda halves: halves / 2),
    st.integers(min_value=1, max_value=120).map(lambda halves: halves / 2),
)
EXEMPT_KINDS = ["preparatory", "bachelor_after_bachelor", "master_after_master"]


@st.composite
def registration_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    year = draw(years)
    codes = draw(st.lists(st.sampled_from(UNIT_CODES), min_size=1, max_size=4, unique=True))
    event = ev.registration(
        STUDENT,
        year,
        {code: draw(credits) for code in codes},
        kind=draw(st.sampled_from([*["bachelor"] * 3, *["master"] * 2, *EXEMPT_KINDS])),
        contract=draw(st.sampled_from(["diploma", "diploma", "diploma", "credit", "exam"])),
        starts_on=date(year, 9, 1) + timedelta(days=draw(st.integers(0, 200))),
        exceptional_admission=draw(st.booleans()),
        generation_student=draw(st.none() | st.booleans()),
        event_id=event_id,
    )
    for unit in event["data"]["course_units"]:
        if draw(st.booleans()):
            unit["first_term_of_first_track"] = True
        if draw(st.integers(0, 3)) == 0:
            unit["border_date"] = (
                date(year, 9, 1) + timedelta(draw(st.integers(0, 300)))
            ).isoformat()
    return event


@st.composite
def result_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    return ev.exam_result(
        STUDENT,
        draw(years),
        draw(st.sampled_from(UNIT_CODES + UNKNOWN_CODES)),
        draw(st.sampled_from(["passed", "passed", "failed", "tolerated"])),
        event_id=event_id,
    )


@st.composite
def degree_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    return ev.degree(
        STUDENT, draw(years), draw(st.sampled_from(["bachelor", "master"])), event_id=event_id
    )


@st.composite
def deregistration_events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    year = draw(years)
    day = date(year, 9, 1) + timedelta(days=draw(st.integers(0, 400)))
    reason = draw(st.sampled_from(["withdrawal", "programme_change"]))
    return ev.deregistration(
        STUDENT,
        year,
        draw(
            st.lists(
                st.sampled_from(UNIT_CODES + UNKNOWN_CODES[:1]), min_size=1, max_size=3, unique=True
            )
        ),
        day,
        reason=reason,
        reenrolled_on=(
            day + timedelta(days=draw(st.integers(-30, 60)))
            if reason == "programme_change" or draw(st.booleans())
            else None
        ),
        generation_student=draw(st.none() | st.booleans()),
        event_id=event_id,
    )


OUTCOMES = ["passed", "passed", "failed", "tolerated"]
KINDS = ["reg", "reg", "reg", "res", "res", "res", "res", "deg", "der", "der"]
#: More corrections and restorations than an institution sends, to reach their corners.
KINDS_WITH_AFTERTHOUGHTS = [*KINDS, "cor", "cor", "cor", "rst", "rst"]


@st.composite
def event_sequences(
    draw: st.DrawFn, max_size: int = 25, kinds: list[str] = KINDS
) -> list[dict[str, Any]]:
    size = draw(st.integers(min_value=1, max_value=max_size))
    out: list[dict[str, Any]] = []
    registered: list[tuple[int, str]] = []  # (year, code) of registrations sent so far
    resulted: list[tuple[int, str]] = []  # ... and of results sent for them
    for index in range(size):
        event_id = f"ev-{index}"
        kind = draw(st.sampled_from(kinds))
        # mostly about a unit registered earlier in the sequence, in its year
        known = bool(registered) and draw(st.integers(0, 3)) > 0
        if kind == "reg":
            event = draw(registration_events(event_id))
            year = int(event["data"]["academic_year"][:4])
            registered.extend((year, unit["code"]) for unit in event["data"]["course_units"])
        elif kind == "res" and known:
            year, code = draw(st.sampled_from(registered))
            outcome = draw(st.sampled_from(["passed", "passed", "failed", "tolerated"]))
            event = ev.exam_result(STUDENT, year, code, outcome, event_id=event_id)
            resulted.append((year, code))
        elif kind == "res":
            event = draw(result_events(event_id))
        elif kind == "cor":
            if resulted and draw(st.integers(0, 3)) > 0:
                year, code = draw(st.sampled_from(resulted))
            elif known:
                year, code = draw(st.sampled_from(registered))
            else:
                year, code = draw(years), draw(st.sampled_from(UNIT_CODES + UNKNOWN_CODES))
            outcome = draw(st.sampled_from(OUTCOMES))
            event = ev.exam_result_correction(STUDENT, year, code, outcome, event_id=event_id)
        elif kind == "rst":
            year = draw(st.sampled_from(registered))[0] if known else draw(years)
            same_year = sorted({c for y, c in registered if y == year} or {"A"})
            codes = draw(st.lists(st.sampled_from(same_year), min_size=1, max_size=3, unique=True))
            if draw(st.integers(0, 5)) == 0:
                codes.append(UNKNOWN_CODES[0])
            event = ev.credits_restoration(STUDENT, year, codes, event_id=event_id)
        elif kind == "deg":
            event = draw(degree_events(event_id))
        elif known:
            year, code = draw(st.sampled_from(registered))
            codes = sorted({code, *draw(st.lists(st.sampled_from(UNIT_CODES), max_size=2))})
            event = draw(deregistration_events(event_id))
            event["data"]["academic_year"] = ev.academic_year(year)
            event["data"]["course_unit_codes"] = codes
            day = date(year, 9, 1) + timedelta(days=draw(st.integers(0, 250)))
            event["data"]["deregistered_on"] = day.isoformat()
            if event["data"]["reenrolled_on"] is not None:
                later = day + timedelta(days=draw(st.integers(0, 40)))
                event["data"]["reenrolled_on"] = later.isoformat()
        else:
            event = draw(deregistration_events(event_id))
        out.append(event)
    return out


# the records' time: academic years up to 2031-2032 are valid (one after the record's), whenever
# the tests run
STAMPED_AT = datetime(2031, 1, 1, tzinfo=UTC).timestamp()


def to_commands(events: list[dict[str, Any]]) -> list[Command]:
    return [
        to_command(decode(ev.topic_of(e), ev.to_bytes(e), STUDENT.encode(), stamped_at=STAMPED_AT))
        for e in events
    ]


@dataclass
class History:
    """What the whole sequence did so far, for invariants that span steps."""

    rebuilt_years: set[int]
    invested: dict[tuple[int, str], int]  # per unit: its current registration's credits
    returned: dict[
        tuple[int, str], int
    ]  # ... and what came back for it (acquired, refunded, restored)
    opened: int = 0
    degree_deductions: int = 0
    rebuilt_seen: bool = False


def check_step(
    before: Account,
    command: Command,
    decision: Decision,
    commands_by_id: dict[str, Command],
    history: History,
) -> None:
    after = decision.account
    events = decision.events
    changes = [e for e in events if isinstance(e, BalanceChanged)]

    # --- balance-changed chain: previous_balance + sum(entries) == balance, in publish order
    running = before.balance if before.balance is not None else 0
    for change in changes:
        assert change.previous_balance == running
        entries_sum = sum(entry.amount for entry in change.entries)
        assert change.balance == change.previous_balance + entries_sum
        assert change.delta == entries_sum
        assert change.entries, "a balance-changed without entries"
        running = change.balance
    if after.balance is None:
        assert not changes
    else:
        assert running == after.balance
    if changes:
        assert len({c.caused_by for c in changes}) == len(changes), "one change per cause"

    # --- integers everywhere (quarter-credits)
    for change in changes:
        for value in (change.previous_balance, change.balance, change.uncovered_credits):
            assert type(value) is int
        assert change.uncovered_credits >= 0
        for entry in change.entries:
            assert type(entry.amount) is int and entry.amount != 0
    for value in (after.balance, after.bonus_granted):
        assert value is None or type(value) is int
    for totals in after.years.values():
        for part in (totals.invested, totals.acquired, totals.bonus, totals.refunded):
            assert type(part) is int
        assert type(totals.degree_deduction) is int and type(totals.rebuilt) is int

    # --- the balance is the opening plus the year totals
    if after.balance is not None:
        assert after.balance == OPENING_BALANCE + sum(t.total for t in after.years.values())
    else:
        assert before.balance is None

    # --- bonus: capped at 60, taken back only by corrections, none once a rebuild added credits
    assert 0 <= after.bonus_granted <= BONUS_CAP
    bonus_this_step = sum(e.amount for c in changes for e in c.entries if e.kind is EntryKind.BONUS)
    assert after.bonus_granted - before.bonus_granted == bonus_this_step

    # --- entries one by one: rebuild alone never passes 60, opened once, degree once
    for change in changes:
        running = change.previous_balance
        for entry in change.entries:
            if entry.kind is EntryKind.REBUILT:
                assert running < REBUILD_CEILING
                assert 0 < entry.amount <= REBUILD_STEP
                assert running + entry.amount <= REBUILD_CEILING
                assert entry.academic_year not in history.rebuilt_years, "a year rebuilt twice"
                history.rebuilt_years.add(entry.academic_year)
                history.rebuilt_seen = True
            elif entry.kind is EntryKind.BONUS and entry.amount < 0:
                assert isinstance(commands_by_id[change.caused_by.id], CorrectResult)
            elif entry.kind is EntryKind.BONUS:
                assert not history.rebuilt_seen, "bonus after a rebuild added credits"
            elif entry.kind is EntryKind.OPENED:
                assert entry.amount == OPENING_BALANCE
                assert change.previous_balance == 0 and running == 0
                history.opened += 1
            elif entry.kind is EntryKind.DEGREE_DEDUCTION:
                assert entry.amount == -140 * 4
                history.degree_deductions += 1
            elif entry.kind is EntryKind.INVESTED:
                assert entry.amount < 0
            elif entry.kind is EntryKind.ACQUIRED and entry.amount < 0:
                assert isinstance(commands_by_id[change.caused_by.id], CorrectResult)
            else:
                assert entry.amount > 0
            running += entry.amount
            # a unit's invested credits come back at most once (R3.7, R3.8: net of corrections)
            if entry.course_unit_code is not None and entry.kind is not EntryKind.BONUS:
                unit = (entry.academic_year, entry.course_unit_code)
                if entry.kind is EntryKind.INVESTED:
                    history.invested[unit] = -entry.amount
                    history.returned[unit] = 0
                else:
                    history.returned[unit] += entry.amount
                    assert 0 <= history.returned[unit] <= history.invested[unit], unit
    assert history.opened == (0 if after.balance is None else 1)
    assert history.degree_deductions <= 1

    # --- a failed or tolerated result changes nothing (beyond the rebuild it triggers)
    for change in changes:
        cause = commands_by_id[change.caused_by.id]
        if isinstance(cause, RecordResult) and cause.outcome is not ResultOutcome.PASSED:
            assert all(e.kind is EntryKind.REBUILT for e in change.entries), change

    # --- registrations: uncovered credits and the additional fee (R2.3/R2.4)
    for change in changes:
        cause = commands_by_id[change.caused_by.id]
        invested = -sum(e.amount for e in change.entries if e.kind is EntryKind.INVESTED)
        if not isinstance(cause, Register) or not invested:
            assert change.uncovered_credits == 0 and not change.additional_fee
            continue
        available = change.previous_balance + sum(
            e.amount for e in change.entries if e.kind is EntryKind.REBUILT
        )
        if any(e.kind is EntryKind.OPENED for e in change.entries):
            available = OPENING_BALANCE
        assert change.uncovered_credits == max(0, invested - max(0, available))
        assert change.additional_fee == (available <= 0)

    # --- a refused event applies nothing but its rebuild
    refused_causes = {e.caused_by for e in events if isinstance(e, EventRejected)}
    if command.event in refused_causes:
        assert after.units == before.units
        for change in changes:
            if change.caused_by == command.event:
                assert all(e.kind is EntryKind.REBUILT for e in change.entries)

    # --- announcements judge each change as a whole (R7)
    for change in changes:
        opened = any(e.kind is EntryKind.OPENED for e in change.entries)
        judged_from = OPENING_BALANCE if opened else change.previous_balance
        exhausted = [
            e for e in events if isinstance(e, CreditExhausted) and e.caused_by == change.caused_by
        ]
        assert len(exhausted) == (1 if judged_from > 0 >= change.balance else 0)
        lows = sorted(
            e.threshold
            for e in events
            if isinstance(e, CreditLow) and e.caused_by == change.caused_by
        )
        expected = sorted(
            t for t in POLICY.low_balance_thresholds if judged_from >= t > change.balance
        )
        assert lows == expected
    announced = {e.caused_by for e in events if isinstance(e, CreditExhausted | CreditLow)}
    assert announced <= {c.caused_by for c in changes}

    # --- the statement adds up and ends at the balance
    if after.balance is not None:
        counted = last_counted_year(after)
        no_projection_year = (counted if counted is not None else 2010) + 1
        rows = statement(after, no_projection_year)
        assert rows and not any(row.projected for row in rows)
        assert rows[-1].balance == after.balance
        start = OPENING_BALANCE
        for row in rows:
            assert row.start == start
            assert row.balance == row.start + (
                row.invested
                + row.acquired
                + row.bonus
                + row.refunded
                + row.restored
                + row.degree_deduction
                + row.rebuilt
            )
            start = row.balance
        for current_year in (2031, 2045):
            rows = statement(after, current_year)
            view = account_view(after, current_year)
            assert rows[-1].balance == view.balance
            projected = [row for row in rows if row.projected]
            assert all(0 < row.rebuilt <= REBUILD_STEP for row in projected)
            if after.balance >= REBUILD_CEILING:
                assert view.balance == after.balance and not projected
            else:
                assert after.balance <= view.balance <= REBUILD_CEILING


def _label(decision: Decision) -> None:
    """Hypothesis statistics (`--hypothesis-show-statistics`): which rules the data reached."""
    for out in decision.events:
        if isinstance(out, EventRejected):
            hypothesis.event(f"refused {out.reason}")
        elif isinstance(out, CreditExhausted):
            hypothesis.event("credit exhausted")
        elif isinstance(out, BalanceChanged):
            for entry in out.entries:
                taken_back = entry.amount < 0 and entry.kind in (
                    EntryKind.ACQUIRED,
                    EntryKind.BONUS,
                )
                hypothesis.event(f"entry {entry.kind}{' taken back' if taken_back else ''}")
            if out.additional_fee:
                hypothesis.event("additional fee")


def run(commands: list[Command], clock_steps: list[float], *, check: bool) -> list[Decision]:
    account = Account(STUDENT)
    by_id = {command.event.id: command for command in commands}
    history = History(rebuilt_years=set(), invested={}, returned={})
    decisions: list[Decision] = []
    now = 1_000_000.0
    for command, step in zip(commands, clock_steps, strict=True):
        now += step
        decision = decide(account, command, now=now, policy=POLICY)
        if check:
            _label(decision)
            check_step(account, command, decision, by_id, history)
        decisions.append(decision)
        account = decision.account
    return decisions


@FAST
@given(data=st.data())
def test_rules_keep_their_invariants_on_strange_sequences(data: st.DataObject) -> None:
    events = data.draw(event_sequences())
    # mostly quick, sometimes more than the holding time: held results also expire
    clock_steps = data.draw(
        st.lists(
            st.sampled_from([0.0, 1.0, 3600.0, 86400.0 * 3, 604800.0, 604800.0 * 2]),
            min_size=len(events),
            max_size=len(events),
        )
    )
    commands = to_commands(events)
    first = run(commands, clock_steps, check=True)
    second = run(to_commands(events), clock_steps, check=False)
    assert first == second, "the same sequence from scratch gave a different result"


@FAST
@given(data=st.data())
def test_corrections_and_restorations_never_return_credits_twice(data: st.DataObject) -> None:
    """Random sequences with corrections and restorations: no unit's invested credits come
    back more than once, bonus_granted stays within 0..60 (checked after every step)."""
    events = data.draw(event_sequences(max_size=30, kinds=KINDS_WITH_AFTERTHOUGHTS))
    clock_steps = data.draw(
        st.lists(st.sampled_from([0.0, 1.0, 604800.0]), min_size=len(events), max_size=len(events))
    )
    run(to_commands(events), clock_steps, check=True)


@FAST
@given(events=event_sequences(max_size=15), repeat=st.integers(min_value=1, max_value=3))
def test_repeating_the_same_packages_never_breaks_invariants(
    events: list[dict[str, Any]], repeat: int
) -> None:
    # The same units over and over (new event ids): already_registered, results twice, ...
    repeated = [
        {**copy.deepcopy(event), "id": f"{event['id']}-r{round_}"}
        for round_ in range(repeat)
        for event in events
    ]
    run(to_commands(repeated), [1.0] * len(repeated), check=True)


@FAST
@given(data=st.data())
def test_a_decision_names_exactly_the_years_and_units_it_changed(data: st.DataObject) -> None:
    """What the store writes back: the totals of the years a step booked to, the units it set;
    a year rebuilt (R6.2, never read by the store) had no totals before."""
    events = data.draw(event_sequences(max_size=30, kinds=KINDS_WITH_AFTERTHOUGHTS))
    clock_steps = data.draw(
        st.lists(st.sampled_from([0.0, 604800.0]), min_size=len(events), max_size=len(events))
    )
    account = Account(STUDENT)
    now = 1_000_000.0
    for command, step in zip(to_commands(events), clock_steps, strict=True):
        now += step
        decision = decide(account, command, now=now, policy=POLICY)
        after = decision.account
        booked = {
            entry.academic_year
            for event in decision.events
            if isinstance(event, BalanceChanged)
            for entry in event.entries
        }
        assert decision.touched.totals == booked
        changed_totals = {y for y in after.years if after.years[y] != account.years.get(y)}
        assert changed_totals <= decision.touched.totals
        changed_units = {k for k in after.units if after.units[k] != account.units.get(k)}
        assert changed_units <= decision.touched.units
        assert decision.touched.units <= set(after.units)
        for event in decision.events:
            if isinstance(event, BalanceChanged):
                for entry in event.entries:
                    if entry.kind is EntryKind.REBUILT:
                        assert entry.academic_year not in account.years, entry
        account = after


# =================================================================================================
# (c) the Processor with Redis: duplicates and batch splits do not change the outcome
# =================================================================================================

_TOPIC_PARTITION = {REGISTRATIONS_TOPIC: 0, EXAM_RESULTS_TOPIC: 1, DEREGISTRATIONS_TOPIC: 2}


def _records(events: list[dict[str, Any]]) -> list[InputRecord]:
    offsets: dict[str, int] = {}
    out = []
    for event in events:
        topic = ev.topic_of(event)
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append(
            InputRecord(
                topic,
                _TOPIC_PARTITION[topic],
                offsets[topic],
                STUDENT.encode(),
                ev.to_bytes(event),
                int(STAMPED_AT * 1000),
            )
        )
    return out


@st.composite
def redeliveries(draw: st.DrawFn) -> tuple[list[InputRecord], list[list[InputRecord]]]:
    """A sequence, and the same sequence with redelivered records and cut into random batches."""
    events = draw(event_sequences(max_size=15, kinds=KINDS_WITH_AFTERTHOUGHTS))
    records = _records(events)
    delivered: list[InputRecord] = []
    for index, record in enumerate(records):
        delivered.append(record)
        # a redelivery repeats an earlier record (its original is already delivered)
        for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
            delivered.append(records[draw(st.integers(0, index))])
    cuts = sorted(
        draw(st.lists(st.integers(1, max(1, len(delivered) - 1)), max_size=5, unique=True))
    )
    batches = [
        delivered[start:end]
        for start, end in zip([0, *cuts], [*cuts, len(delivered)], strict=True)
        if delivered[start:end]
    ]
    if draw(st.booleans()):  # a whole batch delivered twice (a crash before the commit)
        which = draw(st.integers(0, len(batches) - 1))
        batches.insert(which + 1, list(batches[which]))
    return records, batches


def _canonical_state(account: Account | None) -> Any:
    if account is None:
        return None
    return encode_account(account)


def _outputs_by_id(messages: list[Any]) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    for message in messages:
        data = json.loads(message.value)["data"]
        previous = out.setdefault(message.event_id, (message.topic, data))
        assert previous == (message.topic, data), "one output id with two contents"
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=redeliveries())
async def test_duplicates_and_batch_splits_end_in_the_same_state(
    redis_client: Redis, delivery: tuple[list[InputRecord], list[list[InputRecord]]]
) -> None:
    records, batches = delivery
    now = 1_700_000_000.0

    await redis_client.flushall()
    once = Processor(RedisStore(redis_client), POLICY, clock=lambda: now)
    clean = await once.process(records)
    clean_state = _canonical_state(await once.store.get(STUDENT, with_units=True))
    clean_outputs = _outputs_by_id(clean.outputs)

    await redis_client.flushall()
    split = Processor(RedisStore(redis_client), POLICY, clock=lambda: now)
    messages: list[Any] = []
    for batch in batches:
        report = await split.process(batch)
        messages.extend(report.outputs)
        assert report.dead_lettered == 0
    split_state = _canonical_state(await split.store.get(STUDENT, with_units=True))
    hypothesis.event(f"batches: {min(len(batches), 5)}")
    hypothesis.event(f"duplicates: {sum(map(len, batches)) > len(records)}")

    assert split_state == clean_state
    assert _outputs_by_id(messages) == clean_outputs
