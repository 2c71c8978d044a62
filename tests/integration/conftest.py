"""Fixtures of the integration tests that run the same test on a single Redis and a cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster


@pytest.fixture(params=["redis", "redis-cluster"])
async def any_redis(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Any]:
    """The session's Redis (database 0, flushed), then its 3-master Redis Cluster (flushed)."""
    client: Redis | RedisCluster
    if request.param == "redis":
        client = Redis.from_url(redis_url)
        await client.flushdb()
    else:
        client = RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))
        await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A client of the session's 3-master Redis Cluster, flushed for the test."""
    client = RedisCluster.from_url(redis_cluster_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
