"""`redis_connect.exchange`: a single Redis's store commands in one write, the replies off
hiredis's reader in one loop (redis-py's internals it relies on are checked here, so an upgrade
that moves them fails a test instead of slowing the service down), or one `read_response` per
reply when redis-py has no hiredis parser."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from learning_account.adapters import redis_connect
from learning_account.adapters.redis_connect import connection, exchange, pack, redis_client


def commands(count: int) -> list[bytes]:
    """`count` SETs of values larger than one socket read, a GET each, and a failing command."""
    sets = [pack("SET", f"k{n}", b"x" * 70_000 + str(n).encode()) for n in range(count)]
    gets = [pack("GET", f"k{n}") for n in range(count)]
    return [*sets, *gets, pack("HGET", "k0", "field")]


def check(replies: list[Any], count: int) -> None:
    assert replies[:count] == [b"OK"] * count
    assert replies[count : 2 * count] == [b"x" * 70_000 + str(n).encode() for n in range(count)]
    assert isinstance(replies[-1], ResponseError)
    assert "WRONGTYPE" in str(replies[-1])


async def test_the_replies_come_off_the_hiredis_reader_of_the_connection(redis_url: str) -> None:
    client = redis_client(redis_url, cluster=False)
    assert isinstance(client, Redis)
    try:
        async with connection(client) as conn:
            assert isinstance(conn._parser._reader, hiredis.Reader)  # type: ignore[attr-defined]
            assert redis_connect._NOT_ENOUGH_DATA is not False
            check(await exchange(conn, commands(40)), 40)
            assert await exchange(conn, [pack("PING")]) == [b"PONG"]  # nothing left unread
    finally:
        await client.aclose()


async def test_without_hiredis_the_replies_are_read_one_by_one(redis_url: str) -> None:
    from redis._parsers import _AsyncRESP2Parser

    client = Redis.from_url(redis_url, parser_class=_AsyncRESP2Parser)
    try:
        async with connection(client) as conn:
            assert not isinstance(getattr(conn._parser, "_reader", None), hiredis.Reader)  # type: ignore[attr-defined]
            check(await exchange(conn, commands(5)), 5)
    finally:
        await client.aclose()


async def test_a_connection_that_fails_midway_is_dropped_not_reused(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        with pytest.raises(RuntimeError):
            async with connection(client) as conn:
                await exchange(conn, [pack("WATCH", "k0")])
                raise RuntimeError("a failure between WATCH and EXEC")
        assert not conn.is_connected  # its WATCH went with it
        async with connection(client) as again:
            assert await exchange(again, [pack("PING")]) == [b"PONG"]
    finally:
        await client.aclose()
