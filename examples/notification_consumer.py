"""A downstream consumer of the learning account: notify students whose credit runs low or out.

Plain aiokafka, consumer group ``notifications``, at-least-once:

    fetch a batch -> handle every message (dedupe on the CloudEvents id) -> commit the batch

Why deduplicate on ``id``: the learning-account service publishes at least once. When a batch of
its input is re-delivered (a crash, a rebalance, a Redis outage mid-batch) or an institution
re-sends an event, the service re-publishes the stored outputs of that step with the *same* ids
and the same bytes. Our own commit-after-handling also means a crash between handling and commit
re-delivers messages we already handled. Without deduplication a student would get the same
notification twice. The id is the only safe key: two different notifications for one student can
carry the same balance and threshold.

The ``seen`` set here lives in memory (bounded, oldest forgotten first), which only covers
re-deliveries while this process runs. A real notification service stores the handled ids in the
same database transaction as the notification it queues, so the check survives restarts.

Run it against the dev stack (``learning-account dev``)::

    python examples/notification_consumer.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import OrderedDict
from typing import Any

CREDIT_LOW_TOPIC = "learning-account.credit-low.v1"
CREDIT_EXHAUSTED_TOPIC = "learning-account.credit-exhausted.v1"
CREDIT_LOW_TYPE = "be.flanders.learning-account.credit-low.v1"
CREDIT_EXHAUSTED_TYPE = "be.flanders.learning-account.credit-exhausted.v1"
GROUP_ID = "notifications"

OPTION_TEXT = {
    "first_master_programme": "enrol in your first master's programme",
    "preparatory_programme": "enrol in a preparatory programme",
    "bachelor_after_bachelor": "enrol in a bachelor-after-bachelor programme",
    "master_after_master": "enrol in a master-after-master programme",
    "examination_contract": "take your exams under an examination contract",
    "exceptional_admission": "ask your institution for an exceptional admission",
}


def credits(amount: float) -> str:
    """6 -> "6", 56.5 -> "56.5", 1.25 -> "1.25" (amounts are multiples of 0.25)."""
    return f"{amount:g}"


def notification_text(event: dict[str, Any]) -> str | None:
    """The notification for one output event, or None when it is not one we notify about."""
    data = event.get("data") or {}
    student = data.get("student_id", event.get("subject"))
    if event.get("type") == CREDIT_LOW_TYPE:
        return (
            f"To {student}: your learning credit is low. In {data['academic_year']} it fell "
            f"below {credits(data['threshold'])} credits; your balance is now "
            f"{credits(data['balance'])} credits."
        )
    if event.get("type") == CREDIT_EXHAUSTED_TYPE:
        options = "\n".join(f"  - {OPTION_TEXT.get(o, o)}" for o in data.get("options", []))
        return (
            f"To {student}: your learning credit is used up (balance "
            f"{credits(data['balance'])} credits, {data['academic_year']}). You can still:\n"
            f"{options}"
        )
    return None


class Notifier:
    """Turns output events into notifications, each CloudEvents id at most once."""

    def __init__(self, remember: int = 100_000) -> None:
        self.remember = remember
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.sent: list[str] = []

    def handle(self, event: dict[str, Any]) -> str | None:
        """Notify for one event; None for a duplicate id or an event of another type."""
        event_id = str(event.get("id", ""))
        if event_id in self.seen:
            self.seen.move_to_end(event_id)
            return None
        text = notification_text(event)
        if text is not None:
            self.deliver(text)
        self.seen[event_id] = None
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        return text

    def deliver(self, text: str) -> None:
        """Send the notification (here: print it). Replace with e-mail, push, a queue, ..."""
        self.sent.append(text)
        print(text, flush=True)


async def run(bootstrap: str, *, group_id: str = GROUP_ID, max_messages: int | None = None) -> None:
    """Consume until cancelled (or until ``max_messages`` were handled, for tests/demos)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        CREDIT_LOW_TOPIC,
        CREDIT_EXHAUSTED_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,  # commit only what was handled
        auto_offset_reset="earliest",  # a new group does not miss what was published before it
    )
    notifier = Notifier()
    handled = 0
    await consumer.start()
    try:
        while max_messages is None or handled < max_messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    try:
                        event = json.loads(record.value)
                    except (TypeError, ValueError):
                        print(f"skipping unreadable record {record.topic}/{record.offset}")
                        continue
                    notifier.handle(event)
                    handled += 1
            if batch:
                await consumer.commit()  # after handling: at-least-once, hence the dedupe
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default=GROUP_ID)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.bootstrap, group_id=args.group))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
