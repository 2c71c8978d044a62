"""Redis clients for a single server or a Redis Cluster, chosen by LA_REDIS_CLUSTER.

`rediss://` URLs give TLS; `redis://user:password@host` gives ACL authentication (redis-py reads
both from the URL).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis, RedisCluster

log = logging.getLogger(__name__)

_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
}


def redis_client(url: str, *, cluster: bool) -> Redis | RedisCluster:
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return Redis.from_url(url, **_OPTIONS)


async def is_cluster(url: str) -> bool:
    """Ask the server whether it runs in cluster mode; False when it cannot be asked."""
    probe = Redis.from_url(url, **_OPTIONS)
    try:
        info = await probe.info("cluster")
        return bool(info.get("cluster_enabled"))
    except Exception as error:
        log.warning("cannot tell whether Redis is a cluster (%r); assuming a single server", error)
        return False
    finally:
        await probe.aclose()


async def connect(url: str, mode: str) -> Redis | RedisCluster:
    """`mode` is `auto` (ask the server), `true` or `false`."""
    cluster = mode == "true" or (mode == "auto" and await is_cluster(url))
    return redis_client(url, cluster=cluster)
