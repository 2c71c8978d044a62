"""The benchmark's load: synthetic academic years of students, produced into the input topics.

`generate_load` builds the backlog (yearly packages: a registration with ~10 units, a result per
unit, some deregistrations and degrees, ~2% duplicates re-sent with the same bytes, keyed by
student id); `produce` writes it, completely, before any consumer under test starts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from aiokafka import AIOKafkaProducer

from learning_account_dev import events as ev
from learning_account_dev.devstack import PRODUCER_KWARGS


@dataclass
class Load:
    records: list[tuple[str, bytes, bytes]]
    students: int
    duplicates: int
    by_type: dict[str, int]


def course_units(rng: random.Random, prefix: str) -> dict[str, float]:
    count = rng.choice((8, 9, 10, 10, 10, 11, 12))
    return {f"{prefix}{i:02d}": rng.choice((3.0, 4.0, 5.0, 6.0, 6.0, 6.0)) for i in range(count)}


def student_year(
    rng: random.Random,
    sid: str,
    year: int,
    failed: dict[str, list[str]],
    *,
    pass_rate: float,
    deregistered_units: tuple[int, ...],
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """One student's academic year: a registration (new units plus up to 4 failed ones
    retaken), in 5% of cases a deregistration of some units on 3 October, and a result for every
    unit kept. `failed` is updated with this year's failed units."""
    units = course_units(rng, f"Y{year % 100}-")
    for code in failed.get(sid, [])[:4]:
        units[code] = 6.0
    codes = list(units)
    deregistration = None
    if rng.random() < 0.05:
        count = deregistered_units[0]
        if len(deregistered_units) > 1:
            count = rng.choice(deregistered_units)
        gone = rng.sample(codes, count)
        deregistration = ev.deregistration(sid, year, gone, date(year, 10, 3))
        codes = [c for c in codes if c not in gone]
    failed[sid] = []
    results = []
    for code in codes:
        outcome = "passed" if rng.random() < pass_rate else "failed"
        if outcome == "failed":
            failed[sid].append(code)
        results.append(ev.exam_result(sid, year, code, outcome))
    return ev.registration(sid, year, units), deregistration, results


def generate_load(students: int, seed: int = 7, duplicate_rate: float = 0.02) -> Load:
    """A chronological backlog: all registrations of a year, deregistrations, then results.

    Every student has academic year 2023-2024, ~30% also 2024-2025 (retaking failed units plus
    new ones), ~5% deregister 1-2 units, ~3% get a degree; ~2% of records are re-sent later with
    the same bytes (duplicates), a few hundred to a few thousand records further on.
    """
    rng = random.Random(seed)
    ids = [f"r{n:07d}" for n in range(students)]
    second_year = {sid for sid in ids if rng.random() < 0.30}
    phases: list[list[dict[str, Any]]] = []
    failed: dict[str, list[str]] = {}
    for year in (2023, 2024):
        active = ids if year == 2023 else [s for s in ids if s in second_year]
        regs, deregs, results = [], [], []
        for sid in active:
            registration, deregistration, year_results = student_year(
                rng, sid, year, failed, pass_rate=0.82, deregistered_units=(1, 2)
            )
            regs.append(registration)
            deregs.extend([deregistration] if deregistration else [])
            results.extend(year_results)
            if rng.random() < 0.03 and (year == 2024 or sid not in second_year):
                results.append(ev.degree(sid, year, rng.choice(("bachelor", "master"))))
        for phase in (regs, deregs, results):
            rng.shuffle(phase)
            phases.append(phase)
    records: list[tuple[str, bytes, bytes]] = []
    by_type: dict[str, int] = {}
    later: dict[int, list[tuple[str, bytes, bytes]]] = {}
    duplicates = 0
    position = 0
    for phase in phases:
        for event in phase:
            record = (ev.topic_of(event), event["data"]["student_id"].encode(), ev.to_bytes(event))
            kind = event["type"].rsplit(".", 2)[-2]
            by_type[kind] = by_type.get(kind, 0) + 1
            records.append(record)
            if rng.random() < duplicate_rate:
                later.setdefault(position + rng.randint(200, 3000), []).append(record)
            position += 1
            for dup in later.pop(position, ()):
                records.append(dup)
                duplicates += 1
    for dups in later.values():
        records.extend(dups)
        duplicates += len(dups)
    return Load(records, students, duplicates, by_type)


async def produce(bootstrap: str, records: Sequence[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    """Produce everything; the partition ends come from the RecordMetadata offsets."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024, **PRODUCER_KWARGS
    )
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    try:
        for chunk_start in range(0, len(records), 5000):
            futures = [
                await producer.send(topic, value, key=key)
                for topic, key, value in records[chunk_start : chunk_start + 5000]
            ]
            for meta in await asyncio.gather(*futures):
                tp = (meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {"ends": ends, "seconds": seconds, "events": len(records)}


def first_students(
    records: Sequence[tuple[str, bytes, bytes]], students: int
) -> list[tuple[str, bytes, bytes]]:
    """The records of the first `students` students (ids `r0000000` on), in backlog order: the
    same mix of events as the whole backlog."""
    return [record for record in records if int(record[1][1:]) < students]
