"""The real service process on the session's broker, with a Redis database of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import ensure_topics
from support.redis import database_url
from support.service import OutputCollector, ServiceProcess

HOLD_SECONDS = 3


@pytest.fixture(scope="session")
async def service_topics(kafka_bootstrap: str) -> str:
    await ensure_topics(kafka_bootstrap, {t: 3 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
    return kafka_bootstrap


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def service(
    request: pytest.FixtureRequest,
    service_topics: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The service on a single Redis, then the same tests on a 3-master Redis Cluster."""
    if request.param == "redis-cluster":
        target = request.getfixturevalue("redis_cluster_url")  # detected as a cluster
    else:
        target = database_url(redis_url, 1)
    process = ServiceProcess(
        Path(tmp_path_factory.mktemp("service")),
        KAFKA_BOOTSTRAP_SERVERS=service_topics,
        REDIS_URL=target,
        CONSUMER_GROUP=f"e2e-{uuid.uuid4().hex[:8]}",
        RESULT_HOLD_SECONDS=str(HOLD_SECONDS),
        HELD_SWEEP_INTERVAL_SECONDS="0.5",
        LOG_LEVEL="INFO",
    )
    with process.running():
        yield process


@pytest.fixture(scope="module")
async def outputs(service_topics: str) -> AsyncIterator[OutputCollector]:
    collector = OutputCollector(service_topics)
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop()


@pytest.fixture
def student() -> str:
    """A student id of this test only: tests share the broker and the service."""
    return f"s-{uuid.uuid4().hex[:10]}"
