"""Redis clients for a single server or a Redis Cluster (`clients.redis_for` picks by
LA_REDIS_CLUSTER).

`rediss://` URLs give TLS; `redis://user:password@host` gives ACL authentication (redis-py reads
both from the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


def pack(*args: str | bytes | int) -> bytes:
    """One command in RESP, packed by hiredis (C)."""
    return bytes(hiredis.pack_command(args))  # type: ignore[arg-type]  # its stub: a 1-tuple


@contextlib.asynccontextmanager
async def connection(redis: Redis | RedisCluster) -> AsyncIterator[AbstractConnection]:
    """A connection of the client's pool for a sequence of `exchange`s (a WATCH holds until its
    EXEC on the same connection). One that fails or is cancelled midway is dropped, not
    returned to the pool with replies unread or a WATCH standing."""
    if isinstance(redis, RedisCluster):
        raise TypeError("a Redis Cluster has a pool per node: use its pipelines")
    pool = redis.connection_pool
    conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        yield conn
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def exchange(conn: AbstractConnection, commands: Sequence[bytes]) -> list[Any]:
    """Send packed commands in one write and read one reply each; an error reply is returned as
    its exception (`redis.exceptions.ResponseError`), not raised.

    The replies come off hiredis's reader in one loop: redis-py's `read_response` costs
    microseconds of Python per reply, and a batch has a few replies per event.
    """
    # one buffer, one write: a transport's writelines may send each buffer apart
    await conn.send_packed_command(b"".join(commands), check_health=False)
    parser: Any = conn._parser  # its hiredis reader, below: private to redis-py
    reader = getattr(parser, "_reader", None)
    if not isinstance(reader, hiredis.Reader):  # redis-py without hiredis: one call per reply
        return [await _one_reply(conn) for _ in commands]
    replies: list[Any] = []
    count = len(commands)
    try:
        async with asyncio.timeout(conn.socket_timeout):
            while len(replies) < count:
                reply = reader.gets()
                if reply is _NOT_ENOUGH_DATA or reply is False:
                    await parser.read_from_socket()
                    continue
                if isinstance(reply, RedisConnectionError):
                    raise reply
                replies.append(reply)
    except TimeoutError:
        raise RedisTimeoutError(f"Timeout reading {count} replies from Redis") from None
    except OSError as error:
        raise RedisConnectionError(f"Error while reading from Redis: {error!r}") from error
    return replies


async def _one_reply(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response(disable_decoding=True)
    except ResponseError as error:  # an error reply: returned, as the hiredis loop does
        return error


def _not_enough_data() -> object:
    from redis._parsers import hiredis as redis_hiredis

    return getattr(redis_hiredis, "NOT_ENOUGH_DATA", False)


_NOT_ENOUGH_DATA = _not_enough_data()
