"""The one order of input records (contracts.md "Order"), for the live consumer and for rebuild.

Per partition number, the three input topic-partitions are merged by record time: each
topic-partition in offset order, the smallest head time first, ties in the order of INPUT_TOPICS
(registrations, exam-results, deregistrations). A record's time is the later of its timestamp and
the latest time already read on its topic-partition, and never later than the processing clock.
A topic-partition with nothing held stops the merge while it is lagging (it has records to read
that are not fetched yet), for a bounded wait; one that is caught up holds nothing back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable, Mapping

from learning_account.processing.batch import InputRecord
from learning_account.wire import INPUT_TOPICS, record_time

Chunks = tuple[str, int, AsyncIterator[list["InputRecord"]]]
"""One topic-partition's records from its beginning, a chunk at a time: topic, number, chunks."""

LAGGING_WAIT_SECONDS = 2.0
"""How long a merge waits for a lagging topic-partition with nothing held (Kafka Streams'
`max.task.idle.ms`) before it applies what it holds without it."""


class NotCoPartitioned(RuntimeError):
    """The input topics have different partition counts: one student's events would not meet."""


def check_co_partitioned(counts: Mapping[str, int]) -> None:
    """Raise NotCoPartitioned (one line naming each topic's count) unless all counts are equal."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{topic} has {count}" for topic, count in counts.items())
        raise NotCoPartitioned(
            f"the input topics must have the same number of partitions: {listed}"
        )


class Merge:
    """The records of one partition number held for merging, and what the merge released."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.held: dict[str, deque[InputRecord]] = {topic: deque() for topic in INPUT_TOPICS}
        self.read_time: dict[str, int] = {}
        """Per topic: the latest time read (held or released)."""
        self.released_time: dict[str, int] = {}
        """Per topic: the time of the latest record released."""
        self.time: int | None = None
        """The latest time released, of any topic."""

    def add(self, record: InputRecord, clock_ms: int) -> None:
        """Hold a record, its `timestamp_ms` replaced by its record time."""
        latest = self.read_time.get(record.topic)
        usable = record_time(record.timestamp_ms)  # none, or one no clock could have given
        stamp = None if usable is None else record.timestamp_ms
        if stamp is None:
            stamp = latest if latest is not None else clock_ms
        elif latest is not None:
            stamp = max(stamp, latest)
        stamp = min(stamp, clock_ms)
        self.read_time[record.topic] = stamp
        if stamp != record.timestamp_ms:  # a new record, positionally (replace() costs 3 µs)
            record = InputRecord(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                record.value,
                stamp,
                record.headers,
            )
        self.held[record.topic].append(record)

    def holds(self, topic: str) -> bool:
        return bool(self.held[topic])

    def holding(self) -> int:
        return sum(len(queue) for queue in self.held.values())

    def release(self, waiting_for: Collection[str] = ()) -> list[InputRecord]:
        """The held records that may be applied now, in merged order.

        `waiting_for`: the topics whose topic-partition is lagging and still waited for; the
        merge stops while one of them holds nothing.
        """
        held = self.held
        waited = [held[topic] for topic in waiting_for]
        queues = list(held.values())  # in the order of INPUT_TOPICS: a tie goes to the first
        released: list[InputRecord] = []
        while all(waited):
            first: deque[InputRecord] | None = None
            first_stamp = 0
            for queue in queues:
                if queue:
                    stamp = queue[0].timestamp_ms or 0
                    if first is None or stamp < first_stamp:
                        first, first_stamp = queue, stamp
            if first is None:
                break
            head = first.popleft()
            released.append(head)
            self.released_time[head.topic] = first_stamp
            self.time = first_stamp if self.time is None else max(self.time, first_stamp)
        return released

    def drop(self, topics: Iterable[str] = INPUT_TOPICS) -> list[InputRecord]:
        """Forget the held records of these topics (they are read again): the first ones held."""
        first = []
        for topic in topics:
            if self.held[topic]:
                first.append(self.held[topic][0])
                self.held[topic].clear()
            if topic in self.released_time:
                self.read_time[topic] = self.released_time[topic]
            else:
                self.read_time.pop(topic, None)
        return first


async def in_record_order(
    partitions: Iterable[Chunks], clock_ms: int
) -> AsyncIterator[InputRecord]:
    """A whole history in the order the live service applies it: partition number after
    partition number, each merged as the live merge does, a topic-partition with more to read
    waited for; it holds one chunk per topic-partition of one partition number."""
    numbers: dict[int, dict[str, AsyncIterator[list[InputRecord]]]] = {}
    for topic, number, chunks in partitions:
        numbers.setdefault(number, {})[topic] = chunks
    for number in sorted(numbers):
        merge = Merge(number)
        unread = numbers[number]
        while unread or merge.holding():
            for topic in list(unread):
                if not merge.holds(topic):
                    chunk = await anext(unread[topic], None)
                    if chunk is None:
                        del unread[topic]
                    for record in chunk or ():
                        merge.add(record, clock_ms)
            for record in merge.release(waiting_for=list(unread)):
                yield record
