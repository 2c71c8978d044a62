"""What every Kafka client of the service is given, and the service's own producer and admin.

`kafka_options` is the one mapping of the Kafka settings (`LA_KAFKA_BOOTSTRAP_SERVERS`,
`LA_KAFKA_SECURITY_PROTOCOL`, `_SASL_*`, `_SSL_CAFILE`) to aiokafka keyword arguments;
`faststream_security` makes the FastStream broker's security object from the same mapping.
`learning_account.bootstrap` builds every client with them.

Imports of aiokafka and FastStream are deferred to the calls, so a command that needs neither
starts without loading them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from learning_account import __version__
from learning_account.settings import Settings, reveal

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from faststream.security import BaseSecurity

log = logging.getLogger(__name__)

CLIENT_ID = f"learning-account-{__version__}"
"""How the broker names every client of the service (quotas, ACL logs)."""

PRODUCER_OPTIONS: dict[str, Any] = {
    # the broker acknowledges a record only once all in-sync replicas have it
    "acks": "all",
    # not needed: outputs carry derived ids and consumers dedupe (and Tansu has no InitProducerId)
    "enable_idempotence": False,
}


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


def kafka_options(settings: Settings) -> dict[str, Any]:
    """What every aiokafka client of the settings is given: where, who, and how securely."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": CLIENT_ID,
        **kafka_security(settings),
    }


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """What every librdkafka (confluent-kafka) client of the settings is given: where, who, and
    how securely; the same settings as `kafka_options`, in librdkafka's configuration names."""
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
    """`kafka_security` as FastStream's security object (FastStream maps it back for aiokafka,
    and names its scheme in the AsyncAPI document)."""
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


class ServiceKafka:
    """The service's producer (its outputs, the partition counts) and admin client (readiness).

    Both are made anew by each `connect`, so a start that fails half-way leaves nothing open and
    the next attempt begins clean. The consumer is FastStream's, built by the broker.
    """

    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        make_admin: Callable[[], AIOKafkaAdminClient],
        *,
        topics: Collection[str] = (),
    ) -> None:
        self._make_producer = make_producer
        self._topics = topics
        self._make_admin = make_admin
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the Kafka producer is not connected")
        return self._producer

    async def connect(self) -> None:
        """Start a new producer and admin client (raises if Kafka cannot be reached)."""
        await self.close()
        self._producer = self._make_producer()
        await self._producer.start()
        # the output topics looked up (or auto-created by the broker) before a batch waits on them
        for topic in self._topics:
            await self._producer.partitions_for(topic)
        self._admin = self._make_admin()
        await self._admin.start()

    async def close(self) -> None:
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    async def partition_counts(self, topics: Collection[str]) -> dict[str, int]:
        """How many partitions each of `topics` has, for those that exist."""
        cluster = await self.producer.client.fetch_all_metadata()  # asks for none: creates none
        return {
            topic: len(numbers)
            for topic in topics
            if (numbers := cluster.partitions_for_topic(topic))
        }

    async def ping(self) -> bool:
        """Whether the cluster answers; retried until the caller's timeout ends the wait."""
        while True:
            if self._admin is None:
                return False
            try:
                await self._admin.describe_cluster()
            except Exception:
                await asyncio.sleep(0.2)
            else:
                return True


async def leave_group_if_first_generation(consumer: Any) -> bool:
    """Send ``LeaveGroup`` for an aiokafka consumer still in generation 0, then return True.

    aiokafka sends it on ``stop()`` only for a generation above 0: Kafka numbers the first
    generation 1, Tansu 0, so on Tansu the next member would wait a whole session timeout. A
    no-op on Kafka. Best effort, never raises. Call it right before ``consumer.stop()``.
    """
    # aiokafka has no public call that sends LeaveGroup (its coordinator is private, and
    # `GroupCoordinator._maybe_leave_group` tests `generation > 0`); no upstream issue asks for one
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0:
        return False
    member_id = getattr(coordinator, "member_id", "")
    group_id = getattr(coordinator, "group_id", None)
    if not member_id or not group_id:
        return False
    try:
        from aiokafka.protocol.group import LeaveGroupRequest

        await asyncio.wait_for(
            coordinator._send_req(LeaveGroupRequest(group_id, member_id)), timeout=5
        )
    except Exception as exc:
        log.debug("LeaveGroup for generation 0 failed: %r", exc)
        return False
    return True
