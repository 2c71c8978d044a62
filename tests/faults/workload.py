"""A reproducible stream of ≥10,000 input events for a few thousand students, in phases, and the
outcome the pure rules core computes from it (the oracle the fault tests compare against).

Each phase uses one input topic, so a student's events reach the service in the order they were
sent whatever the partitions and batches; the next phase is sent once the previous one is
committed. Duplicates (the same bytes again) and bad messages are mixed into every phase.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from hostile import HostileRecord, hostile_records

from learning_account.domain.model import Account, Policy
from learning_account.domain.rules import decide
from learning_account.processing.commands import to_command
from learning_account.processing.outputs import to_message
from learning_account.processing.store import event_digest
from learning_account.wire import (
    DEREGISTRATIONS_TOPIC,
    EXAM_RESULTS_TOPIC,
    REGISTRATIONS_TOPIC,
    decode,
)
from learning_account_dev import events as ev

NOW = 1_800_000_000.0


@dataclass
class Phase:
    topic: str
    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    hostile: list[HostileRecord] = field(default_factory=list)  # sent after the records


@dataclass
class Workload:
    phases: list[Phase]
    valid_events: int
    duplicates: int
    bad: list[tuple[str, bytes, bytes]]  # (topic, key, value)
    accounts: dict[str, Account]
    expected_outputs: dict[str, str]  # output id -> topic
    students: list[str]
    republished: int = 0  # outputs a clean run re-publishes for the duplicates sent

    @property
    def sent(self) -> int:
        return sum(len(phase.records) + len(phase.hostile) for phase in self.phases)


def _bad_messages(rng: random.Random) -> list[tuple[str, bytes]]:
    good = ev.registration("bad-student", 2016, {"A": 6})
    wrong_subject = json.loads(json.dumps(good))
    wrong_subject["subject"] = "someone-else"
    bad_id = json.loads(json.dumps(good))
    bad_id["subject"] = bad_id["data"]["student_id"] = "a{b}:c"
    zero = json.loads(json.dumps(good))
    zero["data"]["course_units"][0]["credits"] = 0
    year = json.loads(json.dumps(good))
    year["data"]["academic_year"] = "2016-2018"
    unknown_type = json.loads(json.dumps(good))
    unknown_type["type"] = "be.flanders.learning-account.unknown.v1"
    missing = json.loads(json.dumps(good))
    del missing["data"]["contract"]
    return [
        (REGISTRATIONS_TOPIC, b"not json at all"),
        (REGISTRATIONS_TOPIC, b"\xff\xfe\xfa binary"),
        (REGISTRATIONS_TOPIC, b"[1, 2, 3]"),
        (REGISTRATIONS_TOPIC, b""),
        (REGISTRATIONS_TOPIC, json.dumps(wrong_subject).encode()),
        (REGISTRATIONS_TOPIC, json.dumps(bad_id).encode()),
        (REGISTRATIONS_TOPIC, json.dumps(zero).encode()),
        (REGISTRATIONS_TOPIC, json.dumps(year).encode()),
        (REGISTRATIONS_TOPIC, json.dumps(unknown_type).encode()),
        (REGISTRATIONS_TOPIC, json.dumps(missing).encode()),
        (EXAM_RESULTS_TOPIC, json.dumps(good).encode()),  # a type on the wrong topic
        (EXAM_RESULTS_TOPIC, b'{"specversion": "1.0"}'),
        (DEREGISTRATIONS_TOPIC, b"null"),
        (DEREGISTRATIONS_TOPIC, b'"a string"'),
    ]


def generate(
    students: int = 800, seed: int = 7, duplicate_rate: float = 0.03, *, hostile: bool = False
) -> Workload:
    rng = random.Random(seed)
    ids = [f"f{seed}-{n:05d}" for n in range(students)]
    plans: dict[str, dict[str, Any]] = {}
    reg1, dereg1, res1, reg2, res2 = [], [], [], [], []
    for sid in ids:
        year = rng.choice([2016, 2017, 2018])
        kind, contract = rng.choice(
            [("bachelor", "diploma")] * 8
            + [
                ("bachelor", "credit"),
                ("master", "diploma"),
                ("bachelor", "exam"),
                ("preparatory", "diploma"),
            ]
        )
        units = {
            f"U{n:02d}": rng.choice([3, 4, 5, 6, 6, 6, 7.5, 9]) for n in range(rng.randint(5, 9))
        }
        reg1.append(ev.registration(sid, year, units, kind=kind, contract=contract))
        dropped: set[str] = set()
        if rng.random() < 0.2:
            dropped = set(rng.sample(sorted(units), k=rng.randint(1, 2)))
            on = date(year, 9, 26) + timedelta(days=rng.randint(1, 200))
            reason = rng.choice(["withdrawal", "programme_change"])
            dereg1.append(
                ev.deregistration(
                    sid,
                    year,
                    sorted(dropped),
                    on,
                    reason=reason,
                    reenrolled_on=on + timedelta(days=rng.randint(0, 20))
                    if reason == "programme_change"
                    else None,
                )
            )
        if rng.random() < 0.05:  # not registered: refused
            dereg1.append(ev.deregistration(sid, year, ["NOPE"], date(year, 10, 1)))
        for code in units:
            outcome = "passed" if rng.random() < 0.75 else rng.choice(["failed", "tolerated"])
            res1.append(ev.exam_result(sid, year, code, outcome))
        if rng.random() < 0.1:
            res1.append(ev.degree(sid, year, rng.choice(["bachelor", "master"])))
        if rng.random() < 0.7:
            later = year + rng.choice([1, 1, 1, 3])
            units2 = {f"V{n:02d}": rng.choice([3, 6, 6, 9]) for n in range(rng.randint(3, 7))}
            reg2.append(ev.registration(sid, later, units2))
            for code in units2:
                res2.append(
                    ev.exam_result(sid, later, code, "passed" if rng.random() < 0.7 else "failed")
                )
        plans[sid] = {"year": year}

    bad = _bad_messages(rng)
    phase_events = [
        (REGISTRATIONS_TOPIC, reg1),
        (DEREGISTRATIONS_TOPIC, dereg1),
        (EXAM_RESULTS_TOPIC, res1),
        (REGISTRATIONS_TOPIC, reg2),
        (EXAM_RESULTS_TOPIC, res2),
    ]
    phases: list[Phase] = []
    hostile_by_topic = hostile_records(seed) if hostile else {}
    duplicates = 0
    bad_sent: list[tuple[str, bytes, bytes]] = []
    order: list[dict[str, Any]] = []
    for topic, events in phase_events:
        records = [(e["data"]["student_id"].encode(), ev.to_bytes(e)) for e in events]
        order.extend(events)
        for key, value in list(records):
            if rng.random() < duplicate_rate:
                position = rng.randint(records.index((key, value)) + 1, len(records))
                records.insert(position, (key, value))
                duplicates += 1
        for bad_topic, value in bad:
            if (
                bad_topic == topic
                and rng.random() < 0.5
                and (bad_topic, value) not in [(t, v) for t, _, v in bad_sent]
            ):
                key = f"bad-{len(bad_sent)}".encode()
                records.insert(rng.randint(0, len(records)), (key, value))
                bad_sent.append((topic, key, value))
        extras = hostile_by_topic.pop(topic, [])
        bad_sent.extend((r.topic, r.key, r.value) for r in extras if r.bad)
        phases.append(Phase(topic, records, extras))

    accounts, expected, republished = oracle(phases)
    return Workload(
        phases=phases,
        valid_events=len(order)
        + sum(1 for phase in phases for record in phase.hostile if not record.bad),
        duplicates=duplicates,
        bad=bad_sent,
        accounts=accounts,
        expected_outputs=expected,
        students=ids,
        republished=republished,
    )


def oracle(phases: list[Phase]) -> tuple[dict[str, Account], dict[str, str], int]:
    """Apply every valid event once, in the order sent, with the pure core."""
    accounts: dict[str, Account] = {}
    outputs_of: dict[tuple[str, str], int] = {}
    republished = 0
    expected: dict[str, str] = {}
    policy = Policy()
    for phase in phases:
        valid_hostile = [(r.key, r.value) for r in phase.hostile if not r.bad]
        for key, value in [*phase.records, *valid_hostile]:
            try:
                command = to_command(decode(phase.topic, value, key))
            except ValueError:
                continue
            identity = (command.student_id, event_digest(command.event))
            if identity in outputs_of:
                republished += outputs_of[identity]  # a duplicate re-publishes its outputs
                continue
            account = accounts.get(command.student_id) or Account(command.student_id)
            decision = decide(account, command, now=NOW, policy=policy)
            accounts[command.student_id] = decision.account
            outputs_of[identity] = len(decision.events)
            for event in decision.events:
                message = to_message(event, "")
                expected[message.event_id] = message.topic
    return accounts, expected, republished
