"""The Publisher and `clients.deliver` on a stand-in of confluent-kafka's Producer: every record
produced in order with its key and headers, every delivery report awaited, any failure raised."""

from __future__ import annotations

from typing import Any

import pytest

from learning_account.adapters.clients import PRODUCER_CONFIG, DeliveryError, ServiceKafka, deliver
from learning_account.adapters.publisher import Publisher
from learning_account.observability.metrics import Metrics
from learning_account.processing.outputs import OutputMessage
from learning_account.wire import STRUCTURED_HEADERS


class FakeProducer:
    """Queues what is produced; `flush` reports each delivery as the broker answered it."""

    def __init__(
        self,
        *,
        refuse: set[int] = frozenset(),
        answer: bool = True,
        full: int = 0,
        only_errors: bool = False,
    ):
        self.produced: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.queue: list[tuple[int, Any]] = []
        self.refuse = refuse  # numbers of the records the broker refuses
        self.answer = answer  # False: the broker answers nothing within the flush timeout
        self.full = full  # how many produce calls find the queue full
        self.only_errors = only_errors  # as `delivery.report.only.error` makes librdkafka do
        self.polls = 0

    def produce(self, topic: str, value: Any, key: Any, *, headers: Any, on_delivery: Any) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.queue.append((len(self.produced), on_delivery))
        self.produced.append((topic, key, value, list(headers)))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        if not self.answer:
            return len(self.queue)
        for number, on_delivery in self.queue:
            if number in self.refuse:
                on_delivery("refused", None)
            elif not self.only_errors:
                on_delivery(None, None)
        self.queue.clear()
        return 0


def messages() -> list[OutputMessage]:
    return [
        OutputMessage("balance", b"mary", b"1", "id-1", "balance-changed"),
        OutputMessage("low", b"mary", b"2", "id-2", "credit-low"),
        OutputMessage("balance", b"tom", b"3", "id-3", "balance-changed"),
    ]


def publisher(producer: FakeProducer) -> tuple[Publisher, Metrics]:
    kafka = ServiceKafka(lambda: producer, lambda: None)  # type: ignore[arg-type,return-value]
    kafka._producer = producer  # type: ignore[assignment]  # as connect() leaves it
    metrics = Metrics()
    return Publisher(kafka, metrics), metrics


def published(metrics: Metrics, topic: str) -> float:
    value = metrics.registry.get_sample_value("la_outputs_published_total", {"topic": topic})
    return value or 0.0


async def test_every_record_is_produced_in_order_with_its_key_and_headers() -> None:
    producer = FakeProducer()
    out, metrics = publisher(producer)
    await out.publish(messages())
    assert producer.produced == [
        (m.topic, m.key, m.value, list(STRUCTURED_HEADERS)) for m in messages()
    ]
    assert (published(metrics, "balance"), published(metrics, "low")) == (2, 1)


async def test_a_refused_record_raises_and_counts_nothing() -> None:
    producer = FakeProducer(refuse={1})
    out, metrics = publisher(producer)
    with pytest.raises(DeliveryError, match="1 of 3 records not delivered"):
        await out.publish(messages())
    assert published(metrics, "balance") == 0


async def test_records_not_acknowledged_in_time_raise() -> None:
    with pytest.raises(DeliveryError, match="3 of 3 records not acknowledged"):
        await deliver(
            FakeProducer(answer=False),  # type: ignore[arg-type]
            [(m.topic, m.key, m.value, []) for m in messages()],
            wait=0.1,
        )


@pytest.mark.parametrize("only_errors", [True, False], ids=["failures-reported", "all-reported"])
async def test_a_flush_that_leaves_nothing_queued_delivered_all(only_errors: bool) -> None:
    records = [(m.topic, m.key, m.value, []) for m in messages()]
    producer = FakeProducer(only_errors=only_errors)
    assert await deliver(producer, records) == 3  # type: ignore[arg-type]
    with pytest.raises(DeliveryError, match="1 of 3 records not delivered"):
        await deliver(FakeProducer(refuse={2}, only_errors=only_errors), records)  # type: ignore[arg-type]


def test_the_producers_report_failed_deliveries_only() -> None:
    assert PRODUCER_CONFIG["delivery.report.only.error"] is True


async def test_a_full_queue_is_polled_until_the_record_fits() -> None:
    producer = FakeProducer(full=2)
    records = [(m.topic, m.key, m.value, []) for m in messages()]
    assert await deliver(producer, records) == 3  # type: ignore[arg-type]
    assert producer.polls == 2
    assert [record[2] for record in producer.produced] == [b"1", b"2", b"3"]


async def test_nothing_to_publish_reaches_no_producer() -> None:
    kafka = ServiceKafka(lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    await Publisher(kafka, Metrics()).publish([])  # not connected: would raise if it asked
