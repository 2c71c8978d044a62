"""The merge of one partition number's three input topic-partitions (contracts.md "Order")."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from learning_account.processing.ordering import (
    Merge,
    NotCoPartitioned,
    check_co_partitioned,
    in_record_order,
)
from learning_account.processing.pipeline import InputRecord
from learning_account.wire import DEREGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC, REGISTRATIONS_TOPIC

REG, RES, DEREG = REGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC, DEREGISTRATIONS_TOPIC
BASE = 1_700_000_000_000
"""Record timestamps are milliseconds after this (one before 2008 counts as none)."""
CLOCK = 1_000_000


def at(topic: str, offset: int, ms: int | None, partition: int = 0) -> InputRecord:
    return InputRecord(topic, partition, offset, None, b"", None if ms is None else BASE + ms)


def times(records: list[InputRecord]) -> list[int]:
    return [(record.timestamp_ms or 0) - BASE for record in records]


def order(records: list[InputRecord]) -> list[tuple[str, int]]:
    return [(record.topic, record.offset) for record in records]


def held(*records: InputRecord, clock: int = CLOCK) -> Merge:
    merge = Merge(0)
    for record in records:
        merge.add(record, BASE + clock)
    return merge


def test_the_smallest_head_time_goes_first_each_topic_in_offset_order() -> None:
    merge = held(at(REG, 0, 10), at(REG, 1, 30), at(RES, 0, 20), at(RES, 1, 40))
    assert order(merge.release()) == [(REG, 0), (RES, 0), (REG, 1), (RES, 1)]
    assert merge.time == BASE + 40 and merge.released_time == {REG: BASE + 30, RES: BASE + 40}


def test_equal_times_go_registrations_exam_results_deregistrations() -> None:
    merge = held(at(DEREG, 0, 5), at(RES, 0, 5), at(REG, 0, 5))
    assert order(merge.release()) == [(REG, 0), (RES, 0), (DEREG, 0)]


def test_a_record_time_is_never_before_the_latest_read_on_its_partition() -> None:
    # the registration stamped 10 after one stamped 50 counts as 50: it stays behind the result
    merge = held(at(REG, 0, 50), at(REG, 1, 10), at(RES, 0, 20))
    released = merge.release()
    assert order(released) == [(RES, 0), (REG, 0), (REG, 1)]
    assert times(released) == [20, 50, 50]


def test_a_record_time_is_never_after_the_processing_clock() -> None:
    merge = held(at(RES, 0, CLOCK + 60_000), at(REG, 0, CLOCK - 1))
    released = merge.release()
    assert order(released) == [(REG, 0), (RES, 0)]
    assert times(released)[1] == CLOCK


def test_a_record_without_a_timestamp_takes_its_partitions_latest_or_the_clock() -> None:
    merge = held(at(REG, 0, None), at(RES, 0, 7), at(RES, 1, -BASE - 1))
    assert times(merge.release()) == [7, 7, CLOCK]


def test_a_lagging_topic_with_nothing_held_stops_the_merge_and_a_caught_up_one_does_not() -> None:
    merge = held(at(RES, 0, 20), at(DEREG, 0, 30))
    assert merge.release(waiting_for=[REG]) == []
    assert merge.holding() == 2
    merge.add(at(REG, 0, 25), BASE + CLOCK)
    # once registrations hold nothing again the merge stops before what comes after them
    assert order(merge.release(waiting_for=[REG])) == [(RES, 0), (REG, 0)]
    assert order(merge.release()) == [(DEREG, 0)]


def test_a_dropped_merge_reads_its_records_again_at_the_same_times() -> None:
    merge = held(at(REG, 0, 50), at(RES, 0, 60))
    assert order(merge.release(waiting_for=[DEREG])) == []
    merge.add(at(DEREG, 0, 55), BASE + CLOCK)
    assert order(merge.release(waiting_for=[])) == [(REG, 0), (DEREG, 0), (RES, 0)]
    merge.add(at(REG, 1, 40), BASE + CLOCK)
    merge.add(at(RES, 1, 70), BASE + CLOCK)
    assert order(merge.drop()) == [(REG, 1), (RES, 1)]
    assert merge.holding() == 0
    merge.add(at(REG, 1, 40), BASE + CLOCK)
    assert times(merge.release()) == [50]


async def chunks(*chunked: list[InputRecord]) -> AsyncIterator[list[InputRecord]]:
    for chunk in chunked:
        yield chunk


async def test_a_history_is_merged_partition_number_after_partition_number_chunk_by_chunk() -> None:
    history = [
        (REG, 1, chunks([at(REG, 0, 30, partition=1)])),
        (REG, 0, chunks([at(REG, 0, 10)], [at(REG, 1, 25), at(REG, 2, 26)])),
        (RES, 1, chunks([at(RES, 0, 20, partition=1)])),
        (RES, 0, chunks([at(RES, 0, 20)], [at(RES, 1, 27)])),
        (DEREG, 0, chunks()),
    ]
    merged = [record async for record in in_record_order(history, BASE + CLOCK)]
    assert [(r.partition, r.topic, r.offset) for r in merged] == [
        (0, REG, 0),
        (0, RES, 0),
        (0, REG, 1),
        (0, REG, 2),
        (0, RES, 1),
        (1, RES, 0),
        (1, REG, 0),
    ]


def test_input_topics_with_different_partition_counts_are_refused_in_one_line() -> None:
    check_co_partitioned({REG: 3, RES: 3, DEREG: 3})
    with pytest.raises(NotCoPartitioned) as refused:
        check_co_partitioned({REG: 3, RES: 6, DEREG: 3})
    message = str(refused.value)
    assert "\n" not in message and f"{RES} has 6" in message and f"{REG} has 3" in message


def _reference_release(merge: Merge, waiting_for: list[str]) -> list[InputRecord]:
    """The merge's rule written plainly: the smallest (time, topic rank) head, while no waited
    topic is empty."""
    rank = {topic: n for n, topic in enumerate((REG, RES, DEREG))}
    released = []
    while not any(not merge.held[topic] for topic in waiting_for):
        heads = [queue[0] for queue in merge.held.values() if queue]
        if not heads:
            break
        head = min(heads, key=lambda r: (r.timestamp_ms or 0, rank[r.topic]))
        merge.held[head.topic].popleft()
        released.append(head)
    return released


def test_the_merge_releases_what_its_rule_says_on_random_input() -> None:
    rng = random.Random(11)
    for _ in range(300):
        records = [
            at(rng.choice((REG, RES, DEREG)), n, rng.choice((None, rng.randrange(0, 50))))
            for n in range(rng.randrange(0, 30))
        ]
        clock = rng.choice((CLOCK, 25))
        waiting = rng.sample([REG, RES, DEREG], rng.randrange(0, 3))
        merge, reference = held(*records, clock=clock), held(*records, clock=clock)
        released = merge.release(waiting)
        assert order(released) == order(_reference_release(reference, waiting))
        if released:
            assert merge.time == max((r.timestamp_ms or 0) for r in released)
            for topic in {r.topic for r in released}:
                last = [r for r in released if r.topic == topic][-1]
                assert merge.released_time[topic] == (last.timestamp_ms or 0)
