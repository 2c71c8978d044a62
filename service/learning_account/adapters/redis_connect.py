"""Redis clients for a single server or a Redis Cluster (`clients.redis_for` picks by
LA_REDIS_CLUSTER).

`rediss://` URLs give TLS; `redis://user:password@host` gives ACL authentication (redis-py reads
both from the URL).
"""

from __future__ import annotations

import logging
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection

log = logging.getLogger(__name__)

_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
}


def redis_client(url: str, *, cluster: bool) -> Redis | RedisCluster:
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    client = Redis.from_url(url, **_OPTIONS)
    pool = client.connection_pool
    pool.connection_class = _packing(pool.connection_class)  # TCP, TLS or unix socket alike
    return client


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (C). redis-py's own packer re-joins a growing buffer for every
    argument, and a batch's one script call carries thousands of them."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]  # "SCRIPT LOAD" goes as one word per argument
        if (isinstance(name, str) and " " in name) or (isinstance(name, bytes) and b" " in name):
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take: redis-py's packer says what is wrong
            return super().pack_command(*args)


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if connection_class not in _PACKING:
        name = f"Packing{connection_class.__name__}"
        _PACKING[connection_class] = type(name, (_HiredisPacking, connection_class), {})
    return _PACKING[connection_class]


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
