"""The Kafka and Redis clients of every command, built from the settings in one place.

`serve`, `dev`, `demo`, `statement`, `rebuild`, `send` and `redrive` get their clients here, so
the security settings (`LA_KAFKA_*`) and the Redis mode (`LA_REDIS_CLUSTER`) mean the same in
each. The aiokafka keyword arguments of `kafka_security` are the one mapping of those settings;
the FastStream broker's security object is made from it.

Imports of aiokafka, FastStream and the settings are deferred to the calls, so the dev tooling
(`devstack`) can import this module without the service.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from learning_account import __version__
from learning_account.adapters.redis_connect import is_cluster, redis_client

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from faststream.kafka import KafkaBroker
    from faststream.security import BaseSecurity
    from redis.asyncio import Redis, RedisCluster

    from learning_account.settings import Settings

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
    from learning_account.settings import reveal

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


def create_broker(settings: Settings) -> KafkaBroker:
    """The FastStream broker of the service: its producer publishes the outputs."""
    from faststream.kafka import KafkaBroker

    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        **PRODUCER_OPTIONS,
        max_request_size=settings.kafka_max_message_bytes,
        graceful_timeout=settings.graceful_timeout_seconds,
        client_id=CLIENT_ID,
        security=faststream_security(settings),
        logger=logging.getLogger("learning_account.kafka"),
    )


def _connection(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": CLIENT_ID,
        **kafka_security(settings),
    }


def kafka_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An aiokafka producer (not started) with the settings' security; `overrides` win."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**{**_connection(settings), **PRODUCER_OPTIONS, **overrides})


def kafka_consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer (not started) of `topics` with the settings' security."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **{**_connection(settings), **overrides})


def kafka_admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client (not started) with the settings' security."""
    from aiokafka.admin import AIOKafkaAdminClient

    options = {**_connection(settings), "request_timeout_ms": 5000, **overrides}
    return AIOKafkaAdminClient(**options)


async def redis_for(settings: Settings, url: str | None = None) -> Redis | RedisCluster:
    """The Redis client of `url` (default LA_REDIS_URL), single server or cluster as
    LA_REDIS_CLUSTER says; `auto` asks the server once, here."""
    url = url or settings.redis_url
    if settings.redis_cluster == "auto":
        cluster = await is_cluster(url)
        if cluster:
            log.info("Redis runs in cluster mode")
    else:
        cluster = settings.redis_cluster == "true"
    return redis_client(url, cluster=cluster)


async def leave_group_if_first_generation(consumer: Any) -> bool:
    """Send ``LeaveGroup`` for an aiokafka consumer still in generation 0, then return True.

    aiokafka sends it on ``stop()`` only for a generation above 0: Kafka numbers the first
    generation 1, Tansu 0, so on Tansu the next member would wait a whole session timeout. A
    no-op on Kafka. aiokafka has no public call that sends it, so this reads its coordinator;
    best effort, never raises. Call it right before ``consumer.stop()``.
    """
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
