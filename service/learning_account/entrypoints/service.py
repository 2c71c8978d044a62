"""The running service's lifecycle: HTTP first, then Kafka, then the background loops; the
reverse on stop. `learning_account.bootstrap.build_service` puts its parts together.

The FastStream broker (`Service.broker`) is never started: it holds the declarations the
AsyncAPI document is generated from. The group member is the service's own `GroupConsumer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import uvicorn
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis, RedisCluster
from starlette.types import ASGIApp

from learning_account.adapters.clients import ServiceKafka
from learning_account.adapters.publisher import Publisher
from learning_account.adapters.redis_store import RedisStore
from learning_account.entrypoints.consumer import BatchConsumer, GroupConsumer
from learning_account.entrypoints.readiness import Health, PartitionProgress
from learning_account.entrypoints.sweeper import HeldSweeper
from learning_account.observability.metrics import Metrics
from learning_account.processing.ordering import NotCoPartitioned, check_co_partitioned
from learning_account.processing.pipeline import Processor
from learning_account.processing.store import AccountStore
from learning_account.runtime import tune_gc
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS

log = logging.getLogger("learning_account")


class Service:
    """One consumer group member, its HTTP API and its held-result sweeper."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        store: AccountStore,
        redis_store: RedisStore | None,
        connect_redis: Callable[[], Awaitable[Redis | RedisCluster]],
        processor: Processor,
        kafka: ServiceKafka,
        broker: KafkaBroker,
        group: Callable[[], GroupConsumer],
        publisher: Publisher,
        health: Health,
        batches: BatchConsumer,
        progress: PartitionProgress,
        sweeper: HeldSweeper,
        http: ASGIApp,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.redis_store = redis_store
        """The Redis store the service built (None for one it was given): its client is the
        service's to replace on start and to close."""
        self.connect_redis = connect_redis
        """The client start() gives `redis_store`: it asks the server when LA_REDIS_CLUSTER is
        auto."""
        self.processor = processor
        self.kafka = kafka
        self.broker = broker
        """FastStream's broker of the service's wiring: the AsyncAPI document's source only."""
        self.group = group
        """A new member of the consumer group, not started, for each start."""
        self.publisher = publisher
        self.health = health
        self.batches = batches
        self.progress = progress
        self.sweeper = sweeper
        self.http = http
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: uvicorn.Server | None = None

    @property
    def redis(self) -> Redis | RedisCluster:
        if self.redis_store is None:
            raise AttributeError("the service was given its store: it holds no Redis client")
        return self.redis_store.redis

    async def start(self) -> None:
        """HTTP first (liveness answers, readiness says 503), then Kafka, then the sweeper."""
        await self.start_http()
        await self._start_kafka()
        await self.start_background()

    async def start_http(self) -> None:
        """Before Kafka: the Redis mode (LA_REDIS_CLUSTER), then the HTTP API."""
        if self.redis_store is not None:
            await self.redis_store.redis.aclose()
            self.redis_store.redis = await self.connect_redis()
        config = uvicorn.Config(
            self.http,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _QuietServer(config)
        http_task = asyncio.create_task(self._server.serve(), name="http")
        self._tasks.append(http_task)
        while not self._server.started:
            await asyncio.sleep(0.02)
            if http_task.done():
                await http_task  # raises the reason the server did not start

    async def start_background(self) -> None:
        """Once the consumer runs: the merges' waits, the held-result sweeper and the partition
        watch; ready."""
        self._tasks.append(asyncio.create_task(self.batches.release_waiting(), name="merge-waits"))
        self._tasks.append(asyncio.create_task(self.sweeper.run(), name="held-sweeper"))
        self._tasks.append(asyncio.create_task(self.progress.watch(), name="partitions"))
        tune_gc(self.settings.gc_threshold)
        self.health.start_serving()
        log.info(
            "learning-account serving",
            extra={
                "kafka": self.settings.kafka_bootstrap_servers,
                "http": f"{self.settings.http_host}:{self.settings.http_port}",
                "group": self.settings.consumer_group,
            },
        )

    async def _start_kafka(self) -> None:
        """Wait for Kafka (with backoff) instead of exiting when it is not up yet, then join the
        consumer group."""
        delay = 0.5
        while True:
            try:
                await self.kafka.connect()
                check_co_partitioned(await self.kafka.partition_counts(INPUT_TOPICS))
                break
            except NotCoPartitioned:
                raise
            except Exception as error:
                log.warning("Kafka not reachable yet (%r); retrying in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await self.kafka.close()
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        await self.batches.start(self.group())

    async def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group, close everything."""
        await self.stop_consuming()
        await self.close()

    async def stop_consuming(self) -> None:
        """Finish the batch in flight, then leave the group (librdkafka's close)."""
        await self.batches.stop(self.settings.graceful_timeout_seconds)
        await self.batches.close()

    async def close(self) -> None:
        """Once the group is left: the HTTP API, the background tasks, Kafka and Redis."""
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kafka.close()
        if self.redis_store is not None:
            await self.redis_store.redis.aclose()
        log.info("learning-account stopped")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                await starting  # raises if the start failed
                await stopping
        finally:
            if not starting.done():  # stopped while still waiting for Kafka
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            stopping.cancel()
            await self.stop()


class _QuietServer(uvicorn.Server):
    """uvicorn inside our own loop: the service handles the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
