"""What every Kafka client of the service is given, and the service's own producer and admin.

`librdkafka_config` is the one mapping of the Kafka settings (`LA_KAFKA_BOOTSTRAP_SERVERS`,
`LA_KAFKA_SECURITY_PROTOCOL`, `_SASL_*`, `_SSL_CAFILE`) to librdkafka (confluent-kafka)
configuration; `learning_account.bootstrap` builds every client of the service and its commands
with it, and `deliver` is how they all produce. `kafka_security` is the same mapping as aiokafka
keyword arguments, from which `faststream_security` makes the security object of the FastStream
broker that documents the service (the AsyncAPI document names its scheme).

Imports of confluent-kafka, aiokafka and FastStream are deferred to the calls, so a command that
needs none of them starts without loading them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from learning_account import __version__
from learning_account.settings import Settings, reveal

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer
    from confluent_kafka.admin import AdminClient
    from faststream.security import BaseSecurity

log = logging.getLogger(__name__)

CLIENT_ID = f"learning-account-{__version__}"
"""How the broker names every client of the service (quotas, ACL logs)."""

PRODUCER_CONFIG: dict[str, Any] = {
    # the broker acknowledges a record only once all in-sync replicas have it
    "acks": "all",
    # not needed: outputs carry derived ids and consumers dedupe; and Tansu has no InitProducerId
    "enable.idempotence": False,
    # without idempotence a retried request could overtake the next one: one request at a time
    # per broker keeps each partition's records in the order produced (a request carries the
    # batches of all the broker's partitions)
    "max.in.flight.requests.per.connection": 1,
    # a batch's records are all produced before its deliveries are awaited (a flush sends at
    # once): a small linger only gathers what other callers produce meanwhile
    "linger.ms": 2,
    # a delivery report (a Python callback, taking the GIL from the flushing thread) only for a
    # record that failed: `deliver` knows the others were acknowledged when flush leaves none
    "delivery.report.only.error": True,
}
"""What every librdkafka producer of the service is given, with `librdkafka_config`."""


def kafka_security(settings: Settings) -> dict[str, Any]:
    """The aiokafka keyword arguments of LA_KAFKA_SECURITY_PROTOCOL, _SASL_* and _SSL_CAFILE."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol, "ssl_context": None}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username or ""
        options["sasl_plain_password"] = reveal(settings.kafka_sasl_password)
    return options


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """What every librdkafka (confluent-kafka) client of the settings is given: where, who, and
    how securely; the same settings as `kafka_security`, in librdkafka's configuration names."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": CLIENT_ID,
    }
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol.lower()
    if protocol in ("SSL", "SASL_SSL") and settings.kafka_ssl_cafile:
        config["ssl.ca.location"] = settings.kafka_ssl_cafile
    if protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        config["sasl.username"] = settings.kafka_sasl_username or ""
        config["sasl.password"] = reveal(settings.kafka_sasl_password)
    return config


def faststream_security(settings: Settings) -> BaseSecurity | None:
    """`kafka_security` as FastStream's security object (the AsyncAPI document names its
    scheme)."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    options = kafka_security(settings)
    if not options:
        return None
    context = options["ssl_context"]
    mechanism = options.get("sasl_mechanism")
    if mechanism is None:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return kind[mechanism](
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=context,
        use_ssl=context is not None,
    )


Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""What a producer sends: topic, key, value and headers."""

DELIVERY_TIMEOUT_SECONDS = 60.0
"""How long `deliver` waits for the broker's acknowledgements of what it produced."""


class DeliveryError(RuntimeError):
    """A record was not acknowledged by the broker: refused, or not answered in time."""


async def deliver(
    producer: Producer, records: Iterable[Record], *, wait: float = DELIVERY_TIMEOUT_SECONDS
) -> int:
    """Produce every record, each to its key's partition in the order given, then wait until the
    broker acknowledged them all; raises DeliveryError if it did not (refused one, or timeout).

    The wait is librdkafka's `flush` in a thread of the default executor: the event loop goes
    on, and the delivery reports are served there. A record leaves librdkafka's queue once the
    broker acknowledged it or it failed, and a failure is reported, so a flush that leaves no
    record queued and no failure reported means all were acknowledged (the producers report
    failures only: `delivery.report.only.error`). A full queue (BufferError) is waited out the
    same way, then the record is produced again. Returns how many records were produced.
    """
    loop = asyncio.get_running_loop()
    failed: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        # served in the flushing thread; list.append is atomic, whichever thread serves it
        if error is not None:
            failed.append(error)

    produce = producer.produce
    count = 0
    for topic, key, value, headers in records:
        while True:
            try:
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)  # type: ignore[arg-type]
            except BufferError:  # librdkafka's queue is full: let it drain, then again
                await loop.run_in_executor(None, producer.poll, 0.1)
            else:
                break
        count += 1
    # what is still queued after the wait (another caller's records too: then all wait again)
    queued = await loop.run_in_executor(None, producer.flush, wait) if count else 0
    if failed:
        raise DeliveryError(f"{len(failed)} of {count} records not delivered: {failed[0]}")
    if queued:
        raise DeliveryError(
            f"{min(queued, count)} of {count} records not acknowledged within {wait}s"
        )
    return count


class ServiceKafka:
    """The service's librdkafka producer (its outputs, the partition counts) and admin client
    (readiness).

    Both are made anew by each `connect`, so a start that fails half-way leaves nothing open and
    the next attempt begins clean. The group consumer is not here: `bootstrap.group_consumer`
    builds it.
    """

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        make_admin: Callable[[], AdminClient],
        *,
        topics: Collection[str] = (),
        timeout: float = 10.0,
    ) -> None:
        self._make_producer = make_producer
        self._topics = topics
        self._make_admin = make_admin
        self._timeout = timeout
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the Kafka producer is not connected")
        return self._producer

    async def connect(self) -> None:
        """Make a new producer and admin client; raises if Kafka cannot be reached.

        librdkafka connects in its own threads and never fails a construction for an absent
        broker, so a metadata request answered (or not, within the timeout) decides.
        """
        await self.close()
        producer = self._producer = self._make_producer()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, partial(producer.list_topics, timeout=self._timeout))
        # the output topics looked up (or auto-created by the broker) before a batch waits on them
        for topic in self._topics:
            await loop.run_in_executor(
                None, partial(producer.list_topics, topic, timeout=self._timeout)
            )
        self._admin = self._make_admin()

    async def close(self) -> None:
        """Deliver what is still queued (within the timeout), then drop both clients."""
        producer = self._producer
        self._producer = self._admin = None
        if producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, producer.flush, self._timeout)

    async def partition_counts(self, topics: Collection[str]) -> dict[str, int]:
        """How many partitions each of `topics` has, for those that exist."""
        producer = self.producer
        cluster = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: producer.list_topics(timeout=self._timeout),  # asks for all: creates none
        )
        return {
            topic: len(metadata.partitions)
            for topic in topics
            if (metadata := cluster.topics.get(topic)) is not None
            and metadata.error is None
            and metadata.partitions
        }

    async def ping(self) -> bool:
        """Whether the cluster answers; retried until the caller's timeout ends the wait."""
        while True:
            admin = self._admin
            if admin is None:
                return False
            try:
                await asyncio.wrap_future(admin.describe_cluster(request_timeout=5))
            except Exception:
                await asyncio.sleep(0.2)
            else:
                return True
