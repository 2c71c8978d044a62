"""The dev stack: the configured Kafka and Redis when they answer, else Tansu and redis-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from learning_account_dev.devstack.processes import (
    DevStackError,
    LocalProcess,
    StartStop,
    is_port_open,
    parse_bootstrap,
    parse_redis_url,
)
from learning_account_dev.devstack.redis_server import start_redis
from learning_account_dev.devstack.tansu import start_tansu
from learning_account_dev.devstack.topics import AdminFactory, ensure_topics, wait_for_kafka

log = logging.getLogger(__name__)

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})


class DevStack(StartStop):
    """Use configured Kafka/Redis if reachable, otherwise start Tansu / redis-server locally.

    Only local addresses can be started (the configured port is used, default 9092 / 6379).
    ``stop()`` stops only what this object started. Usable as a sync or async context manager;
    the async form also waits for the broker and creates ``topics``, with the admin clients of
    ``kafka_admin`` (default: without security).
    """

    def __init__(
        self,
        kafka_bootstrap: str | None = None,
        redis_url: str | None = None,
        *,
        state_dir: Path | str = ".devstack",
        topics: Mapping[str, int] | None = None,
        redis_appendonly: bool = True,
        start_kafka: bool = True,
        start_redis: bool = True,
        timeout: float = 20.0,
        kafka_admin: AdminFactory | None = None,
    ) -> None:
        self.kafka_bootstrap = kafka_bootstrap or DEFAULT_KAFKA_BOOTSTRAP
        self.kafka_admin = kafka_admin
        self.redis_url = redis_url or DEFAULT_REDIS_URL
        self.state_dir = Path(state_dir)
        self.topics = dict(topics or {})
        self.redis_appendonly = redis_appendonly
        self.start_kafka = start_kafka
        self.start_redis = start_redis
        self.timeout = timeout
        self.tansu: LocalProcess | None = None
        self.redis: LocalProcess | None = None

    @property
    def started(self) -> list[str]:
        """Names of the services this stack started (and will stop)."""
        return [p.name for p in (self.tansu, self.redis) if p is not None]

    def start(self) -> Self:
        try:
            if self.start_kafka:
                self._start_kafka_if_needed()
            if self.start_redis:
                self._start_redis_if_needed()
        except BaseException:
            self.stop()
            raise
        return self

    def _bind_address(self, what: str, address: str, host: str, port: int) -> str | None:
        """The host to start ``what`` on; None when something answers there already."""
        if is_port_open(host, port):
            log.info("using running %s at %s", what, address)
            return None
        if host not in _LOCAL_HOSTS:
            raise DevStackError(f"{what} at {address} is not reachable")
        return "127.0.0.1" if host in ("localhost", "0.0.0.0", "") else host

    def _start_kafka_if_needed(self) -> None:
        host, port = parse_bootstrap(self.kafka_bootstrap)
        bind = self._bind_address("Kafka", self.kafka_bootstrap, host, port)
        if bind is not None:
            log.info("starting Tansu on %s:%d", bind, port)
            self.tansu = start_tansu(port, self.state_dir / "logs", host=bind, timeout=self.timeout)

    def _start_redis_if_needed(self) -> None:
        host, port = parse_redis_url(self.redis_url)
        bind = self._bind_address("Redis", self.redis_url, host, port)
        if bind is not None:
            log.info("starting redis-server on %s:%d", bind, port)
            self.redis = start_redis(
                port,
                self.state_dir / f"redis-{port}",
                log_dir=self.state_dir / "logs",
                appendonly=self.redis_appendonly,
                host=bind,
                timeout=self.timeout,
            )

    def stop(self) -> None:
        """Stop the services this stack started (never ones it found running)."""
        for attr in ("redis", "tansu"):
            proc: LocalProcess | None = getattr(self, attr)
            if proc is not None:
                proc.stop()
                setattr(self, attr, None)

    async def _prepare_kafka(self) -> None:
        """Wait for the broker, then create the topics."""
        await wait_for_kafka(
            self.kafka_bootstrap, timeout=self.timeout, admin_factory=self.kafka_admin
        )
        await ensure_topics(
            self.kafka_bootstrap, self.topics, timeout=self.timeout, admin_factory=self.kafka_admin
        )

    async def astart(self) -> Self:
        await asyncio.to_thread(self.start)
        try:
            if self.start_kafka:
                await self._prepare_kafka()
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        if self.topics and self.start_kafka:
            try:
                asyncio.run(self._prepare_kafka())
            except BaseException:
                self.stop()
                raise
        return self

    async def __aenter__(self) -> Self:
        return await self.astart()
