"""The one place that builds the service and its commands' clients from the settings.

Every entrypoint gets its parts here: `serve` and `create_app` (FastStream's factory) the whole
service (`build_service`), `rebuild`, `restore`, `redrive`, `send` and `statement` their Kafka
and Redis clients, the store and the processor. Nothing connects at import time, and nothing
here connects at all except `redis_for` (which may ask the server whether it is a cluster).

Tests pass fakes here instead of patching: `kafka=KafkaClients(producer=..., consumer=...,
admin=...)` to any builder or command, `metrics=` and `store=` (e.g. the in-memory store of
`learning_account_dev.memory_store`) to `build_service`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from learning_account import __version__
from learning_account.adapters.clients import (
    CLIENT_ID,
    PRODUCER_CONFIG,
    ServiceKafka,
    faststream_security,
    librdkafka_config,
)
from learning_account.adapters.redis_connect import is_cluster, redis_client
from learning_account.adapters.redis_store import RedisStore
from learning_account.observability.metrics import Metrics
from learning_account.processing.store import AccountStore
from learning_account.settings import Settings, SettingsError, reveal

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient
    from faststream import FastStream
    from faststream.kafka import KafkaBroker
    from faststream.specification import AsyncAPI
    from redis.asyncio import Redis, RedisCluster

    from learning_account.entrypoints.consumer import GroupConsumer
    from learning_account.entrypoints.service import Service
    from learning_account.processing.pipeline import Processor

log = logging.getLogger("learning_account")


# --- Kafka --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaClients:
    """The confluent-kafka (librdkafka) client classes the builders instantiate with their
    configuration dict (fakes of them, in tests)."""

    producer: Callable[[dict[str, Any]], Producer]
    consumer: Callable[[dict[str, Any]], Consumer]
    admin: Callable[[dict[str, Any]], AdminClient]


def kafka_clients() -> KafkaClients:
    """confluent-kafka's own classes (imported on the first call: a command without Kafka skips
    it)."""
    import confluent_kafka
    import confluent_kafka.admin

    return KafkaClients(
        confluent_kafka.Producer, confluent_kafka.Consumer, confluent_kafka.admin.AdminClient
    )


def kafka_producer(
    settings: Settings,
    *,
    kafka: KafkaClients | None = None,
    config: Mapping[str, Any] | None = None,
) -> Producer:
    """A producer with the settings' security and `PRODUCER_CONFIG`; `config` wins."""
    options = {**librdkafka_config(settings), **PRODUCER_CONFIG, **(config or {})}
    return (kafka or kafka_clients()).producer(options)


READER_GROUP = "learning-account-reader"
"""The `group.id` librdkafka requires of every consumer, for the consumers that read assigned
partitions: they never subscribe, join, or commit, so the group stays empty."""


def kafka_consumer(
    settings: Settings,
    *,
    kafka: KafkaClients | None = None,
    config: Mapping[str, Any] | None = None,
) -> Consumer:
    """A consumer with the settings' security that commits nothing (`config` wins): by default
    one of no group, for reading partitions it is assigned."""
    options = {
        **librdkafka_config(settings),
        "group.id": READER_GROUP,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **(config or {}),
    }
    return (kafka or kafka_clients()).consumer(options)


def kafka_admin(
    settings: Settings,
    *,
    kafka: KafkaClients | None = None,
    config: Mapping[str, Any] | None = None,
) -> AdminClient:
    """An admin client with the settings' security; `config` wins."""
    options = {**librdkafka_config(settings), "socket.timeout.ms": 5000, **(config or {})}
    return (kafka or kafka_clients()).admin(options)


def create_broker(settings: Settings) -> KafkaBroker:
    """The FastStream broker of the service's wiring: the AsyncAPI document is generated from
    its subscriber and publishers. It is never started (`group_consumer` is the group member,
    `ServiceKafka` the producer).
    """
    from learning_account.entrypoints.asyncapi import SpecificationBroker

    return SpecificationBroker(
        settings.kafka_bootstrap_servers,
        consumer_only=True,
        graceful_timeout=settings.graceful_timeout_seconds,
        client_id=CLIENT_ID,
        security=faststream_security(settings),
        logger=logging.getLogger("learning_account.kafka"),
    )


def group_consumer(settings: Settings) -> GroupConsumer:
    """The service's member of the consumer group of the input topics (not started).

    Range assignment (partition p of every input topic on one member: one student's events meet
    there); offsets committed by hand, only after Redis and the output acks; CRCs checked, so a
    corrupt batch is an error at its offset instead of records.
    """
    from learning_account.entrypoints.consumer import GroupConsumer
    from learning_account.wire import INPUT_TOPICS

    config = {
        **librdkafka_config(settings),
        "group.id": settings.consumer_group,
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
        # a record up to the largest a producer of the service may send, in one fetch
        "fetch.message.max.bytes": max(1_048_576, settings.kafka_max_message_bytes),
        "check.crcs": True,
        "logger": logging.getLogger("learning_account.kafka"),
    }
    return GroupConsumer(config, INPUT_TOPICS)


# --- Redis, store, processor --------------------------------------------------------------


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


def account_store(
    settings: Settings,
    redis: Redis | RedisCluster,
    metrics: Metrics | None = None,
    *,
    snapshots: bool = False,
) -> RedisStore:
    """The account store on `redis`, timing its operations into `metrics` when given;
    `snapshots` for a processor that snapshots what it commits (`RedisStore`)."""
    observe = None
    if metrics is not None:
        redis_seconds = metrics.redis_seconds

        def observe(operation: str, seconds: float) -> None:
            redis_seconds.labels(operation=operation).observe(seconds)

    return RedisStore(
        redis,
        outbox_retention_seconds=settings.outbox_retention_seconds,
        observe=observe,
        snapshots=snapshots,
    )


def processor(settings: Settings, store: AccountStore, *, live: bool) -> Processor:
    """The pipeline on `store`; `live`: the serving one, which traces and publishes snapshots
    (a rebuild or restore does neither)."""
    from learning_account.observability.tracing import create_tracer
    from learning_account.processing.pipeline import Processor

    if not live:
        return Processor(
            store,
            settings.policy,
            max_message_bytes=settings.kafka_max_message_bytes,
            allowed_sources=settings.allowed_sources,
        )
    return Processor(
        store,
        settings.policy,
        tracer=create_tracer(settings.tracing),
        consumer_group=settings.consumer_group,
        max_message_bytes=settings.kafka_max_message_bytes,
        allowed_sources=settings.allowed_sources,
        snapshots=True,
    )


# --- the service and its apps -------------------------------------------------------------


def build_service(
    settings: Settings,
    *,
    kafka: KafkaClients | None = None,
    metrics: Metrics | None = None,
    store: AccountStore | None = None,
) -> Service:
    """The whole service, not started: consumer, publisher, sweeper, readiness, HTTP API.

    `store`: the accounts' store instead of the Redis one of LA_REDIS_URL; the service neither
    connects nor closes it (its owner does).
    """
    from learning_account.adapters.publisher import Publisher
    from learning_account.entrypoints.access import JwtVerifier
    from learning_account.entrypoints.consumer import BatchConsumer
    from learning_account.entrypoints.http_api import create_http_app
    from learning_account.entrypoints.readiness import Health, PartitionProgress
    from learning_account.entrypoints.service import Service
    from learning_account.entrypoints.sweeper import HeldSweeper
    from learning_account.ops.restore import SNAPSHOT_TOPICS
    from learning_account.wire import OUTPUT_TOPICS

    metrics = metrics or Metrics()
    redis_store = None
    if store is None:
        # the store and the HTTP app hold a client from the start; Service.start gives the store
        # the one of redis_for, which asks the server when LA_REDIS_CLUSTER is auto
        store = redis_store = account_store(
            settings,
            redis_client(settings.redis_url, cluster=settings.redis_cluster == "true"),
            metrics,
            snapshots=True,  # the live processor snapshots every account it commits
        )
    pipeline = processor(settings, store, live=True)
    service_kafka = ServiceKafka(
        lambda: kafka_producer(
            settings, kafka=kafka, config={"message.max.bytes": settings.kafka_max_message_bytes}
        ),
        lambda: kafka_admin(settings, kafka=kafka),
        topics=(*OUTPUT_TOPICS, *SNAPSHOT_TOPICS),
    )
    publisher = Publisher(service_kafka, metrics)
    health = Health(metrics, checks=(store.ping, service_kafka.ping))
    batches = BatchConsumer(
        pipeline,
        publisher,
        health,
        metrics,
        max_records=settings.batch_max_records,
        timeout_ms=settings.batch_timeout_ms,
    )
    broker = create_broker(settings)
    batches.subscribe(broker, settings)
    declare_outputs(broker)
    return Service(
        settings,
        metrics=metrics,
        store=store,
        redis_store=redis_store,
        connect_redis=lambda: redis_for(settings),
        processor=pipeline,
        kafka=service_kafka,
        broker=broker,
        group=lambda: group_consumer(settings),
        publisher=publisher,
        health=health,
        batches=batches,
        progress=PartitionProgress(batches, health, metrics, stall_seconds=settings.stall_seconds),
        sweeper=HeldSweeper(
            batches,
            pipeline,
            publisher,
            store,
            health,
            metrics,
            interval=settings.held_sweep_interval_seconds,
        ),
        http=create_http_app(
            store,
            ready=health.is_ready,
            metrics=metrics,
            token=reveal(settings.http_token) or None,
            jwt_verifier=JwtVerifier.from_settings(settings),
            asyncapi=lambda: asyncapi_json(broker),
            policy=settings.policy,
        ),
    )


def declare_outputs(broker: KafkaBroker) -> None:
    """The output topics as FastStream publishers: they document the outputs (AsyncAPI)."""
    from learning_account.wire import (
        BALANCE_CHANGED_TOPIC,
        CREDIT_EXHAUSTED_TOPIC,
        CREDIT_LOW_TOPIC,
        DEAD_LETTER_TOPIC,
        REJECTIONS_TOPIC,
        BalanceChangedEvent,
        CreditExhaustedEvent,
        CreditLowEvent,
        DeadLetteredEvent,
        EventRejectedEvent,
    )

    outputs: dict[str, tuple[Any, str]] = {
        BALANCE_CHANGED_TOPIC: (BalanceChangedEvent, "An input event changed a balance"),
        CREDIT_EXHAUSTED_TOPIC: (CreditExhaustedEvent, "A balance went from above 0 to 0 or below"),
        CREDIT_LOW_TOPIC: (CreditLowEvent, "A balance went below a low-balance threshold"),
        REJECTIONS_TOPIC: (EventRejectedEvent, "A valid input event was refused by a rule"),
        DEAD_LETTER_TOPIC: (DeadLetteredEvent, "An input message could not be read or validated"),
    }
    for topic, (schema, text) in outputs.items():
        broker.publisher(topic, schema=schema, description=text, title=topic)


def specification(broker: KafkaBroker) -> AsyncAPI:
    """FastStream's AsyncAPI factory of the broker's wiring (for `faststream docs`)."""
    from faststream.specification import AsyncAPI

    return AsyncAPI(
        broker,
        title="learning-account",
        version=__version__,
        description="The Flemish learning account (leerkrediet) as a message-driven service.",
    )


def asyncapi_json(broker: KafkaBroker) -> str:
    """The AsyncAPI 3.0 document of the broker's wiring (served over HTTP, exported to
    contracts/): FastStream generates it, `asyncapi.complete` says what FastStream cannot."""
    from learning_account.entrypoints.asyncapi import complete

    document = specification(broker).to_specification().to_jsonable()
    return json.dumps(complete(document))


def asyncapi_document(settings: Settings | None = None) -> str:
    """The AsyncAPI 3.0 document of the service, generated by FastStream from the code."""
    return asyncapi_json(build_service(settings or Settings()).broker)


def faststream_app(service: Service) -> FastStream:
    """The service as a FastStream application: its hooks start and stop the whole `Service`.

    Its broker is the service's `SpecificationBroker`, which FastStream starts and stops without
    reaching Kafka: the group member is the service's own (`group_consumer`).
    """
    from faststream import FastStream

    return FastStream(
        service.broker,
        specification=specification(service.broker),
        on_startup=[service.start],
        on_shutdown=[service.stop],
    )


def create_app() -> FastStream:
    """The service as a FastStream application, wired from the environment (LA_*).

    `faststream run learning_account.bootstrap:create_app --factory` serves what
    `learning-account serve` does; `faststream docs gen learning_account.bootstrap:create_app
    --factory` writes its AsyncAPI document.
    """
    from learning_account.observability.logs import configure

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)  # one line, no traceback, as every command does
        raise SystemExit(2) from None
    configure(settings.log_level, json_lines=True)
    return faststream_app(build_service(settings))
